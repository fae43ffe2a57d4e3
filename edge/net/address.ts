// Canonical IP addresses and host:port parsing.
//
// Every address that reaches a ban list, a rate-limit key, a CIDR lookup or a log goes through
// canonicalAddress() first, so that "::FFFF:10.0.0.1", "::ffff:a00:1" and "10.0.0.1" are one key
// and an attacker cannot dodge a ban by switching spellings. Parsing is by hand (no DNS, no
// inet_aton octal/hex quirks) and never throws: bad input gives null or an `{ error }` value.

/** Address as raw bytes: 4 bytes (IPv4, including IPv4-mapped IPv6) or 16 bytes (IPv6). */
export type IpBytes = Uint8Array;

const MAX_ADDRESS_TEXT = 64; // longest legal IPv6 text is 45 chars (+ zone); longer input is hostile

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

/** Strict dotted quad: exactly four decimal parts 0..255, no leading zeros (inet_aton would read
 *  "010" as octal 8, a classic ACL bypass), no other forms ("1.2.3", "0x7f.1"). */
function parseIPv4Into(s: string, out: Uint8Array, at: number): boolean {
  let part = 0;
  let digits = 0;
  let value = 0;
  for (let i = 0; i <= s.length; i++) {
    const c = i < s.length ? s.charCodeAt(i) : 0x2e;
    if (c === 0x2e) {
      if (digits === 0 || part > 3) return false;
      out[at + part] = value;
      part++;
      digits = 0;
      value = 0;
    } else if (c >= 0x30 && c <= 0x39) {
      if (digits > 0 && value === 0) return false; // leading zero
      value = value * 10 + (c - 0x30);
      digits++;
      if (value > 255) return false;
    } else {
      return false;
    }
  }
  return part === 4;
}

/** RFC 4291 2.2 text forms: 8 groups, one "::" for one or more zero groups, optional trailing
 *  dotted quad. Returns 16 bytes or null. */
function parseIPv6(s: string): Uint8Array | null {
  const out = new Uint8Array(16);
  const groups: number[] = [];
  let dbl = -1; // index in groups where "::" stood
  let i = 0;
  const n = s.length;
  if (n < 2) return null;
  if (s.charCodeAt(0) === 0x3a) {
    if (s.charCodeAt(1) !== 0x3a) return null; // a single leading colon
    dbl = 0;
    i = 2;
    if (i === n) return out; // "::"
  }
  while (i < n) {
    // one group: hex digits, or a dotted quad that must end the address
    let j = i;
    let v = 0;
    while (j < n && j - i < 5) {
      const h = hexValue(s.charCodeAt(j));
      if (h < 0) break;
      v = (v << 4) | h;
      j++;
    }
    if (j < n && s.charCodeAt(j) === 0x2e) {
      if (groups.length > 6) return null;
      const quad = new Uint8Array(4);
      if (!parseIPv4Into(s.slice(i), quad, 0)) return null;
      groups.push((quad[0] << 8) | quad[1], (quad[2] << 8) | quad[3]);
      i = n;
      break;
    }
    if (j === i || j - i > 4) return null;
    groups.push(v);
    if (groups.length > 8) return null;
    i = j;
    if (i === n) break;
    if (s.charCodeAt(i) !== 0x3a) return null;
    i++;
    if (i < n && s.charCodeAt(i) === 0x3a) {
      if (dbl >= 0) return null; // a second "::"
      dbl = groups.length;
      i++;
      if (i === n) break;
    } else if (i === n) {
      return null; // trailing single colon
    }
  }
  if (dbl < 0) {
    if (groups.length !== 8) return null;
  } else if (groups.length > 7) {
    return null; // "::" must stand for at least one zero group (RFC 4291 2.2 item 2)
  }
  const tail = groups.length - (dbl < 0 ? groups.length : dbl);
  for (let g = 0; g < groups.length; g++) {
    const pos = dbl >= 0 && g >= dbl ? 8 - tail + (g - dbl) : g;
    out[pos * 2] = groups[g] >> 8;
    out[pos * 2 + 1] = groups[g] & 0xff;
  }
  return out;
}

function stripDecorations(a: string): string {
  let s = a;
  if (s.length >= 2 && s.charCodeAt(0) === 0x5b && s.charCodeAt(s.length - 1) === 0x5d) s = s.slice(1, -1);
  // RFC 4007 11: the zone id names a local interface; it is meaningless as an identity
  const pct = s.indexOf('%');
  if (pct >= 0) s = s.slice(0, pct);
  return s;
}

/** True when 16 bytes are ::ffff:0:0/96 (RFC 4291 2.5.5.2), i.e. really an IPv4 peer. */
function isV4Mapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

/**
 * Bytes of an address: 4 for IPv4 and IPv4-mapped IPv6, 16 for other IPv6. Accepts brackets and
 * a zone id (both dropped). null when the text is not an IP address.
 */
export function ipToBytes(a: string): IpBytes | null {
  if (typeof a !== 'string' || a.length === 0 || a.length > MAX_ADDRESS_TEXT) return null;
  const s = stripDecorations(a);
  if (s.indexOf(':') < 0) {
    const v4 = new Uint8Array(4);
    return parseIPv4Into(s, v4, 0) ? v4 : null;
  }
  const v6 = parseIPv6(s);
  if (v6 === null) return null;
  return isV4Mapped(v6) ? v6.slice(12) : v6;
}

/** RFC 5952 4: lower-case hex, no leading zeros, the longest run (first on a tie) of two or more
 *  zero groups as "::". IPv4 as a dotted quad. */
export function bytesToIp(b: IpBytes): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((b[i * 2] << 8) | b[i * 2 + 1]);
  let bestStart = -1;
  let bestLen = 1; // RFC 5952 4.2.2: never compress a single zero group
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  if (bestStart < 0) return g.map((x) => x.toString(16)).join(':');
  const head = g.slice(0, bestStart).map((x) => x.toString(16)).join(':');
  const tail = g.slice(bestStart + bestLen).map((x) => x.toString(16)).join(':');
  return `${head}::${tail}`;
}

/** scratch for yes/no IPv4 checks: asked on every UDP send, so no bytes are allocated for it */
const V4_SCRATCH = new Uint8Array(4);

/** 0, 4 or 6 like net.isIP; IPv4-mapped IPv6 counts as 6 (it is IPv6 text); zone ids allowed. */
export function isIP(a: string): 0 | 4 | 6 {
  if (typeof a !== 'string' || a.length === 0 || a.length > MAX_ADDRESS_TEXT) return 0;
  const pct = a.indexOf('%');
  const s = pct >= 0 ? a.slice(0, pct) : a;
  if (s.indexOf(':') < 0) return parseIPv4Into(s, V4_SCRATCH, 0) ? 4 : 0;
  return parseIPv6(s) !== null ? 6 : 0;
}

/**
 * The one spelling of an address used as a key everywhere: IPv4-mapped IPv6 becomes the dotted
 * quad; IPv6 is RFC 5952 text without brackets or zone. Text that is not an IP address (a host
 * name) is returned lower-cased, since DNS names compare case-insensitively (RFC 4343).
 */
export function canonicalAddress(a: string): string {
  const b = ipToBytes(a);
  if (b !== null) return bytesToIp(b);
  return typeof a === 'string' ? a.toLowerCase() : '';
}

/**
 * An IP literal as an operator writes one in configuration: canonical text (as canonicalAddress),
 * or null for anything else, including a zone id ("fe80::1%eth0": it names an interface of this
 * host, meaningless in a shared config) and brackets (those belong to the "[v6]:port" syntax
 * around the literal, not to the literal).
 */
export function ipLiteral(a: string): string | null {
  if (typeof a !== 'string' || a.indexOf('%') >= 0 || a.indexOf('[') >= 0) return null;
  const b = ipToBytes(a);
  return b === null ? null : bytesToIp(b);
}

/** Family of the canonical form: IPv4-mapped IPv6 is 4. 0 when not an IP address. */
export function addressFamily(a: string): 0 | 4 | 6 {
  if (typeof a !== 'string' || a.length === 0 || a.length > MAX_ADDRESS_TEXT) return 0;
  const s = stripDecorations(a);
  if (s.indexOf(':') < 0) return parseIPv4Into(s, V4_SCRATCH, 0) ? 4 : 0;
  const b = ipToBytes(a);
  return b === null ? 0 : b.length === 4 ? 4 : 6;
}

/**
 * Key for aggregating IPv6 sources: the address masked to `bits` with "/bits" appended
 * ("2001:db8:1:2::/64"). One IPv6 customer usually holds a whole /64 (RFC 6177), so per-address
 * bans and limits on IPv6 are trivially dodged; callers key those on this prefix instead.
 * IPv4 (and IPv4-mapped) addresses come back canonical and unmasked; non-IP text lower-cased.
 */
export function ipv6Prefix(addr: string, bits: number): string {
  const b = ipToBytes(addr);
  if (b === null) return canonicalAddress(addr);
  if (b.length === 4) return bytesToIp(b);
  const n = Math.max(0, Math.min(128, Math.floor(bits)));
  if (n === 128) return bytesToIp(b);
  const m = maskBytes(b, n);
  return `${bytesToIp(m)}/${n}`;
}

/** Copy of `b` with every bit past `bits` cleared. */
export function maskBytes(b: IpBytes, bits: number): IpBytes {
  const m = b.slice();
  for (let i = 0; i < m.length; i++) {
    const keep = bits - i * 8;
    if (keep >= 8) continue;
    m[i] = keep <= 0 ? 0 : m[i] & (0xff << (8 - keep));
  }
  return m;
}

export interface HostPort {
  /** canonical IP address, or a lower-case host name */
  readonly host: string;
  readonly port?: number;
  readonly isIP: 0 | 4 | 6;
}

export interface ParseError {
  readonly error: string;
}

function parsePort(s: string): number | null {
  if (s.length === 0 || s.length > 5) return null;
  let v = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return null;
    v = v * 10 + (c - 0x30);
  }
  return v <= 65535 ? v : null;
}

/** RFC 1035 2.3.1 host name as relaxed by RFC 1123 2.1 (a label may start with a digit): labels
 *  of letters, digits and hyphens, dot separated, an optional final dot. */
export function isHostName(s: string): boolean {
  if (s.length === 0 || s.length > 253) return false;
  const labels = s.endsWith('.') ? s.slice(0, -1).split('.') : s.split('.');
  for (const l of labels) {
    if (l.length === 0 || l.length > 63) return false;
    if (!/^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$/.test(l)) return false;
  }
  // an all-numeric dotted name is a malformed IPv4 address ("1.2.3", "01.2.3.4"), not a host
  return !/^[0-9.]+$/.test(s);
}

/**
 * "[::1]:5060", "[::1]", "1.2.3.4:5060", "1.2.3.4", "host:5060", "host", and a bare IPv6
 * address without port ("::1"). RFC 3986 3.2.2 / RFC 3261 25.1: IPv6 with a port needs brackets.
 */
export function parseHostPort(s: string): HostPort | ParseError {
  if (typeof s !== 'string' || s.length === 0) return { error: 'host_empty' };
  if (s.length > 300) return { error: 'host_too_long' };
  let hostText: string;
  let portText: string | undefined;
  if (s.charCodeAt(0) === 0x5b) {
    const close = s.indexOf(']');
    if (close < 0) return { error: 'bracket_unclosed' };
    hostText = s.slice(1, close);
    const rest = s.slice(close + 1);
    if (rest.length > 0) {
      if (rest.charCodeAt(0) !== 0x3a) return { error: 'port_invalid' };
      portText = rest.slice(1);
    }
    if (isIP(hostText) !== 6) return { error: 'ipv6_invalid' };
  } else {
    const first = s.indexOf(':');
    if (first >= 0 && s.indexOf(':', first + 1) >= 0) {
      // several colons and no brackets: only a bare IPv6 address can look like this
      if (isIP(s) !== 6) return { error: 'ipv6_invalid' };
      hostText = s;
    } else if (first >= 0) {
      hostText = s.slice(0, first);
      portText = s.slice(first + 1);
    } else {
      hostText = s;
    }
  }
  let port: number | undefined;
  if (portText !== undefined) {
    const p = parsePort(portText);
    if (p === null) return { error: 'port_invalid' };
    port = p;
  }
  const fam = isIP(hostText);
  if (fam === 0 && !isHostName(hostText)) return { error: 'host_invalid' };
  const host = canonicalAddress(hostText);
  return port === undefined ? { host, isIP: fam === 0 ? 0 : addressFamily(host) } : { host, port, isIP: fam === 0 ? 0 : addressFamily(host) };
}

/** "host:port" with brackets around IPv6 (RFC 3261 25.1 IPv6reference); host alone without port. */
export function formatHostPort(host: string, port?: number): string {
  const h = host.indexOf(':') >= 0 && !host.startsWith('[') ? `[${host}]` : host;
  return port === undefined ? h : `${h}:${port}`;
}
