// Cost per message of the hot-path metric calls.
//
//   npx tsc -p tsconfig.json --outDir dist-h5 && node dist-h5/bench/metrics.js [iterations]
//
// A "typical message" is what the pipeline does for a request that passes: count it received,
// run six stages that each return continue, count it sent, observe its processing time.
// Compared with NullMetrics (metrics off: the same calls into no-op methods) and with the
// obvious prom-client implementation (pre-bound label children), which is why edge/metrics.ts
// counts into plain cells instead.
import { Counter, Histogram, Registry } from 'prom-client';
import { Metrics, NullMetrics, PROCESSING_BUCKETS } from '../edge/metrics';
import type { EdgeMetrics } from '../edge/metrics';
import { CONTINUE, drop } from '../edge/verdict';

const STAGES = ['sanity', 'scanner', 'ipgeo', 'ratelimit', 'txmatch', 'auth'] as const;
const N = Number(process.argv[2] ?? 2_000_000);
const ROUNDS = 7;

let sink = 0;

function typical(m: EdgeMetrics, i: number): void {
  m.received('udp', 'outside', 'request');
  for (let s = 0; s < STAGES.length; s++) m.verdictOf(STAGES[s], CONTINUE, 'enforce');
  m.sent('udp', 'inside', 'request');
  m.observeProcessing('request', 0.00002 + (i & 63) * 0.000001);
}

const DROPPED = drop('ua_signature', 'friendly-scanner');
function dropped(m: EdgeMetrics, i: number): void {
  m.received('udp', 'outside', 'request');
  m.verdictOf('scanner', DROPPED, 'enforce');
  m.observeProcessing('request', 0.00001 + (i & 15) * 0.000001);
}

/** The straightforward prom-client version of `typical`, children bound once. */
function promClientTypical(): (i: number) => void {
  const registry = new Registry();
  const rx = new Counter({ name: 'b_rx_total', help: 'h', labelNames: ['transport', 'side', 'kind'], registers: [registry] });
  const tx = new Counter({ name: 'b_tx_total', help: 'h', labelNames: ['transport', 'side', 'kind'], registers: [registry] });
  const h = new Histogram({ name: 'b_seconds', help: 'h', labelNames: ['kind'], buckets: [...PROCESSING_BUCKETS], registers: [registry] });
  const rxC = rx.labels('udp', 'outside', 'request');
  const txC = tx.labels('udp', 'inside', 'request');
  const hC = h.labels('request');
  return (i) => {
    rxC.inc();
    txC.inc();
    hC.observe(0.00002 + (i & 63) * 0.000001);
  };
}

function measure(name: string, fn: (i: number) => void): { name: string; ns: number } {
  for (let i = 0; i < Math.min(N, 200_000); i++) fn(i); // warm up / let the JIT settle
  const samples: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) fn(i);
    samples.push(Number(process.hrtime.bigint() - t0) / N);
  }
  samples.sort((a, b) => a - b);
  return { name, ns: samples[Math.floor(samples.length / 2)] };
}

function main(): void {
  const on = new Metrics({ defaultMetrics: false, stages: STAGES.map((name) => ({ name, reasons: ['ua_signature'] })), rules: ['friendly-scanner'] });
  const off = new NullMetrics();
  const results = [
    measure('empty loop', (i) => { sink += i; }),
    measure('NullMetrics typical (metrics off)', (i) => typical(off, i)),
    measure('Metrics typical (rx + 6x continue + tx + observe)', (i) => typical(on, i)),
    measure('Metrics dropped (rx + drop verdict + rule hit + observe)', (i) => dropped(on, i)),
    measure('prom-client children (rx + tx + observe)', promClientTypical()),
  ];
  const base = results[1].ns;
  console.log(`node ${process.version}, ${N} iterations x ${ROUNDS} rounds, median ns/op`);
  for (const r of results) {
    console.log(`${r.name.padEnd(58)} ${r.ns.toFixed(1).padStart(8)} ns/op${r === results[1] || r === results[0] ? '' : `   (+${(r.ns - base).toFixed(1)} vs off)`}`);
  }
  // at 40k messages/s, what share of one core the counting costs
  const perSecond = ((results[2].ns - base) * 40_000) / 1e9;
  console.log(`typical cost at 40k msg/s: ${(perSecond * 100).toFixed(3)}% of one core`);
  if (sink === -1) console.log(sink);
}

main();
