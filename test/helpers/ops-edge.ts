// A spawned edge (`node dist/edge/cli.js run`) set up the way the operator tools see it: the shipped
// rule files (scanner signatures, suspicion budgets and bans as shipped), edge authentication with
// a users file and a short lockout, an admin listener, optionally Redis; plus the traffic that makes
// it write ban and lockout lines. For the fail2ban and Prometheus tests (test/ops-*.test.ts).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { childSet } from './children';
import { answerChallenge, AUTH_SECRET, upsertUsers } from './auth-edge';
import { defaultEdgeCli, startEdge, type EdgeProc } from './edge-proc';
import { REPO_ROOT } from './sipp';
import { UdpPeer, header, request, response, uniq } from './udp-peer';

export const REALM = 'example.com';
/** the user an attacker guesses the password of */
export const VICTIM = '1001';
/** failed answers for one user before the lockout (auth.lockout.failures) */
export const LOCKOUT_FAILURES = 3;

const inCi = process.env.CI === 'true';
const children = childSet();

/** Path of a Debian tool, or null. */
export function which(tool: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':').concat(['/usr/sbin', '/usr/bin', '/sbin'])) {
    const p = path.join(dir, tool);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return null;
}

/** node:test `skip` value for a test that needs `tools`: a reason locally, never under CI=true
 *  (there the test runs and fails on the missing tool). */
export function skipUnless(tools: readonly string[], pkg: string): string | false {
  const missing = tools.filter((t) => which(t) === null);
  if (missing.length === 0 || inCi) return false;
  return `${missing.join(', ')} not installed (Debian package ${pkg}; CI=true makes this a failure)`;
}

export function requireTool(tool: string, pkg: string): string {
  const p = which(tool);
  assert.ok(p, `${tool} is not installed (Debian package ${pkg})`);
  return p;
}

/** Whether this machine can bind UDP on ::1 (IPv6 loopback). */
export function ipv6Loopback(): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp6');
    s.once('error', () => { s.close(); resolve(false); });
    s.bind(0, '::1', () => s.close(() => resolve(true)));
  });
}

/** Run a command with a time bound; never throws. */
export function run(cmd: string, args: readonly string[], o: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { env: o.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    children.track(c);
    let out = '';
    let err = '';
    c.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    c.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    c.stdin.on('error', () => { /* the tool may exit before reading all of it */ });
    c.stdin.end(o.input ?? '');
    const t = setTimeout(() => c.kill('SIGKILL'), o.timeoutMs ?? 30_000);
    c.once('error', (e) => { clearTimeout(t); resolve({ code: null, out, err: err + e.message }); });
    c.once('close', (code) => { clearTimeout(t); resolve({ code, out, err }); });
  });
}

export interface OpsEdgeOptions {
  /** TZ of the edge process (its log times must not depend on it) */
  readonly tz?: string;
  /** also listen on udp:[::1]:0 */
  readonly ipv6?: boolean;
  readonly redisUrl?: string;
  /** the PBX the edge forwards to and probes */
  readonly upstreamPort: number;
}

export interface OpsEdge {
  readonly proc: EdgeProc;
  readonly dir: string;
  /** http://127.0.0.1:PORT of the admin listener */
  readonly admin: string;
  readonly udp: number;
  readonly udp6?: number;
  readonly tcp: number;
  /** the edge's stdout lines (JSON) so far, as an operator's log file would hold them */
  logFile(): string;
  scrape(): Promise<string>;
  stop(): Promise<void>;
}

/**
 * Config directory: the shipped rules (limits.yaml with ipv6Prefix 128, so a ban of ::1 is the
 * address, not "::/64"), a users file, and edge.yaml naming both.
 */
function writeConfig(o: OpsEdgeOptions): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-ops-'));
  const rules = path.join(dir, 'rules');
  fs.mkdirSync(rules);
  for (const f of fs.readdirSync(path.join(REPO_ROOT, 'rules'))) {
    if (f.endsWith('.yaml')) fs.copyFileSync(path.join(REPO_ROOT, 'rules', f), path.join(rules, f));
  }
  const limitsFile = path.join(rules, 'limits.yaml');
  const limits = fs.readFileSync(limitsFile, 'utf8');
  assert.match(limits, /^ipv6Prefix: 64$/m, 'rules/limits.yaml changed: update the ops test helper');
  fs.writeFileSync(limitsFile, limits.replace(/^ipv6Prefix: 64$/m, 'ipv6Prefix: 128'));
  upsertUsers(path.join(dir, 'users.txt'), REALM, { [VICTIM]: 'the real secret' }, ['SHA-256']);
  fs.writeFileSync(path.join(dir, 'edge.yaml'), [
    'rules: rules',
    `domains: [${REALM}]`,
    'auth:',
    '  users: users.txt',
    `  realm: ${REALM}`,
    '  algorithms: [SHA-256]',
    `  lockout: {failures: ${LOCKOUT_FAILURES}, seconds: 900}`,
    // the PBX stand-in answers every probe; generous timeouts so that a loaded test machine never
    // takes it for down (readiness must change only when the test kills Redis)
    'health: {intervalMs: 1000, timeoutMs: 1000, failuresBeforeDown: 3, retryAfterSeconds: 30}',
    // T1 50 ms: transactions end (Timer J = 64*T1) within seconds, not half a minute
    'transactions: {t1Ms: 50, t2Ms: 400, t4Ms: 500}',
    'warmUpCalls: 0',
    `redis: ${o.redisUrl ? JSON.stringify(o.redisUrl) : 'null'}`,
    '',
  ].join('\n'));
  return dir;
}

export async function startOpsEdge(o: OpsEdgeOptions): Promise<OpsEdge> {
  const dir = writeConfig(o);
  const listen = ['udp:127.0.0.1:0', 'tcp:127.0.0.1:0', ...(o.ipv6 ? ['udp:[::1]:0'] : [])];
  const proc = await startEdge({
    listen,
    upstream: [`udp:127.0.0.2:${o.upstreamPort}`],
    extraArgs: ['--config', path.join(dir, 'edge.yaml')],
    env: { ...process.env, SIPEDGE_AUTH_SECRET: AUTH_SECRET, ...(o.tz ? { TZ: o.tz } : {}) },
  });
  assert.ok(proc.metricsPort, 'the edge announced its admin port');
  const udp6 = proc.listeners.find((l) => l.transport === 'udp' && l.address === '::1')?.port;
  const admin = `http://127.0.0.1:${proc.metricsPort}`;
  return {
    proc,
    dir,
    admin,
    udp: proc.listeners.find((l) => l.transport === 'udp' && l.address === '127.0.0.1')!.port,
    ...(udp6 !== undefined ? { udp6 } : {}),
    tcp: proc.ports.tcp!,
    logFile() {
      const f = path.join(dir, 'edge.log');
      fs.writeFileSync(f, proc.logs().filter((l) => l.startsWith('{')).map((l) => `${l}\n`).join(''));
      return f;
    },
    async scrape() {
      const res = await fetch(`${admin}/metrics`);
      assert.equal(res.status, 200);
      return res.text();
    },
    async stop() {
      await proc.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A PBX stand-in on 127.0.0.2 that answers every request (health probes included) with 200. */
export async function pbx200(): Promise<UdpPeer> {
  const pbx = await UdpPeer.bind('127.0.0.2');
  pbx.sock.on('message', (b, rinfo) => {
    const t = b.toString('latin1');
    if (/^(ACK|SIP\/2\.0)/.test(t)) return;
    pbx.sock.send(response(t, 200, 'OK', { toTag: 'pbx' }), rinfo.port, rinfo.address);
  });
  return pbx;
}

/** security lines with sec=kind so far */
export function securityLines(edge: OpsEdge, kind: string): Record<string, unknown>[] {
  return edge.proc.records().filter((r) => r.sec === kind);
}

export async function waitFor(pred: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!(await pred())) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * SIPVicious' calling card from `peer` until the edge bans the source (the shipped scanner
 * signature spends 5 of the 20 suspicion points per hit). Bounded: at most 12 requests.
 */
export async function scanUntilBanned(edge: OpsEdge, peer: UdpPeer, port: number, edgeAddress: string, key: string): Promise<void> {
  const banned = (): boolean => securityLines(edge, 'ban').some((r) => r.src === key);
  // RFC 3261 25.1: an IPv6 reference in Via and Contact is bracketed
  const self = { address: peer.address.includes(':') ? `[${peer.address}]` : peer.address, port: peer.port };
  for (let i = 0; i < 12 && !banned(); i++) {
    await peer.send(request(self, { method: 'OPTIONS', ruri: `sip:100@${REALM}`, extra: ['User-Agent: friendly-scanner'] }), port, edgeAddress);
    await new Promise((r) => setTimeout(r, 30));
  }
  await waitFor(banned, 3000, `ban line for ${key}`);
}

/**
 * svcrack's job done by hand from `peer`: REGISTER as VICTIM, answer each challenge with a wrong
 * password, until the edge locks the user (LOCKOUT_FAILURES wrong answers).
 */
export async function bruteForceUntilLocked(edge: OpsEdge, peer: UdpPeer): Promise<void> {
  for (let i = 0; i < LOCKOUT_FAILURES + 1 && securityLines(edge, 'auth_lockout').length === 0; i++) {
    const reg = { method: 'REGISTER', ruri: `sip:${REALM}`, from: `<sip:${VICTIM}@${REALM}>`, to: `<sip:${VICTIM}@${REALM}>`, callId: uniq('bf') };
    await peer.send(request(peer, reg), edge.udp);
    const ch = await peer.wait((m) => m.text.startsWith('SIP/2.0 401') && header(m.text, 'Call-ID') === reg.callId && header(m.text, 'CSeq')!.startsWith('1 '), 5000);
    const auth = answerChallenge(401, header(ch.text, 'WWW-Authenticate')!, { method: 'REGISTER', uri: `sip:${REALM}`, user: VICTIM, password: `guess number ${i}` });
    await peer.send(request(peer, { ...reg, cseq: 2, extra: [auth] }), edge.udp);
    await peer.wait((m) => m.text.startsWith('SIP/2.0 ') && header(m.text, 'Call-ID') === reg.callId && header(m.text, 'CSeq')!.startsWith('2 '), 5000);
  }
  await waitFor(() => securityLines(edge, 'auth_lockout').length > 0, 3000, 'auth_lockout line');
}

/** `sip-edge bans ...` against the running edge's admin listener, as an operator types it */
export async function bansCli(edge: OpsEdge, ...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return run(process.execPath, [defaultEdgeCli(), 'bans', ...args, '--no-config', '--upstream', 'udp:127.0.0.2:5999', '--metrics', edge.admin.replace('http://', '')], { timeoutMs: 15_000 });
}

/** does `tool --version` run */
export function runs(tool: string, args: readonly string[] = ['--version']): boolean {
  return spawnSync(tool, args, { timeout: 10_000 }).status === 0;
}
