// The stateful proxy (RFC 3261 section 16): it takes a request or response the message path
// has classified, asks the router where it goes (route.ts), has the header edits made
// (edits.ts), and hands the result to the transaction layer (../transaction/layer.ts: state,
// timers, retransmissions, hop-by-hop ACK/CANCEL), which reports failed branches back here. The
// one decision this file owns besides that plumbing is failover(). Health probes: health.ts;
// sockets and the edge's own addresses: wire.ts.
//
// Routing model. The edge has an outside (phones, carriers) and an inside (the PBX, `upstreams`
// and `inside` CIDRs). It record-routes twice (one entry per side, like Kamailio's double RR) and
// puts in the outside entry a signed flow token naming the phone's real transport address, so
// requests the PBX sends into a dialog, or to a registered phone through the Path the edge added
// on REGISTER (RFC 3327), reach the phone behind its NAT, over the same TCP connection if it
// registered over TCP (RFC 5626 5.3). Requests from outside go only to served domains (no open
// relay) and only to the inside.
import type { Clock } from '../clock';
import type { ResolvedConfig } from '../config/types';
import { parseMessage } from '../sip/parser';
import * as H from '../sip/headers';
import { buildReply, phraseFor, stableTag } from '../sip/reply';
import { Responder } from '../path/respond';
import type { Endpoint, SipRequest, SipResponse, SipUri, TransportName } from '../sip/types';
import { MessageWriter, packOrigin, receivedBytes } from '../sip/writer';
import type { Listener } from '../transport/types';
import { TransactionLayer } from '../transaction/layer';
import { type ClientTx, type ServerTx, TransactionTable, transactionBudget } from '../transaction/table';
import type { MessageContext } from '../verdict';
import { DIALOG_CREATING, editAck, editForward, edgeUri, isSips, recordRouteValue, viaValue } from './edits';
import { fastHash } from './fasthash';
import { FlowCodec } from './flow';
import { HealthProbes } from './health';
import { type RouteDecision, Router } from './route';
import { OUTBOUND_REASONS, type OutboundRouter } from './resolve-route';
import { SIPS_REASONS, sipsInbound, sipsNextHop } from './sips';
import { Topology } from './topology';
import { type HealthFailureCause, UpstreamPool } from './upstreams';
import { Wire } from './wire';

/** RFC 3261 10.3 step 7: the registrar's own default when a REGISTER states no expiry */
const DEFAULT_REGISTRATION_S = 3600;

/** the server-transaction key of one request, kept in its parse cache (Proxy.serverKeyOf) */
interface ServerKeyMemo { readonly method: string; readonly source: Endpoint; readonly key: string | undefined }

/**
 * The lifetime (seconds) a registrar granted to the bindings a REGISTER sent: RFC 3261 10.3 step 8
 * lists every binding of the AOR in the 2xx, each with its expires parameter (or the Expires
 * header); the REGISTER's own Contacts pick this phone's. Without a match: the 2xx's Expires, the
 * REGISTER's (Contact parameter or header), else the registrar default.
 */
function grantedSeconds(req: SipRequest, res: SipResponse): number {
  const num = (v: string | null | undefined): number | undefined => {
    if (v === null || v === undefined || !/^\d{1,10}$/.test(v)) return undefined;
    return Number(v);
  };
  const resExpires = H.expires(res) ?? undefined;
  const reqExpires = H.expires(req) ?? undefined;
  const mine = new Set((H.contacts(req) ?? []).map((c) => c.uriRaw));
  let granted: number | undefined;
  for (const c of H.contacts(res) ?? []) {
    if (!mine.has(c.uriRaw)) continue;
    const e = num(c.params.get('expires')) ?? resExpires;
    if (e !== undefined) granted = Math.max(granted ?? 0, e);
  }
  if (granted !== undefined) return granted;
  if (resExpires !== undefined) return resExpires;
  for (const c of H.contacts(req) ?? []) {
    const e = num(c.params.get('expires')) ?? reqExpires;
    if (e !== undefined) granted = Math.max(granted ?? 0, e);
  }
  return granted ?? reqExpires ?? DEFAULT_REGISTRATION_S;
}

export type UnmatchedKind = 'response' | 'ack' | 'cancel';

/** What drain() did when the grace period ended (logged by the edge). */
export interface DrainReport {
  /** requests still without a final response: each got 503 + Retry-After */
  readonly answered: number;
  /** INVITE branches CANCELled toward the next hop */
  readonly cancelled: number;
  /** INVITE branches with no provisional yet: cancelled if one arrives while the edge lingers */
  readonly cancelDeferred: number;
}

/** Counters the proxy reports; the edge binds them to metrics. All label values are closed sets. */
export interface ProxyEvents {
  sent?(transport: TransportName, side: 'outside' | 'inside', kind: 'request' | 'response'): void;
  /** a reply, ACK or CANCEL that matched nothing (t_check_trans), with its transport source */
  unmatched?(kind: UnmatchedKind, source: Endpoint): void;
  /** the PBX accepted a REGISTER from this outside source (2xx): it authenticated */
  registered?(source: Endpoint): void;
  /** absorbed: swallowed; answered: the stored last response was sent again; sent: ours, on a timer */
  retransmission?(direction: 'absorbed' | 'answered' | 'sent'): void;
  txExpired?(): void;
  txRejected?(reason: 'table_full'): void;
  upstreamResponse?(upstream: number, cls: '1xx' | '2xx' | '3xx' | '4xx' | '5xx' | '6xx' | 'timeout'): void;
  /** an upstream was marked up or down (with the cause of the failure that marked it down) */
  upstreamHealth?(upstream: number, up: boolean, cause?: HealthFailureCause): void;
  /** a health failure was counted against an upstream (see upstreams.ts for what counts) */
  upstreamFailure?(upstream: number, cause: HealthFailureCause): void;
  /**
   * A final response from inside to a request from outside, before it is forwarded (the PBX
   * pass-through watcher: failures, successes, challenges). For a status of 300 or more it may
   * return a reply to send instead (anti-enumeration: a 404 becomes the uniform challenge);
   * 2xx are never replaced.
   */
  finalToOutside?(req: SipRequest, client: Endpoint, res: SipResponse): FinalSubstitute | undefined;
  /** does finalToOutside care about finals to this client? (absent: yes) The request is parsed
   *  again for the watcher (ClientTx.received), so the proxy asks first */
  watchesSource?(client: Endpoint): boolean;
  /** a reply the proxy itself generated, by reason code (no_upstream, relay_denied ...) */
  proxyReply?(status: number, reason: string): void;
  log?(level: 'debug' | 'info' | 'warn', obj: Record<string, unknown>, msg: string): void;
  /** a message sent to the outside has SDP naming an inside address (topology hiding is on) */
  sdpInside?(kind: 'request' | 'response', field: 'c' | 'o'): void;
}

/** What the pass-through watcher sends instead of a PBX final response. */
export interface FinalSubstitute {
  readonly status: number;
  readonly reason: string;
  readonly phrase?: string;
  readonly headers?: ReadonlyArray<readonly [string, string]>;
  /** build it from the PBX's own response (its headers, its To tag, minus our Via) with a new
   *  status line, the header lines inserted before the first line named `before` (appended when
   *  absent): it then looks like something the PBX sent, not like an edge reply */
  readonly fromResponse?: { readonly before?: string };
}

/** Closed list of the proxy's own reason codes. */
export const PROXY_REASONS = [
  'relay_denied', 'route_preloaded', 'route_not_inside', 'no_upstream', 'loop_detected', 'flow_failed',
  'no_route', 'transaction_table_full', 'request_timeout', 'cancel_unmatched', 'send_failed',
  'unmatched_response', 'unmatched_ack', 'transport_unavailable', 'shutting_down',
  ...OUTBOUND_REASONS, // trunks and DNS (edge/router/resolve-route.ts)
  ...SIPS_REASONS, // sips: only over TLS (edge/router/sips.ts)
] as const;

export interface ProxyOptions {
  cfg: ResolvedConfig;
  clock: Clock;
  listeners: readonly Listener[];
  secret: Buffer;
  /** is this host an inside host (PBX side)? used for routing decisions on URIs */
  isInside(address: string): boolean;
  /** is this transport endpoint inside? (defaults to isInside on its address) */
  isInsideEndpoint?(ep: Endpoint): boolean;
  events?: ProxyEvents;
  /** extra addresses that are the edge's own (interface addresses for wildcard binds) */
  localAddresses?: readonly string[];
  /** [trunks] egress control and RFC 3263 routing of requests from inside (edge/router/resolve-route.ts) */
  outbound?: OutboundRouter;
}

export class Proxy {
  readonly table: TransactionTable;
  readonly upstreams: UpstreamPool;
  /** the one place replies are built and sent (edge/path/respond.ts), on this proxy's wire */
  readonly responder: Responder;
  private readonly flow: FlowCodec;
  private readonly cfg: ResolvedConfig;
  private readonly clock: Clock;
  private readonly ev: ProxyEvents;
  private readonly wire: Wire;
  private readonly router: Router;
  private readonly health: HealthProbes;
  private readonly tx: TransactionLayer;
  private readonly t1: number;
  /** [i] per upstream i: the `tried` list of a first attempt, shared (never mutated) */
  private readonly triedOnly: readonly number[][];
  private closing = false;
  private readonly outbound?: OutboundRouter;
  /** topology hiding toward the outside (edge/router/topology.ts); undefined when off */
  private readonly topo?: Topology;

  constructor(o: ProxyOptions) {
    this.cfg = o.cfg;
    this.clock = o.clock;
    this.ev = o.events ?? {};
    this.flow = new FlowCodec(o.secret);
    if (o.outbound !== undefined) this.outbound = o.outbound;
    const isInsideEp = o.isInsideEndpoint ?? ((ep: Endpoint) => o.isInside(ep.address));
    const sent = this.ev.sent;
    this.wire = new Wire(o.cfg, o.listeners, isInsideEp, sent ? (t, s, k) => sent.call(this.ev, t, s, k) : undefined, o.localAddresses);
    this.table = new TransactionTable(o.cfg.transactions.max, undefined,
      transactionBudget(o.cfg.transactions.memoryBudgetMB, o.cfg.limits.maxMessageBytes).settledBytes);
    const h = o.cfg.health;
    this.upstreams = new UpstreamPool(o.cfg.upstreams, {
      failuresBeforeDown: h.failuresBeforeDown,
      minFailureGapMs: h.timeoutMs / 2,
      now: () => this.clock.now(),
      // without probes (intervalMs 0) only transport errors mark an upstream down, and nothing
      // would bring it back: retry it after the Retry-After the edge gave callers meanwhile
      retryDownAfterMs: h.intervalMs > 0 ? 0 : Math.max(h.timeoutMs, h.retryAfterSeconds * 1000),
      onChange: (i, up, cause) => this.ev.upstreamHealth?.(i, up, cause),
      onFailure: (i, cause) => this.ev.upstreamFailure?.(i, cause),
    });
    this.triedOnly = o.cfg.upstreams.map((_, i) => [i]);
    const upstreamDests: Endpoint[] = o.cfg.upstreams.map((u) => ({ transport: u.transport, address: u.host, port: u.port }));
    this.router = new Router(o.cfg, this.wire, this.flow, this.upstreams, upstreamDests, o.isInside, o.outbound);
    this.health = new HealthProbes(o.cfg, o.clock, this.wire, this.upstreams);
    this.tx = new TransactionLayer(o.cfg, o.clock, this.wire, this.table, this.ev, {
      branchFailed: (ct, reason) => this.branchFailed(ct, reason),
      // RFC 3261 16.8: Timer C fired (the layer CANCELled the branch): answer 408 ourselves
      timerC: (ct) => { this.finalLocal(ct.server, 408, 'request_timeout'); },
    });
    this.t1 = this.tx.t1;
    // the edge's own replies carry nothing from inside (built from the request): not rewritten
    this.responder = new Responder({ server: o.cfg.serverHeader, send: (dest, bytes) => this.wire.send(dest, bytes, false, this.wire.sideOf(dest), 'response', false) });
    // TOPOLOGY HOOK (construction): key from topology.key, else derived from the flow secret
    if (o.cfg.topology?.enabled) {
      this.topo = new Topology({
        cfg: o.cfg.topology.key ? o.cfg.topology : { ...o.cfg.topology, key: o.secret.toString('hex').padEnd(64, '0') },
        isInside: o.isInside,
        ...(o.cfg.serverHeader !== undefined ? { ownServer: o.cfg.serverHeader } : {}),
        isOwnHost: (host, port) => this.wire.ownHosts.has(host) && this.wire.ownPorts.has(port ?? 5060),
        onSdpInside: (kind, field) => this.ev.sdpInside?.(kind, field),
      });
      this.wire.topo = this.topo;
    }
  }

  // ---------------------------------------------------------------- identity (route.ts)

  /** Is this URI one of the edge's own addresses (a Route/Record-Route entry we inserted)? */
  isOwnUri(u: SipUri): boolean { return this.router.isOwnUri(u); }
  /** RFC 3261 16.4 / 16.3: is the Request-URI for a domain this edge serves (or the edge itself)? */
  servesDomain(u: SipUri): boolean { return this.router.servesDomain(u); }
  /** a served domain or one of the edge's own addresses (lower-case host) */
  servesHost(host: string): boolean { return this.router.servesHost(host); }
  /** does the first Route carry a flow token we signed? (Router.hasDialogRoute) */
  hasDialogRoute(req: SipRequest): boolean { return this.router.hasDialogRoute(req); }
  /** Decide where a new request goes (Router.route). */
  route(ctx: MessageContext, req: SipRequest): RouteDecision { return this.router.route(ctx, req); }

  /** Is this request a retransmission of a server transaction the edge holds (RFC 3261 17.2.3),
   *  from the same source (TransactionTable.serverKey)? */
  isRetransmission(req: SipRequest, source: Endpoint): boolean {
    const key = this.serverKeyOf(req, req.method, source);
    return key !== undefined && this.table.server.has(key);
  }

  /** The server-transaction key of `req` for `method` from `source` (RFC 3261 17.2.3: top branch
   *  + sent-by + method; the RFC 2543 fallback when the branch is not magic; plus the transport
   *  source, see TransactionTable.serverKey); undefined without a Via. */
  private serverKeyOf(req: SipRequest, method: string, source: Endpoint): string | undefined {
    // derived once per message: the auth stage and overload shedding ask (isRetransmission)
    // before handleRequest does, for the same request, method and source
    const memo = req.cache.get('px:skey') as ServerKeyMemo | undefined;
    if (memo !== undefined && memo.method === method && memo.source === source) return memo.key;
    const top = H.topVia(req);
    const key = top ? TransactionTable.serverKey(top.branch, top.port ? `${top.host}:${top.port}` : top.host, method,
      () => `${H.first(req, 'call-id')}|${H.from(req)?.params.get('tag') ?? ''}|${H.cseq(req)?.seq}|${req.uri}`,
      TransactionTable.sourceKey(source)) : undefined;
    req.cache.set('px:skey', { method, source, key } satisfies ServerKeyMemo);
    return key;
  }

  /** RFC 3261 16.6 item 8 and 16.3 item 4: a branch with a random part (unguessable: it keys our
   *  client transactions, so an attacker must not be able to forge a matching response) and a
   *  loop-detection part that is the same whenever the same request comes back unchanged. */
  private newBranch(loopHash: string): string {
    return `z9hG4bK${this.wire.randomToken(12)}.${loopHash}`;
  }

  /** TOPOLOGY HOOK (in): undo the topology rewrite on a message from the outside (sealed
   *  Contact in the Request-URI, folded Route / Record-Route / Via); unchanged when none applies */
  private unhide(ctx: MessageContext): MessageContext {
    const b = this.topo!.inbound(ctx.msg);
    if (b === undefined) return ctx;
    const r = parseMessage(b, { limits: this.cfg.limits, framing: 'datagram' });
    return r.ok ? { ...ctx, msg: r.msg } : ctx;
  }

  // ---------------------------------------------------------------- replies

  /** Send a reply generated by the proxy back to the source of `req`, through the one responder
   *  (edge/path/respond.ts: builds it, never answers an ACK). */
  replyTo(req: SipRequest, source: Endpoint, status: number, reason: string,
    opts: { phrase?: string; headers?: ReadonlyArray<readonly [string, string]> } = {}): Buffer | null {
    const bytes = this.responder.reply(req, source, status, opts);
    if (bytes) this.ev.proxyReply?.(status, reason);
    return bytes;
  }

  // ---------------------------------------------------------------- requests

  handleRequest(ctx: MessageContext): void {
    if (this.topo && ctx.side === 'outside') ctx = this.unhide(ctx);
    const req = ctx.msg as SipRequest;
    // RFC 3261 9.2: the CANCEL matches the INVITE with the same branch and sent-by
    const key = this.serverKeyOf(req, req.method === 'CANCEL' ? 'INVITE' : req.method, ctx.source);
    if (key === undefined) return; // the sanity stage guarantees a Via; be total anyway

    if (req.method === 'ACK') return this.handleAck(ctx, req, key);
    if (req.method === 'CANCEL') return this.handleCancel(ctx, req, key);

    const existing = this.table.server.get(key);
    if (existing) { this.tx.retransmitted(existing, req); return; }
    // draining for a shutdown: nothing new starts here (RFC 3261 21.5.4: 503 + Retry-After, and
    // RFC 3263 4.3 sends the caller to another server); requests inside a dialog that exists
    // (a To tag: the BYE of a call in progress) still go through while the sockets are open
    if (this.closing && !H.to(req)?.params.has('tag')) {
      this.replyTo(req, ctx.source, 503, 'shutting_down', { headers: [['Retry-After', this.retryAfter()]] });
      return;
    }
    if (this.table.full) {
      this.table.rejected++;
      this.ev.txRejected?.('table_full');
      this.replyTo(req, ctx.source, 503, 'transaction_table_full', { headers: [['Retry-After', this.retryAfter()]] });
      return;
    }

    // RFC 3261 26.2.2 / RFC 5630 (edge/router/sips.ts): a sips: request from outside in clear
    const sipsIn = ctx.side === 'outside' ? sipsInbound(req, ctx.source) : undefined;
    if (sipsIn) { this.replyTo(req, ctx.source, sipsIn.status, sipsIn.reason, { headers: sipsIn.headers }); return; }
    const dec = this.router.route(ctx, req);
    if (dec.wait) { this.awaitDns(dec.wait, ctx, req); return; }
    if (dec.reply) {
      this.replyTo(req, ctx.source, dec.reply.status, dec.reply.reason, { headers: dec.reply.headers });
      return;
    }

    // every field set here, in one order: one hidden class, all properties in the object
    const st: ServerTx = {
      key: TransactionTable.flat(key), method: TransactionTable.method(req.method), source: this.table.internSource(ctx.source), live: true, state: 'proceeding',
      lastResponse: undefined, trying: false, finalStatus: undefined, client: undefined,
      cancelPending: false, cancelled: false, timerG: undefined, timerEnd: undefined,
      gInterval: this.t1, held: 0, edits: ctx.edits, side: ctx.side, trust: ctx.trust,
    };
    this.table.addServer(st);
    if (req.method === 'INVITE') {
      // RFC 3261 16.2: a stateful proxy SHOULD send 100 Trying for INVITE, at once
      const trying = buildReply(req, 100, { source: ctx.source, server: this.cfg.serverHeader });
      if (trying) {
        st.trying = true;
        this.wire.send(ctx.source, trying, false, ctx.side, 'response', false);
      }
    }
    this.forward(st, req, dec, []);
  }

  /** [trunks] The first request for a host name waits for DNS (bounded by dns.timeoutMs x
   *  attempts); it is then routed again from a copy of its bytes (the receive buffer is reused). A
   *  retransmission meanwhile waits on the same resolution and is absorbed as one then. */
  private awaitDns(wait: Promise<unknown>, ctx: MessageContext, req: SipRequest): void {
    const copy = Buffer.from(req.raw);
    void wait.then(() => {
      if (this.closing) return;
      const r = parseMessage(copy, { limits: this.cfg.limits, framing: 'datagram' });
      if (!r.ok || r.msg.kind !== 'request') return;
      const again: MessageContext = { ...ctx, msg: r.msg };
      // resolved now (or failed and cached as such): lookup answers without waiting again
      const dec = this.router.route(again, r.msg);
      if (dec.wait) { this.replyTo(r.msg, ctx.source, 503, 'dns_failed', { headers: [['Retry-After', this.retryAfter()]] }); return; }
      this.handleRequest(again);
    });
  }

  /**
   * The request server transaction st was created for, parsed again from what its branch keeps
   * (the forwarded bytes and their origin, ClientTx.received). Only the rare paths call this:
   * failover, finals the edge generates, the pass-through watcher, REGISTER over a connection,
   * shutdown. Undefined once st has its final response (released then, as it always was), and
   * if the bytes do not parse again, which cannot happen for bytes that parsed once: callers
   * treat it as "nothing to answer from".
   */
  private requestOf(st: ServerTx): SipRequest | undefined {
    const ct = st.client;
    if (!st.live || ct?.received === undefined || ct.sent.length === 0) return undefined;
    const raw = receivedBytes(ct.sent, ct.received);
    if (raw === undefined) return undefined;
    const r = parseMessage(raw, { limits: this.cfg.limits, framing: 'datagram' });
    return r.ok && r.msg.kind === 'request' ? r.msg : undefined;
  }

  /** Build and send the forwarded request for server transaction `st` (a first attempt or a
   *  failover): pick the destination and its listener once, make the edits, start the branch. */
  private forward(st: ServerTx, req: SipRequest, dec: RouteDecision, tried: number[]): void {
    let dest: Endpoint;
    let mayConnect: boolean;
    let upstream: number | undefined;
    const fwd = dec.fwd!;
    if (fwd.kind === 'upstream') {
      const idx = this.upstreams.pick(tried);
      if (idx < 0) {
        this.finalLocal(st, 503, 'no_upstream', [['Retry-After', String(this.cfg.health.retryAfterSeconds + Math.floor(Math.random() * 10))]], req);
        return;
      }
      dest = this.router.upstreamDests[idx]!;
      mayConnect = true;
      upstream = idx;
    } else {
      dest = fwd.dest;
      mayConnect = fwd.mayConnect;
      upstream = fwd.upstream;
    }
    // RFC 5630 5.3 (edge/router/sips.ts): a sips: request never leaves on a hop that is not TLS
    const sipsOut = sipsNextHop(req, dest);
    if (sipsOut) { this.finalLocal(st, sipsOut.status, sipsOut.reason, sipsOut.headers, req); return; }
    const listener = this.wire.listenerFor(dest.transport, dest.address, dest.listenerId);
    if (!listener) {
      this.finalLocal(st, 503, 'transport_unavailable', undefined, req);
      return;
    }
    const hostPort = this.wire.adv.get(listener.id)!.hostPort;
    const branch = this.newBranch(dec.loopHash ?? this.router.loopHash(req, H.routes(req)?.[dec.popRoutes]?.uriRaw ?? ''));
    const initial = !H.to(req)?.params.has('tag');
    const w = editForward(req, {
      via: viaValue(dest.transport, hostPort, branch), source: st.source, popRoutes: dec.popRoutes,
      maxForwards: this.cfg.proxy.maxForwards, stage: st.edits,
      recordRoute: this.cfg.proxy.recordRoute && initial && DIALOG_CREATING.has(req.method)
        ? this.recordRoute(st, req, dest, listener, hostPort, upstream) : undefined,
      // RFC 3327 5.2: our flow token in the Path says where the phone really is
      path: this.cfg.proxy.path && req.method === 'REGISTER' && st.side === 'outside'
        ? edgeUri(this.flow.encode(st.source), hostPort, dest.transport, isSips(req)) : undefined,
    });
    const origin: (string | number)[] = [];
    const bytes = w.toBuffer(origin);
    const method = TransactionTable.method(req.method);
    const sent = bytes.toString('latin1');
    const ct: ClientTx = {
      key: TransactionTable.flat(TransactionTable.clientKey(branch, method)), method, server: st,
      dest, sent, received: packOrigin(origin, sent), state: req.method === 'INVITE' ? 'calling' : 'trying', upstream, failover: fwd.kind === 'upstream',
      tried: upstream === undefined ? tried : tried.length === 0 ? this.triedOnly[upstream]! : [...tried, upstream], retransmitMs: this.t1,
      timerA: undefined, timer: undefined, ack: undefined, cancel: undefined, cancels: undefined,
      side: this.wire.sideOf(dest),
    };
    // a failover: the branch given up keeps its bytes (its ACK is built from them), not the origin
    if (st.client) st.client.received = undefined;
    st.client = ct;
    if (fwd.kind === 'dest' && fwd.alts !== undefined) this.outbound?.remember(st, fwd.alts, dec.popRoutes, dec.loopHash);
    this.tx.startClient(ct, listener, bytes, mayConnect);
  }

  /** Double Record-Route (edits.ts recordRouteValue) for st's request going to dest on outListener. */
  private recordRoute(st: ServerTx, req: SipRequest, dest: Endpoint, outListener: Listener, outHostPort: string, upstream: number | undefined): string {
    const src = st.source;
    const inListener = this.wire.listenerFor(src.transport, src.address, src.listenerId) ?? outListener;
    const fromInside = st.side === 'inside';
    const tok = this.flow.encode(fromInside ? dest : src);
    const srcUp = fromInside ? this.upstreams.indexOf(src.address) : upstream;
    const upUser = srcUp !== undefined && srcUp >= 0 ? `up${srcUp}` : undefined;
    return recordRouteValue(fromInside, isSips(req), tok, upUser,
      { hostPort: this.wire.adv.get(inListener.id)!.hostPort, transport: src.transport },
      { hostPort: outHostPort, transport: dest.transport });
  }

  /**
   * The one failover decision. A branch sent to "any healthy upstream" that failed (no answer,
   * the bytes could not be sent, or a 503: RFC 3261 16.7 item 6, a 503 is not forwarded while
   * another target exists) and was not cancelled goes to the next healthy upstream not tried
   * yet, routed again from the request as received, with the side and source st remembers.
   * A branch sent to a name resolved by RFC 3263 goes to the name's next target first (4.3,
   * [trunks]); `upstreams` false (a non-INVITE 503) tries only that.
   * 'sent' when it did; otherwise the request when it had to be parsed (for the final answer).
   */
  private failover(st: ServerTx, ct: ClientTx, upstreams = true): 'sent' | SipRequest | undefined {
    if (st.cancelled) return undefined;
    if (this.nextTarget(st, ct)) return 'sent';
    if (!upstreams || !ct.failover || this.upstreams.pick(ct.tried) < 0) return undefined;
    const req = this.requestOf(st);
    if (!req) return undefined;
    const dec = this.router.route(st, req);
    if (dec.fwd?.kind !== 'upstream') return req;
    this.forward(st, req, dec, ct.tried);
    return 'sent';
  }

  /** [trunks] RFC 3263 4.3: after a timeout, a transport error or a 503 from a resolved target,
   *  send the request to the next target of its name. False when there is none. */
  private nextTarget(st: ServerTx, ct: ClientTx): boolean {
    if (this.outbound === undefined || ct.upstream !== undefined) return false;
    const n = this.outbound.next(st, ct.dest);
    if (n === undefined) return false;
    const req = this.requestOf(st);
    if (!req) return false;
    this.forward(st, req, { fwd: { kind: 'dest', dest: n.dest, mayConnect: true }, popRoutes: n.popRoutes, ...(n.loopHash !== undefined ? { loopHash: n.loopHash } : {}) }, []);
    return true;
  }

  /** The transaction layer gave up on branch ct (timeout or send failure): fail over, or answer 408/503. */
  private branchFailed(ct: ClientTx, reason: 'request_timeout' | 'send_failed'): void {
    if (ct.upstream !== undefined) {
      // counted as traffic, never as ill health: anyone can send a request the PBX does not
      // answer, or whose answer the edge refuses (upstreams.ts); a probe decides instead
      if (reason === 'request_timeout') this.ev.upstreamResponse?.(ct.upstream, 'timeout');
      this.health.suspect(ct.upstream);
    }
    const st = ct.server;
    if (st.client !== ct || st.finalStatus !== undefined) return;
    const r = this.failover(st, ct);
    if (r === 'sent') return;
    if (st.cancelled) this.finalLocal(st, 487, 'request_terminated', undefined, r);
    else this.finalLocal(st, reason === 'send_failed' ? 503 : 408, reason, undefined, r);
  }

  private handleAck(ctx: MessageContext, req: SipRequest, key: string): void {
    // RFC 3261 17.2.1: the ACK for a non-2xx final we sent is hop-by-hop (the layer absorbs it)
    if (this.tx.absorbAck(this.table.server.get(key))) return;
    // the ACK for a final reply the edge sent statelessly (a challenge, a 403): it carries the
    // To tag we made; absorb it quietly (Kamailio's sl_filter_ACK), it is neither stray nor forged
    const toTag = H.to(req)?.params.get('tag');
    // (stableTag is a SHA-1: only worth it for a tag of its length, 12)
    if (toTag && toTag.length === 12 && toTag === stableTag(req, 'se')) return;
    // ACK for a 2xx is its own transaction and goes end to end along the route set
    // (RFC 3261 13.2.2.4, 16.6): forward statelessly if it came through our Record-Route
    // route() accepts it when it carries our Route, or when the dialog was not record-routed
    // and the target is inside (RFC 3261 16.12); a stray ACK from outside toward anything
    // else matches nothing and is dropped
    const dec = this.router.route(ctx, req);
    // an ACK with neither our Route nor an inside target would only reach the PBX because its
    // Request-URI names a served domain: that is a stray ACK (Kamailio: t_check_trans() fails)
    if (!dec.fwd || dec.reply || (dec.fwd.kind === 'upstream' && dec.popRoutes === 0)) { this.ev.unmatched?.('ack', ctx.source); return; }
    let dest: Endpoint;
    let mayConnect = true;
    if (dec.fwd.kind === 'upstream') {
      const idx = this.upstreams.pick();
      if (idx < 0) return;
      dest = this.router.upstreamDests[idx]!;
    } else { dest = dec.fwd.dest; mayConnect = dec.fwd.mayConnect; }
    // the ACK of a sips: dialog: never in clear either (edge/router/sips.ts)
    if (sipsNextHop(req, dest)) return;
    const listener = this.wire.listenerFor(dest.transport, dest.address, dest.listenerId);
    if (!listener) return;
    // stateless forwarding: derive the branch from the incoming one so that ACK retransmissions
    // carry the same branch (RFC 3261 16.11)
    const branch = 'z9hG4bK' + fastHash(['ack', H.topVia(req)?.branch ?? ''], 16);
    const bytes = editAck(req, viaValue(dest.transport, this.wire.adv.get(listener.id)!.hostPort, branch), dec.popRoutes, this.cfg);
    this.wire.sendOn(listener, dest, bytes, mayConnect, this.wire.sideOf(dest), 'request');
  }

  private handleCancel(ctx: MessageContext, req: SipRequest, key: string): void {
    const st = this.table.server.get(key);
    if (!st || st.method !== 'INVITE') {
      // RFC 3261 16.10: no matching transaction: 481
      this.ev.unmatched?.('cancel', ctx.source);
      this.replyTo(req, ctx.source, 481, 'cancel_unmatched');
      return;
    }
    // RFC 3261 16.10: answer the CANCEL with 200 at once, then cancel the pending branch
    this.replyTo(req, ctx.source, 200, 'cancel_ok');
    if (st.finalStatus !== undefined || st.cancelled) return;
    st.cancelled = true;
    const ct = st.client;
    if (!ct) return;
    if (ct.state === 'proceeding') this.tx.sendCancel(ct);
    else st.cancelPending = true; // RFC 3261 9.1: not before a provisional response
  }

  /** A final response generated by the edge for server transaction st (from `req` when the
   *  caller has it parsed already). False when nothing was sent. */
  private finalLocal(st: ServerTx, status: number, reason: string, headers?: ReadonlyArray<readonly [string, string]>, req?: SipRequest): boolean {
    if (st.finalStatus !== undefined || !st.live) return false;
    const r = req ?? this.requestOf(st);
    // without the request nothing can be answered (it always re-parses: see requestOf); end the
    // transaction rather than leave it live: the client's own timer answers its user
    if (!r) { this.tx.endServer(st); return false; }
    const bytes = buildReply(r, status, { source: st.source, toTag: stableTag(r, 'se'), headers, server: this.cfg.serverHeader });
    this.ev.proxyReply?.(status, reason);
    if (!bytes) { this.tx.endServer(st); return false; }
    this.tx.sendFinal(st, status, bytes);
    return true;
  }

  // ---------------------------------------------------------------- responses

  handleResponse(ctx: MessageContext): void {
    if (this.topo && ctx.side === 'outside') ctx = this.unhide(ctx);
    const res = ctx.msg as SipResponse;
    const top = H.topVia(res);
    const cs = H.cseq(res);
    if (!top || !top.branch || !cs) { this.ev.unmatched?.('response', ctx.source); return; }
    // health probe answers
    const probe = this.health.onResponse(top.branch, res, ctx.source);
    if (probe !== 'none') {
      if (probe === 'unmatched') this.ev.unmatched?.('response', ctx.source);
      return;
    }
    const ct = this.table.client.get(TransactionTable.clientKey(top.branch, cs.method));
    // t_check_trans(): a response must match a client transaction of ours, and come from
    // the side we sent the request to (a forged reply from elsewhere is dropped)
    // the branch is unguessable (random), and the answer must come from the address we sent to
    if (!ct || ct.state === 'terminated' || ctx.source.address !== ct.dest.address) {
      this.ev.unmatched?.('response', ctx.source);
      return;
    }
    const status = res.status;
    if (ct.upstream !== undefined) {
      this.ev.upstreamResponse?.(ct.upstream, (`${Math.floor(status / 100)}xx`) as '1xx');
      // A 503 on real traffic proves nothing about the PBX: it may be the PBX's own overload or
      // one it turned a trunk's failure into (a B2BUA answers 503 for a congested trunk, and an
      // outsider picks the number). It fails this request over (below) and asks for a probe.
      if (status === 503) this.health.suspect(ct.upstream);
      else this.upstreams.success(ct.upstream);
    } else if (status !== 503) {
      this.outbound?.answered(ct.dest); // [trunks] a resolved target lives
    }
    if (ct.cancels) {
      // the answer to our CANCEL ends there (hop by hop)
      if (status >= 200) this.tx.completeClient(ct);
      return;
    }
    const st = ct.server;
    if (st.client !== ct) {
      // a late answer from an upstream we failed over from: acknowledge a non-2xx, drop the rest
      if (status >= 300 && ct.method === 'INVITE') this.tx.ackNon2xx(ct, res);
      return;
    }
    if (status < 200) {
      this.tx.provisional(ct);
      if (ct.method === 'INVITE' && st.cancelPending && !ct.cancel) { st.cancelPending = false; this.tx.sendCancel(ct); }
      if (status === 100) return; // RFC 3261 16.7 item 3: 100 is hop by hop
      if (st.finalStatus !== undefined) return;
      this.tx.sendProvisional(st, this.stripTopVia(res));
      return;
    }
    // final response
    if (ct.method === 'INVITE' && status >= 300) {
      // retransmitted final: resend our ACK (RFC 3261 17.1.1.2), absorb
      if (ct.state === 'completed') { this.tx.resendAck(ct); return; }
      this.tx.ackNon2xx(ct, res);
      if (status === 503 && this.failover(st, ct) === 'sent') return;
      this.tx.sendFinal(st, status, this.finalBytes(st, res));
      return;
    }
    if (ct.method === 'INVITE') {
      // 2xx: forward, and keep forwarding retransmissions while Accepted (RFC 6026 7.2)
      if (!this.tx.acceptClient(ct)) this.ev.retransmission?.('sent');
      const bytes = this.stripTopVia(res);
      if (st.finalStatus === undefined) {
        this.watchFinal(st, res); // observed; a 2xx is never replaced
        this.tx.accept(st, status);
      }
      this.tx.sendAccepted(st, bytes);
      return;
    }
    // non-INVITE final
    if (ct.state === 'completed') { this.ev.retransmission?.('absorbed'); return; }
    this.tx.completeClient(ct);
    if (status === 503 && this.failover(st, ct, false) === 'sent') return; // [trunks] RFC 3263 4.3
    if (ct.method === 'REGISTER' && status < 300 && st.side === 'outside') {
      // a REGISTER the PBX accepted proves the source holds valid credentials (pass-through auth)
      this.ev.registered?.(st.source);
      this.holdRegisteredFlow(st, res);
    }
    this.tx.sendFinal(st, status, this.finalBytes(st, res));
  }

  /**
   * A phone registered over a connection is reachable only through it (the Path names the
   * connection, RFC 5626 5.3): closing it after tcp.idleTimeoutMs of silence would leave the
   * phone unreachable, every call to it a 430, until its next refresh. Phones without RFC 5626
   * keep-alives (baresip, many desk phones) send nothing between refreshes that may be an hour
   * apart. So the connection may stay silent for the registration the PBX granted, plus 64*T1
   * for the refresh's own transaction (Kamailio's sample config keeps TCP connections 3605 s for
   * the same reason); an unregistration (0) gives it back the plain idle timeout. Nothing new to
   * pin: the connection caps still apply, and any peer can keep a connection with CRLF pings.
   */
  private holdRegisteredFlow(st: ServerTx, res: SipResponse): void {
    const src = st.source;
    if (src.connId === undefined) return;
    const l = this.wire.listenerFor(src.transport, src.address, src.listenerId);
    if (l?.holdOpen === undefined) return;
    const req = this.requestOf(st);
    if (req === undefined) return;
    const granted = grantedSeconds(req, res);
    l.holdOpen(src.connId, granted === 0 ? 0 : granted * 1000 + 64 * this.t1);
  }

  /** the bytes of a final response for st's client: the PBX's answer without our Via, or the
   *  reply the pass-through watcher substitutes for it (status >= 300 only) */
  private finalBytes(st: ServerTx, res: SipResponse): Buffer {
    const req = this.watcherWants(st) ? this.requestOf(st) : undefined;
    const sub = req ? this.watchFinal(st, res, req) : undefined;
    if (sub && req && res.status >= 300) {
      let bytes: Buffer | null;
      if (sub.fromResponse) {
        const w = new MessageWriter(res).removeFirstValue('via').setStartLine(`SIP/2.0 ${sub.status} ${sub.phrase ?? phraseFor(sub.status)}`);
        const before = sub.fromResponse.before;
        for (const [n, v] of sub.headers ?? []) {
          if (before === undefined || !w.insertBefore(before, n, v)) w.append(n, v);
        }
        bytes = w.toBuffer();
      } else {
        bytes = buildReply(req, sub.status, { source: st.source, toTag: stableTag(req, 'se'), headers: sub.headers, server: this.cfg.serverHeader });
      }
      if (bytes) return bytes; // counted by the watcher's owner
    }
    return this.stripTopVia(res);
  }

  /** does the pass-through watcher look at finals to st's client (before the request is re-parsed for it)? */
  private watcherWants(st: ServerTx): boolean {
    return this.ev.finalToOutside !== undefined && st.side === 'outside'
      && (this.ev.watchesSource === undefined || this.ev.watchesSource(st.source));
  }

  /** hand a final response to an outside client's request to the pass-through watcher */
  private watchFinal(st: ServerTx, res: SipResponse, req: SipRequest | undefined = this.watcherWants(st) ? this.requestOf(st) : undefined): FinalSubstitute | undefined {
    if (!req || !this.ev.finalToOutside || st.side !== 'outside') return undefined;
    return this.ev.finalToOutside(req, st.source, res);
  }

  private stripTopVia(res: SipResponse): Buffer {
    return new MessageWriter(res).removeFirstValue('via').toBuffer();
  }

  // ---------------------------------------------------------------- health probes (health.ts)

  /** Start periodic OPTIONS probes toward each upstream (health.intervalMs 0 disables them). */
  startProbes(): void {
    if (!this.closing) this.health.start();
  }

  /** the transport could not connect to dest (HealthProbes.transportFailed) */
  transportFailed(dest: Endpoint): void {
    this.health.transportFailed(dest);
  }

  probe(idx: number): void {
    this.health.probe(idx);
  }

  /** Retry-After for a 503 the edge sends when it cannot take a request now: jittered, so the
   *  callers it turns away do not all come back in the same second */
  private retryAfter(): string {
    return String(5 + Math.floor(Math.random() * 10));
  }

  /** Stop taking new transactions from now on (503 + Retry-After to requests outside a dialog);
   *  what is live carries on. The first step of drain(), callable on its own. */
  beginDrain(): void {
    this.closing = true;
    this.health.stop();
  }

  /**
   * Shutdown (SIGTERM): stop taking new transactions, let the live ones finish for graceMs, then
   * answer what is still pending before the sockets close, so nobody is left waiting on an edge
   * that is gone:
   * - every request without a final response gets 503 + Retry-After (RFC 3261 21.5.4: the server
   *   is going away; RFC 3263 4.3: the caller tries another server). 503 rather than 408 for
   *   non-INVITE too: 408 says the next hop timed out, which is not what happened;
   * - the INVITE it was waiting for upstream is CANCELled (RFC 3261 9.1 / 16.10), so the PBX stops
   *   ringing instead of connecting a call the caller was told failed. A branch that has had no
   *   provisional response may not be cancelled yet (9.1: "MUST NOT"): it is marked, and the
   *   CANCEL goes out if a provisional arrives during the settle time below;
   * - then up to settleMs (4*T1 = 2 s, at most graceMs: a grace of 0 means no lingering either)
   *   with the sockets still open: the PBX's 487 gets its hop-by-hop ACK (17.1.1.3), a lost
   *   CANCEL is retransmitted, the callers' ACKs for the 503s stop Timer G. Ends early once all
   *   of that is done. A 2xx that crosses the CANCEL is
   *   forwarded (16.7 item 5: 2xx always are); the caller then ACKs and, having been refused,
   *   BYEs, through the edge while it lingers; when it does not make it in time, the PBX ends
   *   the call itself for want of an ACK (13.3.1.4), so no call stays up unbeknown to both ends.
   */
  async drain(graceMs: number, settleMs = Math.min(4 * this.t1, graceMs)): Promise<DrainReport> {
    this.beginDrain();
    const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
    const graceEnd = Date.now() + graceMs;
    while (Date.now() < graceEnd && this.table.live > 0) await sleep(Math.min(50, Math.max(1, graceEnd - Date.now())));
    const report = { answered: 0, cancelled: 0, cancelDeferred: 0 };
    const branches: ClientTx[] = [];
    const awaitingAck: ServerTx[] = [];
    for (const st of [...this.table.server.values()]) {
      if (st.finalStatus !== undefined || !st.live) continue;
      const ct = st.client;
      if (st.method === 'INVITE' && ct && ct.server === st && (ct.state === 'calling' || ct.state === 'proceeding')) {
        st.cancelled = true;
        if (ct.state === 'proceeding') {
          this.tx.sendCancel(ct);
          report.cancelled++;
        } else {
          // no retransmission either: an INVITE that reaches the PBX only now would start a call
          // that nobody waits for any more
          this.clock.clearTimer(ct.timerA);
          st.cancelPending = true;
          report.cancelDeferred++;
        }
        branches.push(ct);
      }
      if (this.finalLocal(st, 503, 'shutting_down', [['Retry-After', this.retryAfter()]])) report.answered++;
      if (st.method === 'INVITE' && st.source.transport === 'udp') awaitingAck.push(st);
    }
    const settleEnd = Date.now() + settleMs;
    const settled = (): boolean =>
      // a 2xx crossed a CANCEL: give the caller's ACK and BYE the whole settle time
      !branches.some((ct) => ct.state === 'accepted')
      && !branches.some((ct) => ct.state === 'proceeding')
      && !branches.some((ct) => ct.cancel !== undefined && ct.cancel.state !== 'completed' && ct.cancel.state !== 'terminated')
      && !awaitingAck.some((st) => st.state === 'completed');
    while (Date.now() < settleEnd && !settled()) await sleep(Math.min(20, Math.max(1, settleEnd - Date.now())));
    return report;
  }

  /** live transaction count, for metrics */
  get activeTransactions(): number { return this.table.live; }
}
