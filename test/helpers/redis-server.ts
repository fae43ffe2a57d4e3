// Redis for the store tests.
//
// - the machine's Redis on 127.0.0.1:6379 (shared: every test uses its own random key prefix and
//   deletes its keys; it is NEVER stopped by a test);
// - a private `redis-server` on a random loopback port, without persistence, that a test may kill
//   and restart to exercise outages. Every start is bounded; every server is killed when the test
//   process exits.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { childSet } from './children';
import * as crypto from 'node:crypto';
import * as net from 'node:net';
import { freePort } from './ports';

export const SHARED_REDIS_URL = process.env.SIPEDGE_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** Under CI the Redis tests must run: a missing Redis is a failure there, a skip only locally. */
export function redisRequired(): boolean {
  return process.env.CI === 'true';
}

/** A fresh key prefix per test, so parallel runs and leftovers never meet. */
export function randomPrefix(): string {
  return `sipedge-test:${crypto.randomBytes(6).toString('hex')}:`;
}

/** PING host:port over a raw socket: true on "+PONG" within `timeoutMs`. Never throws. */
export function pingRedis(host = '127.0.0.1', port = 6379, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    let done = false;
    let buf = '';
    const s = net.connect({ host, port });
    const finish = (ok: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(t);
      s.destroy();
      resolve(ok);
    };
    const t = setTimeout(() => finish(false), timeoutMs);
    s.once('error', () => finish(false));
    s.once('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => {
      buf += d.toString('latin1');
      if (buf.includes('\r\n')) finish(buf.startsWith('+PONG'));
    });
  });
}

/** Whether the shared Redis answers; the reason to print when a local run skips. */
export async function sharedRedisStatus(): Promise<{ up: boolean; reason: string }> {
  const u = new URL(SHARED_REDIS_URL);
  const up = await pingRedis(u.hostname, Number(u.port || 6379));
  return { up, reason: up ? '' : `no Redis answering on ${SHARED_REDIS_URL} (set CI=true to make this a failure)` };
}

export function redisServerInstalled(): boolean {
  const r = spawnSync('redis-server', ['--version'], { encoding: 'utf8', timeout: 5000 });
  return r.status === 0;
}

export interface PrivateRedis {
  readonly port: number;
  readonly url: string;
  /** running right now */
  readonly running: boolean;
  /** SIGKILL (an outage, not a shutdown) and wait for the exit */
  kill(): Promise<void>;
  /** start again on the same port (empty: no persistence) */
  start(): Promise<void>;
  /** SIGSTOP / SIGCONT: a server that accepts but never answers (the commandTimeout case) */
  pause(): void;
  resume(): void;
}

const children = childSet();
const track = (c: ChildProcess): void => children.track(c);

function launch(port: number, readyMs: number): Promise<ChildProcess> {
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'notice'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  track(child);
  return new Promise((resolve, reject) => {
    let out = '';
    let settled = false;
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(t);
      if (child.exitCode === null) child.kill('SIGKILL');
      reject(new Error(`redis-server on port ${port}: ${why}\n${out.slice(-2000)}`));
    };
    const t = setTimeout(() => fail(`not ready within ${readyMs} ms`), readyMs);
    const onData = (d: Buffer): void => {
      out += d.toString('utf8');
      if (out.length > 20_000) out = out.slice(-10_000);
      if (!settled && out.includes('Ready to accept connections')) {
        settled = true;
        clearTimeout(t);
        resolve(child);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('error', (e) => fail(`spawn error ${e.message}`));
    child.once('exit', (code, sig) => fail(`exited early (code ${code}, signal ${sig})`));
  });
}

/** Start a private redis-server on a free loopback port (bounded by `readyMs`, default 5 s). */
export async function startPrivateRedis(readyMs = 5000): Promise<PrivateRedis> {
  const port = await freePort('tcp');
  let child: ChildProcess | null = await launch(port, readyMs);
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get running() {
      return child !== null && child.exitCode === null && child.signalCode === null;
    },
    async kill() {
      const c = child;
      child = null;
      if (c === null || c.exitCode !== null || c.signalCode !== null) return;
      const exited = new Promise<void>((r) => c.once('exit', () => r()));
      c.kill('SIGKILL');
      await exited;
    },
    pause() {
      child?.kill('SIGSTOP');
    },
    resume() {
      child?.kill('SIGCONT');
    },
    async start() {
      if (child !== null && child.exitCode === null && child.signalCode === null) return;
      child = await launch(port, readyMs);
    },
  };
}

/** Poll `pred` every few ms until true or `boundMs` passed; returns the last value. Bounded. */
export async function waitFor(pred: () => boolean | Promise<boolean>, boundMs: number, stepMs = 10): Promise<boolean> {
  const end = Date.now() + boundMs;
  for (;;) {
    if (await pred()) return true;
    if (Date.now() >= end) return false;
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
