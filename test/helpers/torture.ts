// RFC 4475 and RFC 5118 torture corpus with the verdict the edge must reach for each message.
// Expectations follow what the RFCs say a PROXY should do (not a UAS): a running edge must
// forward every `accept` message intact and reply/drop the others with the listed reason.
// Reasons are the parser's ParseReason (parse failures, via verdictForParseFailure) or the
// sanity stage's SANITY_REASONS.
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

export type TortureExpect =
  | { readonly kind: 'accept' }
  | { readonly kind: 'reply'; readonly status: number; readonly reason: string }
  | { readonly kind: 'drop'; readonly reason: string };

export interface TortureCase {
  readonly name: string;
  /** path relative to the repository root */
  readonly file: string;
  readonly rfcSection: string;
  /** what the RFC calls the message (RFC 4475 3.1.1 valid / 3.1.2 invalid ...) */
  readonly valid: boolean;
  readonly expect: TortureExpect;
  readonly note: string;
  /** set while the parser diverges from the expectation: what is observed instead (tests run it as a todo) */
  readonly knownGap?: string;
}

const ACCEPT: TortureExpect = { kind: 'accept' };
const rep = (status: number, reason: string): TortureExpect => ({ kind: 'reply', status, reason });
const drp = (reason: string): TortureExpect => ({ kind: 'drop', reason });

const c4475 = (name: string, sec: string, valid: boolean, expect: TortureExpect, note: string, knownGap?: string): TortureCase =>
  ({ name, file: `test/fixtures/rfc4475/${name}.sip`, rfcSection: `RFC 4475 ${sec}`, valid, expect, note, ...(knownGap ? { knownGap } : {}) });
const c5118 = (name: string, sec: string, valid: boolean, expect: TortureExpect, note: string): TortureCase =>
  ({ name, file: `test/fixtures/rfc5118/${name}.sip`, rfcSection: `RFC 5118 ${sec}`, valid, expect, note });

export const TORTURE_CASES: readonly TortureCase[] = [
  // 3.1.1 Valid messages: a proxy forwards them.
  c4475('wsinv', '3.1.1.1', true, ACCEPT, 'short tortuous INVITE: folding, LWS around colons, compact forms, unknown headers'),
  c4475('intmeth', '3.1.1.2', true, ACCEPT, 'wide range of valid characters; To display name holds quoted-pair escaped NUL/BEL/DEL (RFC 3261 25.1 quoted-pair = "\\" (%x00-09 / %x0B-0C / %x0E-7F)), legal in a quoted-string'),
  c4475('esc01', '3.1.1.3', true, ACCEPT, 'valid use of % escaping in URIs'),
  c4475('escnull', '3.1.1.4', true, ACCEPT, 'escaped %00 in URIs is legal; only unescaped NUL is not'),
  c4475('esc02', '3.1.1.5', true, ACCEPT, 'RE%47IST%45R is an unknown method token, not REGISTER; CSeq matches it'),
  c4475('lwsdisp', '3.1.1.6', true, ACCEPT, 'no LWS between display name and <'),
  c4475('longreq', '3.1.1.7', true, ACCEPT, 'long values; within the default limits (16384 bytes, 4096 per header line)'),
  c4475('dblreq', '3.1.1.8', true, ACCEPT, 'UDP datagram with two requests: RFC 4475 says the REGISTER is processed and the INVITE (past Content-Length: 0) discarded (RFC 3261 18.3)'),
  c4475('semiuri', '3.1.1.9', true, ACCEPT, 'semicolon-separated parameter in the userinfo of the Request-URI'),
  c4475('transports', '3.1.1.10', true, ACCEPT, 'Via with SCTP, TLS and an UNKNOWN transport: only the top Via concerns the edge'),
  c4475('mpart01', '3.1.1.11', true, ACCEPT, 'multipart/signed body with binary bytes, forwarded untouched'),
  c4475('unreason', '3.1.1.12', true, ACCEPT, 'response with UTF-8 reason phrase'),
  c4475('noreason', '3.1.1.13', true, ACCEPT, 'response with empty reason phrase (Reason-Phrase may be empty, RFC 3261 25.1)'),
  // 3.1.2 Invalid messages.
  c4475('badinv01', '3.1.2.1', false, rep(400, 'via_invalid'), 'extraneous separators ";;,;,," in Via: the top Via does not parse (RFC 3261 20.42)'),
  c4475('clerr', '3.1.2.2', false, rep(400, 'body_truncated'), 'Content-Length 9999 larger than the datagram: RFC 3261 18.3 "MUST be discarded"/400 for UDP'),
  c4475('ncl', '3.1.2.3', false, rep(400, 'content_length_invalid'), 'negative Content-Length; RFC 4475: respond 400'),
  c4475('scalar02', '3.1.2.4', false, rep(400, 'cseq_invalid'), 'overlarge scalars; RFC 4475: "should respond with a 400 Bad Request due to the CSeq error" (CSeq checked before Max-Forwards and Expires)'),
  c4475('scalarlg', '3.1.2.5', false, drp('cseq_invalid'), 'response with overlarge CSeq: responses are never answered, only dropped'),
  c4475('quotbal', '3.1.2.6', false, rep(400, 'to_invalid'), 'unterminated quoted string in the To display name'),
  c4475('ltgtruri', '3.1.2.7', false, rep(400, 'request_uri_invalid'), 'Request-URI enclosed in <>: RFC 4475 "should respond 400"; the edge does not repair it'),
  c4475('lwsruri', '3.1.2.8', false, rep(400, 'request_uri_invalid'), 'LWS inside the Request-URI: the parser sees an invalid Request-URI'),
  c4475('lwsstart', '3.1.2.9', false, rep(400, 'start_line_invalid'), 'multiple SP between Request-Line elements (RFC 3261 7.1 single SP)'),
  c4475('trws', '3.1.2.10', false, rep(400, 'start_line_invalid'), 'SP after SIP-Version: RFC 4475 "reasonable to always reject ... with a 400"'),
  c4475('escruri', '3.1.2.11', false, rep(400, 'ruri_headers'), 'escaped headers in the Request-URI: not allowed (RFC 3261 19.1.1 table); RFC 4475: respond 400'),
  c4475('baddate', '3.1.2.12', false, ACCEPT, 'non-GMT Date: RFC 4475 "an element shouldn\'t [reject] unless the contents of the Date header field were actually needed"; a proxy does not need Date'),
  c4475('regbadct', '3.1.2.13', false, rep(400, 'contact_invalid'), 'addr-spec Contact with ?headers not enclosed in <> (RFC 3261 20.10); the edge refuses rather than guess which parse the registrar makes'),
  c4475('badaspec', '3.1.2.14', false, rep(400, 'to_invalid'), 'spaces inside <> around the To addr-spec: RFC 4475 "reasonable to reject ... with a 400"; the edge is strict'),
  c4475('baddn', '3.1.2.15', false, drp('headers_unterminated'), 'unquoted display name with a comma; the RFC\'s bit-exact archive file also lacks the empty line ending the headers, so the parser stops first; the partial From ("Bell, Alexander <...>") does not parse, so no reply can be built and the message is dropped'),
  c4475('badvers', '3.1.2.16', false, rep(505, 'version_unsupported'), 'SIP/7.0: RFC 4475 "should respond with a 505"'),
  c4475('mismatch01', '3.1.2.17', false, rep(400, 'cseq_method_mismatch'), 'OPTIONS with CSeq INVITE: RFC 4475 "will respond with a 400"'),
  c4475('mismatch02', '3.1.2.18', false, rep(400, 'cseq_method_mismatch'), 'unknown method with CSeq INVITE: RFC 4475 prefers 501 at proxies but says "a 400 Bad Request is also acceptable"; the edge answers the mismatch it can prove'),
  c4475('bigcode', '3.1.2.19', false, drp('status_invalid'), 'response code 4294967301: a response is never answered'),
  // 3.2 Transaction layer.
  c4475('badbranch', '3.2.1', true, ACCEPT, 'branch "z9hG4bK" with no identifier: RFC 4475 allows either 400 or falling back to RFC 2543 matching; the edge does not require RFC 3261 branches (inv2543), so it forwards'),
  // 3.3 Application layer.
  c4475('insuf', '3.3.1', false, drp('header_missing_from'), 'no To, From, Call-ID, Max-Forwards: RFC 4475 says 400, but a response must copy From/To/Call-ID (RFC 3261 8.2.6.2), so none can be built; dropped'),
  c4475('unkscm', '3.3.2', true, rep(416, 'ruri_scheme_unsupported'), 'unknown Request-URI scheme: 416 (RFC 3261 8.2.2.1, 16.3 step 1)'),
  c4475('novelsc', '3.3.3', true, rep(416, 'ruri_scheme_unsupported'), 'known but atypical scheme soap.beep: RFC 4475 "if an element ... does not support the URI scheme, it should respond with a 416"'),
  c4475('unksm2', '3.3.4', true, ACCEPT, 'unknown schemes in To/From/Contact are well-formed absoluteURIs (RFC 3261 25.1); refusing them is the registrar\'s job, not a proxy\'s'),
  c4475('bext01', '3.3.5', true, rep(420, 'proxy_require_unsupported'), 'Proxy-Require with unknown tags: 420 with Unsupported listing them (RFC 3261 16.3 step 4); Require is for the UAS'),
  c4475('invut', '3.3.6', true, ACCEPT, 'unknown Content-Type: only the UAS answers 415; a proxy forwards'),
  c4475('regaut01', '3.3.7', true, ACCEPT, 'unknown Authorization scheme: the registrar answers 401; a proxy forwards'),
  c4475('multi01', '3.3.8', false, rep(400, 'header_duplicate_from'), 'two From/To/Call-ID/CSeq: RFC 4475 3.3.8 says 400; the reply echoes the first of each'),
  c4475('mcl01', '3.3.9', false, rep(400, 'content_length_duplicate'), 'two Content-Length values: RFC 4475 "should respond with a 400"'),
  c4475('bcast', '3.3.10', true, drp('via_broadcast'), '200 OK whose next Via is 255.255.255.255: forwarding it would broadcast; RFC 4475 expects it not to be sent on'),
  c4475('zeromf', '3.3.11', true, rep(483, 'max_forwards_exceeded'), 'OPTIONS with Max-Forwards 0: RFC 4475 "a proxy should not forward the request and should respond 483"'),
  c4475('cparam01', '3.3.12', true, ACCEPT, 'REGISTER, addr-spec Contact with a contact-param'),
  c4475('cparam02', '3.3.13', true, ACCEPT, 'REGISTER, name-addr Contact with a url-parameter'),
  c4475('regescrt', '3.3.14', true, ACCEPT, 'REGISTER, <>-enclosed Contact with an escaped header: legal'),
  c4475('sdp01', '3.3.15', true, ACCEPT, 'unacceptable Accept: only the UAS answers 406/415; a proxy forwards'),
  // 3.4 Backward compatibility.
  c4475('inv2543', '3.4.1', true, ACCEPT, 'RFC 2543 INVITE: no branch cookie, no From tag, no Max-Forwards, no Content-Length (UDP body runs to the end of the datagram); must be forwarded'),
  // Present in the RFC 4475 archive (Appendix A), not described in section 3.
  c4475('test', 'Appendix A (archive only)', false, drp('start_line_invalid'), 'Request-Line without SIP-Version; no Via/CSeq either, so no reply is possible'),

  // RFC 5118 IPv6 torture tests.
  c5118('ipv6-good', '4.1', true, ACCEPT, 'bracketed IPv6 reference in the Request-URI and Contact'),
  c5118('ipv6-bad', '4.2', false, rep(400, 'ruri_invalid'), 'IPv6 address without brackets in the Request-URI: RFC 5118 "should be rejected ... 400"'),
  c5118('port-ambiguous', '4.3', true, ACCEPT, '[2001:db8::10:5070] is an address without a port'),
  c5118('port-unambiguous', '4.4', true, ACCEPT, '[2001:db8::10]:5070 carries port 5070'),
  c5118('via-received-param-with-delim', '4.5', true, ACCEPT, 'received=[IPv6] with brackets is accepted (RFC 5118 4.5: parsers should accept both forms)'),
  c5118('via-received-param-no-delim', '4.5', true, ACCEPT, 'received=IPv6 without brackets, the RFC 3261 grammar form'),
  c5118('ipv6-in-sdp', '4.6', true, ACCEPT, 'IPv6 addresses in SDP; Content-Length corrected to the body length (see fixtures README)'),
  c5118('mult-ip-in-header', '4.7', true, ACCEPT, 'mixed IPv4/IPv6 Via values'),
  c5118('mult-ip-in-sdp', '4.8', true, ACCEPT, 'mixed IPv4/IPv6 in SDP; Content-Length corrected (README)'),
  c5118('ipv4-mapped-ipv6', '4.9', true, ACCEPT, 'IPv4-mapped IPv6 in Via/Contact/SDP; Content-Length corrected (README)'),
  c5118('ipv6-bug-abnf-3-colons', '4.10', false, rep(400, 'ruri_invalid'), '[2001:db8:::192.0.2.1] only matched the faulty RFC 3261 IPv6reference ABNF; RFC 5954 corrected it, the address is not valid IPv6 and cannot be routed'),
  c5118('ipv6-correct-abnf-2-colons', '4.10', true, ACCEPT, '[2001:db8::192.0.2.1] is a valid IPv6 reference'),
];

/** repository root, from test/helpers/torture.ts or from its compiled dist-X/test/helpers/torture.js */
export function repoRoot(): string {
  const up2 = path.resolve(__dirname, '../..');
  return path.basename(up2).startsWith('dist') ? path.dirname(up2) : up2;
}

export function loadTorture(c: TortureCase): Buffer {
  return readFileSync(path.join(repoRoot(), c.file));
}
