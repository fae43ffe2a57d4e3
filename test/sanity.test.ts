// Sanity stage and parse-failure verdicts: one realistic message per reason code, plus benign
// traffic shaped like real phones (Linphone, Zoiper, Yealink) that must pass untouched.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseMessage } from '../edge/sip/parser';
import type { Endpoint, SipMessage } from '../edge/sip/types';
import { SANITY_REASONS, createSanityStage, type SanityOptions } from '../edge/stages/sanity';
import { verdictForParseFailure } from '../edge/stages/parse-verdict';
import { answerable } from '../edge/path/respond';
import type { Verdict } from '../edge/verdict';

const SOURCE: Endpoint = { transport: 'udp', address: '198.51.100.23', port: 5060, listenerId: 'test' };

function msg(lines: readonly string[], body = ''): Buffer {
  const head = lines.filter((l) => !/^content-length\s*:/i.test(l));
  return Buffer.from(`${head.join('\r\n')}\r\nContent-Length: ${Buffer.byteLength(body, 'latin1')}\r\n\r\n${body}`, 'latin1');
}

function parse(b: Buffer): SipMessage {
  const r = parseMessage(b, { framing: 'datagram' });
  assert.ok(r.ok, `fixture must parse: ${r.ok ? '' : r.reason}`);
  return r.msg;
}

function run(b: Buffer, opts?: Partial<SanityOptions>): Verdict {
  const v = createSanityStage(opts).check({ msg: parse(b), source: SOURCE, side: 'outside', trust: 'untrusted', receivedAt: 0 });
  assert.ok(!(v instanceof Promise));
  return v as Verdict;
}

/** a plain INVITE with one header replaced (by name prefix), removed (value null) or added */
function invite(over: Record<string, string | null> = {}, startLine = 'INVITE sip:bob@example.com SIP/2.0', extra: string[] = []): Buffer {
  const base: Array<[string, string]> = [
    ['Via', 'SIP/2.0/UDP 198.51.100.23:5060;branch=z9hG4bK776asdhds;rport'],
    ['Max-Forwards', '70'],
    ['To', 'Bob <sip:bob@example.com>'],
    ['From', 'Alice <sip:alice@example.com>;tag=1928301774'],
    ['Call-ID', 'a84b4c76e66710@pc33.example.com'],
    ['CSeq', '314159 INVITE'],
    ['Contact', '<sip:alice@198.51.100.23:5060>'],
  ];
  const lines = [startLine];
  for (const [n, v] of base) {
    if (n in over) {
      const o = over[n];
      if (o !== null && o !== undefined) lines.push(`${n}: ${o}`);
    } else {
      lines.push(`${n}: ${v}`);
    }
  }
  return msg([...lines, ...extra]);
}

function response(vias: string[], extra: string[] = []): Buffer {
  return msg([
    'SIP/2.0 200 OK',
    ...vias.map((v) => `Via: ${v}`),
    'To: Bob <sip:bob@example.com>;tag=a6c85cf',
    'From: Alice <sip:alice@example.com>;tag=1928301774',
    'Call-ID: a84b4c76e66710@pc33.example.com',
    'CSeq: 314159 INVITE',
    ...extra,
  ]);
}

type Want = { action: 'reply'; status: number; reason: string } | { action: 'drop'; reason: string };

interface Case { reason: string; want: Want; bytes: () => Buffer; opts?: Partial<SanityOptions>; why: string }

const r = (status: number, reason: string): Want => ({ action: 'reply', status, reason });
const d = (reason: string): Want => ({ action: 'drop', reason });

const CASES: Case[] = [
  { reason: 'ruri_invalid', want: r(400, 'ruri_invalid'), why: 'unbracketed IPv6 host (RFC 5118 4.2)',
    bytes: () => invite({}, 'INVITE sip:2001:db8::10 SIP/2.0') },
  { reason: 'ruri_scheme_unsupported', want: r(416, 'ruri_scheme_unsupported'), why: 'http: Request-URI',
    bytes: () => invite({}, 'INVITE http://example.com/phone SIP/2.0') },
  { reason: 'ruri_headers', want: r(400, 'ruri_headers'), why: '?headers in a Request-URI',
    bytes: () => invite({}, 'INVITE sip:bob@example.com?Subject=hello SIP/2.0') },
  { reason: 'header_missing_via', want: d('header_missing_via'), why: 'no Via: no reply can be addressed',
    bytes: () => invite({ Via: null }) },
  { reason: 'header_missing_from', want: d('header_missing_from'), why: 'no From: a reply cannot copy it',
    bytes: () => invite({ From: null }) },
  { reason: 'header_missing_to', want: d('header_missing_to'), why: 'no To', bytes: () => invite({ To: null }) },
  { reason: 'header_missing_call_id', want: d('header_missing_call_id'), why: 'no Call-ID', bytes: () => invite({ 'Call-ID': null }) },
  { reason: 'header_missing_cseq', want: d('header_missing_cseq'), why: 'no CSeq', bytes: () => invite({ CSeq: null }) },
  { reason: 'header_duplicate_from', want: r(400, 'header_duplicate_from'), why: 'two From lines',
    bytes: () => invite({}, undefined, ['From: Mallory <sip:mallory@example.net>;tag=99']) },
  { reason: 'header_duplicate_to', want: r(400, 'header_duplicate_to'), why: 'two To lines',
    bytes: () => invite({}, undefined, ['To: <sip:carol@example.com>']) },
  { reason: 'header_duplicate_call_id', want: r(400, 'header_duplicate_call_id'), why: 'two Call-ID lines (compact form)',
    bytes: () => invite({}, undefined, ['i: other@example.net']) },
  { reason: 'header_duplicate_cseq', want: r(400, 'header_duplicate_cseq'), why: 'two CSeq lines',
    bytes: () => invite({}, undefined, ['CSeq: 2 INVITE']) },
  { reason: 'header_duplicate_max_forwards', want: r(400, 'header_duplicate_max_forwards'), why: 'two Max-Forwards: still replyable',
    bytes: () => invite({}, undefined, ['Max-Forwards: 5']) },
  { reason: 'via_invalid', want: r(400, 'via_invalid'), why: 'Via with a protocol version other than SIP/2.0',
    bytes: () => invite({ Via: 'SIP/3.0/UDP 198.51.100.23;branch=z9hG4bK1' }) },
  { reason: 'cseq_invalid', want: r(400, 'cseq_invalid'), why: 'CSeq 2**31 (RFC 3261 8.1.1.5)',
    bytes: () => invite({ CSeq: '2147483648 INVITE' }) },
  { reason: 'cseq_method_mismatch', want: r(400, 'cseq_method_mismatch'), why: 'INVITE with CSeq BYE',
    bytes: () => invite({ CSeq: '1 BYE' }) },
  { reason: 'from_invalid', want: r(400, 'from_invalid'), why: 'unterminated <',
    bytes: () => invite({ From: 'Alice <sip:alice@example.com;tag=1' }) },
  { reason: 'to_invalid', want: r(400, 'to_invalid'), why: 'unterminated quoted display name (RFC 4475 quotbal)',
    bytes: () => invite({ To: '"Bob <sip:bob@example.com>' }) },
  { reason: 'from_tag_missing', want: r(400, 'from_tag_missing'), why: 'no From tag when requireFromTag is on',
    bytes: () => invite({ From: 'Alice <sip:alice@example.com>' }), opts: { requireFromTag: true } },
  { reason: 'max_forwards_invalid', want: r(400, 'max_forwards_invalid'), why: 'Max-Forwards 256 (RFC 3261 20.22: 0-255)',
    bytes: () => invite({ 'Max-Forwards': '256' }) },
  { reason: 'max_forwards_exceeded', want: r(483, 'max_forwards_exceeded'), why: 'Max-Forwards 0 (RFC 3261 16.3 step 3)',
    bytes: () => invite({ 'Max-Forwards': '0' }) },
  { reason: 'expires_invalid', want: r(400, 'expires_invalid'), why: 'Expires past 2**32-1',
    bytes: () => invite({}, undefined, ['Expires: 4294967296']) },
  { reason: 'contact_invalid', want: r(400, 'contact_invalid'), why: 'addr-spec Contact with ?headers (RFC 4475 regbadct)',
    bytes: () => invite({ Contact: 'sip:alice@198.51.100.23?Route=%3Csip:evil.example.net%3E' }) },
  { reason: 'proxy_require_unsupported', want: r(420, 'proxy_require_unsupported'), why: 'Proxy-Require: foo',
    bytes: () => invite({}, undefined, ['Proxy-Require: foo']) },
  { reason: 'via_maddr', want: d('via_maddr'), why: 'response whose top Via carries maddr',
    bytes: () => response(['SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKnashds8;maddr=224.0.1.75', 'SIP/2.0/UDP 198.51.100.23;branch=z9hG4bK776asdhds']) },
  { reason: 'via_broadcast', want: d('via_broadcast'), why: 'response whose next Via is the broadcast address (RFC 4475 bcast)',
    bytes: () => response(['SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKnashds8', 'SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK1saber23']) },
];

for (const c of CASES) {
  test(`sanity ${c.reason}: ${c.why}`, () => {
    const v = run(c.bytes(), c.opts);
    if (c.want.action === 'reply') {
      assert.equal(v.action, 'reply');
      if (v.action === 'reply') assert.deepEqual({ action: v.action, status: v.status, reason: v.reason }, c.want);
    } else {
      assert.deepEqual(v, { action: 'drop', reason: c.want.reason, rule: undefined });
    }
  });
}

test('every SANITY_REASONS code has a case, and the stage declares exactly them', () => {
  assert.deepEqual([...new Set(CASES.map((c) => c.reason))].sort(), [...SANITY_REASONS].sort());
  const st = createSanityStage();
  assert.equal(st.name, 'sanity');
  assert.deepEqual([...st.reasons], [...SANITY_REASONS]);
  for (const reason of SANITY_REASONS) assert.match(reason, /^[a-z][a-z0-9_]*$/);
});

test('420 carries an Unsupported header listing the tags as received', () => {
  const v = run(invite({}, undefined, ['Proxy-Require: Foo, bar', 'Proxy-Require: baz']));
  assert.equal(v.action, 'reply');
  if (v.action === 'reply') assert.deepEqual(v.headers, [['Unsupported', 'Foo, bar, baz']]);
});

test('Proxy-Require tags the edge implements pass (case-insensitive)', () => {
  assert.equal(run(invite({}, undefined, ['Proxy-Require: sec-agree']), { proxyRequireSupported: ['Sec-Agree'] }).action, 'continue');
});

/** the verdict as the edge carries it out: a reply aimed at an ACK or a response is a drop
 *  (decided in one place, edge/path/respond.ts, no longer by each stage) */
function carried(b: Buffer): Verdict {
  return answerable(run(b), parse(b));
}

test('ACK is never answered: failures become drops', () => {
  const ack = (over: Record<string, string | null>) => invite({ CSeq: '314159 ACK', ...over }, 'ACK sip:bob@example.com SIP/2.0');
  assert.equal(carried(ack({})).action, 'continue');
  assert.deepEqual(carried(ack({ 'Max-Forwards': '0' })), { action: 'drop', reason: 'max_forwards_exceeded', rule: undefined });
  assert.deepEqual(carried(ack({ CSeq: '314159 INVITE' })), { action: 'drop', reason: 'cseq_method_mismatch', rule: undefined });
  assert.deepEqual(carried(invite({}, 'ACK sip:bob@example.com?x=y SIP/2.0', [])).action, 'drop');
});

test('responses are never answered: header failures become drops', () => {
  const bad = msg([
    'SIP/2.0 180 Ringing',
    'Via: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKnashds8',
    'To: Bob <sip:bob@example.com>;tag=a6c85cf',
    'From: Alice <sip:alice@example.com>;tag=1928301774',
    'Call-ID: a84b4c76e66710@pc33.example.com',
    'CSeq: 99999999999 INVITE',
  ]);
  assert.deepEqual(run(bad), { action: 'drop', reason: 'cseq_invalid', rule: undefined });
  const noFrom = msg(['SIP/2.0 200 OK', 'Via: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKx', 'To: <sip:bob@example.com>;tag=1',
    'Call-ID: x@y', 'CSeq: 1 INVITE']);
  assert.deepEqual(run(noFrom), { action: 'drop', reason: 'header_missing_from', rule: undefined });
  // a response's CSeq method need not equal anything: no request line to compare with
  assert.equal(run(response(['SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKnashds8', 'SIP/2.0/UDP 198.51.100.23;branch=z9hG4bK776asdhds'])).action, 'continue');
});

test('multicast received= on the next Via is dropped too', () => {
  const v = run(response(['SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKa', 'SIP/2.0/UDP 198.51.100.23;branch=z9hG4bKb;received=239.1.2.3']));
  assert.deepEqual(v, { action: 'drop', reason: 'via_broadcast', rule: undefined });
});

// RFC 3261 18.2.2, issue 12: what the edge would drop on the way out (the response) it refuses on
// the way in (the request), with the same reason: the request's top Via is the next Via of every
// response to it. Forwarded, such a request leaves the PBX answering into nothing.
const UNDELIVERABLE_VIAS: Array<{ via: string; reason: string }> = [
  { via: 'SIP/2.0/UDP 198.51.100.23;branch=z9hG4bKm1;maddr=224.0.1.75', reason: 'via_maddr' },
  { via: 'SIP/2.0/UDP 198.51.100.23;branch=z9hG4bKm2;maddr=198.51.100.99', reason: 'via_maddr' },
  { via: 'SIP/2.0/UDP 255.255.255.255;branch=z9hG4bKb1', reason: 'via_broadcast' },
  { via: 'SIP/2.0/UDP 224.0.1.75:5060;branch=z9hG4bKb2', reason: 'via_broadcast' },
  { via: 'SIP/2.0/UDP [ff02::1]:5060;branch=z9hG4bKb3', reason: 'via_broadcast' },
  { via: 'SIP/2.0/UDP 198.51.100.23;branch=z9hG4bKb4;received=239.1.2.3', reason: 'via_broadcast' },
];

for (const c of UNDELIVERABLE_VIAS) {
  test(`a request whose top Via is ${c.via.split(' ')[1]} is refused (${c.reason}), as its response would be dropped`, () => {
    const req = run(invite({ Via: c.via }));
    assert.equal(req.action, 'reply');
    if (req.action === 'reply') assert.deepEqual([req.status, req.reason], [400, c.reason]);
    const res = run(response(['SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKedge', c.via]));
    assert.deepEqual(res, { action: 'drop', reason: c.reason, rule: undefined });
  });
}

test('a request with an unparsable lower Via is refused (its responses would be dropped as via_invalid)', () => {
  const bad = invite({}, undefined, ['Via: SIP/2.0/UDP ;;;']);
  const v = run(bad);
  assert.equal(v.action, 'reply');
  if (v.action === 'reply') assert.deepEqual([v.status, v.reason], [400, 'via_invalid']);
  assert.deepEqual(run(response(['SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKedge', 'SIP/2.0/UDP 198.51.100.23;branch=z9hG4bK1', 'SIP/2.0/UDP ;;;'])),
    { action: 'drop', reason: 'via_invalid', rule: undefined });
});

test('an ACK with a maddr Via is dropped, never answered', () => {
  const v = carried(invite({ CSeq: '314159 ACK', Via: 'SIP/2.0/UDP 198.51.100.23;branch=z9hG4bKa;maddr=224.0.1.75' }, 'ACK sip:bob@example.com SIP/2.0'));
  assert.deepEqual(v, { action: 'drop', reason: 'via_maddr', rule: undefined });
});

test('a request with no From tag passes by default (RFC 2543 peers, RFC 4475 3.4.1)', () => {
  assert.equal(run(invite({ From: '<sip:alice@example.com>' })).action, 'continue');
});

test('a request without Max-Forwards passes (RFC 3261 16.3 step 3)', () => {
  assert.equal(run(invite({ 'Max-Forwards': null })).action, 'continue');
});

test('schemes option: tel accepted by default, removable', () => {
  const tel = invite({}, 'INVITE tel:+15551234567 SIP/2.0');
  assert.equal(run(tel).action, 'continue');
  const v = run(tel, { schemes: ['sip', 'sips'] });
  assert.equal(v.action === 'reply' ? v.status : 0, 416);
});

// Benign traffic shaped like real phones: must pass.
const SDP = [
  'v=0', 'o=- 3846172283 3846172283 IN IP4 192.168.1.50', 's=Talk', 'c=IN IP4 192.168.1.50', 't=0 0',
  'm=audio 7078 RTP/AVP 96 0 8 101', 'a=rtpmap:96 opus/48000/2', 'a=rtpmap:101 telephone-event/8000', 'a=sendrecv', '',
].join('\r\n');

const BENIGN: Array<[string, Buffer]> = [
  ['Linphone REGISTER', msg([
    'REGISTER sip:sip.example.com SIP/2.0',
    'Via: SIP/2.0/UDP 192.168.1.50:5060;branch=z9hG4bK.Jk3pQ7rTa;rport',
    'From: <sip:1001@sip.example.com>;tag=Lk2m~9xQ',
    'To: sip:1001@sip.example.com',
    'CSeq: 20 REGISTER',
    'Call-ID: 4hG7d~Jp2Q',
    'Max-Forwards: 70',
    'Supported: replaces, outbound, gruu, path',
    'Accept: application/sdp',
    'Accept: text/plain',
    'Accept: application/vnd.gsma.rcs-ft-http+xml',
    'Contact: <sip:1001@192.168.1.50;transport=udp>;+sip.instance="<urn:uuid:9e0f-4a2b-8c1d>";+org.linphone.specs="lime";expires=3600',
    'Expires: 3600',
    'User-Agent: Linphone-Desktop/5.2.6 (belle-sip/5.3.0)',
  ])],
  ['Zoiper INVITE with SDP', msg([
    'INVITE sip:1002@sip.example.com;transport=UDP SIP/2.0',
    'Via: SIP/2.0/UDP 192.168.1.51:43211;branch=z9hG4bK-524287-1---3b9c4e1f7a2d9b6c;rport',
    'Max-Forwards: 70',
    'Contact: <sip:1001@192.168.1.51:43211;transport=UDP>',
    'To: <sip:1002@sip.example.com>',
    'From: "1001"<sip:1001@sip.example.com;transport=UDP>;tag=9f1c2a3b',
    'Call-ID: Y2E0ZjM1NDFhOGQ0ZGI4ZmNmYjM0NjJkYzA2NzQ',
    'CSeq: 2 INVITE',
    'Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE',
    'Content-Type: application/sdp',
    'Supported: replaces, norefersub, extended-refer, timer, sec-agree, outbound, path, X-cisco-serviceuri',
    'User-Agent: Z 5.6.1 v2.10.19.9',
    'Proxy-Authorization: Digest username="1001",realm="sip.example.com",nonce="5f2c9d1e",uri="sip:1002@sip.example.com;transport=UDP",response="0a4f113b1e3c2d5e6f708192a3b4c5d6",algorithm=MD5',
    'Allow-Events: presence, kpml, talk, as-feature-event',
  ], SDP)],
  ['Yealink REGISTER', msg([
    'REGISTER sip:pbx.example.com:5060 SIP/2.0',
    'Via: SIP/2.0/UDP 10.0.0.23:5062;branch=z9hG4bK2437526912',
    'From: "Reception" <sip:200@pbx.example.com:5060>;tag=1417447830',
    'To: "Reception" <sip:200@pbx.example.com:5060>',
    'Call-ID: 1806153591@10.0.0.23',
    'CSeq: 2 REGISTER',
    'Contact: <sip:200@10.0.0.23:5062>;reg-id=1;+sip.instance="<urn:uuid:00000000-0000-1000-8000-805EC0A1B2C3>"',
    'Authorization: Digest username="200", realm="asterisk", nonce="1a2b3c4d", uri="sip:pbx.example.com:5060", response="8f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c", algorithm=MD5',
    'X-Grandstream-PBX: true',
    'Max-Forwards: 70',
    'User-Agent: Yealink SIP-T46S 66.86.0.15',
    'Expires: 3600',
    'Allow: INVITE, INFO, PRACK, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REGISTER, SUBSCRIBE, REFER, PUBLISH, UPDATE, MESSAGE',
  ])],
  ['Yealink INVITE with SDP', msg([
    'INVITE sip:2001@pbx.example.com:5060 SIP/2.0',
    'Via: SIP/2.0/UDP 10.0.0.23:5062;branch=z9hG4bK1839372405',
    'From: "Reception" <sip:200@pbx.example.com:5060>;tag=2005212394',
    'To: <sip:2001@pbx.example.com:5060>',
    'Call-ID: 0_2712826366@10.0.0.23',
    'CSeq: 1 INVITE',
    'Contact: <sip:200@10.0.0.23:5062>',
    'Content-Type: application/sdp',
    'Allow: INVITE, INFO, PRACK, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REGISTER, SUBSCRIBE, REFER, PUBLISH, UPDATE, MESSAGE',
    'Max-Forwards: 70',
    'User-Agent: Yealink SIP-T46S 66.86.0.15',
    'Supported: replaces',
    'Allow-Events: talk,hold,conference,refer,check-sync',
  ], SDP)],
  ['OPTIONS keepalive', msg([
    'OPTIONS sip:pbx.example.com SIP/2.0', 'Via: SIP/2.0/UDP 10.0.0.23:5062;branch=z9hG4bK99', 'Max-Forwards: 70',
    'From: <sip:200@pbx.example.com>;tag=1', 'To: <sip:pbx.example.com>', 'Call-ID: ka1@10.0.0.23', 'CSeq: 7 OPTIONS',
  ])],
  ['200 OK to INVITE', response(['SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKnashds8', 'SIP/2.0/UDP 192.168.1.51:43211;branch=z9hG4bK-524287-1;rport=43211;received=198.51.100.23'],
    ['Contact: <sip:bob@192.0.2.4>'])],
  ['CANCEL', invite({ CSeq: '314159 CANCEL' }, 'CANCEL sip:bob@example.com SIP/2.0')],
  ['SUBSCRIBE with Expires 0', invite({ CSeq: '5 SUBSCRIBE' }, 'SUBSCRIBE sip:bob@example.com SIP/2.0', ['Event: presence', 'Expires: 0'])],
];

for (const [name, bytes] of BENIGN) {
  test(`benign: ${name} passes`, () => {
    assert.deepEqual(run(bytes), { action: 'continue' });
  });
}

// parse-failure mapping
const failing = (b: string) => {
  const res = parseMessage(Buffer.from(b, 'latin1'), { framing: 'datagram' });
  assert.ok(!res.ok);
  return res;
};

test('parse failure on a complete request: reply with the parser status and reason', () => {
  const f = failing('INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.23;branch=z9hG4bK1\r\nFrom: <sip:a@example.com>;tag=1\r\n'
    + 'To: <sip:bob@example.com>\r\nCall-ID: x@y\r\nCSeq: 1 INVITE\r\nContent-Length: 500\r\n\r\nshort');
  assert.deepEqual(verdictForParseFailure(f, SOURCE), { action: 'reply', status: f.status, reason: f.reason });
  assert.equal(f.status, 400);
});

test('parse failure on a response, an ACK, or without a replyable partial: drop', () => {
  const resp = failing('SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 99\r\n\r\n');
  assert.deepEqual(verdictForParseFailure(resp, SOURCE), { action: 'drop', reason: resp.reason, rule: undefined });
  const ack = failing('ACK sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 ACK\r\nContent-Length: 99\r\n\r\n');
  assert.equal(answerable(verdictForParseFailure(ack, SOURCE), ack.partial).action, 'drop');
  const noCallId = failing('INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCSeq: 1 INVITE\r\nContent-Length: 99\r\n\r\n');
  assert.equal(verdictForParseFailure(noCallId, SOURCE).action, 'drop');
  const garbage = failing('\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 random TLS hello bytes');
  assert.deepEqual(verdictForParseFailure(garbage, SOURCE), { action: 'drop', reason: garbage.reason, rule: undefined });
  assert.equal(verdictForParseFailure({ reason: 'empty', status: 400 }, SOURCE).action, 'drop');
});

test('parse failure from UDP source port 0: drop', () => {
  const f = failing('INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 99\r\n\r\n');
  assert.equal(verdictForParseFailure(f, { ...SOURCE, port: 0 }).action, 'drop');
  assert.equal(verdictForParseFailure(f, SOURCE).action, 'reply');
});
