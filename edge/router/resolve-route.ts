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
import { TargetCursor, createResolver, destinationFromUri, targetKey } from '../dns';
import { performance } from 'node:perf_hooks';
import type { ResolvedConfig } from '../config/types';
import type { EdgeMetrics } from '../metrics';
import { TRUNK_REASONS, Trunks } from './trunks';
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

/** What the proxy does with a new request from inside toward `target` (no flow token, not inside). */
export type OutboundChoice =
  | { readonly kind: 'reply'; readonly status: number; readonly reason: string }
  | { readonly kind: 'wait'; readonly done: Promise<unknown> }
  /** an IP literal the proxy sends to as before (uriDest) */
  | { readonly kind: 'literal' }
  /** a resolved name: the first target and the ones to fail over to (RFC 3263 4.3) */
  | { readonly kind: 'resolved'; readonly dest: Endpoint; readonly alts: readonly Endpoint[] };

/** Closed list of the reasons the outbound router replies with (joins the proxy's reasons). */
export const OUTBOUND_REASONS = [...TRUNK_REASONS, ...DNS_ROUTE_REASONS] as const;

interface FailoverState { readonly alts: readonly Endpoint[]; next: number; readonly popRoutes: number; readonly loopHash?: string }

/**
 * Egress control and RFC 3263 routing for requests from inside, and target failover. One per
 * proxy; `trunks` decides who may be reached, `resolver` (absent: host names are refused as
 * before, 404 no_route) how.
 */
export class OutboundRouter {
  private readonly rr?: RouteResolver;
  /** per server transaction: resolved targets not tried yet (WeakMap: dies with the transaction) */
  private readonly failover = new WeakMap<object, FailoverState>();

  constructor(readonly trunks: Trunks, private readonly resolver: SipResolver | undefined, now: () => number) {
    if (resolver !== undefined) this.rr = new RouteResolver(resolver, now);
  }

  route(method: string, target: SipUri): OutboundChoice {
    const dest = RouteResolver.destination(target);
    // maddr wins over the host (RFC 3263 4): the egress check looks at where it really goes
    const host = dest?.host ?? target.host;
    const ip = RouteResolver.isIpHost(host);
    const eg = this.trunks.egress(method, host, ip);
    if (!eg.ok) return { kind: 'reply', status: eg.status, reason: eg.reason };
    if (ip) return { kind: 'literal' };
    if (this.rr === undefined) return { kind: 'reply', status: 404, reason: 'no_route' };
    // the trunk's configured transport applies when the URI names none (RFC 3263 4.1 lets the
    // client choose by local policy)
    const t = eg.trunk?.transport;
    const d = dest !== null && t !== undefined && dest.transport === undefined && dest.secure !== true ? { ...dest, transport: t } : dest;
    const c = this.rr.choose(d);
    if (c.kind === 'wait') return c;
    if (c.kind === 'fail') return { kind: 'reply', status: c.status, reason: c.reason };
    const eps = c.targets.map(RouteResolver.endpoint);
    return { kind: 'resolved', dest: eps[0]!, alts: eps.slice(1) };
  }

  /** the proxy forwarded server transaction `st` to a resolved name: remember the other targets */
  remember(st: object, alts: readonly Endpoint[], popRoutes: number, loopHash: string | undefined): void {
    if (alts.length > 0) this.failover.set(st, { alts, next: 0, popRoutes, ...(loopHash !== undefined ? { loopHash } : {}) });
  }

  /**
   * Target `dest` of `st` failed (timeout, send failure, 503): mark it down and hand back the
   * next target, if any (RFC 3263 4.3).
   */
  next(st: object, dest: Endpoint): (FailoverState & { readonly dest: Endpoint }) | undefined {
    this.rr?.failed(dest);
    const f = this.failover.get(st);
    if (f === undefined || f.next >= f.alts.length) return undefined;
    const d = f.alts[f.next++]!;
    return { ...f, dest: d };
  }

  /** any answer but 503 from a target: it lives */
  answered(dest: Endpoint): void { this.rr?.answered(dest); }

  close(): void { this.trunks.close(); this.resolver?.close(); }
}

/**
 * The outbound router a resolved config means: its trunks, and a resolver on its `dns:` servers
 * for the transports the edge listens on. Undefined for configs built by hand without `dns:`
 * and trunks (names then stay unroutable, as before).
 */
export function createOutbound(cfg: ResolvedConfig, transports: readonly TransportName[], metrics?: EdgeMetrics, now: () => number = () => performance.now()): OutboundRouter | undefined {
  const trunks = cfg.trunks ?? [];
  if (cfg.dns === undefined && trunks.length === 0) return undefined;
  const usable = (['udp', 'tcp', 'tls'] as const).filter((t) => transports.includes(t));
  const resolver = cfg.dns !== undefined ? createResolver(cfg.dns, usable.length > 0 ? usable : ['udp'], metrics) : undefined;
  return new OutboundRouter(new Trunks(trunks, cfg.egress ?? 'any', resolver, now), resolver, now);
}

