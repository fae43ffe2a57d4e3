// Redis URLs for the three topologies the Redis store supports. Pure (no ioredis import), so that
// configuration validation can call it cheaply.
//
//   redis://[user:pass@]host[:port][/db]                       standalone (rediss:// = TLS)
//   redis-sentinel://[user:pass@]h1[:26379],h2[:26379]/MASTER[/db][?sentinelPassword=..&sentinelUsername=..]
//                                                              Sentinel (rediss-sentinel:// = TLS)
//   redis-cluster://[user:pass@]h1[:port],h2[:port]            Cluster (rediss-cluster:// = TLS)
//
// Hosts are IPv4 literals, DNS names, or IPv6 literals in brackets (RFC 3986 3.2.2: an IP literal
// in a URL is bracketed; a bare "::1" cannot be told apart from host:port). Userinfo is
// percent-decoded (RFC 3986 3.2.1), so a password containing "@", "/" or "," must be encoded.
// Credentials are `user:pass` or `:pass` (Redis AUTH with and without an ACL user); a bare `user@`
// is refused because Redis has no password-less AUTH. The Sentinel password given in the query
// authenticates to the sentinels; the userinfo password is the master's.
//
// Strict on purpose: anything else (another scheme, a query key we do not know, a fragment, a
// database on a cluster, which has only database 0) is an error string naming what is wrong.
// Error strings never contain the password.
import { isIPv4, isIPv6 } from 'node:net';

export interface RedisEndpoint {
  readonly host: string;
  readonly port: number;
}

interface Credentials {
  /** ACL user (Redis 6+); absent: the default user */
  readonly username?: string;
  readonly password?: string;
}

export type ParsedRedisUrl =
  | (Credentials & { readonly kind: 'standalone'; readonly tls: boolean; readonly host: string; readonly port: number; readonly db: number })
  | (Credentials & {
      readonly kind: 'sentinel';
      readonly tls: boolean;
      readonly sentinels: readonly RedisEndpoint[];
      /** master group name as configured in the sentinels (`sentinel monitor NAME ...`) */
      readonly name: string;
      readonly db: number;
      readonly sentinelUsername?: string;
      readonly sentinelPassword?: string;
    })
  | (Credentials & { readonly kind: 'cluster'; readonly tls: boolean; readonly nodes: readonly RedisEndpoint[] });

const MAX_URL_CHARS = 4096;
const MAX_HOSTS = 32;
const MAX_DB = 65535;

const SCHEMES: Readonly<Record<string, { kind: ParsedRedisUrl['kind']; tls: boolean; port: number }>> = {
  redis: { kind: 'standalone', tls: false, port: 6379 },
  rediss: { kind: 'standalone', tls: true, port: 6379 },
  'redis-sentinel': { kind: 'sentinel', tls: false, port: 26379 },
  'rediss-sentinel': { kind: 'sentinel', tls: true, port: 26379 },
  'redis-cluster': { kind: 'cluster', tls: false, port: 6379 },
  'rediss-cluster': { kind: 'cluster', tls: true, port: 6379 },
};

const EXPECTED = 'expected redis://, rediss://, redis-sentinel://, rediss-sentinel://, redis-cluster:// or rediss-cluster://';

/** DNS name (RFC 1123 labels; "_" tolerated, as container service names use it). */
const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;
/** Sentinel master names: what `sentinel monitor` accepts in practice, bounded. */
const MASTER_NAME = /^[A-Za-z0-9._-]{1,64}$/;

function decode(s: string): string | null {
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}

/** "host", "host:port", "[v6]", "[v6]:port" -> endpoint, or an error. */
function parseHost(raw: string, defaultPort: number): RedisEndpoint | { error: string } {
  let host: string;
  let portText: string | undefined;
  if (raw.startsWith('[')) {
    const close = raw.indexOf(']');
    if (close < 0) return { error: `unterminated IPv6 bracket in host "${raw}"` };
    host = raw.slice(1, close);
    const rest = raw.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) return { error: `unexpected "${rest}" after IPv6 address in "${raw}"` };
    if (rest !== '') portText = rest.slice(1);
    // a zone id ("fe80::1%25eth0") would need the interface: not supported on purpose
    if (!isIPv6(host)) return { error: `"${host}" is not an IPv6 address` };
  } else {
    const colons = raw.split(':').length - 1;
    if (colons > 1) {
      return { error: isIPv6(raw) ? `IPv6 address "${raw}" must be written in brackets, e.g. [${raw}]:6379` : 'a host with more than one ":" (IPv6 addresses go in brackets: [2001:db8::1]:6379)' };
    }
    const c = raw.indexOf(':');
    host = c < 0 ? raw : raw.slice(0, c);
    if (c >= 0) portText = raw.slice(c + 1);
    if (host === '') return { error: 'empty host' };
    if (!isIPv4(host) && !HOSTNAME.test(host)) return { error: `"${host}" is not a host name or IP address` };
    // "1.2.3" parses as a name above; refuse all-numeric dotted names that are no IPv4 literal
    if (/^[0-9.]+$/.test(host) && !isIPv4(host)) return { error: `"${host}" is not a valid IPv4 address` };
  }
  let port = defaultPort;
  if (portText !== undefined) {
    // the port text is not echoed: in a mistyped URL ("redis://user:secret") it may be a password
    if (!/^[0-9]{1,5}$/.test(portText)) return { error: `the port of host "${host}" is not a number` };
    port = Number(portText);
    if (port < 1 || port > 65535) return { error: `port ${port} of host "${host}" is out of range 1-65535` };
  }
  return { host, port };
}

function parseDb(seg: string): number | null {
  if (!/^[0-9]{1,5}$/.test(seg)) return null;
  const n = Number(seg);
  return n <= MAX_DB ? n : null;
}

/**
 * Parse a Redis URL into the topology and its connection details, or `{ error }` with a message
 * for the operator (never containing the password). Never throws, whatever the input.
 */
export function parseRedisUrl(url: unknown): ParsedRedisUrl | { error: string } {
  if (typeof url !== 'string' || url.length === 0) return { error: `empty Redis URL; ${EXPECTED}` };
  if (url.length > MAX_URL_CHARS) return { error: `Redis URL longer than ${MAX_URL_CHARS} characters` };
  // eslint-disable-next-line no-control-regex
  if (/[\s\u0000-\u001f\u007f]/.test(url)) return { error: 'Redis URL contains whitespace or control characters' };
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(url);
  if (m === null) return { error: `not a URL; ${EXPECTED}` };
  const scheme = SCHEMES[m[1]!.toLowerCase()];
  if (scheme === undefined) return { error: `unsupported scheme "${m[1]}://"; ${EXPECTED}` };
  let rest = url.slice(m[0].length);

  if (rest.includes('#')) return { error: 'a Redis URL has no fragment ("#")' };
  let query = '';
  const q = rest.indexOf('?');
  if (q >= 0) {
    query = rest.slice(q + 1);
    rest = rest.slice(0, q);
  }
  const slash = rest.indexOf('/');
  // an "@" after the authority means a password with an unencoded "/", "?" or "#": say so
  // without echoing any part of it
  if (rest.slice(slash < 0 ? rest.length : slash).includes('@') || query.includes('@')) {
    return { error: 'unexpected "@" after the host: percent-encode "@", "/", "?", "#" and "," in credentials (%40 %2F %3F %23 %2C)' };
  }
  const authority = slash < 0 ? rest : rest.slice(0, slash);
  const path = slash < 0 ? '' : rest.slice(slash);

  // userinfo: everything before the LAST "@" of the authority (an unencoded "@" in a password
  // would otherwise split it in two)
  let hostsPart = authority;
  let username: string | undefined;
  let password: string | undefined;
  const at = authority.lastIndexOf('@');
  if (at >= 0) {
    const userinfo = authority.slice(0, at);
    hostsPart = authority.slice(at + 1);
    const colon = userinfo.indexOf(':');
    if (colon < 0) return { error: 'credentials must be "user:password@" or ":password@" (Redis has no AUTH without a password)' };
    const u = decode(userinfo.slice(0, colon));
    const p = decode(userinfo.slice(colon + 1));
    if (u === null || p === null) return { error: 'invalid percent-encoding in the credentials' };
    if (p === '') return { error: 'empty password in the credentials' };
    if (u !== '') username = u;
    password = p;
  }

  if (hostsPart === '') return { error: 'no host in the Redis URL' };
  const rawHosts = hostsPart.split(',');
  if (rawHosts.length > MAX_HOSTS) return { error: `more than ${MAX_HOSTS} hosts in the Redis URL` };
  const hosts: RedisEndpoint[] = [];
  for (const h of rawHosts) {
    if (h === '') return { error: 'empty host in the host list' };
    const e = parseHost(h, scheme.port);
    if ('error' in e) return e;
    hosts.push(e);
  }
  if (scheme.kind === 'standalone' && hosts.length > 1) {
    return { error: 'several hosts need redis-sentinel:// (sentinels) or redis-cluster:// (cluster nodes)' };
  }

  // query: only the sentinel credentials, and only for Sentinel
  const params = new Map<string, string>();
  if (query !== '') {
    for (const pair of query.split('&')) {
      if (pair === '') continue;
      const eq = pair.indexOf('=');
      const rawKey = eq < 0 ? pair : pair.slice(0, eq);
      // echo a parameter name only when it looks like one (a stray "?secret" is not repeated)
      const k = /^[A-Za-z0-9_.-]{1,32}$/.test(rawKey) ? rawKey : '(unprintable)';
      const v = decode(eq < 0 ? '' : pair.slice(eq + 1));
      if (v === null) return { error: `invalid percent-encoding in query parameter "${k}"` };
      if (scheme.kind !== 'sentinel' || (k !== 'sentinelPassword' && k !== 'sentinelUsername')) {
        return { error: `unsupported query parameter "${k}"${scheme.kind === 'sentinel' ? ' (only sentinelPassword and sentinelUsername)' : ' (none are accepted for this scheme)'}` };
      }
      if (params.has(k)) return { error: `query parameter "${k}" given twice` };
      if (v === '') return { error: `empty query parameter "${k}"` };
      params.set(k, v);
    }
  }

  const segs = path === '' || path === '/' ? [] : path.slice(1).split('/');
  const auth: Credentials = { ...(username !== undefined ? { username } : {}), ...(password !== undefined ? { password } : {}) };
  switch (scheme.kind) {
    case 'standalone': {
      const db = segs.length === 0 ? 0 : segs.length === 1 ? parseDb(segs[0]!) : null;
      if (db === null) return { error: `the path must be a database number 0-${MAX_DB}, e.g. /0` };
      return { kind: 'standalone', tls: scheme.tls, host: hosts[0]!.host, port: hosts[0]!.port, db, ...auth };
    }
    case 'sentinel': {
      if (segs.length === 0 || segs[0] === '') return { error: 'redis-sentinel:// needs the master name as the path, e.g. redis-sentinel://h1:26379,h2:26379/mymaster' };
      const name = decode(segs[0]!);
      if (name === null || !MASTER_NAME.test(name)) return { error: 'the master name must be 1-64 characters of A-Z a-z 0-9 . _ -' };
      if (segs.length > 2) return { error: 'the path must be /MASTERNAME or /MASTERNAME/db' };
      const db = segs.length === 2 ? parseDb(segs[1]!) : 0;
      if (db === null) return { error: `the database after the master name must be a number 0-${MAX_DB}` };
      const sentinelUsername = params.get('sentinelUsername');
      const sentinelPassword = params.get('sentinelPassword');
      if (sentinelUsername !== undefined && sentinelPassword === undefined) return { error: 'sentinelUsername needs sentinelPassword' };
      return {
        kind: 'sentinel',
        tls: scheme.tls,
        sentinels: hosts,
        name,
        db,
        ...auth,
        ...(sentinelUsername !== undefined ? { sentinelUsername } : {}),
        ...(sentinelPassword !== undefined ? { sentinelPassword } : {}),
      };
    }
    case 'cluster': {
      if (segs.length > 0) return { error: 'a Redis Cluster has only database 0: no path allowed in redis-cluster://' };
      return { kind: 'cluster', tls: scheme.tls, nodes: hosts, ...auth };
    }
  }
}

/** The URL with any password replaced by "***", for logs and error messages. Never throws. */
export function redactRedisUrl(url: string): string {
  if (typeof url !== 'string') return '';
  const m = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)([^/?#]*)(.*)$/.exec(url);
  let out = url;
  if (m !== null) {
    const at = m[2]!.lastIndexOf('@');
    if (at >= 0) {
      const userinfo = m[2]!.slice(0, at);
      const colon = userinfo.indexOf(':');
      const user = colon < 0 ? userinfo : userinfo.slice(0, colon);
      out = `${m[1]}${user}:***@${m[2]!.slice(at + 1)}${m[3]}`;
    }
  }
  return out.replace(/([?&]sentinelPassword=)[^&#]*/g, '$1***');
}
