import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_LIMITS, PARSE_REASONS, parseMessage, type ParseReason, type ParseResult } from '../edge/sip/parser';
import type { SipMessage } from '../edge/sip/types';
import { INVITE_YEALINK, OK_INVITE, SAMPLES, WSINV, sip } from './helpers/messages';

function ok(r: ParseResult): SipMessage {
  if (!r.ok) assert.fail(`expected ok, got ${r.reason}`);
  return r.msg;
}

const BASE = [
  'Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds',
  'From: <sip:alice@example.com>;tag=1928301774',
  'To: <sip:bob@example.com>',
  'Call-ID: a84b4c76e66710@pc33.example.com',
  'CSeq: 314159 OPTIONS',
  'Max-Forwards: 70',
];
const req = (startLine: string, extra: string[] = [], body = '', cl: string | null = 'Content-Length: {CL}'): Buffer =>
  sip([startLine, ...BASE, ...extra, ...(cl === null ? [] : [cl])], body);
const OPT = 'OPTIONS sip:bob@example.com SIP/2.0';

test('real messages parse with the expected shape', () => {
  for (const s of SAMPLES) {
    const m = ok(parseMessage(s.bytes));
    assert.equal(m.kind, s.kind, s.name);
    if (m.kind === 'request') assert.equal(m.method, s.method, s.name);
    else assert.equal(m.status, s.status, s.name);
    assert.equal(m.headers.length, s.headerCount, s.name);
    assert.equal(m.bodyLength, s.bodyLength, s.name);
    assert.equal(m.version, 'SIP/2.0', s.name);
    assert.equal(m.bodyStart + m.bodyLength, s.bytes.length, s.name);
    // header fields tile the header section exactly
    let pos = m.startLineEnd;
    for (const h of m.headers) {
      assert.equal(h.start, pos, s.name);
      assert.ok(h.end > h.start);
      pos = h.end;
    }
    assert.equal(pos + 2, m.bodyStart, s.name);
  }
});

test('stream framing accepts the same messages', () => {
  for (const s of SAMPLES) ok(parseMessage(s.bytes, { framing: 'stream' }));
});

test('header names: received form kept, canonical long lower-case form, HCOLON whitespace', () => {
  const m = ok(parseMessage(WSINV));
  const names = m.headers.map((h) => [h.rawName, h.name]);
  assert.deepEqual(names.slice(0, 4), [['TO', 'to'], ['from', 'from'], ['MaX-fOrWaRdS', 'max-forwards'], ['Call-ID', 'call-id']]);
  assert.ok(names.some(([r, n]) => r === 'v' && n === 'via'));
  assert.ok(names.some(([r, n]) => r === 'm' && n === 'contact'));
  assert.ok(names.some(([r, n]) => r === 's' && n === 'subject'));
  assert.ok(names.some(([r, n]) => r === 'Content-Length' && n === 'content-length'));
});

test('folded values are unfolded to one SP and trimmed (RFC 3261 7.3.1)', () => {
  const m = ok(parseMessage(WSINV));
  const get = (n: string): string | undefined => m.headers.find((h) => h.name === n)?.value;
  assert.equal(get('to'), 'sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n');
  assert.equal(get('cseq'), '0009 INVITE');
  assert.equal(get('via'), 'SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw');
  assert.equal(get('newfangledheader'), 'newfangled value continued newfangled value');
  assert.equal(get('subject'), '');
  assert.equal(get('route'), '<sip:services.example.com;lr;unknownwith=value;unknown-no-value>');
  const from = m.headers.find((h) => h.name === 'from');
  assert.ok(from !== undefined);
  // the field's byte range covers its continuation lines
  assert.equal(WSINV.toString('latin1', from.start, from.end), 'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8\r\n');
});

test('UTF-8 bytes in values come back as latin1 (1 char = 1 byte)', () => {
  const raw = Buffer.concat([Buffer.from(`${OPT}\r\nSubject: `, 'latin1'), Buffer.from('Grüße 大', 'utf8'), Buffer.from(`\r\n${BASE.join('\r\n')}\r\nContent-Length: 0\r\n\r\n`, 'latin1')]);
  const m = ok(parseMessage(raw));
  const v = m.headers[0]?.value ?? '';
  assert.equal(Buffer.from(v, 'latin1').toString('utf8'), 'Grüße 大');
});

test('start lines: weird but valid method, response forms, empty reason phrase', () => {
  const cases: [string, (m: SipMessage) => void][] = [
    ["!interesting-Method0123456789_*+`.%indeed'~ sip:a@example.com SIP/2.0", (m) => assert.equal(m.kind === 'request' && m.method, "!interesting-Method0123456789_*+`.%indeed'~")],
    ['invite sip:a@example.com SIP/2.0', (m) => assert.equal(m.kind === 'request' && m.method, 'invite')],
    ['OPTIONS sip:a@example.com sip/2.0', (m) => assert.equal(m.version, 'sip/2.0')],
    ['OPTIONS tel:+15551234567 SIP/2.0', (m) => assert.equal(m.kind === 'request' && m.uri, 'tel:+15551234567')],
    ['SIP/2.0 180 Ringing', (m) => assert.equal(m.kind === 'response' && m.reason, 'Ringing')],
    ['SIP/2.0 100 ', (m) => assert.equal(m.kind === 'response' && m.reason, '')],
    ['SIP/2.0 200', (m) => assert.equal(m.kind === 'response' && m.status, 200)],
    ['SIP/2.0 699 Some odd phrase\twith tab', (m) => assert.equal(m.kind === 'response' && m.reason, 'Some odd phrase\twith tab')],
  ];
  for (const [line, check] of cases) check(ok(parseMessage(req(line))));
});

test('leading CRLFs before the start line are ignored (RFC 3261 7.5)', () => {
  const m = ok(parseMessage(Buffer.concat([Buffer.from('\r\n\r\n'), INVITE_YEALINK])));
  assert.equal(m.kind === 'request' && m.method, 'INVITE');
});

// One row per reason code: input, expected reason, expected status, whether a partial comes back.
const REASONS: [string, Buffer, ParseReason, number, boolean, { framing?: 'datagram' | 'stream' | 'message' }?][] = [
  ['empty buffer', Buffer.alloc(0), 'empty', 400, false],
  ['only whitespace', Buffer.from('\r\n\r\n \t\r\n'), 'empty', 400, false],
  ['lwsstart: two SP after method', req('INVITE  sip:a@example.com SIP/2.0'), 'start_line_invalid', 400, true],
  ['leading SP', req(' INVITE sip:a@example.com SIP/2.0'), 'start_line_invalid', 400, true],
  ['trws: trailing SP after version', req('OPTIONS sip:a@example.com SIP/2.0 '), 'start_line_invalid', 400, true],
  ['four elements', req('OPTIONS sip:a@example.com x SIP/2.0'), 'request_uri_invalid', 400, true],
  ['single token', req('OPTIONS'), 'start_line_invalid', 400, false],
  ['tabs only between elements', req('OPTIONS\tsip:a@example.com\tSIP/2.0'), 'start_line_invalid', 400, true],
  ['lwsruri: SP inside the URI', req('INVITE sip:user@example.com; lr SIP/2.0'), 'request_uri_invalid', 400, true],
  ['two SP before the version', req('INVITE sip:a@example.com  SIP/2.0'), 'start_line_invalid', 400, true],
  ['no version', req('OPTIONS sip:a@example.com'), 'start_line_invalid', 400, false],
  ['garbage version', req('OPTIONS sip:a@example.com HTTP/1.1'), 'start_line_invalid', 400, false],
  ['method with "@"', req('INV@TE sip:a@example.com SIP/2.0'), 'method_invalid', 400, false],
  ['badvers: SIP/7.0', req('OPTIONS sip:a@example.com SIP/7.0'), 'version_unsupported', 505, true],
  ['response with bad version', req('SIP/3.0 200 OK'), 'version_unsupported', 505, true],
  ['status 99', req('SIP/2.0 099 Odd'), 'status_invalid', 400, false],
  ['status 700', req('SIP/2.0 700 Odd'), 'status_invalid', 400, false],
  ['status 4 digits', req('SIP/2.0 2000 OK'), 'status_invalid', 400, false],
  ['status letters', req('SIP/2.0 2x0 OK'), 'status_invalid', 400, false],
  ['ltgtruri', req('INVITE <sip:a@example.com> SIP/2.0'), 'request_uri_invalid', 400, true],
  ['URI without scheme', req('INVITE a@example.com SIP/2.0'), 'request_uri_invalid', 400, true],
  ['URI with HT', req('INVITE sip:a@exa\tmple.com SIP/2.0'), 'request_uri_invalid', 400, true],
  ['Request-URI over 512 bytes', req(`INVITE sip:${'a'.repeat(520)}@example.com SIP/2.0`), 'request_uri_too_long', 414, true],
  ['header line over 4 KiB', req(OPT, [`X-Long: ${'x'.repeat(4200)}`]), 'header_line_too_long', 400, true],
  ['folded header line over 4 KiB', req(OPT, ['X-Long: a', ...Array.from({ length: 50 }, () => ` ${'y'.repeat(90)}`)]), 'header_line_too_long', 400, true],
  ['101 headers', req(OPT, Array.from({ length: 94 }, (_, i) => `X-H${i}: v`)), 'too_many_headers', 400, true],
  ['message over 16 KiB (body)', req(OPT, [], 'b'.repeat(17000)), 'message_too_large', 413, true],
  ['head over 16 KiB', req(OPT, Array.from({ length: 90 }, (_, i) => `X-H${i}: ${'z'.repeat(190)}`)), 'message_too_large', 413, true],
  ['Content-Length over 16 KiB', req(OPT, [], '', 'Content-Length: 99999'), 'message_too_large', 413, true],
  ['no empty line', Buffer.from(`${OPT}\r\n${BASE.join('\r\n')}\r\n`), 'headers_unterminated', 400, true],
  ['header without colon', req(OPT, ['NoColonHere']), 'header_syntax', 400, true],
  ['empty header name', req(OPT, [': value']), 'header_syntax', 400, true],
  ['header name with "@"', req(OPT, ['X@Y: value']), 'header_syntax', 400, true],
  ['header name with inner SP', req(OPT, ['X Y: value']), 'header_syntax', 400, true],
  ['continuation before first header', sip([OPT, ' folded: no', ...BASE, 'Content-Length: 0']), 'header_syntax', 400, true],
  ['NUL in a header', req(OPT, ['Subject: a\u0000b']), 'control_char', 400, true],
  ['bare LF in a header', req(OPT, ['Subject: a\nb']), 'control_char', 400, true],
  ['bare CR in a header', req(OPT, ['Subject: a\rb']), 'control_char', 400, true],
  ['DEL in a header', req(OPT, ['Subject: a\u007fb']), 'control_char', 400, true],
  ['ESC in the start line', req('OPTIONS sip:a@exam\u001bple.com SIP/2.0'), 'control_char', 400, false],
  ['bare-LF line ends', Buffer.from(`${OPT}\n${BASE.join('\n')}\n\n`), 'control_char', 400, false],
  ['Content-Length letters', req(OPT, [], '', 'Content-Length: abc'), 'content_length_invalid', 400, true],
  ['Content-Length negative', req(OPT, [], '', 'Content-Length: -5'), 'content_length_invalid', 400, true],
  ['Content-Length 11 digits', req(OPT, [], '', 'Content-Length: 00000000000'), 'content_length_invalid', 400, true],
  ['Content-Length empty', req(OPT, [], '', 'Content-Length:'), 'content_length_invalid', 400, true],
  ['mcl01: two Content-Length lines', req(OPT, ['Content-Length: 0'], '', 'l: 0'), 'content_length_duplicate', 400, true],
  ['Content-Length with two values', req(OPT, [], '', 'Content-Length: 0, 0'), 'content_length_duplicate', 400, true],
  ['stream without Content-Length', req(OPT, [], '', null), 'content_length_missing', 400, true, { framing: 'stream' }],
  ['clerr: body shorter than announced', req(OPT, [], '', 'Content-Length: 50'), 'body_truncated', 400, true],
  ['stream: body shorter than announced', req(OPT, [], 'abc', 'Content-Length: 5'), 'body_truncated', 400, true, { framing: 'stream' }],
  // RFC 7118 5: one SIP message per WebSocket message
  ['websocket: bytes after the message in its frame', req(OPT, [], 'abcXY', 'Content-Length: 3'), 'trailing_bytes', 400, true, { framing: 'message' }],
];

test('one rejection per reason code, with status and partial', () => {
  const seen = new Set<ParseReason>();
  for (const [name, bytes, reason, status, partial, opts] of REASONS) {
    const r = parseMessage(bytes, opts);
    assert.equal(r.ok, false, name);
    if (r.ok) continue;
    assert.equal(r.reason, reason, name);
    assert.equal(r.status, status, name);
    assert.equal(r.partial !== undefined, partial, `${name}: partial`);
    seen.add(r.reason);
  }
  assert.deepEqual([...seen].sort(), [...PARSE_REASONS].sort(), 'every reason code is exercised');
});

test('partial message keeps every well-formed field and skips defective lines', () => {
  const r = parseMessage(req('OPTIONS sip:a@example.com SIP/7.0', ['Bad Line', 'Subject: a\u0000b', 'X-Ok: yes']));
  assert.equal(r.ok, false);
  if (r.ok) return;
  assert.equal(r.reason, 'version_unsupported');
  const p = r.partial;
  assert.ok(p !== undefined && p.kind === 'request');
  assert.equal(p.method, 'OPTIONS');
  const names = p.headers.map((h) => h.name);
  assert.deepEqual(names, ['via', 'from', 'to', 'call-id', 'cseq', 'max-forwards', 'x-ok', 'content-length']);
  assert.equal(p.headers.find((h) => h.name === 'call-id')?.value, 'a84b4c76e66710@pc33.example.com');
});

test('first defect in byte order decides the reason', () => {
  const r = parseMessage(req(OPT, ['Bad Line', 'Subject: a\u0000b']));
  assert.equal(!r.ok && r.reason, 'header_syntax');
  const r2 = parseMessage(req(OPT, ['Subject: a\u0000b', 'Bad Line']));
  assert.equal(!r2.ok && r2.reason, 'control_char');
});

test('datagram framing: bytes past Content-Length are discarded; no Content-Length runs to the end', () => {
  const base = req(OPT, [], 'hello');
  const withJunk = Buffer.concat([base, Buffer.from('JUNKJUNK')]);
  const m = ok(parseMessage(withJunk));
  assert.equal(m.bodyLength, 5);
  assert.equal(m.raw.toString('latin1', m.bodyStart, m.bodyStart + m.bodyLength), 'hello');
  const m2 = ok(parseMessage(req(OPT, [], 'body bytes \u0000\r\n\u0001', null)));
  assert.equal(m2.bodyLength, 'body bytes \u0000\r\n\u0001'.length);
  // the body may contain any byte
  const m3 = ok(parseMessage(req(OPT, [], '\u0000\r\r\n\u007f')));
  assert.equal(m3.bodyLength, 5);
});

test('stream framing: exact message with Content-Length', () => {
  const m = ok(parseMessage(OK_INVITE, { framing: 'stream' }));
  assert.equal(m.bodyStart + m.bodyLength, OK_INVITE.length);
});

test('limits are configurable', () => {
  const limits = { ...DEFAULT_LIMITS, maxHeaders: 5 };
  const r = parseMessage(INVITE_YEALINK, { limits });
  assert.equal(!r.ok && r.reason, 'too_many_headers');
  const r2 = parseMessage(INVITE_YEALINK, { limits: { ...DEFAULT_LIMITS, maxMessageBytes: 300 } });
  assert.equal(!r2.ok && r2.reason, 'message_too_large');
  const r3 = parseMessage(INVITE_YEALINK, { limits: { ...DEFAULT_LIMITS, maxRequestUriBytes: 10 } });
  assert.equal(!r3.ok && r3.reason, 'request_uri_too_long');
});

test('a message exactly at the size cap is accepted, one byte over is not', () => {
  const head = req(OPT, [], '', 'Content-Length: 00000');
  const bodyLen = DEFAULT_LIMITS.maxMessageBytes - head.length;
  const exact = req(OPT, [], 'b'.repeat(bodyLen), `Content-Length: ${String(bodyLen).padStart(5, '0')}`);
  assert.equal(exact.length, DEFAULT_LIMITS.maxMessageBytes);
  ok(parseMessage(exact));
  const over = req(OPT, [], 'b'.repeat(bodyLen + 1), `Content-Length: ${String(bodyLen + 1).padStart(5, '0')}`);
  const r = parseMessage(over);
  assert.equal(!r.ok && r.reason, 'message_too_large');
});

test('whitespace between header name and colon is legal (HCOLON)', () => {
  const m = ok(parseMessage(req(OPT, ['X-Spaced \t : v'])));
  const h = m.headers.find((x) => x.name === 'x-spaced');
  assert.equal(h?.rawName, 'X-Spaced');
  assert.equal(h?.value, 'v');
});

test('control bytes: a quoted-pair may escape NUL inside a quoted-string (RFC 3261 25.1), nowhere else', () => {
  const mk = (to: string): Buffer => Buffer.from(
    `OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKq1\r\nFrom: <sip:b@example.com>;tag=1\r\nTo: ${to}\r\nCall-ID: q1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n`, 'latin1');
  assert.equal(parseMessage(mk('"a\\\x00b\\\x07" <sip:a@example.com>')).ok, true);
  const raw = parseMessage(mk('"a\x00b" <sip:a@example.com>'));
  assert.equal(raw.ok, false);
  assert.equal(!raw.ok && raw.reason, 'control_char');
  const outside = parseMessage(mk('<sip:a@example.com>;x=\\\x00'));
  assert.equal(!outside.ok && outside.reason, 'control_char');
  // an escaped CR is not a quoted-pair
  const cr = parseMessage(mk('"a\\\rb" <sip:a@example.com>'));
  assert.equal(cr.ok, false);
});
