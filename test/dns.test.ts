// The resolver's pure parts, without a DNS server: RFC 2782 weighted selection, NAPTR order,
// answer validation (RFC 5452), negative TTLs (RFC 2308 5), URI -> destination (RFC 3263 4),
// resolv.conf, numeric hosts. The real-server behaviour is in dns-dnsmasq.test.ts.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as dnsPacket from 'dns-packet';
import { classify, decodeResponse } from '../edge/dns/client';
import { destinationFromUri, parseResolvConf, SipResolver, srvName } from '../edge/dns/resolver';
import { byPriority, naptrOrder, weightedOrder } from '../edge/dns/srv';
import { parseUri } from '../edge/sip/uri';
import { dnsMetricsOf, DNS_QUERY_TYPES, DNS_RESULTS } from '../edge/dns';
import { Metrics } from '../edge/metrics';
import { freePort } from './helpers/ports';
import { sample } from './helpers/prom';
import { rng } from './helpers/rng';


test('RFC 2782: the first pick follows the weights; every record is ordered exactly once', () => {
  const items = [{ weight: 60, value: 'a' }, { weight: 30, value: 'b' }, { weight: 10, value: 'c' }, { weight: 0, value: 'z' }];
  const random = rng(1);
  const first = new Map<string, number>();
  const N = 4000;
  for (let i = 0; i < N; i++) {
    const order = weightedOrder(items, random);
    assert.deepEqual([...order].sort(), ['a', 'b', 'c', 'z']);
    first.set(order[0]!, (first.get(order[0]!) ?? 0) + 1);
  }
  // expected shares 60/101, 30/101, 10/101 and 1/101 for weight 0 ("a very small chance")
  const share = (v: string): number => (first.get(v) ?? 0) / N;
  assert.ok(Math.abs(share('a') - 60 / 101) < 0.03, `a: ${share('a')}`);
  assert.ok(Math.abs(share('b') - 30 / 101) < 0.03, `b: ${share('b')}`);
  assert.ok(Math.abs(share('c') - 10 / 101) < 0.02, `c: ${share('c')}`);
  assert.ok(share('z') < 0.03, `z: ${share('z')}`);
});

test('RFC 2782: all weights 0 keep the received order; priorities ascend', () => {
  const items = [{ weight: 0, value: 1 }, { weight: 0, value: 2 }, { weight: 0, value: 3 }];
  assert.deepEqual(weightedOrder(items, rng(2)), [1, 2, 3]);
  const groups = byPriority([{ priority: 20, n: 'x' }, { priority: 10, n: 'y' }, { priority: 20, n: 'z' }]);
  assert.deepEqual(groups.map((g) => g.map((r) => r.n)), [['y'], ['x', 'z']]);
});

test('RFC 3403 4.1: NAPTR by order, then preference', () => {
  const r = naptrOrder([{ order: 20, preference: 10, id: 'c' }, { order: 10, preference: 50, id: 'b' }, { order: 10, preference: 5, id: 'a' }]);
  assert.deepEqual(r.map((x) => x.id), ['a', 'b', 'c']);
});

test('RFC 5452: an answer counts only with our id, QR set and our exact question', () => {
  const q = { type: 'A' as const, name: 'pbx.example.test', class: 'IN' as const };
  const answer = (over: Partial<dnsPacket.Packet>): Buffer => dnsPacket.encode({
    type: 'response', id: 4242, questions: [q], answers: [{ type: 'A', name: 'pbx.example.test', ttl: 30, data: '192.0.2.1' }], ...over,
  });
  assert.notEqual(decodeResponse(answer({}), 4242, q), null);
  assert.notEqual(decodeResponse(answer({ questions: [{ ...q, name: 'PBX.Example.Test' }] }), 4242, q), null, 'RFC 4343: case-insensitive');
  assert.equal(decodeResponse(answer({ id: 4243 }), 4242, q), null, 'wrong id');
  assert.equal(decodeResponse(answer({ type: 'query' }), 4242, q), null, 'not a response');
  assert.equal(decodeResponse(answer({ questions: [{ ...q, name: 'evil.example.test' }] }), 4242, q), null, 'other name');
  assert.equal(decodeResponse(answer({ questions: [{ ...q, type: 'AAAA' }] }), 4242, q), null, 'other type');
  assert.equal(decodeResponse(answer({ questions: [] }), 4242, q), null, 'no question');
  assert.equal(decodeResponse(Buffer.from([1, 2, 3]), 4242, q), null, 'garbage never throws');
  // a compression pointer loop / random bytes: never a throw
  for (let i = 0; i < 500; i++) {
    const b = Buffer.from(answer({}));
    b[12 + ((i * 7) % (b.length - 12))] = (i * 31) & 0xff;
    decodeResponse(b, 4242, q);
  }
});

test('answer records: only the asked type owned by the name or a CNAME of it; never the additional section', () => {
  const p = dnsPacket.decode(dnsPacket.encode({
    type: 'response', id: 1, questions: [{ type: 'A', name: 'a.example.test' }],
    answers: [
      { type: 'CNAME', name: 'a.example.test', ttl: 50, data: 'b.example.test' },
      { type: 'A', name: 'b.example.test', ttl: 70, data: '192.0.2.2' },
      { type: 'A', name: 'unrelated.example.test', ttl: 70, data: '192.0.2.66' },
    ],
    additionals: [{ type: 'A', name: 'a.example.test', ttl: 70, data: '192.0.2.99' }],
  }));
  const a = classify(p, 'a.example.test', 'A');
  assert.equal(a.result, 'ok');
  assert.deepEqual(a.records.map((r) => (r.type === 'A' ? r.address : '')), ['192.0.2.2']);
  assert.equal(a.ttl, 50, 'the alias TTL bounds the answer');
});

test('RFC 2308 5: negative TTL = min(SOA TTL, SOA MINIMUM); NXDOMAIN vs NODATA; SERVFAIL', () => {
  const neg = (rcode: number, soaTtl: number, minimum: number) => dnsPacket.decode(dnsPacket.encode({
    type: 'response', id: 1, flags: rcode, questions: [{ type: 'A', name: 'x.example.test' }],
    authorities: [{ type: 'SOA', name: 'example.test', ttl: soaTtl, data: { mname: 'ns.example.test', rname: 'h.example.test', serial: 1, refresh: 1, retry: 1, expire: 1, minimum } }],
  }));
  assert.deepEqual(classify(neg(3, 900, 60), 'x.example.test', 'A'), { result: 'nxdomain', records: [], ttl: 60 });
  assert.deepEqual(classify(neg(0, 30, 600), 'x.example.test', 'A'), { result: 'nodata', records: [], ttl: 30 });
  assert.equal(classify(neg(2, 30, 600), 'x.example.test', 'A').result, 'servfail');
  assert.equal(classify(neg(5, 30, 600), 'x.example.test', 'A').result, 'refused');
});

test('RFC 3263 4: URI -> destination (maddr, transport, sips)', () => {
  const d = (s: string) => destinationFromUri(parseUri(s)!);
  assert.deepEqual(d('sip:+15551234567@carrier.example'), { host: 'carrier.example' });
  assert.deepEqual(d('sip:carrier.example:5080'), { host: 'carrier.example', port: 5080 });
  assert.deepEqual(d('sip:carrier.example;transport=TCP'), { host: 'carrier.example', transport: 'tcp' });
  assert.deepEqual(d('sips:carrier.example'), { host: 'carrier.example', secure: true });
  assert.deepEqual(d('sips:carrier.example;transport=tcp'), { host: 'carrier.example', transport: 'tls', secure: true });
  assert.deepEqual(d('sip:u@carrier.example;maddr=192.0.2.7'), { host: '192.0.2.7' });
  assert.equal(d('sips:carrier.example;transport=udp'), null);
  assert.equal(d('sip:carrier.example;transport=sctp'), null);
  assert.equal(d('tel:+15551234567'), null);
  assert.equal(srvName('tls', 'carrier.example'), '_sips._tcp.carrier.example');
});

test('resolv.conf: nameservers only, at most 3, scoped IPv6 skipped', () => {
  const s = parseResolvConf('# c\nsearch x\nnameserver 10.0.0.1\nnameserver ::1\nnameserver fe80::1%eth0\nnameserver 10.0.0.2\nnameserver 10.0.0.3\noptions ndots:1\n');
  assert.deepEqual(s, [{ address: '10.0.0.1', port: 53 }, { address: '::1', port: 53 }, { address: '10.0.0.2', port: 53 }]);
});

test('RFC 3263 4.2: a numeric host needs no DNS (port default per transport)', () => {
  const r = new SipResolver({ servers: [{ address: '127.0.0.1', port: 9 }], transports: ['udp', 'tcp', 'tls'] });
  try {
    assert.deepEqual(r.lookup({ host: '192.0.2.5' })?.targets, [{ transport: 'udp', address: '192.0.2.5', port: 5060, family: 4, name: '192.0.2.5', priority: 0 }]);
    assert.deepEqual(r.lookup({ host: '2001:db8::5', secure: true })?.targets.map((t) => [t.transport, t.port, t.family]), [['tls', 5061, 6]]);
    assert.deepEqual(r.lookup({ host: '192.0.2.5', port: 5070, transport: 'tcp' })?.targets.map((t) => [t.transport, t.port]), [['tcp', 5070]]);
    assert.equal(r.client.outstanding, 0, 'no question asked');
  } finally {
    r.close();
  }
  const noTls = new SipResolver({ servers: [{ address: '127.0.0.1', port: 9 }] });
  try {
    assert.equal(noTls.lookup({ host: '192.0.2.5', secure: true })?.result, 'error', 'sips without TLS support: no target');
  } finally {
    noTls.close();
  }
});

test('metrics: sipedge_dns_* series start at zero over closed labels and count through dnsMetricsOf', async () => {
  const m = new Metrics({ defaultMetrics: false });
  const before = await m.metrics();
  for (const type of DNS_QUERY_TYPES) for (const result of DNS_RESULTS) assert.equal(sample(before, 'sipedge_dns_queries_total', { type, result }), 0, `${type} ${result}`);
  for (const result of ['hit', 'stale', 'miss']) assert.equal(sample(before, 'sipedge_dns_cache_lookups_total', { result }), 0);
  // a server port nobody listens on: the connected socket reports the ICMP refusal as an error
  const port = await freePort('udp');
  const r = new SipResolver({ servers: [{ address: '127.0.0.1', port }], timeoutMs: 300, attempts: 1, metrics: dnsMetricsOf(m), ipv6: false });
  try {
    assert.equal(r.lookup({ host: 'nowhere.example.test', port: 5060 }), undefined);
    const res = await r.resolve({ host: 'nowhere.example.test', port: 5060 });
    assert.ok(res.result === 'error' || res.result === 'timeout', res.result);
    assert.deepEqual(res.targets, []);
    const after = await m.metrics();
    assert.equal(sample(after, 'sipedge_dns_queries_total', { type: 'A', result: res.result }), 1);
    assert.ok((sample(after, 'sipedge_dns_cache_lookups_total', { result: 'miss' }) ?? 0) >= 1);
    assert.ok(!after.includes('nowhere'), 'never a name in a label');
  } finally {
    r.close();
  }
});

/** An in-process DNS server on loopback answering from `zone(type, name)`; counts questions. */
async function fakeDns(zone: (type: string, name: string) => dnsPacket.Answer[]): Promise<{ port: number; asked: string[]; close(): void }> {
  const dgram = await import('node:dgram');
  const s = dgram.createSocket('udp4');
  const asked: string[] = [];
  s.on('message', (msg, from) => {
    const q = dnsPacket.decode(msg);
    const question = q.questions![0]!;
    asked.push(`${question.type} ${question.name}`);
    const answers = zone(question.type, question.name.toLowerCase());
    s.send(dnsPacket.encode({ type: 'response', id: q.id, flags: answers.length > 0 ? 0 : 3, questions: [question], answers }), from.port, from.address);
  });
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  return { port: (s.address() as { port: number }).port, asked, close: () => s.close() };
}

test('the destination cache holds at most maxNames hosts; a name in use is not the one evicted', async () => {
  const srv = await fakeDns((type, name) => (type === 'A' ? [{ type: 'A', name, ttl: 300, data: '192.0.2.1' }] : []));
  const r = new SipResolver({ servers: [{ address: '127.0.0.1', port: srv.port }], ipv6: false, maxNames: 10, timeoutMs: 500, attempts: 1 });
  try {
    const hot = { host: 'hot.lru.test', port: 5060 };
    await r.resolve(hot);
    for (let i = 0; i < 40; i++) {
      await r.resolve({ host: `n${i}.lru.test`, port: 5060 });
      assert.ok(r.lookup(hot) !== undefined, `hot name evicted after ${i}`);
      assert.ok(r.size <= 10, `size ${r.size}`);
    }
    assert.equal(srv.asked.filter((q) => q === 'A hot.lru.test').length, 1, 'the hot name was never asked again');
    assert.equal(r.lookup({ host: 'n0.lru.test', port: 5060 }), undefined, 'an old one was');
  } finally {
    r.close();
    srv.close();
  }
});

test('a resolution asks at most maxQueriesPerResolution questions (NAPTR -> 4 SRV -> 8 targets each)', async () => {
  const srv = await fakeDns((type, name) => {
    if (type === 'NAPTR' && name === 'wide.chain.test') {
      return ['SIP+D2U', 'SIP+D2T', 'SIP+D2U', 'SIP+D2T'].map((services, i) => ({
        type: 'NAPTR', name, ttl: 300, data: { order: i, preference: 0, flags: 'S', services, regexp: '', replacement: `_s${i}.chain.test` },
      }) as dnsPacket.Answer);
    }
    if (type === 'SRV') return Array.from({ length: 8 }, (_, i) => ({ type: 'SRV', name, ttl: 300, data: { priority: 1, weight: 1, port: 5060 + i, target: `t${i}-${name.slice(1, 3)}.chain.test` } }) as dnsPacket.Answer);
    if (type === 'A') return [{ type: 'A', name, ttl: 300, data: '192.0.2.7' }];
    return [];
  });
  const r = new SipResolver({ servers: [{ address: '127.0.0.1', port: srv.port }], maxQueriesPerResolution: 12, timeoutMs: 500, attempts: 1 });
  try {
    const res = await r.resolve({ host: 'wide.chain.test' });
    assert.ok(srv.asked.length <= 12, `${srv.asked.length} questions`);
    assert.equal(res.result, 'ok', 'what the budget allowed is still used');
    assert.ok(res.targets.length > 0 && res.targets.length <= 16);
  } finally {
    r.close();
    srv.close();
  }
});

test('without configured servers the resolver asks the nameservers of resolv.conf', async () => {
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-resolv-'));
  try {
    const file = path.join(dir, 'resolv.conf');
    fs.writeFileSync(file, 'nameserver 127.0.0.53\nnameserver ::1\n');
    const r = new SipResolver({ resolvConf: file });
    assert.deepEqual(r.servers, [{ address: '127.0.0.53', port: 53 }, { address: '::1', port: 53 }]);
    r.close();
    const none = new SipResolver({ resolvConf: path.join(dir, 'missing') });
    assert.deepEqual(none.servers, []);
    assert.equal((await none.resolve({ host: 'x.example.test', port: 5060 })).result, 'error', 'no server: an error value, not a throw');
    none.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
