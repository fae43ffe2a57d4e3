// The message path: receive -> gate -> parse -> classify once -> pipeline -> respond or proxy.
// The one file a newcomer reads to follow a message through the edge; it decides no policy
// (stages do), applies no consequence (edge/path/observer.ts), builds no reply
// (edge/path/respond.ts) and routes nothing (edge/router/proxy.ts).
//
// Gate (Envoy's listener filters, Kamailio's REQINIT order): cheapest first, on raw bytes: a
// banned source is dropped before any parsing (a local copy of the shared ban set, never a store
// round trip per packet); the size cap and framing are the parser's and the transports'; a parse
// failure gets the verdict edge/stages/parse-verdict.ts gives it.
//
// Classify once: side, trust, the access lists' answer, the source key and promotion are derived
// here, once per message, into the context every stage and the proxy read.
//
// Nothing is delivered before the path is complete: the listeners are bound before the proxy can
// exist (it needs their addresses), so messages that arrive in between wait in a bounded queue
// and run when open() is called; beyond the queue they are dropped and counted
// (sipedge_verdicts_total{stage="gate",reason="starting"}), never lost silently.
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { SourceClassifier } from '../classify';
import type { ResolvedConfig } from '../config/types';
import type { EdgeMetrics } from '../metrics';
import type { OverloadGuard } from '../overload';
import type { Pipeline } from '../pipeline';
import type { Proxy } from '../router/proxy';
import { parseMessage, type ParseReason } from '../sip/parser';
import type { Endpoint, SipRequest } from '../sip/types';
import * as H from '../sip/headers';
import { verdictForParseFailure } from '../stages/parse-verdict';
import type { LocalBanCache } from '../store';
import type { Suspicion } from '../suspicion';
import type { Inbound } from '../transport/types';
import type { MessageContext, Side, Verdict } from '../verdict';
import { preview, sampled } from '../log';
import type { Observer } from './observer';
import { answerable } from './respond';
import { PriorityQueues, priorityClass, type PriorityClass } from './priority';

/** messages held while the path is being completed at start (a few ms of binding) */
const STARTING_QUEUE = 4096;

export interface MessagePathOptions {
  readonly cfg: ResolvedConfig;
  readonly log: Logger;
  readonly metrics: EdgeMetrics;
  readonly bans: LocalBanCache;
  readonly classifier: SourceClassifier;
  readonly suspicion: Suspicion;
  readonly observer: Observer;
  readonly overload: OverloadGuard;
  /** the stage order in force (swapped whole on a rules reload) */
  readonly pipeline: () => Pipeline;
  /** a stream connection whose client certificate identifies a trusted peer (TLS, tls.peers) */
  readonly trustedConnection?: (source: Endpoint) => boolean;
  /** trusted-first prioritization before parse (edge/path/priority.ts); absent: handled as it comes */
  readonly priority?: { readonly turnBudgetMs: number; readonly maxQueuedBytes: number };
}

export class MessagePath {
  private proxy: Proxy | undefined;
  private starting: Inbound[] | null = [];
  private readonly o: MessagePathOptions;
  private readonly parseLimits: { datagram: { limits: ResolvedConfig['limits']; framing: 'datagram' }; stream: { limits: ResolvedConfig['limits']; framing: 'stream' }; message: { limits: ResolvedConfig['limits']; framing: 'message' } };

  /** messages handed to the path so far (the idle collector's view of activity) */
  received = 0;

  /** the per-class queues between the transports and the expensive path, when prioritizing */
  readonly queues: PriorityQueues | undefined;

  constructor(o: MessagePathOptions) {
    this.o = o;
    this.parseLimits = { datagram: { limits: o.cfg.limits, framing: 'datagram' }, stream: { limits: o.cfg.limits, framing: 'stream' }, message: { limits: o.cfg.limits, framing: 'message' } };
    this.queues = o.priority === undefined ? undefined : new PriorityQueues({
      ...o.priority,
      classify: this.gate,
      handle: this.handle,
      onShed: (cls, reason) => o.metrics.priorityShed(cls, reason),
      onDelay: (cls, seconds) => o.metrics.observePriorityDelay(cls, seconds),
    });
  }

  /** the path is complete: deliver what waited, in order, then everything as it comes */
  open(proxy: Proxy): void {
    this.proxy = proxy;
    const waiting = this.starting ?? [];
    this.starting = null;
    for (const inb of waiting) this.receive(inb);
  }

  /** one inbound message from a transport (or a test, or the warm-up) */
  readonly receive = (inb: Inbound): void => {
    if (this.proxy === undefined) { this.hold(inb); return; }
    // counted once: a held message is counted when open() replays it through here
    this.received++;
    if (this.queues !== undefined) this.queues.push(inb);
    else this.handle(inb);
  };

  /** the priority class from the cheap view (no parse): the source against the inside, ban,
   *  trusted and promoted sets, and the bytes' status line or To tag; null = banned, dropped */
  private readonly gate = (inb: Inbound): PriorityClass | null => {
    const source = inb.source;
    const { classifier } = this.o;
    if (classifier.isInsideSource(source)) return priorityClass(inb.bytes, true);
    if (this.o.bans.check(source.address, Date.now())) {
      this.o.metrics.received(source.transport, 'outside', 'invalid');
      this.o.metrics.verdict('gate', 'drop', 'banned', 'enforce');
      return null;
    }
    const favoured = classifier.outside(source.address).trust === 'trusted' || this.o.trustedConnection?.(source) === true || this.o.suspicion.isPromoted(source.address);
    return priorityClass(inb.bytes, favoured);
  };

  /** gate, parse, classify, stages, then respond or route */
  private readonly handle = (inb: Inbound): void => {
    const proxy = this.proxy!;
    const { metrics, classifier } = this.o;
    try {
      const source = inb.source;
      const side: Side = classifier.isInsideSource(source) ? 'inside' : 'outside';
      if (side === 'outside' && this.o.bans.check(source.address, Date.now())) {
        metrics.received(source.transport, side, 'invalid');
        metrics.verdict('gate', 'drop', 'banned', 'enforce');
        return;
      }
      const t = source.transport;
      const r = parseMessage(inb.bytes, t === 'udp' ? this.parseLimits.datagram : t === 'ws' || t === 'wss' ? this.parseLimits.message : this.parseLimits.stream);
      if (!r.ok) {
        metrics.received(source.transport, side, 'invalid');
        metrics.parseFailure(r.reason as ParseReason);
        if (side === 'outside') this.o.observer.evidence(source, 'malformed', r.reason);
        const v = answerable(verdictForParseFailure(r, source), r.partial);
        if (v.action !== 'continue') metrics.verdictOf('parse', v, 'enforce');
        if (sampled('parse_failure', 5)) this.o.log.info({ event: 'parse_failure', reason: r.reason, src: source.address, transport: source.transport, preview: preview(inb.bytes) }, 'malformed message');
        proxy.responder.verdict(v, r.partial, source);
        return;
      }
      const msg = r.msg;
      metrics.received(source.transport, side, msg.kind);
      if (msg.kind === 'request') metrics.request(msg.method, side);
      else metrics.response(msg.status, side);
      const ctx = this.classify(msg, source, side, inb.receivedAt);
      if (ctx.trust === 'untrusted' && msg.kind === 'request') this.o.overload.sawUnknown();
      const out = this.o.pipeline().run(ctx);
      if (out instanceof Promise) {
        out.then((o) => this.finish(ctx, o.verdict), (err) => { if (sampled('internal_error', 5)) this.o.log.error({ err }, 'pipeline failed'); });
      } else {
        this.finish(ctx, out.verdict);
      }
    } catch (err) {
      // a bug, never a reaction to attacker bytes by design; keep serving
      if (sampled('internal_error', 5)) this.o.log.error({ err, src: inb.source.address, preview: preview(inb.bytes) }, 'internal error');
    }
  };

  /** a stream message over the size cap whose head we have: 413 (RFC 3261 21.4.11) */
  readonly oversize = (head: Buffer, source: Endpoint): void => {
    const proxy = this.proxy;
    if (proxy === undefined) return;
    const limits = this.o.cfg.limits;
    const r = parseMessage(head, { limits: { ...limits, maxMessageBytes: Math.max(limits.maxMessageBytes, head.length) }, framing: 'datagram' });
    const msg = r.ok ? r.msg : r.partial;
    if (msg === undefined || msg.kind !== 'request') return;
    const v = answerable({ action: 'reply', status: 413, reason: 'message_too_large' }, msg);
    this.o.metrics.verdictOf('parse', v, 'enforce');
    proxy.responder.verdict(v, msg, source);
  };

  /** side, trust, the access lists' answer, the source key and promotion, once per message */
  private classify(msg: MessageContext['msg'], source: Endpoint, side: Side, receivedAt: number): MessageContext {
    if (side === 'inside') return { msg, source, side, trust: 'inside', receivedAt };
    const c = this.o.classifier.outside(source.address);
    const s = this.o.suspicion;
    const trust = c.trust === 'trusted' || this.o.trustedConnection?.(source) === true ? 'trusted' : c.trust;
    return { msg, source, side, trust, receivedAt, access: c.access, sourceKey: s.sourceKey(source.address), promoted: s.isPromoted(source.address) };
  }

  private finish(ctx: MessageContext, verdict: Verdict): void {
    const proxy = this.proxy!;
    if (verdict.action !== 'continue') {
      proxy.responder.verdict(verdict, ctx.msg, ctx.source);
    } else if (ctx.msg.kind === 'request') {
      // admission after the stages: under overload the security stages still see every request
      // (a flood still earns its bans, which make it cheap at the gate); only what would be
      // forwarded is refused
      if (!(this.o.overload.active && ctx.side === 'outside' && this.shedNew(ctx, ctx.msg as SipRequest))) proxy.handleRequest(ctx);
    } else {
      proxy.handleResponse(ctx);
    }
    this.o.metrics.observeProcessing(ctx.msg.kind, (performance.now() - ctx.receivedAt) / 1000);
  }

  /** RFC 7339 applied locally: only requests that would start new work are refused (no To tag,
   *  not ACK/CANCEL, not a retransmission of a transaction the edge holds) */
  private shedNew(ctx: MessageContext, msg: SipRequest): boolean {
    if (msg.method === 'ACK' || msg.method === 'CANCEL') return false;
    const t = H.to(msg);
    if (!t || t.params.get('tag')) return false;
    const proxy = this.proxy!;
    if (proxy.isRetransmission(msg, ctx.source)) return false;
    const favoured = ctx.trust === 'trusted' || ctx.promoted === true;
    const overload = this.o.overload;
    if (!overload.shed(favoured)) return false;
    // known customers are told to come back later (RFC 3261 21.5.4); unknown sources get
    // nothing: a 503 per spoofed packet would make the edge a reflector when it can least afford it
    if (favoured) {
      this.o.metrics.verdict('overload', 'reply', 'overload', 'enforce');
      proxy.responder.reply(msg, ctx.source, 503, { headers: [['Retry-After', overload.retryAfter()]] });
    } else {
      this.o.metrics.verdict('overload', 'drop', 'overload', 'enforce');
    }
    return true;
  }

  private hold(inb: Inbound): void {
    if (this.starting !== null && this.starting.length < STARTING_QUEUE) { this.starting.push(inb); return; }
    this.o.metrics.verdict('gate', 'drop', 'starting', 'enforce');
  }
}
