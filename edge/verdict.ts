// Verdicts are values: a stage decides, the pipeline acts (Envoy filter status / Haraka outcome).
// Reason codes are stable snake_case strings, asserted in tests and used as metric labels.
import type { Endpoint, SipMessage } from './sip/types';

export type StageMode = 'enforce' | 'shadow' | 'off';

export type Verdict =
  | { readonly action: 'continue' }
  | {
      readonly action: 'reply';
      readonly status: number;
      readonly reason: string;
      /** reason phrase for the status line; a standard phrase for the status when absent */
      readonly phrase?: string;
      /** extra header lines for the reply, e.g. [['Retry-After', '30']] */
      readonly headers?: ReadonlyArray<readonly [string, string]>;
      /** name of the rule that decided, when a rule file decided */
      readonly rule?: string;
    }
  | { readonly action: 'drop'; readonly reason: string; readonly rule?: string }
  | { readonly action: 'ban'; readonly reason: string; readonly seconds: number; readonly rule?: string }
  /** a rule matched whose action is only to log and count: the message goes on */
  | { readonly action: 'log'; readonly reason: string; readonly rule?: string };

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
  /** set by a stage that lets the request go on with changes (the proxy applies them) */
  edits?: ForwardEdits;
  /** the user whose credentials the auth stage verified for this request (edge auth mode): an
   *  established identity, which alone spends the per-user budgets (edge/policy/limits/userlimit.ts) */
  identity?: string;
}

export interface Stage {
  readonly name: string;
  /** trusted sources (access list / --trusted) skip this stage when the rules say so; never sanity */
  readonly skippableForTrusted?: boolean;
  /** closed list of reason codes this stage can return (declared up front for metrics) */
  readonly reasons: readonly string[];
  /** synchronous unless the stage needs I/O; the pipeline awaits only when a promise comes back */
  check(ctx: MessageContext): Verdict | Promise<Verdict>;
}
