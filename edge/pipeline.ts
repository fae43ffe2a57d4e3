// Runs the configured stages in order; the first non-continue verdict wins (Envoy's filter
// chain, fastify's hook runner). Synchronous unless a stage returns a promise, so the hot path
// costs no microtask hop per stage. Shadow mode (Envoy's shadow policies): the stage decides and
// is counted as if enforcing, but the message goes on; what it would have done to the source
// (bans, suspicion, promotion) is the observer's to skip (edge/path/observer.ts), and the
// forwarding edits and identity it set are undone here.
//
// Each stage declares where it applies (Stage.scope: sides, request methods, responses); the
// stage lists per (side, kind) are computed once per rules load, so a response from the PBX runs
// only the stages that can say something about it (sanity), not five that answer "not for me".
import { answerable } from './path/respond';
import type { MessageContext, Side, Stage, StageMode, Verdict } from './verdict';
import { CONTINUE, EVERYWHERE } from './verdict';

export interface StageEntry {
  readonly stage: Stage;
  readonly mode: StageMode;
  /** trusted sources skip this stage (never set for sanity) */
  readonly skipTrusted?: boolean;
}

export interface ExplainStep {
  readonly stage: string;
  readonly mode: StageMode;
  /** 'skipped' when the stage is off or the source is trusted and skips it */
  readonly verdict: Verdict | 'skipped';
}

/** Called for every non-continue decision (enforced or shadowed) and for a continue that carries
 *  events, with the verdict as it will be carried out (a reply aimed at an ACK is a drop). */
export type VerdictObserver = (stage: string, v: Verdict, mode: 'enforce' | 'shadow', ctx: MessageContext, s: Stage) => void;

/** the stages that run for one side, per message kind */
interface SideLists {
  /** requests of a method some stage names in its scope */
  readonly byMethod: ReadonlyMap<string, readonly StageEntry[]>;
  /** requests of any other method */
  readonly otherRequests: readonly StageEntry[];
  readonly responses: readonly StageEntry[];
}

function listsFor(active: readonly StageEntry[], side: Side): SideLists {
  const here = active.filter((e) => (e.stage.scope ?? EVERYWHERE).sides.includes(side));
  const named = new Set<string>();
  for (const e of here) { const r = (e.stage.scope ?? EVERYWHERE).requests; if (r !== 'all') for (const m of r) named.add(m); }
  const forMethod = (m: string | null): StageEntry[] => here.filter((e) => {
    const r = (e.stage.scope ?? EVERYWHERE).requests;
    return r === 'all' || (m !== null && r.includes(m));
  });
  return {
    byMethod: new Map([...named].map((m) => [m, forMethod(m)])),
    otherRequests: forMethod(null),
    responses: here.filter((e) => (e.stage.scope ?? EVERYWHERE).responses),
  };
}

export interface StageOutcome {
  readonly verdict: Verdict;
  /** the stage that decided (undefined for continue) */
  readonly stage?: string;
}

const PASS: StageOutcome = Object.freeze({ verdict: CONTINUE });

export class Pipeline {
  private readonly active: readonly StageEntry[];
  private readonly outside: SideLists;
  private readonly inside: SideLists;
  constructor(entries: readonly StageEntry[], private readonly observe?: VerdictObserver) {
    this.active = entries.filter((e) => e.mode !== 'off');
    this.outside = listsFor(this.active, 'outside');
    this.inside = listsFor(this.active, 'inside');
  }

  get stages(): readonly StageEntry[] { return this.active; }

  /** the stages that run for this message (precomputed: one Map lookup for a request) */
  stagesFor(side: Side, msg: MessageContext['msg']): readonly StageEntry[] {
    const l = side === 'outside' ? this.outside : this.inside;
    if (msg.kind === 'response') return l.responses;
    return l.byMethod.get(msg.method) ?? l.otherRequests;
  }

  run(ctx: MessageContext): StageOutcome | Promise<StageOutcome> {
    return this.from(this.stagesFor(ctx.side, ctx.msg), 0, ctx);
  }

  private from(list: readonly StageEntry[], i: number, ctx: MessageContext): StageOutcome | Promise<StageOutcome> {
    for (; i < list.length; i++) {
      const e = list[i]!;
      if (e.skipTrusted && ctx.trust === 'trusted') continue;
      let v: Verdict | Promise<Verdict>;
      // a shadow stage decides but changes nothing: the forwarding edits and the identity it
      // sets are undone
      const shadow = e.mode === 'shadow';
      const edits = ctx.edits;
      const identity = ctx.identity;
      try {
        v = e.stage.check(ctx);
        if (shadow && !(v instanceof Promise)) { ctx.edits = edits; ctx.identity = identity; }
      } catch (err) {
        // a throwing stage is a bug, not a verdict: fail closed for this message, keep running
        v = { action: 'drop', reason: 'stage_error' };
        this.observeError(e, err);
      }
      if (v instanceof Promise) {
        const next = i + 1;
        return v.then(
          (res) => { if (shadow) { ctx.edits = edits; ctx.identity = identity; } return this.settle(e, res, ctx) ?? this.from(list, next, ctx); },
          (err) => { this.observeError(e, err); return this.settle(e, { action: 'drop', reason: 'stage_error' }, ctx) ?? this.from(list, next, ctx); },
        );
      }
      const done = this.settle(e, v, ctx);
      if (done) return done;
    }
    return PASS;
  }

  /** the outcome when this verdict ends the run, undefined to go on */
  private settle(e: StageEntry, v: Verdict, ctx: MessageContext): StageOutcome | undefined {
    if (v.action === 'continue') {
      if (v.events !== undefined) this.observe?.(e.stage.name, v, e.mode === 'shadow' ? 'shadow' : 'enforce', ctx, e.stage);
      return undefined;
    }
    // decided once, before anything counts it: a reply aimed at an ACK or a response is a drop
    const eff = answerable(v, ctx.msg);
    this.observe?.(e.stage.name, eff, e.mode === 'shadow' ? 'shadow' : 'enforce', ctx, e.stage);
    if (e.mode === 'shadow' || eff.action === 'log') return undefined;
    return { verdict: eff, stage: e.stage.name };
  }

  /** every stage's decision, for `sip-edge explain`: no short circuit, nothing is observed */
  async explain(ctx: MessageContext, all: readonly StageEntry[]): Promise<{ steps: ExplainStep[]; final: StageOutcome }> {
    const steps: ExplainStep[] = [];
    let final: StageOutcome = PASS;
    const scoped = new Set(new Pipeline(all).stagesFor(ctx.side, ctx.msg));
    for (const e of all) {
      if (e.mode === 'off' || !scoped.has(e) || (e.skipTrusted && ctx.trust === 'trusted')) { steps.push({ stage: e.stage.name, mode: e.mode, verdict: 'skipped' }); continue; }
      let v: Verdict;
      try { v = answerable(await e.stage.check(ctx), ctx.msg); } catch { v = { action: 'drop', reason: 'stage_error' }; }
      steps.push({ stage: e.stage.name, mode: e.mode, verdict: v });
      if (final === PASS && v.action !== 'continue' && v.action !== 'log' && e.mode === 'enforce') final = { verdict: v, stage: e.stage.name };
    }
    return { steps, final };
  }

  errors = 0;
  private observeError(_e: StageEntry, _err: unknown): void {
    this.errors++;
  }
}
