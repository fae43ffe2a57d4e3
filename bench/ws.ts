// WebSocket (RFC 7118) throughput side by side: sip-edge's ws listener and Kamailio's websocket
// module (xhttp + websocket, bench/reference/kamailio-ws.cfg), driven the same way in one run by
// one load generator (the `ws` client in this process):
//   - messages/s: `--conns` upgraded connections, each keeping `--window` OPTIONS in flight
//     (closed loop), answered 200 by the proxy itself (sip-edge's ping stage, Kamailio's
//     sl_send_reply): the WebSocket transport, parse and the answer path, no upstream;
//   - upgrades/s: `--upgrade-conc` loops of connect + HTTP upgrade (sip subprotocol) + close.
// CPU = utime+stime of the proxy's process tree from /proc over the measured phase, divided by
// the messages answered / upgrades completed. The generator shares the machine: absolute rates
// are floors, compare targets within one run (ratios), CPU per message is the portable number.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { startEdge, treeCpuSeconds, waitExit } from '../test/helpers/edge-proc';
import { freePort } from '../test/helpers/ports';

const ROOT = path.resolve(__dirname, '..', '..');

interface Args {
  duration: number;
  conns: number;
  window: number;
  upgradeConc: number;
  targets: string[];
  out: string;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { duration: 10, conns: 16, window: 4, upgradeConc: 8, targets: ['edge', 'kamailio', 'kamailio2'], out: path.join(ROOT, 'bench', 'results', 'ws.md') };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--duration': a.duration = Number(v); i++; break;
      case '--conns': a.conns = Number(v); i++; break;
      case '--window': a.window = Number(v); i++; break;
      case '--upgrade-conc': a.upgradeConc = Number(v); i++; break;
      case '--target': a.targets = (v ?? '').split(','); i++; break;
      case '--out': a.out = path.resolve(v ?? ''); i++; break;
      default: throw new Error(`unknown option ${argv[i]}`);
    }
  }
  if (!(a.duration > 0 && a.duration <= 300 && a.conns >= 1 && a.conns <= 1000 && a.window >= 1 && a.window <= 100 && a.upgradeConc >= 1 && a.upgradeConc <= 100)) throw new Error('options out of range');
  return a;
}



interface Proxy { readonly url: string; readonly ruri: string; readonly pid: number; stop(): Promise<void> }


async function startKamailioWs(dir: string, workers: number): Promise<Proxy> {
  const port = await freePort('tcp');
  const cfg = fs.readFileSync(path.join(ROOT, 'bench', 'reference', 'kamailio-ws.cfg'), 'utf8')
    .replace(/^listen=.*$/m, `listen=tcp:127.0.0.1:${port}`)
    .replace(/^tcp_children=\d+$/m, `tcp_children=${workers}`);
  const file = path.join(dir, `kamailio-ws-${workers}.cfg`);
  fs.writeFileSync(file, cfg);
  const run = path.join(dir, `run-${workers}`);
  fs.mkdirSync(run, { recursive: true });
  const child = spawn('kamailio', ['-DD', '-E', '-f', file, '-Y', run, '-m', '512', '-M', '32'], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  let log = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => { if (log.length < 65536) log += s; });
  const url = `ws://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`kamailio exited: ${log.slice(-2000)}`);
    const ok = await new Promise<boolean>((resolve) => {
      const ws = new WebSocket(url, ['sip']);
      ws.on('open', () => { ws.terminate(); resolve(true); });
      ws.on('error', () => resolve(false));
    });
    if (ok) break;
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error(`kamailio not ready: ${log.slice(-2000)}`); }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url, ruri: `sip:127.0.0.1:${port}`, pid: child.pid ?? -1,
    stop: async () => { try { process.kill(-(child.pid ?? 0), 'SIGTERM'); } catch { /* gone */ } await waitExit(child, 5_000); },
  };
}

async function startEdgeWs(dir: string): Promise<Proxy> {
  const cfg = path.join(dir, 'edge.yaml');
  // the generator is one address: trusted (no per-source rate limits, never banned), room for
  // its connections; sanity and the ping stage run as always
  fs.writeFileSync(cfg, 'warmUpCalls: 0\nhealth:\n  intervalMs: 0\ntcp:\n  maxConnectionsPerSource: 10000\n');
  const edge = await startEdge({ listen: ['ws:127.0.0.1:0'], upstream: ['udp:127.0.0.2:9'], extraArgs: ['--config', cfg, '--trusted', '127.0.0.1/32'] });
  const port = edge.ports.ws!;
  return { url: `ws://127.0.0.1:${port}`, ruri: `sip:127.0.0.1:${port}`, pid: edge.pid, stop: async () => { await edge.stop(); } };
}

let seq = 0;
function options(ruri: string): string {
  const n = ++seq;
  return [
    `OPTIONS ${ruri} SIP/2.0`,
    `Via: SIP/2.0/WS bench${n % 1000}.invalid;branch=z9hG4bK-b${n}`,
    'Max-Forwards: 70',
    `From: <sip:bench@example.com>;tag=b${n}`,
    '<sip:bench@example.com>'.replace(/^/, 'To: '),
    `Call-ID: bench-${n}@example.invalid`,
    `CSeq: ${n} OPTIONS`,
    'Content-Length: 0', '', ''].join('\r\n');
}

async function measureMessages(p: Proxy, a: Args, seconds: number): Promise<{ perSec: number; cpuUsPerMsg: number; errors: number }> {
  const socks: WebSocket[] = await Promise.all(Array.from({ length: a.conns }, () => new Promise<WebSocket>((resolve, reject) => {
    const ws = new WebSocket(p.url, ['sip']);
    ws.on('open', () => resolve(ws));
    ws.on('error', reject);
  })));
  let answered = 0;
  let errors = 0;
  let running = true;
  let counting = false;
  for (const ws of socks) {
    ws.on('message', (d: Buffer) => {
      if (d[8] === 0x32) { if (counting) answered++; } else errors++;
      if (running) ws.send(options(p.ruri));
    });
    for (let i = 0; i < a.window; i++) ws.send(options(p.ruri));
  }
  await new Promise((r) => setTimeout(r, 1000)); // warm-up
  counting = true;
  const c0 = treeCpuSeconds(p.pid);
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const c1 = treeCpuSeconds(p.pid);
  const t1 = performance.now();
  const n = answered;
  counting = false;
  running = false;
  for (const ws of socks) ws.terminate();
  await new Promise((r) => setTimeout(r, 500));
  return { perSec: n / ((t1 - t0) / 1000), cpuUsPerMsg: n > 0 ? ((c1 - c0) * 1e6) / n : NaN, errors };
}

async function measureUpgrades(p: Proxy, a: Args, seconds: number): Promise<{ perSec: number; cpuUsPerUpgrade: number; failed: number }> {
  let done = 0;
  let failed = 0;
  const end = performance.now() + seconds * 1000;
  const c0 = treeCpuSeconds(p.pid);
  const t0 = performance.now();
  const loop = async (): Promise<void> => {
    while (performance.now() < end) {
      const ok = await new Promise<boolean>((resolve) => {
        const ws = new WebSocket(p.url, ['sip']);
        ws.on('open', () => { ws.close(1000); });
        ws.on('close', () => resolve(ws.protocol === 'sip'));
        ws.on('error', () => resolve(false));
      });
      if (ok) done++; else failed++;
    }
  };
  await Promise.all(Array.from({ length: a.upgradeConc }, loop));
  const t1 = performance.now();
  await new Promise((r) => setTimeout(r, 300)); // the proxy's share of the last closes
  const c1 = treeCpuSeconds(p.pid);
  return { perSec: done / ((t1 - t0) / 1000), cpuUsPerUpgrade: done > 0 ? ((c1 - c0) * 1e6) / done : NaN, failed };
}

function machineInfo(): string[] {
  const cpuinfo = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  const kam = spawnSync('kamailio', ['-v'], { encoding: 'utf8' });
  const kamV = kam.error === undefined ? (kam.stdout.match(/kamailio [\d.]+/)?.[0] ?? 'unknown') : 'not installed';
  return [`- date: ${new Date().toISOString()}`, `- nproc: ${os.cpus().length}; CPU: ${model}`, `- kernel: ${os.type()} ${os.release()}; node ${process.version}; ${kamV}`];
}

const fmt = (n: number, d = 0): string => (Number.isFinite(n) ? n.toFixed(d) : '-');

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-bench-ws-'));
  const rows: Array<{ target: string; m: Awaited<ReturnType<typeof measureMessages>>; u: Awaited<ReturnType<typeof measureUpgrades>> }> = [];
  try {
    for (const t of a.targets) {
      const p = t === 'edge' ? await startEdgeWs(dir) : t === 'kamailio' ? await startKamailioWs(dir, 1) : t === 'kamailio2' ? await startKamailioWs(dir, 2) : null;
      if (p === null) throw new Error(`unknown target ${t}`);
      try {
        const m = await measureMessages(p, a, a.duration);
        const u = await measureUpgrades(p, a, a.duration);
        rows.push({ target: t, m, u });
        console.log(`${t}: ${fmt(m.perSec)} msg/s, ${fmt(m.cpuUsPerMsg, 1)} us CPU/msg (${m.errors} non-200); ${fmt(u.perSec)} upgrades/s, ${fmt(u.cpuUsPerUpgrade, 1)} us CPU/upgrade (${u.failed} failed)`);
      } finally {
        await p.stop();
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const edge = rows.find((r) => r.target === 'edge');
  const lines = [
    '# WebSocket bench (bench/ws.ts)', '',
    ...machineInfo(),
    `- command: node dist/bench/ws.js ${process.argv.slice(2).join(' ')}`,
    `- ${a.conns} connections x ${a.window} OPTIONS in flight; ${a.upgradeConc} upgrade loops; ${a.duration} s per phase`, '',
    '| target | messages/s | CPU us/message | upgrades/s | CPU us/upgrade | CPU/message vs edge | CPU/upgrade vs edge |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.target} | ${fmt(r.m.perSec)} | ${fmt(r.m.cpuUsPerMsg, 1)} | ${fmt(r.u.perSec)} | ${fmt(r.u.cpuUsPerUpgrade, 1)} | ${edge ? fmt(r.m.cpuUsPerMsg / edge.m.cpuUsPerMsg, 2) : '-'} | ${edge ? fmt(r.u.cpuUsPerUpgrade / edge.u.cpuUsPerUpgrade, 2) : '-'} |`),
    '',
    'Ratios: the target\'s CPU per unit divided by sip-edge\'s (above 1: sip-edge spends less).', '',
  ];
  fs.mkdirSync(path.dirname(a.out), { recursive: true });
  fs.writeFileSync(a.out, lines.join('\n'));
  fs.writeFileSync(a.out.replace(/\.md$/, '.json'), JSON.stringify(rows, null, 2));
  console.log(lines.join('\n'));
}

main().catch((e) => { console.error(e); process.exitCode = 1; });
