// Cost per request of edge digest authentication, through the whole edge in-process (sockets
// replaced by a hook, like bench/proxy-core.ts): run `node dist/bench/auth.js [--requests 20000]`.
//
// Paths, each a REGISTER from an outside phone, timed from inject() to the edge's send:
//   forward        the auth stage off: the request is forwarded (the floor every request pays)
//   challenge      no credentials: 401 with one challenge per algorithm (SHA-256, MD5)
//   verify SHA-256 / verify MD5   right credentials: verified, nonce-count spent, forwarded
//   wrong password / unknown user the same 401 as a challenge after a verification that fails
// wrong and unknown are measured interleaved (one of each in turn), so drift hits both alike:
// their ratio is the anti-enumeration timing claim of edge/auth/verify.ts (an unknown user is
// checked against a dummy HA1, the same hashes as a known one): it should be ~1.0.
//
// Production wiring (startEdge, memory store, metrics on), stages sanity + auth only: the rate
// limits are the ratelimit stage's cost, measured elsewhere. Each path has its own 10.K.0.0/16 of
// sources, walked in order, so no source reaches its suspicion budget (a ban would drop it at the
// gate and the bench would measure the gate) and no path runs on sources another path promoted
// (a success promotes its source, which then skips some bookkeeping). Nonces are minted with
// the edge's secret (DigestVerifier is deterministic in it), one per request, as phones get them
// from challenges.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import pino from 'pino';
import { type DigestAlgorithm, ha1 } from '../edge/auth/digest';
import { USERS_FILE_HEADER, formatUserLine } from '../edge/auth/users';
import { DigestVerifier } from '../edge/auth/verify';
import { ManualClock } from '../edge/clock';
import type { AuthConfig, AuthDomainPolicy } from '../edge/config/types';
import { startEdge, type EdgeHandle } from '../edge/edge';
import type { Endpoint } from '../edge/sip/types';
import { RulesHolder } from '../edge/policy/reload';
import { answerChallenge } from '../test/helpers/auth-edge';
import { testConfig } from '../test/helpers/config';

const argv = process.argv.slice(2);
const requests = Math.min(1_000_000, Number(argv[argv.indexOf('--requests') + 1] ?? 0) || 20_000);
const WARMUP = 2_000;
const DOMAIN = 'bench.example';
const SECRET = 'b3nch-4uth-s3cret-9f8e7d6c5b4a3210';
const USERS = 200;

const policy: AuthDomainPolicy = {
  name: '*', mode: 'edge', realm: DOMAIN, usersFile: '', algorithms: ['SHA-256', 'MD5'], qop: ['auth'],
  matchFrom: true, forwardCredentials: false, identity: 'strip', pbxRewrite: 'challenge',
};

const tmpDirs: string[] = [];

function rulesDir(auth: 'enforce' | 'off'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-auth-bench-'));
  tmpDirs.push(dir);
  fs.writeFileSync(path.join(dir, 'stages.yaml'), `stages:\n  - { name: sanity, mode: enforce }\n  - { name: auth, mode: ${auth} }\ntrustedSkip: []\n`);
  return dir;
}

/** the i-th source of path `k`: 10.k.0.0/16 walked in order */
function source(k: number, i: number, port: number): Endpoint {
  return { transport: 'udp', address: `10.${k}.${(i >> 8) & 255}.${i & 255}`, port: 5060, listenerId: `udp:127.0.0.1:${port}` };
}

function register(user: string, i: number, src: Endpoint, auth?: string): Buffer {
  return Buffer.from([
    `REGISTER sip:${DOMAIN} SIP/2.0`,
    `Via: SIP/2.0/UDP ${src.address}:5060;branch=z9hG4bK-bench-${i};rport`,
    'Max-Forwards: 70',
    `From: <sip:${user}@${DOMAIN}>;tag=t${i}`,
    `To: <sip:${user}@${DOMAIN}>`,
    `Call-ID: bench-${i}@${src.address}`,
    `CSeq: ${auth ? 2 : 1} REGISTER`,
    `Contact: <sip:${user}@${src.address}:5060>`,
    'Expires: 3600',
    'User-Agent: Yealink SIP-T46U 108.86.0.20',
    ...(auth ? [auth] : []),
    'Content-Length: 0',
    '', '',
  ].join('\r\n'), 'latin1');
}

interface Timed { mean: number; p50: number; p99: number }

function summary(us: number[]): Timed {
  const s = [...us].sort((a, b) => a - b);
  const at = (q: number): number => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
  return { mean: s.reduce((a, b) => a + b, 0) / s.length, p50: at(0.5), p99: at(0.99) };
}

interface Harness {
  readonly edge: EdgeHandle;
  readonly port: number;
  /** µs from inject to the edge's next send; the forwarded request is answered 200 (untimed) */
  one(bytes: Buffer, src: Endpoint): Promise<{ us: number; sent: Buffer }>;
}

async function harness(usersFile: string, auth: 'enforce' | 'off'): Promise<Harness> {
  const cfgAuth: AuthConfig = {
    secret: SECRET, nonceSeconds: 300,
    // the lockout stays on (the wrong-password path does its bookkeeping as in production)
    lockout: { failures: 10, seconds: 900 }, enumeration: { users: 10, seconds: 60 },
    domains: [], fallback: { ...policy, usersFile },
  };
  const edge = await startEdge(testConfig({
    domains: [DOMAIN],
    upstreams: [{ transport: 'udp', host: '127.0.0.2', port: 5080 }],
    transactions: { max: 100_000, memoryBudgetMB: 1024, t1Ms: 500, t2Ms: 4000, t4Ms: 5000 },
    auth: cfgAuth,
  }), pino({ level: 'silent' }), { clock: new ManualClock(), rules: new RulesHolder(rulesDir(auth)), watchRules: false });
  const port = edge.listeners[0]!.port;
  const l = (edge.proxy as unknown as { wire: { listeners: Array<{ send: (d: Endpoint, b: Buffer) => boolean }> } }).wire.listeners[0]!;
  let hook: ((b: Buffer) => void) | null = null;
  l.send = (_d, b) => { const h = hook; hook = null; h?.(b); return true; };
  const pbx: Endpoint = { transport: 'udp', address: '127.0.0.2', port: 5080, listenerId: `udp:127.0.0.1:${port}` };
  return {
    edge, port,
    async one(bytes, src) {
      let t1 = 0;
      let sent: Buffer | undefined;
      const done = new Promise<void>((res) => { hook = (b) => { t1 = performance.now(); sent = b; res(); }; });
      const t0 = performance.now();
      edge.inject({ bytes, source: src, receivedAt: t0 });
      await done;
      const out = sent!;
      if (out.toString('latin1', 0, 8) === 'REGISTER') {
        // complete the transaction as the PBX would (not timed): keeps the table small
        const text = out.toString('latin1');
        const vias = text.split('\r\n').filter((x) => x.startsWith('Via: '));
        const pick = (n: string): string => text.split('\r\n').find((x) => x.startsWith(`${n}: `)) ?? '';
        const ok = ['SIP/2.0 200 OK', ...vias, pick('From'), `${pick('To')};tag=pbx`, pick('Call-ID'), pick('CSeq'), 'Content-Length: 0', '', ''].join('\r\n');
        hook = () => undefined;
        edge.inject({ bytes: Buffer.from(ok, 'latin1'), source: pbx, receivedAt: performance.now() });
        hook = null;
      }
      return { us: (t1 - t0) * 1000, sent: out };
    },
  };
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-auth-bench-users-'));
  const usersFile = path.join(dir, 'users.txt');
  const lines = [USERS_FILE_HEADER];
  const password = (u: string): string => `pw-${u}-long-enough`;
  for (let i = 0; i < USERS; i++) {
    const u = `${1000 + i}`;
    const h: Partial<Record<DigestAlgorithm, string>> = { 'SHA-256': ha1('SHA-256', u, DOMAIN, password(u)), 'MD5': ha1('MD5', u, DOMAIN, password(u)) };
    lines.push(formatUserLine(u, DOMAIN, h));
  }
  fs.writeFileSync(usersFile, `${lines.join('\n')}\n`, { mode: 0o600 });
  const minter = new DigestVerifier(Buffer.from(SECRET, 'utf8'), 300);
  let seq = 0;
  /** credentials for one request: a nonce minted for this source now, answered for `user` */
  const creds = (src: Endpoint, user: string, pw: string, alg: DigestAlgorithm): string => {
    const ch = minter.challenge('REGISTER', { ...policy, usersFile }, src.address, Date.now(), false).find(([, v]) => v.includes(`algorithm=${alg}`))![1];
    return answerChallenge(401, ch, { method: 'REGISTER', uri: `sip:${DOMAIN}`, user, password: pw });
  };

  const off = await harness(usersFile, 'off');
  const on = await harness(usersFile, 'enforce');
  const expect = (got: Buffer, prefix: string, what: string): void => {
    if (got.toString('latin1', 0, prefix.length) !== prefix) throw new Error(`${what}: expected ${prefix}, got ${got.toString('latin1').split('\r\n')[0]}`);
  };

  type Path = { k: number; label: string; h: Harness; make: (j: number, src: Endpoint, i: number) => Buffer; expect: string };
  const user = (i: number): string => `${1000 + (i % (USERS / 2))}`;          // verify: users 1000-1099
  const wrongUser = (i: number): string => `${1100 + (i % (USERS / 2))}`;     // wrong password: 1100-1199
  const paths: Path[] = [
    { k: 0, label: 'forward (auth stage off)', h: off, make: (j, s, i) => register(user(j), i, s), expect: 'REGISTER' },
    { k: 1, label: 'challenge (no credentials -> 401)', h: on, make: (j, s, i) => register(user(j), i, s), expect: 'SIP/2.0 401' },
    { k: 2, label: 'verify SHA-256 (right -> forwarded)', h: on, make: (j, s, i) => register(user(j), i, s, creds(s, user(j), password(user(j)), 'SHA-256')), expect: 'REGISTER' },
    { k: 3, label: 'verify MD5 (right -> forwarded)', h: on, make: (j, s, i) => register(user(j), i, s, creds(s, user(j), password(user(j)), 'MD5')), expect: 'REGISTER' },
  ];
  const results: Record<string, Timed> = {};
  const next = [0, 0, 0, 0, 0, 0];
  const run = async (p: Path, n: number, record: boolean): Promise<number[]> => {
    const us: number[] = [];
    for (let k = 0; k < n; k++) {
      const i = seq++;
      const j = next[p.k]!++;
      const src = source(p.k, j & 0xffff, p.h.port);
      const bytes = p.make(j, src, i); // building the request (and hashing the answer) is not timed
      const r = await p.h.one(bytes, src);
      expect(r.sent, p.expect, p.label);
      if (record) us.push(r.us);
    }
    return us;
  };
  for (const p of paths) {
    await run(p, WARMUP, false);
    results[p.label] = summary(await run(p, requests, true));
  }

  // wrong password (a known user) and unknown user, interleaved
  const wrong: Path = { k: 4, label: 'wrong password (known user -> 401)', h: on, make: (j, s, i) => register(wrongUser(j), i, s, creds(s, wrongUser(j), 'not-the-password', 'SHA-256')), expect: 'SIP/2.0 401' };
  const unknown: Path = { k: 5, label: 'unknown user (-> the same 401)', h: on, make: (j, s, i) => register(`9${wrongUser(j)}`, i, s, creds(s, `9${wrongUser(j)}`, 'not-the-password', 'SHA-256')), expect: 'SIP/2.0 401' };
  for (let k = 0; k < WARMUP; k++) { await run(wrong, 1, false); await run(unknown, 1, false); }
  const w: number[] = [];
  const u: number[] = [];
  for (let k = 0; k < requests; k++) {
    w.push(...await run(wrong, 1, true));
    u.push(...await run(unknown, 1, true));
  }
  results[wrong.label] = summary(w);
  results[unknown.label] = summary(u);

  console.log(`${'path'.padEnd(40)} ${'mean us'.padStart(9)} ${'p50 us'.padStart(9)} ${'p99 us'.padStart(9)}`);
  for (const [label, t] of Object.entries(results)) {
    console.log(`${label.padEnd(40)} ${t.mean.toFixed(1).padStart(9)} ${t.p50.toFixed(1).padStart(9)} ${t.p99.toFixed(1).padStart(9)}`);
  }
  const fwd = results[paths[0]!.label]!;
  const W = results[wrong.label]!;
  const U = results[unknown.label]!;
  const m = await on.edge.metrics.metrics();
  const lockouts = /^sipedge_auth_total\{mode="edge",result="lockout"\} (\d+)/m.exec(m)?.[1];
  console.log(JSON.stringify({
    requestsPerPath: requests,
    ratioUnknownToWrong: { mean: Number((U.mean / W.mean).toFixed(3)), p50: Number((U.p50 / W.p50).toFixed(3)), p99: Number((U.p99 / W.p99).toFixed(3)) },
    ratioToForward: Object.fromEntries(Object.entries(results).map(([k, t]) => [k, Number((t.p50 / fwd.p50).toFixed(2))])),
    bans: on.edge.bans.size,
    lockouts: Number(lockouts ?? 0),
    heapMiB: Number((process.memoryUsage().heapUsed / 1048576).toFixed(1)),
  }));
  await off.edge.close(0);
  await on.edge.close(0);
  for (const d of [dir, ...tmpDirs]) fs.rmSync(d, { recursive: true, force: true });
}

void main();
