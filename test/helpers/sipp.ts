// Process harness for sipp 3.6 (real-peer tests and the load benchmark).
//
// Every run is bounded: -m (calls), -timeout (sipp's own global timeout) and a hard SIGKILL watchdog
// a few seconds later in case sipp hangs. Each run gets its own temp dir as cwd, so the files sipp
// names after the scenario and its pid (_rtt.csv, _errors.log) never collide between runs.
//
// Success is read from the final line of the -trace_stat CSV, not from the exit code alone: sipp 3.6.1
// in server mode exits 0 even when calls failed (e.g. a check_it regexp did not match).
// Exit codes (sipp -h): 0 all calls ok, 1 some failed, 97 internal exit command (SIGUSR1 / -timeout
// without -timeout_error), 99 normal exit without calls, 255 (-1) fatal, 254 (-2) socket bind failed.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { childSet } from './children';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { freePort } from './ports';

export type SippTransport = 'u1' | 'un' | 't1' | 'tn';
export type SippBuiltin = 'uac' | 'uas' | 'regexp' | 'branchc' | 'branchs';

export interface SippOptions {
  /** scenario file: absolute path, or a file name under test/sipp/ */
  readonly scenario?: string;
  /** built-in scenario (-sn) when no scenario file is given */
  readonly sn?: SippBuiltin;
  /** 'host:port' of the peer; omit for a server (UAS/registrar) */
  readonly remote?: string;
  /** local port (-p); default: a free port for the transport */
  readonly localPort?: number;
  /** -i and -bind_local address; default 127.0.0.1 */
  readonly localIp?: string;
  readonly transport?: SippTransport;
  /** -m: stop after this many calls (servers: after this many incoming calls) */
  readonly calls?: number;
  /** -r / -rp: `rate` calls every `ratePeriodMs` ms */
  readonly rate?: number;
  readonly ratePeriodMs?: number;
  /** -l: max simultaneous calls */
  readonly limit?: number;
  /** -s: user part of the Request-URI ([service]) */
  readonly service?: string;
  /** hard bound for the whole run; sipp gets -timeout (rounded up to seconds) and -timeout_error */
  readonly maxTimeMs: number;
  /** -trace_rtt (per-call response times): default true when `remote` is set */
  readonly rtt?: boolean;
  /** -trace_msg into the run dir (debugging only: slows sipp down) */
  readonly traceMsg?: boolean;
  readonly extraArgs?: readonly string[];
  /** working dir for sipp's output files; default a fresh temp dir */
  readonly cwd?: string;
  readonly env?: NodeJS.ProcessEnv;
}

export interface SippRtt {
  readonly count: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

export interface SippResult {
  /** exit code; null when killed by a signal */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly successful: number;
  readonly failed: number;
  readonly retransmissions: number;
  /** every cumulative "(C)" counter of the last stat line, e.g. counters['FailedTcpClosed'] */
  readonly counters: Readonly<Record<string, number>>;
  /** average ResponseTime1 in ms from the stat file, when the scenario measures one */
  readonly rttAvgMs?: number;
  /** response time 1 distribution from -trace_rtt, in ms */
  readonly rtt?: SippRtt;
  readonly stdout: string;
  readonly stderr: string;
  readonly statFile: string;
  /** head of sipp's error log (unexpected messages, failed regexps) */
  readonly errors: string;
  readonly dir: string;
  readonly args: readonly string[];
  /** wall time of the run, ms */
  readonly elapsedMs: number;
  /** true when the harness watchdog had to SIGKILL sipp */
  readonly killed: boolean;
}

export interface SippHandle {
  readonly pid: number;
  /** the local port sipp listens/sends on */
  readonly port: number;
  readonly dir: string;
  /** soft stop (SIGUSR1: no new calls, finish the current ones), SIGKILL after `graceMs` */
  stop(graceMs?: number): Promise<SippResult>;
  readonly done: Promise<SippResult>;
}

/** The repo root: the nearest ancestor holding package.json (works from test/helpers, dist-x/test/helpers, dist-x/bench). */
export function findRepoRoot(from: string = __dirname): string {
  let dir = from;
  for (let i = 0; i < 8; i++) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return path.resolve(from, '../../..');
}

export const REPO_ROOT = findRepoRoot();
export const SIPP_SCENARIO_DIR = path.join(REPO_ROOT, 'test', 'sipp');
export const SIPP_BIN = process.env.SIPP_BIN ?? 'sipp';

const OUTPUT_CAP = 64 * 1024;
const WATCHDOG_SLACK_MS = 5_000;

let availability: boolean | undefined;
/** is a sipp binary runnable here? (cached) */
export function sippAvailable(): boolean {
  if (availability === undefined) {
    const r = spawnSync(SIPP_BIN, ['-v'], { encoding: 'utf8', timeout: 5_000 });
    availability = r.error === undefined && /SIPp v?\d/.test(`${r.stdout}${r.stderr}`);
  }
  return availability;
}

/** Every live sipp child, so that nothing outlives the test process. */
const children = childSet();
const track = (c: ChildProcess): void => children.track(c);

/** SIGKILL every sipp this process started and that is still running. */
export function killAllSipp(): void {
  children.killAll();
}

/** Keep the last `cap` characters: the final statistics screen is what matters. */
class TailBuffer {
  private chunks: string[] = [];
  private size = 0;
  constructor(private readonly cap: number) {}
  push(s: string): void {
    this.chunks.push(s);
    this.size += s.length;
    while (this.size > this.cap && this.chunks.length > 1) this.size -= (this.chunks.shift() ?? '').length;
  }
  toString(): string {
    const all = this.chunks.join('');
    return all.length > this.cap ? all.slice(all.length - this.cap) : all;
  }
}

export function resolveScenario(scenario: string): string {
  return path.isAbsolute(scenario) ? scenario : path.join(SIPP_SCENARIO_DIR, scenario);
}

function buildArgs(o: SippOptions, port: number, controlPort: number, dir: string): string[] {
  const args: string[] = [];
  if (o.remote !== undefined) args.push(o.remote);
  if (o.scenario !== undefined) args.push('-sf', resolveScenario(o.scenario));
  else args.push('-sn', o.sn ?? 'uas');
  const ip = o.localIp ?? '127.0.0.1';
  args.push('-i', ip, '-bind_local', '-p', String(port), '-t', o.transport ?? 'u1');
  // never read the terminal, never wait for a key; control socket on a port of our own
  args.push('-nostdin', '-cp', String(controlPort));
  if (o.calls !== undefined) args.push('-m', String(o.calls));
  if (o.rate !== undefined) args.push('-r', String(o.rate));
  if (o.ratePeriodMs !== undefined) args.push('-rp', `${o.ratePeriodMs}ms`);
  if (o.limit !== undefined) args.push('-l', String(o.limit));
  if (o.service !== undefined) args.push('-s', o.service);
  // sipp parses -timeout in whole seconds (1500ms becomes 1 s): round up
  args.push('-timeout', `${Math.max(1, Math.ceil(o.maxTimeMs / 1000))}s`, '-timeout_error');
  args.push('-trace_stat', '-stf', path.join(dir, 'stat.csv'), '-fd', '1');
  args.push('-trace_err', '-error_file', path.join(dir, 'errors.log'));
  if (o.rtt ?? o.remote !== undefined) args.push('-trace_rtt', '-rtt_freq', '1');
  if (o.traceMsg === true) args.push('-trace_msg', '-message_file', path.join(dir, 'messages.log'));
  // screen refresh once per second is plenty; the stat file carries the numbers
  args.push('-f', '1');
  if (o.extraArgs !== undefined) args.push(...o.extraArgs);
  return args;
}

/** Parse the last line of a sipp -trace_stat CSV into its cumulative counters. */
export function parseStatCsv(text: string): { counters: Record<string, number>; rttAvgMs?: number } {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '');
  const counters: Record<string, number> = {};
  if (lines.length < 2) return { counters };
  const head = lines[0].split(';');
  const last = lines[lines.length - 1].split(';');
  let rttAvgMs: number | undefined;
  for (let i = 0; i < head.length && i < last.length; i++) {
    const name = head[i];
    if (!name.endsWith('(C)')) continue;
    const key = name.slice(0, -3);
    const v = last[i];
    if (/^-?\d+(\.\d+)?$/.test(v)) counters[key] = Number(v);
    else if (key === 'ResponseTime1') rttAvgMs = parseDuration(v);
  }
  return rttAvgMs === undefined ? { counters } : { counters, rttAvgMs };
}

/** "HH:MM:SS:uuuuuu" (sipp's time format) -> ms */
function parseDuration(v: string): number | undefined {
  const m = /^(\d+):(\d+):(\d+):(\d+)$/.exec(v.trim());
  if (m === null) return undefined;
  return (Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3])) * 1000 + Number(m[4]) / 1000;
}

/** Percentiles (nearest rank) of sipp's -trace_rtt file: "Date_ms;response_time_ms;rtd_no". */
export function parseRttCsv(text: string, rtdNo = '1'): SippRtt | undefined {
  const values: number[] = [];
  for (const line of text.split(/\r?\n/)) {
    const f = line.split(';');
    if (f.length < 3 || f[2].trim() !== rtdNo) continue;
    const v = Number(f[1]);
    if (Number.isFinite(v)) values.push(v);
  }
  if (values.length === 0) return undefined;
  values.sort((a, b) => a - b);
  const pick = (q: number): number => values[Math.min(values.length - 1, Math.max(0, Math.ceil(q * values.length) - 1))];
  return { count: values.length, p50: pick(0.5), p99: pick(0.99), max: values[values.length - 1] };
}

function readIf(file: string, cap = OUTPUT_CAP): string {
  try {
    const buf = fs.readFileSync(file);
    return buf.subarray(0, cap).toString('latin1');
  } catch {
    return '';
  }
}

/** Start sipp in the background (a UAS, the registrar ...). */
export async function startSipp(o: SippOptions, attempt = 1): Promise<SippHandle> {
  if (o.scenario === undefined && o.sn === undefined) throw new Error('startSipp: scenario or sn required');
  const kind = o.transport === 't1' || o.transport === 'tn' ? 'tcp' : 'udp';
  const port = o.localPort ?? (await freePort(kind));
  const controlPort = await freePort('udp');
  const dir = o.cwd ?? fs.mkdtempSync(path.join(os.tmpdir(), 'sipp-'));
  fs.mkdirSync(dir, { recursive: true });
  const args = buildArgs(o, port, controlPort, dir);
  const started = Date.now();
  const child = spawn(SIPP_BIN, args, { cwd: dir, env: o.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  const out = new TailBuffer(OUTPUT_CAP);
  const err = new TailBuffer(OUTPUT_CAP);
  child.stdout?.setEncoding('latin1').on('data', (s: string) => out.push(s));
  child.stderr?.setEncoding('latin1').on('data', (s: string) => err.push(s));
  let killed = false;
  const watchdog = setTimeout(() => {
    killed = true;
    child.kill('SIGKILL');
  }, o.maxTimeMs + WATCHDOG_SLACK_MS);

  const done = new Promise<SippResult>((resolve) => {
    const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
      clearTimeout(watchdog);
      const statFile = path.join(dir, 'stat.csv');
      const { counters, rttAvgMs } = parseStatCsv(readIf(statFile, 16 * 1024 * 1024));
      const rttFile = fs.readdirSync(dir).find((f) => f.endsWith('_rtt.csv'));
      const rtt = rttFile === undefined ? undefined : parseRttCsv(readIf(path.join(dir, rttFile), 64 * 1024 * 1024));
      resolve({
        code,
        signal,
        successful: counters['SuccessfulCall'] ?? 0,
        failed: counters['FailedCall'] ?? 0,
        retransmissions: counters['Retransmissions'] ?? 0,
        counters,
        ...(rttAvgMs === undefined ? {} : { rttAvgMs }),
        ...(rtt === undefined ? {} : { rtt }),
        stdout: out.toString(),
        stderr: err.toString(),
        statFile,
        errors: readIf(path.join(dir, 'errors.log'), 8 * 1024),
        dir,
        args,
        elapsedMs: Date.now() - started,
        killed,
      });
    };
    child.once('error', (e) => {
      err.push(`spawn error: ${e.message}\n`);
      finish(null, null);
    });
    child.once('close', finish);
  });

  const stop = async (graceMs = 3_000): Promise<SippResult> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGUSR1');
      const t = setTimeout(() => {
        killed = true;
        child.kill('SIGKILL');
      }, graceMs);
      const r = await done;
      clearTimeout(t);
      return r;
    }
    return done;
  };

  // give a server time to bind before a client sends to it: poll until its port is taken
  if (o.remote === undefined) {
    await waitBound(port, kind, child, 3_000);
    // a server that died at start (exit 254: its port was taken between freePort() and its bind,
    // by another test or by the probe itself) is started again on another port
    await new Promise((r) => setTimeout(r, 50));
    if (child.exitCode !== null && o.localPort === undefined && attempt < 4) {
      await done;
      return startSipp(o, attempt + 1);
    }
  }
  return { pid: child.pid ?? -1, port, dir, stop, done };
}

/** Run sipp to completion. */
export async function runSipp(o: SippOptions): Promise<SippResult> {
  for (let attempt = 1; ; attempt++) {
    const h = await startSipp(o);
    const r = await h.done;
    // a port picked free by freePort() (the local or the control port) can be taken by another
    // process before sipp binds it: sipp then exits 254 at start, having sent nothing; run it
    // again on fresh ports (a caller-chosen local port is not ours to change)
    const bindRace = r.code === 254 && /Unable to bind/i.test(r.stderr + r.errors);
    if (!bindRace || attempt >= 4 || (o.localPort !== undefined && !/control socket/i.test(r.stderr + r.errors))) return r;
  }
}

/** Poll until something is bound on 127.0.0.1:port (sipp has no ready signal), bounded by `ms`. */
async function waitBound(port: number, kind: 'udp' | 'tcp', child: ChildProcess, ms: number): Promise<void> {
  const { createSocket } = await import('node:dgram');
  const net = await import('node:net');
  const deadline = Date.now() + ms;
  while (Date.now() < deadline && child.exitCode === null) {
    const taken = await new Promise<boolean>((resolve) => {
      if (kind === 'udp') {
        const s = createSocket('udp4');
        s.once('error', () => { s.close(); resolve(true); });
        s.bind({ port, address: '127.0.0.1', exclusive: true }, () => s.close(() => resolve(false)));
      } else {
        // probe by binding, not connecting: a probe connection would show up in sipp as a peer
        const srv = net.createServer();
        srv.once('error', () => resolve(true));
        srv.listen({ port, host: '127.0.0.1', exclusive: true }, () => srv.close(() => resolve(false)));
      }
    });
    if (taken) return;
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** One-line summary for assertion messages. */
export function sippSummary(r: SippResult): string {
  const nonzero = Object.entries(r.counters)
    .filter(([k, v]) => v !== 0 && (k.startsWith('Failed') || k === 'SuccessfulCall' || k === 'Retransmissions'))
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  return `sipp ${r.args.join(' ')}\n  code=${r.code} signal=${r.signal} killed=${r.killed} ${nonzero}\n  errors: ${r.errors.slice(0, 1500)}\n  stderr: ${r.stderr.slice(-1500)}`;
}
