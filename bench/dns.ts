// Cost of a cached RFC 3263 lookup on the request path (edge/dns/resolver.ts lookup()): what a
// request for a name already resolved pays, in ns per call. DNS itself is out of the picture:
// the cache is filled once from a tiny in-process DNS server (dns-packet over UDP on loopback),
// then the clock is injected so that entries are fresh (hit) or expired (stale, served while a
// refresh is pending).
// Cases: a numeric host (no DNS at all); a name with one SRV target (fixed order, the stored
// list is returned); three SRV targets of one priority with weights plus a backup (a fresh
// RFC 2782 draw per call); the same through the edge's Metrics (sipedge_dns_cache_lookups_total);
// an expired entry served stale.
// Run: node dist/bench/dns.js   (flock /tmp/heavy.lock node dist/bench/dns.js on shared machines)
import * as dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import * as dnsPacket from 'dns-packet';
import type { Answer } from 'dns-packet';
import { dnsMetricsOf, SipResolver } from '../edge/dns';
import type { SipDestination } from '../edge/dns';
import { Metrics } from '../edge/metrics';

const ZONE: Record<string, Answer[]> = {
  'SRV _sip._udp.one.bench.test': [{ type: 'SRV', name: '_sip._udp.one.bench.test', ttl: 60, data: { priority: 10, weight: 0, port: 5070, target: 'a.bench.test' } }],
  'SRV _sip._udp.w.bench.test': [
    { type: 'SRV', name: '_sip._udp.w.bench.test', ttl: 60, data: { priority: 10, weight: 60, port: 5060, target: 'a.bench.test' } },
    { type: 'SRV', name: '_sip._udp.w.bench.test', ttl: 60, data: { priority: 10, weight: 30, port: 5060, target: 'b.bench.test' } },
    { type: 'SRV', name: '_sip._udp.w.bench.test', ttl: 60, data: { priority: 10, weight: 10, port: 5060, target: 'c.bench.test' } },
    { type: 'SRV', name: '_sip._udp.w.bench.test', ttl: 60, data: { priority: 20, weight: 0, port: 5060, target: 'd.bench.test' } },
  ],
  'A a.bench.test': [{ type: 'A', name: 'a.bench.test', ttl: 60, data: '192.0.2.1' }],
  'A b.bench.test': [{ type: 'A', name: 'b.bench.test', ttl: 60, data: '192.0.2.2' }],
  'A c.bench.test': [{ type: 'A', name: 'c.bench.test', ttl: 60, data: '192.0.2.3' }],
  'A d.bench.test': [{ type: 'A', name: 'd.bench.test', ttl: 60, data: '192.0.2.4' }],
};

async function fakeServer(): Promise<{ port: number; close(): void }> {
  const s = dgram.createSocket('udp4');
  s.on('message', (msg, from) => {
    const q = dnsPacket.decode(msg);
    const question = q.questions![0]!;
    const answers = ZONE[`${question.type} ${question.name.toLowerCase()}`] ?? [];
    s.send(dnsPacket.encode({ type: 'response', id: q.id, flags: answers.length > 0 ? 0 : 3, questions: [question], answers }), from.port, from.address);
  });
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  return { port: (s.address() as { port: number }).port, close: () => s.close() };
}

function nsPerCall(r: SipResolver, dest: SipDestination, n: number): number {
  let sink = 0;
  for (let i = 0; i < 10000; i++) sink += r.lookup(dest)!.targets.length; // warm-up
  const t0 = performance.now();
  for (let i = 0; i < n; i++) sink += r.lookup(dest)!.targets.length;
  const ns = ((performance.now() - t0) * 1e6) / n;
  if (sink < 0) console.log(sink);
  return ns;
}

async function main(): Promise<void> {
  const srv = await fakeServer();
  let clock = 0;
  const mk = (withMetrics: boolean) => new SipResolver({
    servers: [{ address: '127.0.0.1', port: srv.port }], timeoutMs: 500, attempts: 1, ipv6: false, now: () => clock,
    ...(withMetrics ? { metrics: dnsMetricsOf(new Metrics({ defaultMetrics: false })) } : {}),
  });
  const plain = mk(false);
  const counted = mk(true);
  const one: SipDestination = { host: 'one.bench.test', transport: 'udp' };
  const weighted: SipDestination = { host: 'w.bench.test', transport: 'udp' };
  const numeric: SipDestination = { host: '192.0.2.9', port: 5060 };
  for (const r of [plain, counted]) {
    for (const d of [one, weighted]) {
      const res = await r.resolve(d);
      if (res.result !== 'ok') throw new Error(`bench setup: ${d.host} -> ${res.result}`);
    }
  }
  const N = 2_000_000;
  const repeats = 5;
  const cases: [string, () => number][] = [
    ['numeric host (no DNS)', () => nsPerCall(plain, numeric, N)],
    ['fresh, one SRV target (stored list)', () => nsPerCall(plain, one, N)],
    ['fresh, 3 weighted + 1 backup (RFC 2782 draw)', () => nsPerCall(plain, weighted, N)],
    ['fresh, one SRV target, with Metrics', () => nsPerCall(counted, one, N)],
    ['fresh, weighted draw, with Metrics', () => nsPerCall(counted, weighted, N)],
  ];
  const results = cases.map(() => [] as number[]);
  // interleave cases so JIT warm-up and machine noise hit every case alike
  for (let k = 0; k < repeats; k++) cases.forEach(([, fn], i) => results[i]!.push(fn()));
  // expired: served stale; the first stale lookup starts a refresh, which the fake server
  // answers; while it is pending (no await here) every lookup takes the stale path
  clock = 120_000;
  const stale: number[] = [];
  for (let k = 0; k < repeats; k++) stale.push(nsPerCall(plain, one, N));
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  console.log(`SipResolver.lookup() on a cached name, ${N} calls, median of ${repeats} interleaved runs (node ${process.version})`);
  cases.forEach(([name], i) => console.log(`${name.padEnd(48)} ${median(results[i]!).toFixed(0).padStart(6)} ns/call`));
  console.log(`${'expired, served stale (refresh pending)'.padEnd(48)} ${median(stale).toFixed(0).padStart(6)} ns/call`);
  plain.close();
  counted.close();
  srv.close();
}

void main();
