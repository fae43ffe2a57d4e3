// URI and host grammar (RFC 3261 19.1.1 / 25.1, RFC 5118 IPv6 references, RFC 3966 tel).
// Hand-written scanners: linear, no regex backtracking, total (null on any defect).
import type { SipUri } from './types';
import { HNVCHAR, PARAMCHAR, PASSWORD, SCHEME, TELCHAR, USER, isAlnum, isAlpha, isDigit, validChars } from './chars';

const NO_PARAMS: ReadonlyMap<string, string | null> = new Map();

/** RFC 3261 25.1: IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT (each 0..255) */
export function isIPv4(s: string, from = 0, to = s.length): boolean {
  let parts = 0, digits = 0, val = 0;
  for (let i = from; i <= to; i++) {
    const c = i < to ? s.charCodeAt(i) : 0x2e;
    if (c === 0x2e) {
      if (digits === 0 || val > 255) return false;
      parts++;
      digits = 0; val = 0;
    } else if (isDigit(c)) {
      if (++digits > 3) return false;
      val = val * 10 + (c - 0x30);
    } else return false;
  }
  return parts === 4;
}

/** RFC 3261 25.1 / RFC 4291 2.2: IPv6address (hex4 groups, one "::", optional trailing IPv4) */
export function isIPv6(s: string, from = 0, to = s.length): boolean {
  if (to - from < 2) return false;
  let groups = 0, dbl = false, i = from;
  if (s.charCodeAt(i) === 0x3a) {
    if (s.charCodeAt(i + 1) !== 0x3a) return false;
    dbl = true; i += 2;
    if (i === to) return true;
  }
  while (i < to) {
    const gs = i;
    let hex = 0;
    while (i < to && hex < 5) {
      const c = s.charCodeAt(i);
      if (isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66)) { hex++; i++; } else break;
    }
    if (i < to && s.charCodeAt(i) === 0x2e) {
      // embedded IPv4 in the last 32 bits
      if (!isIPv4(s, gs, to)) return false;
      groups += 2;
      i = to;
      break;
    }
    if (hex === 0 || hex > 4) return false;
    groups++;
    if (i === to) break;
    if (s.charCodeAt(i) !== 0x3a) return false;
    i++;
    if (i < to && s.charCodeAt(i) === 0x3a) {
      if (dbl) return false;
      dbl = true; i++;
      if (i === to) break;
    } else if (i === to) return false;
  }
  return dbl ? groups <= 7 : groups === 8;
}

/** RFC 3261 25.1: hostname = *( domainlabel "." ) toplabel [ "." ]; labels alphanum with inner "-";
 *  toplabel starts with ALPHA. */
export function isHostname(s: string, from = 0, to = s.length): boolean {
  if (to <= from) return false;
  if (s.charCodeAt(to - 1) === 0x2e) to--;
  let labelStart = from;
  for (let i = from; i <= to; i++) {
    const c = i < to ? s.charCodeAt(i) : 0x2e;
    if (c === 0x2e) {
      if (i === labelStart) return false;
      if (s.charCodeAt(labelStart) === 0x2d || s.charCodeAt(i - 1) === 0x2d) return false;
      if (i === to && !isAlpha(s.charCodeAt(labelStart))) return false;
      labelStart = i + 1;
    } else if (!isAlnum(c) && c !== 0x2d) return false;
  }
  return true;
}

/** host = hostname / IPv4address / IPv6reference; returns the lower-case host (IPv6 without
 *  brackets) or null. */
export function parseHost(s: string, from: number, to: number): { host: string; v6: boolean } | null {
  if (to <= from) return null;
  if (s.charCodeAt(from) === 0x5b) {
    // RFC 5118 / RFC 3261 25.1: IPv6reference = "[" IPv6address "]"
    if (s.charCodeAt(to - 1) !== 0x5d || !isIPv6(s, from + 1, to - 1)) return null;
    return { host: s.slice(from + 1, to - 1).toLowerCase(), v6: true };
  }
  if (isIPv4(s, from, to) || isHostname(s, from, to)) return { host: s.slice(from, to).toLowerCase(), v6: false };
  return null;
}

/** RFC 3261 25.1: port = 1*DIGIT, here bounded to 0..65535 */
export function parsePort(s: string, from: number, to: number): number {
  if (to <= from || to - from > 5) return -1;
  let n = 0;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (!isDigit(c)) return -1;
    n = n * 10 + (c - 0x30);
  }
  return n <= 65535 ? n : -1;
}

/** indexOf bounded to [from, to): keeps repeated searches linear overall */
export function indexIn(s: string, ch: number, from: number, to: number): number {
  for (let i = from; i < to; i++) if (s.charCodeAt(i) === ch) return i;
  return -1;
}

/** Parses uri-parameters `;name[=value]...` in s[from..to), RFC 3261 25.1 (pname/pvalue = paramchar). */
function uriParams(s: string, from: number, to: number, out: Map<string, string | null>): boolean {
  let i = from;
  while (i < to) {
    if (s.charCodeAt(i) !== 0x3b) return false;
    i++;
    let e = s.indexOf(';', i);
    if (e < 0 || e > to) e = to;
    const eq = indexIn(s, 0x3d, i, e);
    if (eq >= 0) {
      if (eq === i || eq + 1 === e) return false;
      if (!validChars(s, i, eq, PARAMCHAR) || !validChars(s, eq + 1, e, PARAMCHAR)) return false;
      out.set(s.slice(i, eq).toLowerCase(), s.slice(eq + 1, e));
    } else {
      if (e === i || !validChars(s, i, e, PARAMCHAR)) return false;
      out.set(s.slice(i, e).toLowerCase(), null);
    }
    i = e;
  }
  return true;
}

/** RFC 3261 19.1.1 / 25.1 SIP-URI, SIPS-URI; RFC 3966 tel (number kept in `user`); other schemes
 *  come back as {scheme, raw, host: ''} so that a later stage can answer 416. */
export function parseUri(text: string): SipUri | null {
  const s = text;
  const n = s.length;
  if (n === 0 || !isAlpha(s.charCodeAt(0))) return null;
  let i = 1;
  while (i < n && SCHEME[s.charCodeAt(i) & 0xff] === 1 && s.charCodeAt(i) < 0x100) i++;
  if (i >= n || s.charCodeAt(i) !== 0x3a) return null;
  const scheme = s.slice(0, i).toLowerCase();
  const rs = i + 1;
  // no whitespace or controls anywhere in a URI (RFC 3986 2; RFC 3261 25.1 has no LWS inside)
  for (let k = rs; k < n; k++) {
    const c = s.charCodeAt(k);
    if (c <= 0x20 || c >= 0x7f || c === 0x3c || c === 0x3e || c === 0x22) return null;
  }
  if (rs === n) return null;
  if (scheme === 'sip' || scheme === 'sips') return sipUri(s, scheme, rs);
  if (scheme === 'tel') {
    // RFC 3966 3: telephone-subscriber = global-number / local-number, then ;par
    let e = s.indexOf(';', rs);
    if (e < 0) e = n;
    if (e === rs || !validChars(s, rs, e, TELCHAR)) return null;
    const params = new Map<string, string | null>();
    if (!uriParams(s, e, n, params)) return null;
    return { scheme, user: s.slice(rs, e), host: '', isIPv6: false, params, raw: s };
  }
  return { scheme, host: '', isIPv6: false, params: NO_PARAMS, raw: s };
}

function sipUri(s: string, scheme: string, rs: number): SipUri | null {
  const n = s.length;
  // userinfo ends at the only '@' (RFC 3261 25.1: '@' is never legal unescaped elsewhere); the user
  // part may contain ';' and '?' (user-unreserved, RFC 4475 semiuri)
  const at = s.indexOf('@', rs);
  let user: string | undefined, password: string | undefined;
  let hs = rs;
  if (at >= 0) {
    let colon = s.indexOf(':', rs);
    if (colon > at) colon = -1;
    const ue = colon >= 0 ? colon : at;
    // RFC 3261 25.1: userinfo = ( user / telephone-subscriber ) [ ":" password ] "@"; user is 1*
    if (ue === rs || !validChars(s, rs, ue, USER)) return null;
    user = s.slice(rs, ue);
    if (colon >= 0) {
      if (!validChars(s, colon + 1, at, PASSWORD)) return null;
      password = s.slice(colon + 1, at);
    }
    hs = at + 1;
  }
  // hostport ends at ';' or '?' (neither is legal in host or port)
  let he = hs;
  if (he < n && s.charCodeAt(he) === 0x5b) {
    const rb = s.indexOf(']', he);
    if (rb < 0) return null;
    he = rb + 1;
  }
  while (he < n) {
    const c = s.charCodeAt(he);
    if (c === 0x3b || c === 0x3f || c === 0x3a) break;
    he++;
  }
  const h = parseHost(s, hs, he);
  if (h === null) return null;
  let port: number | undefined;
  let k = he;
  if (k < n && s.charCodeAt(k) === 0x3a) {
    let pe = k + 1;
    while (pe < n && isDigit(s.charCodeAt(pe))) pe++;
    const pn = parsePort(s, k + 1, pe);
    if (pn < 0) return null;
    port = pn;
    k = pe;
  }
  let q = s.indexOf('?', k);
  if (q < 0) q = n;
  const params = new Map<string, string | null>();
  if (!uriParams(s, k, q, params)) return null;
  let headers: string | undefined;
  if (q < n) {
    // RFC 3261 25.1: headers = "?" header *( "&" header ); header = hname "=" hvalue
    headers = s.slice(q + 1);
    for (let b = q + 1; b <= n;) {
      let e = s.indexOf('&', b);
      if (e < 0) e = n;
      const eq = indexIn(s, 0x3d, b, e);
      if (eq <= b) return null;
      if (!validChars(s, b, eq, HNVCHAR) || !validChars(s, eq + 1, e, HNVCHAR)) return null;
      b = e + 1;
    }
  }
  const out: { -readonly [K in keyof SipUri]: SipUri[K] } = { scheme, host: h.host, isIPv6: h.v6, params, raw: s };
  if (user !== undefined) out.user = user;
  if (password !== undefined) out.password = password;
  if (port !== undefined) out.port = port;
  if (headers !== undefined) out.headers = headers;
  return out;
}

/** RFC 3261 19.1.4: a URI user part compares with %HH escapes decoded (case-sensitive). */
export function decodeUser(user: string): string {
  if (user.indexOf('%') < 0) return user;
  let out = '';
  for (let i = 0; i < user.length; i++) {
    const c = user.charCodeAt(i);
    if (c === 0x25 && i + 2 < user.length) {
      const hex = user.slice(i + 1, i + 3);
      if (/^[0-9a-fA-F]{2}$/.test(hex)) { out += String.fromCharCode(parseInt(hex, 16)); i += 2; continue; }
    }
    out += user[i];
  }
  return out;
}
