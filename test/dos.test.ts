// Issue 12, "denial of service by anyone": what an outsider must not be able to do to everyone
// else. Real loopback sockets, the edge in process, RFC 3261 timers on an injected clock.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import * as fs from 'node:fs';
import net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import pino from 'pino';
import { ManualClock } from '../edge/clock';
import { startEdge } from '../edge/edge';
import { UpstreamPool } from '../edge/router/upstreams';
import { testConfig } from './helpers/config';
import { captureLog } from './helpers/logs';
import { UdpPeer, header, request, response, uniq } from './helpers/udp-peer';
import { TcpPeer } from './helpers/tcp-peer';
import { startEdge as startEdgeProc } from './helpers/edge-proc';
import { killAllSipp, runSipp, sippAvailable, sippSummary, startSipp } from './helpers/sipp';
import { sample } from './helpers/prom';

const silent = pino({ level: 'silent' });
const sippSkip = !sippAvailable() && process.env.CI !== 'true' ? 'sipp not installed (CI=true makes this a failure)' : false;
process.on('exit', killAllSipp);

interface AnsweringPbx { readonly port: number; mute: boolean; invites: number; options: number; close(): void }

/** A PBX stand-in that answers like a live PBX: 200 to OPTIONS (the edge's probes) and to
 *  INVITEs, nothing to INVITEs for "blackhole" (a request the PBX never answers). `mute` makes
 *  it stop answering anything (a hung PBX); close() closes its port (a dead one). */
async function answeringPbx(address: string, port = 0): Promise<AnsweringPbx> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((res, rej) => { sock.once('error', rej); sock.bind(port, address, () => res()); });
  const pbx: AnsweringPbx = { port: sock.address().port, mute: false, invites: 0, options: 0, close: () => sock.close() };
  const send = (text: string, to: dgram.RemoteInfo): void => sock.send(Buffer.from(text, 'latin1'), to.port, to.address);
  sock.on('message', (b, rinfo) => {
    const text = b.toString('latin1');
    if (pbx.mute) return;
    if (text.startsWith('OPTIONS ')) {
      pbx.options++;
      send(response(text, 200, 'OK', { toTag: 'hc' }), rinfo);
    } else if (text.startsWith('REGISTER ')) {
      send(response(text, 200, 'OK', { toTag: 'reg', extra: [`Contact: ${header(text, 'Contact')};expires=3600`] }), rinfo);
    } else if (text.startsWith('INVITE ')) {
      pbx.invites++;
      if (/^INVITE sip:blackhole@/.test(text)) return;
      send(response(text, 200, 'OK', { toTag: 'pbx', extra: [`Contact: <sip:1000@${address}:${pbx.port}>`] }), rinfo);
    }
  });
  return pbx;
}


/** one call from `phone`: the final status the edge gives it (200 through, 503 no upstream ...) */
async function call(edgePort: number, phone: UdpPeer): Promise<number> {
  const callId = uniq('call');
  await phone.send(request(phone, { callId }), edgePort);
  const fin = await phone.wait((m) => header(m.text, 'Call-ID') === callId && /^SIP\/2.0 [2-6]\d\d/.test(m.text), 2000, `final for ${callId}`);
  return Number(fin.text.slice(8, 11));
}

describe('issue 12 item 1: outsiders cannot mark the PBX down', () => {
  // the configuration of the report: one upstream, the shipped health defaults
  const health = { intervalMs: 5000, timeoutMs: 2000, failuresBeforeDown: 2, retryAfterSeconds: 30 };

  for (const intervalMs of [health.intervalMs, 0]) test(`maddr / broadcast Vias and never-answered INVITEs, then 45 s of trusted calls: no 503, no upstream_down (probes ${intervalMs ? 'every 5 s' : 'off'})`, async () => {
    const pbx = await answeringPbx('127.0.0.2');
    const attacker = await UdpPeer.bind('127.0.0.3');
    const carrier = await UdpPeer.bind('127.0.0.5');
    const clock = new ManualClock();
    const cap = captureLog();
    const edge = await startEdge(testConfig({
      upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }],
      trusted: ['127.0.0.5/32'],
      health: { ...health, intervalMs },
    }), cap.log, { clock });
    const port = edge.listeners[0]!.port;
    try {
      if (intervalMs > 0) await waitUntil(() => pbx.options >= 1, 'first probe answered');
      // the two packets of the report, plus two INVITEs the PBX never answers, all at once
      const hostile = [
        request(attacker, { via: `SIP/2.0/UDP 127.0.0.3:${attacker.port};branch=${uniq('z9hG4bK')};maddr=224.0.1.75` }),
        request(attacker, { via: `SIP/2.0/UDP 127.0.0.3:${attacker.port};branch=${uniq('z9hG4bK')};maddr=127.0.0.9` }),
        request(attacker, { via: `SIP/2.0/UDP 255.255.255.255:5060;branch=${uniq('z9hG4bK')}` }),
        request(attacker, { ruri: 'sip:blackhole@example.com' }),
        request(attacker, { ruri: 'sip:blackhole@example.com' }),
      ];
      for (const h of hostile) await attacker.send(h, port);
      // the refused ones are answered 400 at once, to their sender, before any state exists
      for (let i = 0; i < 3; i++) await attacker.wait((m) => m.text.startsWith('SIP/2.0 400'), 2000, '400 to a hostile Via');
      await waitUntil(() => pbx.invites >= 2, 'the never-answered INVITEs reached the PBX');
      assert.equal(pbx.invites, 2, 'maddr / broadcast requests are not forwarded');

      const statuses: number[] = [];
      for (let t = 0; t < 45_000; t += 500) {
        statuses.push(await call(port, carrier));
        clock.advance(500);
        await new Promise((r) => setImmediate(r));
      }
      const ok = statuses.filter((s) => s === 200).length;
      assert.deepEqual(statuses.filter((s) => s !== 200), [], `trusted calls: ${ok}/${statuses.length} answered 200`);
      assert.deepEqual(cap.lines.filter((l) => l.includes('upstream_down')), []);
      const text = await edge.metrics.metrics();
      assert.equal(sample(text, 'sipedge_upstream_up', { upstream: '1' }), 1);
      assert.equal(sample(text, 'sipedge_upstream_responses_total', { upstream: '1', class: 'timeout' }), 2, 'the two unanswered INVITEs timed out (traffic, not health)');
      for (const cause of ['probe_timeout', 'probe_unavailable', 'transport_error']) {
        assert.equal(sample(text, 'sipedge_upstream_health_failures_total', { upstream: '1', cause }), 0, cause);
      }
    } finally { attacker.close(); carrier.close(); pbx.close(); await edge.close(0); }
  });

  test('503 answers on real traffic fail the call over but do not mark the PBX down; a 503 to the probe does', async () => {
    const pbx1 = await UdpPeer.bind('127.0.0.2');
    const pbx2 = await answeringPbx('127.0.0.4');
    const phone = await UdpPeer.bind('127.0.0.1');
    const clock = new ManualClock();
    let probeAnswer = 200;
    pbx1.sock.on('message', (b, rinfo) => {
      const text = b.toString('latin1');
      // the PBX answers every INVITE 503 (a congested trunk behind it), its own probe per probeAnswer
      if (text.startsWith('INVITE ')) void pbx1.send(response(text, 503, 'Service Unavailable', { toTag: 'x' }), rinfo.port, rinfo.address);
      if (text.startsWith('OPTIONS ')) void pbx1.send(response(text, probeAnswer, probeAnswer === 200 ? 'OK' : 'Service Unavailable', { toTag: 'hc' }), rinfo.port, rinfo.address);
    });
    const edge = await startEdge(testConfig({
      upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx1.port }, { transport: 'udp', host: '127.0.0.4', port: pbx2.port }],
      health: { ...health, failuresBeforeDown: 1 },
    }), silent, { clock });
    const port = edge.listeners[0]!.port;
    try {
      for (let i = 0; i < 5; i++) assert.equal(await call(port, phone), 200, 'failed over to the second upstream');
      assert.equal(edge.proxy.upstreams.list[0]!.up, true, '503s on traffic: still up');
      probeAnswer = 503;
      clock.advance(health.intervalMs);
      await waitUntil(() => !edge.proxy.upstreams.list[0]!.up, 'a 503 to the probe marks it down');
      const text = await edge.metrics.metrics();
      assert.equal(sample(text, 'sipedge_upstream_health_failures_total', { upstream: '1', cause: 'probe_unavailable' }), 1);
    } finally { pbx1.close(); pbx2.close(); phone.close(); await edge.close(0); }
  });

  test('a PBX that really dies (port closed) is marked down by its probes; calls fail over; it comes back', async () => {
    const pbx1 = await answeringPbx('127.0.0.2');
    const pbx2 = await answeringPbx('127.0.0.4');
    const phone = await UdpPeer.bind('127.0.0.1');
    const clock = new ManualClock();
    const cap = captureLog();
    let revived: AnsweringPbx | undefined;
    const edge = await startEdge(testConfig({
      upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx1.port }, { transport: 'udp', host: '127.0.0.4', port: pbx2.port }],
      health,
    }), cap.log, { clock });
    const port = edge.listeners[0]!.port;
    try {
      await waitUntil(() => pbx1.options >= 1, 'first probe answered');
      assert.equal(await call(port, phone), 200);
      assert.equal(pbx2.invites, 0);
      // the PBX process dies: its port is closed (the kernel answers ICMP port unreachable)
      const deadPort = pbx1.port;
      pbx1.close();
      const limit = health.failuresBeforeDown * health.intervalMs + health.timeoutMs;
      for (let t = 0; t <= limit && edge.proxy.upstreams.list[0]!.up; t += 500) await tick(clock, 500);
      assert.equal(edge.proxy.upstreams.list[0]!.up, false, 'marked down');
      assert.equal(edge.proxy.upstreams.list[1]!.up, true, 'the live upstream answers its probes');
      assert.ok(cap.lines.some((l) => l.includes('"upstream_down"') && l.includes('probe_timeout')));
      assert.equal(await call(port, phone), 200, 'the next call goes straight to the second upstream');
      assert.equal(pbx2.invites, 1);
      // the PBX restarts on the same port: the next probe brings it back
      revived = await answeringPbx('127.0.0.2', deadPort);
      for (let t = 0; t <= health.intervalMs * 2 && !edge.proxy.upstreams.list[0]!.up; t += 500) await tick(clock, 500);
      assert.equal(edge.proxy.upstreams.list[0]!.up, true, 'back up after an answered probe');
    } finally { revived?.close(); pbx2.close(); phone.close(); await edge.close(0); }
  });

  test('a TCP PBX whose port is closed (connect refused) is marked down without waiting for a timeout', async () => {
    const closedPort = await freeTcpPort('127.0.0.6');
    const pbx2 = await answeringPbx('127.0.0.4');
    const phone = await UdpPeer.bind('127.0.0.1');
    const clock = new ManualClock();
    const edge = await startEdge(testConfig({
      listen: [{ transport: 'udp', host: '127.0.0.1', port: 0 }, { transport: 'tcp', host: '127.0.0.1', port: 0 }],
      upstreams: [{ transport: 'tcp', host: '127.0.0.6', port: closedPort }, { transport: 'udp', host: '127.0.0.4', port: pbx2.port }],
      // probes off: only transport errors may mark an upstream down
      health: { intervalMs: 0, timeoutMs: 2000, failuresBeforeDown: 1, retryAfterSeconds: 30 },
    }), silent, { clock });
    const port = edge.listeners[0]!.port;
    try {
      const callId = uniq('tcpdead');
      await phone.send(request(phone, { callId }), port);
      await waitUntil(() => !edge.proxy.upstreams.list[0]!.up, 'refused connect marks the TCP upstream down');
      // the call that met the refusal fails over when its transaction times out; later calls go
      // to the second upstream at once
      assert.equal(await call(port, phone), 200);
      clock.advance(32_000);
      const fin = await phone.wait((m) => header(m.text, 'Call-ID') === callId && m.text.startsWith('SIP/2.0 200'));
      assert.ok(fin);
      const text = await edge.metrics.metrics();
      assert.equal(sample(text, 'sipedge_upstream_health_failures_total', { upstream: '1', cause: 'transport_error' }), 1);
      assert.equal(pbx2.options, 0, 'health.intervalMs 0: the edge sends no OPTIONS at all');
      // probes off: after retryAfterSeconds the upstream is given another chance
      clock.advance(30_000);
      assert.equal(edge.proxy.upstreams.pick(), 0, 'retried after retryAfterSeconds');
    } finally { pbx2.close(); phone.close(); await edge.close(0); }
  });
});

describe('issue 12 item 2: a TCP connection flood from unknown sources leaves room for known ones', () => {
  test('sipp calls over TCP from a trusted address while 25 unknown addresses x 8 connections hold their slots', { skip: sippSkip }, async () => {
    const uas = await startSipp({ sn: 'uas', transport: 'u1', localIp: '127.0.0.2', maxTimeMs: 60_000 });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sip-edge-dos-'));
    const cfgFile = path.join(dir, 'edge.yaml');
    // the report's flood scaled down: maxConnections 200, 25 addresses x 8 would take them all
    fs.writeFileSync(cfgFile, 'health:\n  intervalMs: 0\ntcp:\n  maxConnections: 200\n  maxConnectionsPerSource: 8\n');
    const edge = await startEdgeProc({
      listen: ['udp:127.0.0.1:0', 'tcp:127.0.0.1:0'], upstream: [`udp:127.0.0.2:${uas.port}`],
      extraArgs: ['--config', cfgFile, '--trusted', '127.0.0.5/32'],
    });
    const flood: FloodConn[] = [];
    try {
      for (let a = 1; a <= 25; a++) for (let i = 0; i < 8; i++) flood.push(await holdConnection(edge.ports.tcp!, `127.3.0.${a}`));
      await waitUntil(() => flood.every((c) => c.decided()), 'every flood connection accepted (CRLF answered) or refused', 10_000);
      const held = flood.filter((c) => !c.closed).length;
      const calls = 20;
      const r = await runSipp({ scenario: 'uac-rr.xml', remote: `127.0.0.1:${edge.ports.tcp}`, transport: 't1', localIp: '127.0.0.5', calls, rate: 10, limit: 10, maxTimeMs: 30_000 });
      const m = await (await fetch(`http://127.0.0.1:${edge.metricsPort}/metrics`)).text();
      // the measurement for the report
      console.log(`# flood held ${held}/200 connections; trusted sipp over TCP: ${r.successful}/${calls} calls`);
      assert.equal(r.failed, 0, `trusted calls failed during the flood\n${sippSummary(r)}`);
      assert.equal(r.successful, calls, sippSummary(r));
      assert.equal(held, 160, 'unknown sources hold 80 % of maxConnections');
      assert.equal(sample(m, 'sipedge_tcp_admissions_total', { class: 'unknown', result: 'rejected_class_cap' }), 40);
      assert.equal(sample(m, 'sipedge_tcp_admissions_total', { class: 'trusted', result: 'accepted' }), 1, 'sipp t1: one connection');
      assert.ok(flood.filter((c) => !c.closed).length === held, 'no flood connection was evicted: the reserve was free');
    } finally {
      for (const c of flood) c.socket.destroy();
      await edge.stop();
      await uas.stop(500);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('during the flood a promoted phone (REGISTER accepted by the PBX) and the PBX side still connect over TCP', async () => {
    const pbx = await answeringPbx('127.0.0.2');
    const clock = new ManualClock();
    const edge = await startEdge(testConfig({
      listen: [{ transport: 'udp', host: '127.0.0.1', port: 0 }, { transport: 'tcp', host: '127.0.0.1', port: 0 }],
      upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }],
      tcp: { maxConnections: 50, maxConnectionsPerSource: 5, unknownPercent: 80, promotedPercent: 90, messageTimeoutMs: 5000, idleTimeoutMs: 60_000 },
    }), silent, { clock });
    const udpPort = edge.listeners[0]!.port;
    const tcpPort = edge.listeners[1]!.port;
    const flood: FloodConn[] = [];
    const phoneUdp = await UdpPeer.bind('127.0.0.7');
    const peers: TcpPeer[] = [];
    try {
      // the phone registers (over UDP); the PBX accepts: the edge promotes its address
      await phoneUdp.send(request(phoneUdp, { method: 'REGISTER', ruri: 'sip:example.com', to: '<sip:alice@example.com>' }), udpPort);
      await phoneUdp.waitFirstLine('SIP/2.0 200');
      for (let a = 1; a <= 12; a++) for (let i = 0; i < 5; i++) flood.push(await holdConnection(tcpPort, `127.4.0.${a}`));
      await waitUntil(() => flood.every((c) => c.decided()), 'flood decided', 10_000);
      assert.equal(flood.filter((c) => !c.closed).length, 40, 'unknown: 80 % of 50');
      // the promoted phone calls over TCP
      const phone = await TcpPeer.connect(tcpPort, '127.0.0.1', '127.0.0.7');
      peers.push(phone);
      const callId = uniq('promoted');
      phone.send(request({ address: '127.0.0.7', port: phone.port }, { callId, via: `SIP/2.0/TCP 127.0.0.7:${phone.port};branch=${uniq('z9hG4bK')}` }));
      const ok = await phone.wait((m) => header(m.text, 'Call-ID') === callId && m.text.startsWith('SIP/2.0 200'), 3000, '200 to the promoted phone');
      assert.ok(ok);
      // the PBX side opens a TCP connection too (inside class) and is answered
      const inside = await TcpPeer.connect(tcpPort, '127.0.0.1', '127.0.0.2');
      peers.push(inside);
      const opt = uniq('pbxside');
      inside.send(request({ address: '127.0.0.2', port: inside.port }, { method: 'OPTIONS', callId: opt, ruri: 'sip:127.0.0.1', via: `SIP/2.0/TCP 127.0.0.2:${inside.port};branch=${uniq('z9hG4bK')}` }));
      await inside.wait((m) => header(m.text, 'Call-ID') === opt, 3000, 'an answer on the PBX-side connection');
      const m = await edge.metrics.metrics();
      assert.equal(sample(m, 'sipedge_tcp_admissions_total', { class: 'promoted', result: 'accepted' }), 1);
      assert.equal(sample(m, 'sipedge_tcp_admissions_total', { class: 'inside', result: 'accepted' }), 1);
      assert.equal(sample(m, 'sipedge_tcp_admissions_total', { class: 'unknown', result: 'rejected_class_cap' }), 20);
    } finally {
      for (const c of flood) c.socket.destroy();
      for (const p of peers) p.close();
      phoneUdp.close(); pbx.close(); await edge.close(0);
    }
  });
});

describe('UpstreamPool: what counts', () => {
  test('a burst of failures counts once; failures far enough apart add up', () => {
    let now = 0;
    const changes: boolean[] = [];
    const pool = new UpstreamPool([{ transport: 'tcp', host: '10.0.0.5', port: 5060 }], {
      failuresBeforeDown: 2, minFailureGapMs: 1000, now: () => now, onChange: (_i, up) => changes.push(up),
    });
    for (let i = 0; i < 100; i++) pool.failure(0, 'transport_error');
    assert.equal(pool.list[0]!.failures, 1);
    assert.equal(pool.list[0]!.up, true);
    now = 1000;
    assert.equal(pool.failure(0, 'transport_error'), true);
    assert.equal(pool.list[0]!.up, false);
    assert.deepEqual(changes, [false]);
    pool.success(0);
    assert.deepEqual(changes, [false, true]);
  });

  test('without probes a down upstream is retried after retryDownAfterMs, half-open', () => {
    let now = 0;
    const pool = new UpstreamPool([{ transport: 'tcp', host: '10.0.0.5', port: 5060 }], {
      failuresBeforeDown: 3, minFailureGapMs: 10, now: () => now, retryDownAfterMs: 30_000,
    });
    for (let i = 0; i < 3; i++) { pool.failure(0, 'transport_error'); now += 10; }
    assert.equal(pool.pick(), -1);
    now += 29_000;
    assert.equal(pool.pick(), -1);
    now += 1_000;
    assert.equal(pool.pick(), 0);
    now += 10;
    pool.failure(0, 'transport_error');
    assert.equal(pool.pick(), -1, 'one more failure after the retry marks it down again');
  });
});

/** advance the injected clock, then give the sockets a moment (probe answers land in between) */
async function tick(clock: ManualClock, ms: number): Promise<void> {
  clock.advance(ms);
  await new Promise((r) => setTimeout(r, 20));
}

interface FloodConn { socket: net.Socket; closed: boolean; ponged: boolean; decided(): boolean }

/** a flood connection as in the report: connect from `from`, send a CRLF keepalive, hold it */
async function holdConnection(port: number, from: string): Promise<FloodConn> {
  const socket = net.connect({ host: '127.0.0.1', port, localAddress: from });
  const c: FloodConn = { socket, closed: false, ponged: false, decided: () => c.closed || c.ponged };
  socket.on('data', () => { c.ponged = true; });
  socket.on('close', () => { c.closed = true; });
  socket.on('error', () => undefined);
  await new Promise<void>((res) => { socket.once('connect', () => res()); socket.once('close', () => res()); });
  if (!c.closed) socket.write('\r\n\r\n'); // RFC 5626 3.5.1 ping: an accepted connection answers CRLF
  return c;
}

async function waitUntil(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** a TCP port on `host` with nothing listening (bound, then released) */
async function freeTcpPort(host: string): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, host, () => r()));
  const p = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return p;
}

