// Suspicion budgets, bans and the gate in running edges; two edges sharing one Redis see each
// other's bans and unbans, and an edge started later loads the active bans.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import pino from 'pino';
import { ManualClock } from '../edge/clock';
import { startEdge, type EdgeHandle } from '../edge/edge';
import { createRedisStore } from '../edge/store';
import { testConfig } from './helpers/config';
import { sample } from './helpers/prom';
import { UdpPeer, header, request, uniq } from './helpers/udp-peer';

const silent = pino({ level: 'silent' });
const inCi = process.env.CI === 'true';
const REDIS = 'redis://127.0.0.1:6379';

async function redisUp(): Promise<boolean> {
  try {
    const s = await createRedisStore({ url: REDIS, requireReady: true, keyPrefix: 'sipedge-probe:' } as Parameters<typeof createRedisStore>[0]);
    await s.close();
    return true;
  } catch { return false; }
}
const haveRedis = redisUp();

async function until(pred: () => boolean | Promise<boolean>, ms: number): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (await pred()) return Date.now() - t0;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`condition not met within ${ms} ms`);
}

test('a scanner that keeps probing exhausts its suspicion budget and is banned: the gate then drops it before parsing', async () => {
  const pbx = await UdpPeer.bind('127.0.0.2');
  const scanner = await UdpPeer.bind('127.0.0.9');
  const phone = await UdpPeer.bind('127.0.0.1');
  const edge = await startEdge(testConfig({ upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }] }), silent, { clock: new ManualClock(), watchRules: false });
  try {
    const port = edge.listeners[0]!.port;
    // friendly-scanner OPTIONS: weight 5 each against a budget of 20 -> banned on the 4th
    for (let i = 0; i < 6; i++) {
      await scanner.send(request(scanner, { method: 'OPTIONS', extra: ['User-Agent: friendly-scanner'] }), port);
      await new Promise((r) => setTimeout(r, 20));
    }
    await until(() => edge.bans.check('127.0.0.9', Date.now()) !== null, 2000);
    const ban = edge.bans.check('127.0.0.9', Date.now())!;
    assert.match(ban.reason, /suspicion/);
    assert.equal(ban.until - ban.since, 600_000, 'the configured first ban length');
    // banned: even a well-formed request goes nowhere, counted at the gate
    const cid = uniq('banned');
    await scanner.send(request(scanner, { callId: cid }), port);
    assert.ok(await pbx.silent((m) => header(m.text, 'Call-ID') === cid));
    const m = await edge.metrics.metrics();
    assert.ok((sample(m, 'sipedge_verdicts_total', { stage: 'gate', action: 'drop', reason: 'banned', mode: 'enforce' }) ?? 0) >= 1);
    assert.equal(sample(m, 'sipedge_bans_active'), 1);
    assert.equal(sample(m, 'sipedge_bans_added_total', { reason: ban.reason }), 1, 'counted under its own reason, not "other"');
    // an innocent phone is untouched
    const ok = uniq('phone');
    await phone.send(request(phone, { callId: ok }), port);
    await pbx.wait((x) => header(x.text, 'Call-ID') === ok);
  } finally {
    scanner.close(); phone.close(); pbx.close(); await edge.close(0);
  }
});

test('trusted peers are never banned automatically', async () => {
  const pbx = await UdpPeer.bind('127.0.0.2');
  const carrier = await UdpPeer.bind('127.0.0.10');
  const edge = await startEdge(testConfig({ upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }], trusted: ['127.0.0.10/32'] }), silent, { clock: new ManualClock(), watchRules: false });
  try {
    for (let i = 0; i < 30; i++) await carrier.send('garbage that does not parse\r\n\r\n', edge.listeners[0]!.port);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(edge.bans.check('127.0.0.10', Date.now()), null);
  } finally {
    carrier.close(); pbx.close(); await edge.close(0);
  }
});

test('the PBX accepting a REGISTER promotes the source: 500 phones behind one NAT re-registering are not limited or banned', async () => {
  const pbx = await UdpPeer.bind('127.0.0.2');
  const office = await UdpPeer.bind('127.0.0.11');
  const edge = await startEdge(testConfig({ upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }] }), silent, { clock: new ManualClock(), watchRules: false });
  // the PBX stand-in accepts every REGISTER (it authenticated the phone)
  pbx.sock.on('message', (b) => {
    const t = b.toString('latin1');
    if (!t.startsWith('REGISTER')) return;
    const vias = t.split('\r\n').filter((l) => l.startsWith('Via:'));
    const reply = ['SIP/2.0 200 OK', ...vias, `From: ${header(t, 'From')}`, `To: ${header(t, 'To')};tag=r`, `Call-ID: ${header(t, 'Call-ID')}`, `CSeq: ${header(t, 'CSeq')}`, 'Content-Length: 0', '', ''].join('\r\n');
    pbx.sock.send(reply, edge.listeners[0]!.port, '127.0.0.1');
  });
  try {
    const port = edge.listeners[0]!.port;
    // the first phone registers and is accepted: the office address is promoted
    await office.send(request(office, { method: 'REGISTER', ruri: 'sip:example.com', to: '<sip:p0@example.com>' }), port);
    await office.waitFirstLine('SIP/2.0 200');
    await until(() => edge.suspicion.isPromoted('127.0.0.11'), 1000);
    // then 500 phones re-register at once (more than the unpromoted budget of 200 per 10 s)
    for (let i = 1; i <= 500; i++) {
      office.sock.send(request(office, { method: 'REGISTER', ruri: 'sip:example.com', to: `<sip:p${i}@example.com>`, callId: uniq(`nat${i}`) }), port, '127.0.0.1');
      if (i % 50 === 0) await new Promise((r) => setTimeout(r, 10));
    }
    let got = 0;
    await until(() => { got = office.inbox.filter((m) => m.text.startsWith('SIP/2.0 200')).length; return got >= 500; }, 10_000);
    assert.equal(edge.bans.check('127.0.0.11', Date.now()), null);
    assert.equal(office.inbox.filter((m) => /^SIP\/2.0 503/.test(m.text)).length, 0);
  } finally {
    office.close(); pbx.close(); await edge.close(0);
  }
});

test('two edges sharing Redis: a ban at one reaches the other within 200 ms, an unban too, and a third edge loads it', async (t) => {
  if (!(await haveRedis)) {
    if (inCi) assert.fail('Redis on 127.0.0.1:6379 is required under CI=true');
    t.skip('no Redis on 127.0.0.1:6379');
    return;
  }
  const prefix = `sipedge-test-${randomBytes(4).toString('hex')}:`;
  const mk = async (): Promise<EdgeHandle> => {
    const store = await createRedisStore({ url: REDIS, keyPrefix: prefix });
    return startEdge(testConfig({ redis: { url: REDIS }, upstreams: [{ transport: 'udp', host: '127.0.0.2', port: 5999 }] }), silent, { clock: new ManualClock(), watchRules: false, store });
  };
  const a = await mk();
  const b = await mk();
  const edges = [a, b];
  try {
    await a.store.ban({ key: '198.51.100.23', reason: 'suspicion_scanner', rule: 'test', seconds: 300 });
    const took = await until(() => b.bans.check('198.51.100.23', Date.now()) !== null, 200);
    assert.ok(took <= 200);
    const c = await mk();
    edges.push(c);
    assert.notEqual(c.bans.check('198.51.100.23', Date.now()), null, 'a starting edge loads the active bans');
    await b.store.unban('198.51.100.23');
    await until(() => a.bans.check('198.51.100.23', Date.now()) === null && c.bans.check('198.51.100.23', Date.now()) === null, 200);
  } finally {
    for (const e of edges) {
      await e.store.unban('198.51.100.23').catch(() => false);
      await e.close(0);
      await e.store.close();
    }
  }
});

after(async () => { await haveRedis; });

test('a source that keeps flooding past its rate limit spends its suspicion budget and is banned', async () => {
  const pbx = await UdpPeer.bind('127.0.0.2');
  const flooder = await UdpPeer.bind('127.0.0.12');
  const edge = await startEdge(testConfig({ upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }] }), silent, { clock: new ManualClock(), watchRules: false });
  try {
    // well-formed OPTIONS, nothing a scanner signature or sanity would catch: only the rate
    for (let i = 0; i < 260; i++) {
      flooder.sock.send(request(flooder, { method: 'OPTIONS', callId: uniq('fl'), ruri: 'sip:example.com' }), edge.listeners[0]!.port, '127.0.0.1');
      if (i % 20 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    await until(() => edge.bans.check('127.0.0.12', Date.now()) !== null, 3000);
    assert.equal(edge.bans.check('127.0.0.12', Date.now())!.reason, 'suspicion_flood');
  } finally {
    flooder.close(); pbx.close(); await edge.close(0);
  }
});
