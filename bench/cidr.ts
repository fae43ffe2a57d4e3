// CIDR lookup throughput at 10 vs 100,000 entries: the per-lookup cost must not grow with the
// number of entries (edge/net/cidr.ts probes one hash map per distinct prefix length).
// Run: node dist-NAME/bench/cidr.js
import { performance } from 'node:perf_hooks';
import { CidrMap } from '../edge/net/cidr';
import { bytesToIp, ipToBytes, maskBytes } from '../edge/net/address';
import { rng } from '../test/helpers/rng';


const V4_LENGTHS = [8, 12, 16, 20, 22, 24, 28, 32];
const V6_LENGTHS = [32, 40, 48, 56, 64, 96, 112, 128];

function v4(r: () => number): string {
  return [0, 0, 0, 0].map(() => Math.floor(r() * 256)).join('.');
}
function v6(r: () => number): string {
  // inside 2001:db8::/32 half the time so that probes share prefixes with entries
  const g = [0, 0, 0, 0, 0, 0, 0, 0].map(() => Math.floor(r() * 65536).toString(16));
  if (r() < 0.5) { g[0] = '2001'; g[1] = 'db8'; }
  return g.join(':');
}

function build(n: number, family: 4 | 6, r: () => number): CidrMap<number> {
  const m = new CidrMap<number>();
  const lengths = family === 4 ? V4_LENGTHS : V6_LENGTHS;
  for (let i = 0; i < n; i++) {
    const bits = lengths[i % lengths.length];
    // the network of a random address: an entry with host bits set is refused
    const e = m.add(`${bytesToIp(maskBytes(ipToBytes(family === 4 ? v4(r) : v6(r))!, bits))}/${bits}`, i);
    if (e !== null) throw new Error(e);
  }
  return m;
}

function measure(m: CidrMap<number>, probes: string[], bytes: boolean): number {
  const pre = probes.map((p) => ipToBytes(p)!);
  let hits = 0;
  const rounds = 20;
  // warm-up
  for (let i = 0; i < probes.length; i++) if ((bytes ? m.matchBytes(pre[i]) : m.match(probes[i])) !== null) hits++;
  const t0 = performance.now();
  for (let k = 0; k < rounds; k++) {
    for (let i = 0; i < probes.length; i++) if ((bytes ? m.matchBytes(pre[i]) : m.match(probes[i])) !== null) hits++;
  }
  const ms = performance.now() - t0;
  if (hits < 0) console.log(hits); // keep the loop observable
  return (rounds * probes.length) / (ms / 1000);
}

function main(): void {
  const sizes = [10, 1000, 10000, 100000];
  const repeats = 5;
  console.log(`CIDR longest-prefix match, 8 distinct prefix lengths per family, 50k random probes x 20, ` +
    `median of ${repeats} interleaved runs (node ${process.version})`);
  for (const family of [4, 6] as const) {
    const pr = rng(7);
    const probes = Array.from({ length: 50000 }, () => (family === 4 ? v4(pr) : v6(pr)));
    const maps = sizes.map((n) => build(n, family, rng(42)));
    const str: number[][] = sizes.map(() => []);
    const byt: number[][] = sizes.map(() => []);
    // interleave sizes so JIT warm-up and machine noise hit every size alike
    for (let k = 0; k < repeats; k++) {
      maps.forEach((m, i) => {
        str[i].push(measure(m, probes, false));
        byt[i].push(measure(m, probes, true));
      });
    }
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    sizes.forEach((n, i) => {
      console.log(`IPv${family}  entries=${String(n).padStart(6)}  distinct=${String(maps[i].size).padStart(6)}  ` +
        `match(string): ${(median(str[i]) / 1e6).toFixed(2)} M/s   matchBytes: ${(median(byt[i]) / 1e6).toFixed(2)} M/s`);
    });
  }
}

main();
