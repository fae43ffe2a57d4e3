// What a flood left on the heap, by V8 heap snapshots rather than guesses (issue 12).
//
//   node dist/bench/heap-diff.js BEFORE.heapsnapshot AFTER.heapsnapshot [--per N] [--top 25]
//
// Prints the total self size of both snapshots (a snapshot is taken after a full GC: no garbage
// in it, unlike RSS), the difference divided by --per (e.g. the number of sources of the flood),
// and the node types and constructor names whose count and bytes grew most. bench/memory.js
// --heap-snapshot writes the snapshots before the flood, after it, and after the idle time.
import * as fs from 'node:fs';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
  nodes: number[];
  strings: string[];
}

function summarise(file: string): { total: number; by: Map<string, [number, number]> } {
  const j = JSON.parse(fs.readFileSync(file, 'utf8')) as Snapshot;
  const f = j.snapshot.meta.node_fields;
  const nf = f.length;
  const ti = f.indexOf('type');
  const ni = f.indexOf('name');
  const si = f.indexOf('self_size');
  const types = j.snapshot.meta.node_types[0];
  const by = new Map<string, [number, number]>();
  let total = 0;
  for (let i = 0; i < j.nodes.length; i += nf) {
    const type = types[j.nodes[i + ti]!]!;
    // strings are named by their text: group them by type only
    const name = type === 'object' || type === 'closure' || type === 'native' ? String(j.strings[j.nodes[i + ni]!]).slice(0, 60) : '';
    const k = `${type}${name ? `:${name}` : ''}`;
    const e = by.get(k) ?? [0, 0];
    e[0]++;
    e[1] += j.nodes[i + si]!;
    by.set(k, e);
    total += j.nodes[i + si]!;
  }
  return { total, by };
}

const argv = process.argv.slice(2);
const opt = (name: string, def: number): number => (argv.includes(`--${name}`) ? Number(argv[argv.indexOf(`--${name}`) + 1]) : def);
const [beforeFile, afterFile] = argv.filter((a, i) => !a.startsWith('--') && !(i > 0 && argv[i - 1]!.startsWith('--')));
if (beforeFile === undefined || afterFile === undefined) {
  console.error('usage: heap-diff BEFORE.heapsnapshot AFTER.heapsnapshot [--per N] [--top 25]');
  process.exit(2);
}
const per = opt('per', 1);
const top = opt('top', 25);
const a = summarise(beforeFile);
const b = summarise(afterFile);
const rows = [...new Set([...a.by.keys(), ...b.by.keys()])].map((k) => {
  const x = a.by.get(k) ?? [0, 0];
  const y = b.by.get(k) ?? [0, 0];
  return { k, count: y[0] - x[0], bytes: y[1] - x[1] };
});
rows.sort((p, q) => Math.abs(q.bytes) - Math.abs(p.bytes));
console.log(JSON.stringify({
  heapMB: { before: Number((a.total / 1e6).toFixed(1)), after: Number((b.total / 1e6).toFixed(1)) },
  bytesPer: Math.round((b.total - a.total) / per),
  per,
}));
for (const r of rows.slice(0, top)) {
  console.log(`${String(r.count).padStart(9)} ${String(r.bytes).padStart(12)} ${(r.bytes / per).toFixed(1).padStart(8)}/per  ${r.k}`);
}
