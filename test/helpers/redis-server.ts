// Redis for the store tests.
//
// - the machine's Redis on 127.0.0.1:6379 (shared: every test uses its own random key prefix and
//   deletes its keys; it is NEVER stopped by a test);
// - a private `redis-server` on a random loopback port, without persistence, that a test may kill
//   and restart to exercise outages;
// - a private Sentinel setup (a master, optionally a replica, one `redis-server --sentinel`) and a
//   private 3-master Redis Cluster (`redis-cli --cluster create`), for the topology tests.
// Every start is bounded; every server is killed when the test process exits, and the temporary
// directories (sentinel config, cluster node files) are removed.
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import type { TestContext } from 'node:test';
import { childSet } from './children';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import Redis from 'ioredis';
import { createRedisStore } from '../../edge/store/redis';
import type { SharedStore } from '../../edge/store/types';
import { freePort, freePorts } from './ports';

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

/** Two stores (two edges) on the shared Redis under one fresh key prefix; null when no Redis
 *  answers on a local run (the test is skipped with the reason; under CI=true it fails instead). */
export async function twoStoresOnSharedRedis(t: TestContext): Promise<[SharedStore, SharedStore] | null> {
  const st = await sharedRedisStatus();
  if (!st.up) {
    if (redisRequired()) assert.fail(st.reason);
    t.skip(st.reason);
    return null;
  }
  const keyPrefix = randomPrefix();
  const a = await createRedisStore({ url: SHARED_REDIS_URL, keyPrefix, requireReady: true });
  const b = await createRedisStore({ url: SHARED_REDIS_URL, keyPrefix, requireReady: true }).catch(async (e: unknown) => {
    await a.close();
    throw e;
  });
  return [a, b];
}

export function redisServerInstalled(): boolean {
  const r = spawnSync('redis-server', ['--version'], { encoding: 'utf8', timeout: 5000 });
  return r.status === 0;
}

export function redisCliInstalled(): boolean {
  const r = spawnSync('redis-cli', ['--version'], { encoding: 'utf8', timeout: 5000 });
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

/** The persistence-free flags every private server gets. */
const EPHEMERAL = ['--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'notice'];

/**
 * Spawn redis-server with `args` and resolve once its log shows `marker` (bounded by `readyMs`;
 * the child is killed and the promise rejects with the log tail otherwise). Tracked: killed when
 * the test process exits.
 */
function launchProcess(args: string[], what: string, readyMs: number, marker = 'Ready to accept connections'): Promise<ChildProcess> {
  // run in the OS temp dir: a replica's full sync writes dump.rdb to the working directory even
  // with --save "" (it must never land in the checkout)
  const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: os.tmpdir() });
  track(child);
  return new Promise((resolve, reject) => {
    let out = '';
    let settled = false;
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(t);
      if (child.exitCode === null) child.kill('SIGKILL');
      reject(new Error(`${what}: ${why}\n${out.slice(-2000)}`));
    };
    const t = setTimeout(() => fail(`not ready within ${readyMs} ms`), readyMs);
    const onData = (d: Buffer): void => {
      out += d.toString('utf8');
      if (out.length > 20_000) out = out.slice(-10_000);
      if (!settled && out.includes(marker)) {
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

function launch(port: number, readyMs: number, extra: string[] = []): Promise<ChildProcess> {
  return launchProcess(['--port', String(port), '--bind', '127.0.0.1', ...EPHEMERAL, ...extra], `redis-server on port ${port}`, readyMs);
}

/** Start a private redis-server on a free loopback port (bounded by `readyMs`, default 5 s);
 *  `extra` are more redis-server flags (e.g. --replicaof). */
export async function startPrivateRedis(readyMs = 5000, extra: string[] = []): Promise<PrivateRedis> {
  const port = await freePort('tcp');
  let child: ChildProcess | null = await launch(port, readyMs, extra);
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
      child = await launch(port, readyMs, extra);
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

// ---- temporary directories (sentinel config files, cluster node files) ----

const tmpDirs = new Set<string>();
let tmpHooked = false;

function tmpDir(tag: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), `sipedge-${tag}-`));
  tmpDirs.add(d);
  if (!tmpHooked) {
    tmpHooked = true;
    process.once('exit', () => {
      for (const x of tmpDirs) fs.rmSync(x, { recursive: true, force: true });
    });
  }
  return d;
}

function removeTmp(d: string): void {
  tmpDirs.delete(d);
  fs.rmSync(d, { recursive: true, force: true });
}

/** One command on a short-lived connection (bounded); the reply, or the error. */
export async function redisCommand(port: number, args: string[], timeoutMs = 2000): Promise<unknown> {
  const c = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: timeoutMs, commandTimeout: timeoutMs, retryStrategy: () => null, enableReadyCheck: false });
  c.on('error', () => undefined);
  try {
    await c.connect();
    return await c.call(args[0]!, ...args.slice(1));
  } catch (e) {
    return e instanceof Error ? e : new Error(String(e));
  } finally {
    c.disconnect();
  }
}

async function killChild(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise<void>((r) => c.once('exit', () => r()));
  c.kill('SIGKILL');
  await exited;
}

// ---- Sentinel ----

export interface SentinelSetup {
  /** redis-sentinel://127.0.0.1:<sentinel port>/<name> */
  readonly url: string;
  readonly name: string;
  readonly sentinelPort: number;
  readonly master: PrivateRedis;
  /** present when started with `replica: true` */
  readonly replica: PrivateRedis | null;
  /** the master's port as the sentinel names it right now */
  currentMasterPort(): Promise<number | null>;
  /** SENTINEL FAILOVER (retried while the sentinel has no usable replica yet) and wait until the
   *  sentinel names the replica as master; bounded by `boundMs` */
  failover(boundMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A master (+ an optional replica) and one sentinel monitoring it with quorum 1, on random
 * loopback ports. The replica is online before the sentinel starts, so the sentinel's first INFO
 * of the master already lists it (otherwise it would learn of it only 10 s later).
 */
export async function startSentinelSetup(o: { replica?: boolean; readyMs?: number; name?: string; sentinelPort?: number } = {}): Promise<SentinelSetup> {
  const readyMs = o.readyMs ?? 5000;
  const name = o.name ?? 'sipedge';
  // diskless full sync starts at once (Redis 7 otherwise waits 5 s for more replicas to join)
  const master = await startPrivateRedis(readyMs, ['--repl-diskless-sync-delay', '0']);
  let replica: PrivateRedis | null = null;
  let sentinel: ChildProcess | null = null;
  const dir = tmpDir('sentinel');
  const stop = async (): Promise<void> => {
    if (sentinel !== null) await killChild(sentinel);
    if (replica !== null) await replica.kill();
    await master.kill();
    removeTmp(dir);
  };
  try {
    if (o.replica === true) {
      replica = await startPrivateRedis(readyMs, ['--replicaof', '127.0.0.1', String(master.port)]);
      const online = await waitFor(async () => {
        const info = await redisCommand(master.port, ['INFO', 'replication']);
        return typeof info === 'string' && /slave0:.*state=online/.test(info);
      }, readyMs, 50);
      if (!online) throw new Error('the replica did not come online');
    }
    const sentinelPort = o.sentinelPort ?? (await freePort('tcp'));
    const conf = path.join(dir, 'sentinel.conf');
    fs.writeFileSync(
      conf,
      [
        `port ${sentinelPort}`,
        'bind 127.0.0.1',
        `dir ${dir}`,
        `sentinel monitor ${name} 127.0.0.1 ${master.port} 1`,
        `sentinel down-after-milliseconds ${name} 1000`,
        `sentinel failover-timeout ${name} 5000`,
        `sentinel parallel-syncs ${name} 1`,
        '',
      ].join('\n'),
    );
    sentinel = await launchProcess([conf, '--sentinel', '--daemonize', 'no', '--loglevel', 'notice'], `redis-sentinel on port ${sentinelPort}`, readyMs, '+monitor master');
    const currentMasterPort = async (): Promise<number | null> => {
      const r = await redisCommand(sentinelPort, ['SENTINEL', 'get-master-addr-by-name', name]);
      return Array.isArray(r) && r.length === 2 ? Number(r[1]) : null;
    };
    return {
      url: `redis-sentinel://127.0.0.1:${sentinelPort}/${name}`,
      name,
      sentinelPort,
      master,
      replica,
      currentMasterPort,
      async failover(boundMs = 15_000) {
        if (replica === null) throw new Error('failover needs the replica');
        const end = Date.now() + boundMs;
        let last: unknown = null;
        for (;;) {
          last = await redisCommand(sentinelPort, ['SENTINEL', 'FAILOVER', name]);
          if (last === 'OK') break;
          // NOGOODSLAVE until the sentinel has a fresh INFO of the replica
          if (Date.now() >= end) throw new Error(`SENTINEL FAILOVER kept failing: ${String(last)}`);
          await new Promise((r) => setTimeout(r, 250));
        }
        const rp = replica.port;
        if (!(await waitFor(async () => (await currentMasterPort()) === rp, Math.max(1000, end - Date.now()), 100))) {
          throw new Error('the sentinel did not switch to the replica in time');
        }
      },
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

// ---- Cluster ----

export interface ClusterSetup {
  /** redis-cluster://127.0.0.1:<p1>,127.0.0.1:<p2>,... */
  readonly url: string;
  readonly ports: readonly number[];
  stop(): Promise<void>;
}

function execBounded(cmd: string, args: string[], timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : null;
      resolve({ code, out: `${stdout}${stderr}` });
    });
  });
}

/**
 * `n` (default 3) masters without replicas, slots spread by `redis-cli --cluster create`, and
 * every node reporting cluster_state:ok before this resolves. Bounded by `readyMs` per step.
 * `fixedPorts` (n of them) instead of fresh ones: a client may already be trying them.
 */
export async function startRedisCluster(n = 3, readyMs = 10_000, fixedPorts?: readonly number[]): Promise<ClusterSetup> {
  const dir = tmpDir('cluster');
  const ports = fixedPorts !== undefined ? [...fixedPorts] : await freePorts(n, 'tcp');
  const children: ChildProcess[] = [];
  const stop = async (): Promise<void> => {
    await Promise.all(children.map((c) => killChild(c)));
    removeTmp(dir);
  };
  try {
    const started = await Promise.all(
      ports.map((p) =>
        launchProcess(
          ['--port', String(p), '--bind', '127.0.0.1', ...EPHEMERAL, '--dir', dir, '--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, `nodes-${p}.conf`), '--cluster-node-timeout', '2000'],
          `cluster node on port ${p}`,
          readyMs,
        ),
      ),
    );
    children.push(...started);
    const r = await execBounded('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], readyMs);
    if (r.code !== 0) throw new Error(`redis-cli --cluster create failed (${r.code}):\n${r.out.slice(-2000)}`);
    for (const p of ports) {
      const ok = await waitFor(async () => {
        const info = await redisCommand(p, ['CLUSTER', 'INFO']);
        return typeof info === 'string' && info.includes('cluster_state:ok');
      }, readyMs, 50);
      if (!ok) throw new Error(`cluster node ${p} did not reach cluster_state:ok`);
    }
    return { url: `redis-cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}`, ports, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** Settles within `ms` or throws: bounds a call that must not hang. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, bound]);
  } finally {
    clearTimeout(timer);
  }
}
