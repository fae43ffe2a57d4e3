import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseMessage } from '../edge/sip/parser';
import * as H from '../edge/sip/headers';
import type { SipMessage } from '../edge/sip/types';
import { COMPACT, ESC01, INTMETH, INVITE_YEALINK, IPV6, MULTI, OK_INVITE, REGISTER_ZOIPER, SAMPLES, SEMIURI, SIPVICIOUS, UNREGISTER, WSINV, sip } from './helpers/messages';

function parsed(b: Buffer): SipMessage {
  const r = parseMessage(b);
  if (!r.ok) assert.fail(`parse failed: ${r.reason}`);
  return r.msg;
}

test('canonicalName expands every compact form and lower-cases', () => {
  const table: [string, string][] = [
    ['v', 'via'], ['f', 'from'], ['t', 'to'], ['i', 'call-id'], ['m', 'contact'], ['l', 'content-length'],
    ['c', 'content-type'], ['k', 'supported'], ['s', 'subject'], ['e', 'content-encoding'], ['o', 'event'],
    ['u', 'allow-events'], ['r', 'refer-to'], ['b', 'referred-by'], ['x', 'session-expires'], ['y', 'identity'],
    ['a', 'accept-contact'], ['j', 'reject-contact'], ['d', 'request-disposition'],
    ['V', 'via'], ['I', 'call-id'], ['Call-ID', 'call-id'], ['CALL-ID', 'call-id'], ['X-Custom', 'x-custom'],
    ['q', 'q'], ['WWW-Authenticate', 'www-authenticate'],
  ];
  for (const [raw, want] of table) assert.equal(H.canonicalName(raw), want, raw);
});

test('fields / first / count by any name form', () => {
  const m = parsed(MULTI);
  assert.equal(H.count(m, 'Via'), 2);
  assert.equal(H.count(m, 'v'), 2);
  assert.equal(H.fields(m, 'route').length, 2);
  assert.equal(H.first(m, 'Call-ID'), '1426489117@192.168.1.23');
  assert.equal(H.first(m, 'i'), '1426489117@192.168.1.23');
  assert.equal(H.first(m, 'X-Nope'), undefined);
  assert.equal(H.count(m, 'x-nope'), 0);
  // callers cannot corrupt the index through the returned array
  H.fields(m, 'via').length = 0;
  assert.equal(H.count(m, 'via'), 2);
});

test('splitCommaList respects quotes, escapes and <>', () => {
  const table: [string, string[]][] = [
    ['a, b ,c', ['a', 'b', 'c']],
    ['"Bell, Alexander" <sip:a@x>, <sip:b@y>', ['"Bell, Alexander" <sip:a@x>', '<sip:b@y>']],
    ['"a \\", b" <sip:a@x>, c', ['"a \\", b" <sip:a@x>', 'c']],
    ['<sip:a@x;p=1,2>, <sip:b@y>', ['<sip:a@x;p=1,2>', '<sip:b@y>']],
    ['', []],
    ['   ', []],
    [';;,,;;,;', [';;', '', ';;', ';']],
    ['"unterminated, quote', ['"unterminated, quote']],
  ];
  for (const [v, want] of table) assert.deepEqual(H.splitCommaList(v), want, v);
});

test('parseUri: valid URIs', () => {
  const table: [string, Partial<Record<string, unknown>>][] = [
    ['sip:alice@atlanta.example.com', { scheme: 'sip', user: 'alice', host: 'atlanta.example.com', isIPv6: false }],
    ['SIPS:Bob@Biloxi.Example.COM:5061', { scheme: 'sips', user: 'Bob', host: 'biloxi.example.com', port: 5061 }],
    ['sip:alice:secretword@atlanta.com;transport=tcp', { user: 'alice', password: 'secretword', host: 'atlanta.com' }],
    ['sip:+1-212-555-1212:1234@gateway.com;user=phone', { user: '+1-212-555-1212', password: '1234' }],
    ['sip:192.0.2.4', { host: '192.0.2.4', user: undefined }],
    ['sip:[2001:db8::10]:5070;transport=udp', { host: '2001:db8::10', isIPv6: true, port: 5070 }],
    ['sip:[::ffff:192.0.2.1]', { host: '::ffff:192.0.2.1', isIPv6: true }],
    ['sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com', { host: 'atlanta.com', headers: 'to=alice%40atlanta.com' }],
    ['sip:user;par=u%40example.net@example.com', { user: 'user;par=u%40example.net', host: 'example.com' }],
    ['sip:sips%3Auser%40example.com@example.net', { user: 'sips%3Auser%40example.com', host: 'example.net' }],
    ['sip:example.com.', { host: 'example.com.' }],
    ['sip:h;lr', { host: 'h' }],
    ['tel:+1-201-555-0123;phone-context=example.com', { scheme: 'tel', user: '+1-201-555-0123', host: '' }],
    ['mailto:alice@example.com', { scheme: 'mailto', host: '', user: undefined }],
    ['https://example.com/x', { scheme: 'https', host: '' }],
  ];
  for (const [text, want] of table) {
    const u = H.parseUri(text);
    assert.ok(u !== null, text);
    for (const [k, v] of Object.entries(want)) assert.deepEqual((u as unknown as Record<string, unknown>)[k], v, `${text} ${k}`);
    assert.equal(u.raw, text);
  }
  const u = H.parseUri('sip:a@h;Transport=TCP;lr;maddr=239.255.255.1');
  assert.ok(u !== null);
  assert.deepEqual([...u.params], [['transport', 'TCP'], ['lr', null], ['maddr', '239.255.255.1']]);
});

test('parseUri: invalid URIs are null', () => {
  const bad = [
    '', 'sip:', 'sip:@example.com', 'alice@example.com', '1sip:a@b', 'sip:a b@c', 'sip:a@b c',
    'sip:a@exa_mple.com', 'sip:a@-bad.com', 'sip:a@bad-.com', 'sip:a@x..y', 'sip:a@1.2.3.256',
    'sip:a@[2001:db8::1', 'sip:a@[2001:db8:::1]', 'sip:a@[1:2:3:4:5:6:7:8:9]', 'sip:a@[12345::1]', 'sip:a@2001:db8::1',
    'sip:a@h:65536', 'sip:a@h:', 'sip:a@h:12x', 'sip:a%4@h', 'sip:a%zz@h', 'sip:a@h;p=%', 'sip:a@h;;', 'sip:a@h;=v',
    'sip:a@h?x', 'sip:a@h?=v', 'sip:a@b@c', 'sip:<a@b>', 'tel:', 'tel:;x', 'sip:a@h\u0000', 'sip:a@h;p=\u00e9',
  ];
  for (const t of bad) assert.equal(H.parseUri(t), null, JSON.stringify(t));
});

test('parseNameAddr', () => {
  const a = H.parseNameAddr('"Bell, Alexander" <sip:a.g.bell@example.com>;tag=433423');
  assert.ok(a !== null);
  assert.equal(a.displayName, 'Bell, Alexander');
  assert.equal(a.uri.user, 'a.g.bell');
  assert.equal(a.params.get('tag'), '433423');
  const b = H.parseNameAddr('sip:bob@biloxi.com;tag=a6c85cf');
  assert.ok(b !== null);
  assert.equal(b.uriRaw, 'sip:bob@biloxi.com');
  assert.equal(b.params.get('tag'), 'a6c85cf', 'params after an addr-spec are header params');
  assert.equal(b.uri.params.size, 0);
  const c = H.parseNameAddr('Alice  Liddell <sip:alice@x.example>');
  assert.equal(c?.displayName, 'Alice Liddell');
  const d = H.parseNameAddr('<sip:a@b;lr>');
  assert.equal(d?.displayName, undefined);
  assert.equal(d?.uri.params.has('lr'), true);
  const e = H.parseNameAddr('"J Rosenberg \\\\\\"" <sip:jdrosen@example.com> ; tag = 98asjd8');
  assert.equal(e?.displayName, 'J Rosenberg \\"');
  assert.equal(e?.params.get('tag'), '98asjd8');
  const f = H.parseNameAddr('<sip:u@h>;+sip.instance="<urn:uuid:0000>";reg-id=1;expires');
  assert.equal(f?.params.get('+sip.instance'), '"<urn:uuid:0000>"');
  assert.equal(f?.params.get('expires'), null);
  const g = H.parseNameAddr('"sipvicious"<sip:100@1.1.1.1>; tag=6138');
  assert.equal(g?.displayName, 'sipvicious');
  assert.equal(g?.params.get('tag'), '6138');
  const bad = ['', '<sip:a@b', '"unterminated <sip:a@b>', 'Bad"Name <sip:a@b>', 'sip:a@b?x=y', '<sip:a@b>;', '<sip:a@b>;t=', '<sip:a@b> junk',
    'To: "Watson, Thomas" < sip:t.watson@example.org >', '<>', '<sip:a b@c>'];
  for (const t of bad) assert.equal(H.parseNameAddr(t), null, t);
});

test('parseVia', () => {
  const v = H.parseVia('SIP/2.0/UDP 192.168.1.23:5060;branch=z9hG4bK1497823375;rport');
  assert.ok(v !== null);
  assert.equal(v.protocol, 'SIP/2.0');
  assert.equal(v.transport, 'UDP');
  assert.equal(v.host, '192.168.1.23');
  assert.equal(v.port, 5060);
  assert.equal(v.branch, 'z9hG4bK1497823375');
  assert.equal(v.params.get('rport'), null);
  const w = H.parseVia('SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw');
  assert.equal(w?.host, '192.0.2.2');
  const x = H.parseVia('SIP  / 2.0  / tcp     spindle.example.com   ; branch  =   z9hG4bK9ikj8');
  assert.equal(x?.transport, 'TCP');
  assert.equal(x?.branch, 'z9hG4bK9ikj8');
  const y = H.parseVia('SIP/2.0/TCP [2001:DB8::9:1] : 5061;received=2001:db8::9:255;branch=z9hG4bKx;maddr=[2001:db8::1];ttl=16');
  assert.equal(y?.host, '2001:db8::9:1');
  assert.equal(y?.port, 5061);
  assert.equal(y?.params.get('received'), '2001:db8::9:255');
  assert.equal(H.parseVia('SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3')?.params.get('received'), '[2001:db8::9:255]');
  const bad = [
    '', 'SIP/2.0/UDP', 'SIP/2.0 UDP host', 'SIP/2.0/UDPhost', 'SIP/2.0/UDP host:99999', 'SIP/2.0/UDP host;branch',
    'SIP/2.0/UDP host;received=not-an-ip', 'SIP/2.0/UDP host;ttl=300', 'SIP/2.0/UDP host;rport=x', 'SIP/2.0/UDP [::1',
    'SIP/2.0/UDP host junk', 'SIP/2.0/UDP ho_st', 'SIP/2.0/UDP host;;branch=1', 'SIP/2.0/UDP host;branch="q"',
  ];
  for (const t of bad) assert.equal(H.parseVia(t), null, t);
});

test('accessors over real messages', () => {
  const inv = parsed(INVITE_YEALINK);
  assert.equal(H.topVia(inv)?.branch, 'z9hG4bK1497823375');
  assert.equal(H.from(inv)?.displayName, 'Alice Desk');
  assert.equal(H.from(inv)?.params.get('tag'), '3519573745');
  assert.equal(H.to(inv)?.params.has('tag'), false);
  assert.equal(H.callId(inv), '1426489117@192.168.1.23');
  assert.deepEqual(H.cseq(inv), { seq: 1, method: 'INVITE' });
  assert.equal(H.maxForwards(inv), 70);
  assert.equal(H.contentLength(inv), 200);
  assert.equal(H.expires(inv), undefined);
  assert.equal(H.routes(inv), undefined);
  assert.deepEqual(H.optionTags(inv, 'supported'), ['replaces', 'timer']);
  assert.deepEqual(H.optionTags(inv, 'require'), []);
  assert.equal(H.requestUri(inv)?.user, '1002');

  const ok = parsed(OK_INVITE);
  assert.equal(H.vias(ok)?.length, 2);
  assert.equal(H.vias(ok)?.[1]?.params.get('received'), '198.51.100.7');
  assert.deepEqual(H.recordRoutes(ok)?.map((r) => r.uri.host), ['203.0.113.5', '10.0.0.2']);
  assert.equal(H.requestUri(ok), null);

  const reg = parsed(REGISTER_ZOIPER);
  assert.equal(H.expires(reg), 60);
  assert.equal(H.contacts(reg)?.[0]?.params.get('reg-id'), '1');
  assert.equal(H.contacts(reg)?.[0]?.uri.params.get('transport'), 'TCP');
  assert.ok(H.optionTags(reg, 'supported').includes('x-cisco-serviceuri'));
  assert.equal(H.requestUri(reg)?.params.get('transport'), 'TCP');

  const wsinv = parsed(WSINV);
  assert.deepEqual(H.vias(wsinv)?.map((v) => [v.transport, v.host, v.branch]), [
    ['UDP', '192.0.2.2', '390skdjuw'], ['TCP', 'spindle.example.com', 'z9hG4bK9ikj8'], ['UDP', '192.168.255.111', 'z9hG4bK30239']]);
  assert.equal(H.maxForwards(wsinv), 68);
  assert.deepEqual(H.cseq(wsinv), { seq: 9, method: 'INVITE' });
  assert.equal(H.to(wsinv)?.params.get('tag'), '1918181833n');
  assert.equal(H.from(wsinv)?.displayName, 'J Rosenberg \\"');
  const c = H.contacts(wsinv)?.[0];
  assert.equal(c?.displayName, 'Quoted string ""');
  assert.deepEqual([...(c?.params ?? [])], [['newparam', 'newvalue'], ['secondparam', null], ['q', '0.33']]);
  assert.equal(H.routes(wsinv)?.[0]?.uri.params.get('unknownwith'), 'value');

  const compact = parsed(COMPACT);
  assert.equal(H.topVia(compact)?.transport, 'TCP');
  assert.equal(H.from(compact)?.displayName, 'Alice');
  assert.equal(H.callId(compact), '3848276298220188511@atlanta.example.com');
  assert.deepEqual(H.optionTags(compact, 'supported'), ['timer']);

  const v6 = parsed(IPV6);
  assert.equal(H.topVia(v6)?.host, '2001:db8::9:1');
  assert.equal(H.requestUri(v6)?.isIPv6, true);
  assert.equal(H.contacts(v6)?.[0]?.uri.port, 5070);

  const multi = parsed(MULTI);
  assert.deepEqual(H.vias(multi)?.map((v) => v.branch), ['z9hG4bKaaa', 'z9hG4bKbbb', 'z9hG4bKccc']);
  assert.equal(H.vias(multi)?.[1]?.host, '2001:db8::5');
  assert.deepEqual(H.routes(multi)?.map((r) => r.uri.host), ['203.0.113.5', '10.0.0.2', '10.0.0.3']);

  const im = parsed(INTMETH);
  assert.equal(H.requestUri(im)?.password, "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)");
  assert.equal(H.callId(im), 'intmeth.word%ZK-!.*_+\'@word`~)(><:\\/"][?}{');
  assert.equal(H.cseq(im)?.method, "!interesting-Method0123456789_*+`.%indeed'~");
  assert.equal(H.from(im)?.params.get('tag'), "_token~1'+`*%!-.");
  assert.equal(H.maxForwards(im), 255);

  assert.equal(H.requestUri(parsed(SEMIURI))?.user, 'user;par=u%40example.net');
  assert.equal(H.contacts(parsed(ESC01))?.[0]?.uri.params.get('n%61me'), 'v%61lue%25%34%31');
  assert.equal(H.to(parsed(SIPVICIOUS))?.displayName, 'sipvicious');

  const unreg = parsed(UNREGISTER);
  assert.deepEqual(H.contacts(unreg), []);
  assert.equal(unreg.cache.get('contactStar'), true);
  assert.equal(Buffer.from(H.from(unreg)?.displayName ?? '', 'latin1').toString('utf8'), 'Jürgen Müller');
  assert.equal(H.expires(unreg), 0);
});

const OPT = 'OPTIONS sip:bob@example.com SIP/2.0';
const withHeaders = (...lines: string[]): SipMessage => parsed(sip([OPT, ...lines, 'Content-Length: 0']));

test('numeric accessors: ranges and unparsable values', () => {
  assert.deepEqual(H.cseq(withHeaders('CSeq: 4294967296 INVITE')), { seq: 4294967296, method: 'INVITE' });
  assert.deepEqual(H.cseq(withHeaders('CSeq: 9999999999 INVITE')), { seq: 9999999999, method: 'INVITE' });
  for (const v of ['99999999999 INVITE', 'INVITE', '1', '1INVITE', '-1 INVITE', '1 INV ITE', '1 INV@TE', ''])
    assert.equal(H.cseq(withHeaders(`CSeq: ${v}`)), null, v);
  assert.equal(H.maxForwards(withHeaders('Max-Forwards: 0')), 0);
  assert.equal(H.maxForwards(withHeaders('Max-Forwards: 255')), 255);
  assert.equal(H.maxForwards(withHeaders('Max-Forwards: 000000000000070')), 70);
  for (const v of ['256', '-1', '7O', '', '99999999999999999999']) assert.equal(H.maxForwards(withHeaders(`Max-Forwards: ${v}`)), null, v);
  assert.equal(H.expires(withHeaders('Expires: 4294967295')), 4294967295);
  for (const v of ['4294967296', 'Thu, 01 Dec 1994 16:00:00 GMT', '-5', '']) assert.equal(H.expires(withHeaders(`Expires: ${v}`)), null, v);
  for (const v of ['', 'a b', '@x', 'x@', 'a@b@c', 'a\u00e9']) assert.equal(H.callId(withHeaders(`Call-ID: ${v}`)), null, JSON.stringify(v));
  assert.equal(H.callId(withHeaders()), undefined);
  assert.equal(H.cseq(withHeaders()), undefined);
  assert.equal(H.maxForwards(withHeaders()), undefined);
  assert.equal(H.contentLength(withHeaders()), 0);
});

test('list accessors: null when any value is unparsable; Contact "*" rules', () => {
  assert.equal(H.vias(withHeaders('Via: SIP/2.0/UDP a.example;branch=z9hG4bK1', 'Via: garbage')), null);
  assert.equal(H.topVia(withHeaders('Via: SIP/2.0/UDP a.example;branch=z9hG4bK1', 'Via: garbage'))?.host, 'a.example');
  assert.equal(H.topVia(withHeaders('Via: garbage, SIP/2.0/UDP a.example')), null);
  assert.equal(H.topVia(withHeaders()), undefined);
  assert.deepEqual(H.vias(withHeaders()), []);
  assert.equal(H.routes(withHeaders('Route: <sip:a@b;lr>, junk')), null);
  assert.equal(H.routes(withHeaders('Route: <sip:a@b;lr>,')), null);
  assert.equal(H.paths(withHeaders('Path: <sip:edge.example;lr>'))?.[0]?.uri.host, 'edge.example');
  assert.equal(H.contacts(withHeaders('Contact: *', 'Contact: <sip:a@b>')), null);
  assert.equal(H.contacts(withHeaders('Contact: *, <sip:a@b>')), null);
  assert.equal(H.contacts(withHeaders('Contact: ')), null);
  const m = withHeaders('Contact: <sip:a@b>');
  assert.equal(H.contacts(m)?.length, 1);
  assert.equal(m.cache.get('contactStar'), false);
  assert.equal(H.from(withHeaders('From: <sip:a@b')), null);
  assert.equal(H.from(withHeaders()), undefined);
  assert.equal(H.requestUri(parsed(sip(['OPTIONS sip:a@bad_host SIP/2.0', 'Content-Length: 0']))), null);
  assert.deepEqual(H.optionTags(withHeaders('Require: 100REL, Timer', 'Require: path'), 'require'), ['100rel', 'timer', 'path']);
});

test('results are memoised on the message', () => {
  for (const s of SAMPLES) {
    const m = parsed(s.bytes);
    assert.equal(H.vias(m), H.vias(m));
    assert.equal(H.topVia(m), H.topVia(m));
    assert.equal(H.from(m), H.from(m));
    assert.equal(H.cseq(m), H.cseq(m));
    assert.equal(H.contacts(m), H.contacts(m));
    assert.equal(H.requestUri(m), H.requestUri(m));
  }
});

test('top Via and the Via list agree whichever is asked first (the memo shares the parsed top)', () => {
  const cases = [
    ['Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP b.example.com:5070;branch=z9hG4bK2'],
    ['Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1', 'Via: SIP/2.0/UDP 192.0.2.1;received=198.51.100.7'],
    ['Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, garbage'],
    ['Via: garbage, SIP/2.0/UDP a.example.com'],
    ['Via: '],
    [],
  ];
  for (const c of cases) {
    const a = withHeaders(...c);
    const topFirst = [H.topVia(a), H.vias(a)];
    const b = withHeaders(...c);
    const listFirst = H.vias(b);
    assert.deepEqual([H.topVia(b), listFirst], topFirst, c.join(' | '));
  }
});
