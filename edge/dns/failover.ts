// RFC 3263 4.3: "If a failure occurs [a transport error, a timeout (RFC 3261 Timer B/F) or a
// 503 Service Unavailable], the client SHOULD create a new request ... and send it to the next
// element" of the ordered target list. One cursor per request walks that list once.
//
// Health is per resolved target, not per name: the caller passes its view (e.g. an upstream
// pool keyed by targetKey()). Targets it knows to be down are not skipped for good but moved
// behind the live ones: when every target is down, trying one still beats refusing the call.
import type { Resolution, SipTarget } from './resolver';

/** Stable identity of a target for health tables and metrics-free maps: "udp|192.0.2.1|5060". */
export function targetKey(t: Pick<SipTarget, 'transport' | 'address' | 'port'>): string {
  return `${t.transport}|${t.address}|${t.port}`;
}

export class TargetCursor {
  private readonly order: readonly SipTarget[];
  private i = 0;

  /** `isDown`: the caller's health view; consulted once, when the cursor is made */
  constructor(res: Resolution, isDown?: (t: SipTarget) => boolean) {
    if (isDown === undefined) {
      this.order = res.targets;
    } else {
      const up: SipTarget[] = [];
      const down: SipTarget[] = [];
      for (const t of res.targets) (isDown(t) ? down : up).push(t);
      this.order = down.length === 0 ? res.targets : [...up, ...down];
    }
  }

  /** the next target to try after a failure of the previous one; undefined when none is left */
  next(): SipTarget | undefined {
    return this.order[this.i++];
  }

  /** targets not tried yet */
  get remaining(): number { return Math.max(0, this.order.length - this.i); }
}
