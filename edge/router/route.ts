// The routing decision (RFC 3261 16.4 Route processing, 16.5 targets, 16.3 item 4 loop
// detection): given a request and where it came from, where it goes, or which reply it gets.
// Pure: it reads the request, the configuration, the upstreams' health and the edge's own
// addresses, and changes nothing (no transaction, no socket, no header edit).
import { isIP } from 'node:net';
import type { ResolvedConfig } from '../config/types';
import * as H from '../sip/headers';
import type { Endpoint, NameAddr, SipRequest, SipUri, TransportName } from '../sip/types';
import type { MessageContext } from '../verdict';
import { fastHash } from './fasthash';
import type { FlowCodec } from './flow';
import type { OutboundRouter } from './resolve-route';
import type { UpstreamPool } from './upstreams';
import type { Wire } from './wire';

export type Forward =
  | { kind: 'upstream' }
  | { kind: 'dest'; dest: Endpoint; mayConnect: boolean; upstream?: number; alts?: readonly Endpoint[] };

export interface RouteDecision {
  fwd?: Forward;
  reply?: { status: number; reason: string; headers?: ReadonlyArray<readonly [string, string]> };
  popRoutes: number;
  /** upstream marker found in our own Route entry */
  upstreamHint?: number;
  /** the loop-detection hash of this request as routed (computed once, written into our branch) */
  loopHash?: string;
  /** [trunks] DNS has not answered for the target yet: route again when this settles */
  wait?: Promise<unknown>;
}

/** The side and source a routing decision depends on (a MessageContext, or a failover's stored
 *  server transaction). */
export type RouteInput = Pick<MessageContext, 'side' | 'source'>;

export class Router {
  private readonly domains: Set<string>;
  constructor(
    private readonly cfg: ResolvedConfig,
    private readonly wire: Wire,
    private readonly flow: FlowCodec,
    private readonly upstreams: UpstreamPool,
    /** one Endpoint per upstream, shared by every transaction sent there */
    readonly upstreamDests: readonly Endpoint[],
    private readonly isInside: (a: string) => boolean,
    /** [trunks] egress control and RFC 3263 routing of requests from inside (resolve-route.ts) */
    private readonly outbound?: OutboundRouter,
  ) {
    this.domains = new Set(cfg.domains.map((d) => d.toLowerCase()));
  }

  /** Is this URI one of the edge's own addresses (a Route/Record-Route entry we inserted)? */
  isOwnUri(u: SipUri): boolean {
    if (u.scheme !== 'sip' && u.scheme !== 'sips') return false;
    if (!this.wire.ownHosts.has(u.host)) return false;
    const port = u.port ?? (u.scheme === 'sips' ? 5061 : 5060);
    return this.wire.ownPorts.has(port);
  }

  /** RFC 3261 16.4 / 16.3: is the Request-URI for a domain this edge serves (or the edge itself)? */
  servesDomain(u: SipUri): boolean {
    return this.servesHost(u.host);
  }

  /** a served domain or one of the edge's own addresses (lower-case host) */
  servesHost(host: string): boolean {
    return this.domains.has(host) || this.wire.ownHosts.has(host);
  }

  /**
   * Does this request's first Route name the edge with a flow token we signed (the outside-facing
   * Record-Route entry of a dialog set up through the edge)? In-dialog requests that do are part
   * of a dialog whose creation was authenticated; the inside-facing "upN" entry is not proof
   * (it is not secret).
   */
  hasDialogRoute(req: SipRequest): boolean {
    const rs = H.routes(req);
    const r = rs && rs.length > 0 ? rs[0]! : undefined;
    if (!r || !this.isOwnUri(r.uri) || !r.uri.user || r.uri.user.startsWith('up')) return false;
    return this.flow.decode(r.uri.user) !== null;
  }

  /**
   * The loop-detection part of our branch (RFC 3261 16.6 item 8): it "MUST depend on all
   * information affecting processing of a request, including the incoming Request-URI and any
   * header fields affecting the request's admission or routing". So besides the Request-URI,
   * Call-ID, From tag and CSeq number it covers the To tag, Proxy-Require, Proxy-Authorization and
   * the topmost Route left after our own entries were removed (16.4). That last one is what tells
   * a spiral from a loop: a BYE that goes edge -> record-routing PBX -> edge comes back with the
   * PBX's Route entry gone, so its hash differs and it passes (16.3 item 4); a request that comes
   * back unchanged hashes the same and gets 482. The received top Via is left out on purpose: each
   * upstream hop writes a fresh random branch there, so including it (as the RFC's example does)
   * would make a true loop look new on every turn and leave only Max-Forwards to stop it.
   */
  loopHash(req: SipRequest, nextRoute: string): string {
    const pr = H.fields(req, 'proxy-require');
    const pa = H.fields(req, 'proxy-authorization');
    return fastHash([
      req.uri, H.first(req, 'call-id') ?? '', H.from(req)?.params.get('tag') ?? '', String(H.cseq(req)?.seq ?? ''),
      H.to(req)?.params.get('tag') ?? '', nextRoute,
      ...pr.map((f) => f.value), '|', ...pa.map((f) => f.value),
    ]);
  }

  /** Decide where a new request goes (RFC 3261 16.4 Route processing, 16.5 targets). */
  route(ctx: RouteInput, req: SipRequest): RouteDecision {
    const rs = H.routes(req) ?? [];
    let pop = 0;
    let flowEp: Endpoint | null = null;
    let upstreamHint: number | undefined;
    while (pop < rs.length && this.isOwnUri(rs[pop]!.uri)) {
      const user = rs[pop]!.uri.user;
      if (user?.startsWith('up')) {
        const n = Number(user.slice(2));
        if (Number.isInteger(n) && n >= 0 && n < this.upstreams.list.length) upstreamHint = n;
      } else if (user) {
        flowEp = this.flow.decode(user) ?? flowEp;
      }
      pop++;
    }
    const rest: NameAddr[] = rs.slice(pop);
    const ruri = H.requestUri(req);
    if (!ruri) return { reply: { status: 400, reason: 'ruri_invalid' }, popRoutes: 0 };
    const initial = !H.to(req)?.params.has('tag');

    // loop detection (RFC 3261 16.3 item 4): one of our Vias with the same loop hash is a loop;
    // one of our Vias with another hash is a spiral (the request was routed back to us changed)
    const lh = this.loopHash(req, rest.length > 0 ? rest[0]!.uriRaw : '');
    const vias = H.vias(req) ?? [];
    for (let i = 1; i < vias.length; i++) {
      const v = vias[i]!;
      if (v.branch?.endsWith('.' + lh) && v.branch.startsWith('z9hG4bK') && this.wire.ownHosts.has(v.host)) {
        return { reply: { status: 482, reason: 'loop_detected' }, popRoutes: pop };
      }
    }
    const dec = this.decide(ctx, req, ruri, rest, pop, flowEp, upstreamHint, initial);
    if (!dec.reply) dec.loopHash = lh;
    return dec;
  }

  decide(ctx: RouteInput, req: SipRequest, ruri: SipUri, rest: NameAddr[], pop: number,
    flowEp: Endpoint | null, upstreamHint: number | undefined, initial: boolean): RouteDecision {
    if (ctx.side === 'outside') {
      if (initial && this.outbound !== undefined) {
        // [trunks] a carrier whose trunk may not call in
        const v = this.outbound.trunks.inbound(ctx.source.address, req.method);
        if (!v.ok) return { reply: { status: v.status, reason: v.reason, ...(v.status === 503 ? { headers: [['Retry-After', '1']] as const } : {}) }, popRoutes: pop };
      }
      if (rest.length > 0) {
        // RFC 3261 16.4 leaves pre-loaded routes to policy: from the internet they are a way to
        // use the edge as a relay toward arbitrary hosts, so only our own Route is honoured
        if (initial) return { reply: { status: 403, reason: 'route_preloaded' }, popRoutes: pop };
        const next = rest[0]!.uri;
        if (!isIP(next.host) || !this.isInside(next.host)) return { reply: { status: 403, reason: 'route_not_inside' }, popRoutes: pop };
        return { fwd: { kind: 'dest', dest: this.uriDest(next), mayConnect: true }, popRoutes: pop };
      }
      const ruriInside = isIP(ruri.host) !== 0 && this.isInside(ruri.host);
      if (!initial && pop === 0 && ruriInside) {
        // an in-dialog request of a dialog that was not record-routed (the UAS did not echo
        // Record-Route, as sipp's built-in uas does not): RFC 3261 16.12 lets it go straight to
        // the remote target, which we allow only when that target is inside
        return { fwd: { kind: 'dest', dest: this.uriDest(ruri), mayConnect: true, upstream: this.upstreamAt(ruri) }, popRoutes: 0 };
      }
      if (initial || pop === 0) {
        if (!this.servesDomain(ruri)) return { reply: { status: 403, reason: 'relay_denied' }, popRoutes: pop };
        if (!this.upstreams.anyUp()) return { reply: { status: 503, reason: 'no_upstream', headers: [['Retry-After', String(this.cfg.health.retryAfterSeconds)]] }, popRoutes: pop };
        return { fwd: { kind: 'upstream' }, popRoutes: pop };
      }
      // in-dialog, came through our Record-Route: to the PBX's contact when it is inside,
      // else to the upstream the dialog was set up with
      if (ruriInside) {
        return { fwd: { kind: 'dest', dest: this.uriDest(ruri), mayConnect: true, upstream: this.upstreamAt(ruri) }, popRoutes: pop, upstreamHint };
      }
      if (upstreamHint !== undefined) {
        return { fwd: { kind: 'dest', dest: this.upstreamDests[upstreamHint]!, mayConnect: true, upstream: upstreamHint }, popRoutes: pop };
      }
      return { fwd: { kind: 'upstream' }, popRoutes: pop };
    }

    // from inside: trusted to reach anywhere; a flow token wins (RFC 5626 5.3)
    if (flowEp) {
      if (flowEp.connId !== undefined) {
        const l = this.wire.listeners.find((x) => x.id === flowEp!.listenerId);
        if (!l || !l.isOpen?.(flowEp.connId)) return { reply: { status: 430, reason: 'flow_failed' }, popRoutes: pop };
        return { fwd: { kind: 'dest', dest: flowEp, mayConnect: false }, popRoutes: pop };
      }
      return { fwd: { kind: 'dest', dest: flowEp, mayConnect: false }, popRoutes: pop };
    }
    const target = rest.length > 0 ? rest[0]!.uri : ruri;
    // [trunks] egress control and RFC 3263 (edge/router/resolve-route.ts): anything but an inside
    // address or a dialog that came through our Record-Route goes only where the trunks allow
    if (this.outbound !== undefined && !(pop > 0 && !initial) && !(isIP(target.host) && this.isInside(target.host))) {
      const o = this.outbound.route(req.method, target);
      if (o.kind === 'reply') return { reply: { status: o.status, reason: o.reason, ...(o.status === 503 ? { headers: [['Retry-After', '1']] as const } : {}) }, popRoutes: pop };
      if (o.kind === 'wait') return { wait: o.done, popRoutes: pop };
      if (o.kind === 'resolved') return { fwd: { kind: 'dest', dest: o.dest, mayConnect: true, alts: o.alts }, popRoutes: pop };
    }
    if (!isIP(target.host)) {
      // without a resolver (configs built by hand) inside peers address by IP
      return { reply: { status: 404, reason: 'no_route' }, popRoutes: pop };
    }
    if (this.isOwnUri(target)) return { reply: { status: 404, reason: 'no_route' }, popRoutes: pop };
    return { fwd: { kind: 'dest', dest: this.uriDest(target), mayConnect: true }, popRoutes: pop };
  }

  upstreamAt(u: SipUri): number | undefined {
    const i = this.upstreams.indexOf(u.host, u.port ?? 5060);
    return i < 0 ? undefined : i;
  }

  uriDest(u: SipUri): Endpoint {
    const t = (u.params.get('transport') ?? (u.scheme === 'sips' ? 'tls' : 'udp')).toLowerCase();
    const transport: TransportName = t === 'tcp' || t === 'tls' || t === 'ws' || t === 'wss' ? t : 'udp';
    return { transport, address: u.host, port: u.port ?? (transport === 'tls' ? 5061 : 5060) };
  }

}
