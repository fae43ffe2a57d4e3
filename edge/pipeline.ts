// Runs the configured stages in order; the first non-continue verdict wins (Envoy's filter
// chain, fastify's hook runner). Synchronous unless a stage returns a promise, so the hot path
// costs no microtask hop per stage. Shadow mode (Envoy's shadow policies): the stage decides and
// is counted as if enforcing, but the message goes on.
import type { MessageContext, Stage, StageMode, Verdict } from './verdict';
import { CONTINUE } from './verdict';

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

/** Called for every non-continue decision (enforced or shadowed), for metrics and logs. */
export type VerdictObserver = (stage: string, v: Exclude<Verdict, { action: 'continue' }>, mode: 'enforce' | 'shadow', ctx: MessageContext) => void;

export interface StageOutcome {
  readonly verdict: Verdict;
  /** the stage that decided (undefined for continue) */
  readonly stage?: string;
}

const PASS: StageOutcome = Object.freeze({ verdict: CONTINUE });

export class Pipeline {
  private readonly active: readonly StageEntry[];
  constructor(entries: readonly StageEntry[], private readonly observe?: VerdictObserver) {
    this.active = entries.filter((e) => e.mode !== 'off');
  }

  get stages(): readonly StageEntry[] { return this.active; }

  run(ctx: MessageContext): StageOutcome | Promise<StageOutcome> {
    return this.from(0, ctx);
  }

  private from(i: number, ctx: MessageContext): StageOutcome | Promise<StageOutcome> {
    for (; i < this.active.length; i++) {
      const e = this.active[i]!;
      if (e.skipTrusted && ctx.trust === 'trusted') continue;
      let v: Verdict | Promise<Verdict>;
      // a shadow stage decides but changes nothing: forwarding edits it asks for are undone
      const shadow = e.mode === 'shadow';
      const edits = ctx.edits;
      try {
        v = e.stage.check(ctx);
        if (shadow && !(v instanceof Promise)) ctx.edits = edits;
      } catch (err) {
        // a throwing stage is a bug, not a verdict: fail closed for this message, keep running
        v = { action: 'drop', reason: 'stage_error' };
        this.observeError(e, err);
      }
      if (v instanceof Promise) {
        const next = i + 1;
        return v.then(
          (res) => { if (shadow) ctx.edits = edits; return this.settle(e, res, ctx) ?? this.from(next, ctx); },
          (err) => { this.observeError(e, err); return this.settle(e, { action: 'drop', reason: 'stage_error' }, ctx) ?? this.from(next, ctx); },
        );
      }
      const done = this.settle(e, v, ctx);
      if (done) return done;
    }
    return PASS;
  }

  /** the outcome when this verdict ends the run, undefined to go on */
  private settle(e: StageEntry, v: Verdict, ctx: MessageContext): StageOutcome | undefined {
    if (v.action === 'continue') return undefined;
    this.observe?.(e.stage.name, v, e.mode === 'shadow' ? 'shadow' : 'enforce', ctx);
    if (e.mode === 'shadow' || v.action === 'log') return undefined;
    return { verdict: v, stage: e.stage.name };
  }

  /** every stage's decision, for `sip-edge explain`: no short circuit, nothing is observed */
  async explain(ctx: MessageContext, all: readonly StageEntry[]): Promise<{ steps: ExplainStep[]; final: StageOutcome }> {
    const steps: ExplainStep[] = [];
    let final: StageOutcome = PASS;
    for (const e of all) {
      if (e.mode === 'off' || (e.skipTrusted && ctx.trust === 'trusted')) { steps.push({ stage: e.stage.name, mode: e.mode, verdict: 'skipped' }); continue; }
      let v: Verdict;
      try { v = await e.stage.check(ctx); } catch { v = { action: 'drop', reason: 'stage_error' }; }
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
