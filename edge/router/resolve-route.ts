// Where a request from inside to a host name goes (RFC 3263 4): the glue between the proxy's
// routing decision and the resolver (edge/dns). Never on the per-packet path for a name already
// resolved: lookup() answers from the cache (fresh, or stale while a refresh runs in the
// background, RFC 8767); only the first request for a name waits, and that wait is handed back
// to the proxy as a promise so it can hold the request and route it again once DNS answered.
//
// Health per resolved target: a target that timed out, failed to send or answered 503 is marked
// down for a while and moved behind the live ones (TargetCursor), so the next request tries the
// next SRV target (RFC 3263 4.3); a transaction that fails over walks the rest of its list.
import type { SipResolver, SipTarget, SipDestination } from '../dns';
import { TargetCursor, destinationFromUri, targetKey } from '../dns';
import { isIP } from '../net/address';
import type { Endpoint, SipUri, TransportName } from '../sip/types';

export const DNS_ROUTE_REASONS = ['dns_failed', 'dns_not_found', 'dns_unsupported'] as const;
export type DnsRouteReason = (typeof DNS_ROUTE_REASONS)[number];

export type TargetChoice =
  | { readonly kind: 'targets'; readonly targets: readonly SipTarget[] }
  | { readonly kind: 'wait'; readonly done: Promise<unknown> }
  | { readonly kind: 'fail'; readonly status: 404 | 416 | 503; readonly reason: DnsRouteReason };

/** how long a failed target stays behind the live ones */
const DOWN_MS = 30_000;

export class RouteResolver {
  private readonly down = new Map<string, number>();
  constructor(private readonly resolver: SipResolver, private readonly now: () => number) {}

  /** The destination a URI names, for the egress check (maddr wins, RFC 3263 4). */
  static destination(uri: SipUri): SipDestination | null { return destinationFromUri(uri); }

  /** The ordered targets for `dest`, from the cache; or a promise to wait on (first use). */
  choose(dest: SipDestination | null): TargetChoice {
    // RFC 3263 4.1: a transport this resolver cannot use (ws, sctp ...) or a tel: URI
    if (dest === null) return { kind: 'fail', status: 416, reason: 'dns_unsupported' };
    const r = this.resolver.lookup(dest);
    if (r === undefined) return { kind: 'wait', done: this.resolver.resolve(dest) };
    if (r.result !== 'ok' || r.targets.length === 0) {
      // RFC 2308: the name (or its SIP records) does not exist: a permanent answer; anything
      // else (timeout, SERVFAIL, busy) is the DNS's trouble, worth a retry later
      return r.result === 'nxdomain' || r.result === 'nodata'
        ? { kind: 'fail', status: 404, reason: 'dns_not_found' }
        : { kind: 'fail', status: 503, reason: 'dns_failed' };
    }
    if (this.down.size === 0) return { kind: 'targets', targets: r.targets };
    const now = this.now();
    const cur = new TargetCursor(r, (t) => {
      const until = this.down.get(targetKey(t));
      if (until === undefined) return false;
      if (until <= now) { this.down.delete(targetKey(t)); return false; }
      return true;
    });
    const out: SipTarget[] = [];
    for (let t = cur.next(); t !== undefined; t = cur.next()) out.push(t);
    return { kind: 'targets', targets: out };
  }

  /** a target failed (timeout, transport error, 503): behind the live ones for a while */
  failed(ep: Endpoint): void {
    if (this.down.size > 10_000) this.down.clear(); // bounded; health is advisory
    this.down.set(`${ep.transport}|${ep.address}|${ep.port}`, this.now() + DOWN_MS);
  }

  /** a target answered: live again */
  answered(ep: Endpoint): void {
    if (this.down.size > 0) this.down.delete(`${ep.transport}|${ep.address}|${ep.port}`);
  }

  static endpoint(t: SipTarget): Endpoint {
    return { transport: t.transport as TransportName, address: t.address, port: t.port };
  }

  static isIpHost(host: string): boolean { return isIP(host) !== 0; }
}
