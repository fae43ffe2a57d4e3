// Verdicts are values: a stage decides, the pipeline acts (Envoy filter status / Haraka outcome).
// Reason codes are stable snake_case strings, asserted in tests and used as metric labels.
import type { Endpoint, SipMessage } from './sip/types';
import type { SuspicionEvent } from './policy/snapshot';
import type { KnownStage } from './policy/schema';

export type StageMode = 'enforce' | 'shadow' | 'off';

/**
 * What a stage wants done to the source besides its verdict, as values (Envoy's filter status
 * plus its dynamic metadata): the observer (edge/path/observer.ts) applies them, only when the
 * stage enforces, so a shadowed stage changes nothing, promotion included.
 */
export type StageEvent =
  /** spend the source's suspicion budget (bans when it runs out, edge/suspicion.ts) */
  | { readonly kind: 'suspect'; readonly event: SuspicionEvent; readonly rule?: string }
  /** the source proved it holds valid credentials: the larger budget (limits.yaml promotion) */
  | { readonly kind: 'promote' };

export type Verdict =
  | { readonly action: 'continue'; readonly events?: readonly StageEvent[] }
  | {
      readonly action: 'reply';
      readonly events?: readonly StageEvent[];
      readonly status: number;
      readonly reason: string;
      /** reason phrase for the status line; a standard phrase for the status when absent */
      readonly phrase?: string;
      /** extra header lines for the reply, e.g. [['Retry-After', '30']] */
      readonly headers?: ReadonlyArray<readonly [string, string]>;
      /** name of the rule that decided, when a rule file decided */
      readonly rule?: string;
    }
  | { readonly action: 'drop'; readonly reason: string; readonly rule?: string; readonly events?: readonly StageEvent[] }
  | { readonly action: 'ban'; readonly reason: string; readonly seconds: number; readonly rule?: string; readonly events?: readonly StageEvent[] }
  /** a rule matched whose action is only to log and count: the message goes on */
  | { readonly action: 'log'; readonly reason: string; readonly rule?: string; readonly events?: readonly StageEvent[] };

export const CONTINUE: Verdict = Object.freeze({ action: 'continue' });
export const reply = (status: number, reason: string, extra?: Partial<{ phrase: string; headers: ReadonlyArray<readonly [string, string]>; rule: string }>): Verdict =>
  ({ action: 'reply', status, reason, ...extra });
export const drop = (reason: string, rule?: string): Verdict => ({ action: 'drop', reason, rule });
export const ban = (reason: string, seconds: number, rule?: string): Verdict => ({ action: 'ban', reason, seconds, rule });
export const logOnly = (reason: string, rule?: string): Verdict => ({ action: 'log', reason, rule });

/** Where a message comes from, relative to the edge. */
export type Side = 'outside' | 'inside';

/** trusted: outside peer authenticated by address (carrier); inside: the PBX side; untrusted: the rest */
export type Trust = 'untrusted' | 'trusted' | 'inside';

/** Changes a stage asks the proxy to make to a request it forwards (stages never write bytes). */
export interface ForwardEdits {
  /** header names whose every line is removed */
  readonly remove: string[];
  /** header lines appended after the removals */
  readonly add: Array<readonly [string, string]>;
}

export interface MessageContext {
  readonly msg: SipMessage;
  readonly source: Endpoint;
  readonly side: Side;
  readonly trust: Trust;
  /** monotonic milliseconds at receipt */
  readonly receivedAt: number;
  /** classified once by the message path (edge/path/server.ts) for outside sources: the key
   *  budgets and bans use (IPv4, IPv6 by prefix; Suspicion.sourceKey) */
  readonly sourceKey?: string;
  /** the source is promoted (authenticated recently); the observer sets it when a stage of this
   *  message promotes it, so later stages see it */
  promoted?: boolean;
  /** the access lists' answer for the source, looked up once with the trust (undefined: not
   *  looked up; null: no list names it) */
  readonly access?: { readonly list: 'trusted' | 'deny' | 'allow'; readonly rule: string } | null;
  /** set by a stage that lets the request go on with changes (the proxy applies them) */
  edits?: ForwardEdits;
  /** the user whose credentials the auth stage verified for this request (edge auth mode): an
   *  established identity, which alone spends the per-user budgets (edge/policy/limits/userlimit.ts) */
  identity?: string;
}

/** Stage names: a closed set (the rules schema, edge/policy/schema.ts KNOWN_STAGES) plus names
 *  of stages a program adds (EdgeOptions.stages) */
export type StageName = KnownStage | (string & { readonly __extra?: never });

/** Message kinds a stage applies to: requests of these methods (upper case; 'all' for every
 *  method, extension methods included) and/or responses. */
export interface StageScope {
  readonly sides: readonly Side[];
  readonly requests: 'all' | readonly string[];
  readonly responses: boolean;
}

export const EVERYWHERE: StageScope = Object.freeze({ sides: Object.freeze(['outside', 'inside'] as Side[]), requests: 'all', responses: true });

/** Suspicion a stage's verdicts always carry, declared as data: every verdict whose action is
 *  listed spends `event`, with the verdict's rule or reason as the rule */
export interface DeclaredSuspicion {
  readonly event: SuspicionEvent;
  readonly on: ReadonlyArray<'reply' | 'drop'>;
  readonly rule: 'rule' | 'reason';
}

export interface Stage {
  readonly name: StageName;
  /** where the stage runs (default: both sides, every request, responses): the pipeline builds
   *  its stage lists per (side, kind) from this at load, so a stage never runs to say
   *  "not for me" */
  readonly scope?: StageScope;
  /** suspicion its refusals always spend (applied by the observer when the stage enforces) */
  readonly suspects?: DeclaredSuspicion;
  /** trusted sources (access list / --trusted) skip this stage when the rules say so; never sanity */
  readonly skippableForTrusted?: boolean;
  /** closed list of reason codes this stage can return (declared up front for metrics) */
  readonly reasons: readonly string[];
  /** synchronous unless the stage needs I/O; the pipeline awaits only when a promise comes back */
  check(ctx: MessageContext): Verdict | Promise<Verdict>;
}
