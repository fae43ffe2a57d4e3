// Process harness for the edge itself: spawn `node dist/edge/cli.js run ...`, wait until it says it
// is listening, collect its JSON log lines, stop it. Ports may be 0: the real ones are read from the
// "listening" log line, so parallel tests never fight over a port.
import { spawn, type ChildProcess } from 'node:child_process';
import { childSet, eachLine } from './children';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { findRepoRoot } from './sipp';

export interface EdgeOptions {
  /** e.g. ['udp:127.0.0.1:0', 'tcp:127.0.0.1:0'] */
  readonly listen: readonly string[];
  /** e.g. ['udp:127.0.0.1:5070'] */
  readonly upstream: readonly string[];
  readonly domain?: readonly string[];
  readonly extraArgs?: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  /** CLI entry; default $SIP_EDGE_CLI or <repo>/dist/edge/cli.js */
  readonly cli?: string;
  /** readiness bound, default 10 s */
  readonly readyTimeoutMs?: number;
  /** default 'info' */
  readonly logLevel?: string;
}

export interface EdgeListenerInfo {
  readonly transport: string;
  readonly address: string;
  readonly port: number;
}

export interface EdgeProc {
  readonly pid: number;
  /** first bound port per transport name, e.g. ports.udp */
  readonly ports: Readonly<Record<string, number>>;
  readonly listeners: readonly EdgeListenerInfo[];
  /** the metrics port when a log line announced it */
  readonly metricsPort?: number;
  /** send `signal` (default SIGTERM); SIGKILL after `graceMs`; resolves to the exit code (null if signalled) */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<number | null>;
  /** log lines so far (stdout JSON lines and stderr lines), oldest first, bounded */
  logs(): string[];
  /** parsed JSON log records so far */
  records(): Record<string, unknown>[];
  readonly exited: Promise<number | null>;
}

const MAX_LOG_LINES = 20_000;

const children = childSet();
const track = (c: ChildProcess): void => children.track(c);

export function defaultEdgeCli(): string {
  return process.env.SIP_EDGE_CLI ?? path.join(findRepoRoot(), 'dist', 'edge', 'cli.js');
}

export function edgeCliAvailable(cli: string = defaultEdgeCli()): boolean {
  return fs.existsSync(cli);
}

export function buildEdgeArgs(o: EdgeOptions, cli: string): string[] {
  const args = [cli, 'run'];
  for (const l of o.listen) args.push('--listen', l);
  for (const u of o.upstream) args.push('--upstream', u);
  for (const d of o.domain ?? []) args.push('--domain', d);
  args.push('--metrics', '127.0.0.1:0', '--log-level', o.logLevel ?? 'info');
  if (o.extraArgs !== undefined) args.push(...o.extraArgs);
  return args;
}

function isListenerInfo(x: unknown): x is EdgeListenerInfo {
  if (typeof x !== 'object' || x === null) return false;
  const r = x as Record<string, unknown>;
  return typeof r.transport === 'string' && typeof r.port === 'number' && typeof r.address === 'string';
}

export function startEdge(o: EdgeOptions): Promise<EdgeProc> {
  const cli = o.cli ?? defaultEdgeCli();
  const args = buildEdgeArgs(o, cli);
  const readyMs = o.readyTimeoutMs ?? 10_000;
  const child = spawn(process.execPath, args, {
    cwd: findRepoRoot(),
    env: o.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  track(child);
  const lines: string[] = [];
  const records: Record<string, unknown>[] = [];
  const stderrLines: string[] = [];
  const push = (l: string): void => {
    lines.push(l);
    if (lines.length > MAX_LOG_LINES) lines.splice(0, lines.length - MAX_LOG_LINES);
  };
  const exited = new Promise<number | null>((resolve) => {
    child.once('error', () => resolve(null));
    child.once('close', (code) => resolve(code));
  });

  return new Promise<EdgeProc>((resolve, reject) => {
    let ready = false;
    let metricsPort: number | undefined;
    const fail = (why: string): void => {
      if (ready) return;
      ready = true;
      clearTimeout(timer);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      reject(new Error(`edge did not become ready: ${why}\n  cmd: node ${args.join(' ')}\n  stderr:\n${stderrLines.slice(-40).join('\n')}\n  stdout:\n${lines.slice(-20).join('\n')}`));
    };
    const timer = setTimeout(() => fail(`no "listening" log line within ${readyMs} ms`), readyMs);

    const onRecord = (rec: Record<string, unknown>): void => {
      if (typeof rec.msg === 'string' && /metrics/i.test(rec.msg) && typeof rec.port === 'number') metricsPort = rec.port;
      const admin = rec.admin as { port?: unknown } | null | undefined;
      if (rec.msg === 'listening' && admin && typeof admin.port === 'number') metricsPort = admin.port;
      if (ready || rec.msg !== 'listening' || !Array.isArray(rec.listeners)) return;
      const listeners = rec.listeners.filter(isListenerInfo);
      const ports: Record<string, number> = {};
      for (const l of listeners) if (ports[l.transport] === undefined) ports[l.transport] = l.port;
      ready = true;
      clearTimeout(timer);
      const stop = async (signal: NodeJS.Signals = 'SIGTERM', graceMs = 5_000): Promise<number | null> => {
        if (child.exitCode !== null || child.signalCode !== null) return exited;
        child.kill(signal);
        const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
        const code = await exited;
        clearTimeout(t);
        return code;
      };
      resolve({
        pid: child.pid ?? -1,
        ports,
        listeners,
        ...(metricsPort === undefined ? {} : { metricsPort }),
        stop,
        logs: () => lines.slice(),
        records: () => records.slice(),
        exited,
      });
    };

    eachLine(child.stdout, (line) => {
      if (line.trim() === '') return;
      push(line);
      try {
        const rec: unknown = JSON.parse(line);
        if (typeof rec === 'object' && rec !== null) {
          const r = rec as Record<string, unknown>;
          if (records.length < MAX_LOG_LINES) records.push(r);
          onRecord(r);
        }
      } catch {
        // not JSON: kept as a plain log line
      }
    });
    const errRest = eachLine(child.stderr, (line) => {
      stderrLines.push(line);
      if (stderrLines.length > 200) stderrLines.shift();
      push(line);
    });
    child.once('error', (e) => fail(`spawn error: ${e.message}`));
    child.once('exit', (code, sig) => {
      if (errRest() !== '') stderrLines.push(errRest());
      fail(`exited early (code ${code}, signal ${sig})`);
    });
  });
}

/** utime+stime of a process in seconds, from /proc/PID/stat (Linux); undefined elsewhere. */
export function procCpuSeconds(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command name (field 2) may contain spaces and parentheses: split after its closing ')'
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    const hz = 100; // USER_HZ is 100 on every Linux ABI node runs on
    return (utime + stime) / hz;
  } catch {
    return undefined;
  }
}

/** utime+stime (s) of `pid` and its descendants (Kamailio forks its workers); a process gone while listing counts 0 */
export function treeCpuSeconds(pid: number): number {
  const parentOf = new Map<number, number>();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const s = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      parentOf.set(Number(d), Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]));
    } catch { /* gone while listing */ }
  }
  const tree = new Set<number>([pid]);
  for (let grew = true; grew;) {
    grew = false;
    for (const [p, pp] of parentOf) if (!tree.has(p) && tree.has(pp)) { tree.add(p); grew = true; }
  }
  let total = 0;
  for (const p of tree) total += procCpuSeconds(p) ?? 0;
  return total;
}

/** resolves when `child` has exited; SIGKILLs it after `ms` */
export function waitExit(child: ChildProcess, ms: number): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) { resolve(); return; }
    const t = setTimeout(() => { child.kill('SIGKILL'); resolve(); }, ms);
    child.once('exit', () => { clearTimeout(t); resolve(); });
  });
}
