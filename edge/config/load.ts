// Builds the ResolvedConfig the edge runs on: YAML file (schema-checked in yaml.ts) + CLI
// overrides + environment, then semantic checks that the schema cannot express (spec syntax,
// addresses, CIDRs, cross-field ranges), each reported at the offending node's file:line:column.
// Synchronous and side-effect free: no DNS, no sockets, so `sip-edge check` is exact and fast.
// Addresses and CIDRs go through edge/net (the parsers the edge matches with), so what `check`
// accepts is exactly what the running edge understands, spelled the same way.
import * as path from 'node:path';
import { ipLiteral, isHostName, isIP } from '../net/address';
import { cidrErrorText, formatCidr, parseCidr } from '../net/cidr';
import type { TransportName } from '../sip/types';
import type { ListenerSpec } from '../transport/types';
import type { AuthConfig, AuthDomainPolicy, DnsConfig, ResolvedConfig, UpstreamSpec } from './types';
import { DEFAULT_TLS_CIPHERS, type TlsSettings } from '../transport/tls-context';
import { ConfigFileSchema, LOG_LEVELS } from './schema';
import type { ConfigFile, LogLevel } from './schema';
import { loadYamlFile, loadYamlText } from './yaml';
import { parseRedisUrl } from '../store/redis-url';
import { transactionBudget } from '../transaction/table';
import { resolveTrunks } from './trunks';
import type { ValuePath } from './yaml';

/** Flags that replace (not extend) the corresponding file setting when given. */
export interface CliOverrides {
  listen?: string[];
  upstreams?: string[];
  domains?: string[];
  inside?: string[];
  trusted?: string[];
  /** "host[:port]"; null clears the file's advertise */
  advertise?: string | null;
  /** "host:port"; null disables metrics */
  metrics?: string | null;
  logLevel?: string;
  /** rules directory (relative to the working directory) */
  rules?: string;
  /** Redis URL; null = in memory */
  redis?: string | null;
  /** users file for edge authentication (relative to the working directory) */
  users?: string;
  /** where a setting came from when not a flag (e.g. "env SIPEDGE_LISTEN"): named in errors */
  origin?: { readonly [K in Exclude<keyof CliOverrides, 'origin'>]?: string };
}

export interface LoadOptions {
  /** config file; when absent only schema defaults + overrides + env are used */
  file?: string;
  overrides?: CliOverrides;
  env?: NodeJS.ProcessEnv;
}

export type LoadResult =
  | { ok: true; config: ResolvedConfig }
  | {
      ok: false;
      errors: string[];
      /** what `sip-edge check` needs to go on checking the other files: where the rules and the
       *  users files are, as far as the file says (absent when it cannot be read that far) */
      partial?: { readonly rulesDir?: string; readonly auth: AuthConfig };
    };

/** Transports the edge can serve today; the others parse but are refused with a clear error. */
const SUPPORTED_TRANSPORTS: readonly TransportName[] = ['udp', 'tcp', 'tls', 'ws', 'wss'];
const SUPPORTED_UPSTREAM_TRANSPORTS: readonly TransportName[] = ['udp', 'tcp', 'tls'];
const KNOWN_TRANSPORTS: readonly TransportName[] = ['udp', 'tcp', 'tls', 'ws', 'wss'];
/** RFC 3261 19.1.2: default port for sip: over UDP/TCP. */
const SIP_DEFAULT_PORT = 5060;
/** RFC 3261 19.1.2 / 26.2: default port for sips: and SIP over TLS. */
const SIPS_DEFAULT_PORT = 5061;

export function loadConfig(opts: LoadOptions = {}): LoadResult {
  const env = opts.env ?? process.env;
  const ov = opts.overrides ?? {};
  const fileName = opts.file !== undefined ? path.resolve(opts.file) : undefined;
  const loaded = fileName !== undefined
    ? loadYamlFile(fileName, ConfigFileSchema)
    : loadYamlText('', 'defaults', ConfigFileSchema);
  // a schema error does not end the check: the rest of the file (what the schema accepted) still
  // goes through the semantic checks below, so one run reports every error
  if (!loaded.ok && loaded.repaired === undefined) return { ok: false, errors: loaded.errors };
  const doc = loaded.ok ? loaded : loaded.repaired!;
  const f: ConfigFile = doc.value;
  // Without a file there is no node to point at: name the setting instead.
  const at = (p: ValuePath): string => (fileName !== undefined ? doc.at(p) : 'config');

  const errors: string[] = loaded.ok ? [] : [...loaded.errors];
  // where the schema already complained, a semantic error is only its echo (a list the schema
  // refused is empty in the repaired value: "at least one upstream is required" would follow)
  const schemaAt = new Set(errors.map((e) => /^(.*:\d+:\d+): /.exec(e)?.[1]));
  const err = (where: string, msg: string): void => {
    if (schemaAt.has(where)) return;
    errors.push(`${where}: ${msg}`);
  };

  /** the flag or environment variable an override came from, for error locations */
  const by = (key: Exclude<keyof CliOverrides, 'origin'>, flag: string): string => ov.origin?.[key] ?? flag;

  /** Items of a list setting with where each came from: a file node or a flag. */
  const items = (key: 'listen' | 'upstreams' | 'domains' | 'inside' | 'trusted', flag: string, override?: string[]) =>
    override !== undefined
      ? { fromFlag: true, where: flag, list: override.map((text) => ({ text, where: `${flag} ${JSON.stringify(text)}` })) }
      : { fromFlag: false, where: at([key]), list: f[key].map((text, i) => ({ text, where: at([key, i]) })) };

  // --- listen -------------------------------------------------------------------------------
  const listen: ListenerSpec[] = [];
  const listenSrc = items('listen', by('listen', '--listen'), ov.listen);
  const seenListen = new Set<string>();
  const needsCertificate: string[] = [];
  for (const it of listenSrc.list) {
    const r = parseTransportSpec(it.text, 'listen');
    if (typeof r === 'string') {
      err(it.where, `listen ${JSON.stringify(it.text)}: ${r}`);
      continue;
    }
    if ((r.transport === 'tls' || r.transport === 'wss') && f.tls.certificates.length === 0) needsCertificate.push(`${it.where}: listen ${JSON.stringify(it.text)}: a ${r.transport} listener needs at least one certificate in tls.certificates ({cert, key})`);
    const key = `${r.transport}|${r.host}|${r.port}`;
    if (r.port !== 0 && seenListen.has(key)) err(it.where, `listen ${JSON.stringify(it.text)}: listed twice`);
    seenListen.add(key);
    listen.push(r);
  }
  if (listenSrc.list.length === 0) err(listenSrc.where, 'listen: at least one listener is required (the file\'s listen list or --listen)');

  // --- upstreams ----------------------------------------------------------------------------
  const upstreams: UpstreamSpec[] = [];
  const upSrc = items('upstreams', by('upstreams', '--upstream'), ov.upstreams);
  for (const it of upSrc.list) {
    const r = parseTransportSpec(it.text, 'upstream');
    if (typeof r === 'string') {
      err(it.where, `upstream ${JSON.stringify(it.text)}: ${r}`);
      continue;
    }
    // Forwarding to our own socket would loop every request until Max-Forwards runs out.
    if (seenListen.has(`${r.transport}|${r.host}|${r.port}`)) {
      err(it.where, `upstream ${JSON.stringify(it.text)}: is one of the edge's own listeners (forwarding loop)`);
      continue;
    }
    // the edge connects toward an upstream from a listener of its transport and address family
    // (edge/router/proxy.ts listenerFor): a tls upstream needs a tls listener to connect from
    if (r.transport === 'tls' && !listen.some((l) => l.transport === 'tls' && isIP(l.host) === isIP(r.host))) {
      err(it.where, `upstream ${JSON.stringify(it.text)}: needs a tls listener of the same address family in listen (the edge connects from it)`);
      continue;
    }
    upstreams.push(r);
  }
  if (upSrc.list.length === 0) err(upSrc.where, 'upstreams: at least one upstream is required (the file\'s upstreams list or --upstream)');

  // --- advertise ----------------------------------------------------------------------------
  let advertise: ResolvedConfig['advertise'];
  const advText = ov.advertise !== undefined ? ov.advertise : f.advertise;
  const advWhere = ov.advertise !== undefined ? `${by('advertise', '--advertise')} ${JSON.stringify(ov.advertise)}` : at(['advertise']);
  if (advText !== null) {
    const hp = parseHostPort(advText);
    if (typeof hp === 'string') err(advWhere, `advertise ${JSON.stringify(advText)}: ${hp}`);
    else {
      const host = ipLiteral(hp.host) ?? (isHostName(hp.host) ? hp.host.toLowerCase() : undefined);
      if (host === undefined) err(advWhere, `advertise ${JSON.stringify(advText)}: not an IP address or host name`);
      else if (hp.port === 0) err(advWhere, `advertise ${JSON.stringify(advText)}: port must be 1..65535`);
      else if (isUnspecified(host)) err(advWhere, `advertise ${JSON.stringify(advText)}: a wildcard address cannot be advertised`);
      else advertise = hp.port === undefined ? { host } : { host, port: hp.port };
    }
  }

  // --- domains ------------------------------------------------------------------------------
  const domains: string[] = [];
  for (const it of items('domains', by('domains', '--domain'), ov.domains).list) {
    const d = it.text.trim().toLowerCase().replace(/\.$/, '');
    const ip = ipLiteral(d);
    if (ip !== null) domains.push(ip);
    else if (isHostName(d)) domains.push(d);
    else err(it.where, `domain ${JSON.stringify(it.text)}: not a valid domain name (RFC 1035 2.3.1 / RFC 1123 2.1)`);
  }

  // --- inside / trusted ---------------------------------------------------------------------
  const cidrs = (key: 'inside' | 'trusted', flag: string, override?: string[]): string[] => {
    const out: string[] = [];
    for (const it of items(key, flag, override).list) {
      const p = parseCidr(it.text);
      if (typeof p === 'string') err(it.where, `${key} ${JSON.stringify(it.text)}: ${cidrErrorText(it.text, p)}`);
      else out.push(formatCidr(p));
    }
    return out;
  };
  const inside = cidrs('inside', by('inside', '--inside'), ov.inside);
  const trusted = cidrs('trusted', by('trusted', '--trusted'), ov.trusted);
  // trunks (issue 15): a trunk whose inbound skips auth is trusted by address
  const trunkCfg = resolveTrunks(f, { err, at });
  for (const c of trunkCfg.trusted) if (!trusted.includes(c)) trusted.push(c);

  // --- secret -------------------------------------------------------------------------------
  // Env wins over the file so that a deployment can keep the secret out of the config repo.
  let secret: string | undefined = f.secret;
  const envSecret = env.SIPEDGE_SECRET;
  if (envSecret !== undefined && envSecret !== '') {
    if (envSecret.length < 16) err('env SIPEDGE_SECRET', 'must be at least 16 characters');
    else secret = envSecret;
  }

  // --- log level ----------------------------------------------------------------------------
  let level: LogLevel = f.log.level;
  if (ov.logLevel !== undefined) {
    const l = (LOG_LEVELS as readonly string[]).find((x) => x === ov.logLevel);
    if (l === undefined) err(`${by('logLevel', '--log-level')} ${JSON.stringify(ov.logLevel)}`, `expected one of ${LOG_LEVELS.join(', ')}`);
    else level = l as LogLevel;
  }

  // --- metrics ------------------------------------------------------------------------------
  // SIPEDGE_METRICS_TOKEN overrides metrics.token: a container gets its secrets from the
  // environment, not from a file baked into the image
  let metricsToken = f.metrics.token;
  const envToken = env.SIPEDGE_METRICS_TOKEN;
  if (envToken !== undefined && envToken !== '') {
    if (envToken.length < 16 || envToken.length > 4096) err('env SIPEDGE_METRICS_TOKEN', 'must be 16 to 4096 characters');
    else metricsToken = envToken;
  }
  let metricsListen: string | null = null;
  const mText = ov.metrics !== undefined ? ov.metrics : f.metrics.listen;
  const mWhere = ov.metrics !== undefined ? `${by('metrics', '--metrics')} ${JSON.stringify(ov.metrics)}` : at(['metrics', 'listen']);
  if (mText !== null) {
    const hp = parseHostPort(mText);
    const host = typeof hp === 'string' ? undefined : hp.host === 'localhost' ? '127.0.0.1' : ipLiteral(hp.host) ?? undefined;
    if (typeof hp === 'string') err(mWhere, `metrics.listen ${JSON.stringify(mText)}: ${hp}`);
    else if (host === undefined) err(mWhere, `metrics.listen ${JSON.stringify(mText)}: host must be an IP address or localhost`);
    else if (hp.port === undefined) err(mWhere, `metrics.listen ${JSON.stringify(mText)}: a port is required ("host:port")`);
    else {
      metricsListen = host.includes(':') ? `[${host}]:${hp.port}` : `${host}:${hp.port}`;
      // Metrics reveal traffic patterns and upstream health: never expose them unauthenticated.
      if (!isLoopback(host) && metricsToken === undefined) {
        err(mWhere, `metrics.listen ${JSON.stringify(mText)}: a non-loopback metrics address requires metrics.token (or SIPEDGE_METRICS_TOKEN)`);
      }
    }
  }

  // --- cross-field sanity -------------------------------------------------------------------
  const L = f.limits;
  if (L.maxHeaderLineBytes > L.maxMessageBytes) err(at(['limits', 'maxHeaderLineBytes']), 'limits.maxHeaderLineBytes: must not exceed limits.maxMessageBytes');
  if (L.maxRequestUriBytes > L.maxMessageBytes) err(at(['limits', 'maxRequestUriBytes']), 'limits.maxRequestUriBytes: must not exceed limits.maxMessageBytes');
  // RFC 3261 17.1.2.2: retransmit intervals double from T1 up to T2, so T2 < T1 is meaningless.
  if (f.transactions.t2Ms < f.transactions.t1Ms) err(at(['transactions', 't2Ms']), 'transactions.t2Ms: must be at least transactions.t1Ms');
  // the live-transaction cap fits the memory budget at worst case (issue 12): an explicit max the
  // budget cannot hold is refused, not silently lowered, so the operator sees the trade-off
  const txBudget = transactionBudget(f.transactions.memoryBudgetMB, L.maxMessageBytes);
  const txMax = f.transactions.max ?? txBudget.maxLive;
  if (txBudget.maxLive < 100) {
    err(at(['transactions', 'memoryBudgetMB']), `transactions.memoryBudgetMB: ${f.transactions.memoryBudgetMB} MiB holds only ${txBudget.maxLive} live transactions of up to ${L.maxMessageBytes} bytes (${txBudget.perLive} bytes each at worst); at least 100 are needed`);
  } else if (txMax > txBudget.maxLive) {
    err(at(['transactions', 'max']), `transactions.max: ${txMax} live transactions of up to ${L.maxMessageBytes} bytes (limits.maxMessageBytes) need up to ${Math.ceil((txMax * txBudget.perLive) / 0.75 / 1048576)} MiB; transactions.memoryBudgetMB ${f.transactions.memoryBudgetMB} holds ${txBudget.maxLive}: raise the budget, lower max or limits.maxMessageBytes, or leave max out`);
  }
  if (f.tcp.maxConnectionsPerSource > f.tcp.maxConnections) err(at(['tcp', 'maxConnectionsPerSource']), 'tcp.maxConnectionsPerSource: must not exceed tcp.maxConnections');
  if (f.tcp.promotedPercent < f.tcp.unknownPercent) err(at(['tcp', 'promotedPercent']), 'tcp.promotedPercent: must be at least tcp.unknownPercent (it counts unknown sources too)');
  if (f.health.intervalMs > 0 && f.health.intervalMs < 100) err(at(['health', 'intervalMs']), 'health.intervalMs: 0 (off) or at least 100');
  if (f.health.intervalMs > 0 && f.health.timeoutMs > f.health.intervalMs) err(at(['health', 'timeoutMs']), 'health.timeoutMs: must not exceed health.intervalMs');

  // --- dns ----------------------------------------------------------------------------------
  // servers are IP literals: the resolver cannot ask a name for the address of its own server
  const dnsServers: { address: string; port: number }[] = [];
  f.dns.servers.forEach((text, i) => {
    const hp = parseHostPort(text);
    const where = at(['dns', 'servers', i]);
    const ip = typeof hp === 'string' ? null : ipLiteral(hp.host);
    if (typeof hp === 'string') err(where, `dns.servers ${JSON.stringify(text)}: ${hp}`);
    else if (ip === null) err(where, `dns.servers ${JSON.stringify(text)}: not an IP address`);
    else if (hp.port === 0) err(where, `dns.servers ${JSON.stringify(text)}: port must be 1..65535`);
    else if (isUnspecified(ip)) err(where, `dns.servers ${JSON.stringify(text)}: a wildcard address is not a server`);
    else dnsServers.push({ address: ip, port: hp.port ?? 53 });
  });
  if (f.dns.cache.minTtlSeconds > f.dns.cache.maxTtlSeconds) err(at(['dns', 'cache', 'minTtlSeconds']), 'dns.cache.minTtlSeconds: must not exceed dns.cache.maxTtlSeconds');
  const dns: DnsConfig = { ...f.dns, servers: dnsServers, cache: { ...f.dns.cache } };

  // rules directory: the flag (relative to the working directory), or the file's key (relative to
  // the file), or none (the shipped rules/)
  const rulesDir = opts.overrides?.rules !== undefined
    ? path.resolve(opts.overrides.rules)
    : typeof f.rules === 'string' ? path.resolve(fileName !== undefined ? path.dirname(fileName) : process.cwd(), f.rules) : undefined;
  const redisUrl = ov.redis !== undefined ? ov.redis : f.redis;
  if (redisUrl) {
    // the store's own parser: what passes here is exactly what the store can connect to
    const u = parseRedisUrl(redisUrl);
    if ('error' in u) err(ov.redis !== undefined ? by('redis', '--redis') : at(['redis']), `redis: ${u.error}`);
  }
  for (const e of needsCertificate) errors.push(e);
  const tls = resolveTls(f, listen, { err, at, fileName });
  const websocket = resolveWebsocket(f, listen, { err, at });
  const auth = resolveAuth(f, {
    domains: [...new Set(domains)], env, err, at, fileName, addressRealm: addressRealm(listen, advertise),
    usersOverride: ov.users !== undefined ? path.resolve(ov.users) : undefined,
    mainSecret: secret,
  });
  if (errors.length > 0) return { ok: false, errors: inFileOrder(errors, fileName), partial: { ...(rulesDir !== undefined ? { rulesDir } : {}), auth } };
  const config: ResolvedConfig = {
    listen,
    ...(advertise !== undefined ? { advertise } : {}),
    upstreams,
    domains: [...new Set(domains)],
    inside,
    trusted,
    trunks: trunkCfg.trunks,
    egress: trunkCfg.egress,
    ...(secret !== undefined ? { secret } : {}),
    limits: { ...f.limits },
    tcp: { ...f.tcp },
    udp: { ...f.udp },
    ...(tls !== undefined ? { tls } : {}),
    ...(websocket !== undefined ? { websocket } : {}),
    transactions: { max: txMax, memoryBudgetMB: f.transactions.memoryBudgetMB, t1Ms: f.transactions.t1Ms, t2Ms: f.transactions.t2Ms, t4Ms: f.transactions.t4Ms },
    health: { ...f.health },
    overload: { ...f.overload },
    proxy: { ...f.proxy },
    topology: {
      enabled: f.topology.enabled,
      key: env.SIPEDGE_TOPOLOGY_KEY || f.topology.key,
      headers: { remove: f.topology.headers.remove.map((n) => n.toLowerCase()), replace: { ...f.topology.headers.replace } },
    },
    ...(rulesDir !== undefined ? { rulesDir } : {}),
    ...(redisUrl ? { redis: { url: redisUrl } } : {}),
    ...(f.serverHeader !== null ? { serverHeader: f.serverHeader } : {}),
    shutdownGraceMs: f.shutdownGraceMs,
    warmUpCalls: f.warmUpCalls,
    log: { level },
    metrics: { listen: metricsListen, ...(metricsToken !== undefined ? { token: metricsToken } : {}) },
    auth,
    pings: f.pings,
    dns,
    ...(fileName !== undefined ? { configFile: fileName } : {}),
  };
  return { ok: true, config: deepFreeze(config) };
}

/** The `websocket:` section resolved when a ws/wss listener is configured: origins keyed by the
 *  listener's canonical text, proxies as canonical CIDRs. */
function resolveWebsocket(f: ConfigFile, listen: readonly ListenerSpec[], c: { err: (where: string, msg: string) => void; at: (p: ValuePath) => string }): ResolvedConfig['websocket'] {
  const w = f.websocket;
  const text = (l: ListenerSpec): string => `${l.transport}:${l.host.includes(':') ? `[${l.host}]` : l.host}:${l.port}`;
  const wsListeners = new Set(listen.filter((l) => l.transport === 'ws' || l.transport === 'wss').map(text));
  const origins: Record<string, string[]> = {};
  w.origins.forEach((o, i) => {
    const r = parseTransportSpec(o.listener, 'listen');
    if (typeof r === 'string') { c.err(c.at(['websocket', 'origins', i, 'listener']), `websocket.origins ${JSON.stringify(o.listener)}: ${r}`); return; }
    if (!wsListeners.has(text(r))) { c.err(c.at(['websocket', 'origins', i, 'listener']), `websocket.origins ${JSON.stringify(o.listener)}: not one of the ws/wss listeners in listen`); return; }
    o.allow.forEach((a, j) => {
      // RFC 6454 6.2: scheme "://" host [":" port], no path
      if (!/^https?:\/\/[^/\s]+\/?$/i.test(a)) c.err(c.at(['websocket', 'origins', i, 'allow', j]), `websocket.origins ${JSON.stringify(a)}: expected an origin "https://host[:port]"`);
    });
    (origins[text(r)] ??= []).push(...o.allow.map((a) => a.toLowerCase().replace(/\/+$/, '')));
  });
  const trustedProxies: string[] = [];
  w.trustedProxies.forEach((t, i) => {
    const p = parseCidr(t);
    if (typeof p === 'string') c.err(c.at(['websocket', 'trustedProxies', i]), `websocket.trustedProxies ${JSON.stringify(t)}: ${cidrErrorText(t, p)}`);
    else trustedProxies.push(formatCidr(p));
  });
  if (wsListeners.size === 0) return undefined;
  return { origins, trustedProxies, upgradeTimeoutMs: w.upgradeTimeoutMs, maxUpgradeBytes: w.maxUpgradeBytes, pingIntervalMs: w.pingIntervalMs };
}

/** The `tls:` section resolved (paths absolute), when a tls listener or a certificate is
 *  configured; the files themselves are read by the edge and `sip-edge check`
 *  (edge/transport/tls-context.ts), never here (no I/O in the loader). */
function resolveTls(f: ConfigFile, listen: readonly ListenerSpec[], c: { err: (where: string, msg: string) => void; at: (p: ValuePath) => string; fileName: string | undefined }): TlsSettings | undefined {
  const t = f.tls;
  const tlsListeners = listen.filter((l) => l.transport === 'tls');
  if (tlsListeners.length === 0 && t.certificates.length === 0 && t.clientCa === null && t.upstreamCa === null) return undefined;
  const base = c.fileName !== undefined ? path.dirname(c.fileName) : process.cwd();
  const abs = (p: string): string => path.resolve(base, p);
  const specKey = (l: ListenerSpec): string => `${l.host}|${l.port}`;
  const have = new Set(tlsListeners.map(specKey));
  t.requireClientCert.forEach((text, i) => {
    const r = parseTransportSpec(text, 'listen');
    if (typeof r === 'string') c.err(c.at(['tls', 'requireClientCert', i]), `tls.requireClientCert ${JSON.stringify(text)}: ${r}`);
    else if (r.transport !== 'tls' || !have.has(specKey(r))) c.err(c.at(['tls', 'requireClientCert', i]), `tls.requireClientCert ${JSON.stringify(text)}: not one of the tls listeners in listen`);
  });
  if (t.requireClientCert.length > 0 && t.clientCa === null) c.err(c.at(['tls', 'requireClientCert']), 'tls.requireClientCert: needs tls.clientCa (the CAs client certificates are verified against)');
  if (t.peers.length > 0 && t.clientCa === null) c.err(c.at(['tls', 'peers']), 'tls.peers: needs tls.clientCa (a peer is identified by a certificate that verifies against it)');
  t.peers.forEach((p, i) => {
    if ((p.fingerprint === undefined) === (p.name === undefined)) c.err(c.at(['tls', 'peers', i]), 'tls.peers: each entry has exactly one of fingerprint or name');
    (p.addresses ?? []).forEach((a, j) => {
      const r = parseCidr(a);
      if (typeof r === 'string') c.err(c.at(['tls', 'peers', i, 'addresses', j]), `tls.peers addresses: ${cidrErrorText(a, r)}`);
    });
  });
  return {
    certificates: t.certificates.map((x) => ({ cert: abs(x.cert), key: abs(x.key) })),
    minVersion: t.minVersion,
    ciphers: t.ciphers ?? DEFAULT_TLS_CIPHERS,
    handshakeTimeoutMs: t.handshakeTimeoutMs,
    maxHandshakes: t.maxHandshakes,
    maxHandshakesPerSource: t.maxHandshakesPerSource,
    ...(t.clientCa !== null ? { clientCa: abs(t.clientCa) } : {}),
    requireClientCert: t.requireClientCert.flatMap((text) => { const r = parseTransportSpec(text, 'listen'); return typeof r === 'string' ? [] : [`tls:${r.host.includes(':') ? `[${r.host}]` : r.host}:${r.port}`]; }),
    peers: t.peers.map((p) => ({
      ...(p.fingerprint !== undefined ? { fingerprint: p.fingerprint.toUpperCase() } : { name: p.name!.toLowerCase().replace(/\.$/, '') }),
      ...(p.addresses !== undefined && p.addresses.length > 0 ? { addresses: p.addresses } : {}),
    })),
    ...(t.upstreamCa !== null ? { upstreamCa: abs(t.upstreamCa) } : {}),
    ...(t.upstreamName !== null ? { upstreamName: t.upstreamName.toLowerCase() } : {}),
  };
}

/** The errors located in `file` sorted by line and column (the order an editor shows them), the
 *  others (flags, environment) after them in their own order. */
function inFileOrder(errors: readonly string[], file: string | undefined): string[] {
  if (file === undefined) return [...errors];
  const pos = (e: string): [number, number] | undefined => {
    if (!e.startsWith(`${file}:`)) return undefined;
    const m = /^(\d+):(\d+):/.exec(e.slice(file.length + 1));
    return m ? [Number(m[1]), Number(m[2])] : undefined;
  };
  const located = errors.map((e, i) => ({ e, i, p: pos(e) }));
  return [
    ...located.filter((x) => x.p !== undefined).sort((a, b) => a.p![0] - b.p![0] || a.p![1] - b.p![1] || a.i - b.i).map((x) => x.e),
    ...located.filter((x) => x.p === undefined).map((x) => x.e),
  ];
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as object)) deepFreeze(v);
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// Spec syntax: "proto:host[:port]" and "host[:port]" with the operator's error messages. The IP
// literals inside go through edge/net.
// ---------------------------------------------------------------------------------------------

/** "proto:host[:port]" -> spec, or an error message. */
export function parseTransportSpec(text: string, role: 'listen' | 'upstream'): ListenerSpec | string {
  const s = text.trim();
  const i = s.indexOf(':');
  const proto = i < 0 ? '' : s.slice(0, i).toLowerCase();
  if (i < 0 || !/^[a-z]+$/.test(proto)) return 'expected "proto:host:port", e.g. "udp:127.0.0.1:5060"';
  if (!(KNOWN_TRANSPORTS as readonly string[]).includes(proto)) {
    return `unknown transport "${proto}" (expected ${SUPPORTED_TRANSPORTS.join(' or ')})`;
  }
  const supported = role === 'upstream' ? SUPPORTED_UPSTREAM_TRANSPORTS : SUPPORTED_TRANSPORTS;
  if (!(supported as readonly string[]).includes(proto)) {
    return `transport "${proto}" is not supported ${role === 'upstream' ? 'for upstreams ' : ''}yet (use ${supported.join(' or ')})`;
  }
  const hp = parseHostPort(s.slice(i + 1));
  if (typeof hp === 'string') return hp;
  let host: string | undefined;
  if (hp.host.toLowerCase() === 'localhost') host = '127.0.0.1';
  else host = ipLiteral(hp.host) ?? undefined;
  if (host === undefined) {
    return role === 'upstream'
      ? `host "${hp.host}" is not an IP address; DNS names for upstreams are not supported yet`
      : `host "${hp.host}" is not an IP address to bind (use e.g. 0.0.0.0, ::, 127.0.0.1)`;
  }
  // ws/wss: RFC 7118 names no port; those of RFC 6455 (http / https)
  const port = hp.port ?? (proto === 'tls' ? SIPS_DEFAULT_PORT : proto === 'ws' ? 80 : proto === 'wss' ? 443 : SIP_DEFAULT_PORT);
  if (role === 'upstream') {
    if (port === 0) return 'upstream port must be 1..65535';
    if (isUnspecified(host)) return `"${host}" is a wildcard address, not an upstream`;
  }
  return { transport: proto as TransportName, host, port };
}

/** "host", "host:port", "[v6]", "[v6]:port" -> parts, or an error message. Port 0..65535. */
export function parseHostPort(text: string): { host: string; port?: number } | string {
  const s = text.trim();
  let host: string;
  let portText: string | undefined;
  if (s.startsWith('[')) {
    const end = s.indexOf(']');
    if (end < 0) return 'missing "]" after IPv6 address';
    host = s.slice(1, end);
    const rest = s.slice(end + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) return `unexpected "${rest}" after "]"`;
      portText = rest.slice(1);
    }
    if (isIP(host) !== 6) return `"${host}" is not an IPv6 address`;
  } else {
    const colons = s.split(':').length - 1;
    if (colons > 1) return 'IPv6 addresses must be in brackets, e.g. "[::1]:5060"';
    const i = s.indexOf(':');
    host = i < 0 ? s : s.slice(0, i);
    if (i >= 0) portText = s.slice(i + 1);
  }
  if (host === '') return 'missing host';
  if (portText === undefined) return { host };
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) return `port "${portText}" is not a number from 0 to 65535`;
  return { host, port: Number(portText) };
}

function isUnspecified(ip: string): boolean {
  return ip === '0.0.0.0' || ip === '::';
}

function isLoopback(ip: string): boolean {
  return ip === '::1' || ip.startsWith('127.');
}

/**
 * Secrets nobody may run with: the example in the shipped sip-edge.yaml and README, and the usual
 * placeholders. A nonce secret an attacker knows lets them mint nonces for any source and time.
 */
const WELL_KNOWN_SECRETS = new Set([
  'change-me-to-32-random-characters', 'changeme', 'change-me', 'changethis', 'secret', 'password',
  'sip-edge', 'sipedge', 'default', 'example', 'test', '1234567890123456', '0123456789abcdef',
  'aaaaaaaaaaaaaaaa', 'secretsecretsecret', 'passwordpassword',
]);

/** Why a secret is unusable, or undefined when it is fine. */
export function weakSecret(s: string): string | undefined {
  const low = s.toLowerCase();
  if (WELL_KNOWN_SECRETS.has(low)) return 'is a well-known example value: generate one, e.g. `openssl rand -hex 32`';
  if (new Set(s).size < 8) return 'has fewer than 8 distinct characters: generate one, e.g. `openssl rand -hex 32`';
  return undefined;
}

/** Every domain policy of an auth config, the fallback first. */
export function authPolicies(a: AuthConfig): AuthDomainPolicy[] {
  return [a.fallback, ...a.domains];
}

/** The users files the edge must load: those of the domains in edge mode, each once. */
export function edgeUsersFiles(a: AuthConfig | undefined): string[] {
  if (a === undefined) return [];
  return [...new Set(authPolicies(a).flatMap((p) => (p.mode === 'edge' && p.usersFile !== undefined ? [p.usersFile] : [])))];
}

/** The auth settings when the config says nothing (tests and embedders that build a config by
 *  hand): pbx mode everywhere with the schema defaults. */
export function defaultAuthConfig(domains: readonly string[], realmFallback = 'localhost'): AuthConfig {
  const d = loadYamlText('', 'defaults', ConfigFileSchema);
  if (!d.ok) throw new Error(d.errors.join('\n')); // the schema's own defaults: cannot fail
  return resolveAuth(d.value, {
    domains, env: {}, err: () => undefined, at: () => 'defaults', fileName: undefined, usersOverride: undefined, mainSecret: undefined, addressRealm: realmFallback,
  });
}

/**
 * The realm when neither auth.realm nor a served domain name gives one: the address phones reach
 * the edge at (advertise, else the first listener's host). RFC 3261 22.1 recommends a host name
 * in the realm; above all it must not name the product ("sip-edge" told a scanner what it had
 * found). `sip-edge passwd` does not guess this one: the operator gives --realm.
 */
export function addressRealm(listen: readonly { readonly host: string }[], advertise?: { readonly host: string }): string {
  return advertise?.host ?? listen[0]?.host ?? 'localhost';
}

function resolveAuth(
  f: ConfigFile,
  c: {
    domains: readonly string[];
    env: NodeJS.ProcessEnv;
    err: (where: string, msg: string) => void;
    at: (p: ValuePath) => string;
    fileName: string | undefined;
    usersOverride: string | undefined;
    mainSecret: string | undefined;
    /** realm of last resort (addressRealm) */
    addressRealm: string;
  },
): AuthConfig {
  const a = f.auth;
  const base = c.fileName !== undefined ? path.dirname(c.fileName) : process.cwd();
  const defaultUsers = c.usersOverride ?? (a.users !== null ? path.resolve(base, a.users) : undefined);
  const defaultRealm = a.realm ?? c.domains.find((d) => isIP(d) === 0) ?? c.addressRealm;
  const policy = (name: string, realm: string, users: string | undefined, mode: AuthDomainPolicy['mode'] | null, o: Partial<Omit<AuthDomainPolicy, 'name' | 'realm' | 'usersFile' | 'mode'>>): AuthDomainPolicy => ({
    name,
    mode: mode ?? (users !== undefined ? 'edge' : 'pbx'),
    realm,
    ...(users !== undefined ? { usersFile: users } : {}),
    algorithms: o.algorithms ?? a.algorithms,
    qop: o.qop ?? a.qop,
    matchFrom: o.matchFrom ?? a.matchFrom,
    forwardCredentials: o.forwardCredentials ?? a.forwardCredentials,
    identity: o.identity ?? a.identity,
    pbxRewrite: o.pbxRewrite ?? a.pbxRewrite,
  });
  const fallback = policy('*', defaultRealm, defaultUsers, a.mode, {});
  const seen = new Set<string>();
  const listed: AuthDomainPolicy[] = [];
  a.domains.forEach((d, i) => {
    const name = d.name.toLowerCase();
    const where = c.at(['auth', 'domains', i, 'name']);
    if (!c.domains.includes(name)) c.err(where, `auth.domains: ${JSON.stringify(d.name)} is not one of the served domains (domains: ${JSON.stringify(c.domains)})`);
    if (seen.has(name)) c.err(where, `auth.domains: ${JSON.stringify(d.name)} is listed twice`);
    seen.add(name);
    const users = d.users !== undefined ? path.resolve(base, d.users) : defaultUsers;
    listed.push(policy(name, d.realm ?? (isIP(name) === 0 ? name : defaultRealm), users, d.mode ?? a.mode, d));
  });
  for (const [i, p] of [fallback, ...listed].entries()) {
    const where = i === 0 ? c.at(['auth', 'mode']) : c.at(['auth', 'domains', i - 1, 'name']);
    if (p.mode === 'edge' && p.usersFile === undefined) c.err(where, `auth: edge authentication${p.name === '*' ? '' : ` for ${p.name}`} needs a users file (auth.users, the domain's users, or --users)`);
    if (p.mode === 'edge' && !p.qop.includes('auth')) c.err(where, 'auth: qop must include auth (RFC 7616 3.3; auth-int alone locks out most phones)');
  }
  // the nonce secret: env, then auth.secret, then the main secret
  let secret: string | undefined = a.secret ?? c.mainSecret;
  let secretWhere = a.secret !== undefined ? c.at(['auth', 'secret']) : c.at(['secret']);
  const envSecret = c.env.SIPEDGE_AUTH_SECRET;
  if (envSecret !== undefined && envSecret !== '') {
    secret = envSecret;
    secretWhere = 'env SIPEDGE_AUTH_SECRET';
    if (envSecret.length < 16) c.err(secretWhere, 'must be at least 16 characters');
  }
  // none at all is fine for one instance: the edge makes a random one per process (and warns that
  // a cluster needs a shared one); one that is given must not be guessable
  const edgeMode = [fallback, ...listed].some((p) => p.mode === 'edge');
  if (edgeMode && secret !== undefined) {
    const weak = weakSecret(secret);
    if (weak !== undefined) c.err(secretWhere, `auth secret ${weak}`);
  }
  return {
    ...(secret !== undefined ? { secret } : {}),
    nonceSeconds: a.nonceSeconds,
    lockout: { ...a.lockout },
    enumeration: { ...a.enumeration },
    domains: listed,
    fallback,
  };
}
