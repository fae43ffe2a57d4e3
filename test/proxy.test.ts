// The stateful proxy over real loopback sockets, with an injected clock for the RFC 3261 timers.
// The "phone" is an outside UDP peer on 127.0.0.1, the "PBX" an upstream on 127.0.0.2.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { ManualClock } from '../edge/clock';
import type { ResolvedConfig } from '../edge/config/types';
import { startEdge, type EdgeHandle } from '../edge/edge';
import { testConfig } from './helpers/config';
import { EDGE_IP, EDGE_PORT, startMemoryEdge } from './helpers/memory-edge';
import { sample } from './helpers/prom';
import { TcpPeer } from './helpers/tcp-peer';
import { UdpPeer, header, headers, request, response, uniq } from './helpers/udp-peer';

const silent = pino({ level: 'silent' });

interface Rig { edge: EdgeHandle; port: number; phone: UdpPeer; pbx: UdpPeer; clock: ManualClock; close(): Promise<void> }

async function rig(over: (pbx: UdpPeer) => Partial<ResolvedConfig> = () => ({})): Promise<Rig> {
  const phone = await UdpPeer.bind('127.0.0.1');
  const pbx = await UdpPeer.bind('127.0.0.2');
  const clock = new ManualClock();
  const cfg = testConfig({ upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }], ...over(pbx) });
  const edge = await startEdge(cfg, silent, { clock });
  const port = edge.listeners[0]!.port;
  return {
    edge, port, phone, pbx, clock,
    async close() { phone.close(); pbx.close(); await edge.close(0); },
  };
}

describe('proxy: INVITE dialog through the edge', () => {
  let r: Rig;
  before(async () => { r = await rig(); });
  after(async () => { await r.close(); });

  test('forwards an INVITE with our Via, decremented Max-Forwards, double Record-Route, and answers 100', async () => {
    const callId = uniq('call');
    const inv = request(r.phone, { callId, ruri: 'sip:1000@example.com', maxForwards: 70 });
    await r.phone.send(inv, r.port);
    const trying = await r.phone.waitFirstLine('SIP/2.0 100');
    assert.equal(header(trying.text, 'Call-ID'), callId);
    assert.equal(header(trying.text, 'To'), '<sip:1000@example.com>', '100 Trying carries no To tag');
    const fwd = await r.pbx.waitFirstLine('INVITE sip:1000@example.com SIP/2.0');
    assert.equal(fwd.port, r.port, 'sent from the edge listener');
    const vias = headers(fwd.text, 'Via');
    assert.equal(vias.length, 2);
    assert.match(vias[0]!, new RegExp(`^SIP/2.0/UDP 127\\.0\\.0\\.1:${r.port};branch=z9hG4bK[A-Za-z0-9_-]{16}\\.`));
    assert.match(vias[1]!, new RegExp(`;rport=${r.phone.port}`), 'RFC 3581: rport filled in');
    assert.equal(header(fwd.text, 'Max-Forwards'), '69');
    const rr = header(fwd.text, 'Record-Route')!;
    assert.match(rr, /^<sip:up0@127\.0\.0\.1:\d+;lr>, <sip:sef1\.[^@]+@127\.0\.0\.1:\d+;lr>$/);
    // every other byte is as the phone sent it
    assert.equal(fwd.text.split('\r\n\r\n')[1], inv.split('\r\n\r\n')[1]);
    assert.ok(fwd.text.includes(`Contact: <sip:alice@127.0.0.1:${r.phone.port}>\r\n`));
  });

  test('full call: 180/200 back without our Via, ACK and BYE follow Record-Route, PBX BYE reaches the phone', async () => {
    const callId = uniq('call');
    await r.phone.send(request(r.phone, { callId }), r.port);
    const inv = await r.pbx.wait((m) => m.text.startsWith('INVITE') && header(m.text, 'Call-ID') === callId);
    await r.pbx.send(response(inv.text, 180, 'Ringing', { toTag: 'pbx1' }), r.port, '127.0.0.1');
    const ringing = await r.phone.waitFirstLine('SIP/2.0 180');
    assert.equal(headers(ringing.text, 'Via').length, 1, 'the edge removed its own Via');
    const rrSet = header(inv.text, 'Record-Route')!;
    await r.pbx.send(response(inv.text, 200, 'OK', { toTag: 'pbx1', extra: [`Record-Route: ${rrSet}`, `Contact: <sip:1000@127.0.0.2:${r.pbx.port}>`] }), r.port, '127.0.0.1');
    const ok = await r.phone.waitFirstLine('SIP/2.0 200');
    // the phone builds its route set from Record-Route, reversed (RFC 3261 12.1.2)
    const route = header(ok.text, 'Record-Route')!.split(/,\s*/).reverse().join(', ');
    const ack = request(r.phone, { method: 'ACK', callId, toTag: 'pbx1', ruri: `sip:1000@127.0.0.2:${r.pbx.port}`, extra: [`Route: ${route}`] });
    await r.phone.send(ack, r.port);
    const fack = await r.pbx.waitFirstLine('ACK ');
    assert.equal(header(fack.text, 'Route'), undefined, 'our Route entries are consumed');
    assert.equal(headers(fack.text, 'Via').length, 2);
    // the PBX hangs up: its route set is the Record-Route in order (RFC 3261 12.1.1)
    const bye = request({ address: '127.0.0.2', port: r.pbx.port }, {
      method: 'BYE', callId, fromTag: 'pbx1', toTag: 'ft1', from: '<sip:1000@example.com>', to: '"Alice" <sip:alice@example.com>',
      ruri: `sip:alice@10.9.9.9:5060`, cseq: 2, extra: [`Route: ${rrSet}`],
    });
    await r.pbx.send(bye, r.port, '127.0.0.1');
    const gotBye = await r.phone.waitFirstLine('BYE sip:alice@10.9.9.9:5060');
    assert.equal(gotBye.port, r.port);
    await r.phone.send(response(gotBye.text, 200, 'OK'), r.port);
    const byeOk = await r.pbx.waitFirstLine('SIP/2.0 200');
    assert.equal(header(byeOk.text, 'CSeq'), '2 BYE');
  });

  test('a retransmitted INVITE is not forwarded again; the 100 is resent', async () => {
    const callId = uniq('call');
    const inv = request(r.phone, { callId });
    await r.phone.send(inv, r.port);
    await r.pbx.wait((m) => header(m.text, 'Call-ID') === callId);
    await r.phone.waitFirstLine('SIP/2.0 100');
    await r.phone.send(inv, r.port);
    await r.phone.waitFirstLine('SIP/2.0 100');
    assert.ok(await r.pbx.silent((m) => header(m.text, 'Call-ID') === callId), 'no second INVITE upstream');
  });

});

// Absence proven by looking at everything the edge sent (an in-memory transport,
// test/helpers/memory-edge.ts), not by waiting a fixed time on loopback sockets.
describe('proxy: what goes nowhere (in-memory transport)', () => {
  const PBX = { address: '127.0.0.2', port: 5070 };
  const PHONE = { address: '127.0.0.1', port: 5062 };
  const memRig = () => startMemoryEdge({ upstreams: [{ transport: 'udp', host: PBX.address, port: PBX.port }] });

  test('a stray 200 OK from a random outside address is delivered nowhere and counted', async () => {
    const m = await memRig();
    try {
      const stranger = { address: '127.0.0.3', port: 5064 };
      const strayId = uniq('stray');
      const fake = response(request(stranger, { callId: strayId }), 200, 'OK', { toTag: 'x' })
        .replace('SIP/2.0/UDP 127.0.0.3', `SIP/2.0/UDP ${EDGE_IP}:${EDGE_PORT};branch=z9hG4bKforged, SIP/2.0/UDP 127.0.0.3`);
      m.deliver(fake, stranger);
      await m.settle();
      assert.deepEqual(m.sent, [], 'sent nowhere');
      assert.equal(sample(await m.edge.metrics.metrics(), 'sipedge_unmatched_total', { kind: 'response' }), 1, 'dropped as a response matching no transaction');
    } finally { await m.close(); }
  });

  test('CANCEL matching nothing gets 481 and goes nowhere', async () => {
    const m = await memRig();
    try {
      m.deliver(request(PHONE, { method: 'CANCEL' }), PHONE);
      await m.settle();
      assert.deepEqual(m.sent.map((x) => [x.dest.address, x.text.split('\r\n')[0]]), [[PHONE.address, 'SIP/2.0 481 Call/Transaction Does Not Exist']]);
    } finally { await m.close(); }
  });

  test('no open relay: a request for a foreign domain gets 403 and nothing goes upstream', async () => {
    const m = await memRig();
    try {
      m.deliver(request(PHONE, { ruri: 'sip:+15551234@evil.example.net', method: 'INVITE' }), PHONE);
      await m.settle();
      assert.deepEqual(m.sent.map((x) => [x.dest.address, x.text.split('\r\n')[0]]), [[PHONE.address, 'SIP/2.0 403 Forbidden']]);
      assert.equal(sample(await m.edge.metrics.metrics(), 'sipedge_verdicts_total', { stage: 'proxy', action: 'reply', reason: 'relay_denied', mode: 'enforce' }), 1, 'refused by the relay check, not by anything else');
    } finally { await m.close(); }
  });

  test('a pre-loaded Route toward somewhere else gets 403 and nothing goes upstream', async () => {
    const m = await memRig();
    try {
      m.deliver(request(PHONE, { extra: ['Route: <sip:198.51.100.7;lr>'] }), PHONE);
      await m.settle();
      assert.deepEqual(m.sent.map((x) => [x.dest.address, x.text.split('\r\n')[0]]), [[PHONE.address, 'SIP/2.0 403 Forbidden']]);
      assert.equal(sample(await m.edge.metrics.metrics(), 'sipedge_verdicts_total', { stage: 'proxy', action: 'reply', reason: 'route_preloaded', mode: 'enforce' }), 1, 'refused for the pre-loaded Route, not by anything else');
    } finally { await m.close(); }
  });
});

describe('proxy: retransmissions are matched on the transport source too (no reflection)', () => {
  let r: Rig;
  before(async () => { r = await rig(); });
  after(async () => { await r.close(); });

  for (const [kind, branch] of [['an RFC 2543 branch (no z9hG4bK cookie)', 'old2543branch'], ['a z9hG4bK branch', 'z9hG4bKseenbranch']] as const) {
    test(`${kind}: copies from another address draw no response to the original sender`, async () => {
      const stranger = await UdpPeer.bind('127.0.0.3');
      try {
        const callId = uniq('refl');
        const inv = request(r.phone, { callId, branch: `${branch}${callId}` });
        await r.phone.send(inv, r.port);
        await r.phone.waitFirstLine('SIP/2.0 100');
        const fwd = await r.pbx.wait((m) => m.text.startsWith('INVITE') && header(m.text, 'Call-ID') === callId);
        await r.pbx.send(response(fwd.text, 180, 'Ringing', { toTag: 'p1' }), r.port, '127.0.0.1');
        await r.phone.waitFirstLine('SIP/2.0 180');
        // the same bytes (Via sent-by, branch, Call-ID, tags, CSeq all the phone's) from elsewhere
        for (let i = 0; i < 5; i++) await stranger.send(inv, r.port);
        assert.ok(await r.phone.silent((m) => header(m.text, 'Call-ID') === callId, 300), 'nothing reflected to the original sender');
        // the phone's own retransmission is still answered from the stored response
        await r.phone.send(inv, r.port);
        await r.phone.waitFirstLine('SIP/2.0 180');
      } finally { stranger.close(); }
    });
  }

  test('a CANCEL from another address does not cancel the call: 481', async () => {
    const stranger = await UdpPeer.bind('127.0.0.3');
    try {
      const callId = uniq('cxl');
      const branch = uniq('z9hG4bK');
      await r.phone.send(request(r.phone, { callId, branch }), r.port);
      const fwd = await r.pbx.wait((m) => m.text.startsWith('INVITE') && header(m.text, 'Call-ID') === callId);
      await r.pbx.send(response(fwd.text, 180, 'Ringing', { toTag: 'p1' }), r.port, '127.0.0.1');
      await r.phone.waitFirstLine('SIP/2.0 180');
      await stranger.send(request(r.phone, { method: 'CANCEL', callId, branch }), r.port);
      const res = await stranger.wait((m) => header(m.text, 'Call-ID') === callId);
      assert.match(res.text, /^SIP\/2.0 481 /);
      assert.ok(await r.pbx.silent((m) => m.text.startsWith('CANCEL') && header(m.text, 'Call-ID') === callId, 200), 'no CANCEL upstream');
    } finally { stranger.close(); }
  });
});

describe('proxy: timers with an injected clock', () => {
  test('Timer A retransmits toward a silent upstream; Timer B answers 408', async () => {
    const r = await rig();
    try {
      const callId = uniq('call');
      await r.phone.send(request(r.phone, { callId }), r.port);
      const first = await r.pbx.wait((m) => header(m.text, 'Call-ID') === callId);
      r.clock.advance(500);
      const again = await r.pbx.wait((m) => header(m.text, 'Call-ID') === callId);
      assert.equal(again.text, first.text, 'retransmission is byte-identical');
      r.clock.advance(32_000);
      const timeout = await r.phone.waitFirstLine('SIP/2.0 408');
      assert.equal(header(timeout.text, 'Call-ID'), callId);
      assert.match(header(timeout.text, 'To')!, /;tag=/);
    } finally { await r.close(); }
  });

  test('failover: the first upstream times out, the INVITE goes to the second', async () => {
    const pbx2 = await UdpPeer.bind('127.0.0.4');
    const r = await rig((pbx) => ({ upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }, { transport: 'udp', host: '127.0.0.4', port: pbx2.port }] }));
    try {
      const callId = uniq('call');
      await r.phone.send(request(r.phone, { callId }), r.port);
      await r.pbx.wait((m) => header(m.text, 'Call-ID') === callId);
      r.clock.advance(32_000);
      const moved = await pbx2.wait((m) => header(m.text, 'Call-ID') === callId);
      assert.match(moved.text, /^INVITE /);
      await pbx2.send(response(moved.text, 200, 'OK', { toTag: 'b' }), r.port, '127.0.0.1');
      const ok = await r.phone.waitFirstLine('SIP/2.0 200');
      assert.equal(header(ok.text, 'Call-ID'), callId);
    } finally { pbx2.close(); await r.close(); }
  });
});

describe('proxy: CANCEL', () => {
  test('CANCEL after 180: 200 to the phone, CANCEL upstream on the INVITE branch, 487 relayed, ACK hop by hop', async () => {
    const r = await rig();
    try {
      const callId = uniq('call');
      const branch = uniq('z9hG4bK');
      const inv = request(r.phone, { callId, branch });
      await r.phone.send(inv, r.port);
      const finv = await r.pbx.wait((m) => m.text.startsWith('INVITE') && header(m.text, 'Call-ID') === callId);
      await r.pbx.send(response(finv.text, 180, 'Ringing', { toTag: 'c1' }), r.port, '127.0.0.1');
      await r.phone.waitFirstLine('SIP/2.0 180');
      await r.phone.send(request(r.phone, { method: 'CANCEL', callId, branch }), r.port);
      const cok = await r.phone.wait((m) => m.text.startsWith('SIP/2.0 200') && /CANCEL/.test(header(m.text, 'CSeq')!));
      assert.ok(cok);
      const fc = await r.pbx.waitFirstLine('CANCEL ');
      assert.equal(headers(fc.text, 'Via')[0], headers(finv.text, 'Via')[0], 'RFC 3261 9.1: same branch as the INVITE');
      await r.pbx.send(response(fc.text, 200, 'OK'), r.port, '127.0.0.1');
      await r.pbx.send(response(finv.text, 487, 'Request Terminated', { toTag: 'c1' }), r.port, '127.0.0.1');
      const hopAck = await r.pbx.waitFirstLine('ACK ');
      assert.equal(headers(hopAck.text, 'Via')[0], headers(finv.text, 'Via')[0]);
      const term = await r.phone.waitFirstLine('SIP/2.0 487');
      assert.equal(header(term.text, 'Call-ID'), callId);
      // the phone's ACK for the 487 is absorbed by the edge
      await r.phone.send(request(r.phone, { method: 'ACK', callId, branch, toTag: 'c1' }), r.port);
      assert.ok(await r.pbx.silent((m) => m.text.startsWith('ACK ')));
    } finally { await r.close(); }
  });

});

describe('proxy: policy', () => {
  let r: Rig;
  before(async () => { r = await rig(); });
  after(async () => { await r.close(); });

  test('a Route naming the edge itself is accepted and consumed', async () => {
    const callId = uniq('call');
    await r.phone.send(request(r.phone, { callId, method: 'OPTIONS', extra: [`Route: <sip:127.0.0.1:${r.port};lr>`] }), r.port);
    const f = await r.pbx.wait((m) => header(m.text, 'Call-ID') === callId);
    assert.equal(header(f.text, 'Route'), undefined);
  });

  test('missing Max-Forwards is added as 70', async () => {
    const callId = uniq('call');
    await r.phone.send(request(r.phone, { callId, method: 'OPTIONS', maxForwards: null }), r.port);
    const f = await r.pbx.wait((m) => header(m.text, 'Call-ID') === callId);
    assert.equal(header(f.text, 'Max-Forwards'), '70');
  });

  test('Max-Forwards 0 gets 483 Too Many Hops', async () => {
    await r.phone.send(request(r.phone, { method: 'MESSAGE', maxForwards: 0 }), r.port);
    await r.phone.waitFirstLine('SIP/2.0 483');
  });

  test('a looped request (our own Via with the same loop hash) gets 482', async () => {
    const callId = uniq('call');
    const first = request(r.phone, { callId, method: 'MESSAGE' });
    await r.phone.send(first, r.port);
    const f = await r.pbx.wait((m) => header(m.text, 'Call-ID') === callId);
    // the PBX (misconfigured) sends the same request back to the edge
    const looped = f.text.replace(/^Via: /m, `Via: SIP/2.0/UDP 127.0.0.2:${r.pbx.port};branch=z9hG4bKpbxloop\r\nVia: `);
    await r.pbx.send(looped, r.port, '127.0.0.1');
    const res = await r.pbx.waitFirstLine('SIP/2.0 482');
    assert.equal(header(res.text, 'Call-ID'), callId);
  });

  test('a spiral through a record-routing PBX passes: a BYE that goes edge -> PBX -> edge reaches the far phone (RFC 3261 16.3 item 4)', async () => {
    // phone A (127.0.0.1) calls phone B (127.0.0.3) through a PBX proxy that record-routes, so the
    // dialog's route set names the edge twice: [edge(B), edge(up0), PBX, edge(up0), edge(A)]
    const phoneB = await UdpPeer.bind('127.0.0.3');
    try {
      const callId = uniq('call');
      await r.phone.send(request(r.phone, { callId, ruri: 'sip:2000@example.com' }), r.port);
      const inv1 = await r.pbx.wait((m) => m.text.startsWith('INVITE') && header(m.text, 'Call-ID') === callId);
      const pbxRr = `<sip:127.0.0.2:${r.pbx.port};lr>`;
      // the PBX proxies the INVITE to B's contact through the edge (from inside), adding its Via and RR
      const inv2 = inv1.text
        .replace(/^INVITE \S+/, `INVITE sip:bob@127.0.0.3:${phoneB.port}`)
        .replace(/^Via: /m, `Via: SIP/2.0/UDP 127.0.0.2:${r.pbx.port};branch=z9hG4bKpbx${callId}\r\nVia: `)
        .replace(/^Record-Route: /m, `Record-Route: ${pbxRr}, `);
      await r.pbx.send(inv2, r.port, '127.0.0.1');
      const atB = await phoneB.wait((m) => m.text.startsWith('INVITE') && header(m.text, 'Call-ID') === callId);
      const rrSet = headers(atB.text, 'Record-Route').join(', ');
      assert.equal(rrSet.split(/,\s*/).length, 5, `edge, edge, PBX, edge, edge: ${rrSet}`);
      // B hangs up: as the UAS its route set is the Record-Route in order (RFC 3261 12.1.1)
      const bye = request(phoneB, {
        method: 'BYE', callId, fromTag: 'btag', toTag: 'ft1', from: '<sip:2000@example.com>', to: '"Alice" <sip:alice@example.com>',
        ruri: `sip:alice@127.0.0.1:${r.phone.port}`, cseq: 7, extra: [`Route: ${rrSet}`],
      });
      await phoneB.send(bye, r.port, '127.0.0.1');
      const byeAtPbx = await r.pbx.wait((m) => m.text.startsWith('BYE') && header(m.text, 'Call-ID') === callId);
      assert.equal(headers(byeAtPbx.text, 'Route')[0]?.split(/,\s*/)[0], pbxRr, 'the PBX entry is next');
      // the PBX consumes its own Route entry and sends the BYE back to the edge: a spiral, not a loop
      const spiral = byeAtPbx.text
        .replace(/^Via: /m, `Via: SIP/2.0/UDP 127.0.0.2:${r.pbx.port};branch=z9hG4bKpbxbye${callId}\r\nVia: `)
        .replace(/^(Route: )<[^>]*>,\s*/m, '$1');
      await r.pbx.send(spiral, r.port, '127.0.0.1');
      const atA = await r.phone.wait((m) => m.text.startsWith('BYE') && header(m.text, 'Call-ID') === callId);
      assert.equal(header(atA.text, 'Route'), undefined, 'all Route entries consumed');
      assert.ok(await r.pbx.silent((m) => m.text.startsWith('SIP/2.0 482')), 'no 482 toward the PBX');
      // the BYE sent back to the edge unchanged (a real loop) still gets 482
      await r.phone.send(atA.text.replace(/^Via: /m, `Via: SIP/2.0/UDP 127.0.0.1:${r.phone.port};branch=z9hG4bKloop${callId}\r\nVia: `), r.port);
      await r.phone.waitFirstLine('SIP/2.0 482');
    } finally {
      phoneB.close();
      // the 100 Trying to each INVITE is left unread; later tests here expect empty inboxes
      r.phone.inbox.length = 0;
      r.pbx.inbox.length = 0;
    }
  });

  test('a malformed request gets 400 with a reason; garbage is dropped silently', async () => {
    await r.phone.send(request(r.phone, { cseqMethod: 'BYE' }), r.port);
    const res = await r.phone.waitFirstLine('SIP/2.0 400');
    assert.match(header(res.text, 'CSeq')!, /1 BYE/);
    await r.phone.send('\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage', r.port);
    assert.ok(await r.phone.silent());
    assert.ok(await r.pbx.silent());
  });
});

describe('proxy: REGISTER, Path and calls from the PBX to the phone', () => {
  test('REGISTER gets a Path with a flow token; the PBX reaches the phone through it', async () => {
    const r = await rig();
    try {
      const callId = uniq('reg');
      await r.phone.send(request(r.phone, { method: 'REGISTER', ruri: 'sip:example.com', callId, to: '<sip:alice@example.com>', extra: ['Expires: 600'] }), r.port);
      const reg = await r.pbx.waitFirstLine('REGISTER ');
      const path = header(reg.text, 'Path')!;
      assert.match(path, /^<sip:sef1\.[^@]+@127\.0\.0\.1:\d+;lr>$/);
      assert.equal(header(reg.text, 'Record-Route'), undefined, 'REGISTER is not record-routed');
      await r.pbx.send(response(reg.text, 200, 'OK', { toTag: 'reg1', extra: [`Path: ${path}`, `Contact: <sip:alice@192.168.1.20:5060>;expires=600`] }), r.port, '127.0.0.1');
      await r.phone.waitFirstLine('SIP/2.0 200');
      // incoming call: the registrar uses the stored Path as Route toward the private contact
      const inCall = uniq('in');
      const inv = request({ address: '127.0.0.2', port: r.pbx.port }, {
        callId: inCall, ruri: 'sip:alice@192.168.1.20:5060', from: '<sip:1000@example.com>', to: '<sip:alice@example.com>', extra: [`Route: ${path}`],
      });
      await r.pbx.send(inv, r.port, '127.0.0.1');
      const got = await r.phone.waitFirstLine('INVITE sip:alice@192.168.1.20:5060');
      assert.equal(header(got.text, 'Route'), undefined);
      assert.equal(headers(got.text, 'Via').length, 2);
      await r.pbx.waitFirstLine('SIP/2.0 100');
      await r.phone.send(response(got.text, 200, 'OK', { toTag: 'ph1' }), r.port);
      const ok = await r.pbx.waitFirstLine('SIP/2.0 200');
      assert.equal(header(ok.text, 'Call-ID'), inCall);
    } finally { await r.close(); }
  });

  test('a forged flow token is not honoured: the request goes where its Request-URI says, never to the forged address', async () => {
    // The same request three times from the PBX, differing only in the flow token of its Route:
    // the genuine token (from the phone's Path) wins over the Request-URI (RFC 5626 5.3), a token
    // with the victim's address under the genuine MAC or under a made-up MAC counts for nothing,
    // so the Request-URI (a decoy peer) decides. The decoy receiving it proves the edge was alive
    // and routed the request, rather than anything at all dropping it.
    const r = await rig();
    const victim = await UdpPeer.bind('127.0.0.5');
    const decoy = await UdpPeer.bind('127.0.0.6');
    try {
      await r.phone.send(request(r.phone, { method: 'REGISTER', ruri: 'sip:example.com', callId: uniq('reg'), to: '<sip:alice@example.com>', extra: ['Expires: 600'] }), r.port);
      const reg = await r.pbx.waitFirstLine('REGISTER ');
      const genuine = /^<sip:(sef1\.[^@]+)@(.+)>$/.exec(header(reg.text, 'Path')!)!;
      const [prefix, payload, mac] = genuine[1]!.split('.') as [string, string, string];
      const body = Buffer.from(payload, 'base64url').toString('latin1');
      assert.ok(body.includes(`|127.0.0.1|${r.phone.port}|`), body);
      const victimPayload = Buffer.from(body.replace(`|127.0.0.1|${r.phone.port}|`, `|127.0.0.5|${victim.port}|`), 'latin1').toString('base64url');
      const invite = (token: string): { text: string; callId: string } => {
        const callId = uniq('in');
        return {
          callId,
          text: request({ address: '127.0.0.2', port: r.pbx.port }, {
            callId, ruri: `sip:alice@127.0.0.6:${decoy.port}`, from: '<sip:1000@example.com>', to: '<sip:alice@example.com>',
            extra: [`Route: <sip:${token}@${genuine[2]}>`],
          }),
        };
      };
      const byCallId = (id: string) => (m: { text: string }): boolean => header(m.text, 'Call-ID') === id;

      const honoured = invite(genuine[1]!);
      await r.pbx.send(honoured.text, r.port, '127.0.0.1');
      await r.phone.wait(byCallId(honoured.callId), 2000, 'the genuine token reaches the phone');

      for (const [what, token] of [['payload edited under the genuine MAC', `${prefix}.${victimPayload}.${mac}`], ['made-up MAC', `${prefix}.${victimPayload}.AAAAAAAAAAAAAA`]] as const) {
        const forged = invite(token);
        await r.pbx.send(forged.text, r.port, '127.0.0.1');
        const got = await decoy.wait(byCallId(forged.callId), 2000, `${what}: routed by the Request-URI`);
        assert.equal(header(got.text, 'Route'), undefined, `${what}: our Route entry is consumed`);
        assert.ok(await victim.silent(() => true, 100), `${what}: nothing reaches the forged address`);
        assert.ok(await r.phone.silent(byCallId(forged.callId), 20), `${what}: nor the phone`);
      }
      assert.ok(await decoy.silent(byCallId(honoured.callId), 20), 'the genuine one went to the phone only');
    } finally {
      victim.close();
      decoy.close();
      await r.close();
    }
  });
});

describe('proxy: limits', () => {
  test('a full transaction table answers 503 and counts it', async () => {
    const r = await rig(() => ({ transactions: { max: 1, memoryBudgetMB: 1024, t1Ms: 500, t2Ms: 4000, t4Ms: 5000 } }));
    try {
      await r.phone.send(request(r.phone, { callId: uniq('a') }), r.port);
      await r.pbx.waitFirstLine('INVITE ');
      await r.phone.send(request(r.phone, { callId: uniq('b') }), r.port);
      const busy = await r.phone.waitFirstLine('SIP/2.0 503');
      assert.match(busy.text, /Retry-After: \d+/);
      assert.match(await r.edge.metrics.metrics(), /sipedge_transactions_rejected_total\{reason="table_full"\} 1/);
    } finally { await r.close(); }
  });

  test('no healthy upstream: 503 with Retry-After', async () => {
    const r = await rig();
    try {
      r.edge.proxy.upstreams.failure(0);
      await r.phone.send(request(r.phone), r.port);
      const res = await r.phone.waitFirstLine('SIP/2.0 503');
      assert.match(res.text, /Retry-After: \d+/);
    } finally { await r.close(); }
  });
});

describe('proxy: TCP phones and IPv6', () => {
  test('a phone registered over TCP gets its incoming call on the same connection', async () => {
    const pbx = await UdpPeer.bind('127.0.0.2');
    const clock = new ManualClock();
    const edge = await startEdge(testConfig({
      listen: [{ transport: 'udp', host: '127.0.0.1', port: 0 }, { transport: 'tcp', host: '127.0.0.1', port: 0 }],
      upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }],
    }), silent, { clock });
    const udpPort = edge.listeners[0]!.port;
    const tcpPort = edge.listeners[1]!.port;
    const phone = await TcpPeer.connect(tcpPort);
    try {
      const reg = request({ address: '127.0.0.1', port: phone.port }, {
        method: 'REGISTER', ruri: 'sip:example.com', to: '<sip:bob@example.com>',
        via: `SIP/2.0/TCP 192.168.7.7:5060;branch=${uniq('z9hG4bK')};rport`,
      });
      phone.send(reg);
      const fwd = await pbx.waitFirstLine('REGISTER ');
      const path = header(fwd.text, 'Path')!;
      assert.match(headers(fwd.text, 'Via')[1]!, /received=127\.0\.0\.1/, 'RFC 3261 18.2.1: received added');
      await pbx.send(response(fwd.text, 200, 'OK', { toTag: 'r' }), udpPort, '127.0.0.1');
      await phone.waitFirstLine('SIP/2.0 200');
      const cid = uniq('tcpcall');
      await pbx.send(request({ address: '127.0.0.2', port: pbx.port }, { callId: cid, ruri: 'sip:bob@192.168.7.7:5060;transport=tcp', extra: [`Route: ${path}`] }), udpPort, '127.0.0.1');
      const inv = await phone.waitFirstLine('INVITE ');
      assert.equal(header(inv.text, 'Call-ID'), cid);
      assert.match(headers(inv.text, 'Via')[0]!, /^SIP\/2.0\/TCP /);
      assert.match(header(inv.text, 'Record-Route')!, /^<sip:sef1\.[^>]+;transport=tcp;lr>, <sip:up0@/);
      // the phone's connection goes away: the PBX's next request through the flow gets 430
      phone.close();
      await new Promise((r) => setTimeout(r, 50));
      await pbx.send(request({ address: '127.0.0.2', port: pbx.port }, { callId: uniq('x'), ruri: 'sip:bob@192.168.7.7:5060', extra: [`Route: ${path}`] }), udpPort, '127.0.0.1');
      await pbx.waitFirstLine('SIP/2.0 430');
    } finally { phone.close(); pbx.close(); await edge.close(0); }
  });

  test('a phone registered over TCP stays reachable while silent for longer than the idle timeout', async () => {
    // baresip over TCP sends nothing between its hourly refreshes: its connection is the only way
    // to it (the Path names it), so the idle timeout must not end the registration (issue 11)
    // long enough for a loaded machine to finish a registration round trip inside it
    const idleMs = 800;
    const pbx = await UdpPeer.bind('127.0.0.2');
    const edge = await startEdge(testConfig({
      listen: [{ transport: 'udp', host: '127.0.0.1', port: 0 }, { transport: 'tcp', host: '127.0.0.1', port: 0 }],
      upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }],
      tcp: { maxConnections: 100, maxConnectionsPerSource: 10, unknownPercent: 80, promotedPercent: 90, messageTimeoutMs: 5000, idleTimeoutMs: idleMs },
    }), silent, { clock: new ManualClock() });
    const udpPort = edge.listeners[0]!.port;
    const tcpPort = edge.listeners[1]!.port;
    const phone = await TcpPeer.connect(tcpPort);
    const bystander = await TcpPeer.connect(tcpPort);
    let unregistered: TcpPeer | undefined;
    const register = async (p: TcpPeer, user: string, expires: number): Promise<string> => {
      const contact = `<sip:${user}@192.168.7.7:5060;transport=tcp>`;
      p.send(request({ address: '127.0.0.1', port: p.port }, {
        method: 'REGISTER', ruri: 'sip:example.com', to: `<sip:${user}@example.com>`, callId: uniq('reg'),
        via: `SIP/2.0/TCP 192.168.7.7:5060;branch=${uniq('z9hG4bK')};rport`, contact: `${contact};expires=${expires}`,
      }));
      const fwd = await pbx.wait((m) => m.text.startsWith('REGISTER ') && m.text.includes(`sip:${user}@192.168.7.7`), 2000, `REGISTER ${user}`);
      // RFC 3261 10.3 step 8: the 200 lists the bindings with the expiry the registrar granted
      await pbx.send(response(fwd.text, 200, 'OK', { toTag: 'r', extra: [`Contact: ${contact};expires=${expires}`] }), udpPort, '127.0.0.1');
      await p.waitFirstLine('SIP/2.0 200');
      return header(fwd.text, 'Path')!;
    };
    try {
      const path = await register(phone, 'bob', 3600);
      unregistered = await TcpPeer.connect(tcpPort);
      await register(unregistered, 'carol', 3600);
      await register(unregistered, 'carol', 0);
      await new Promise((r) => setTimeout(r, idleMs * 2.5));
      assert.equal(bystander.closed, true, 'a connection that registered nothing still times out');
      assert.equal(unregistered.closed, true, 'an unregistration gives the connection back its idle timeout');
      assert.equal(phone.closed, false, 'the registered phone keeps its connection');
      const cid = uniq('late');
      await pbx.send(request({ address: '127.0.0.2', port: pbx.port }, { callId: cid, ruri: 'sip:bob@192.168.7.7:5060;transport=tcp', extra: [`Route: ${path}`] }), udpPort, '127.0.0.1');
      const inv = await phone.waitFirstLine('INVITE ');
      assert.equal(header(inv.text, 'Call-ID'), cid, 'the call reaches the silent phone');
    } finally { phone.close(); bystander.close(); unregistered?.close(); pbx.close(); await edge.close(0); }
  });

  test('IPv6: a phone on ::1 calls through an edge listening on [::1]', async () => {
    const pbx = await UdpPeer.bind('127.0.0.2');
    const phone = await UdpPeer.bind('::1');
    const edge = await startEdge(testConfig({
      listen: [{ transport: 'udp', host: '::1', port: 0 }, { transport: 'udp', host: '127.0.0.1', port: 0 }],
      upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }],
    }), silent, { clock: new ManualClock() });
    try {
      const v6Port = edge.listeners[0]!.port;
      const cid = uniq('v6');
      await phone.send(request({ address: '[::1]', port: phone.port }, { callId: cid, ruri: 'sip:1000@example.com' }), v6Port, '::1');
      const fwd = await pbx.wait((m) => header(m.text, 'Call-ID') === cid);
      assert.match(headers(fwd.text, 'Via')[1]!, /received=::1/);
      await pbx.send(response(fwd.text, 200, 'OK', { toTag: 'v' }), edge.listeners[1]!.port, '127.0.0.1');
      const ok = await phone.waitFirstLine('SIP/2.0 200');
      assert.equal(header(ok.text, 'Call-ID'), cid);
    } finally { phone.close(); pbx.close(); await edge.close(0); }
  });
});

describe('proxy: who is inside', () => {
  test('a phone on the PBX host (other UDP port) is still outside: its INVITE goes to the PBX', async () => {
    const pbx = await UdpPeer.bind('127.0.0.1');
    const phone = await UdpPeer.bind('127.0.0.1');
    const edge = await startEdge(testConfig({ upstreams: [{ transport: 'udp', host: '127.0.0.1', port: pbx.port }] }), silent, { clock: new ManualClock() });
    try {
      const cid = uniq('same-host');
      await phone.send(request(phone, { callId: cid }), edge.listeners[0]!.port);
      const f = await pbx.wait((m) => header(m.text, 'Call-ID') === cid);
      assert.match(header(f.text, 'Record-Route')!, /^<sip:up0@/, 'record-routed as an outside -> inside call');
    } finally { phone.close(); pbx.close(); await edge.close(0); }
  });
});
