// Observer: the one place where decisions become consequences for a source: verdict metrics,
// bans, suspicion and promotion. Stages, the parse step and the proxy only report (a verdict, the
// events it carries, a stage's declared suspicion, an unmatched reply, an accepted REGISTER);
// nothing else calls Suspicion.record/promote or bans.
//
// Shadow mode is this one mechanism (Envoy's shadow policies): a shadowed stage's verdict is
// counted with mode="shadow" and nothing else happens: no ban, no suspicion, no promotion.
//
// Trusted peers (carriers, partner PBXs) and the inside are never banned automatically: Kamailio's
// pike banning a customer's own trunk after an outage is the failure this avoids. Bans key on the
// transport source (IPv6 aggregated by prefix), never on a header.
import type { EdgeMetrics } from '../metrics';
import type { SharedStore } from '../store/types';
import type { Suspicion, SuspicionEvent } from '../suspicion';
import type { Endpoint } from '../sip/types';
import type { MessageContext, Stage, StageEvent, StageMode, Trust, Verdict } from '../verdict';

export interface ObserverOptions {
  readonly metrics: EdgeMetrics;
  readonly store: SharedStore;
  readonly suspicion: Suspicion;
  /** trust of a transport source seen without a context (unmatched replies, parse failures) */
  readonly trustOf: (source: Endpoint) => Trust;
}

export class Observer {
  constructor(private readonly o: ObserverOptions) {}

  /**
   * A stage's verdict for `ctx` (the pipeline calls this for every decisive verdict and for a
   * continue that carries events). Already made answerable (edge/path/respond.ts): a reply aimed
   * at an ACK is counted as the drop it is.
   */
  readonly verdict = (stage: Stage, v: Verdict, mode: 'enforce' | 'shadow', ctx: MessageContext): void => {
    if (v.action !== 'continue') this.o.metrics.verdictOf(stage.name, v, mode);
    if (mode !== 'enforce' || ctx.side !== 'outside') return;
    // a ban verdict is the rules' explicit word (an access deny list can name a trusted peer)
    if (v.action === 'ban') {
      this.ban(ctx.sourceKey ?? this.o.suspicion.sourceKey(ctx.source.address), v.reason, v.seconds, v.rule);
      return;
    }
    if (ctx.trust !== 'untrusted') return;
    if (v.action !== 'continue' && v.action !== 'log') {
      const d = stage.suspects;
      if (d !== undefined && (d.on as readonly string[]).includes(v.action)) {
        this.suspect(ctx.source.address, d.event, d.rule === 'rule' ? v.rule : v.reason);
      }
    }
    if (v.events !== undefined) this.apply(v.events, ctx.source, ctx);
  };

  /**
   * Events a stage reports after its verdict (an enumeration count that came back from the store,
   * the PBX's answer to a request it let through), applied when the stage enforces.
   */
  late(mode: StageMode, source: Endpoint, events: readonly StageEvent[]): void {
    if (mode !== 'enforce' || events.length === 0 || this.o.trustOf(source) !== 'untrusted') return;
    this.apply(events, source);
  }

  /** the message path's own evidence (malformed bytes, a reply or CANCEL that matched nothing) */
  evidence(source: Endpoint, event: SuspicionEvent, rule: string): void {
    if (this.o.trustOf(source) !== 'untrusted') return;
    this.suspect(source.address, event, rule);
  }

  /** the PBX accepted a REGISTER from this outside source: it holds valid credentials */
  registered(source: Endpoint): void {
    if (this.o.trustOf(source) === 'inside') return;
    this.o.suspicion.promote(source.address);
  }

  private apply(events: readonly StageEvent[], source: Endpoint, ctx?: MessageContext): void {
    for (const e of events) {
      if (e.kind === 'suspect') this.suspect(source.address, e.event, e.rule);
      else {
        this.o.suspicion.promote(source.address);
        if (ctx !== undefined) ctx.promoted = true;
      }
    }
  }

  private suspect(address: string, event: SuspicionEvent, rule: string | undefined): void {
    void this.o.suspicion.record(address, event, rule);
  }

  private ban(key: string, reason: string, seconds: number, rule: string | undefined): void {
    void this.o.store.ban({ key, reason, rule: rule ?? reason, seconds }).catch(() => { /* counted by the store */ });
  }
}
