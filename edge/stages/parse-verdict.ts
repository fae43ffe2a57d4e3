// Turns a parse failure into a verdict. A reply needs the request's Via, From, To, Call-ID and
// CSeq (RFC 3261 8.2.6.2: a response copies them), so only a request whose partial parse has
// each of them, once and parseable, gets one; everything else is dropped silently.
import { callId, count, cseq, from, to, topVia } from '../sip/headers';
import type { Endpoint, SipMessage } from '../sip/types';
import { drop, reply, type Verdict } from '../verdict';

export interface ParseFailure {
  readonly reason: string;
  readonly status: number;
  readonly partial?: SipMessage;
}

/** true when a proper error response can be built for this (partial) request */
export function canReplyTo(msg: SipMessage): boolean {
  // a response to a response does not exist (RFC 3261 8.1.3.1 / 18.1.2); whether a request may
  // be answered at all (never an ACK) is edge/path/respond.ts's to say
  if (msg.kind !== 'request') return false;
  // RFC 3261 8.2.6.2: From, Call-ID, CSeq, To copied from the request; Via values copied in order.
  if (count(msg, 'via') < 1) return false;
  // duplicates are answered with the first of each (RFC 4475 3.3.8 expects a 400)
  if (count(msg, 'from') < 1 || count(msg, 'to') < 1 || count(msg, 'call-id') < 1 || count(msg, 'cseq') < 1) {
    return false;
  }
  return !!topVia(msg) && !!from(msg) && !!to(msg) && !!callId(msg) && !!cseq(msg);
}

export function verdictForParseFailure(f: ParseFailure, source: Endpoint): Verdict {
  // A zero port cannot be answered (RFC 768 source port 0 means "no reply expected").
  if (source.port === 0 && source.transport === 'udp') return drop(f.reason);
  const p = f.partial;
  if (p === undefined || !canReplyTo(p)) return drop(f.reason);
  return reply(f.status, f.reason);
}

/** reason codes the parse step can produce as verdicts (parser reasons) */
export const PARSE_STAGE_REASONS: readonly string[] = [
  'empty', 'start_line_invalid', 'method_invalid', 'version_unsupported', 'status_invalid',
  'request_uri_invalid', 'request_uri_too_long', 'header_line_too_long', 'too_many_headers',
  'message_too_large', 'headers_unterminated', 'header_syntax', 'control_char',
  'content_length_invalid', 'content_length_duplicate', 'content_length_missing', 'body_truncated',
];
