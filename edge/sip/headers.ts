// Typed, lazily memoised access to header values (RFC 3261 20, grammar of 25.1).
// Every function is total: it never throws; `undefined` means absent, `null` means present but
// unparsable (the caller turns that into its own reason code). Results are memoised in msg.cache
// under "h:"-prefixed keys, so a stage that asks twice pays once.
import type { CSeq, HeaderField, NameAddr, SipMessage, SipUri, Via } from './types';
import { TOKEN, WORD, isDigit, isToken } from './chars';
import { canonicalName as canon } from './names';
import { isIPv4, isIPv6, parseHost, parsePort, parseUri as parseUriImpl } from './uri';

/** canonical long lower-case name for a header name as received (compact forms expanded):
 *  v via, f from, t to, i call-id, m contact, l content-length, c content-type, k supported,
 *  s subject, e content-encoding, o event, u allow-events, r refer-to, b referred-by,
 *  x session-expires, y identity, a accept-contact, j reject-contact, d request-disposition. */
export function canonicalName(rawName: string): string {
  return canon(rawName);
}

const EMPTY: readonly HeaderField[] = Object.freeze([]);

/** stands for a memoised `undefined` (absent header) in the Map */
const UNDEF = Symbol('undefined');

/** per-name index of the header fields, built once per message */
function index(msg: SipMessage): Map<string, HeaderField[]> {
  const c = msg.cache;
  let idx = c.get('h:idx') as Map<string, HeaderField[]> | undefined;
  if (idx === undefined) {
    idx = new Map();
    for (const h of msg.headers) {
      const list = idx.get(h.name);
      if (list === undefined) idx.set(h.name, [h]);
      else list.push(h);
    }
    c.set('h:idx', idx);
  }
  return idx;
}

function fieldsOf(msg: SipMessage, name: string): readonly HeaderField[] {
  return index(msg).get(canon(name)) ?? EMPTY;
}

/** all header fields with this canonical name, in order */
export function fields(msg: SipMessage, name: string): HeaderField[] {
  return fieldsOf(msg, name).slice();
}
/** value of the first field with this name */
export function first(msg: SipMessage, name: string): string | undefined {
  const f = fieldsOf(msg, name);
  return f.length > 0 ? (f[0] as HeaderField).value : undefined;
}
/** number of header lines with this name */
export function count(msg: SipMessage, name: string): number {
  return fieldsOf(msg, name).length;
}

/** memoise `compute(msg, arg)` under key (undefined results are memoised too). Keys are
 *  constants and compute functions module-level, so a cache hit allocates nothing. */
function memo<T, A>(msg: SipMessage, key: string, compute: (msg: SipMessage, arg: A) => T, arg: A): T {
  const c = msg.cache;
  const v = c.get(key);
  if (v !== undefined) return (v === UNDEF ? undefined : v) as T;
  const r = compute(msg, arg);
  c.set(key, r === undefined ? UNDEF : r);
  return r;
}

const isWs = (c: number): boolean => c === 0x20 || c === 0x09;

/**
 * Index of the first top-level comma of a header value, or -1: commas inside a quoted-string
 * (with quoted-pair escapes, RFC 3261 25.1) or inside <...> do not separate values (RFC 3261 7.3.1).
 */
export function firstTopComma(value: string, from = 0): number {
  let inQuote = false, inAngle = false;
  for (let i = from; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (inQuote) {
      if (c === 0x5c) i++; // quoted-pair
      else if (c === 0x22) inQuote = false;
    } else if (c === 0x22) inQuote = true;
    else if (c === 0x3c) inAngle = true;
    else if (c === 0x3e) inAngle = false;
    else if (c === 0x2c && !inAngle) return i;
  }
  return -1;
}

/** split a header value on top-level commas (not inside quotes, <>, or after a backslash in quotes);
 *  parts are trimmed; an all-whitespace value gives [] */
export function splitCommaList(value: string): string[] {
  const out: string[] = [];
  let start = 0;
  while (true) {
    const e = firstTopComma(value, start);
    const part = value.slice(start, e < 0 ? value.length : e).trim();
    out.push(part);
    if (e < 0) break;
    start = e + 1;
  }
  if (out.length === 1 && out[0] === '') return [];
  return out;
}

export function parseUri(text: string): SipUri | null {
  return parseUriImpl(text);
}

/** end (index just past the closing DQUOTE) of the quoted-string starting at s[i] === '"', or -1 */
function quotedEnd(s: string, i: number, n: number): number {
  for (let k = i + 1; k < n; k++) {
    const c = s.charCodeAt(k);
    if (c === 0x5c) {
      // RFC 3261 25.1: quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
      const q = s.charCodeAt(k + 1);
      if (k + 1 >= n || q === 0x0a || q === 0x0d || q > 0x7f) return -1;
      k++;
    } else if (c === 0x22) return k + 1;
  }
  return -1;
}

function unquote(s: string, from: number, to: number): string {
  if (s.indexOf('\\', from) < 0 || s.indexOf('\\', from) >= to) return s.slice(from, to);
  let out = '';
  for (let k = from; k < to; k++) {
    if (s.charCodeAt(k) === 0x5c) k++;
    out += s[k] ?? '';
  }
  return out;
}

// gen-value = token / host / quoted-string (RFC 3261 25.1): token chars plus the IPv6 reference chars
const isValueChar = (c: number): boolean => (c < 0x100 && TOKEN[c] === 1) || c === 0x5b || c === 0x5d || c === 0x3a;

/**
 * Parses `*( SEMI generic-param )` from s[i..n) into out (RFC 3261 25.1; SEMI and EQUAL allow SWS
 * around them, RFC 4475 wsinv). Names lower-cased; value null when there is no "=value";
 * the first occurrence of a name wins. Returns false on any defect.
 */
function genericParams(s: string, i: number, n: number, out: Map<string, string | null>): boolean {
  while (true) {
    while (i < n && isWs(s.charCodeAt(i))) i++;
    if (i >= n) return true;
    if (s.charCodeAt(i) !== 0x3b) return false;
    i++;
    while (i < n && isWs(s.charCodeAt(i))) i++;
    const ns = i;
    while (i < n && s.charCodeAt(i) < 0x100 && TOKEN[s.charCodeAt(i)] === 1) i++;
    if (i === ns) return false;
    const name = s.slice(ns, i).toLowerCase();
    let j = i;
    while (j < n && isWs(s.charCodeAt(j))) j++;
    let value: string | null = null;
    if (j < n && s.charCodeAt(j) === 0x3d) {
      j++;
      while (j < n && isWs(s.charCodeAt(j))) j++;
      const vs = j;
      if (j < n && s.charCodeAt(j) === 0x22) {
        j = quotedEnd(s, j, n);
        if (j < 0) return false;
      } else {
        while (j < n && isValueChar(s.charCodeAt(j))) j++;
        if (j === vs) return false;
      }
      value = s.slice(vs, j);
      i = j;
    }
    if (!out.has(name)) out.set(name, value);
  }
}

/** RFC 3261 20.10 / 25.1: name-addr / addr-spec followed by header parameters. */
export function parseNameAddr(text: string): NameAddr | null {
  const s = text;
  let n = s.length;
  let i = 0;
  while (i < n && isWs(s.charCodeAt(i))) i++;
  while (n > i && isWs(s.charCodeAt(n - 1))) n--;
  if (i >= n) return null;
  let displayName: string | undefined;
  let uriRaw: string;
  let after: number;
  const c0 = s.charCodeAt(i);
  let lt = -1;
  if (c0 === 0x22) {
    // display-name = quoted-string
    const qe = quotedEnd(s, i, n);
    if (qe < 0) return null;
    displayName = unquote(s, i + 1, qe - 1);
    lt = qe;
    while (lt < n && isWs(s.charCodeAt(lt))) lt++;
    if (lt >= n || s.charCodeAt(lt) !== 0x3c) return null;
  } else {
    // display-name = *(token LWS): scan tokens and LWS up to a '<'; anything else means addr-spec
    let k = i;
    while (k < n) {
      const c = s.charCodeAt(k);
      if (c < 0x100 && (TOKEN[c] === 1 || isWs(c))) k++;
      else break;
    }
    if (k < n && s.charCodeAt(k) === 0x3c) {
      lt = k;
      const dn = s.slice(i, k).trim();
      if (dn.length > 0) displayName = dn.replace(/[ \t]+/g, ' ');
    }
  }
  if (lt >= 0) {
    const gt = s.indexOf('>', lt + 1);
    if (gt < 0) return null;
    uriRaw = s.slice(lt + 1, gt);
    after = gt + 1;
  } else {
    // RFC 3261 20.10: without <>, the URI cannot carry ',', '?' or ';': a ';' starts header params
    let e = s.indexOf(';', i);
    if (e < 0 || e > n) e = n;
    uriRaw = s.slice(i, e);
    let t = uriRaw.length;
    while (t > 0 && isWs(uriRaw.charCodeAt(t - 1))) t--;
    uriRaw = uriRaw.slice(0, t);
    if (uriRaw.indexOf('?') >= 0 || uriRaw.indexOf(',') >= 0) return null;
    after = e;
  }
  const uri = parseUriImpl(uriRaw);
  if (uri === null) return null;
  const params = new Map<string, string | null>();
  if (!genericParams(s, after, n, params)) return null;
  const out: { -readonly [K in keyof NameAddr]: NameAddr[K] } = { uri, uriRaw, params, raw: s.slice(i, n) };
  if (displayName !== undefined) out.displayName = displayName;
  return out;
}

/** RFC 3261 20.42 / 25.1: via-parm = sent-protocol LWS sent-by *( SEMI via-params ), with LWS
 *  allowed around "/" and ":" (SLASH, COLON; RFC 4475 wsinv). */
export function parseVia(text: string): Via | null {
  const s = text;
  let n = s.length;
  let i = 0;
  while (i < n && isWs(s.charCodeAt(i))) i++;
  while (n > i && isWs(s.charCodeAt(n - 1))) n--;
  const tok = (): string | null => {
    const st = i;
    while (i < n && s.charCodeAt(i) < 0x100 && TOKEN[s.charCodeAt(i)] === 1) i++;
    return i > st ? s.slice(st, i) : null;
  };
  const ws = (): number => { const st = i; while (i < n && isWs(s.charCodeAt(i))) i++; return i - st; };
  const slash = (): boolean => { ws(); if (i >= n || s.charCodeAt(i) !== 0x2f) return false; i++; ws(); return true; };
  const pname = tok();
  if (pname === null || !slash()) return null;
  const pver = tok();
  if (pver === null || !slash()) return null;
  const transport = tok();
  if (transport === null) return null;
  if (ws() === 0) return null;
  // sent-by = host [ COLON port ]
  const hs = i;
  if (i < n && s.charCodeAt(i) === 0x5b) {
    const rb = s.indexOf(']', i);
    if (rb < 0 || rb >= n) return null;
    i = rb + 1;
  } else {
    while (i < n) {
      const c = s.charCodeAt(i);
      if (c === 0x2d || c === 0x2e || (c < 0x100 && TOKEN[c] === 1 && c !== 0x25)) i++;
      else break;
    }
  }
  const h = parseHost(s, hs, i);
  if (h === null) return null;
  let port: number | undefined;
  const save = i;
  ws();
  if (i < n && s.charCodeAt(i) === 0x3a) {
    i++;
    ws();
    const ps = i;
    while (i < n && isDigit(s.charCodeAt(i))) i++;
    const p = parsePort(s, ps, i);
    if (p < 0) return null;
    port = p;
  } else i = save;
  const params = new Map<string, string | null>();
  if (!genericParams(s, i, n, params)) return null;
  if (!viaParamsValid(params)) return null;
  const branch = params.get('branch');
  const out: { -readonly [K in keyof Via]: Via[K] } = {
    protocol: pname + '/' + pver, transport: transport.toUpperCase(), host: h.host, params, raw: s.slice(0, n).trimStart(),
  };
  if (port !== undefined) out.port = port;
  if (branch !== undefined && branch !== null) out.branch = branch;
  return out;
}

/** RFC 3261 20.42 via-params value grammar; RFC 3581 3 rport = "rport" [EQUAL 1*DIGIT] */
function viaParamsValid(p: ReadonlyMap<string, string | null>): boolean {
  const ttl = p.get('ttl');
  if (ttl !== undefined && (ttl === null || ttl.length > 3 || parsePort(ttl, 0, ttl.length) < 0 || Number(ttl) > 255)) return false;
  const rport = p.get('rport');
  if (rport !== undefined && rport !== null && parsePort(rport, 0, rport.length) < 0) return false;
  const received = p.get('received');
  if (received !== undefined) {
    if (received === null) return false;
    // RFC 3261: received = IPv4address / IPv6address; RFC 5118 4.5 shows it bracket-free, some
    // stacks bracket it: accept both
    const r = received.charCodeAt(0) === 0x5b && received.charCodeAt(received.length - 1) === 0x5d ? received.slice(1, -1) : received;
    if (!isIPv4(r) && !isIPv6(r)) return false;
  }
  const maddr = p.get('maddr');
  if (maddr !== undefined && (maddr === null || parseHost(maddr, 0, maddr.length) === null)) return false;
  const branch = p.get('branch');
  if (branch !== undefined && (branch === null || !isToken(branch, 0, branch.length))) return false;
  return true;
}

function parseAllVias(msg: SipMessage): Via[] | null {
  const out: Via[] = [];
  // the top Via, when already asked for, is not parsed a second time
  const top = msg.cache.get('h:topVia') as Via | null | undefined | typeof UNDEF;
  const reuse = top !== undefined && top !== null && top !== UNDEF ? top : null;
  for (const f of fieldsOf(msg, 'via')) {
    for (const part of splitCommaList(f.value)) {
      const v = out.length === 0 && reuse !== null ? reuse : parseVia(part);
      if (v === null) return null;
      out.push(v);
    }
  }
  return out;
}

/** all Via values, across all Via lines, top first; null when any value is unparsable */
export function vias(msg: SipMessage): Via[] | null {
  return memo(msg, 'h:vias', parseAllVias, undefined);
}

function parseTopVia(msg: SipMessage): Via | null | undefined {
  // the full list, when some stage already asked for it, holds the top Via parsed
  // (a null list may come from a bad lower Via, an empty one from an empty value: neither says
  // what the top one is)
  const all = msg.cache.get('h:vias') as Via[] | null | undefined;
  if (all !== undefined && all !== null && all.length > 0) return all[0];
  const f = fieldsOf(msg, 'via')[0];
  if (f === undefined) return undefined;
  const e = firstTopComma(f.value);
  return parseVia(e < 0 ? f.value : f.value.slice(0, e));
}

export function topVia(msg: SipMessage): Via | null | undefined {
  return memo(msg, 'h:topVia', parseTopVia, undefined);
}

function parseFirstNameAddr(msg: SipMessage, name: string): NameAddr | null | undefined {
  const f = fieldsOf(msg, name)[0];
  return f === undefined ? undefined : parseNameAddr(f.value);
}

export function from(msg: SipMessage): NameAddr | null | undefined {
  return memo(msg, 'h:from', parseFirstNameAddr, 'from');
}
export function to(msg: SipMessage): NameAddr | null | undefined {
  return memo(msg, 'h:to', parseFirstNameAddr, 'to');
}

/** RFC 3261 25.1: callid = word [ "@" word ] */
function computeCallId(msg: SipMessage): string | null | undefined {
  const v = first(msg, 'call-id');
  if (v === undefined) return undefined;
  let at = -1;
  if (v.length === 0) return null;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c === 0x40) {
      if (at >= 0 || i === 0 || i === v.length - 1) return null;
      at = i;
    } else if (c > 0xff || WORD[c] === 0) return null;
  }
  return v;
}
export function callId(msg: SipMessage): string | null | undefined {
  return memo(msg, 'h:call-id', computeCallId, undefined);
}

/** 1*DIGIT, at most maxDigits digits; -1 when not */
function digits(v: string, from: number, to: number, maxDigits: number): number {
  if (to <= from || to - from > maxDigits) return -1;
  let n = 0;
  for (let i = from; i < to; i++) {
    const c = v.charCodeAt(i);
    if (!isDigit(c)) return -1;
    n = n * 10 + (c - 0x30);
  }
  return n;
}

/** RFC 3261 20.16 / 25.1: CSeq = 1*DIGIT LWS Method. The number comes back even when it is not
 *  below 2**31 (8.1.1.5) as long as it has at most 10 digits: the sanity stage judges the range. */
function computeCseq(msg: SipMessage): CSeq | null | undefined {
  const v = first(msg, 'cseq');
  if (v === undefined) return undefined;
  let i = 0;
  while (i < v.length && isDigit(v.charCodeAt(i))) i++;
  const seq = digits(v, 0, i, 10);
  if (seq < 0) return null;
  const ms = i;
  while (i < v.length && isWs(v.charCodeAt(i))) i++;
  if (i === ms) return null;
  if (!isToken(v, i, v.length)) return null;
  return { seq, method: v.slice(i) };
}
export function cseq(msg: SipMessage): CSeq | null | undefined {
  return memo(msg, 'h:cseq', computeCseq, undefined);
}

/** RFC 3261 20.22: Max-Forwards = 1*DIGIT; values over 255 are unparsable here (null) */
function computeMaxForwards(msg: SipMessage): number | null | undefined {
  const v = first(msg, 'max-forwards');
  if (v === undefined) return undefined;
  if (v.length === 0) return null;
  let n = 0;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (!isDigit(c)) return null;
    n = n * 10 + (c - 0x30);
    if (n > 255) return null;
  }
  return n;
}
export function maxForwards(msg: SipMessage): number | null | undefined {
  return memo(msg, 'h:max-forwards', computeMaxForwards, undefined);
}

/** RFC 3261 20.14: Content-Length = 1*DIGIT (at most 10 digits) */
function computeContentLength(msg: SipMessage): number | null | undefined {
  const v = first(msg, 'content-length');
  if (v === undefined) return undefined;
  const n = digits(v, 0, v.length, 10);
  return n < 0 ? null : n;
}
export function contentLength(msg: SipMessage): number | null | undefined {
  return memo(msg, 'h:content-length', computeContentLength, undefined);
}

/** RFC 3261 20.19: Expires = delta-seconds, between 0 and 2**32-1; other values are null */
function computeExpires(msg: SipMessage): number | null | undefined {
  const v = first(msg, 'expires');
  if (v === undefined) return undefined;
  let s = 0;
  while (s < v.length - 1 && v.charCodeAt(s) === 0x30) s++; // leading zeros are legal 1*DIGIT
  const n = digits(v, s, v.length, 10);
  return n < 0 || n > 4294967295 ? null : n;
}
export function expires(msg: SipMessage): number | null | undefined {
  return memo(msg, 'h:expires', computeExpires, undefined);
}

const LIST_KEYS: Record<string, string> = { route: 'h:list:route', 'record-route': 'h:list:record-route', path: 'h:list:path', contact: 'h:list:contact' };

function nameAddrList(msg: SipMessage, name: 'route' | 'record-route' | 'path' | 'contact'): NameAddr[] | null | undefined {
  return memo(msg, LIST_KEYS[name] as string, parseNameAddrList, name);
}

function parseNameAddrList(msg: SipMessage, name: string): NameAddr[] | null | undefined {
  const fs = fieldsOf(msg, name);
  if (fs.length === 0) return undefined;
  const out: NameAddr[] = [];
  for (const f of fs) {
    const parts = splitCommaList(f.value);
    if (parts.length === 0) return null;
    for (const part of parts) {
      const na = parseNameAddr(part);
      if (na === null) return null;
      out.push(na);
    }
  }
  return out;
}

/** all Route / Record-Route / Path / Contact values across lines, in order; null if any unparsable. */
export function routes(msg: SipMessage): NameAddr[] | null | undefined {
  return nameAddrList(msg, 'route');
}
export function recordRoutes(msg: SipMessage): NameAddr[] | null | undefined {
  return nameAddrList(msg, 'record-route');
}
export function paths(msg: SipMessage): NameAddr[] | null | undefined {
  return nameAddrList(msg, 'path');
}
/** Contact "*" (RFC 3261 10.2.2: alone, one line) is returned as [] with msg.cache.contactStar = true;
 *  "*" mixed with other values is unparsable (null). */
function computeContacts(msg: SipMessage): NameAddr[] | null | undefined {
  const fs = fieldsOf(msg, 'contact');
  const c = msg.cache;
  c.set('contactStar', false);
  if (fs.length === 0) return undefined;
  let star = false;
  for (const f of fs) if (f.value === '*') star = true;
  if (star) {
    if (fs.length !== 1) return null;
    c.set('contactStar', true);
    return [];
  }
  return nameAddrList(msg, 'contact');
}
export function contacts(msg: SipMessage): NameAddr[] | null | undefined {
  return memo(msg, 'h:contacts', computeContacts, undefined);
}

const TAG_KEYS = { 'proxy-require': 'h:tags:proxy-require', require: 'h:tags:require', supported: 'h:tags:supported' } as const;

function parseOptionTags(msg: SipMessage, name: string): string[] {
  const out: string[] = [];
  for (const f of fieldsOf(msg, name)) {
    for (const part of splitCommaList(f.value)) if (part.length > 0) out.push(part.toLowerCase());
  }
  return out;
}

/** option tags from Proxy-Require / Require / Supported, lower-case (RFC 3261 20.29, 20.32, 20.37) */
export function optionTags(msg: SipMessage, name: 'proxy-require' | 'require' | 'supported'): string[] {
  const tags = memo(msg, TAG_KEYS[name], parseOptionTags, name);
  return tags.slice();
}

function parseRequestUri(msg: SipMessage): SipUri | null {
  return msg.kind === 'request' ? parseUriImpl(msg.uri) : null;
}

/** the Request-URI of a request, parsed (memoised); null for responses and unparsable URIs */
export function requestUri(msg: SipMessage): SipUri | null {
  if (msg.kind !== 'request') return null;
  return memo(msg, 'h:ruri', parseRequestUri, undefined);
}
