// An in-process edge set up for authentication proofs: the production rule loader and wiring
// (startEdge) with a rules directory that holds only sanity, ratelimit, ping, auth and userlimit
// (no scanner stage:
// it would drop SIPVicious on its User-Agent at once, and these tests must show that the AUTH
// defences hold on their own), a copy of the shipped rules/limits.yaml with chosen weights, a users
// file written with the project's own users-file code, and a PBX stand-in (registrar.ts) behind it.
// Also: a bounded runner for the SIPVicious tools and an in-process digest "phone".
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import pino from 'pino';
import { ha1, responseFor, type DigestAlgorithm } from '../../edge/auth/digest';
import { USERS_FILE_HEADER, formatUserLine, upsertUser } from '../../edge/auth/users';
import type { AuthAlgorithm, AuthConfig, AuthDomainPolicy, ResolvedConfig } from '../../edge/config/types';
import { startEdge, type EdgeHandle } from '../../edge/edge';
import { RulesHolder } from '../../edge/policy/reload';
import { childSet } from './children';
import { testConfig } from './config';
import { Registrar, type RegistrarOptions } from './registrar';
import { REPO_ROOT } from './sipp';

export const AUTH_SECRET = '7f3a9c1e5b2d8f4a6c0e9b7d3f1a5c8e';
const silent = pino({ level: 'silent' });

/** Suspicion weights (rules/limits.yaml `weights`) a test overrides; the rest stay as shipped. */
export type Weights = Partial<Record<'malformed' | 'scanner' | 'unmatched_reply' | 'auth_failure' | 'missing_auth' | 'unknown_user' | 'enumeration' | 'flood', number>>;

/** limits.yaml budgets a test sets (points per the shipped window) */
export interface LimitOverrides { readonly userInvite?: number; readonly aorRegister?: number }

/**
 * A rules directory: stages.yaml with sanity, ratelimit, ping, auth and userlimit enforcing
 * (`authMode` for auth), and the shipped limits.yaml with `weights` and `limits` replaced. A
 * replacement that finds nothing to replace fails loudly: a changed shipped file must not silently
 * turn a control run into a real one.
 */
export function authRulesDir(o: { weights?: Weights; authMode?: 'enforce' | 'shadow' | 'off'; aorRegister?: boolean; limits?: LimitOverrides; shippedClients?: boolean } = {}): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-authrules-'));
  fs.writeFileSync(path.join(dir, 'stages.yaml'),
    'stages:\n  - {name: sanity, mode: enforce}\n  - {name: ratelimit, mode: enforce}\n  - {name: ping, mode: enforce}\n'
    + `  - {name: auth, mode: ${o.authMode ?? 'enforce'}}\n  - {name: userlimit, mode: enforce}\ntrustedSkip: [ratelimit, auth, userlimit]\n`);
  let limits = fs.readFileSync(path.join(REPO_ROOT, 'rules/limits.yaml'), 'utf8');
  for (const [name, w] of Object.entries(o.weights ?? {})) {
    const re = new RegExp(`^(\\s+${name}:\\s*)\\d+`, 'm');
    assert.match(limits, re, `rules/limits.yaml has no weight ${name}`);
    limits = limits.replace(re, `$1${w}`);
  }
  for (const [name, limit] of Object.entries(o.limits ?? {})) {
    const re = new RegExp(`^(${name}:\\s*\\{\\s*enabled:\\s*true,\\s*limit:\\s*)\\d+`, 'm');
    assert.match(limits, re, `rules/limits.yaml has no ${name} line`);
    limits = limits.replace(re, `$1${limit}`);
  }
  if (o.aorRegister === false) {
    // the per-AOR REGISTER limit (20 per minute) would stop a password guesser on its own;
    // turned off where a test must show what the AUTH defences do by themselves
    const re = /^aorRegister:\s*\{\s*enabled:\s*true/m;
    assert.match(limits, re, 'rules/limits.yaml has no aorRegister line');
    limits = limits.replace(re, 'aorRegister: { enabled: false');
  }
  fs.writeFileSync(path.join(dir, 'limits.yaml'), limits);
  // the shipped digest challenge profiles; without them every client gets the policy's algorithms
  if (o.shippedClients === true) fs.copyFileSync(path.join(REPO_ROOT, 'rules/auth-clients.yaml'), path.join(dir, 'auth-clients.yaml'));
  return dir;
}

/** Write a users file for `users` (user -> password) in one go, in the format `sip-edge passwd`
 *  writes (formatUserLine); mode 0600 like upsertUser. For a handful of users prefer upsertUser. */
export function writeUsersFile(file: string, realm: string, users: Readonly<Record<string, string>>, algs: readonly DigestAlgorithm[]): void {
  const lines = [USERS_FILE_HEADER];
  for (const [u, p] of Object.entries(users)) {
    const h: Partial<Record<DigestAlgorithm, string>> = {};
    for (const a of algs) h[a] = ha1(a, u, realm, p);
    lines.push(formatUserLine(u, realm, h));
  }
  fs.writeFileSync(file, `${lines.join('\n')}\n`, { mode: 0o600 });
}

/** upsertUser for each user (the `sip-edge passwd` code path), asserting every write succeeded */
export function upsertUsers(file: string, realm: string, users: Readonly<Record<string, string>>, algs: readonly DigestAlgorithm[]): void {
  for (const [u, p] of Object.entries(users)) {
    const r = upsertUser(file, u, realm, p, algs);
    assert.ok(r.ok, r.ok ? '' : r.errors.join('\n'));
  }
}

/** An AuthConfig whose fallback policy (the edge's own addresses and served domains without an
 *  entry) is `mode` with `realm`. */
export function authConfig(o: {
  mode: 'edge' | 'pbx' | 'off';
  realm: string;
  usersFile?: string;
  algorithms?: readonly AuthAlgorithm[];
  identity?: 'strip' | 'assert';
  pbxRewrite?: AuthDomainPolicy['pbxRewrite'];
  lockout?: { failures: number; seconds: number };
  enumeration?: { users: number; seconds: number };
}): AuthConfig {
  const fallback: AuthDomainPolicy = {
    name: '*', mode: o.mode, realm: o.realm,
    ...(o.usersFile !== undefined ? { usersFile: o.usersFile } : {}),
    algorithms: o.algorithms ?? ['SHA-256', 'MD5'], qop: ['auth'], matchFrom: true, forwardCredentials: false,
    identity: o.identity ?? 'strip', pbxRewrite: o.pbxRewrite ?? 'challenge',
  };
  return {
    secret: AUTH_SECRET, nonceSeconds: 300,
    lockout: o.lockout ?? { failures: 10, seconds: 900 },
    enumeration: o.enumeration ?? { users: 10, seconds: 60 },
    domains: [], fallback,
  };
}

export interface AuthEdge {
  readonly edge: EdgeHandle;
  /** the edge's UDP port on 127.0.0.1 */
  readonly port: number;
  readonly pbx: Registrar;
  readonly dir: string;
  close(): Promise<void>;
}

/**
 * startEdge (in-process, production wiring, in-memory store) with `auth`, the rules of
 * authRulesDir(), and a Registrar on 127.0.0.2 as the only upstream.
 */
export async function startAuthEdge(o: {
  auth: (dir: string) => AuthConfig;
  weights?: Weights;
  authMode?: 'enforce' | 'shadow' | 'off';
  aorRegister?: boolean;
  limits?: LimitOverrides;
  /** copy the shipped rules/auth-clients.yaml into the rules (default: no client profiles) */
  shippedClients?: boolean;
  registrar?: RegistrarOptions;
  cfg?: Partial<ResolvedConfig>;
}): Promise<AuthEdge> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-authedge-'));
  const rulesDir = authRulesDir({ weights: o.weights, authMode: o.authMode, aorRegister: o.aorRegister, limits: o.limits, shippedClients: o.shippedClients });
  const pbx = await Registrar.start(o.registrar);
  let edge: EdgeHandle | undefined;
  try {
    const rules = new RulesHolder(rulesDir);
    edge = await startEdge(testConfig({
      upstreams: [{ transport: 'udp', host: pbx.address, port: pbx.port }],
      auth: o.auth(dir),
      ...o.cfg,
    }), silent, { rules, watchRules: false });
  } catch (e) {
    pbx.close();
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(rulesDir, { recursive: true, force: true });
    throw e;
  }
  const e = edge;
  return {
    edge: e, port: e.listeners[0]!.port, pbx, dir,
    async close() {
      await e.close(0);
      pbx.close();
      fs.rmSync(dir, { recursive: true, force: true });
      fs.rmSync(rulesDir, { recursive: true, force: true });
    },
  };
}

// ------------------------------------------------------------------ SIPVicious

export interface ToolRun { readonly code: number | null; readonly out: string; readonly ms: number; readonly killed: boolean }

const tools = childSet();

/** is a SIPVicious tool runnable here? */
export function toolAvailable(bin: string): boolean {
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  return r.error === undefined && r.status === 0;
}

/** Runs a tool to completion, bounded: SIGKILLed (its own process only) after `ms`.
 *  stdout and stderr together, capped at 1 MB. */
export function runTool(bin: string, args: readonly string[], ms: number, stdin?: string): Promise<ToolRun> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const child = spawn(bin, [...args], { stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    tools.track(child);
    let out = '';
    let killed = false;
    const add = (b: Buffer): void => { if (out.length < 1_000_000) out += b.toString('utf8'); };
    child.stdout?.on('data', add);
    child.stderr?.on('data', add);
    if (stdin !== undefined) child.stdin?.end(stdin);
    const timer = setTimeout(() => { killed = true; child.kill('SIGKILL'); }, ms);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, out, ms: Date.now() - t0, killed }); });
  });
}

/**
 * The rows of a SIPVicious result table (pptable: `| Extension | Authentication |`, `| Extension |
 * Password |`): [first column, second column] per data row, header excluded.
 */
export function resultRows(out: string): Array<[string, string]> {
  const rows: Array<[string, string]> = [];
  for (const line of out.split(/\r?\n/)) {
    const m = /^\|\s*([^|]*?)\s*\|\s*([^|]*?)\s*\|\s*$/.exec(line);
    if (m === null || m[1] === 'Extension') continue;
    rows.push([m[1]!, m[2]!]);
  }
  return rows;
}

// ------------------------------------------------------------------ a digest phone

/** The parameters of one challenge header value (`Digest realm="x", nonce="y", ...`). */
export function challengeParams(value: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const x of value.matchAll(/(\w+)=(?:"([^"]*)"|([^,\s]*))/g)) m.set(x[1]!.toLowerCase(), x[2] ?? x[3]!);
  return m;
}

/**
 * The credentials header line answering `challenge` (a WWW-/Proxy-Authenticate value) for
 * `method` `uri` as `user`/`password`, qop=auth, nc=00000001 (RFC 7616 3.4; RFC 3261 22.2 picks
 * Authorization for a 401, Proxy-Authorization for a 407).
 */
export function answerChallenge(status: 401 | 407, challenge: string, o: { method: string; uri: string; user: string; password: string; cnonce?: string }): string {
  const p = challengeParams(challenge);
  const alg = (p.get('algorithm') ?? 'MD5').toUpperCase() as DigestAlgorithm;
  const realm = p.get('realm') ?? '';
  const nonce = p.get('nonce') ?? '';
  const cnonce = o.cnonce ?? Math.random().toString(36).slice(2, 12);
  const response = responseFor(alg, ha1(alg, o.user, realm, o.password), { method: o.method, uri: o.uri, nonce, nc: '00000001', cnonce, qop: 'auth' });
  const name = status === 401 ? 'Authorization' : 'Proxy-Authorization';
  return `${name}: Digest username="${o.user}", realm="${realm}", nonce="${nonce}", uri="${o.uri}", response="${response}", algorithm=${alg}, qop=auth, nc=00000001, cnonce="${cnonce}"`;
}

/** polls `pred` every 10 ms until it holds; throws after `ms` */
export async function until(pred: () => boolean | Promise<boolean>, ms: number, what = 'condition'): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    if (await pred()) return Date.now() - t0;
    if (Date.now() - t0 >= ms) throw new Error(`${what} not met within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
