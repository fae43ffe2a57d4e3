// The composition root: builds the parts and wires them (rules, users, store, stages, observer,
// message path, listeners, proxy), then readiness and the admin listener. No message passes
// through here: the message path is edge/path/server.ts, verdicts become bytes in
// edge/path/respond.ts, consequences for sources are applied in edge/path/observer.ts.
import { randomBytes } from 'node:crypto';
import { networkInterfaces } from 'node:os';
import type { Logger } from 'pino';
import { startAdmin, type AdminServer, type ReadinessReport } from './admin';
import { type Clock, systemClock } from './clock';
import type { ResolvedConfig } from './config/types';
import { Metrics, type EdgeMetrics } from './metrics';
import { canonicalAddress } from './net/address';
import { cidrErrorText, cidrKey, parseCidr } from './net/cidr';
import { sourceClassifier } from './classify';
import { Pipeline, type StageEntry } from './pipeline';
import { Proxy, PROXY_REASONS } from './router/proxy';
import { createOutbound } from './router/resolve-route';
import type { Endpoint, SipRequest } from './sip/types';
import { SANITY_REASONS } from './stages/sanity';
import { PARSE_STAGE_REASONS } from './stages/parse-verdict';
import { ACCESS_REASONS } from './policy/access/stage';
import { SCANNER_REASONS } from './policy/scanner/stage';
import { GEO_REASONS } from './policy/geo/stage';
import { createPolicy } from './policy';
import { defaultRulesDir } from './policy/load';
import type { KnownStage } from './policy/schema';
import { RulesHolder, RulesLoadError } from './policy/reload';
import { RATELIMIT_REASONS } from './policy/limits/ratelimit';
import { AUTH_REASONS, createAuthStage } from './auth/stage';
import { PING_REASONS, createPingStage, isPing, type PingTarget } from './stages/ping';
import { USERLIMIT_REASONS, createUserLimitStage } from './policy/limits/userlimit';
import { UsersHolder, type UsersDb } from './auth/users';
import { CAC_REASONS } from './policy/cac/stage';
import { buildCac } from './policy/cac/wire';
import type { Ha1Lookup } from './auth/verify';
import { auditOffers } from './auth/offer';
import { addressRealm, defaultAuthConfig, edgeUsersFiles } from './config/load';
import { SUSPICION_BAN_REASONS, Suspicion } from './suspicion';
import { LocalBanCache, createMemoryStore, createRedisStore } from './store';
import type { SharedStore } from './store/types';
import { createListener } from './transport';
import type { Inbound, Listener, SourceClass } from './transport/types';
import type { StageMode, Trust } from './verdict';
import { securityEvent } from './log';
import { OverloadGuard, type PressureSource } from './overload';
import { Observer } from './path/observer';
import { MessagePath } from './path/server';
/** datagrams the UDP transport takes from its I/O thread per turn when they only get classified
 *  and queued (a microsecond or two each): enough to keep the hand-over ring from filling while
 *  the handling budget (overload.turnBudgetMs) is spent on the best of them */
const PRIORITY_DRAIN_BUDGET = 2048;
import { IdleGc } from './idle-gc';
import { startTls, type TlsService } from './tls-service';
import { startWs } from './ws-service';

export interface EdgeHandle {
  close(graceMs: number): Promise<void>;
  readonly listeners: ReadonlyArray<{ transport: string; address: string; port: number }>;
  readonly admin?: { address: string; port: number };
  readonly proxy: Proxy;
  readonly metrics: EdgeMetrics;
  /** run one inbound message through the edge (also what the transports call) */
  readonly inject: (inb: Inbound) => void;
  readonly rules: RulesHolder;
  readonly store: SharedStore;
  readonly bans: LocalBanCache;
  readonly suspicion: Suspicion;
  /** re-read the rule files now (SIGHUP); the old rules stay in force when a file is invalid */
  reloadRules(): { ok: boolean; version?: string; errors?: readonly string[] };
}

export interface EdgeOptions {
  clock?: Clock;
  metrics?: EdgeMetrics;
  /** extra stages after the ones the rule files configure */
  stages?: StageEntry[];
  /** rules already loaded (tests, explain); default: cfg.rulesDir or the shipped rules/ */
  rules?: RulesHolder;
  /** watch the rule files and reload on change (default true) */
  watchRules?: boolean;
  /** shared state (tests); default: Redis when cfg.redis, else in memory */
  store?: SharedStore;
  /** what overload control reads (tests); default: the UDP listeners' receive backlog */
  pressure?: PressureSource;
  /** runs the edge's own policy timers: overload sampling and the suspicion grace (default the
   *  system clock). Apart from `clock` (the RFC 3261 timers) so a test can drive transactions by
   *  hand and leave these running, or the other way round */
  policyClock?: Clock;
  /** false: never force a collection after a busy period (edge/idle-gc.ts); default on */
  idleGc?: boolean;
  /** binds the configured listeners (default: real sockets; the JIT warm-up passes in-memory
   *  ones, edge/warmup.ts) */
  createListener?: typeof createListener;
}

const WILDCARDS = new Set(['0.0.0.0', '::']);

function localAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) out.push(canonicalAddress(a.address));
  }
  return out;
}

/** stages whose rules can say `action: ban` (scanner signatures, access lists, GeoIP policy) */
const BANNING_STAGES: ReadonlySet<string> = new Set(['scanner', 'access', 'geoip']);

export async function startEdge(cfg: ResolvedConfig, log: Logger, opts: EdgeOptions = {}): Promise<EdgeHandle> {
  const clock = opts.clock ?? systemClock;
  let rules: RulesHolder;
  if (opts.rules) rules = opts.rules;
  else {
    const r = RulesHolder.create(cfg.rulesDir ?? defaultRulesDir());
    if (!r.ok) throw new RulesLoadError(r.errors);
    rules = r.holder;
  }
  const current = () => rules.current();
  // shared state: Redis when configured (every instance sees the same counters and bans), else
  // in memory; with Redis down at start the edge still starts and heals in the background
  const store: SharedStore = opts.store ?? (cfg.redis ? await createRedisStore({ url: cfg.redis.url }) : createMemoryStore());
  const bans = await LocalBanCache.create(store);
  const policyClock = opts.policyClock ?? systemClock;
  const suspicion = new Suspicion({ store, rules: current, ...(opts.policyClock ? { clock: opts.policyClock } : {}) });
  const classifier = sourceClassifier(cfg, current);
  const { isInside, isInsideSource, trustOf } = classifier;
  /** the proxy needs the bound listeners; until it exists the message path holds what arrives */
  let proxy: Proxy | undefined;
  // users files (edge authentication): loaded now (a bad file refuses the start, like a bad rule
  // file), then reloaded when they change; a bad edit keeps the previous users
  let authCfg = cfg.auth ?? defaultAuthConfig(cfg.domains, addressRealm(cfg.listen, cfg.advertise));
  if (authCfg.secret === undefined && edgeUsersFiles(authCfg).length > 0) {
    // one instance needs no configured nonce secret; nonces then do not survive a restart (a
    // phone's old nonce gets stale=true and a fresh one, edge/auth/verify.ts), and instances of a
    // cluster would not accept each other's
    authCfg = { ...authCfg, secret: randomBytes(32).toString('hex') };
    log.warn({ event: 'random_secret', secret: 'auth' }, 'no nonce secret configured: a random one for this process; several instances (a cluster) need a shared one: SIPEDGE_AUTH_SECRET or auth.secret');
  }
  const users = new Map<string, UsersHolder>();
  /** at start and on every rules or users reload: challenges some users cannot answer (a user
   *  without the HA1 of an algorithm a client profile is offered fails like a wrong password) */
  const auditAuth = (): void => {
    for (const w of auditOffers(authCfg, current().authClients, (f) => users.get(f)?.current())) {
      log.warn({ event: 'auth_offer_warning', kind: w.kind, realm: w.realm, domain: w.domain, algorithm: w.algorithm, profiles: w.profiles, file: w.file, missing: w.missing, users: w.users, examples: w.examples }, w.message);
    }
  };
  for (const file of edgeUsersFiles(authCfg)) {
    const r = UsersHolder.open(file);
    if (!r.ok) { for (const h of users.values()) h.close(); throw new UsersLoadError(r.errors); }
    r.holder.on('reloaded', (db: UsersDb) => { securityEvent(log, 'users_reload', { result: 'ok', file, version: db.version, users: db.size }); auditAuth(); });
    r.holder.on('failed', (errors: readonly string[]) => securityEvent(log, 'users_reload', { result: 'error', file, errors: errors.slice(0, 20) }));
    if (opts.watchRules !== false) r.holder.watch();
    users.set(file, r.holder);
  }
  auditAuth();
  // one Map get either way; null = the user exists without an HA1 for that algorithm
  const lookups = new Map<string, Ha1Lookup>([...users].map(([file, h]) => [file, (u, realm, alg) => {
    const e = h.current().get(u, realm);
    return e === undefined ? undefined : e.ha1[alg] ?? null;
  }]));
  const authMode = (): StageMode => current().stages.find((s) => s.name === 'auth')?.mode ?? 'off';
  // OPTIONS pings to the edge itself: what counts as "the edge" is the proxy's knowledge (its
  // listening and advertised addresses, the served domains)
  const pingTarget: PingTarget = {
    serves: (host) => proxy?.servesHost(host) ?? cfg.domains.includes(host),
    isOwnRoute: (u) => proxy?.isOwnUri(u) ?? false,
  };
  const pingStage = createPingStage({ mode: cfg.pings, target: pingTarget });
  const userLimit = createUserLimitStage({
    rules: current, store, suspicion,
    active: () => (current().stages.find((s) => s.name === 'userlimit')?.mode ?? 'off') !== 'off',
  });
  const cac = buildCac(cfg, current, log, () => metrics);
  const authStage = createAuthStage({
    auth: authCfg,
    users: (file) => lookups.get(file),
    store,
    suspicion,
    serves: (host) => proxy?.servesHost(host) ?? cfg.domains.includes(host),
    hasDialogRoute: (req) => proxy?.hasDialogRoute(req) ?? false,
    isRetransmission: (req, source) => proxy?.isRetransmission(req, source) ?? false,
    ...(cfg.pings === 'forward' ? { unchallenged: (req: SipRequest) => isPing(req, pingTarget) } : {}),
    enforcing: () => authMode() === 'enforce',
    clients: () => current().authClients,
    onEvent: (e) => {
      if (e.kind === 'lockout') {
        metrics.auth('lockout', e.mode);
        // the user exists (lockouts count known users only): naming it is the operator's need
        securityEvent(log, 'auth_lockout', { src: e.source.address, reason: 'auth_failures', rule: 'auth.lockout', user: e.user, realm: e.realm, seconds: e.seconds });
        return;
      }
      if (e.kind === 'answer') { metrics.authAlgorithm(e.algorithm); return; }
      // pbx mode: the PBX accepted a request with credentials: its identity is established
      if (e.kind === 'success' && e.mode === 'pbx' && e.request !== undefined) userLimit.accepted(e.request);
      metrics.auth(e.kind, e.mode);
    },
    // what the stage learns after its verdict; applied only when it enforces
    report: (src, events) => observer.late(authMode(), src, events),
  });
  const policy = await createPolicy(current, { store, suspicion, auth: authStage, ping: pingStage, userlimit: userLimit, cac }, (e) => {
    if (e.ok) log.warn({ event: 'geoip_reloaded', path: e.path }, 'GeoIP database reloaded');
    else log.error({ event: 'geoip_reload_failed', path: e.path, error: e.error }, 'GeoIP database change rejected: the previous database stays in use');
  });
  for (const e of policy.geoErrors) log.warn({ event: 'geoip_open_failed', error: e }, 'GeoIP database not opened: countries are unknown');
  const upstreamSpecs = cfg.upstreams.map((u) => `${u.transport}:${u.host.includes(':') ? `[${u.host}]` : u.host}:${u.port}`);
  // metric labels never carry addresses: upstreams are labelled by their position in the
  // configured failover order ("1", "2" ...); logs carry the address
  const upstreamLabels = cfg.upstreams.map((_, i) => String(i + 1));
  const snap0 = current();
  const metrics: EdgeMetrics = opts.metrics ?? new Metrics({
    stages: [
      // only the rule-driven stages can ban (a signature's or a list's `action: ban`); only the
      // pipeline's stages can be put in shadow mode
      ...Object.entries(POLICY_STAGE_REASONS).map(([name, reasons]) => ({
        // cac only ever replies (a refused call must hear why: 403, 486 or 503 + Retry-After)
        name, reasons, actions: BANNING_STAGES.has(name) ? ['reply', 'drop', 'ban'] as const : name === 'cac' ? ['reply'] as const : ['reply', 'drop'] as const,
      })),
      { name: 'gate', reasons: ['banned', 'starting'], actions: ['drop'] as const, shadow: false },
      { name: 'overload', reasons: ['overload'], actions: ['reply', 'drop'] as const, shadow: false },
      ...(opts.stages ?? []).map((e) => ({ name: e.stage.name, reasons: e.stage.reasons })),
      { name: 'parse', reasons: PARSE_STAGE_REASONS, actions: ['reply', 'drop'] as const, shadow: false },
      { name: 'proxy', reasons: PROXY_REASONS, actions: ['reply', 'drop'] as const, shadow: false },
    ],
    upstreams: upstreamLabels,
    upstreamTargets: upstreamSpecs,
    rules: snap0.ruleNames,
    banReasons: [...SUSPICION_BAN_REASONS, 'manual'],
    transports: [...new Set(cfg.listen.map((l) => l.transport))],
  });
  metrics.rulesLoaded(snap0.version, snap0.ruleNames);
  store.onBanEvent((e) => {
    if (e.kind === 'added') {
      metrics.banAdded(e.ban.reason);
      securityEvent(log, 'ban', { src: e.ban.key, reason: e.ban.reason, rule: e.ban.rule, seconds: Math.round((e.ban.until - e.ban.since) / 1000), count: e.ban.count });
    } else {
      securityEvent(log, 'unban', { src: e.key });
    }
  });
  if (cfg.redis) {
    metrics.redisUp(store.healthy());
    store.onHealth((up) => {
      metrics.redisUp(up);
      log.warn({ event: up ? 'redis_up' : 'redis_down' }, up ? 'Redis reachable again' : 'Redis unreachable: insurance limits in force');
    });
  }
  /** TLS listeners' certificates, handshakes and certificate-identified peers (edge/tls-service.ts) */
  let tls: TlsService | undefined;
  // a peer identified by its client certificate is trusted like one listed by address: never
  // banned automatically, skips what trusted sources skip (tls.peers)
  const sourceTrust = (ep: Endpoint): Trust =>
    (isInsideSource(ep) ? 'inside' : tls?.trustedConnection(ep) === true ? 'trusted' : trustOf(ep.address, 'outside'));
  const observer = new Observer({ metrics, store, suspicion, trustOf: sourceTrust });

  const ov = cfg.overload;
  // the listeners exist only further down; the guard reads them when it samples
  const listeners: Listener[] = [];
  const backlog: PressureSource = () => listeners.reduce((m, l) => Math.max(m, l.backlog?.() ?? 0), 0);
  const overload = new OverloadGuard(
    { enabled: ov.enabled, retryAfterSeconds: ov.retryAfterSeconds },
    opts.pressure ?? backlog,
    (st) => {
      if (st.blind) log.warn({ event: 'overload_blind' }, 'overload control off: the UDP receive queue cannot be read cheaply here (see README)');
      else log.warn({ event: st.shedding ? 'overload_on' : 'overload_off', backlog: Math.round(st.pressure * 1000) / 1000 },
        st.shedding ? 'receive backlog: refusing a share of new outside requests' : 'overload over: all new requests accepted again');
    },
  ).start(100, policyClock);
  const secret = cfg.secret ? Buffer.from(cfg.secret, 'utf8') : randomBytes(32);
  if (!cfg.secret) {
    log.warn({ event: 'random_secret', secret: 'flow' }, 'no flow-token secret configured: a random one for this process (phones re-register after a restart); several instances (a cluster) need a shared one: SIPEDGE_SECRET or secret');
  }

  const observe = (_name: string, v: Parameters<Observer['verdict']>[1], mode: 'enforce' | 'shadow', ctx: Parameters<Observer['verdict']>[3], stage: Parameters<Observer['verdict']>[0]): void =>
    observer.verdict(stage, v, mode, ctx);
  let pipeline = new Pipeline(policy.entries(snap0, opts.stages), observe);
  // a reload swaps the whole snapshot (the stages read it per message) and rebuilds the stage
  // order; live transactions are untouched: the proxy reads no rules
  rules.on('reloaded', (s: typeof snap0) => {
    pipeline = new Pipeline(policy.entries(s, opts.stages), observe);
    metrics.rulesReload(true);
    metrics.rulesLoaded(s.version, s.ruleNames);
    securityEvent(log, 'rules_reload', { result: 'ok', version: s.version });
    auditAuth();
    void policy.reopenGeo(s).then((errs) => { for (const e of errs) log.warn({ event: 'geoip_open_failed', error: e }, 'GeoIP database not opened'); });
  });
  rules.on('failed', (errors: readonly string[]) => {
    metrics.rulesReload(false);
    securityEvent(log, 'rules_reload', { result: 'error', version: rules.current().version, errors: errors.slice(0, 20) });
  });
  if (opts.watchRules !== false && !opts.rules) rules.watch();

  // the message path exists before any listener delivers; it holds what arrives until open()
  const path = new MessagePath({
    cfg, log, metrics, bans, classifier, suspicion, observer, overload, pipeline: () => pipeline,
    trustedConnection: (ep) => tls?.trustedConnection(ep) === true,
    ...(ov.prioritize ? { priority: { turnBudgetMs: ov.turnBudgetMs, maxQueuedBytes: ov.maxQueuedMB * 1048576 } } : {}),
  });
  // after a flood, give its garbage back once traffic is quiet again (edge/idle-gc.ts)
  const idleGc = new IdleGc({
    activity: () => path.received,
    clock: policyClock,
    onCollect: (e) => log.info({ event: 'idle_gc', heapBeforeMiB: Math.round(e.before / 1048576), heapAfterMiB: Math.round(e.after / 1048576), ms: e.ms }, 'heap collected after a busy period'),
  });
  if (opts.idleGc !== false) idleGc.start();

  /** the TCP listeners' view of a source (they read no SIP header): capacity is reserved for
   *  the PBX side, trusted peers and promoted sources (edge/transport/tcp.ts) */
  const connClass = (address: string): SourceClass => {
    if (isInside(address)) return 'inside';
    if (trustOf(address, 'outside') === 'trusted') return 'trusted';
    return suspicion.isPromoted(address) ? 'promoted' : 'unknown';
  };

  try {
    tls = startTls(cfg, log, metrics, (source, event, rule) => observer.evidence(source, event, rule ?? event), opts.watchRules !== false);
    // ws/wss listeners' upgrades (edge/ws-service.ts)
    const ws = startWs(cfg, metrics, (source, event, rule) => observer.evidence(source, event, rule), (address) => !isInside(address) && bans.check(address, Date.now()) !== null);
    for (const spec of cfg.listen) {
      listeners.push(await (opts.createListener ?? createListener)(spec, {
        onMessage: path.receive,
        onEvent: (event, l, source) => {
          metrics.transportEvent(l.spec.transport, event);
          if (event === 'conn_closed') tls?.onClosed(source);
        },
        onHandshake: (reason, _l, source) => tls?.onHandshake(reason, source),
        onPeerCertificate: (source, peer) => tls?.onPeerCertificate(source, peer) ?? false,
        onUpgrade: (reason, _l, source) => ws?.onUpgrade(reason, source),
        // a refused or unreachable connect toward an upstream is evidence about the PBX itself
        onConnectFailed: (dest, cause) => { if (cause === 'remote') proxy?.transportFailed(dest); },
        onAdmission: (cls, result) => metrics.tcpAdmission(cls, result),
        onOversize: path.oversize,
      }, {
        ...cfg.tcp, ...cfg.udp, ...(path.queues !== undefined ? { drainBudget: PRIORITY_DRAIN_BUDGET } : {}), maxMessageBytes: cfg.limits.maxMessageBytes, classify: connClass,
        // the gate at accept: a banned source gets no connection slot and no TLS handshake
        refuse: (address) => !isInside(address) && bans.check(address, Date.now()) !== null,
        ...(tls !== undefined ? { tls: tls.security, probation: tls.probation } : {}),
        ...(ws !== undefined ? { ws: ws.upgrade } : {}),
      }));
    }
  } catch (err) {
    tls?.close();
    await Promise.all(listeners.map((l) => l.close(0)));
    throw err;
  }

  const wildcard = listeners.some((l) => WILDCARDS.has(l.local.address));
  // trunks, egress control and RFC 3263 routing of requests from inside (issue 15)
  const outbound = createOutbound(cfg, listeners.map((l) => l.spec.transport), metrics);
  proxy = new Proxy({
    cfg, clock, listeners, secret, isInside, isInsideEndpoint: isInsideSource,
    ...(outbound !== undefined ? { outbound } : {}),
    localAddresses: wildcard ? localAddresses() : [],
    events: {
      sent: (t, side, kind) => metrics.sent(t, side, kind),
      unmatched: (k, src) => { metrics.unmatched(k); observer.evidence(src, 'unmatched_reply', `unmatched_${k}`); },
      // the PBX accepted this phone's REGISTER: it holds valid credentials, give it the larger
      // budget (an office re-registering after an outage is not banned)
      registered: (src) => observer.registered(src),
      // pbx mode: watch the PBX's answers to outside requests (trusted peers are not watched)
      watchesSource: (client) => authMode() !== 'off' && trustOf(client.address, 'outside') === 'untrusted',
      finalToOutside: (req, client, res) => {
        if (authMode() === 'off' || trustOf(client.address, 'outside') !== 'untrusted') return undefined;
        const sub = authStage.finalToOutside(req, client, res);
        if (sub) metrics.verdict('auth', 'reply', sub.reason, 'enforce');
        return sub;
      },
      retransmission: (d) => metrics.retransmission(d),
      // topology hiding: SDP that shows an inside address to the outside (no media relay yet)
      sdpInside: (kind, field) => {
        metrics.sdpInside(kind, field);
        log.debug({ event: 'sdp_inside', kind, field }, 'SDP sent to the outside names an inside address');
      },
      txExpired: () => metrics.transactionExpired(),
      txRejected: (r) => metrics.transactionRejected(r),
      upstreamResponse: (i, cls) => metrics.upstreamResponse(upstreamLabels[i] ?? 'other', cls === 'timeout' ? 'timeout' : Number(cls[0]) * 100),
      upstreamHealth: (i, up, cause) => {
        metrics.upstreamUp(upstreamLabels[i] ?? 'other', up);
        log.warn({ event: up ? 'upstream_up' : 'upstream_down', upstream: upstreamSpecs[i], position: i + 1, ...(cause ? { cause } : {}) }, up ? 'upstream healthy' : 'upstream down');
      },
      upstreamFailure: (i, cause) => metrics.upstreamHealthFailure(upstreamLabels[i] ?? 'other', cause),
      proxyReply: (status, reason) => {
        if (status >= 300) metrics.verdict('proxy', 'reply', reason, 'enforce');
      },
    },
  });
  upstreamLabels.forEach((l) => metrics.upstreamUp(l, true));
  bans.onExpire = () => metrics.banExpired();
  metrics.bindGauges({
    dialogsLive: () => cac.tracker.census(),
    transactionsActive: () => proxy!.activeTransactions,
    tcpConnections: () => listeners.reduce((n, l) => n + (l.connections?.() ?? 0), 0),
    connectionsOf: (t) => listeners.reduce((n, l) => n + (l.spec.transport === t ? l.connections?.() ?? 0 : 0), 0),
    // the cache drops an expired ban only when a packet meets it: sweep first, so a ban whose
    // time ran out is neither counted as active nor left out of sipedge_bans_expired_total
    bansActive: () => { bans.sweep(true); return bans.size; },
    ...(cfg.redis ? { redisErrors: () => store.errors } : {}),
  });
  proxy.startProbes();
  // the path is complete: what arrived while the listeners were binding runs now
  path.open(proxy);

  let admin: AdminServer | undefined;
  /** set by the first SIGTERM: /readyz answers 503 from then on, so a load balancer stops
   *  sending new calls while the live ones drain */
  let draining = false;
  if (cfg.metrics.listen) {
    const readiness = (): ReadinessReport => {
      const healthy = proxy!.upstreams.list.filter((u) => u.up).length;
      const redisOk = !cfg.redis || store.healthy();
      const checks = [
        { name: 'not_shutting_down', ok: !draining, detail: draining ? 'shutting down: live transactions are draining, new ones get 503' : 'running' },
        { name: 'listeners_bound', ok: listeners.length === cfg.listen.length, detail: `${listeners.length} of ${cfg.listen.length} listeners bound` },
        { name: 'rules_loaded', ok: true, detail: `rules version ${current().version}` },
        { name: 'upstream_healthy', ok: healthy > 0, detail: `${healthy} of ${cfg.upstreams.length} upstreams healthy` },
        ...(cfg.redis ? [{ name: 'redis_reachable', ok: redisOk, detail: redisOk ? 'Redis reachable' : 'Redis unreachable: insurance limits in force' }] : []),
      ];
      return { ready: checks.every((c) => c.ok), checks };
    };
    // sipedge_ready is what /readyz answers (SipEdgeNotReady alerts on it)
    metrics.bindGauges({ ready: () => readiness().ready });
    admin = await startAdmin({
      listen: cfg.metrics.listen, token: cfg.metrics.token, metrics, readiness,
      bans: {
        list: () => store.listBans(),
        // the key as `sip-edge bans` spells it (edge/net/cidr.ts cidrKey), whoever calls: the
        // listener is plain HTTP, so a curl with "2001:DB8::/32" must meet the ban added as
        // "2001:db8::/32", and a CIDR with host bits gets the words the CLI and the config use
        async add(key, seconds, reason) {
          const p = parseCidr(key);
          if (typeof p === 'string') return `"${key}": ${cidrErrorText(key, p)}`;
          try { return await store.ban({ key: cidrKey(p), reason, rule: 'manual', seconds }); } catch (e) { return (e as Error).message; }
        },
        remove: (key) => {
          const p = parseCidr(key);
          return typeof p === 'string' ? Promise.resolve(false) : store.unban(cidrKey(p)).catch(() => false);
        },
      },
    });
  }

  let closed = false;
  return {
    listeners: listeners.map((l) => ({ transport: l.spec.transport, address: l.local.address, port: l.local.port })),
    admin: admin?.address,
    proxy,
    metrics,
    inject: path.receive,
    rules,
    store,
    bans,
    suspicion,
    reloadRules() {
      // SIGHUP re-reads the users files too (their own 'reloaded'/'failed' events log the result)
      for (const h of users.values()) h.reload();
      // and the TLS certificate files (the holder logs and counts the outcome)
      tls?.reload();
      const r = rules.reload();
      return r.ok ? { ok: true, version: r.version } : { ok: false, errors: r.errors };
    },
    async close(graceMs: number) {
      if (closed) return;
      closed = true;
      draining = true;
      overload.stop();
      idleGc.stop();
      // stop taking new transactions, let live ones finish, answer (and CANCEL upstream) what is
      // still pending when the grace ends, then close the sockets; the stages and the store stay
      // up until then (the drain still runs requests in dialogs through them)
      const t0 = Date.now();
      const r = await proxy!.drain(graceMs);
      log.info({ event: 'drained', ms: Date.now() - t0, ...r }, r.answered > 0 ? 'grace period over: pending requests answered 503' : 'drained');
      await Promise.all(listeners.map((l) => l.close(SOCKET_FLUSH_MS)));
      outbound?.close();
      path.queues?.close();
      if (!opts.rules) rules.close();
      for (const h of users.values()) h.close();
      tls?.close();
      policy.close();
      await cac.close();
      if (!opts.store) await store.close();
      await admin?.close();
    },
  };
}

/** every stage the rules can name and its reason codes, declared up front for the metrics: a
 *  Record over the closed set, so a stage added to or renamed in the schema does not compile
 *  until it is declared here */
const POLICY_STAGE_REASONS: Readonly<Record<KnownStage, readonly string[]>> = {
  sanity: SANITY_REASONS, access: ACCESS_REASONS, scanner: SCANNER_REASONS, geoip: GEO_REASONS,
  ratelimit: RATELIMIT_REASONS, ping: PING_REASONS, auth: AUTH_REASONS, userlimit: USERLIMIT_REASONS,
  cac: CAC_REASONS,
};

/** how long closing a TCP listener may wait for the last replies (the 503s of a shutdown) to be
 *  written out before the connections are cut */
const SOCKET_FLUSH_MS = 1000;

/** A users file could not be loaded at start: the errors, file:line:col each. */
export class UsersLoadError extends Error {
  constructor(readonly errors: readonly string[]) {
    super(`users file not loaded:\n${errors.join('\n')}`);
    this.name = 'UsersLoadError';
  }
}
