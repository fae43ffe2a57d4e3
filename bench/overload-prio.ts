// Overload benchmark: trusted-first prioritization vs today's overload control vs no control,
// in one run, on one box.
//
//   npx tsc -p tsconfig.json && node dist/bench/overload-prio.js [--flood-x 3] [--flood 10] [--legit-cps N] [--sources 64]
//
// 1. Clean capacity C: a no-control edge is offered a blast of INVITEs from unknown sources for
//    4 s (more than it can take); C = INVITEs it forwarded per second over the last 3 s, counted
//    at the PBX stand-in.
// 2. For each mode (prioritize | overload | none), a fresh edge: legitimate calls from a trusted
//    peer (sipp, test/sipp/uac-rr.xml, the class of trusted and promoted sources) at half the
//    clean capacity in messages (a call is 5 messages into the edge, a flood INVITE 2: INVITE
//    and the PBX's 486), for 2 s alone, then with --flood-x times C unknown-source INVITEs per
//    second for --flood seconds, then 6 s alone again. Measured: legitimate calls completed,
//    /healthz polled every 250 ms (worst latency, failures), the edge's RSS, and recovery: the
//    time after the flood ends until an unknown newcomer's INVITE gets its 100 Trying within
//    200 ms again (a probe every 100 ms).
//
// The PBX stand-in (this file with --uas, a child process) answers every INVITE statelessly:
// 486 to the flood (R-URI user flood-*), 200 to the rest, 200 to BYE. The flood is spread over
// --sources loopback addresses (127.20.0.x) with the per-source request limit raised in the
// bench's rules copy: a botnet whose every member stays under the limits, so that the flood
// reaches the stages and the router (a flood that trips the limits is cheap at the gate).
//
// Bounded: every phase has a fixed duration; sipp has -timeout; every child is killed at the end.
import { fork, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startEdge, type EdgeProc } from '../test/helpers/edge-proc';
import { sample, sumOf } from '../test/helpers/prom';
import { findRepoRoot, runSipp } from '../test/helpers/sipp';

const argv = process.argv.slice(2);
const arg = (name: string, def: number): number => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : def;
};

// --------------------------------------------------------------------------------------------
// The PBX stand-in

function uas(): void {
  const sock = dgram.createSocket('udp4');
  // distinct Call-IDs: the edge's own INVITE retransmissions (Timer A) are not new work
  const seen = new Set<string>();
  let flood = 0;
  let other = 0;
  const hdr = (lines: string[], name: RegExp): string[] => lines.filter((l) => name.test(l));
  sock.on('message', (msg, rinfo) => {
    const text = msg.toString('latin1');
    const head = text.split('\r\n\r\n')[0]!;
    const lines = head.split('\r\n');
    const [method, ruri] = lines[0]!.split(' ');
    if (method === 'ACK' || method === undefined || method === 'SIP/2.0') return;
    const callId = hdr(lines, /^(call-id|i)\s*:/i)[0] ?? '';
    let status = 200;
    if (method === 'INVITE') {
      const fresh = !seen.has(callId);
      if (fresh && seen.size < 1_000_000) seen.add(callId);
      if (ruri?.startsWith('sip:flood')) { status = 486; if (fresh) flood++; } else if (fresh) other++;
    }
    const to = hdr(lines, /^(to|t)\s*:/i)[0] ?? 'To: <sip:x@x>';
    const tag = /;tag=/i.test(to) ? '' : `;tag=u${Buffer.from(callId).toString('base64url').slice(-12)}`;
    const out = [
      `SIP/2.0 ${status} ${status === 200 ? 'OK' : 'Busy Here'}`,
      ...hdr(lines, /^(via|v)\s*:/i), ...hdr(lines, /^record-route\s*:/i), ...hdr(lines, /^(from|f)\s*:/i),
      to + tag, callId, ...hdr(lines, /^cseq\s*:/i),
      `Contact: <sip:pbx@127.0.0.2:${sock.address().port}>`, 'Content-Length: 0', '', '',
    ].join('\r\n');
    sock.send(out, rinfo.port, rinfo.address);
  });
  sock.bind(0, '127.0.0.2', () => process.send!({ port: sock.address().port }));
  process.on('disconnect', () => process.exit(0));
  process.on('message', (m: { kind: string }) => {
    if (m.kind === 'count') process.send!({ flood, other });
    if (m.kind === 'stop') { sock.close(); process.exit(0); }
  });
}

class Uas {
  private constructor(private readonly child: ChildProcess, readonly port: number) {}
  static async start(): Promise<Uas> {
    const child = fork(__filename, ['--uas'], { stdio: 'ignore' });
    const port = await new Promise<number>((resolve, reject) => {
      child.once('message', (m: { port: number }) => resolve(m.port));
      child.once('exit', () => reject(new Error('uas exited')));
    });
    return new Uas(child, port);
  }
  count(): Promise<{ flood: number; other: number }> {
    return new Promise((resolve) => {
      this.child.once('message', (m: { flood: number; other: number }) => resolve(m));
      this.child.send({ kind: 'count' });
    });
  }
  stop(): void {
    this.child.kill('SIGKILL');
  }
}

// --------------------------------------------------------------------------------------------
// The flood and the probes

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function invite(user: string, i: number, edgePort: number, from: dgram.Socket): Buffer {
  const a = from.address();
  return Buffer.from([
    `INVITE sip:${user}@127.0.0.1:${edgePort} SIP/2.0`,
    `Via: SIP/2.0/UDP ${a.address}:${a.port};branch=z9hG4bK-${user}-${i};rport`,
    'Max-Forwards: 70', `From: <sip:caller${i % 1000}@example.net>;tag=f${i}`, `To: <sip:${user}@example.com>`,
    `Call-ID: ${user}-${i}-${process.pid}`, 'CSeq: 1 INVITE', `Contact: <sip:c@${a.address}:${a.port}>`,
    'User-Agent: bench', 'Content-Length: 0', '', '',
  ].join('\r\n'), 'latin1');
}

async function floodSockets(n: number): Promise<dgram.Socket[]> {
  const socks: dgram.Socket[] = [];
  for (let i = 0; i < n; i++) {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, `127.20.0.${1 + i}`, () => r()));
    s.on('error', () => { /* the flood does not care */ });
    socks.push(s);
  }
  return socks;
}

/** `pps` flood INVITEs for `seconds`, in 5 ms ticks; resolves to what was sent */
async function flood(socks: dgram.Socket[], edgePort: number, pps: number, seconds: number): Promise<number> {
  let sent = 0;
  const t0 = Date.now();
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const elapsed = Date.now() - t0;
      if (elapsed >= seconds * 1000) { clearInterval(timer); resolve(); return; }
      const due = Math.min(Math.floor((elapsed / 1000) * pps) - sent, pps / 20);
      for (let k = 0; k < due; k++, sent++) {
        const s = socks[sent % socks.length]!;
        s.send(invite('flood', sent, edgePort, s), edgePort, '127.0.0.1');
      }
    }, 5);
  });
  return sent;
}

/** an unknown newcomer's INVITE every 100 ms: when did its 100 Trying (or any answer) come? */
class Prober {
  private sock = dgram.createSocket('udp4');
  private sentAt = new Map<string, number>();
  readonly answers: { at: number; rtt: number }[] = [];
  readonly sends: number[] = [];
  private timer: NodeJS.Timeout | undefined;
  private i = 0;
  async start(edgePort: number): Promise<void> {
    await new Promise<void>((r) => this.sock.bind(0, '127.30.0.1', () => r()));
    this.sock.on('message', (m) => {
      const cid = /\r\nCall-ID: ([^\r]+)/i.exec(m.toString('latin1'))?.[1];
      const t = cid === undefined ? undefined : this.sentAt.get(cid);
      if (t !== undefined) { this.sentAt.delete(cid!); this.answers.push({ at: t, rtt: Date.now() - t }); }
    });
    this.timer = setInterval(() => {
      const b = invite('probe', this.i++, edgePort, this.sock);
      const cid = /\r\nCall-ID: ([^\r]+)/.exec(b.toString('latin1'))![1]!;
      const now = Date.now();
      this.sentAt.set(cid, now);
      this.sends.push(now);
      this.sock.send(b, edgePort, '127.0.0.1');
    }, 100);
  }
  /** ms after `from` until every probe sent from then on was answered within 200 ms */
  recovery(from: number, until: number): number | null {
    const ok = new Map(this.answers.map((a) => [a.at, a.rtt]));
    const sends = this.sends.filter((t) => t >= from && t <= until - 500);
    let lastBad = -1;
    sends.forEach((t, k) => { const rtt = ok.get(t); if (rtt === undefined || rtt > 200) lastBad = k; });
    if (lastBad === sends.length - 1) return null;
    return lastBad < 0 ? 0 : sends[lastBad + 1]! - from;
  }
  private closed = false;
  stop(): void { clearInterval(this.timer); if (!this.closed) { this.closed = true; this.sock.close(); } }
}

class Health {
  worst = 0;
  failures = 0;
  polls = 0;
  private timer: NodeJS.Timeout | undefined;
  start(port: number): void {
    this.timer = setInterval(() => {
      const t = Date.now();
      this.polls++;
      fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(2000) })
        .then((r) => { if (!r.ok) this.failures++; this.worst = Math.max(this.worst, Date.now() - t); }, () => { this.failures++; this.worst = Math.max(this.worst, Date.now() - t); });
    }, 250);
  }
  stop(): void { clearInterval(this.timer); }
}

function rssMiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch { return NaN; }
}

// --------------------------------------------------------------------------------------------

type Mode = 'prioritize' | 'overload' | 'none';

function benchDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-prio-'));
  const rules = path.join(dir, 'rules');
  fs.cpSync(path.join(findRepoRoot(), 'rules'), rules, { recursive: true });
  // a botnet whose members each stay under the per-source and per-user limits (see the header)
  const limits = path.join(rules, 'limits.yaml');
  fs.writeFileSync(limits, fs.readFileSync(limits, 'utf8')
    .replace(/^(\s*all: \{ limit: )\d+/m, '$11000000')
    .replace(/^userInvite: \{ enabled: true/m, 'userInvite: { enabled: false'));
  return dir;
}

async function edgeFor(dir: string, mode: Mode, uasPort: number): Promise<EdgeProc> {
  const cfg = path.join(dir, `${mode}.yaml`);
  fs.writeFileSync(cfg, [
    'health:', '  intervalMs: 0',
    'overload:', `  enabled: ${mode === 'overload'}`, `  prioritize: ${mode === 'prioritize'}`, '',
  ].join('\n'));
  return startEdge({
    listen: ['udp:127.0.0.1:0'], upstream: [`udp:127.0.0.2:${uasPort}`],
    extraArgs: ['--config', cfg, '--rules', path.join(dir, 'rules'), '--trusted', '127.0.0.1/32'],
  });
}

async function capacity(dir: string, socks: dgram.Socket[]): Promise<number> {
  const pbx = await Uas.start();
  const edge = await edgeFor(dir, 'none', pbx.port);
  try {
    const port = edge.ports.udp!;
    const blast = flood(socks, port, 40000, 4);
    await sleep(1000);
    const a = await pbx.count();
    await sleep(3000);
    const b = await pbx.count();
    await blast;
    return Math.round((b.flood - a.flood) / 3);
  } finally {
    await edge.stop();
    pbx.stop();
  }
}

interface ModeResult {
  mode: Mode; legitCalls: number; legitOk: number; legitFailed: number; legitPct: number; retransmissions: number;
  floodSent: number; floodPps: number; floodForwarded: number;
  healthWorstMs: number; healthFailures: number; healthPolls: number;
  rssStartMiB: number; rssPeakMiB: number; rssEndMiB: number;
  recoveryMs: number | null; shedUnknown: number; shedFavoured: number; shedDialog: number; ringDrops: number; overloadRefused: number;
}

async function runMode(dir: string, mode: Mode, socks: dgram.Socket[], floodPps: number, legitCps: number, floodS: number): Promise<ModeResult> {
  const pbx = await Uas.start();
  const edge = await edgeFor(dir, mode, pbx.port);
  const port = edge.ports.udp!;
  const health = new Health();
  const probe = new Prober();
  const PRE = 2, POST = 6;
  const calls = Math.round(legitCps * (PRE + floodS + POST));
  try {
    health.start(edge.metricsPort!);
    const rss0 = rssMiB(edge.pid);
    let peak = rss0;
    const rssTimer = setInterval(() => { peak = Math.max(peak, rssMiB(edge.pid)); }, 250);
    const legit = runSipp({ scenario: 'uac-rr.xml', remote: `127.0.0.1:${port}`, transport: 'u1', calls, rate: legitCps, maxTimeMs: (PRE + floodS + POST + 40) * 1000 });
    await sleep(PRE * 1000);
    await probe.start(port);
    const before = await pbx.count();
    const tf = Date.now();
    const sent = await flood(socks, port, floodPps, floodS);
    const floodEnd = Date.now();
    const floodSeconds = (floodEnd - tf) / 1000;
    const r = await legit;
    const after = await pbx.count();
    await sleep(Math.max(0, floodEnd + POST * 1000 - Date.now()));
    clearInterval(rssTimer);
    health.stop();
    probe.stop();
    const rss1 = rssMiB(edge.pid);
    const m = await (await fetch(`http://127.0.0.1:${edge.metricsPort}/metrics`)).text();
    if (r.successful + r.failed === 0) console.error(`sipp placed no calls: code ${r.code}\n${r.stderr.slice(0, 2000)}`);
    return {
      mode, legitCalls: calls, legitOk: r.successful, legitFailed: r.failed,
      legitPct: Number(((100 * r.successful) / calls).toFixed(2)), retransmissions: r.retransmissions,
      floodSent: sent, floodPps: Math.round(sent / floodSeconds), floodForwarded: after.flood - before.flood,
      healthWorstMs: health.worst, healthFailures: health.failures, healthPolls: health.polls,
      rssStartMiB: Math.round(rss0), rssPeakMiB: Math.round(Math.max(peak, rss1)), rssEndMiB: Math.round(rss1),
      recoveryMs: probe.recovery(floodEnd, Date.now()),
      shedUnknown: sumOf(m, 'sipedge_priority_shed_total', { class: 'unknown' }),
      shedFavoured: sumOf(m, 'sipedge_priority_shed_total', { class: 'favoured' }),
      shedDialog: sumOf(m, 'sipedge_priority_shed_total', { class: 'dialog' }),
      ringDrops: sample(m, 'sipedge_transport_events_total', { transport: 'udp', event: 'datagram_queue_full' }) ?? 0,
      overloadRefused: sumOf(m, 'sipedge_verdicts_total', { stage: 'overload' }),
    };
  } finally {
    health.stop();
    probe.stop();
    await edge.stop();
    pbx.stop();
  }
}

async function main(): Promise<void> {
  const FLOOD_X = arg('flood-x', 3);
  const FLOOD_S = arg('flood', 10);
  const SOURCES = arg('sources', 64);
  const dir = benchDir();
  const socks = await floodSockets(SOURCES);
  try {
    const c = await capacity(dir, socks);
    // half the clean capacity in edge work: a legitimate call costs the edge about six flood
    // INVITEs (5 messages in and 5 out with record-routing and two transactions, against 2 and 3),
    // so C / 12 calls per second (see bench/README.md)
    const legitCps = arg('legit-cps', Math.max(10, Math.round(c / 12)));
    const floodPps = Math.round(FLOOD_X * c);
    console.error(`clean capacity ${c} unknown INVITEs/s; flood ${floodPps}/s for ${FLOOD_S} s; legitimate ${legitCps} cps`);
    const results: ModeResult[] = [];
    for (const mode of ['prioritize', 'overload', 'none'] as const) {
      results.push(await runMode(dir, mode, socks, floodPps, legitCps, FLOOD_S));
      console.error(JSON.stringify(results.at(-1)));
      await sleep(2000);
    }
    console.log(JSON.stringify({ cleanCapacityPps: c, floodX: FLOOD_X, floodTargetPps: floodPps, legitCps, floodSeconds: FLOOD_S, sources: SOURCES, results }, null, 2));
  } finally {
    for (const s of socks) s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (argv.includes('--uas')) uas();
else void main();
