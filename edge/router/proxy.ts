// The stateful proxy core (RFC 3261 sections 16 and 17): transactions, routing both ways,
// Record-Route / Path with flow tokens, hop-by-hop ACK and CANCEL, retransmissions, failover.
//
// Routing model. The edge has an outside (phones, carriers) and an inside (the PBX, `upstreams`
// and `inside` CIDRs). It record-routes twice (one entry per side, like Kamailio's double RR) and
// puts in the outside entry a signed flow token naming the phone's real transport address, so
// requests the PBX sends into a dialog, or to a registered phone through the Path the edge added
// on REGISTER (RFC 3327), reach the phone behind its NAT, over the same TCP connection if it
// registered over TCP (RFC 5626 5.3). Requests from outside go only to served domains (no open
// relay) and only to the inside.
import { randomFillSync } from 'node:crypto';
import { isIP } from 'node:net';
import type { Clock } from '../clock';
import type { ResolvedConfig } from '../config/types';
import { parseMessage } from '../sip/parser';
import * as H from '../sip/headers';
import { buildHopRequest, buildReply, phraseFor, stableTag, stampVia } from '../sip/reply';
import { Responder } from '../path/respond';
import type { Endpoint, NameAddr, SipRequest, SipResponse, SipUri, TransportName } from '../sip/types';
import { MessageWriter, packOrigin, receivedBytes } from '../sip/writer';
import type { Listener } from '../transport/types';
import { type ClientTx, type ServerTx, TransactionTable, transactionBudget } from '../transaction/table';
import type { MessageContext } from '../verdict';
import { fastHash } from './fasthash';
import { FlowCodec } from './flow';
import { type HealthFailureCause, UpstreamPool } from './upstreams';
import { OUTBOUND_REASONS, type OutboundRouter } from './resolve-route';
import { Topology } from './topology';
import { SIPS_REASONS, sipsInbound, sipsNextHop } from './sips';

/** RFC 3261 16.6 item 6 / 12.1.1: requests that create a dialog get Record-Route. */
const DIALOG_CREATING = new Set(['INVITE', 'SUBSCRIBE', 'REFER', 'NOTIFY']);
const TIMER_C_MS = 180_000; // RFC 3261 16.6 item 11: greater than 3 minutes
/** RFC 3261 10.3 step 7: the registrar's own default when a REGISTER states no expiry */
const DEFAULT_REGISTRATION_S = 3600;

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

type Forward =
  | { kind: 'upstream' }
  | { kind: 'dest'; dest: Endpoint; mayConnect: boolean; upstream?: number; alts?: readonly Endpoint[] };

interface RouteDecision {
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

interface Advertised { host: string; port: number; hostPort: string }

export class Proxy {
  readonly table: TransactionTable;
  readonly upstreams: UpstreamPool;
  private readonly flow: FlowCodec;
  private readonly cfg: ResolvedConfig;
  private readonly clock: Clock;
  private readonly ev: ProxyEvents;
  private readonly listeners: readonly Listener[];
  private readonly ownHosts = new Set<string>();
  private readonly ownPorts = new Set<number>();
  private readonly domains: Set<string>;
  private readonly adv = new Map<string, Advertised>();
  private readonly t1: number;
  private readonly t2: number;
  private readonly t4: number;
  private readonly isInside: (a: string) => boolean;
  private readonly isInsideEp: (ep: Endpoint) => boolean;
  private readonly probes = new Map<string, { idx: number; timer: ReturnType<Clock['setTimer']> }>();
  private probeTimer?: ReturnType<Clock['setTimer']>;
  /** clock time of the last probe sent to each upstream (early probes are spaced by timeoutMs) */
  private readonly probeSentAt: number[];
  /** one Endpoint per upstream, shared by every transaction sent there */
  private readonly upstreamDests: readonly Endpoint[];
  /** [i] per upstream i: the `tried` list of a first attempt, shared (never mutated) */
  private readonly triedOnly: readonly number[][];
  private rnd = Buffer.alloc(0);
  private rndOff = 0;
  private closing = false;
  private readonly outbound?: OutboundRouter;
  /** the one place replies are built and sent (edge/path/respond.ts), on this proxy's wire */
  readonly responder: Responder;
  /** topology hiding toward the outside (edge/router/topology.ts); undefined when off */
  private readonly topo?: Topology;

  constructor(o: ProxyOptions) {
    this.cfg = o.cfg;
    this.clock = o.clock;
    this.ev = o.events ?? {};
    this.listeners = o.listeners;
    this.flow = new FlowCodec(o.secret);
    this.isInside = o.isInside;
    if (o.outbound !== undefined) this.outbound = o.outbound;
    this.isInsideEp = o.isInsideEndpoint ?? ((ep) => o.isInside(ep.address));
    this.t1 = o.cfg.transactions.t1Ms;
    this.t2 = o.cfg.transactions.t2Ms;
    this.t4 = o.cfg.transactions.t4Ms;
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
    this.probeSentAt = o.cfg.upstreams.map(() => Number.NEGATIVE_INFINITY);
    this.upstreamDests = o.cfg.upstreams.map((u) => ({ transport: u.transport, address: u.host, port: u.port }));
    this.triedOnly = o.cfg.upstreams.map((_, i) => [i]);
    for (const l of o.listeners) {
      const wildcard = l.local.address === '0.0.0.0' || l.local.address === '::';
      const host = o.cfg.advertise?.host ?? (wildcard ? (o.localAddresses?.find((a) => (isIP(a) === 6) === (l.family === 6)) ?? l.local.address) : l.local.address);
      const port = o.cfg.advertise?.port ?? l.local.port;
      this.adv.set(l.id, { host, port, hostPort: host.includes(':') ? `[${host}]:${port}` : `${host}:${port}` });
      this.ownPorts.add(l.local.port);
      if (!wildcard) this.ownHosts.add(l.local.address);
    }
    if (o.cfg.advertise) {
      this.ownHosts.add(o.cfg.advertise.host.toLowerCase());
      if (o.cfg.advertise.port) this.ownPorts.add(o.cfg.advertise.port);
    }
    for (const a of o.localAddresses ?? []) this.ownHosts.add(a);
    this.domains = new Set(o.cfg.domains.map((d) => d.toLowerCase()));
    // the edge's own replies carry nothing from inside (built from the request): not rewritten
    this.responder = new Responder({ server: o.cfg.serverHeader, send: (dest, bytes) => this.send(dest, bytes, false, this.sideOf(dest), 'response', false) });
    // TOPOLOGY HOOK (construction): key from topology.key, else derived from the flow secret
    if (o.cfg.topology?.enabled) {
      this.topo = new Topology({
        cfg: o.cfg.topology.key ? o.cfg.topology : { ...o.cfg.topology, key: o.secret.toString('hex').padEnd(64, '0') },
        isInside: o.isInside,
        ...(o.cfg.serverHeader !== undefined ? { ownServer: o.cfg.serverHeader } : {}),
        isOwnHost: (host, port) => this.ownHosts.has(host) && this.ownPorts.has(port ?? 5060),
        onSdpInside: (kind, field) => this.ev.sdpInside?.(kind, field),
      });
    }
  }

  // ---------------------------------------------------------------- identity helpers

  /** Is this URI one of the edge's own addresses (a Route/Record-Route entry we inserted)? */
  isOwnUri(u: SipUri): boolean {
    if (u.scheme !== 'sip' && u.scheme !== 'sips') return false;
    if (!this.ownHosts.has(u.host)) return false;
    const port = u.port ?? (u.scheme === 'sips' ? 5061 : 5060);
    return this.ownPorts.has(port);
  }

  /** RFC 3261 16.4 / 16.3: is the Request-URI for a domain this edge serves (or the edge itself)? */
  servesDomain(u: SipUri): boolean {
    return this.servesHost(u.host);
  }

  /** a served domain or one of the edge's own addresses (lower-case host) */
  servesHost(host: string): boolean {
    return this.domains.has(host) || this.ownHosts.has(host);
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
    const top = H.topVia(req);
    if (!top) return undefined;
    const sentBy = top.port ? `${top.host}:${top.port}` : top.host;
    const fallback = (): string => `${H.first(req, 'call-id')}|${H.from(req)?.params.get('tag') ?? ''}|${H.cseq(req)?.seq}|${req.uri}`;
    return TransactionTable.serverKey(top.branch, sentBy, method, fallback, TransactionTable.sourceKey(source));
  }

  private listenerFor(transport: TransportName, address: string, preferId?: string): Listener | undefined {
    const fam = isIP(address) === 6 ? 6 : 4;
    if (preferId) {
      const l = this.listeners.find((x) => x.id === preferId);
      if (l && l.spec.transport === transport && l.family === fam) return l;
    }
    return this.listeners.find((x) => x.spec.transport === transport && x.family === fam);
  }

  private send(dest: Endpoint, bytes: Buffer, mayConnect: boolean, side: 'outside' | 'inside', kind: 'request' | 'response', hide = true): boolean {
    const l = this.listenerFor(dest.transport, dest.address, dest.listenerId);
    if (!l) return false;
    // TOPOLOGY HOOK (out): everything leaving toward the outside passes the topology rewrite
    if (this.topo && hide && side === 'outside') bytes = this.topo.outbound(bytes, { hostPort: this.adv.get(l.id)!.hostPort, transport: dest.transport });
    const ok = l.send(dest, bytes, mayConnect);
    if (ok) this.ev.sent?.(dest.transport, side, kind);
    return ok;
  }

  private sideOf(ep: Endpoint): 'outside' | 'inside' {
    return this.isInsideEp(ep) ? 'inside' : 'outside';
  }

  private randomToken(n: number): string {
    if (this.rndOff + n > this.rnd.length) {
      this.rnd = randomFillSync(Buffer.allocUnsafe(4096));
      this.rndOff = 0;
    }
    const s = this.rnd.subarray(this.rndOff, this.rndOff + n).toString('base64url');
    this.rndOff += n;
    return s;
  }

  /** RFC 3261 16.6 item 8 and 16.3 item 4: a branch with a random part (unguessable: it keys our
   *  client transactions, so an attacker must not be able to forge a matching response) and a
   *  loop-detection part that is the same whenever the same request comes back unchanged. */
  private newBranch(loopHash: string): string {
    return `z9hG4bK${this.randomToken(12)}.${loopHash}`;
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
  private loopHash(req: SipRequest, nextRoute: string): string {
    const pr = H.fields(req, 'proxy-require');
    const pa = H.fields(req, 'proxy-authorization');
    return fastHash([
      req.uri, H.first(req, 'call-id') ?? '', H.from(req)?.params.get('tag') ?? '', String(H.cseq(req)?.seq ?? ''),
      H.to(req)?.params.get('tag') ?? '', nextRoute,
      ...pr.map((f) => f.value), '|', ...pa.map((f) => f.value),
    ]);
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
    if (existing) {
      // RFC 3261 17.2.1 / 17.2.2: a retransmission: resend the last response, never forward again
      const last = existing.lastResponse
        ?? (existing.trying && existing.finalStatus === undefined ? buildReply(req, 100, { source: existing.source, server: this.cfg.serverHeader }) ?? undefined : undefined);
      this.ev.retransmission?.(last ? 'answered' : 'absorbed');
      if (last) this.send(existing.source, last, false, ctx.side, 'response');
      return;
    }
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
    const dec = this.route(ctx, req);
    if (dec.wait) { this.awaitDns(dec.wait, ctx, req); return; }
    if (dec.reply) {
      this.replyTo(req, ctx.source, dec.reply.status, dec.reply.reason, { headers: dec.reply.headers });
      return;
    }

    // every field set here, in one order: one hidden class, all properties in the object
    const st: ServerTx = {
      key: TransactionTable.flat(key), method: TransactionTable.method(req.method), source: ctx.source, live: true, state: 'proceeding',
      lastResponse: undefined, trying: false, finalStatus: undefined, client: undefined,
      cancelPending: false, cancelled: false, timerG: undefined, timerH: undefined, timerEnd: undefined,
      gInterval: this.t1, held: 0, edits: ctx.edits,
    };
    this.table.addServer(st);
    if (req.method === 'INVITE') {
      // RFC 3261 16.2: a stateful proxy SHOULD send 100 Trying for INVITE, at once
      const trying = buildReply(req, 100, { source: ctx.source, server: this.cfg.serverHeader });
      if (trying) {
        st.trying = true;
        this.send(ctx.source, trying, false, ctx.side, 'response', false);
      }
    }
    this.forward(st, ctx, dec, [], req);
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
      const dec = this.route(again, r.msg);
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

  /** Build and send the forwarded request for server transaction `st` (also used for failover). */
  private forward(st: ServerTx, ctx: MessageContext, dec: RouteDecision, tried: number[], req: SipRequest): void {
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
      dest = this.upstreamDests[idx]!;
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
    const listener = this.listenerFor(dest.transport, dest.address, dest.listenerId);
    if (!listener) {
      this.finalLocal(st, 503, 'transport_unavailable', undefined, req);
      return;
    }
    const adv = this.adv.get(listener.id)!;
    const branch = this.newBranch(dec.loopHash ?? this.loopHash(req, H.routes(req)?.[dec.popRoutes]?.uriRaw ?? ''));
    const tname = dest.transport.toUpperCase();
    const via = `SIP/2.0/${tname} ${adv.hostPort};branch=${branch}${dest.transport === 'udp' ? ';rport' : ''}`;

    const w = new MessageWriter(req);
    // RFC 3581 4 / RFC 3261 18.2.1: record where the request really came from in the client's Via
    const top = H.topVia(req)!;
    const hasEmptyRport = top.params.has('rport') && !top.params.get('rport');
    if (hasEmptyRport || top.host !== ctx.source.address) {
      const stamped = stampVia(top.raw, ctx.source, top.host, hasEmptyRport);
      if (stamped !== top.raw) {
        w.removeFirstValue('via');
        w.prependTop('Via', stamped);
      }
    }
    w.prependTop('Via', via);
    // RFC 3261 16.6 item 3: decrement Max-Forwards, or add it
    const mf = H.maxForwards(req);
    if (typeof mf === 'number') w.replaceFirst('max-forwards', String(mf - 1));
    else w.append('Max-Forwards', String(this.cfg.proxy.maxForwards));
    // RFC 3261 16.4 / 16.6 item 6: remove the Route entries that name us
    for (let i = 0; i < dec.popRoutes; i++) w.removeFirstValue('route');
    if (st.edits) {
      for (const name of st.edits.remove) w.removeAll(name);
      for (const [name, value] of st.edits.add) w.append(name, value);
    }

    const initial = !H.to(req)?.params.has('tag');
    if (this.cfg.proxy.recordRoute && initial && DIALOG_CREATING.has(req.method)) {
      w.prependBefore('Record-Route', this.recordRouteValue(ctx, dest, listener, upstream));
    }
    if (this.cfg.proxy.path && req.method === 'REGISTER' && ctx.side === 'outside') {
      // RFC 3327 5.2: the registrar stores this Path and puts it as Route on requests to the
      // phone; our flow token in it says where the phone really is
      const tok = this.flow.encode(ctx.source);
      w.prependBefore('Path', edgeUri(tok, adv.hostPort, dest.transport, isSips(req)));
    }
    const origin: (string | number)[] = [];
    const bytes = w.toBuffer(origin);
    const method = TransactionTable.method(req.method);
    const ct: ClientTx = {
      key: TransactionTable.flat(TransactionTable.clientKey(branch, method)), method, server: st,
      dest, sent: bytes.toString('latin1'), received: packOrigin(origin), state: req.method === 'INVITE' ? 'calling' : 'trying', upstream, failover: fwd.kind === 'upstream',
      tried: upstream === undefined ? tried : tried.length === 0 ? this.triedOnly[upstream]! : [...tried, upstream], retransmitMs: this.t1,
      timerA: undefined, timerB: undefined, timerC: undefined, timerEnd: undefined, ack: undefined, cancel: undefined, cancels: undefined,
    };
    // a failover: the branch given up keeps its bytes (its ACK is built from them), not the origin
    if (st.client) st.client.received = undefined;
    st.client = ct;
    this.table.client.set(ct.key, ct);
    if (fwd.kind === 'dest' && fwd.alts !== undefined) this.outbound?.remember(st, fwd.alts, dec.popRoutes, dec.loopHash);
    const side = this.sideOf(dest);
    if (!this.send(dest, bytes, mayConnect, side, 'request')) {
      this.clientFailed(ct, 'send_failed');
      return;
    }
    this.startClientTimers(ct);
  }

  /** Double Record-Route (one entry per side). The outside entry carries the phone's flow token,
   *  the inside one the upstream index, so in-dialog requests find their way back. */
  private recordRouteValue(ctx: MessageContext, dest: Endpoint, outListener: Listener, upstream: number | undefined): string {
    const inListener = this.listenerFor(ctx.source.transport, ctx.source.address, ctx.source.listenerId) ?? outListener;
    const sips = isSips(ctx.msg as SipRequest);
    const mk = (l: Listener, user: string | undefined, transport: TransportName): string => edgeUri(user, this.adv.get(l.id)!.hostPort, transport, sips);
    const fromInside = ctx.side === 'inside';
    const phoneFlow = fromInside ? dest : ctx.source;
    const tok = this.flow.encode(phoneFlow);
    const srcUp = fromInside ? this.upstreams.indexOf(ctx.source.address) : upstream;
    const upUser = srcUp !== undefined && srcUp >= 0 ? `up${srcUp}` : undefined;
    const arrival = mk(inListener, fromInside ? upUser : tok, ctx.source.transport);
    const departure = mk(outListener, fromInside ? tok : upUser, dest.transport);
    // top -> bottom: departure side first (the next hop sees it first), then the arrival side
    return `${departure}, ${arrival}`;
  }

  /** Decide where a new request goes (RFC 3261 16.4 Route processing, 16.5 targets). */
  route(ctx: MessageContext, req: SipRequest): RouteDecision {
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
      if (v.branch?.endsWith('.' + lh) && v.branch.startsWith('z9hG4bK') && this.ownHosts.has(v.host)) {
        return { reply: { status: 482, reason: 'loop_detected' }, popRoutes: pop };
      }
    }
    const dec = this.decide(ctx, req, ruri, rest, pop, flowEp, upstreamHint, initial);
    if (!dec.reply) dec.loopHash = lh;
    return dec;
  }

  private decide(ctx: MessageContext, req: SipRequest, ruri: SipUri, rest: NameAddr[], pop: number,
    flowEp: Endpoint | null, upstreamHint: number | undefined, initial: boolean): RouteDecision {
    if (ctx.side === 'outside') {
      if (initial && this.outbound !== undefined) {
        // [trunks] a carrier whose trunk may not call in
        const v = this.outbound.trunks.inbound(ctx.source.address);
        if (!v.ok) return { reply: { status: v.status, reason: v.reason }, popRoutes: pop };
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
        const l = this.listeners.find((x) => x.id === flowEp!.listenerId);
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
      if (o.kind === 'reply') return { reply: { status: o.status, reason: o.reason }, popRoutes: pop };
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

  private upstreamAt(u: SipUri): number | undefined {
    const i = this.upstreams.indexOf(u.host, u.port ?? 5060);
    return i < 0 ? undefined : i;
  }

  private uriDest(u: SipUri): Endpoint {
    const t = (u.params.get('transport') ?? (u.scheme === 'sips' ? 'tls' : 'udp')).toLowerCase();
    const transport: TransportName = t === 'tcp' || t === 'tls' || t === 'ws' || t === 'wss' ? t : 'udp';
    return { transport, address: u.host, port: u.port ?? (transport === 'tls' ? 5061 : 5060) };
  }

  private handleAck(ctx: MessageContext, req: SipRequest, key: string): void {
    const st = this.table.server.get(key);
    if (st && st.method === 'INVITE' && st.finalStatus !== undefined && st.finalStatus >= 300) {
      // RFC 3261 17.2.1: the ACK for a non-2xx final is hop-by-hop: absorb it, stop Timer G
      this.clock.clearTimer(st.timerG);
      this.clock.clearTimer(st.timerH);
      if (st.state === 'completed') {
        st.state = 'confirmed';
        this.clock.clearTimer(st.timerEnd);
        st.timerEnd = this.clock.setTimerWith(st.source.transport === 'udp' ? this.t4 : 0, this.onEndServer, st);
      }
      return;
    }
    // the ACK for a final reply the edge sent statelessly (a challenge, a 403): it carries the
    // To tag we made; absorb it quietly (Kamailio's sl_filter_ACK), it is neither stray nor forged
    const toTag = H.to(req)?.params.get('tag');
    if (toTag && toTag === stableTag(req, 'se')) return;
    // ACK for a 2xx is its own transaction and goes end to end along the route set
    // (RFC 3261 13.2.2.4, 16.6): forward statelessly if it came through our Record-Route
    // route() accepts it when it carries our Route, or when the dialog was not record-routed
    // and the target is inside (RFC 3261 16.12); a stray ACK from outside toward anything
    // else matches nothing and is dropped
    const dec = this.route(ctx, req);
    // an ACK with neither our Route nor an inside target would only reach the PBX because its
    // Request-URI names a served domain: that is a stray ACK (Kamailio: t_check_trans() fails)
    if (!dec.fwd || dec.reply || (dec.fwd.kind === 'upstream' && dec.popRoutes === 0)) { this.ev.unmatched?.('ack', ctx.source); return; }
    let dest: Endpoint;
    let mayConnect = true;
    if (dec.fwd.kind === 'upstream') {
      const idx = this.upstreams.pick();
      if (idx < 0) return;
      const u = this.upstreams.list[idx]!.spec;
      dest = { transport: u.transport, address: u.host, port: u.port };
    } else { dest = dec.fwd.dest; mayConnect = dec.fwd.mayConnect; }
    // the ACK of a sips: dialog: never in clear either (edge/router/sips.ts)
    if (sipsNextHop(req, dest)) return;
    const listener = this.listenerFor(dest.transport, dest.address, dest.listenerId);
    if (!listener) return;
    const adv = this.adv.get(listener.id)!;
    // stateless forwarding: derive the branch from the incoming one so that ACK retransmissions
    // carry the same branch (RFC 3261 16.11)
    const inBranch = H.topVia(req)?.branch ?? '';
    const branch = 'z9hG4bK' + fastHash(['ack', inBranch], 16);
    const w = new MessageWriter(req);
    w.prependTop('Via', `SIP/2.0/${dest.transport.toUpperCase()} ${adv.hostPort};branch=${branch}${dest.transport === 'udp' ? ';rport' : ''}`);
    const mf = H.maxForwards(req);
    if (typeof mf === 'number') w.replaceFirst('max-forwards', String(Math.max(0, mf - 1)));
    else w.append('Max-Forwards', String(this.cfg.proxy.maxForwards));
    for (let i = 0; i < dec.popRoutes; i++) w.removeFirstValue('route');
    this.send(dest, w.toBuffer(), mayConnect, this.sideOf(dest), 'request');
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
    if (ct.state === 'proceeding') this.sendCancel(ct);
    else st.cancelPending = true; // RFC 3261 9.1: not before a provisional response
  }

  private sendCancel(ct: ClientTx): void {
    if (ct.cancel) return;
    const sent = parseMessage(Buffer.from(ct.sent, 'latin1'), { framing: 'datagram' });
    if (!sent.ok || sent.msg.kind !== 'request') return;
    // RFC 3261 9.1: the CANCEL's Via is the INVITE's top Via (ours: the first line we wrote)
    const bytes = buildHopRequest('CANCEL', sent.msg, H.first(sent.msg, 'via') ?? '');
    const cancel: ClientTx = {
      key: TransactionTable.clientKey(TransactionTable.branchOf(ct.key), 'CANCEL'), method: 'CANCEL', server: ct.server,
      dest: ct.dest, sent: bytes.toString('latin1'), received: undefined, state: 'trying', upstream: undefined, failover: undefined,
      tried: [], retransmitMs: this.t1,
      timerA: undefined, timerB: undefined, timerC: undefined, timerEnd: undefined, ack: undefined, cancel: undefined, cancels: ct,
    };
    ct.cancel = cancel;
    this.table.client.set(cancel.key, cancel);
    this.send(ct.dest, bytes, true, this.sideOf(ct.dest), 'request');
    this.startClientTimers(cancel);
  }

  // ---------------------------------------------------------------- client timers

  // The timer handlers: one function each per proxy, the transaction as argument (no closure per
  // transaction and timer: with 100,000 live transactions those were a tenth of their memory).

  /** Timer A (INVITE) / E (non-INVITE): retransmit, doubling, non-INVITE capped at T2 */
  private readonly onTimerA = (ct: ClientTx): void => {
    const invite = ct.method === 'INVITE';
    if (ct.state === 'calling' || ct.state === 'trying' || (!invite && ct.state === 'proceeding')) {
      this.ev.retransmission?.('sent');
      this.send(ct.dest, Buffer.from(ct.sent, 'latin1'), true, this.sideOf(ct.dest), 'request');
      ct.retransmitMs = invite ? ct.retransmitMs * 2 : Math.min(ct.retransmitMs * 2, this.t2);
      if (!invite && ct.state === 'proceeding') ct.retransmitMs = this.t2;
      ct.timerA = this.clock.setTimerWith(ct.retransmitMs, this.onTimerA, ct);
    }
  };

  /** Timer B / F: 64*T1 without a final (INVITE: without any response; non-INVITE: Timer F keeps
   *  running in Proceeding, RFC 3261 17.1.2.2) */
  private readonly onTimerB = (ct: ClientTx): void => {
    if (ct.state === 'calling' || ct.state === 'trying' || (ct.method !== 'INVITE' && ct.state === 'proceeding')) this.clientFailed(ct, 'request_timeout');
  };

  private readonly onTimerC = (ct: ClientTx): void => this.timerC(ct);
  private readonly onEndClient = (ct: ClientTx): void => this.endClient(ct);
  private readonly onEndServer = (st: ServerTx): void => this.endServer(st);

  /** Timer G: retransmit a non-2xx final to an INVITE until the ACK comes (RFC 3261 17.2.1) */
  private readonly onTimerG = (st: ServerTx): void => {
    if (st.state !== 'completed' || !st.lastResponse) return;
    this.ev.retransmission?.('sent');
    this.send(st.source, st.lastResponse, false, this.sideOf(st.source), 'response');
    st.gInterval = Math.min(st.gInterval * 2, this.t2);
    st.timerG = this.clock.setTimerWith(st.gInterval, this.onTimerG, st);
  };

  private startClientTimers(ct: ClientTx): void {
    if (ct.dest.transport === 'udp') ct.timerA = this.clock.setTimerWith(this.t1, this.onTimerA, ct);
    ct.timerB = this.clock.setTimerWith(64 * this.t1, this.onTimerB, ct);
  }

  /** No answer (timeout) or the bytes could not be sent: fail over, or answer 408/503. */
  private clientFailed(ct: ClientTx, reason: 'request_timeout' | 'send_failed'): void {
    this.clock.clearTimer(ct.timerA);
    this.clock.clearTimer(ct.timerB);
    this.clock.clearTimer(ct.timerC);
    ct.state = 'terminated';
    this.table.client.delete(ct.key);
    if (ct.cancels) return; // a CANCEL that timed out: the INVITE's own timers decide
    if (ct.upstream !== undefined) {
      // counted as traffic, never as ill health: anyone can send a request the PBX does not
      // answer, or whose answer the edge refuses (upstreams.ts); a probe decides instead
      if (reason === 'request_timeout') this.ev.upstreamResponse?.(ct.upstream, 'timeout');
      this.suspectUpstream(ct.upstream);
    }
    const st = ct.server;
    if (st.client !== ct || st.finalStatus !== undefined) return;
    if (!st.cancelled && this.nextTarget(st, ct)) return; // [trunks] RFC 3263 4.3
    // failover (only for requests that went to "any upstream" and were not cancelled)
    const req = ct.failover && !st.cancelled && this.upstreams.pick(ct.tried) >= 0 ? this.requestOf(st) : undefined;
    if (req) {
      const ctx: MessageContext = { msg: req, source: st.source, side: 'outside', trust: 'untrusted', receivedAt: this.clock.now() };
      const dec = this.route(ctx, req);
      if (dec.fwd?.kind === 'upstream') {
        this.forward(st, ctx, dec, ct.tried, req);
        return;
      }
    }
    if (st.cancelled) this.finalLocal(st, 487, 'request_terminated', undefined, req);
    else this.finalLocal(st, reason === 'send_failed' ? 503 : 408, reason, undefined, req);
  }

  /** [trunks] RFC 3263 4.3: after a timeout, a transport error or a 503 from a resolved target,
   *  send the request to the next target of its name. False when there is none. */
  private nextTarget(st: ServerTx, ct: ClientTx): boolean {
    if (this.outbound === undefined || ct.upstream !== undefined) return false;
    const n = this.outbound.next(st, ct.dest);
    if (n === undefined) return false;
    const req = this.requestOf(st);
    if (!req) return false;
    const ctx: MessageContext = { msg: req, source: st.source, side: this.sideOf(st.source), trust: 'inside', receivedAt: this.clock.now() };
    this.forward(st, ctx, { fwd: { kind: 'dest', dest: n.dest, mayConnect: true }, popRoutes: n.popRoutes, ...(n.loopHash !== undefined ? { loopHash: n.loopHash } : {}) }, [], req);
    return true;
  }

  /** A final response generated by the edge for server transaction st (from `req` when the
   *  caller has it parsed already). False when nothing was sent. */
  private finalLocal(st: ServerTx, status: number, reason: string, headers?: ReadonlyArray<readonly [string, string]>, req?: SipRequest): boolean {
    if (st.finalStatus !== undefined || !st.live) return false;
    const r = req ?? this.requestOf(st);
    // without the request nothing can be answered (it always re-parses: see requestOf); end the
    // transaction rather than leave it live: the client's own timer answers its user
    if (!r) { this.endServer(st); return false; }
    const bytes = buildReply(r, status, { source: st.source, toTag: stableTag(r, 'se'), headers, server: this.cfg.serverHeader });
    this.ev.proxyReply?.(status, reason);
    if (!bytes) { this.endServer(st); return false; }
    this.sendFinal(st, status, bytes);
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
    const probe = this.probes.get(top.branch);
    if (probe) {
      // only the upstream we probed answers a probe (the branch is random; the source must match)
      const u = this.upstreams.list[probe.idx]!.spec;
      if (ctx.source.address !== u.host) { this.ev.unmatched?.('response', ctx.source); return; }
      if (res.status < 200) return; // wait for the final answer (or the timeout)
      this.clock.clearTimer(probe.timer);
      this.probes.delete(top.branch);
      // RFC 3261 21.5.4: a 503 to an OPTIONS aimed at the PBX itself is the PBX saying it cannot
      // serve now; any other answer means it is alive (a 404 or 401 from Asterisk included)
      if (res.status === 503) this.upstreams.failure(probe.idx, 'probe_unavailable');
      else this.upstreams.success(probe.idx);
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
      if (status === 503) this.suspectUpstream(ct.upstream);
      else this.upstreams.success(ct.upstream);
    } else if (status !== 503) {
      this.outbound?.answered(ct.dest); // [trunks] a resolved target lives
    }
    if (ct.cancels) {
      // the answer to our CANCEL ends there (hop by hop)
      if (status >= 200) this.completeClient(ct);
      return;
    }
    const st = ct.server;
    if (st.client !== ct) {
      // a late answer from an upstream we failed over from: acknowledge a non-2xx, drop the rest
      if (status >= 300 && ct.method === 'INVITE') this.ackNon2xx(ct, res);
      return;
    }
    if (status < 200) {
      this.clock.clearTimer(ct.timerA);
      if (ct.state === 'calling' || ct.state === 'trying') {
        ct.state = 'proceeding';
        this.clock.clearTimer(ct.timerB);
        if (ct.method === 'INVITE') {
          // Timer C (RFC 3261 16.6 item 11): bound how long an INVITE may ring
          ct.timerC = this.clock.setTimerWith(TIMER_C_MS, this.onTimerC, ct);
        } else {
          // RFC 3261 17.1.2.2: non-INVITE keeps Timer F running in Proceeding
          ct.timerB = this.clock.setTimerWith(64 * this.t1, this.onTimerB, ct);
        }
      }
      if (ct.method === 'INVITE' && st.cancelPending && !ct.cancel) { st.cancelPending = false; this.sendCancel(ct); }
      if (status === 100) return; // RFC 3261 16.7 item 3: 100 is hop by hop
      if (st.finalStatus !== undefined) return;
      const bytes = this.stripTopVia(res);
      st.lastResponse = bytes;
      this.send(st.source, bytes, false, this.sideOf(st.source), 'response');
      return;
    }
    // final response
    if (ct.method === 'INVITE' && status >= 300) {
      if (ct.state === 'completed') {
        // retransmitted final: resend our ACK (RFC 3261 17.1.1.2), absorb
        this.ev.retransmission?.('absorbed');
        if (ct.ack) this.send(ct.dest, ct.ack, true, this.sideOf(ct.dest), 'request');
        return;
      }
      this.ackNon2xx(ct, res);
      if (status === 503 && !st.cancelled && this.nextTarget(st, ct)) return; // [trunks] RFC 3263 4.3
      // failover on 503 (RFC 3261 16.7 item 6: a 503 is not forwarded when another target exists)
      const req = status === 503 && ct.failover && !st.cancelled && this.upstreams.pick(ct.tried) >= 0 ? this.requestOf(st) : undefined;
      if (req) {
        const ctx2: MessageContext = { msg: req, source: st.source, side: 'outside', trust: 'untrusted', receivedAt: this.clock.now() };
        const dec = this.route(ctx2, req);
        if (dec.fwd?.kind === 'upstream') { this.forward(st, ctx2, dec, ct.tried, req); return; }
      }
      this.sendFinal(st, status, this.finalBytes(st, res));
      return;
    }
    if (ct.method === 'INVITE') {
      // 2xx: forward, and keep forwarding retransmissions while Accepted (RFC 6026 7.2)
      if (ct.state !== 'accepted') {
        this.clock.clearTimer(ct.timerA);
        this.clock.clearTimer(ct.timerB);
        this.clock.clearTimer(ct.timerC);
        ct.state = 'accepted';
        ct.timerEnd = this.clock.setTimerWith(64 * this.t1, this.onEndClient, ct);
      } else {
        this.ev.retransmission?.('sent');
      }
      const bytes = this.stripTopVia(res);
      if (st.finalStatus === undefined) {
        this.watchFinal(st, res); // observed; a 2xx is never replaced
        st.finalStatus = status;
        st.state = 'accepted';
        this.clock.clearTimer(st.timerEnd);
        st.timerEnd = this.clock.setTimerWith(64 * this.t1, this.onEndServer, st);
        // RFC 6026: an Accepted server transaction absorbs INVITE retransmissions, it never
        // resends the 2xx itself (the UAS does): keep no copy
        st.lastResponse = undefined;
        this.settle(st);
      }
      this.send(st.source, bytes, false, this.sideOf(st.source), 'response');
      return;
    }
    // non-INVITE final
    if (ct.state === 'completed') { this.ev.retransmission?.('absorbed'); return; }
    this.completeClient(ct);
    if (status === 503 && this.nextTarget(st, ct)) return; // [trunks] RFC 3263 4.3
    if (ct.method === 'REGISTER' && status < 300 && this.sideOf(st.source) === 'outside') {
      // a REGISTER the PBX accepted proves the source holds valid credentials (pass-through auth)
      this.ev.registered?.(st.source);
      this.holdRegisteredFlow(st, res);
    }
    this.sendFinal(st, status, this.finalBytes(st, res));
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
    const l = this.listenerFor(src.transport, src.address, src.listenerId);
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
    return this.ev.finalToOutside !== undefined && this.sideOf(st.source) === 'outside'
      && (this.ev.watchesSource === undefined || this.ev.watchesSource(st.source));
  }

  /** hand a final response to an outside client's request to the pass-through watcher */
  private watchFinal(st: ServerTx, res: SipResponse, req: SipRequest | undefined = this.watcherWants(st) ? this.requestOf(st) : undefined): FinalSubstitute | undefined {
    if (!req || !this.ev.finalToOutside || this.sideOf(st.source) !== 'outside') return undefined;
    return this.ev.finalToOutside(req, st.source, res);
  }

  private stripTopVia(res: SipResponse): Buffer {
    return new MessageWriter(res).removeFirstValue('via').toBuffer();
  }

  private ackNon2xx(ct: ClientTx, res: SipResponse): void {
    this.clock.clearTimer(ct.timerA);
    this.clock.clearTimer(ct.timerB);
    this.clock.clearTimer(ct.timerC);
    const sent = parseMessage(Buffer.from(ct.sent, 'latin1'), { framing: 'datagram' });
    if (sent.ok && sent.msg.kind === 'request') {
      // RFC 3261 17.1.1.3: one Via, equal to the top Via of the INVITE we sent
      ct.ack = buildHopRequest('ACK', sent.msg, H.first(sent.msg, 'via') ?? '', H.first(res, 'to'));
      this.send(ct.dest, ct.ack, true, this.sideOf(ct.dest), 'request');
    }
    ct.state = 'completed';
    // Timer D: 32 s over UDP to absorb retransmitted finals, 0 over reliable transports
    ct.timerEnd = this.clock.setTimerWith(ct.dest.transport === 'udp' ? Math.max(32_000, 64 * this.t1) : 0, this.onEndClient, ct);
  }

  private completeClient(ct: ClientTx): void {
    this.clock.clearTimer(ct.timerA);
    this.clock.clearTimer(ct.timerB);
    this.clock.clearTimer(ct.timerC);
    ct.state = 'completed';
    // Timer K: T4 over UDP, 0 otherwise (RFC 3261 17.1.2.2)
    ct.timerEnd = this.clock.setTimerWith(ct.dest.transport === 'udp' ? this.t4 : 0, this.onEndClient, ct);
  }

  private timerC(ct: ClientTx): void {
    if (ct.state !== 'proceeding') return;
    // RFC 3261 16.8: Timer C fired: cancel the branch and answer 408 ourselves
    this.sendCancel(ct);
    this.finalLocal(ct.server, 408, 'request_timeout');
  }

  /** send a final response upstream-to-client and run the server transaction's end timers */
  private sendFinal(st: ServerTx, status: number, bytes: Buffer): void {
    if (st.finalStatus !== undefined) return;
    st.finalStatus = status;
    st.lastResponse = bytes;
    this.send(st.source, bytes, false, this.sideOf(st.source), 'response');
    const udp = st.source.transport === 'udp';
    this.clock.clearTimer(st.timerEnd);
    if (st.method === 'INVITE') {
      if (status >= 300) {
        st.state = 'completed';
        // Timer G: retransmit the final (st.lastResponse) until the ACK comes (RFC 3261 17.2.1)
        if (udp) st.timerG = this.clock.setTimerWith(this.t1, this.onTimerG, st);
        // Timer H: give up waiting for the ACK (endServer stops Timer G)
        st.timerH = this.clock.setTimerWith(64 * this.t1, this.onEndServer, st);
      } else {
        st.state = 'accepted';
        st.timerEnd = this.clock.setTimerWith(64 * this.t1, this.onEndServer, st);
      }
    } else {
      st.state = 'completed';
      // Timer J: absorb retransmissions for 64*T1 over UDP
      st.timerEnd = this.clock.setTimerWith(udp ? 64 * this.t1 : 0, this.onEndServer, st);
    }
    this.settle(st);
  }

  private settle(st: ServerTx): void {
    for (const old of this.table.settle(st)) this.endServer(old);
  }

  private endClient(ct: ClientTx): void {
    ct.state = 'terminated';
    this.clock.clearTimer(ct.timerA);
    this.clock.clearTimer(ct.timerB);
    this.clock.clearTimer(ct.timerC);
    this.table.client.delete(ct.key);
  }

  private endServer(st: ServerTx): void {
    if (st.state === 'terminated') return;
    st.state = 'terminated';
    this.clock.clearTimer(st.timerG);
    this.clock.clearTimer(st.timerH);
    this.clock.clearTimer(st.timerEnd);
    if (this.table.removeServer(st)) {
      this.table.expired++;
      this.ev.txExpired?.();
    }
    const ct = st.client;
    if (ct && ct.state !== 'terminated' && ct.state !== 'completed' && ct.state !== 'accepted') {
      // server side is done but the branch is still pending (no final ever came): stop it
      this.endClient(ct);
    }
  }

  // ---------------------------------------------------------------- health probes

  /** Start periodic OPTIONS probes toward each upstream (health.intervalMs 0 disables them). */
  startProbes(): void {
    const every = this.cfg.health.intervalMs;
    if (every <= 0 || this.closing) return;
    const run = (): void => {
      this.upstreams.list.forEach((_, i) => this.probe(i));
      this.probeTimer = this.clock.setTimer(every, run);
    };
    run();
  }

  /**
   * Real traffic hinted that upstream idx may be sick (a timeout, a 503, a transport error):
   * probe it now rather than at the next period. Bounded whatever the traffic: one probe in flight
   * per upstream, at most one per health.timeoutMs. Without periodic probes (intervalMs 0) the
   * edge sends no OPTIONS at all, as configured.
   */
  private suspectUpstream(idx: number): void {
    if (this.cfg.health.intervalMs <= 0 || this.closing) return;
    if (this.clock.now() - this.probeSentAt[idx]! < this.cfg.health.timeoutMs) return;
    this.probe(idx);
  }

  /**
   * The transport could not connect to dest (TCP: refused, unreachable, timed out; local causes
   * such as EMFILE are filtered out by the caller). When dest is an upstream this is evidence only
   * a dead or unreachable PBX produces: a failure (bursts count once) and an early probe.
   */
  transportFailed(dest: Endpoint): void {
    const idx = this.upstreams.list.findIndex((u) => u.spec.transport === dest.transport && u.spec.host === dest.address && u.spec.port === dest.port);
    if (idx < 0) return;
    this.upstreams.failure(idx, 'transport_error');
    this.suspectUpstream(idx);
  }

  probe(idx: number): void {
    const u = this.upstreams.list[idx]!.spec;
    const dest: Endpoint = { transport: u.transport, address: u.host, port: u.port };
    const l = this.listenerFor(dest.transport, dest.address);
    if (!l) return;
    // one probe at a time per upstream: an answer or a timeout first
    for (const p of this.probes.values()) if (p.idx === idx) return;
    this.probeSentAt[idx] = this.clock.now();
    const adv = this.adv.get(l.id)!;
    const branch = `z9hG4bK${this.randomToken(12)}.hc`;
    const host = u.host.includes(':') ? `[${u.host}]` : u.host;
    const bytes = Buffer.from([
      `OPTIONS sip:${host}:${u.port} SIP/2.0`,
      `Via: SIP/2.0/${u.transport.toUpperCase()} ${adv.hostPort};branch=${branch}${u.transport === 'udp' ? ';rport' : ''}`,
      `From: <sip:sip-edge@${adv.hostPort}>;tag=${this.randomToken(6)}`,
      `To: <sip:${host}:${u.port}>`,
      `Call-ID: ${this.randomToken(12)}@sip-edge`,
      'CSeq: 1 OPTIONS', 'Max-Forwards: 70', 'User-Agent: sip-edge health check', 'Content-Length: 0', '', '',
    ].join('\r\n'), 'latin1');
    const timer = this.clock.setTimer(this.cfg.health.timeoutMs, () => {
      if (this.probes.delete(branch)) this.upstreams.failure(idx, 'probe_timeout');
    });
    this.probes.set(branch, { idx, timer });
    // a probe that could not even be handed to the socket (a full send queue, no listener for
    // the transport) stays pending: it fails by its timeout like any unanswered one, once
    this.send(dest, bytes, true, 'inside', 'request');
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
    this.clock.clearTimer(this.probeTimer);
    for (const p of this.probes.values()) this.clock.clearTimer(p.timer);
    this.probes.clear();
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
          this.sendCancel(ct);
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

/** RFC 3261 16.6 item 4 / RFC 5630 4.1: is this a request for a SIPS URI (its Request-URI or its
 *  first Route)? Then the edge's Record-Route and Path entries on TLS sides are SIPS URIs. */
function isSips(req: SipRequest): boolean {
  if (/^sips:/i.test(req.uri)) return true;
  const r = H.routes(req)?.[0];
  return r !== undefined && r.uri.scheme === 'sips';
}

/**
 * A Record-Route / Path URI naming the edge on one side: `<sips:user@host:port;lr>` for a SIPS
 * request on a TLS side (SIPS implies TLS, RFC 5630 3.1.1, so no transport parameter), else
 * `<sip:user@host:port;transport=T;lr>` (none for UDP). A SIPS request whose other side is not
 * TLS (an upstream over UDP or TCP) keeps a sip: entry there: that hop is not TLS, and a sips:
 * URI naming it would make the next hop try TLS on a UDP port.
 */
function edgeUri(user: string | undefined, hostPort: string, transport: TransportName, sips: boolean): string {
  const u = user ? `${user}@` : '';
  if (sips && transport === 'tls') return `<sips:${u}${hostPort};lr>`;
  const t = transport === 'udp' ? '' : `;transport=${transport}`;
  return `<sip:${u}${hostPort}${t};lr>`;
}
