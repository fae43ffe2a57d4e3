// Memory benchmark (issue: attack resilience): what state an attacker can make the edge hold.
//
//   node dist/bench/memory.js tx      [--count 100000] [--bytes 1000] [--pps 8000] [--pbx silent|trying] [--budget MB] [--heap-dir DIR] [--settle 15]
//   node dist/bench/memory.js sources [--count 120000] [--pps 8000] [--idle 60] [--probe-ms 500]
//                                     [--heap-snapshot] [--auth edge|pbx]
//
// tx: live INVITE transactions. A trusted source sends --count INVITEs of about --bytes bytes to
// an upstream that never answers, so every one stays live (Timer B is 64*T1 = 32 s; the sending
// must end before the first ones expire, so --count / --pps must stay well under 32 s). Reports
// the edge's RSS growth per live transaction 2 s after the send, and again after --settle more
// seconds without traffic (0: not; the transactions are still live then, --pbx trying keeps them
// for Timer C's 3 min). --pbx trying: the upstream answers each INVITE with
// 100 Trying and nothing more: the transaction is just as live (the caller still waits for a
// final, Timer C bounds it at 3 min) but no longer retransmitted, and Timer B no longer bounds the
// send, so a 2-core box that cannot take 100,000 INVITEs in 32 s still reaches 100,000 live ones. --budget sets transactions.memoryBudgetMB (left out
// by default, so the same script measures builds that predate it: SIP_EDGE_CLI=<other>/dist/edge/cli.js).
// --heap-dir writes a V8 heap snapshot of the edge before and after the send (SIGUSR2, node's
// --heapsnapshot-signal): `node dist/bench/heap-top.js DIR/before.heapsnapshot DIR/after.heapsnapshot N`
// says which objects the live transactions are made of.
// sources: --count distinct spoofed loopback sources (127.20.0.0 to 127.35.255.255: 1,048,576 distinct), one request each (REGISTER,
// INVITE, OPTIONS in turn, all to the served domain) answered 404 by a stand-in PBX. Reports the
// RSS growth per source at the end of the flood and after --idle seconds without traffic: state
// per unknown source must be small while it lasts, and go away. Meanwhile a trusted source
// (127.0.0.1) sends an OPTIONS ping to the edge every --probe-ms ms (0: none), the liveness probe
// of a carrier or a monitoring system; the report says how many were answered, and how many
// datagrams the edge dropped at the I/O thread's hand-over ring (datagram_queue_full).
// --heap-snapshot: the edge writes a V8 heap snapshot into its working directory (the bench's
// temporary directory, through --diagnostic-dir; kept and named in the report) before and after
// the flood and after the idle time (bench/heap-diff.ts compares them),
// through --heapsnapshot-signal (writing one stalls the edge for seconds: not with a probe run).
// SIP_EDGE_CLI=/other/tree/dist/edge/cli.js measures another build with the same load.
// --auth edge: the edge challenges every unauthenticated request itself (a users file with one
// user), statelessly, so nothing reaches the PBX and no transaction is created: what remains per
// source is the edge's own bookkeeping (budgets, suspicion, enumeration, challenge learning).
// --auth pbx (default, as in sip-edge.yaml: no users file): requests go on to the stand-in PBX.
//
// Every loop here is bounded by --count; the edge and the stand-in PBX are stopped at the end.
import dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startEdge } from '../test/helpers/edge-proc';
import { upsertUsers } from '../test/helpers/auth-edge';
import { sample } from '../test/helpers/prom';

const argv = process.argv.slice(2);
const MODE = argv[0] === 'sources' ? 'sources' : 'tx';
const arg = (name: string, def: number): number => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : def;
};
const COUNT = arg('count', MODE === 'tx' ? 100_000 : 120_000);
const BYTES = arg('bytes', 1000);
const PPS = arg('pps', 8000);
const IDLE = arg('idle', 60);
const PBX_MODE = ((): 'silent' | 'trying' => { const i = argv.indexOf('--pbx'); return i >= 0 && argv[i + 1] === 'trying' ? 'trying' : 'silent'; })();
const BUDGET = arg('budget', 0);
const SETTLE = arg('settle', 15);
const HEAP_DIR = ((): string | undefined => { const i = argv.indexOf('--heap-dir'); return i >= 0 ? argv[i + 1] : undefined; })();

/** ask the edge for a heap snapshot (SIGUSR2) and wait for the file to be complete */
async function snapshot(pid: number, dir: string, name: string): Promise<void> {
  const before = new Set(fs.readdirSync(dir));
  process.kill(pid, 'SIGUSR2');
  for (let i = 0; i < 1200; i++) {
    await sleep(500);
    const f = fs.readdirSync(dir).find((x) => !before.has(x) && x.endsWith('.heapsnapshot'));
    if (!f) continue;
    // written by the edge's main thread: complete once its size stops changing
    const s1 = fs.statSync(path.join(dir, f)).size;
    await sleep(1500);
    if (fs.statSync(path.join(dir, f)).size !== s1 || s1 === 0) continue;
    fs.renameSync(path.join(dir, f), path.join(dir, name));
    return;
  }
  throw new Error('no heap snapshot within 10 minutes');
}
const PROBE_MS = arg('probe-ms', 500);
const HEAP = argv.includes('--heap-snapshot');
const AUTH = argv.includes('--auth') ? argv[argv.indexOf('--auth') + 1] : 'pbx';

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function invite(i: number, port: number, from: { address: string; port: number }, bytes: number, method = 'INVITE'): Buffer {
  const head = [
    `${method} sip:${1000 + (i % 9000)}@bench.example SIP/2.0`,
    `Via: SIP/2.0/UDP ${from.address}:${from.port};branch=z9hG4bK-m${i}-${Date.now()};rport`,
    'Max-Forwards: 70',
    `From: "Bench ${i}" <sip:${2000 + (i % 7000)}@bench.example>;tag=f${i}`,
    `To: <sip:${1000 + (i % 9000)}@bench.example>`,
    `Call-ID: mem-${i}-${process.pid}@bench`,
    `CSeq: 1 ${method}`,
    `Contact: <sip:${2000 + (i % 7000)}@${from.address}:${from.port}>`,
    'User-Agent: bench-phone/1.0',
  ];
  const base = head.join('\r\n').length + 40;
  const body = method === 'INVITE' && bytes > base ? 'v=0\r\n' + 'a=x-pad:'.padEnd(bytes - base - 7, 'p') + '\r\n' : '';
  return Buffer.from([...head, ...(body ? ['Content-Type: application/sdp'] : []), `Content-Length: ${Buffer.byteLength(body)}`, '', body].join('\r\n'), 'latin1');
}

/** a stand-in PBX: answers 404 to every request (sources mode), swallows everything (tx mode) or
 *  answers 100 Trying to INVITEs and nothing more (tx --pbx trying) */
async function pbx(answer: false | 404 | 100): Promise<{ port: number; close(): void; received: () => number }> {
  const s = dgram.createSocket('udp4');
  let n = 0;
  s.on('message', (b, r) => {
    n++;
    if (!answer) return;
    const t = b.toString('latin1');
    if (t.startsWith('SIP/2.0') || t.startsWith('ACK ')) return;
    const head = t.split('\r\n\r\n')[0]!.split('\r\n');
    if (answer === 100 && !t.startsWith('INVITE ')) return;
    const keep = head.filter((l) => /^(via|from|to|call-id|cseq)\s*:/i.test(l)).map((l) => (answer === 404 && /^to\s*:/i.test(l) && !/;tag=/.test(l) ? `${l};tag=pbx` : l));
    const status = answer === 404 ? 'SIP/2.0 404 Not Found' : 'SIP/2.0 100 Trying';
    s.send(Buffer.from([status, ...keep, 'Content-Length: 0', '', ''].join('\r\n'), 'latin1'), r.port, r.address);
  });
  try { s.setRecvBufferSize(8 * 1024 * 1024); } catch { /* capped */ }
  await new Promise<void>((res) => s.bind(0, '127.0.0.2', () => res()));
  try { s.setRecvBufferSize(8 * 1024 * 1024); } catch { /* capped */ }
  return { port: s.address().port, close: () => s.close(), received: () => n };
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-mem-'));
  const up = await pbx(MODE === 'sources' ? 404 : PBX_MODE === 'trying' ? 100 : false);
  if (AUTH === 'edge') upsertUsers(path.join(dir, 'users.txt'), 'bench.example', { '1000': 'bench secret pw 1000' }, ['SHA-256', 'MD5']);
  fs.writeFileSync(path.join(dir, 'edge.yaml'), [
    'health:', '  intervalMs: 0',
    ...(AUTH === 'edge' ? ['auth:', '  mode: edge', `  users: ${path.join(dir, 'users.txt')}`] : []),
    // tx mode pins --count live transactions, so its cap is raised (older builds had no budget;
    // newer ones need --budget for it); sources mode runs on the shipped defaults
    ...(MODE === 'tx' ? ['transactions:', `  max: ${Math.max(100_000, COUNT + 1000)}`, ...(BUDGET > 0 ? [`  memoryBudgetMB: ${BUDGET}`] : [])] : []),
  ].join('\n') + '\n');
  if (HEAP_DIR) fs.mkdirSync(HEAP_DIR, { recursive: true });
  const edge = await startEdge({
    listen: ['udp:127.0.0.1:0'], upstream: [`udp:127.0.0.2:${up.port}`], domain: ['bench.example'],
    extraArgs: ['--config', path.join(dir, 'edge.yaml'), '--trusted', '127.0.0.1/32'],
    ...(HEAP_DIR || HEAP ? { env: { ...process.env, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${HEAP_DIR ? path.resolve(HEAP_DIR) : dir}`.trim() } } : {}),
  });
  const port = edge.ports.udp!;
  const metrics = async (): Promise<string> => (await fetch(`http://127.0.0.1:${edge.metricsPort}/metrics`)).text();
  const snap = async (): Promise<void> => {
    if (!HEAP) return;
    const before = fs.readdirSync(dir).filter((f) => f.endsWith('.heapsnapshot')).length;
    process.kill(edge.pid, 'SIGUSR2');
    // bounded: a snapshot of a few hundred MB takes seconds to write
    for (let i = 0; i < 600 && fs.readdirSync(dir).filter((f) => f.endsWith('.heapsnapshot')).length === before; i++) await sleep(500);
    await sleep(3000);
  };
  await snap();
  await sleep(2000);
  if (HEAP_DIR) await snapshot(edge.pid, HEAP_DIR, 'before.heapsnapshot');
  const rss0 = rssMiB(edge.pid);
  const m0 = await metrics();
  let peak = rss0;
  const t0 = Date.now();
  let sent = 0;
  try {
    if (MODE === 'tx') {
      const s = dgram.createSocket('udp4');
      s.on('message', () => { /* 100 Trying: read and dropped */ });
      await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
      const me = { address: '127.0.0.1', port: s.address().port };
      while (sent < COUNT) {
        const due = Math.min(COUNT, Math.floor(((Date.now() - t0) / 1000) * PPS));
        for (; sent < due; sent++) s.send(invite(sent, port, me, BYTES), port, '127.0.0.1');
        if (sent % 5000 < 200) peak = Math.max(peak, rssMiB(edge.pid));
        await sleep(5);
      }
      await sleep(2000);
      const m = await metrics();
      const rss1 = rssMiB(edge.pid);
      const heap = (mm: string): Record<string, number> => ({
        used: Math.round((sample(mm, 'sipedge_nodejs_heap_size_used_bytes') ?? NaN) / 1048576),
        total: Math.round((sample(mm, 'sipedge_nodejs_heap_size_total_bytes') ?? NaN) / 1048576),
        external: Math.round((sample(mm, 'sipedge_nodejs_external_memory_bytes') ?? NaN) / 1048576),
      });
      const live = sample(m, 'sipedge_transactions_active') ?? NaN;
      // and once the edge has been quiet for --settle s (its idle collector ticks every 5 s): the
      // same live transactions without the garbage of receiving them
      await sleep(SETTLE * 1000);
      const rss2 = rssMiB(edge.pid);
      const m2 = await metrics();
      const live2 = sample(m2, 'sipedge_transactions_active') ?? NaN;
      // after the RSS reading: the snapshot itself costs memory
      if (HEAP_DIR) await snapshot(edge.pid, HEAP_DIR, 'after.heapsnapshot');
      s.close();
      console.log(JSON.stringify({
        mode: MODE, invites: COUNT, inviteBytes: invite(0, port, me, BYTES).length, sendSeconds: Number(((Date.now() - t0) / 1000 - 2).toFixed(1)),
        pbx: PBX_MODE, liveTransactions: live, heapMiB: { start: heap(m0), end: heap(m) }, rssMiB: { start: Math.round(rss0), end: Math.round(rss1), peak: Math.round(Math.max(peak, rss1)) },
        bytesPerLiveTransaction: Math.round(((rss1 - rss0) * 1024 * 1024) / (live || COUNT)),
        ...(SETTLE > 0 ? { settled: { afterSeconds: SETTLE, liveTransactions: live2, rssMiB: Math.round(rss2), heapMiB: heap(m2), bytesPerLiveTransaction: Math.round(((rss2 - rss0) * 1024 * 1024) / (live2 || COUNT)) } } : {}),
        pbxReceived: up.received(),
      }, null, 2));
    } else {
      // the trusted liveness probe: an OPTIONS ping to the edge itself (edge/stages/ping.ts)
      const probe = dgram.createSocket('udp4');
      const answered = new Set<string>();
      probe.on('message', (b) => {
        const m = /^Call-ID:\s*(\S+)/im.exec(b.toString('latin1'));
        if (m) answered.add(m[1]!);
      });
      await new Promise<void>((r) => probe.bind(0, '127.0.0.1', () => r()));
      const pme = { address: '127.0.0.1', port: probe.address().port };
      let probes = 0;
      const ping = (): void => {
        const n = probes++;
        probe.send(Buffer.from([
          'OPTIONS sip:bench.example SIP/2.0',
          `Via: SIP/2.0/UDP ${pme.address}:${pme.port};branch=z9hG4bK-probe${n}-${process.pid};rport`,
          'Max-Forwards: 70', `From: <sip:monitor@bench.example>;tag=p${n}`, 'To: <sip:bench.example>',
          `Call-ID: probe-${n}-${process.pid}@bench`, 'CSeq: 1 OPTIONS', 'Content-Length: 0', '', '',
        ].join('\r\n'), 'latin1'), port, '127.0.0.1');
      };
      const probeTimer = PROBE_MS > 0 ? setInterval(ping, PROBE_MS) : null;
      const queueFull = (m: string): number => sample(m, 'sipedge_transport_events_total', { transport: 'udp', event: 'datagram_queue_full' }) ?? 0;
      const m0 = await metrics();
      const drops0 = queueFull(m0);
      // where the RSS is: the V8 heap (committed and used) and memory outside it (Buffers)
      const mem = (m: string): Record<string, number> => Object.fromEntries(
        [['heapTotal', 'sipedge_nodejs_heap_size_total_bytes'], ['heapUsed', 'sipedge_nodejs_heap_size_used_bytes'], ['external', 'sipedge_nodejs_external_memory_bytes']]
          .map(([k, n]) => [k, Math.round((sample(m, n!) ?? NaN) / 1048576)]));
      // one socket per source, opened and closed in batches (a spoofing attacker needs no
      // sockets; loopback needs a bind per source address)
      const BATCH = 1000;
      for (let b = 0; b < COUNT; b += BATCH) {
        const socks: dgram.Socket[] = [];
        for (let i = b; i < Math.min(COUNT, b + BATCH); i++) {
          const s = dgram.createSocket('udp4');
          s.on('error', () => { /* ignored */ });
          s.on('message', () => { /* answers dropped */ });
          const a = `127.${20 + ((i >> 16) & 15)}.${(i >> 8) & 255}.${i & 255}`;
          await new Promise<void>((r) => s.bind(0, a, () => r()));
          socks.push(s);
        }
        for (const s of socks) {
          const me = s.address();
          s.send(invite(sent, port, { address: me.address, port: me.port }, 0, ['REGISTER', 'INVITE', 'OPTIONS'][sent % 3]), port, '127.0.0.1');
          sent++;
        }
        const due = (sent / PPS) * 1000 - (Date.now() - t0);
        if (due > 0) await sleep(due);
        await sleep(1);
        for (const s of socks) s.close();
        if ((b / BATCH) % 10 === 0) peak = Math.max(peak, rssMiB(edge.pid));
      }
      const floodSeconds = (Date.now() - t0) / 1000;
      if (probeTimer !== null) clearInterval(probeTimer);
      const probesSent = probes;
      await sleep(1000);
      const probesAnswered = answered.size;
      probe.close();
      const rss1 = rssMiB(edge.pid);
      peak = Math.max(peak, rss1);
      const m1 = await metrics();
      await snap();
      await sleep(IDLE * 1000);
      const rss2 = rssMiB(edge.pid);
      const m2 = await metrics();
      await snap();
      console.log(JSON.stringify({
        mode: MODE, auth: AUTH, sources: COUNT, floodSeconds: Number(floodSeconds.toFixed(1)), pps: Math.round(COUNT / floodSeconds),
        rssMiB: { start: Math.round(rss0), afterFlood: Math.round(rss1), peak: Math.round(peak), [`after${IDLE}sIdle`]: Math.round(rss2) },
        bytesPerSourceAfterFlood: Math.round(((rss1 - rss0) * 1024 * 1024) / COUNT),
        idleOverBaselinePct: Number((((rss2 - rss0) / rss0) * 100).toFixed(1)),
        liveTransactions: { afterFlood: sample(m1, 'sipedge_transactions_active'), afterIdle: sample(m2, 'sipedge_transactions_active') },
        pbxReceived: up.received(),
        probe: PROBE_MS > 0 ? { everyMs: PROBE_MS, sent: probesSent, answered: probesAnswered, answeredPct: Number(((probesAnswered / Math.max(1, probesSent)) * 100).toFixed(1)) } : null,
        droppedAtRing: queueFull(m1) - drops0,
        memMiB: { start: mem(m0), afterFlood: mem(m1), afterIdle: mem(m2) },
        // the idle collector's runs (edge/idle-gc.ts logs each)
        idleGc: edge.logs().filter((l) => l.includes('"idle_gc"')).map((l) => { const j = JSON.parse(l) as Record<string, number>; return `${j.heapBeforeMiB} -> ${j.heapAfterMiB} MiB in ${j.ms} ms`; }),
        ...(HEAP ? { heapSnapshots: dir } : {}),
      }, null, 2));
      if (process.env.BENCH_METRICS) fs.writeFileSync(process.env.BENCH_METRICS, m2);
    }
  } finally {
    await edge.stop();
    up.close();
    if (!HEAP) fs.rmSync(dir, { recursive: true, force: true });
  }
}

void main();
