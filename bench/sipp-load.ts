// sipp load benchmark: calls/s, failures, retransmissions, response time and proxy CPU per call.
//
//   node dist/bench/sipp-load.js [--steps 500,1000,2000] [--duration 10] [--target direct,kamailio,edge]
//                                [--transport u1|t1] [--domain D] [--out bench/results/latest.md]
//
// For every target and step rate, test/sipp/uac-rr.xml places rate*duration calls at `rate` calls/s
// against test/sipp/uas.xml, either directly (the reference: no proxy) or through a proxy (the edge,
// spawned by test/helpers/edge-proc.ts, or Kamailio with bench/reference/kamailio.cfg). Each step is
// bounded by sipp's -timeout (duration + 10 s) and per-call -recv_timeout. Proxy CPU is utime+stime
// of the proxy's whole process tree from /proc, before and after the step, divided by successful calls.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { findRepoRoot, runSipp, sippAvailable, startSipp, type SippHandle, type SippTransport } from '../test/helpers/sipp';
import { edgeCliAvailable, procCpuSeconds, startEdge, type EdgeProc } from '../test/helpers/edge-proc';

type Target = 'direct' | 'edge' | 'edge-1thread' | 'kamailio' | 'kamailio2';
const TARGETS: readonly Target[] = ['direct', 'edge', 'edge-1thread', 'kamailio', 'kamailio2'];

interface Args {
  steps: number[];
  durationS: number;
  targets: Target[];
  transport: SippTransport;
  domains: string[];
  out: string;
}

interface StepResult {
  target: Target;
  rate: number;
  attempted: number;
  successful: number;
  failed: number;
  retransmissions: number;
  achievedCps: number;
  p50?: number;
  p99?: number;
  avgMs?: number;
  cpuMsPerCall?: number;
  note: string;
}

interface Proxy {
  /** address sipp sends to */
  readonly remote: string;
  /** root pid whose process tree is charged for CPU */
  readonly pid: number;
  stop(): Promise<void>;
}

const ROOT = findRepoRoot();
/** the PBX side lives on its own loopback address, the phones on 127.0.0.1 */
const UAS_IP = '127.0.0.2';

function parseArgs(argv: string[]): Args {
  const a: Args = {
    steps: [500, 1000, 2000, 3000, 4000],
    durationS: 10,
    targets: ['direct'],
    transport: 'u1',
    domains: [],
    out: path.join(ROOT, 'bench', 'results', 'latest.md'),
  };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--steps': a.steps = (v ?? '').split(',').map(Number).filter((n) => Number.isFinite(n) && n > 0); i++; break;
      case '--duration': a.durationS = Math.max(1, Number(v)); i++; break;
      case '--target': a.targets = (v ?? '').split(',').filter((t): t is Target => (TARGETS as readonly string[]).includes(t)); i++; break;
      case '--transport': if (v === 'u1' || v === 't1') a.transport = v; i++; break;
      case '--domain': if (v !== undefined) a.domains.push(v); i++; break;
      case '--out': if (v !== undefined) a.out = path.resolve(v); i++; break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (a.steps.length === 0 || a.targets.length === 0) throw new Error('need at least one step and one target');
  return a;
}

/** utime+stime (s) of `pid` and all its descendants (Kamailio forks its workers). */
function treeCpuSeconds(pid: number): number | undefined {
  const parentOf = new Map<number, number>();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const s = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]);
      parentOf.set(Number(d), ppid);
    } catch {
      // process went away while listing
    }
  }
  const tree = new Set<number>([pid]);
  for (let grew = true; grew;) {
    grew = false;
    for (const [p, pp] of parentOf) if (!tree.has(p) && tree.has(pp)) { tree.add(p); grew = true; }
  }
  let total = 0;
  let any = false;
  for (const p of tree) {
    const c = procCpuSeconds(p);
    if (c !== undefined) { total += c; any = true; }
  }
  return any ? total : undefined;
}

function waitExit(child: ChildProcess, ms: number): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const t = setTimeout(() => { child.kill('SIGKILL'); resolve(); }, ms);
    child.once('exit', () => { clearTimeout(t); resolve(); });
  });
}

async function startKamailio(listenPort: number, uasPort: number, dir: string, children: number): Promise<Proxy> {
  const template = fs.readFileSync(path.join(ROOT, 'bench', 'reference', 'kamailio.cfg'), 'utf8');
  const cfg = template
    .replace(/^#!substdef "!EDGE_LISTEN!.*$/m, `#!substdef "!EDGE_LISTEN!udp:127.0.0.1:${listenPort}!g"`)
    .replace(/^#!substdef "!PBX_URI!.*$/m, `#!substdef "!PBX_URI!sip:${UAS_IP}:${uasPort}!g"`)
    .replace(/^children=1$/m, `children=${children}`);
  const cfgFile = path.join(dir, 'kamailio.cfg');
  fs.writeFileSync(cfgFile, cfg);
  const runDir = path.join(dir, 'run');
  fs.mkdirSync(runDir, { recursive: true });
  // 2 GiB of shared memory: with 256 MiB tm ran out of it near 2,000 cps ("out of mem", 500
  // replies), which made Kamailio look slower than it is
  const child = spawn('kamailio', ['-DD', '-E', '-f', cfgFile, '-Y', runDir, '-m', '2048', '-M', '16'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => { if (log.length < 65536) log += s; });
  // ready when the UDP port is bound (Kamailio prints no machine-readable ready line)
  const deadline = Date.now() + 10_000;
  const { createSocket } = await import('node:dgram');
  for (;;) {
    if (child.exitCode !== null) throw new Error(`kamailio exited: ${log.slice(-2000)}`);
    const taken = await new Promise<boolean>((resolve) => {
      const s = createSocket('udp4');
      s.once('error', () => { s.close(); resolve(true); });
      s.bind({ port: listenPort, address: '127.0.0.1', exclusive: true }, () => s.close(() => resolve(false)));
    });
    if (taken) break;
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error(`kamailio not ready: ${log.slice(-2000)}`); }
    await new Promise((r) => setTimeout(r, 50));
  }
  await new Promise((r) => setTimeout(r, 300)); // workers forked after the bind
  return {
    remote: `127.0.0.1:${listenPort}`,
    pid: child.pid ?? -1,
    stop: async () => { child.kill('SIGTERM'); await waitExit(child, 5_000); },
  };
}

async function startEdgeProxy(uasPort: number, transport: SippTransport, domains: string[], dir: string, ioThread: boolean): Promise<Proxy> {
  const t = transport === 't1' ? 'tcp' : 'udp';
  // the uas scenario does not answer OPTIONS: no active health probes (real traffic still counts)
  const cfg = path.join(dir, 'edge.yaml');
  fs.writeFileSync(cfg, `health:\n  intervalMs: 0\nudp:\n  ioThread: ${ioThread}\n`);
  const edge: EdgeProc = await startEdge({
    listen: [`${t}:127.0.0.1:0`],
    upstream: [`${t}:${UAS_IP}:${uasPort}`],
    domain: domains,
    // the load comes from one address: a trusted peer (carrier trunk) for this benchmark, so the
    // per-source rate limits do not cut it; sanity, transactions and routing run as always
    extraArgs: ['--config', cfg, '--trusted', '127.0.0.1/32'],
  });
  const port = edge.ports[t];
  if (port === undefined) { await edge.stop(); throw new Error(`edge reported no ${t} listener`); }
  return { remote: `127.0.0.1:${port}`, pid: edge.pid, stop: async () => { await edge.stop(); } };
}

function machineInfo(): string[] {
  const cpuinfo = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  const sipp = spawnSync('sipp', ['-v'], { encoding: 'utf8' }).stdout.match(/SIPp v[^\s]+/)?.[0] ?? 'unknown';
  const kam = spawnSync('kamailio', ['-v'], { encoding: 'utf8' });
  const kamV = kam.error === undefined ? (kam.stdout.match(/kamailio [\d.]+/)?.[0] ?? 'unknown') : 'not installed';
  return [
    `- date: ${new Date().toISOString()}`,
    `- nproc: ${os.cpus().length}; CPU: ${model}`,
    `- kernel: ${os.type()} ${os.release()}; node ${process.version}; ${sipp}; ${kamV}`,
  ];
}

function fmt(n: number | undefined, digits = 1): string {
  return n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(digits);
}

async function runTarget(target: Target, a: Args, dir: string): Promise<StepResult[]> {
  const results: StepResult[] = [];
  const uas: SippHandle = await startSipp({
    scenario: 'uas.xml',
    localIp: UAS_IP,
    transport: a.transport,
    maxTimeMs: (a.durationS + 20) * a.steps.length * 1000,
    rtt: false,
    extraArgs: ['-max_recv_loops', '10000', '-max_sched_loops', '10000'],
  });
  let proxy: Proxy | undefined;
  try {
    if (target === 'kamailio' || target === 'kamailio2') {
      const { freePort } = await import('../test/helpers/ports');
      proxy = await startKamailio(await freePort('udp'), uas.port, dir, target === 'kamailio' ? 1 : 2);
    } else if (target === 'edge' || target === 'edge-1thread') {
      proxy = await startEdgeProxy(uas.port, a.transport, a.domains, dir, target === 'edge');
    }
    const remote = proxy?.remote ?? `${UAS_IP}:${uas.port}`;
    for (const rate of a.steps) {
      const calls = rate * a.durationS;
      const cpuBefore = proxy === undefined ? undefined : treeCpuSeconds(proxy.pid);
      const r = await runSipp({
        scenario: 'uac-rr.xml',
        remote,
        transport: a.transport,
        calls,
        rate,
        maxTimeMs: (a.durationS + 10) * 1000,
        extraArgs: ['-recv_timeout', '5000', '-max_recv_loops', '10000', '-max_sched_loops', '10000', '-l', String(rate * 4)],
      });
      const cpuAfter = proxy === undefined ? undefined : treeCpuSeconds(proxy.pid);
      const wallS = Math.max(r.elapsedMs / 1000, 0.001);
      const cpuMsPerCall = cpuBefore !== undefined && cpuAfter !== undefined && r.successful > 0
        ? ((cpuAfter - cpuBefore) * 1000) / r.successful
        : undefined;
      const notes: string[] = [];
      if (r.killed) notes.push('watchdog kill');
      if (r.successful + r.failed < calls) notes.push(`${calls - r.successful - r.failed} calls not finished in time`);
      if (r.code !== 0 && r.code !== null) notes.push(`sipp exit ${r.code}`);
      results.push({
        target, rate, attempted: calls, successful: r.successful, failed: r.failed, retransmissions: r.retransmissions,
        achievedCps: r.successful / wallS,
        ...(r.rtt === undefined ? {} : { p50: r.rtt.p50, p99: r.rtt.p99 }),
        ...(r.rttAvgMs === undefined ? {} : { avgMs: r.rttAvgMs }),
        ...(cpuMsPerCall === undefined ? {} : { cpuMsPerCall }),
        note: notes.join('; '),
      });
      const last = results[results.length - 1];
      console.log(`${target} ${rate} cps: ok=${last.successful}/${calls} failed=${last.failed} retrans=${last.retransmissions} achieved=${fmt(last.achievedCps)} p50=${fmt(last.p50, 0)} p99=${fmt(last.p99, 0)} cpu/call=${fmt(last.cpuMsPerCall, 3)}ms ${last.note}`);
      await new Promise((res) => setTimeout(res, 1_000)); // let timewait calls drain between steps
    }
  } finally {
    await proxy?.stop();
    await uas.stop(5_000);
  }
  return results;
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  if (!sippAvailable()) throw new Error('sipp not found (set SIPP_BIN)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipp-load-'));
  const all: StepResult[] = [];
  const skipped: string[] = [];
  for (const target of a.targets) {
    if (target.startsWith('kamailio') && spawnSync('kamailio', ['-v']).error !== undefined) { skipped.push(`${target}: not installed`); continue; }
    if (target.startsWith('edge') && !edgeCliAvailable()) { skipped.push('edge: dist/edge/cli.js not built'); continue; }
    try {
      all.push(...(await runTarget(target, a, dir)));
    } catch (e) {
      skipped.push(`${target}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  const lines = [
    '# sipp load benchmark (latest run)',
    '',
    `Command: \`node dist/bench/sipp-load.js ${process.argv.slice(2).join(' ')}\``,
    `Scenario: test/sipp/uac-rr.xml -> [proxy] -> test/sipp/uas.xml, transport ${a.transport}, ${a.durationS} s per step, 127.0.0.1.`,
    '',
    ...machineInfo(),
    '',
    '| target | rate (cps) | calls ok / placed | failed | retrans | achieved cps | rt p50 (ms) | rt p99 (ms) | rt avg (ms) | proxy CPU / call (ms) | note |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|',
    ...all.map((r) => `| ${r.target} | ${r.rate} | ${r.successful} / ${r.attempted} | ${r.failed} | ${r.retransmissions} | ${fmt(r.achievedCps)} | ${fmt(r.p50, 0)} | ${fmt(r.p99, 0)} | ${fmt(r.avgMs, 2)} | ${fmt(r.cpuMsPerCall, 3)} | ${r.note} |`),
    '',
    'rt = INVITE sent -> 200 received at the caller (sipp rtd 1; -trace_rtt has 1 ms resolution, avg is from the stat file).',
    'achieved cps = successful calls / wall time of the sipp run (includes start-up and the last calls\' completion).',
    'Proxy CPU = utime+stime of the proxy process tree (/proc) over the step / successful calls; sipp itself runs on the same machine.',
    ...(skipped.length > 0 ? ['', 'Skipped: ' + skipped.join('; ')] : []),
    '',
  ];
  fs.mkdirSync(path.dirname(a.out), { recursive: true });
  fs.writeFileSync(a.out, lines.join('\n'));
  fs.writeFileSync(a.out.replace(/\.md$/, '.json'), JSON.stringify({ args: a, results: all, skipped }, null, 2));
  console.log(`\nwrote ${a.out}`);
  if (skipped.length > 0) console.log(`skipped: ${skipped.join('; ')}`);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.stack ?? e.message : String(e));
  process.exitCode = 1;
});
