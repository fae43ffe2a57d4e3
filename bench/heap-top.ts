// What the edge's heap is made of: a summary of V8 heap snapshots by kind of object.
//
//   node dist/bench/heap-top.js AFTER.heapsnapshot [--base BEFORE.heapsnapshot] [--per N] [--top 25]
//
// Groups every node of the snapshot by type and constructor name (plain objects by the names of
// their first properties, so a transaction literal `{key, method, ...}` is told apart from a parsed
// header `{rawName, name, ...}`) and sums their self sizes, native backing stores (Buffer bytes)
// included. With --base, the growth from BEFORE to AFTER; with --per N, divided by N (e.g. the
// number of live transactions `memory.js tx --heap-dir` pinned between the two snapshots).
// Self sizes, not retained sizes: summed over everything that grew they add up to the growth,
// which is the question here (what does one more live transaction cost, and in what).
import * as fs from 'node:fs';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] } };
  nodes: number[];
  edges: number[];
  strings: string[];
}

interface Group { count: number; bytes: number }

function summarise(file: string): Map<string, Group> {
  const snap = JSON.parse(fs.readFileSync(file, 'utf8')) as Snapshot;
  const m = snap.snapshot.meta;
  const nf = m.node_fields.length;
  const ef = m.edge_fields.length;
  const iType = m.node_fields.indexOf('type');
  const iName = m.node_fields.indexOf('name');
  const iSize = m.node_fields.indexOf('self_size');
  const iEdges = m.node_fields.indexOf('edge_count');
  const eType = m.edge_fields.indexOf('type');
  const eName = m.edge_fields.indexOf('name_or_index');
  const types = m.node_types[0];
  const etypes = m.edge_types[0];
  const property = etypes.indexOf('property');
  const out = new Map<string, Group>();
  let e = 0;
  for (let n = 0; n < snap.nodes.length; n += nf) {
    const type = types[snap.nodes[n + iType]!]!;
    let name = snap.strings[snap.nodes[n + iName]!]!;
    const edges = snap.nodes[n + iEdges]!;
    if (type === 'object' && name === 'Object') {
      const props: string[] = [];
      for (let k = 0; k < edges && props.length < 4; k++) {
        const at = e + k * ef;
        if (snap.edges[at + eType] === property) props.push(snap.strings[snap.edges[at + eName]!]!);
      }
      name = `{${props.join(',')}}`;
    } else if (type === 'string' || type === 'concatenated string' || type === 'sliced string') {
      name = '';
    } else if (type === 'code' || type === 'hidden' || type === 'array') {
      name = name.length > 40 ? name.slice(0, 40) : name;
    }
    const key = `${type} ${name}`;
    const g = out.get(key) ?? { count: 0, bytes: 0 };
    g.count++;
    g.bytes += snap.nodes[n + iSize]!;
    out.set(key, g);
    e += edges * ef;
  }
  return out;
}

function main(): void {
  const argv = process.argv.slice(2);
  const opt = (name: string): string | undefined => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1] : undefined; };
  const file = argv[0];
  if (!file || file.startsWith('--')) {
    console.error('usage: heap-top AFTER.heapsnapshot [--base BEFORE.heapsnapshot] [--per N] [--top 25]');
    process.exitCode = 2;
    return;
  }
  const per = Number(opt('per') ?? 1);
  const top = Number(opt('top') ?? 25);
  const after = summarise(file);
  const baseFile = opt('base');
  const base = baseFile ? summarise(baseFile) : new Map<string, Group>();
  const rows = [...after].map(([k, g]) => {
    const b = base.get(k) ?? { count: 0, bytes: 0 };
    return { kind: k, count: (g.count - b.count) / per, bytes: (g.bytes - b.bytes) / per };
  }).sort((a, b) => b.bytes - a.bytes);
  const total = rows.reduce((s, r) => s + r.bytes, 0);
  console.log(`${baseFile ? 'growth' : 'heap'}${per !== 1 ? ` per 1/${per}` : ''}: ${Math.round(total)} bytes self size in all`);
  console.log('bytes'.padStart(10), 'count'.padStart(9), ' kind');
  for (const r of rows.slice(0, top)) console.log(r.bytes.toFixed(0).padStart(10), r.count.toFixed(2).padStart(9), ' ' + r.kind);
}

main();
