// Builds the responses and hop-by-hop requests the edge generates itself.
// RFC 3261 8.2.6.2: a response copies Via (all values, in order), From, To, Call-ID and CSeq
// from the request and adds a To tag (except on 100 Trying).
import { createHash } from 'node:crypto';
import { fields, first } from './headers';
import type { Endpoint, SipMessage, SipRequest } from './types';

export const PHRASES: Readonly<Record<number, string>> = {
  100: 'Trying', 180: 'Ringing', 181: 'Call Is Being Forwarded', 182: 'Queued', 183: 'Session Progress',
  200: 'OK', 202: 'Accepted',
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed',
  407: 'Proxy Authentication Required', 408: 'Request Timeout', 413: 'Request Entity Too Large',
  414: 'Request-URI Too Long', 415: 'Unsupported Media Type', 416: 'Unsupported URI Scheme',
  420: 'Bad Extension', 423: 'Interval Too Brief', 429: 'Too Many Requests', 430: 'Flow Failed',
  480: 'Temporarily Unavailable', 481: 'Call/Transaction Does Not Exist', 482: 'Loop Detected',
  483: 'Too Many Hops', 484: 'Address Incomplete', 486: 'Busy Here', 487: 'Request Terminated',
  488: 'Not Acceptable Here', 500: 'Server Internal Error', 501: 'Not Implemented', 502: 'Bad Gateway',
  503: 'Service Unavailable', 504: 'Server Time-out', 505: 'Version Not Supported', 513: 'Message Too Large',
  603: 'Decline',
};

export function phraseFor(status: number): string {
  return PHRASES[status] ?? (status < 200 ? 'Provisional' : status < 300 ? 'OK' : 'Error');
}

/** Header values we echo must not smuggle line breaks or NULs into our own output. */
function clean(v: string): string | null {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if ((c < 0x20 && c !== 9) || c === 0x7f) return null;
  }
  return v;
}

/** Deterministic To tag: the same request (and its retransmissions) always gets the same tag,
 *  so a retransmitted request answered statelessly sees a consistent dialog state. */
export function stableTag(msg: SipMessage, salt: string): string {
  const h = createHash('sha1');
  h.update(salt);
  h.update(first(msg, 'call-id') ?? '');
  h.update('\0');
  h.update(first(msg, 'from') ?? '');
  h.update('\0');
  h.update(first(msg, 'via') ?? '');
  return h.digest('base64url').slice(0, 12);
}

/** RFC 3581 section 4 / RFC 3261 18.2.1: stamp received (and rport when the client asked for it)
 *  into a Via value, from the transport source. Returns the value unchanged when nothing applies. */
export function stampVia(via: string, source: Endpoint, sentByHost: string | undefined, hasRport: boolean): string {
  let out = via;
  if (hasRport) {
    // replace a valueless ";rport" with ";rport=PORT"
    out = out.replace(/;\s*rport(?=\s*(;|$))/i, `;rport=${source.port}`);
  }
  if (hasRport || sentByHost !== source.address) {
    if (!/;\s*received\s*=/i.test(out)) out += `;received=${source.address}`;
  }
  return out;
}

export interface ReplyOptions {
  phrase?: string;
  headers?: ReadonlyArray<readonly [string, string]>;
  toTag?: string;
  /** stamp received/rport into the top Via from this source */
  source?: Endpoint;
  /** Server header value (config serverHeader); none by default: a reply that names the product
   *  tells a scanner which exploits to try */
  server?: string;
}

/** A response to `req`, or null when the request lacks what a response needs (then drop). */
export function buildReply(req: SipMessage, status: number, opts: ReplyOptions = {}): Buffer | null {
  const vias = fields(req, 'via');
  const from = fields(req, 'from');
  const to = fields(req, 'to');
  const callId = fields(req, 'call-id');
  const cseq = fields(req, 'cseq');
  // with duplicated headers (a 400 case) the first of each is echoed, as Kamailio's sl_send_reply does
  if (vias.length === 0 || from.length === 0 || to.length === 0 || callId.length === 0 || cseq.length === 0) return null;
  const phrase = (opts.phrase ?? phraseFor(status)).replace(/[\r\n\0]/g, ' ');
  const lines: string[] = [`SIP/2.0 ${status} ${phrase}`];
  for (let i = 0; i < vias.length; i++) {
    let v = clean(vias[i]!.value);
    if (v === null) return null;
    if (i === 0 && opts.source) {
      const m = /^\s*SIP\s*\/\s*2\.0\s*\/\s*[A-Za-z]+\s+(\[[^\]]*\]|[^\s:;]+)/i.exec(v);
      const host = m ? m[1]!.replace(/^\[|\]$/g, '').toLowerCase() : undefined;
      v = stampVia(v, opts.source, host, /;\s*rport\s*(;|$|=)/i.test(v) && !/;\s*rport\s*=\s*\d/i.test(v));
    }
    lines.push(`Via: ${v}`);
  }
  const fromV = clean(from[0]!.value);
  let toV = clean(to[0]!.value);
  const callV = clean(callId[0]!.value);
  const cseqV = clean(cseq[0]!.value);
  if (fromV === null || toV === null || callV === null || cseqV === null) return null;
  if (status > 100 && opts.toTag && !/;\s*tag\s*=/i.test(toV)) toV += `;tag=${opts.toTag}`;
  lines.push(`From: ${fromV}`, `To: ${toV}`, `Call-ID: ${callV}`, `CSeq: ${cseqV}`);
  for (const [n, v] of opts.headers ?? []) lines.push(`${n}: ${v}`);
  if (opts.server !== undefined) lines.push(`Server: ${opts.server}`);
  lines.push('Content-Length: 0', '', '');
  return Buffer.from(lines.join('\r\n'), 'latin1');
}

/**
 * The hop-by-hop ACK for a non-2xx final response (RFC 3261 17.1.1.3): Request-URI, Call-ID,
 * From, CSeq number and Route of the INVITE we sent, the To of the response, one Via equal to
 * the top Via of the INVITE we sent (same branch).
 * Also CANCEL (RFC 3261 9.1): same fields but To from the INVITE and method CANCEL.
 */
export function buildHopRequest(method: 'ACK' | 'CANCEL', sentInvite: SipRequest, ourVia: string, toValue?: string): Buffer {
  const seq = (first(sentInvite, 'cseq') ?? '').trim().split(/\s+/)[0] ?? '1';
  const lines: string[] = [`${method} ${sentInvite.uri} SIP/2.0`, `Via: ${ourVia}`];
  for (const r of fields(sentInvite, 'route')) lines.push(`Route: ${r.value}`);
  lines.push(
    `From: ${first(sentInvite, 'from') ?? ''}`,
    `To: ${toValue ?? first(sentInvite, 'to') ?? ''}`,
    `Call-ID: ${first(sentInvite, 'call-id') ?? ''}`,
    `CSeq: ${seq} ${method}`,
    'Max-Forwards: 70',
    'Content-Length: 0', '', '',
  );
  return Buffer.from(lines.join('\r\n'), 'latin1');
}
