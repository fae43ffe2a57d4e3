// Strict, linear-time, byte-faithful SIP parser (RFC 3261 7, 18.3, 25; RFC 4475 torture cases).
//
// One pass over the head bytes: every byte of the start line and header section is looked at a
// bounded number of times, and nothing is scanned beyond maxMessageBytes. Header values are
// decoded as latin1 so that string offsets are byte offsets. The function is total: defects come
// back as a typed reason, never as an exception.
import type { HeaderField, SipMessage } from './types';
import { TOKEN, isDigit } from './chars';
import { canonicalName } from './names';

export interface ParseLimits {
  /** whole message, start line + headers + body (default 16384) */
  maxMessageBytes: number;
  /** Request-URI length (default 512) -> 414 */
  maxRequestUriBytes: number;
  /** one header line including folded continuation lines (default 4096) */
  maxHeaderLineBytes: number;
  /** number of header lines (default 100) */
  maxHeaders: number;
}

export const DEFAULT_LIMITS: ParseLimits = {
  maxMessageBytes: 16384,
  maxRequestUriBytes: 512,
  maxHeaderLineBytes: 4096,
  maxHeaders: 100,
};

/** Closed list of parse failure reasons (stable: used in tests, metrics and logs). */
export type ParseReason =
  | 'empty'                    // nothing but whitespace
  | 'start_line_invalid'       // not "METHOD SP URI SP SIP/x.y" nor "SIP/x.y SP 3DIGIT SP reason"
  | 'method_invalid'           // method is not an RFC 3261 token
  | 'version_unsupported'      // SIP version other than 2.0 -> 505 (RFC 3261 8.2.2? / 21.5.6)
  | 'status_invalid'           // response status not 3 digits 100..699
  | 'request_uri_invalid'      // Request-URI contains whitespace/control bytes or is empty
  | 'request_uri_too_long'     // -> 414
  | 'header_line_too_long'     // a header line (with folding) over the limit
  | 'too_many_headers'
  | 'message_too_large'        // -> 413
  | 'headers_unterminated'     // no empty line ending the header section
  | 'header_syntax'            // no colon, empty or invalid header name, or folding before the first header
  | 'control_char'             // NUL, bare CR, bare LF or another control byte (except HT) in the head
  | 'content_length_invalid'   // non-numeric, negative, too large
  | 'content_length_duplicate' // more than one Content-Length (or one with several values)
  | 'content_length_missing'   // stream transports: RFC 3261 18.3 requires it
  | 'body_truncated'           // fewer body bytes than Content-Length announces (RFC 3261 18.3)
  | 'trailing_bytes';          // WebSocket: bytes after the message in its frame (RFC 7118 5: one message per frame)

/** All reason codes, for metric label pre-declaration. */
export const PARSE_REASONS: readonly ParseReason[] = [
  'empty', 'start_line_invalid', 'method_invalid', 'version_unsupported', 'status_invalid',
  'request_uri_invalid', 'request_uri_too_long', 'header_line_too_long', 'too_many_headers',
  'message_too_large', 'headers_unterminated', 'header_syntax', 'control_char',
  'content_length_invalid', 'content_length_duplicate', 'content_length_missing', 'body_truncated',
  'trailing_bytes',
];

export type ParseResult =
  | { readonly ok: true; readonly msg: SipMessage }
  | {
      readonly ok: false;
      readonly reason: ParseReason;
      /** the status a request with this defect deserves (400, 413, 414, 505) */
      readonly status: number;
      /** the message as far as it could be tokenized (start line and header fields), when it
       *  could: lets the caller build an error reply from Via/From/To/Call-ID/CSeq. */
      readonly partial?: SipMessage;
    };

export interface ParseOptions {
  limits?: ParseLimits;
  /** 'datagram': bytes past Content-Length are discarded, missing Content-Length means "to the end".
   *  'stream': the buffer holds exactly one framed message, Content-Length is mandatory.
   *  'message': one WebSocket message (RFC 7118 5): like a datagram, the frame delimits the
   *  message (no Content-Length = to the end), but bytes past Content-Length are a second message
   *  or garbage in the same frame -> trailing_bytes (CR/LF padding alone is tolerated). */
  framing?: 'datagram' | 'stream' | 'message';
}

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HT = 0x09;
const COLON = 0x3a;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;

function statusFor(reason: ParseReason): number {
  switch (reason) {
    case 'message_too_large': return 413; // RFC 3261 21.4.11
    case 'request_uri_too_long': return 414; // RFC 3261 21.4.12
    case 'version_unsupported': return 505; // RFC 3261 21.5.6
    default: return 400;
  }
}

function fail(reason: ParseReason, partial?: SipMessage): ParseResult {
  return partial === undefined ? { ok: false, reason, status: statusFor(reason) } : { ok: false, reason, status: statusFor(reason), partial };
}

// Result slot of scanLine (module state: the parser is synchronous and re-entrant-free).
let lineBad = -1;

/**
 * Finds the CR of the CRLF ending the line that starts at `from`, looking no further than `end`.
 * Records in lineBad the first control byte (RFC 3261 25.1: the head is text with CRLF line ends;
 * NUL, bare CR, bare LF and other CTLs except HT are not allowed there). Returns -1 when no CRLF.
 * One exception, from the grammar itself: inside a quoted-string, a quoted-pair may escape any
 * byte but CR and LF (RFC 3261 25.1 quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)); RFC 4475
 * 3.1.1.2 (intmeth) is a valid message with escaped NUL, BEL and DEL in a display name.
 */
function scanLine(b: Buffer, from: number, end: number): number {
  lineBad = -1;
  let quoted = false;
  for (let i = from; i < end; i++) {
    const c = b[i] as number;
    if (quoted && c === BACKSLASH && i + 1 < end) {
      const n = b[i + 1] as number;
      if (n !== CR && n !== LF) { i++; continue; }
    }
    if (c === DQUOTE) { quoted = !quoted; continue; }
    if (c < 0x20 || c === 0x7f) {
      if (c === CR) {
        if (i + 1 < end && b[i + 1] === LF) return i;
        if (i + 1 >= end) return -1;
        if (lineBad < 0) lineBad = i;
      } else if (c !== HT && lineBad < 0) {
        lineBad = i;
      }
    }
  }
  return -1;
}

interface StartLine {
  kind: 'request' | 'response';
  method: string;
  uri: string;
  status: number;
  reason: string;
  version: string;
  /** defect that still leaves the start line understood (505, 414, bad URI) */
  soft: ParseReason | undefined;
}

/** RFC 3261 7.1 / 25.1: SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT ("SIP" is case-insensitive). */
function versionClass(s: string): 0 | 1 | 2 {
  // 0 = malformed, 1 = well-formed but not 2.0, 2 = SIP/2.0
  if (s.length < 7) return 0;
  const c0 = s.charCodeAt(0) | 0x20, c1 = s.charCodeAt(1) | 0x20, c2 = s.charCodeAt(2) | 0x20;
  if (c0 !== 0x73 || c1 !== 0x69 || c2 !== 0x70 || s.charCodeAt(3) !== 0x2f) return 0;
  let i = 4;
  const majStart = i;
  while (i < s.length && isDigit(s.charCodeAt(i))) i++;
  if (i === majStart || i >= s.length || s.charCodeAt(i) !== 0x2e) return 0;
  const major = s.slice(majStart, i);
  i++;
  const minStart = i;
  while (i < s.length && isDigit(s.charCodeAt(i))) i++;
  if (i === minStart || i !== s.length) return 0;
  const minor = s.slice(minStart, i);
  return major === '2' && minor === '0' ? 2 : 1;
}

let startErr: ParseReason = 'start_line_invalid';

/** Parses the start line; on a hard defect returns null and sets startErr. */
function parseStartLine(line: string, limits: ParseLimits): StartLine | null {
  // RFC 3261 7.2: Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
  if (line.length >= 4 && (line.charCodeAt(0) | 0x20) === 0x73 && (line.charCodeAt(1) | 0x20) === 0x69 &&
      (line.charCodeAt(2) | 0x20) === 0x70 && line.charCodeAt(3) === 0x2f) {
    let sp = line.indexOf(' ');
    if (sp < 0) sp = line.length;
    const version = line.slice(0, sp);
    const vc = versionClass(version);
    if (vc === 0) { startErr = 'start_line_invalid'; return null; }
    if (sp + 4 > line.length) { startErr = 'start_line_invalid'; return null; }
    const d0 = line.charCodeAt(sp + 1), d1 = line.charCodeAt(sp + 2), d2 = line.charCodeAt(sp + 3);
    if (!isDigit(d0)) { startErr = d0 === SP || d0 === HT ? 'start_line_invalid' : 'status_invalid'; return null; }
    // RFC 3261 25.1: Status-Code = 3DIGIT; 21: classes 1xx..6xx
    if (!isDigit(d1) || !isDigit(d2)) { startErr = 'status_invalid'; return null; }
    const after = sp + 4;
    if (after < line.length) {
      const c = line.charCodeAt(after);
      if (isDigit(c)) { startErr = 'status_invalid'; return null; }
      if (c !== SP) { startErr = 'start_line_invalid'; return null; }
    }
    const status = (d0 - 0x30) * 100 + (d1 - 0x30) * 10 + (d2 - 0x30);
    if (status < 100 || status > 699) { startErr = 'status_invalid'; return null; }
    // RFC 4475 3.1.1.13: an empty Reason-Phrase after the SP is valid; a missing SP+phrase is tolerated.
    const reason = after < line.length ? line.slice(after + 1) : '';
    return { kind: 'response', method: '', uri: '', status, reason, version, soft: vc === 1 ? 'version_unsupported' : undefined };
  }
  // RFC 3261 7.1: Request-Line = Method SP Request-URI SP SIP-Version CRLF, exactly one SP each
  // (RFC 4475 lwsstart, trws and lwsruri are invalid).
  const a = line.indexOf(' ');
  if (a < 0) { startErr = 'start_line_invalid'; return null; }
  if (a === 0) { startErr = 'start_line_invalid'; return null; }
  for (let i = 0; i < a; i++) {
    const c = line.charCodeAt(i);
    if (TOKEN[c] === 0) { startErr = c === HT ? 'start_line_invalid' : 'method_invalid'; return null; }
  }
  const b = line.lastIndexOf(' ');
  if (b === a) { startErr = 'start_line_invalid'; return null; }
  const version = line.slice(b + 1);
  const vc = versionClass(version);
  if (vc === 0) { startErr = 'start_line_invalid'; return null; }
  const uri = line.slice(a + 1, b);
  if (uri.length === 0) { startErr = 'start_line_invalid'; return null; }
  const c0 = uri.charCodeAt(0), cl = uri.charCodeAt(uri.length - 1);
  // an extra SP next to the URI is a start-line defect (RFC 4475 lwsruri), not a URI one
  if (c0 === SP || cl === SP) { startErr = 'start_line_invalid'; return null; }
  let soft: ParseReason | undefined;
  if (vc === 1) soft = 'version_unsupported';
  else if (uri.length > limits.maxRequestUriBytes) soft = 'request_uri_too_long';
  else if (!plausibleRequestUri(uri)) soft = 'request_uri_invalid';
  return { kind: 'request', method: line.slice(0, a), uri, status: 0, reason: '', version, soft };
}

/** Re-reads a start line splitting on runs of SP/HT; succeeds only when that yields a well-formed
 *  line, which then carries the soft defect start_line_invalid. */
function lenientStartLine(line: string, limits: ParseLimits): StartLine | null {
  const parts: string[] = [];
  let i = 0;
  while (i < line.length && parts.length < 4) {
    while (i < line.length && (line.charCodeAt(i) === SP || line.charCodeAt(i) === HT)) i++;
    const st = i;
    while (i < line.length && line.charCodeAt(i) !== SP && line.charCodeAt(i) !== HT) i++;
    if (i > st) parts.push(line.slice(st, i));
  }
  if (parts.length !== 3) return null;
  const strict = parseStartLine(parts.join(' '), limits);
  if (strict === null || strict.kind !== 'request') return null;
  strict.soft = 'start_line_invalid';
  return strict;
}

/** RFC 3261 25.1: Request-URI = SIP-URI / SIPS-URI / absoluteURI, all `scheme ":" ...` with no
 *  whitespace, controls or angle brackets (RFC 4475 ltgtruri, escruri). */
function plausibleRequestUri(uri: string): boolean {
  const c0 = uri.charCodeAt(0);
  if (!((c0 >= 0x41 && c0 <= 0x5a) || (c0 >= 0x61 && c0 <= 0x7a))) return false;
  let colon = -1;
  for (let i = 0; i < uri.length; i++) {
    const c = uri.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f || c === 0x3c || c === 0x3e) return false;
    if (colon < 0) {
      if (c === COLON) { colon = i; continue; }
      const sch = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x2b || c === 0x2d || c === 0x2e;
      if (!sch) return false;
    }
  }
  return colon > 0 && colon < uri.length - 1;
}

/**
 * Builds the value of a header field: from `vs` (just after the colon) to `ve` (the CR of the
 * final CRLF). RFC 3261 7.3.1: folding (LWS containing CRLF) is equivalent to a single SP; leading
 * and trailing LWS are not part of the value.
 */
function fieldValue(b: Buffer, vs: number, ve: number, folded: boolean): string {
  while (vs < ve && (b[vs] === SP || b[vs] === HT || b[vs] === CR || b[vs] === LF)) vs++;
  while (ve > vs && (b[ve - 1] === SP || b[ve - 1] === HT || b[ve - 1] === CR || b[ve - 1] === LF)) ve--;
  if (!folded) return b.toString('latin1', vs, ve);
  let out = '';
  let seg = vs;
  let i = vs;
  while (i < ve) {
    if (b[i] === CR && b[i + 1] === LF) {
      // collapse the whole LWS run around the CRLF into one SP
      let ws = i;
      while (ws > seg && (b[ws - 1] === SP || b[ws - 1] === HT)) ws--;
      out += b.toString('latin1', seg, ws) + ' ';
      i += 2;
      while (i < ve && (b[i] === SP || b[i] === HT)) i++;
      seg = i;
    } else {
      i++;
    }
  }
  return out + b.toString('latin1', seg, ve);
}

/** RFC 3261 20.14: Content-Length = 1*DIGIT; >10 digits is refused rather than trusted. */
function contentLengthValue(v: string): number {
  if (v.length === 0 || v.length > 10) return -1;
  let n = 0;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return -1;
    n = n * 10 + (c - 0x30);
  }
  return n;
}

/** Never throws on any input. */
export function parseMessage(raw: Buffer, opts?: ParseOptions): ParseResult {
  try {
    return parse(raw, opts?.limits ?? DEFAULT_LIMITS, opts?.framing ?? 'datagram');
  } catch {
    // Last resort only: parse() is written to be total; the fuzz tests keep it that way.
    return { ok: false, reason: 'start_line_invalid', status: 400 };
  }
}

function parse(raw: Buffer, limits: ParseLimits, framing: 'datagram' | 'stream' | 'message'): ParseResult {
  const len = raw.length;
  // Scan for the end of the head only within the size cap (+2 for a CRLF straddling it).
  const scanEnd = Math.min(len, limits.maxMessageBytes);
  let p = 0;
  // RFC 3261 7.5: CRLFs before the start line are ignored (keepalives on streams).
  while (p + 1 < scanEnd && raw[p] === CR && raw[p + 1] === LF) p += 2;
  let allWs = true;
  for (let i = p; i < scanEnd; i++) {
    const c = raw[i];
    if (c !== CR && c !== LF && c !== SP && c !== HT) { allWs = false; break; }
  }
  if (allWs) return len > limits.maxMessageBytes ? fail('message_too_large') : fail('empty');

  const slEnd = scanLine(raw, p, scanEnd);
  if (slEnd < 0) {
    if (len > limits.maxMessageBytes) return fail('message_too_large');
    return fail(lineBad >= 0 ? 'control_char' : 'headers_unterminated');
  }
  if (lineBad >= 0) return fail('control_char');
  const slText = raw.toString('latin1', p, slEnd);
  let sl = parseStartLine(slText, limits);
  if (sl === null) {
    // Extra whitespace between otherwise valid elements (RFC 4475 lwsstart, trws) is still a
    // start_line_invalid, but the line is understood, so a partial lets the caller answer 400.
    if (startErr !== 'start_line_invalid') return fail(startErr);
    sl = lenientStartLine(slText, limits);
    if (sl === null) return fail('start_line_invalid');
  }
  const startLineEnd = slEnd + 2;

  // First defect in byte order wins; tokenizing continues so the partial message holds every
  // well-formed field (skip defective lines) for the caller's error reply.
  let err: ParseReason | undefined = sl.soft;
  const headers: HeaderField[] = [];
  let bodyStart = -1;
  let q = startLineEnd;
  // current field being assembled
  let fStart = -1, fNameEnd = 0, fColon = 0, fEnd = 0, fFolded = false, fBad: ParseReason | undefined;
  let fieldCount = 0;
  let clCount = 0;
  let clValue = -2; // -2 absent, -1 invalid

  const flush = (): void => {
    if (fStart < 0) return;
    fieldCount++;
    let bad = fBad;
    if (bad === undefined && fEnd - fStart > limits.maxHeaderLineBytes) bad = 'header_line_too_long';
    if (bad === undefined && fieldCount > limits.maxHeaders) bad = 'too_many_headers';
    if (bad !== undefined) {
      if (err === undefined) err = bad;
    } else {
      const rawName = raw.toString('latin1', fStart, fNameEnd);
      const name = canonicalName(rawName);
      const value = fieldValue(raw, fColon + 1, fEnd - 2, fFolded);
      if (name === 'content-length') {
        clCount++;
        // RFC 4475 mcl01: several Content-Length values make the framing ambiguous
        clValue = value.indexOf(',') >= 0 ? -3 : contentLengthValue(value);
      }
      headers.push({ rawName, name, value, start: fStart, end: fEnd });
    }
    fStart = -1;
  };

  while (true) {
    if (q + 1 < scanEnd && raw[q] === CR && raw[q + 1] === LF) {
      flush();
      bodyStart = q + 2;
      break;
    }
    const le = scanLine(raw, q, scanEnd);
    if (le < 0) break;
    const c0 = raw[q];
    if (c0 === SP || c0 === HT) {
      // RFC 3261 7.3.1: a line starting with WSP continues the previous field
      if (fStart < 0) {
        if (err === undefined) err = 'header_syntax';
      } else {
        fFolded = true;
        fEnd = le + 2;
        if (lineBad >= 0 && fBad === undefined) fBad = 'control_char';
      }
      q = le + 2;
      continue;
    }
    flush();
    fStart = q;
    fEnd = le + 2;
    fFolded = false;
    fBad = lineBad >= 0 ? 'control_char' : undefined;
    // RFC 3261 7.3.1 / 25.1: field-name = token, then HCOLON = *( SP / HTAB ) ":" SWS
    let i = q;
    while (i < le && TOKEN[raw[i] as number] === 1) i++;
    fNameEnd = i;
    while (i < le && (raw[i] === SP || raw[i] === HT)) i++;
    if (fNameEnd === q || i >= le || raw[i] !== COLON) {
      // a control byte in a malformed line is reported as such: it is the sharper diagnosis
      if (fBad === undefined) fBad = 'header_syntax';
    }
    fColon = i;
    q = le + 2;
  }

  const partialOf = (bs: number): SipMessage => build(raw, sl, startLineEnd, headers, bs < 0 ? q : bs, 0);

  if (bodyStart < 0) {
    flush();
    // the head did not end within the cap: either it is oversized or it is cut short
    if (len > limits.maxMessageBytes) return fail('message_too_large', partialOf(-1));
    return fail(err ?? 'headers_unterminated', partialOf(-1));
  }
  if (err !== undefined) return fail(err, partialOf(bodyStart));

  // RFC 3261 18.3 framing
  let bodyLength: number;
  if (clCount > 1 || clValue === -3) return fail('content_length_duplicate', partialOf(bodyStart));
  if (clCount === 0) {
    if (framing === 'stream') return fail('content_length_missing', partialOf(bodyStart));
    bodyLength = len - bodyStart;
    if (len > limits.maxMessageBytes) return fail('message_too_large', partialOf(bodyStart));
  } else {
    if (clValue < 0) return fail('content_length_invalid', partialOf(bodyStart));
    if (clValue > limits.maxMessageBytes || bodyStart + clValue > limits.maxMessageBytes) return fail('message_too_large', partialOf(bodyStart));
    if (bodyStart + clValue > len) return fail('body_truncated', partialOf(bodyStart));
    if (framing === 'message') {
      for (let i = bodyStart + clValue; i < len; i++) {
        const b = raw[i]!;
        if (b !== CR && b !== LF) return fail('trailing_bytes', partialOf(bodyStart));
      }
    }
    // datagram: bytes past Content-Length are discarded (RFC 3261 18.3); stream: the framer
    // already cut the buffer at Content-Length, so any excess is likewise not part of the message
    bodyLength = clValue;
  }
  return { ok: true, msg: build(raw, sl, startLineEnd, headers, bodyStart, bodyLength) };
}

function build(raw: Buffer, sl: StartLine, startLineEnd: number, headers: HeaderField[], bodyStart: number, bodyLength: number): SipMessage {
  if (sl.kind === 'request') {
    return { kind: 'request', method: sl.method, uri: sl.uri, raw, startLineEnd, headers, bodyStart, bodyLength, version: sl.version, cache: new Map() };
  }
  return { kind: 'response', status: sl.status, reason: sl.reason, raw, startLineEnd, headers, bodyStart, bodyLength, version: sl.version, cache: new Map() };
}
