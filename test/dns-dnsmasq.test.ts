// RFC 3263 resolution against a real DNS server: dnsmasq (test/helpers/dnsmasq.ts) serving the
// zone sip.test with NAPTR, SRV, A and AAAA records from a file each test writes, on 127.0.0.1
// and a random port. What went over the wire is read from dnsmasq's own query log. Under
// CI=true a missing dnsmasq fails these tests; locally they skip with the reason.
import { after, test, type TestContext } from 'node:test';
import * as assert from 'node:assert/strict';
import * as dgram from 'node:dgram';
import * as dnsPacket from 'dns-packet';
import { DnsClient } from '../edge/dns/client';
import { TargetCursor, targetKey } from '../edge/dns/failover';
import { SipResolver } from '../edge/dns/resolver';
import type { Resolution, SipResolverOptions } from '../edge/dns/resolver';
import type { DnsCacheResult, DnsMetrics, DnsQueryType, DnsResult } from '../edge/dns/types';
import { dnsmasqAvailable, dnsmasqRequired, startDnsmasq, type Dnsmasq } from './helpers/dnsmasq';

const ZONE = 'sip.test';
const servers: Dnsmasq[] = [];
const resolvers: SipResolver[] = [];
after(async () => {
  for (const r of resolvers) r.close();
  for (const s of servers) { s.resume(); await s.stop(); }
});

function need(t: TestContext): boolean {
  if (dnsmasqAvailable()) return true;
  const why = 'dnsmasq not installed (apt-get install dnsmasq-base)';
  if (dnsmasqRequired()) assert.fail(why);
  t.skip(why);
  return false;
}

async function server(records: readonly string[], ttl = 2): Promise<Dnsmasq> {
  const s = await startDnsmasq({ zone: ZONE, records, ttl });
  servers.push(s);
  return s;
}

function resolver(s: Dnsmasq | { address: string; port: number }, over: SipResolverOptions = {}): SipResolver {
  const r = new SipResolver({ servers: [{ address: s.address, port: s.port }], timeoutMs: 500, attempts: 2, ...over });
  resolvers.push(r);
  return r;
}

class CountingMetrics implements DnsMetrics {
  readonly queries = new Map<string, number>();
  readonly caches = new Map<DnsCacheResult, number>();
  query(type: DnsQueryType, result: DnsResult): void { const k = `${type} ${result}`; this.queries.set(k, (this.queries.get(k) ?? 0) + 1); }
  cache(result: DnsCacheResult): void { this.caches.set(result, (this.caches.get(result) ?? 0) + 1); }
}

const show = (r: Resolution | undefined) => r?.targets.map((t) => `${t.transport}:${t.address}:${t.port}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` every 20 ms until it returns true, at most `ms`. */
async function until(fn: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (fn()) return true; await sleep(20); }
  return fn();
}

test('NAPTR -> SRV -> A/AAAA: transports in NAPTR order, unsupported and non-S records dropped', async (t) => {
  if (!need(t)) return;
  const s = await server([
    // order 10: TCP first; order 20: UDP; SIPS (no TLS here) and a non-"S" record are ignored
    'naptr-record=carrier.sip.test,10,50,S,SIP+D2T,,_sip._tcp.carrier.sip.test',
    'naptr-record=carrier.sip.test,20,50,S,SIP+D2U,,_sip._udp.carrier.sip.test',
    'naptr-record=carrier.sip.test,5,50,S,SIPS+D2T,,_sips._tcp.carrier.sip.test',
    'naptr-record=carrier.sip.test,1,50,A,SIP+D2U,,gw9.sip.test',
    'srv-host=_sip._tcp.carrier.sip.test,gw1.sip.test,5070,10,0',
    'srv-host=_sip._tcp.carrier.sip.test,gw2.sip.test,5071,20,0',
    'srv-host=_sip._udp.carrier.sip.test,gw3.sip.test,5080,10,0',
    'srv-host=_sips._tcp.carrier.sip.test,gw4.sip.test,5061,10,0',
    'host-record=gw1.sip.test,127.0.0.11',
    'host-record=gw2.sip.test,127.0.0.12,::2',
    'host-record=gw3.sip.test,127.0.0.13',
    'host-record=gw4.sip.test,127.0.0.14',
    'host-record=gw9.sip.test,127.0.0.19',
  ]);
  const r = resolver(s);
  const res = await r.resolve({ host: 'carrier.sip.test' });
  assert.equal(res.result, 'ok');
  assert.deepEqual(show(res), ['tcp:127.0.0.11:5070', 'tcp:127.0.0.12:5071', 'tcp:::2:5071', 'udp:127.0.0.13:5080']);
  assert.deepEqual(res.targets.map((x) => [x.name, x.priority, x.family]), [['gw1.sip.test', 10, 4], ['gw2.sip.test', 20, 4], ['gw2.sip.test', 20, 6], ['gw3.sip.test', 10, 4]]);
  await s.settled();
  assert.equal(s.count('SRV', '_sips._tcp.carrier.sip.test'), 0, 'TLS is not supported: its SRV is never asked');
  assert.equal(s.count('A', 'gw9.sip.test'), 0, 'only S records are followed');
  assert.ok(res.expiresAt > performance.now(), 'fresh');
  // with TLS supported, SIPS+D2T (order 5) comes first, also for a sip: URI (RFC 3263 4.1)
  const tls = resolver(s, { transports: ['udp', 'tcp', 'tls'] });
  assert.deepEqual(show(await tls.resolve({ host: 'carrier.sip.test' }))?.slice(0, 2), ['tls:127.0.0.14:5061', 'tcp:127.0.0.11:5070']);
  // a sips: URI keeps only SIPS services
  assert.deepEqual(show(await tls.resolve({ host: 'carrier.sip.test', secure: true })), ['tls:127.0.0.14:5061']);
});

test('no NAPTR: SRV per supported transport; no SRV: A/AAAA on the default port', async (t) => {
  if (!need(t)) return;
  const s = await server([
    'srv-host=_sip._udp.srvonly.sip.test,gw1.sip.test,5090,10,0',
    'srv-host=_sip._tcp.srvonly.sip.test,gw1.sip.test,5091,10,0',
    'host-record=gw1.sip.test,127.0.0.11',
    'host-record=plain.sip.test,127.0.0.21,::1',
    'host-record=v6only.sip.test,::1',
    // RFC 2782: target "." = the service is decidedly not available (no A fallback)
    'srv-host=_sip._udp.closed.sip.test',
    'host-record=closed.sip.test,127.0.0.31',
  ]);
  const r = resolver(s);
  assert.deepEqual(show(await r.resolve({ host: 'srvonly.sip.test' })), ['udp:127.0.0.11:5090', 'tcp:127.0.0.11:5091']);
  assert.deepEqual(show(await r.resolve({ host: 'plain.sip.test' })), ['udp:127.0.0.21:5060', 'udp:::1:5060']);
  assert.deepEqual(show(await r.resolve({ host: 'v6only.sip.test' })), ['udp:::1:5060']);
  assert.deepEqual((await r.resolve({ host: 'v6only.sip.test' })).targets[0]?.family, 6);
  const closed = await r.resolve({ host: 'closed.sip.test', transport: 'udp' });
  assert.equal(closed.result, 'nodata');
  assert.deepEqual(closed.targets, []);
  const v6first = resolver(s, { preferIpv6: true });
  assert.deepEqual(show(await v6first.resolve({ host: 'plain.sip.test' })), ['udp:::1:5060', 'udp:127.0.0.21:5060']);
  const v4only = resolver(s, { ipv6: false });
  assert.deepEqual(show(await v4only.resolve({ host: 'plain.sip.test' })), ['udp:127.0.0.21:5060']);
  await s.settled();
  assert.equal(s.count('AAAA', 'plain.sip.test'), 2, 'the IPv4-only resolver never asked AAAA');
});

test('an IPv6 resolver address (::1) works like an IPv4 one', async (t) => {
  if (!need(t)) return;
  const s = await startDnsmasq({ zone: ZONE, address: '::1', records: ['srv-host=_sip._tcp.v6srv.sip.test,gw.sip.test,5090,10,0', 'host-record=gw.sip.test,127.0.0.5,::1'] });
  servers.push(s);
  const res = await resolver(s).resolve({ host: 'v6srv.sip.test', transport: 'tcp' });
  assert.deepEqual(show(res), ['tcp:127.0.0.5:5090', 'tcp:::1:5090']);
});

test('explicit port: A/AAAA only; explicit transport: SRV of that transport, then A', async (t) => {
  if (!need(t)) return;
  const s = await server([
    'naptr-record=pbx.sip.test,10,50,S,SIP+D2U,,_sip._udp.pbx.sip.test',
    'srv-host=_sip._udp.pbx.sip.test,gw1.sip.test,5090,10,0',
    'srv-host=_sip._tcp.pbx.sip.test,gw1.sip.test,5095,10,0',
    'host-record=gw1.sip.test,127.0.0.11',
    'host-record=pbx.sip.test,127.0.0.40',
  ]);
  const r = resolver(s);
  assert.deepEqual(show(await r.resolve({ host: 'pbx.sip.test', port: 5099 })), ['udp:127.0.0.40:5099']);
  assert.deepEqual(show(await r.resolve({ host: 'pbx.sip.test', port: 5099, transport: 'tcp' })), ['tcp:127.0.0.40:5099']);
  await s.settled();
  assert.equal(s.count('NAPTR', 'pbx.sip.test') + s.count('SRV', '_sip._udp.pbx.sip.test'), 0, 'RFC 3263 4.2: a port means no NAPTR, no SRV');
  assert.deepEqual(show(await r.resolve({ host: 'pbx.sip.test', transport: 'tcp' })), ['tcp:127.0.0.11:5095']);
  await s.settled();
  assert.equal(s.count('NAPTR', 'pbx.sip.test'), 0, 'RFC 3263 4.1: a transport means no NAPTR');
  // a transport with no SRV: A of the host on the default port
  const s2 = await server(['host-record=pbx.sip.test,127.0.0.40']);
  assert.deepEqual(show(await resolver(s2).resolve({ host: 'pbx.sip.test', transport: 'tcp' })), ['tcp:127.0.0.40:5060']);
});

test('RFC 2782: priorities in order, weights by statistics over bounded draws from the cache', async (t) => {
  if (!need(t)) return;
  const s = await server([
    'srv-host=_sip._udp.weighted.sip.test,w60.sip.test,5060,10,60',
    'srv-host=_sip._udp.weighted.sip.test,w30.sip.test,5060,10,30',
    'srv-host=_sip._udp.weighted.sip.test,w10.sip.test,5060,10,10',
    'srv-host=_sip._udp.weighted.sip.test,backup.sip.test,5060,20,100',
    'host-record=w60.sip.test,127.0.0.60',
    'host-record=w30.sip.test,127.0.0.30',
    'host-record=w10.sip.test,127.0.0.10',
    'host-record=backup.sip.test,127.0.0.99',
  ], 60);
  const metrics = new CountingMetrics();
  const r = resolver(s, { metrics, ipv6: false });
  const dest = { host: 'weighted.sip.test', transport: 'udp' } as const;
  await r.resolve(dest);
  const N = 3000;
  const first = new Map<string, number>();
  for (let i = 0; i < N; i++) {
    const res = r.lookup(dest);
    assert.ok(res !== undefined && res.targets.length === 4);
    assert.equal(res.targets[3]!.address, '127.0.0.99', 'priority 20 only after every priority 10 target');
    const a = res.targets[0]!.address;
    first.set(a, (first.get(a) ?? 0) + 1);
  }
  const share = (a: string) => (first.get(a) ?? 0) / N;
  // expected 0.6 / 0.3 / 0.1 (weight / sum of weights); bounds of about 5 standard deviations
  assert.ok(Math.abs(share('127.0.0.60') - 0.6) < 0.05, `60: ${share('127.0.0.60')}`);
  assert.ok(Math.abs(share('127.0.0.30') - 0.3) < 0.05, `30: ${share('127.0.0.30')}`);
  assert.ok(Math.abs(share('127.0.0.10') - 0.1) < 0.03, `10: ${share('127.0.0.10')}`);
  assert.equal(metrics.caches.get('hit'), N, 'every draw came from the cache');
  await s.settled();
  assert.equal(s.count('SRV', '_sip._udp.weighted.sip.test'), 1, 'one SRV question for all draws');
});

test('NXDOMAIN: cached for the SOA MINIMUM (RFC 2308 5), asked again after it', async (t) => {
  if (!need(t)) return;
  const s = await server(['host-record=exists.sip.test,127.0.0.50'], 1);
  const metrics = new CountingMetrics();
  const r = resolver(s, { metrics });
  const dest = { host: 'nope.sip.test', port: 5060 };
  const a = await r.resolve(dest);
  assert.equal(a.result, 'nxdomain');
  assert.deepEqual(a.targets, []);
  await s.settled();
  assert.equal(s.count('A', 'nope.sip.test'), 1);
  for (let i = 0; i < 20; i++) assert.equal(r.lookup(dest)?.result, 'nxdomain');
  assert.equal((await r.resolve(dest)).result, 'nxdomain');
  await s.settled();
  assert.equal(s.count('A', 'nope.sip.test'), 1, 'negative answer served from the cache');
  assert.ok((metrics.queries.get('A nxdomain') ?? 0) >= 1);
  await sleep(1200);
  assert.equal((await r.resolve(dest)).result, 'nxdomain');
  await s.settled();
  assert.equal(s.count('A', 'nope.sip.test'), 2, 'asked again once the negative TTL ran out');
});

test('a record change during traffic is followed after its TTL, lookups never miss meanwhile', async (t) => {
  if (!need(t)) return;
  const recs = (a: string) => ['srv-host=_sip._udp.moving.sip.test,pbx.sip.test,5070,10,0', `host-record=pbx.sip.test,${a}`];
  const s = await server(recs('127.0.0.71'), 1);
  const r = resolver(s, { ipv6: false });
  const dest = { host: 'moving.sip.test' };
  const changes: string[][] = [];
  const stop = r.watch(dest, (res) => changes.push(show(res)!));
  try {
    assert.ok(await until(() => changes.length === 1, 3000), 'first resolution reported');
    assert.deepEqual(changes[0], ['udp:127.0.0.71:5070']);
    // "traffic": a lookup every 10 ms throughout; the per-packet path must always find targets
    let misses = 0;
    let lookups = 0;
    const seen = new Set<string>();
    const traffic = setInterval(() => {
      const res = r.lookup(dest);
      lookups++;
      if (res === undefined || res.targets.length === 0) misses++;
      else seen.add(res.targets[0]!.address);
    }, 10);
    await s.restart(recs('127.0.0.72'), 1);
    const followed = await until(() => changes.length === 2, 4000);
    await sleep(100);
    clearInterval(traffic);
    assert.ok(followed, `change not followed: ${JSON.stringify(changes)}`);
    assert.deepEqual(changes[1], ['udp:127.0.0.72:5070']);
    assert.equal(misses, 0, `${misses} of ${lookups} lookups found nothing`);
    assert.ok(seen.has('127.0.0.71') && seen.has('127.0.0.72'), 'traffic saw the old, then the new address');
    assert.deepEqual(show(r.lookup(dest)), ['udp:127.0.0.72:5070']);
  } finally {
    stop();
  }
});

test('a server that stops answering: bounded timeouts, stale entries served, fresh names fail as timeout', async (t) => {
  if (!need(t)) return;
  const s = await server(['host-record=up.sip.test,127.0.0.81', 'host-record=other.sip.test,127.0.0.82'], 1);
  const metrics = new CountingMetrics();
  const r = resolver(s, { timeoutMs: 150, attempts: 2, errorTtlSeconds: 1, metrics, ipv6: false });
  const dest = { host: 'up.sip.test', port: 5060 };
  assert.deepEqual(show(await r.resolve(dest)), ['udp:127.0.0.81:5060']);
  s.pause();
  try {
    await sleep(1100); // past the TTL
    const stale = r.lookup(dest);
    assert.deepEqual(show(stale), ['udp:127.0.0.81:5060'], 'expired but served (RFC 8767)');
    assert.ok(stale!.expiresAt < performance.now(), 'and known to be expired');
    const t0 = performance.now();
    assert.deepEqual(show(await r.resolve(dest)), ['udp:127.0.0.81:5060'], 'resolve() does not wait for the dead server either');
    const fresh = await r.resolve({ host: 'other.sip.test', port: 5060 });
    const took = performance.now() - t0;
    assert.equal(fresh.result, 'timeout');
    // 2 attempts x 1 server x 150 ms, with generous slack for a loaded machine; never the
    // kernel's or the OS resolver's multi-second defaults
    assert.ok(took < 1500, `took ${took} ms`);
    assert.ok((metrics.queries.get('A timeout') ?? 0) >= 1);
    // the failure is remembered: no new question for errorTtl
    const before = metrics.queries.get('A timeout');
    assert.equal(r.lookup({ host: 'other.sip.test', port: 5060 })?.result, 'timeout');
    assert.equal(metrics.queries.get('A timeout'), before);
    // the stale refresh that was started finished as a timeout; the entry is still served
    await until(() => r.client.outstanding === 0, 1000);
    assert.deepEqual(show(r.lookup(dest)), ['udp:127.0.0.81:5060']);
  } finally {
    s.resume();
  }
  // back: the next refresh after errorTtl brings fresh data
  await sleep(1100);
  r.lookup(dest);
  assert.ok(await until(() => (r.lookup(dest)?.expiresAt ?? 0) > performance.now(), 2000), 'fresh again after the server came back');
});

test('concurrent identical lookups are one question on the wire; distinct ones are bounded', async (t) => {
  if (!need(t)) return;
  const s = await server([
    'naptr-record=busy.sip.test,10,50,S,SIP+D2U,,_sip._udp.busy.sip.test',
    'srv-host=_sip._udp.busy.sip.test,gw.sip.test,5060,10,0',
    'host-record=gw.sip.test,127.0.0.91',
    'host-record=gw2.sip.test,127.0.0.92',
  ], 30);
  const r = resolver(s);
  const all = await Promise.all(Array.from({ length: 50 }, () => r.resolve({ host: 'busy.sip.test' })));
  for (const res of all) assert.deepEqual(show(res), ['udp:127.0.0.91:5060']);
  await s.settled();
  assert.equal(s.count('NAPTR', 'busy.sip.test'), 1);
  assert.equal(s.count('SRV', '_sip._udp.busy.sip.test'), 1);
  await s.settled();
  assert.equal(s.count('A', 'gw.sip.test'), 1);
  // and 50 synchronous lookups of a new name start one resolution
  for (let i = 0; i < 50; i++) assert.equal(r.lookup({ host: 'gw2.sip.test', port: 5062 }), undefined);
  assert.ok(await until(() => r.lookup({ host: 'gw2.sip.test', port: 5062 }) !== undefined, 2000));
  await s.settled();
  assert.equal(s.count('A', 'gw2.sip.test'), 1);
  // another destination over a cached record set asks nothing new
  assert.deepEqual(show(await r.resolve({ host: 'gw.sip.test', port: 5070 })), ['udp:127.0.0.91:5070']);
  await s.settled();
  assert.equal(s.count('A', 'gw.sip.test'), 1, 'the A record set came from the cache');
  // outstanding questions bounded: with the server paused, the third distinct question is refused at once
  const c = new DnsClient({ servers: [{ address: s.address, port: s.port }], timeoutMs: 300, attempts: 1, maxOutstanding: 2 });
  s.pause();
  try {
    const p1 = c.query('a1.sip.test', 'A');
    const p2 = c.query('a2.sip.test', 'A');
    const p3 = await c.query('a3.sip.test', 'A');
    assert.equal(p3.result, 'busy');
    assert.equal((await p1).result, 'timeout');
    assert.equal((await p2).result, 'timeout');
  } finally {
    s.resume();
    c.close();
  }
});

test('a truncated UDP answer (TC) is asked again over TCP', async (t) => {
  if (!need(t)) return;
  const records: string[] = [];
  for (let i = 0; i < 30; i++) records.push(`srv-host=_sip._udp.big.sip.test,a-rather-long-target-host-name-${i}.sip.test,${5000 + i},10,1`);
  const s = await server(records, 30);
  // no EDNS: 512 bytes over UDP (RFC 1035 4.2.1); 30 SRV records need about 1.5 kB
  const c = new DnsClient({ servers: [{ address: s.address, port: s.port }], timeoutMs: 500, attempts: 1, maxOutstanding: 4, ednsUdpSize: 0 });
  try {
    const a = await c.query('_sip._udp.big.sip.test', 'SRV');
    assert.equal(a.result, 'ok');
    assert.equal(a.records.length, 30);
    // dnsmasq answers TCP in a forked child: its log line may come a little after the answer
    assert.ok(await until(() => s.count('SRV', '_sip._udp.big.sip.test') === 2, 2000), 'once over UDP (truncated), once over TCP');
  } finally {
    c.close();
  }
});

test('forged answers are ignored: wrong port, wrong id, wrong question', async (t) => {
  if (!need(t)) return;
  const s = await server(['host-record=real.sip.test,127.0.0.101'], 30);
  // a relay the resolver queries: before forwarding to dnsmasq it sends three forgeries
  const front = dgram.createSocket('udp4');
  const other = dgram.createSocket('udp4');
  const back = dgram.createSocket('udp4');
  await new Promise<void>((res) => front.bind(0, '127.0.0.1', () => res()));
  await new Promise<void>((res) => other.bind(0, '127.0.0.1', () => res()));
  await new Promise<void>((res) => back.bind(0, '127.0.0.1', () => res()));
  let forged = 0;
  front.on('message', (msg, client) => {
    const q = dnsPacket.decode(msg);
    const question = q.questions![0]!;
    const forge = (id: number, name: string): Buffer => dnsPacket.encode({
      type: 'response', id, flags: dnsPacket.AUTHORITATIVE_ANSWER, questions: [{ ...question, name }],
      answers: question.type === 'A' ? [{ type: 'A', name, ttl: 3600, data: '6.6.6.6' }] : [],
    });
    // 1. right id and question, but from another port (RFC 5452 9.2)
    other.send(forge(q.id!, question.name), client.port, client.address);
    // 2. right port, wrong id
    front.send(forge((q.id! + 1) & 0xffff, question.name), client.port, client.address);
    // 3. right port and id, another question
    front.send(forge(q.id!, 'evil.sip.test'), client.port, client.address);
    forged += 3;
    // then the real answer, relayed from dnsmasq, a little later
    back.once('message', (answer) => setTimeout(() => front.send(answer, client.port, client.address), 20));
    back.send(msg, s.port, s.address);
  });
  try {
    const port = (front.address() as { port: number }).port;
    const r = resolver({ address: '127.0.0.1', port });
    const res = await r.resolve({ host: 'real.sip.test', port: 5060 });
    assert.deepEqual(show(res), ['udp:127.0.0.101:5060']);
    assert.ok(forged >= 3);
    assert.ok(!JSON.stringify(r.lookup({ host: 'real.sip.test', port: 5060 })).includes('6.6.6.6'));
  } finally {
    front.close(); other.close(); back.close();
  }
});

/** A UDP SIP peer on 127.0.0.1 that answers every request with `status` (or never, with null). */
async function sipPeer(status: number | null): Promise<{ port: number; got: number; close(): void }> {
  const sock = dgram.createSocket('udp4');
  const peer = { port: 0, got: 0, close: () => sock.close() };
  sock.on('message', (msg, from) => {
    peer.got++;
    if (status === null) return;
    const head = msg.toString('latin1').split('\r\n');
    const keep = head.filter((l) => /^(via|from|to|call-id|cseq):/i.test(l));
    sock.send(Buffer.from([`SIP/2.0 ${status} X`, ...keep, 'Content-Length: 0', '', ''].join('\r\n')), from.port, from.address);
  });
  await new Promise<void>((res) => sock.bind(0, '127.0.0.1', () => res()));
  peer.port = (sock.address() as { port: number }).port;
  return peer;
}

/** Send an OPTIONS to `t` and wait for a status line, at most `ms`; null on timeout. */
function options(t: { address: string; port: number }, ms: number): Promise<number | null> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    const done = (v: number | null) => { clearTimeout(timer); s.close(); resolve(v); };
    const timer = setTimeout(() => done(null), ms);
    s.on('message', (m) => done(Number(/^SIP\/2\.0 (\d{3})/.exec(m.toString('latin1'))?.[1] ?? 0)));
    s.bind(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      const msg = [`OPTIONS sip:${t.address}:${t.port} SIP/2.0`, `Via: SIP/2.0/UDP 127.0.0.1:${port};branch=z9hG4bK${Math.random().toString(36).slice(2)}`,
        'Max-Forwards: 70', 'From: <sip:t@sip.test>;tag=1', `To: <sip:${t.address}>`, `Call-ID: ${Math.random()}`, 'CSeq: 1 OPTIONS', 'Content-Length: 0', '', ''].join('\r\n');
      s.send(Buffer.from(msg), t.port, t.address);
    });
  });
}

test('failover per resolved target (RFC 3263 4.3): a silent target, then a 503, then the one that answers', async (t) => {
  if (!need(t)) return;
  const silent = await sipPeer(null);
  const unavailable = await sipPeer(503);
  const good = await sipPeer(200);
  try {
    const s = await server([
      `srv-host=_sip._udp.trunk.sip.test,a.sip.test,${silent.port},10,0`,
      `srv-host=_sip._udp.trunk.sip.test,b.sip.test,${unavailable.port},20,0`,
      `srv-host=_sip._udp.trunk.sip.test,c.sip.test,${good.port},30,0`,
      'host-record=a.sip.test,127.0.0.1',
      'host-record=b.sip.test,127.0.0.1',
      'host-record=c.sip.test,127.0.0.1',
    ], 30);
    const r = resolver(s, { ipv6: false });
    const res = await r.resolve({ host: 'trunk.sip.test' });
    assert.deepEqual(res.targets.map((x) => x.port), [silent.port, unavailable.port, good.port]);
    // the caller's loop: next target on a timeout or a 503
    const tried: string[] = [];
    let answered: number | null = null;
    const cursor = new TargetCursor(res);
    for (let target = cursor.next(); target !== undefined; target = cursor.next()) {
      tried.push(targetKey(target));
      const status = await options(target, 300);
      if (status !== null && status !== 503) { answered = target.port; break; }
    }
    assert.equal(answered, good.port);
    assert.equal(tried.length, 3);
    assert.deepEqual([silent.got, unavailable.got, good.got], [1, 1, 1]);
    // with the caller's health view marking the first two down, they move behind the live one
    const down = new Set([targetKey(res.targets[0]!), targetKey(res.targets[1]!)]);
    const c2 = new TargetCursor(res, (x) => down.has(targetKey(x)));
    assert.deepEqual([c2.next()?.port, c2.next()?.port, c2.next()?.port, c2.next()], [good.port, silent.port, unavailable.port, undefined]);
  } finally {
    silent.close(); unavailable.close(); good.close();
  }
});
