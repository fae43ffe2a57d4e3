// Named trunks (issue 15): which carrier a source address or a destination belongs to, and
// egress control, so that requests from inside leave only toward configured trunks and a
// compromised PBX cannot use the edge as a relay to anywhere (the open-relay concern of RFC
// 3261 26.1.3 / 16.5, from the inside this time).
//
// A trunk is known by its CIDRs (`addresses`) and its host names (`hosts`). The addresses its
// names resolve to count as the trunk's too: the table watches each name through the resolver
// (edge/dns: refreshed at each TTL expiry in the background, last good answer kept while the
// server does not answer), so a carrier that moves is followed without a restart and an
// in-dialog request to the carrier's resolved address is recognised without DNS on the path.
import type { TrunkSpec } from '../config/types';
import { CidrMap } from '../net/cidr';
import { performance } from 'node:perf_hooks';
import type { SipResolver } from '../dns';

/** Stable reason codes of the trunk checks (reply reasons; a closed set). */
export const TRUNK_REASONS = ['egress_denied', 'trunk_outbound_denied', 'trunk_register_denied', 'trunk_inbound_denied', 'trunk_rate_limited'] as const;
export type TrunkReason = (typeof TRUNK_REASONS)[number];

export type EgressVerdict =
  | { readonly ok: true; readonly trunk?: TrunkSpec }
  | { readonly ok: false; readonly status: 403 | 503; readonly reason: TrunkReason };

const DENIED = { ok: false, status: 403, reason: 'egress_denied' } as const;
const OUT_DENIED = { ok: false, status: 403, reason: 'trunk_outbound_denied' } as const;
const REG_DENIED = { ok: false, status: 403, reason: 'trunk_register_denied' } as const;
const ALLOWED = { ok: true } as const;
const RATE_LIMITED = { ok: false, status: 503, reason: 'trunk_rate_limited' } as const;

/** A token bucket: `rate` per second, a burst of one second's worth. */
class Bucket {
  private tokens: number;
  private at: number;
  constructor(private readonly rate: number, now: number) { this.tokens = rate; this.at = now; }
  take(now: number): boolean {
    this.tokens = Math.min(this.rate, this.tokens + ((now - this.at) / 1000) * this.rate);
    this.at = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

export class Trunks {
  readonly list: readonly TrunkSpec[];
  readonly egressMode: 'trunks' | 'any';
  private readonly byCidr = new CidrMap<TrunkSpec>();
  private readonly byHost = new Map<string, TrunkSpec>();
  /** address -> trunk, from the current answers for each trunk host */
  private resolved = new Map<string, TrunkSpec>();
  private readonly perHost = new Map<string, readonly string[]>();
  private readonly unwatch: (() => void)[] = [];
  private readonly inBudget = new Map<TrunkSpec, Bucket>();
  private readonly outBudget = new Map<TrunkSpec, Bucket>();
  private readonly now: () => number;

  /** `now`: monotonic ms for the calls-per-second budgets */
  constructor(specs: readonly TrunkSpec[], egress: 'trunks' | 'any', resolver?: SipResolver, now: () => number = () => performance.now()) {
    this.list = specs;
    this.egressMode = egress;
    this.now = now;
    for (const t of specs) {
      if (t.inbound.callsPerSecond > 0) this.inBudget.set(t, new Bucket(t.inbound.callsPerSecond, now()));
      if (t.outbound.callsPerSecond > 0) this.outBudget.set(t, new Bucket(t.outbound.callsPerSecond, now()));
      for (const c of t.addresses) this.byCidr.add(c, t);
      for (const h of t.hosts) this.byHost.set(h, t);
    }
    if (resolver !== undefined) {
      for (const t of specs) {
        for (const h of t.hosts) {
          const dest = t.transport !== undefined ? { host: h, transport: t.transport } : { host: h };
          this.unwatch.push(resolver.watch(dest, (r) => {
            // a failed refresh does not reach here (watch reports target-set changes of good
            // answers), so the last good addresses stay
            if (r.result !== 'ok') return;
            this.perHost.set(h, r.targets.map((x) => x.address));
            this.rebuild();
          }));
        }
      }
    }
  }

  private rebuild(): void {
    const m = new Map<string, TrunkSpec>();
    for (const [h, addrs] of this.perHost) {
      const t = this.byHost.get(h);
      if (t !== undefined) for (const a of addrs) m.set(a, t);
    }
    this.resolved = m;
  }

  /** the trunk a transport source address belongs to (by its CIDRs or resolved names) */
  bySource(address: string): TrunkSpec | undefined {
    return this.byCidr.get(address) ?? this.resolved.get(address);
  }

  /** the trunk a destination host (name or canonical IP literal) belongs to */
  byDestination(host: string, ip: boolean): TrunkSpec | undefined {
    if (!ip) return this.byHost.get(host.toLowerCase().replace(/\.$/, ''));
    return this.bySource(host);
  }

  /**
   * May a new request from inside with this method go to `host`? (Requests to registered phones
   * through a flow token, to inside addresses and in dialogs that came through the edge's
   * Record-Route are decided before this is asked.)
   */
  egress(method: string, host: string, ip: boolean): EgressVerdict {
    const t = this.byDestination(host, ip);
    if (t === undefined) return this.egressMode === 'any' ? ALLOWED : DENIED;
    if (method === 'REGISTER') return t.register.allowed ? { ok: true, trunk: t } : REG_DENIED;
    if (!t.outbound.allowed) return OUT_DENIED;
    // the trunk's own budget for new calls (a carrier's contract, and a runaway PBX's bound)
    if (method === 'INVITE' && this.outBudget.get(t)?.take(this.now()) === false) return RATE_LIMITED;
    return { ok: true, trunk: t };
  }

  /** a new request from outside: refused when it comes from a trunk that may not call in, or
   *  (INVITE) past the trunk's own calls-per-second budget */
  inbound(address: string, method: string): EgressVerdict {
    const t = this.bySource(address);
    if (t === undefined) return ALLOWED;
    if (!t.inbound.allowed) return { ok: false, status: 403, reason: 'trunk_inbound_denied' };
    if (method === 'INVITE' && this.inBudget.get(t)?.take(this.now()) === false) return RATE_LIMITED;
    return { ok: true, trunk: t };
  }

  close(): void {
    for (const u of this.unwatch.splice(0)) u();
  }
}

/** The trunk a source address belongs to by the configured CIDRs (for `sip-edge explain`; the
 *  running edge also counts the addresses the trunk's names resolve to). */
export function trunkOfAddress(specs: readonly TrunkSpec[] | undefined, address: string): string | undefined {
  if (specs === undefined || specs.length === 0) return undefined;
  return new Trunks(specs, 'any').bySource(address)?.name;
}

/** The part of the `sip-edge check` line about trunks and the egress mode ('' when none are configured). */
export function trunkSummary(specs: readonly TrunkSpec[] | undefined, egress: 'trunks' | 'any' | undefined): string {
  if ((specs ?? []).length === 0 && egress !== 'trunks') return '';
  const list = (specs ?? []).map((t) => `${t.name} (${t.addresses.length} CIDR${t.addresses.length === 1 ? '' : 's'}, ${t.hosts.length} name${t.hosts.length === 1 ? '' : 's'})`);
  return `; trunks: ${list.length > 0 ? list.join(', ') : 'none'}, egress ${egress ?? 'any'}`;
}
