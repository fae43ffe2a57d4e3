// Topology hiding, unit level: the sealed tokens (tamper -> refused) and the rewrites of
// edge/router/topology.ts on messages, both ways. The end-to-end check with a real PBX and real
// phones is test/topology-hiding.test.ts.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DEFAULT_TOPOLOGY, TokenSealer, Topology, sdpInside } from '../edge/router/topology';
import { parseMessage } from '../edge/sip/parser';
import type { SipMessage } from '../edge/sip/types';

const EDGE = '203.0.113.5';
const inside = (a: string): boolean => a.startsWith('10.') || a === '127.0.0.77';
const own = (h: string, p: number | undefined): boolean => h === EDGE && (p ?? 5060) === 5060;

function topo(extra: Partial<typeof DEFAULT_TOPOLOGY> = {}, key = 'k'.repeat(64)): Topology {
  return new Topology({ cfg: { ...DEFAULT_TOPOLOGY, key, ...extra }, isInside: inside, isOwnHost: own });
}
function parse(b: Buffer | string): SipMessage {
  const r = parseMessage(Buffer.isBuffer(b) ? b : Buffer.from(b, 'latin1'));
  assert.ok(r.ok, 'parses');
  return r.msg;
}
const lines = (...l: string[]): string => l.join('\r\n') + '\r\n\r\n';
const OUT = { hostPort: `${EDGE}:5060`, transport: 'udp' };

describe('topology tokens', () => {
  test('seal/open round trip, deterministic, opaque', () => {
    const s = new TokenSealer(Buffer.alloc(32, 7));
    const t = s.seal('sip:pbx@10.0.0.9:5080;transport=tcp');
    assert.equal(s.open(t), 'sip:pbx@10.0.0.9:5080;transport=tcp');
    assert.equal(s.seal('sip:pbx@10.0.0.9:5080;transport=tcp'), t, 'same input, same token');
    assert.match(t, /^[A-Za-z0-9_-]+$/);
    assert.ok(!t.includes('10.0.0.9'));
  });

  test('tampered, truncated, foreign-key and garbage tokens are refused (never thrown)', () => {
    const s = new TokenSealer(Buffer.alloc(32, 7));
    const t = s.seal('sip:10.0.0.9');
    for (let i = 0; i < t.length; i++) {
      const c = t[i] === 'A' ? 'B' : 'A';
      const bad = t.slice(0, i) + c + t.slice(i + 1);
      if (Buffer.from(bad, 'base64url').equals(Buffer.from(t, 'base64url'))) continue; // last char's spare bits
      assert.equal(s.open(bad), null, `flip at ${i}`);
    }
    assert.equal(s.open(t.slice(0, -1)), null);
    assert.equal(s.open(t + 'AA'), null);
    assert.equal(new TokenSealer(Buffer.alloc(32, 8)).open(t), null, 'another key');
    for (const g of ['', 'x', 'up0', '%%%', 'A'.repeat(5000), 'A'.repeat(40)]) assert.equal(s.open(g), null);
  });

  test('a key from the configuration survives a restart; none: a random one', () => {
    const a = topo({}, 'ab'.repeat(32));
    const b = topo({}, 'ab'.repeat(32));
    const inv = lines('INVITE sip:bob@198.51.100.7 SIP/2.0', `Via: SIP/2.0/UDP ${EDGE};branch=z9hG4bK1`, 'Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKp',
      'Contact: <sip:pbx@10.0.0.9:5080>', 'CSeq: 1 INVITE', 'Call-ID: c1', 'Content-Length: 0');
    const out = parse(a.outbound(Buffer.from(inv), OUT));
    const c = out.headers.find((h) => h.name === 'contact')!.value;
    const uri = c.slice(1, c.indexOf('>'));
    const bye = lines(`BYE ${uri} SIP/2.0`, 'Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKb', 'CSeq: 2 BYE', 'Call-ID: c1', 'Content-Length: 0');
    const back = b.inbound(parse(bye));
    assert.ok(back);
    assert.match(back.toString('latin1'), /^BYE sip:pbx@10\.0\.0\.9:5080 SIP\/2\.0/);
    const other = new Topology({ cfg: { ...DEFAULT_TOPOLOGY, key: null }, isInside: inside, isOwnHost: own });
    assert.equal(other.inbound(parse(bye)), undefined, 'another (random) key does not open it');
  });
});

describe('topology rewrites', () => {
  test('a PBX-originated INVITE: inside Vias, Record-Routes, Contact and product headers hidden; the answer restores them', () => {
    const t = topo({ headers: { remove: ['server', 'user-agent', 'organization', 'warning', 'x-acme-*'], replace: { 'x-keep': 'edge' } } });
    const inv = lines(
      'INVITE sip:bob@198.51.100.7:5062 SIP/2.0',
      `Via: SIP/2.0/UDP ${EDGE}:5060;branch=z9hG4bKedge;rport`,
      'Via: SIP/2.0/UDP 10.0.0.9:5080;branch=z9hG4bKpbx',
      `Record-Route: <sip:FLOWTOKEN0123@${EDGE}:5060;lr>, <sip:up0@${EDGE}:5060;lr>`,
      'Record-Route: <sip:10.0.0.9:5080;lr>',
      'From: <sip:alice@pbx.corp.internal>;tag=1', 'To: <sip:bob@example.com>', 'Call-ID: c1@pbx', 'CSeq: 1 INVITE',
      'Contact: <sip:alice@10.0.0.9:5080;transport=udp>;+sip.instance="x"',
      'User-Agent: AcmePBX 9.1', 'Organization: Acme', 'X-Acme-Trace: 10.0.0.9', 'X-Keep: secret', 'Content-Length: 0');
    const outBuf = t.outbound(Buffer.from(inv), OUT);
    const out = outBuf.toString('latin1');
    // From carries a host name the test does not claim to hide (it is the caller's identity)
    const exposed = out.replace(/From: .*\r\n/, '');
    assert.ok(!exposed.includes('10.0.0.9'), out);
    assert.ok(!/AcmePBX|Organization|X-Acme/i.test(out), out);
    assert.match(out, /X-Keep: edge\r\n/);
    const om = parse(outBuf);
    assert.equal(om.headers.filter((h) => h.name === 'via').length, 1);
    assert.match(out, /Contact: <sip:[A-Za-z0-9_-]+@203\.0\.113\.5:5060>;\+sip\.instance="x"/);

    // the phone answers: it echoes Via and Record-Route (RFC 3261 8.2.6.2, 12.1.1)
    const via = om.headers.find((h) => h.name === 'via')!.value;
    const rr = om.headers.find((h) => h.name === 'record-route')!.value;
    const ok = lines('SIP/2.0 200 OK', `Via: ${via}`, `Record-Route: ${rr}`, 'From: <sip:alice@x>;tag=1', 'To: <sip:bob@example.com>;tag=2',
      'Call-ID: c1@pbx', 'CSeq: 1 INVITE', 'Contact: <sip:bob@198.51.100.7:5062>', 'Content-Length: 0');
    const back = t.inbound(parse(ok))!.toString('latin1');
    assert.match(back, new RegExp(`Via: SIP/2.0/UDP ${EDGE}:5060;branch=z9hG4bKedge;rport, SIP/2.0/UDP 10.0.0.9:5080;branch=z9hG4bKpbx\r\n`));
    assert.match(back, new RegExp(`Record-Route: <sip:FLOWTOKEN0123@${EDGE}:5060;lr>, <sip:up0@${EDGE}:5060;lr>, <sip:10.0.0.9:5080;lr>\r\n`));

    // the phone's BYE (UAS: route set = Record-Route in order, remote target = the sealed Contact)
    const contact = om.headers.find((h) => h.name === 'contact')!.value;
    const bye = lines(`BYE ${contact.slice(1, contact.indexOf('>'))} SIP/2.0`, 'Via: SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKb',
      `Route: ${rr}`, 'Call-ID: c1@pbx', 'CSeq: 1 BYE', 'Content-Length: 0');
    const byeIn = t.inbound(parse(bye))!.toString('latin1');
    assert.match(byeIn, /^BYE sip:alice@10\.0\.0\.9:5080;transport=udp SIP\/2\.0\r\n/);
    assert.match(byeIn, new RegExp(`Route: <sip:FLOWTOKEN0123@${EDGE}:5060;lr>, <sip:up0@${EDGE}:5060;lr>, <sip:10.0.0.9:5080;lr>\r\n`));
  });

  test('a PBX answer to an outside INVITE: Record-Route above the edge entry folded; the caller\'s route set unfolds reversed', () => {
    const t = topo();
    const ok = lines('SIP/2.0 200 OK', 'Via: SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKa;rport=5062',
      `Record-Route: <sip:10.0.0.9;lr>, <sip:up0@${EDGE}:5060;lr>, <sip:FLOWTOKEN0123@${EDGE}:5060;lr>, <sip:proxy.carrier.example;lr>`,
      'Call-ID: c2', 'CSeq: 1 INVITE', 'Contact: <sip:pbx@10.0.0.9>', 'Server: AcmePBX', 'Content-Type: application/sdp', 'Content-Length: 4', '', 'v=0\n');
    const out = t.outbound(Buffer.from(ok, 'latin1'), OUT).toString('latin1');
    assert.ok(!out.includes('10.0.0.9') && !out.includes('AcmePBX') && !out.includes('up0'), out);
    assert.ok(out.endsWith('\r\n\r\nv=0\n'), 'body kept');
    const m = parse(out);
    const rr = m.headers.find((h) => h.name === 'record-route')!.value.split(', ');
    assert.equal(rr.length, 2);
    assert.equal(rr[1], '<sip:proxy.carrier.example;lr>');
    // UAC route set (RFC 3261 12.1.2): the Record-Route reversed
    const bye = lines('BYE sip:x@198.51.100.1 SIP/2.0', 'Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKb',
      `Route: ${rr[1]}, ${rr[0]}`, 'Call-ID: c2', 'CSeq: 2 BYE', 'Content-Length: 0');
    const byeIn = t.inbound(parse(bye))!.toString('latin1');
    assert.match(byeIn, new RegExp(`Route: <sip:proxy.carrier.example;lr>, <sip:FLOWTOKEN0123@${EDGE}:5060;lr>, <sip:up0@${EDGE}:5060;lr>, <sip:10.0.0.9;lr>\r\n`));
  });

  test('REGISTER answers keep the phone\'s own bindings; nothing to hide leaves the bytes as they were', () => {
    const t = topo();
    const reg = Buffer.from(lines('SIP/2.0 200 OK', 'Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKr', 'Call-ID: r', 'CSeq: 3 REGISTER',
      'Contact: <sip:bob@198.51.100.7:5062>;expires=60', 'Content-Length: 0'));
    assert.equal(t.outbound(reg, OUT), reg);
  });

  test('a forged setr / setv / Contact token is left as it is (fails closed)', () => {
    const t = topo();
    const bye = lines(`BYE sip:${'A'.repeat(40)}@${EDGE} SIP/2.0`, 'Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKb',
      `Route: <sip:FLOWTOKEN0123@${EDGE}:5060;lr;setr=${'B'.repeat(60)}>`, 'Call-ID: x', 'CSeq: 1 BYE', 'Content-Length: 0');
    assert.equal(t.inbound(parse(bye)), undefined);
    const res = lines('SIP/2.0 200 OK', `Via: SIP/2.0/UDP ${EDGE}:5060;branch=z9hG4bK1;setv=${'C'.repeat(50)}`, 'Call-ID: x', 'CSeq: 1 BYE', 'Content-Length: 0');
    assert.equal(t.inbound(parse(res)), undefined);
  });

  test('SDP c=/o= naming an inside address is reported per field', () => {
    assert.deepEqual(sdpInside('v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 198.51.100.7\r\n', inside), ['o']);
    assert.deepEqual(sdpInside('v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\nc=IN IP4 10.0.0.9/127\r\n', inside).sort(), ['c', 'o']);
    assert.deepEqual(sdpInside('c=IN IP4 pbx.local\r\n', inside), []);
    const seen: string[] = [];
    const t = new Topology({ cfg: { ...DEFAULT_TOPOLOGY, key: null }, isInside: inside, isOwnHost: own, onSdpInside: (k, f) => seen.push(`${k}:${f}`) });
    const body = 'v=0\r\nc=IN IP4 10.0.0.9\r\n';
    t.outbound(Buffer.from(lines('SIP/2.0 200 OK', 'Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKs', 'Call-ID: s', 'CSeq: 1 INVITE',
      'Content-Type: application/sdp', `Content-Length: ${body.length}`).slice(0, -2) + '\r\n' + body, 'latin1'), OUT);
    assert.deepEqual(seen, ['response:c']);
  });
});
