// RFC 3263 section 4 ("Client Usage"): which transport, address and port a SIP request for a
// URI goes to, as an ordered list of targets the caller tries one after the other (RFC 3263 4.3:
// on a transport error, a timeout or a 503, the next target).
//
// Two faces, so that DNS never sits on the per-packet path for a name already resolved:
// - lookup(dest): synchronous, from the cache only. Fresh -> the targets. Expired but inside the
//   stale window -> the old targets, and a refresh starts in the background (serve-stale, RFC
//   8767 4). Unknown -> undefined, and a resolution starts in the background.
// - resolve(dest): the same answer as a promise; waits for DNS only when the cache has nothing
//   usable. Identical concurrent resolutions share one run.
// watch(dest, fn) keeps a name fresh without traffic: it refreshes at each TTL expiry and calls
// fn when the target set changes (upstreams and their health checks follow a changed record
// without a restart).
//
// Bounds: at most `maxQueriesPerResolution` questions per resolution (NAPTR -> SRV -> A/AAAA),
// NAPTR records followed, SRV records per name, addresses per host and targets in total are
// capped; at most `maxNames` resolutions and 8 x maxNames record sets are cached (LRU); failed
// resolutions are remembered for `errorTtlSeconds` so that a dead server is not asked once per
// request. Every question is bounded in time by the client (edge/dns/client.ts).
import * as fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import { isIP } from '../net/address';
import type { SipUri } from '../sip/types';
import { DnsClient, normalizeName } from './client';
import type { DnsServer } from './client';
import { byPriority, naptrOrder, weightedOrder } from './srv';
import type { Weighted } from './srv';
import type { DnsAnswer, DnsMetrics, DnsQueryType, DnsRecord, DnsResult } from './types';
import { nullDnsMetrics } from './types';

/** Transports RFC 3263 resolution can choose (the ones the edge may support). */
export type SipDnsTransport = 'udp' | 'tcp' | 'tls';

/** What to resolve: the parts of a SIP/SIPS URI that RFC 3263 4 looks at. */
export interface SipDestination {
  /** host name or IP literal (IPv6 without brackets), as in the URI (or its maddr) */
  readonly host: string;
  /** explicit port from the URI: no NAPTR/SRV, A/AAAA only (RFC 3263 4.2) */
  readonly port?: number;
  /** explicit transport parameter: no NAPTR, SRV for that transport (RFC 3263 4.1) */
  readonly transport?: SipDnsTransport;
  /** SIPS URI: TLS only (RFC 3263 4.1) */
  readonly secure?: boolean;
}

/** One place to send the request to. */
export interface SipTarget {
  readonly transport: SipDnsTransport;
  /** IP literal, canonical */
  readonly address: string;
  readonly port: number;
  readonly family: 4 | 6;
  /** the host name the address came from (SRV target or the URI host); the address itself for
   *  a numeric URI. For logs and TLS server name checks, never a metric label. */
  readonly name: string;
  /** SRV priority it came from (0 when there was no SRV) */
  readonly priority: number;
}

/** The ordered failover list for one destination. */
export interface Resolution {
  /** ok when there is at least one target; else why there is none */
  readonly result: DnsResult;
  /** try in this order: the next one on a transport error, a timeout or a 503 (RFC 3263 4.3) */
  readonly targets: readonly SipTarget[];
  /** clock time (ms) until which this is fresh; after it, lookup() still serves it while it
   *  refreshes, up to the stale window */
  readonly expiresAt: number;
}

export interface SipResolverOptions {
  /** servers to ask; empty or absent = the nameservers of /etc/resolv.conf */
  readonly servers?: readonly DnsServer[];
  /** per question and server (default 2000) */
  readonly timeoutMs?: number;
  /** rounds over the servers (default 2) */
  readonly attempts?: number;
  /** questions in flight at once (default 256) */
  readonly maxOutstanding?: number;
  /** EDNS0 payload size advertised; 0 = none (default 1232) */
  readonly ednsUdpSize?: number;
  /** transports the edge can use, in order of preference for the SRV fallback (default udp, tcp) */
  readonly transports?: readonly SipDnsTransport[];
  /** look up AAAA too (default true) */
  readonly ipv6?: boolean;
  /** IPv6 addresses of a host before its IPv4 ones (default false) */
  readonly preferIpv6?: boolean;
  /** TTL bounds applied to every answer, seconds (defaults 1 and 3600) */
  readonly minTtlSeconds?: number;
  readonly maxTtlSeconds?: number;
  /** upper bound for negative answers (RFC 2308 5), and their TTL when no SOA came (default 300 / 30) */
  readonly maxNegativeTtlSeconds?: number;
  readonly negativeTtlSeconds?: number;
  /** a failed resolution (timeout, servfail ...) is remembered this long (default 5) */
  readonly errorTtlSeconds?: number;
  /** how long past its expiry a resolution is still served while refreshes fail (default 3600) */
  readonly staleSeconds?: number;
  /** cached resolutions (default 10000); record sets: 8 times as many */
  readonly maxNames?: number;
  /** questions one resolution may ask (default 24) */
  readonly maxQueriesPerResolution?: number;
  readonly metrics?: DnsMetrics;
  /** monotonic ms (default performance.now) */
  readonly now?: () => number;
  /** [0, 1) for RFC 2782 weighted selection (default Math.random: load spreading, not secrecy) */
  readonly random?: () => number;
  /** resolv.conf to read when no servers are given (default /etc/resolv.conf) */
  readonly resolvConf?: string;
}

/** NAPTR records followed, SRV records per name, addresses per host and family, targets. */
const MAX_NAPTR = 4;
const MAX_SRV = 8;
const MAX_ADDRESSES = 4;
const MAX_TARGETS = 16;

/** RFC 3263 4.1 / RFC 3261 19.1.2: default ports. */
export function defaultPort(t: SipDnsTransport): number { return t === 'tls' ? 5061 : 5060; }

/** RFC 3263 4.1: NAPTR service -> transport (RFC 3263 section 7 registrations). */
const NAPTR_SERVICES: Readonly<Record<string, { transport: SipDnsTransport; secure: boolean }>> = {
  'sip+d2u': { transport: 'udp', secure: false },
  'sip+d2t': { transport: 'tcp', secure: false },
  'sips+d2t': { transport: 'tls', secure: true },
};

/** RFC 3263 4.1: SRV service name per transport ("_sips._tcp" is TLS over TCP). */
export function srvName(t: SipDnsTransport, host: string): string {
  return `${t === 'udp' ? '_sip._udp' : t === 'tcp' ? '_sip._tcp' : '_sips._tcp'}.${host}`;
}

/** The destination RFC 3263 resolves for a SIP/SIPS URI: maddr wins over the host (RFC 3263
 *  4: "If the URI contains an maddr parameter, the target is the maddr value"). null for a URI
 *  this resolver cannot handle (tel:, a transport it does not know, udp with sips). */
export function destinationFromUri(uri: SipUri): SipDestination | null {
  if (uri.scheme !== 'sip' && uri.scheme !== 'sips') return null;
  const secure = uri.scheme === 'sips';
  const maddr = uri.params.get('maddr');
  const host = typeof maddr === 'string' && maddr !== '' ? maddr.toLowerCase().replace(/^\[(.*)\]$/, '$1') : uri.host;
  const tp = uri.params.get('transport');
  let transport: SipDnsTransport | undefined;
  if (tp !== undefined) {
    const t = (tp ?? '').toLowerCase();
    if (t === 'udp') { if (secure) return null; transport = 'udp'; }
    // RFC 3261 26.2.2: a SIPS URI with transport=tcp means TLS over TCP
    else if (t === 'tcp') transport = secure ? 'tls' : 'tcp';
    else if (t === 'tls') transport = 'tls';
    else return null;
  }
  return { host, ...(uri.port !== undefined ? { port: uri.port } : {}), ...(transport !== undefined ? { transport } : {}), ...(secure ? { secure } : {}) };
}

/** The nameservers of a resolv.conf text (resolv.conf(5): at most 3, port 53; scoped IPv6
 *  link-local entries are skipped). */
export function parseResolvConf(text: string): DnsServer[] {
  const out: DnsServer[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (!m || out.length >= 3) continue;
    const a = m[1]!;
    if (!a.includes('%') && isIP(a) !== 0) out.push({ address: a, port: 53 });
  }
  return out;
}

interface Cached<V> {
  value: V;
  expiresAt: number;
  /** a failure, kept for errorTtl only and never served as stale */
  failed: boolean;
}

/**
 * Map with a size bound and approximate LRU eviction (the oldest insertion goes first). A hit
 * moves its entry to the young end only when it has drifted into the older half, so that the
 * common hit costs one Map.get and no delete/set (bench/dns.ts).
 */
class Lru<V> {
  private readonly m = new Map<string, { v: V; pos: number }>();
  private tick = 0;
  private readonly half: number;
  constructor(private readonly max: number) { this.half = Math.max(1, max >> 1); }
  get size(): number { return this.m.size; }
  get(k: string): V | undefined {
    const n = this.m.get(k);
    if (n === undefined) return undefined;
    if (this.tick - n.pos > this.half) { this.m.delete(k); this.m.set(k, n); n.pos = ++this.tick; }
    return n.v;
  }
  peek(k: string): V | undefined { return this.m.get(k)?.v; }
  set(k: string, v: V): void {
    this.m.delete(k);
    this.m.set(k, { v, pos: ++this.tick });
    while (this.m.size > this.max) this.m.delete(this.m.keys().next().value as string);
  }
}

/** Destinations cached per host name (port, transport and scheme variants). */
const MAX_VARIANTS = 8;

interface PlanEntry {
  /** the destination's parts besides the host, matched without building a key string */
  readonly secure: boolean;
  readonly transport: SipDnsTransport | undefined;
  readonly port: number | undefined;
  /** the last good resolution (or the failure when there never was one) */
  res: Resolution;
  /** RFC 2782 groups to draw a fresh order from per lookup; absent when the order is fixed */
  bands?: readonly Band[];
  failed: boolean;
  /** the last refresh failed; the next one not before this */
  retryAt: number;
}

/** Targets that compete by weight (one SRV priority of one transport); each choice is one SRV
 *  record and yields that target host's addresses. */
type Band = readonly Weighted<readonly SipTarget[]>[];

interface Watch {
  readonly dest: SipDestination;
  readonly listeners: Set<(r: Resolution) => void>;
  timer?: NodeJS.Timeout;
  signature: string;
}

/** Budget of questions of one resolution (RFC 3263 chains: NAPTR -> SRV -> A/AAAA). */
interface Budget { left: number }

export class SipResolver {
  readonly client: DnsClient;
  private readonly o: Required<Omit<SipResolverOptions, 'servers' | 'metrics' | 'now' | 'random' | 'resolvConf'>>;
  private readonly metrics: DnsMetrics;
  private readonly now: () => number;
  private readonly random: () => number;
  /** host -> its cached destinations (keyed by the host string itself: V8 caches a string's
   *  hash, so the per-request lookup builds no key) */
  private readonly plans: Lru<PlanEntry[]>;
  private readonly rrsets: Lru<Cached<DnsAnswer>>;
  private readonly running = new Map<string, Promise<Resolution>>();
  private readonly watches = new Map<string, Watch>();
  private closed = false;

  constructor(opts: SipResolverOptions = {}) {
    let servers = opts.servers ?? [];
    if (servers.length === 0) {
      let text = '';
      try { text = fs.readFileSync(opts.resolvConf ?? '/etc/resolv.conf', 'utf8'); } catch { /* no file: no servers, every lookup fails as error */ }
      servers = parseResolvConf(text);
    }
    this.o = {
      timeoutMs: opts.timeoutMs ?? 2000,
      attempts: opts.attempts ?? 2,
      maxOutstanding: opts.maxOutstanding ?? 256,
      ednsUdpSize: opts.ednsUdpSize ?? 1232,
      transports: opts.transports ?? ['udp', 'tcp'],
      ipv6: opts.ipv6 ?? true,
      preferIpv6: opts.preferIpv6 ?? false,
      minTtlSeconds: opts.minTtlSeconds ?? 1,
      maxTtlSeconds: opts.maxTtlSeconds ?? 3600,
      maxNegativeTtlSeconds: opts.maxNegativeTtlSeconds ?? 300,
      negativeTtlSeconds: opts.negativeTtlSeconds ?? 30,
      errorTtlSeconds: opts.errorTtlSeconds ?? 5,
      staleSeconds: opts.staleSeconds ?? 3600,
      maxNames: opts.maxNames ?? 10000,
      maxQueriesPerResolution: opts.maxQueriesPerResolution ?? 24,
    };
    this.metrics = opts.metrics ?? nullDnsMetrics;
    this.now = opts.now ?? (() => performance.now());
    this.random = opts.random ?? Math.random;
    this.plans = new Lru(this.o.maxNames);
    this.rrsets = new Lru(this.o.maxNames * 8);
    this.client = new DnsClient({
      servers, timeoutMs: this.o.timeoutMs, attempts: this.o.attempts, maxOutstanding: this.o.maxOutstanding,
      ednsUdpSize: this.o.ednsUdpSize, metrics: this.metrics,
    });
  }

  /** The servers asked (from the options or resolv.conf). */
  get servers(): readonly DnsServer[] { return this.client.servers; }

  /** cached resolutions */
  get size(): number { return this.plans.size; }

  private entry(dest: SipDestination, touch: boolean): PlanEntry | undefined {
    const list = touch ? this.plans.get(dest.host) : this.plans.peek(dest.host);
    if (list === undefined) return undefined;
    const secure = dest.secure === true;
    for (let i = 0; i < list.length; i++) {
      const e = list[i]!;
      if (e.port === dest.port && e.transport === dest.transport && e.secure === secure) return e;
    }
    return undefined;
  }

  private put(dest: SipDestination, e: PlanEntry): void {
    const list = this.plans.peek(dest.host);
    if (list === undefined) { this.plans.set(dest.host, [e]); return; }
    const i = list.findIndex((x) => x.port === e.port && x.transport === e.transport && x.secure === e.secure);
    if (i >= 0) list[i] = e;
    else {
      if (list.length >= MAX_VARIANTS) list.shift();
      list.push(e);
    }
  }

  /**
   * Synchronous, cache only: the failover list for `dest`, or undefined when nothing usable is
   * cached yet (a resolution then starts in the background; the caller answers or queues as it
   * sees fit, and the next lookup finds it). An expired entry is still returned, up to the stale
   * window, while it refreshes. A cached failure is returned as such (result != ok, no targets).
   */
  lookup(dest: SipDestination): Resolution | undefined {
    const e = this.entry(dest, true);
    const now = this.now();
    if (e === undefined) {
      const lit = literalResolution(dest, this.o.transports);
      if (lit !== undefined) {
        this.put(dest, { secure: dest.secure === true, transport: dest.transport, port: dest.port, res: lit, failed: false, retryAt: 0 });
        return lit;
      }
      this.metrics.cache('miss');
      this.refresh(destKey(dest), dest);
      return undefined;
    }
    if (now < e.res.expiresAt) {
      this.metrics.cache('hit');
      return this.drawn(e);
    }
    if (!e.failed && now < e.res.expiresAt + this.o.staleSeconds * 1000) {
      this.metrics.cache('stale');
      if (now >= e.retryAt) this.startRefresh(e, dest, now);
      return this.drawn(e);
    }
    this.metrics.cache('miss');
    if (now >= e.retryAt) this.startRefresh(e, dest, now);
    return undefined;
  }

  /** One background refresh per entry at a time, and at most one per errorTtl: the stale path
   *  of later lookups is a compare (store() sets retryAt again when the refresh ends). */
  private startRefresh(e: PlanEntry, dest: SipDestination, now: number): void {
    e.retryAt = now + this.o.errorTtlSeconds * 1000;
    void this.refresh(destKey(dest), dest);
  }

  /** The failover list for `dest`: from the cache when fresh (or stale while a refresh runs),
   *  else after DNS answers (bounded in time). Never rejects. */
  async resolve(dest: SipDestination): Promise<Resolution> {
    const cached = this.lookup(dest);
    if (cached !== undefined && (cached.result === 'ok' || this.now() < cached.expiresAt)) return cached;
    const key = destKey(dest);
    const r = await (this.running.get(key) ?? this.refresh(key, dest));
    const e = this.entry(dest, false);
    return e !== undefined ? this.drawn(e) : r;
  }

  /**
   * Keep `dest` fresh without traffic: refresh at each expiry and call `onChange` whenever its set
   * of targets changes (and once with the first resolution). Returns the unsubscribe function.
   */
  watch(dest: SipDestination, onChange: (r: Resolution) => void): () => void {
    const key = destKey(dest);
    let w = this.watches.get(key);
    if (w === undefined) {
      w = { dest, listeners: new Set(), signature: '' };
      this.watches.set(key, w);
    }
    w.listeners.add(onChange);
    const e = this.entry(dest, false);
    if (e !== undefined && !e.failed) {
      onChange(e.res);
      w.signature = signature(e.res);
      this.schedule(key, w, e);
    } else {
      void this.resolve(dest);
    }
    return () => {
      const cur = this.watches.get(key);
      if (cur === undefined) return;
      cur.listeners.delete(onChange);
      if (cur.listeners.size === 0) {
        if (cur.timer) clearTimeout(cur.timer);
        this.watches.delete(key);
      }
    };
  }

  /** Stop timers and sockets; lookups after close only read the cache. */
  close(): void {
    this.closed = true;
    for (const w of this.watches.values()) if (w.timer) clearTimeout(w.timer);
    this.watches.clear();
    this.client.close();
  }

  // -------------------------------------------------------------------------------------------

  /** A fresh RFC 2782 draw when weights decide the order, else the stored list. */
  private drawn(e: PlanEntry): Resolution {
    if (e.bands === undefined) return e.res;
    const targets: SipTarget[] = [];
    for (const band of e.bands) {
      if (band.length === 1) { for (const t of band[0]!.value) targets.push(t); continue; }
      for (const list of weightedOrder(band, this.random)) for (const t of list) targets.push(t);
    }
    return { result: e.res.result, targets, expiresAt: e.res.expiresAt };
  }

  private refresh(key: string, dest: SipDestination): Promise<Resolution> {
    const running = this.running.get(key);
    if (running !== undefined) return running;
    if (this.closed) return Promise.resolve({ result: 'error', targets: [], expiresAt: 0 });
    if (this.running.size >= this.o.maxOutstanding) {
      // as many resolutions as questions in flight: more would only queue behind them
      return Promise.resolve({ result: 'busy', targets: [], expiresAt: this.now() });
    }
    const p = this.run(dest).then((built) => {
      this.running.delete(key);
      return this.store(key, dest, built);
    });
    this.running.set(key, p);
    return p;
  }

  /** Keep a good old resolution over a failed refresh (serve-stale); remember failures briefly. */
  private store(key: string, dest: SipDestination, built: { res: Resolution; bands?: readonly Band[] }): Resolution {
    const now = this.now();
    const old = this.entry(dest, false);
    const retryAt = now + this.o.errorTtlSeconds * 1000;
    let entry: PlanEntry;
    const id = { secure: dest.secure === true, transport: dest.transport, port: dest.port };
    const transient = built.res.result !== 'ok' && built.res.result !== 'nxdomain' && built.res.result !== 'nodata';
    if (transient && old !== undefined && !old.failed && now < old.res.expiresAt + this.o.staleSeconds * 1000) {
      old.retryAt = retryAt;
      entry = old;
    } else if (transient) {
      entry = { ...id, res: { ...built.res, expiresAt: retryAt }, failed: true, retryAt };
      if (built.res.result === 'busy') return entry.res; // nothing learnt: not cached
    } else {
      entry = { ...id, res: built.res, failed: false, retryAt: 0, ...(built.bands !== undefined ? { bands: built.bands } : {}) };
    }
    this.put(dest, entry);
    const w = this.watches.get(key);
    if (w !== undefined && !this.closed) {
      if (!entry.failed) {
        const sig = signature(entry.res);
        if (sig !== w.signature) {
          w.signature = sig;
          for (const fn of [...w.listeners]) { try { fn(entry.res); } catch { /* a listener must not break the resolver */ } }
        }
      }
      this.schedule(key, w, entry);
    }
    return entry.res;
  }

  private schedule(key: string, w: Watch, e: PlanEntry): void {
    if (w.timer) clearTimeout(w.timer);
    const at = e.failed || e.retryAt > e.res.expiresAt ? e.retryAt : e.res.expiresAt;
    w.timer = setTimeout(() => { w.timer = undefined; void this.refresh(key, w.dest); }, Math.max(100, at - this.now()));
    w.timer.unref();
  }

  /** One question through the record-set cache. */
  private async ask(name: string, type: DnsQueryType, budget: Budget): Promise<{ a: DnsAnswer; expiresAt: number }> {
    const key = `${type} ${name}`;
    const now = this.now();
    const c = this.rrsets.get(key);
    if (c !== undefined && now < c.expiresAt) return { a: c.value, expiresAt: c.expiresAt };
    // over budget: what was found so far is used, and the rest is tried again after errorTtl
    if (budget.left <= 0) return { a: { result: 'busy', records: [] }, expiresAt: now + this.o.errorTtlSeconds * 1000 };
    budget.left--;
    const a = await this.client.query(name, type);
    const t = this.now();
    let ttl: number;
    if (a.result === 'ok') ttl = clamp(a.ttl ?? 0, this.o.minTtlSeconds, this.o.maxTtlSeconds);
    else if (a.result === 'nxdomain' || a.result === 'nodata') ttl = clamp(a.ttl ?? this.o.negativeTtlSeconds, this.o.minTtlSeconds, this.o.maxNegativeTtlSeconds);
    else ttl = this.o.errorTtlSeconds;
    const expiresAt = t + ttl * 1000;
    if (a.result !== 'busy') this.rrsets.set(key, { value: a, expiresAt, failed: ttl === this.o.errorTtlSeconds && a.result !== 'ok' });
    return { a, expiresAt };
  }

  /** RFC 3263 4.1 + 4.2 for one destination. */
  private async run(dest: SipDestination): Promise<{ res: Resolution; bands?: readonly Band[] }> {
    const lit = literalResolution(dest, this.o.transports);
    if (lit !== undefined) return { res: lit };
    const host = normalizeName(dest.host);
    const budget: Budget = { left: this.o.maxQueriesPerResolution };
    const life = { expiresAt: Number.POSITIVE_INFINITY };
    const seen = (x: { expiresAt: number }): void => { life.expiresAt = Math.min(life.expiresAt, x.expiresAt); };
    const usable = this.o.transports.filter((t) => !dest.secure || t === 'tls');
    const fallbackTransport = dest.transport ?? (dest.secure ? 'tls' : (usable.includes('udp') ? 'udp' : usable[0]));
    const done = (raw: Band[], failure: DnsResult): { res: Resolution; bands?: readonly Band[] } => {
      const bands = capBands(raw);
      const targets: SipTarget[] = [];
      for (const b of bands) for (const c of b) for (const t of c.value) targets.push(t);
      const expiresAt = Number.isFinite(life.expiresAt) ? life.expiresAt : this.now() + this.o.errorTtlSeconds * 1000;
      const res: Resolution = { result: targets.length > 0 ? 'ok' : failure, targets, expiresAt };
      const weighted = bands.some((b) => b.length > 1 && b.some((c) => c.weight > 0));
      return weighted ? { res, bands } : { res };
    };
    if (fallbackTransport === undefined || (dest.transport !== undefined && !this.o.transports.includes(dest.transport))) {
      return done([], 'error');
    }

    // RFC 3263 4.2: an explicit port means A/AAAA only, with the transport of 4.1 (given, else
    // UDP for sip and TLS for sips)
    if (dest.port !== undefined) {
      const r = await this.addresses(host, fallbackTransport, dest.port, 0, budget, seen);
      return done(r.targets.length > 0 ? [[{ weight: 0, value: r.targets }]] : [], r.result);
    }
    // RFC 3263 4.1: an explicit transport means no NAPTR; SRV for that transport, then A/AAAA
    if (dest.transport !== undefined) {
      const s = await this.srv(srvName(dest.transport, host), dest.transport, budget, seen);
      if (s.found) return done(s.bands, s.result);
      if (s.result !== 'nxdomain' && s.result !== 'nodata') return done([], s.result);
      const r = await this.addresses(host, dest.transport, defaultPort(dest.transport), 0, budget, seen);
      return done(r.targets.length > 0 ? [[{ weight: 0, value: r.targets }]] : [], r.result);
    }
    // RFC 3263 4.1: NAPTR first
    const n = await this.ask(host, 'NAPTR', budget);
    seen(n);
    if (n.a.result !== 'ok' && n.a.result !== 'nxdomain' && n.a.result !== 'nodata') return done([], n.a.result);
    const naptrs = naptrOrder(n.a.records.filter((r): r is Extract<DnsRecord, { type: 'NAPTR' }> => r.type === 'NAPTR'))
      .filter((r) => {
        const svc = NAPTR_SERVICES[r.services];
        // RFC 3263 4.1: only "S" records lead to SRV here; a SIPS URI keeps only SIPS services
        // (a SIP URI keeps them too, when TLS is supported); unsupported transports are dropped
        return r.flags === 's' && svc !== undefined && this.o.transports.includes(svc.transport) && (!dest.secure || svc.secure) && r.replacement !== '' && r.replacement !== '.';
      })
      .slice(0, MAX_NAPTR);
    let lastFailure: DnsResult = n.a.result === 'ok' ? 'nodata' : n.a.result;
    if (naptrs.length > 0) {
      const bands: Band[] = [];
      for (const r of naptrs) {
        const s = await this.srv(r.replacement, NAPTR_SERVICES[r.services]!.transport, budget, seen);
        bands.push(...s.bands);
        if (!s.found) lastFailure = s.result;
      }
      // RFC 3263 4.1: NAPTR records were found; no fallback to SRV or A from here
      return done(bands, lastFailure);
    }
    // RFC 3263 4.1: no (usable) NAPTR: SRV for each supported transport, in our preference order
    const bands: Band[] = [];
    let anySrv = false;
    for (const t of usable) {
      const s = await this.srv(srvName(t, host), t, budget, seen);
      if (s.found) { anySrv = true; bands.push(...s.bands); }
      else if (s.result !== 'nxdomain' && s.result !== 'nodata') lastFailure = s.result;
    }
    if (anySrv) return done(bands, 'nodata');
    if (lastFailure !== 'nxdomain' && lastFailure !== 'nodata') return done([], lastFailure);
    // RFC 3263 4.2: no SRV either: A/AAAA of the host, default port, UDP for sip / TLS for sips
    const r = await this.addresses(host, fallbackTransport, defaultPort(fallbackTransport), 0, budget, seen);
    return done(r.targets.length > 0 ? [[{ weight: 0, value: r.targets }]] : [], r.result);
  }

  /** SRV -> bands of address lists. found: the RRset exists (even if only with target "."). */
  private async srv(name: string, transport: SipDnsTransport, budget: Budget, seen: (x: { expiresAt: number }) => void): Promise<{ found: boolean; result: DnsResult; bands: Band[] }> {
    const s = await this.ask(name, 'SRV', budget);
    seen(s);
    if (s.a.result !== 'ok') return { found: false, result: s.a.result, bands: [] };
    const recs = s.a.records.filter((r): r is Extract<DnsRecord, { type: 'SRV' }> => r.type === 'SRV');
    // RFC 2782: a single record with target "." = the service is decidedly not available here
    const live = recs.filter((r) => r.target !== '.' && r.target !== '' && r.port > 0);
    if (live.length === 0) return { found: true, result: 'nodata', bands: [] };
    const groups = byPriority(live.slice(0, 64)).flat().slice(0, MAX_SRV);
    const bands: Band[] = [];
    let failure: DnsResult = 'nodata';
    for (const g of byPriority(groups)) {
      // the addresses of each record of this priority, asked in parallel
      const lists = await Promise.all(g.map((r) => this.addresses(r.target, transport, r.port, r.priority, budget, seen)));
      const band: Weighted<readonly SipTarget[]>[] = [];
      g.forEach((r, i) => {
        const l = lists[i]!;
        if (l.targets.length > 0) band.push({ weight: r.weight, value: l.targets });
        else failure = l.result;
      });
      if (band.length > 0) bands.push(band);
    }
    return { found: true, result: bands.length > 0 ? 'ok' : failure, bands };
  }

  /** A (and AAAA) of one host -> targets with the given transport and port. */
  private async addresses(host: string, transport: SipDnsTransport, port: number, priority: number, budget: Budget, seen: (x: { expiresAt: number }) => void): Promise<{ result: DnsResult; targets: SipTarget[] }> {
    const name = normalizeName(host);
    const [a4, a6] = await Promise.all([
      this.ask(name, 'A', budget),
      this.o.ipv6 ? this.ask(name, 'AAAA', budget) : Promise.resolve(undefined),
    ]);
    seen(a4);
    if (a6 !== undefined) seen(a6);
    const mk = (x: { a: DnsAnswer } | undefined, family: 4 | 6): SipTarget[] =>
      (x?.a.records ?? []).slice(0, MAX_ADDRESSES).flatMap((r) => (r.type === 'A' || r.type === 'AAAA' ? [{ transport, address: r.address, port, family, name, priority }] : []));
    const v4 = mk(a4, 4);
    const v6 = mk(a6, 6);
    const targets = this.o.preferIpv6 ? [...v6, ...v4] : [...v4, ...v6];
    if (targets.length > 0) return { result: 'ok', targets };
    // the more telling failure of the two questions: a transient one over a negative one
    const results = [a4.a.result, a6?.a.result].filter((x): x is DnsResult => x !== undefined);
    const transient = results.find((x) => x !== 'ok' && x !== 'nxdomain' && x !== 'nodata');
    return { result: transient ?? (results.includes('nodata') || results.includes('ok') ? 'nodata' : 'nxdomain'), targets: [] };
  }
}

/** RFC 3263 4.2: a numeric host needs no DNS (the port given, else the transport's default;
 *  the transport given, else UDP for sip / TLS for sips, RFC 3263 4.1). */
function literalResolution(dest: SipDestination, transports: readonly SipDnsTransport[]): Resolution | undefined {
  const fam = isIP(dest.host);
  if (fam === 0) return undefined;
  const transport = dest.transport ?? (dest.secure ? 'tls' : 'udp');
  if (!transports.includes(transport)) return { result: 'error', targets: [], expiresAt: Number.POSITIVE_INFINITY };
  return {
    result: 'ok',
    targets: [{ transport, address: dest.host.toLowerCase(), port: dest.port ?? defaultPort(transport), family: fam, name: dest.host, priority: 0 }],
    expiresAt: Number.POSITIVE_INFINITY,
  };
}

/** The cache key of a destination. */
export function destKey(d: SipDestination): string {
  return `${d.secure === true ? 's' : ''}${d.transport ?? ''}|${d.port ?? ''}|${d.host}`;
}

function clamp(v: number, lo: number, hi: number): number { return Math.min(hi, Math.max(lo, v)); }

/** Each transport/address/port once (two SRV records may name one host: the first in band
 *  order keeps it), and at most MAX_TARGETS in all; done once per resolution, so that a
 *  per-lookup weighted draw needs no de-duplication. */
function capBands(bands: readonly Band[]): Band[] {
  const seen = new Set<string>();
  let n = 0;
  const out: Band[] = [];
  for (const b of bands) {
    const band: Weighted<readonly SipTarget[]>[] = [];
    for (const c of b) {
      const keep: SipTarget[] = [];
      for (const t of c.value) {
        const k = `${t.transport}|${t.address}|${t.port}`;
        if (seen.has(k) || n >= MAX_TARGETS) continue;
        seen.add(k);
        keep.push(t);
        n++;
      }
      if (keep.length > 0) band.push({ weight: c.weight, value: keep });
    }
    if (band.length > 0) out.push(band);
  }
  return out;
}

/** The set of targets, order-insensitive (a reordering by weight is not a change). */
function signature(r: Resolution): string {
  return r.targets.map((t) => `${t.transport}|${t.address}|${t.port}|${t.priority}`).sort().join(',');
}
