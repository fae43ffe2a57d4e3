#!/usr/bin/env node
// sip-edge command line. The pure parts (parseCli, main with injected I/O) are exported for
// tests; the bottom of the file is the only place that touches process.exit.
import { trunkSummary } from './router/trunks';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import type { ResolvedConfig } from './config/types';
import { addressRealm, authPolicies, edgeUsersFiles, loadConfig } from './config/load';
import type { CliOverrides } from './config/load';
import { isIP } from 'node:net';
import { defaultRulesDir, loadRules } from './policy/load';
import type { RulesSnapshot } from './policy/snapshot';
import { explainMessage, formatExplain } from './explain';
import { canonicalAddress, parseHostPort } from './net/address';
import { cidrErrorText, cidrKey, parseCidr } from './net/cidr';
import { createLogger } from './log';
import type { Logger } from './log';
import type { DigestAlgorithm } from './auth/digest';
import { auditOffers, offerable } from './auth/offer';
import { DIGEST_ALGORITHMS, UsersDb, checkRealm, checkUser, upsertUser } from './auth/users';
import { daysLeft, loadTlsMaterial, type TlsSettings } from './transport/tls-context';
import { fraudCommand, parseFraudArgs, type FraudCli } from './policy/cac/cli';

/** Package root: dist/edge/cli.js -> the folder holding package.json and sip-edge.yaml. */
export const PACKAGE_ROOT = path.resolve(__dirname, '../..');
export const SHIPPED_CONFIG = path.join(PACKAGE_ROOT, 'sip-edge.yaml');

export const USAGE = `Usage:
  sip-edge run   [options]   start the edge
  sip-edge check [options]   validate the configuration, the rule files and the users files;
                             every error of every file, exit 0 ok, 1 invalid
  sip-edge explain FILE.sip --source IP[:PORT] [--transport udp|tcp|tls] [options]
                             run one message through every stage without sending anything;
                             exit 0 forward, 3 reply, 4 drop or ban
  sip-edge bans list | add IP|CIDR --for DURATION [--reason TEXT] | remove IP|CIDR [--json]
  sip-edge fraud list | unlock USER [CLASS] [--json]   (fraud locks of call admission control)
                             the shared ban list (Redis from --redis or the config; without
                             Redis, the running edge's admin listener); times in ISO-8601,
                             --json: the records as stored (epoch milliseconds)
  sip-edge passwd USER [--realm REALM] [--file PATH] [--algorithms SHA-256,SHA-512-256,MD5]
                             add or replace USER in the users file (default ./users.txt,
                             created 0600); stores HA1 hashes only, never the password.
                             Password: first line of stdin, or prompted twice on a terminal.
                             Realm default: the config's auth realm / first served domain.
                             Algorithms default: all three (the edge offers those the config
                             enables)
  sip-edge --help | --version

Options (list flags may repeat; given flags replace the file's list, they do not extend it):
  --config FILE               config file (default: the shipped sip-edge.yaml)
  --no-config                 use no file: built-in defaults plus flags
  --listen PROTO:HOST:PORT    socket to bind, e.g. udp:0.0.0.0:5060, tcp:[::]:5060, tls:0.0.0.0:5061
  --upstream PROTO:HOST:PORT  PBX to forward to, e.g. udp:10.0.0.5:5060
  --domain NAME               served SIP domain
  --inside CIDR               inside (PBX side) network
  --trusted CIDR              outside peers trusted by address
  --advertise HOST[:PORT]     address to put in Via / Record-Route / Path
  --metrics HOST:PORT|off     Prometheus endpoint
  --log-level LEVEL           fatal|error|warn|info|debug|trace|silent
  --rules DIR                 rule files directory (default: the shipped rules/)
  --redis URL|off             shared state for limits and bans (default: in memory)
  --users PATH                users file for edge digest authentication (auth.users)

Signals (run): SIGTERM/SIGINT drain and stop (exit 0): /readyz answers 503 at once, new requests
get 503, live ones have shutdownGraceMs to finish, then what is pending gets 503 and its INVITE is
CANCELled upstream; a second SIGTERM/SIGINT exits at once with 128 + the signal number (143, 130).
SIGHUP re-reads the rule files, the users files and the TLS certificates (an invalid file keeps
the previous ones in force and is reported).

Environment: SIPEDGE_SECRET (flow-token HMAC secret shared by a cluster; overrides the file's
secret), SIPEDGE_AUTH_SECRET (digest nonce secret shared by a cluster; overrides auth.secret);
without them one instance uses random per-process secrets and says so in a warning.
SIPEDGE_METRICS_TOKEN: bearer token for /metrics (overrides metrics.token).
SIPEDGE_CONFIG, SIPEDGE_LISTEN, SIPEDGE_UPSTREAMS, SIPEDGE_DOMAINS, SIPEDGE_INSIDE,
SIPEDGE_TRUSTED, SIPEDGE_ADVERTISE, SIPEDGE_METRICS, SIPEDGE_LOG_LEVEL, SIPEDGE_RULES,
SIPEDGE_REDIS, SIPEDGE_USERS stand in for the matching flags (lists: comma or space separated);
a flag wins over its variable, a variable over the config file.
Exit codes: 0 ok, 1 invalid configuration or runtime failure, 2 usage error; explain: 3 reply,
4 drop or ban; run: 143 / 130 when a second SIGTERM / SIGINT cut the drain short.
`;

export type ParsedCli =
  | { readonly kind: 'help' }
  | { readonly kind: 'version' }
  | { readonly kind: 'usage_error'; readonly message: string }
  | {
      readonly kind: 'run' | 'check' | 'explain' | 'bans' | 'passwd' | 'fraud';
      /** fraud: list | unlock, the user and optional class */
      readonly fraud?: FraudCli;
      /** passwd: the user, and the realm / file / algorithms given (or defaulted) */
      readonly passwd?: { readonly user: string; readonly realm?: string; readonly file?: string; readonly algorithms: readonly DigestAlgorithm[] };
      /** bans: list | add | remove, its target, duration (s) and reason */
      readonly bans?: { readonly op: 'list' | 'add' | 'remove'; readonly key?: string; readonly seconds?: number; readonly reason?: string; readonly token?: string; readonly json?: boolean };
      /** explain: the message file, source and transport */
      readonly file?: string;
      readonly source?: string;
      readonly transport?: string;
      /** explicit --config */
      readonly configFile?: string;
      readonly noConfig: boolean;
      readonly overrides: CliOverrides;
    };

/** a parsed command (not help, version or a usage error) */
type CommandCli = Extract<ParsedCli, { readonly overrides: CliOverrides }>;

const OPTIONS = {
  config: { type: 'string' },
  'no-config': { type: 'boolean' },
  listen: { type: 'string', multiple: true },
  upstream: { type: 'string', multiple: true },
  domain: { type: 'string', multiple: true },
  inside: { type: 'string', multiple: true },
  trusted: { type: 'string', multiple: true },
  advertise: { type: 'string' },
  metrics: { type: 'string' },
  'log-level': { type: 'string' },
  rules: { type: 'string' },
  redis: { type: 'string' },
  users: { type: 'string' },
  realm: { type: 'string' },
  file: { type: 'string' },
  algorithms: { type: 'string' },
  for: { type: 'string' },
  reason: { type: 'string' },
  token: { type: 'string' },
  json: { type: 'boolean' },
  source: { type: 'string' },
  transport: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
} as const;

/** argv without node and script. Never throws. */
export function parseCli(argv: readonly string[]): ParsedCli {
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    // Node's message goes on about "--" positionals; the first sentence is what the user needs.
    return { kind: 'usage_error', message: (e as Error).message.split('. To specify')[0] };
  }
  const { values: v, positionals } = parsed;
  if (v.help === true) return { kind: 'help' };
  if (v.version === true) return { kind: 'version' };
  const [command, ...extra] = positionals;
  if (command === undefined) return { kind: 'usage_error', message: 'missing command (run, check or explain)' };
  if (command !== 'run' && command !== 'check' && command !== 'explain' && command !== 'bans' && command !== 'passwd' && command !== 'fraud') return { kind: 'usage_error', message: `unknown command "${command}"` };
  let passwd: { user: string; realm?: string; file?: string; algorithms: readonly DigestAlgorithm[] } | undefined;
  if (command === 'passwd') {
    const user = extra.shift();
    if (user === undefined) return { kind: 'usage_error', message: 'passwd needs a user name' };
    const bu = checkUser(user);
    if (bu) return { kind: 'usage_error', message: `passwd: ${JSON.stringify(user)}: ${bu[1]}` };
    if (v.realm !== undefined) {
      const br = checkRealm(v.realm);
      if (br) return { kind: 'usage_error', message: `--realm ${JSON.stringify(v.realm)}: ${br[1]}` };
    }
    if (v.file === '') return { kind: 'usage_error', message: '--file needs a file name' };
    const algorithms = v.algorithms !== undefined ? parseAlgorithms(v.algorithms) : DIGEST_ALGORITHMS;
    if (typeof algorithms === 'string') return { kind: 'usage_error', message: algorithms };
    // --users names the file the edge reads; passwd writes the one --file names
    if (v.users !== undefined) return { kind: 'usage_error', message: 'passwd takes --file PATH, not --users' };
    passwd = { user, algorithms, ...(v.realm !== undefined ? { realm: v.realm } : {}), ...(v.file !== undefined ? { file: v.file } : {}) };
  } else if (v.realm !== undefined || v.file !== undefined || v.algorithms !== undefined) {
    return { kind: 'usage_error', message: '--realm, --file and --algorithms go with passwd' };
  }
  if (v.users === '') return { kind: 'usage_error', message: '--users needs a file name' };
  let bans: { op: 'list' | 'add' | 'remove'; key?: string; seconds?: number; reason?: string; token?: string; json?: boolean } | undefined;
  if (command === 'bans') {
    const op = extra.shift();
    if (op !== 'list' && op !== 'add' && op !== 'remove') return { kind: 'usage_error', message: 'bans needs list, add or remove' };
    bans = { op, ...(v.token !== undefined ? { token: v.token } : {}), ...(v.json === true ? { json: true } : {}) };
    if (op !== 'list') {
      const key = extra.shift();
      if (key === undefined) return { kind: 'usage_error', message: `bans ${op} needs an IP or CIDR` };
      // the spelling the store and the ban cache key on, so add and remove meet whatever the case
      // or zero compression the operator typed
      const c = parseCidr(key);
      if (typeof c === 'string') return { kind: 'usage_error', message: `bans ${op}: "${key}": ${cidrErrorText(key, c)}` };
      bans.key = cidrKey(c);
    }
    if (op === 'add') {
      const seconds = parseDuration(v.for);
      if (seconds === null) return { kind: 'usage_error', message: 'bans add needs --for DURATION (e.g. 600, 10m, 2h, 1d)' };
      bans.seconds = seconds;
      bans.reason = v.reason ?? 'manual';
    }
  } else if (v.for !== undefined || v.reason !== undefined || (command !== 'fraud' && (v.token !== undefined || v.json !== undefined))) {
    return { kind: 'usage_error', message: '--for, --reason, --token and --json go with bans' };
  }
  let fraud: FraudCli | undefined;
  if (command === 'fraud') {
    const f = parseFraudArgs(extra, v.token, v.json === true);
    if (typeof f === 'string') return { kind: 'usage_error', message: f };
    fraud = f;
  }
  const file = command === 'explain' ? extra.shift() : undefined;
  if (command === 'explain' && file === undefined) return { kind: 'usage_error', message: 'explain needs a message file' };
  if (command === 'explain' && v.source === undefined) return { kind: 'usage_error', message: 'explain needs --source IP[:PORT]' };
  if (command !== 'explain' && (v.source !== undefined || v.transport !== undefined)) return { kind: 'usage_error', message: '--source and --transport go with explain' };
  if (extra.length > 0) return { kind: 'usage_error', message: `unexpected argument "${extra[0]}"` };
  if (v.config !== undefined && v['no-config'] === true) {
    return { kind: 'usage_error', message: '--config and --no-config exclude each other' };
  }
  if (v.config === '') return { kind: 'usage_error', message: '--config needs a file name' };
  const overrides: CliOverrides = {
    ...(v.listen !== undefined ? { listen: v.listen } : {}),
    ...(v.upstream !== undefined ? { upstreams: v.upstream } : {}),
    ...(v.domain !== undefined ? { domains: v.domain } : {}),
    ...(v.inside !== undefined ? { inside: v.inside } : {}),
    ...(v.trusted !== undefined ? { trusted: v.trusted } : {}),
    ...(v.advertise !== undefined ? { advertise: v.advertise } : {}),
    ...(v.metrics !== undefined ? { metrics: v.metrics === 'off' || v.metrics === 'none' ? null : v.metrics } : {}),
    ...(v['log-level'] !== undefined ? { logLevel: v['log-level'] } : {}),
    ...(v.rules !== undefined ? { rules: v.rules } : {}),
    ...(v.redis !== undefined ? { redis: v.redis === 'off' || v.redis === 'none' ? null : v.redis } : {}),
    ...(v.users !== undefined ? { users: v.users } : {}),
  };
  return {
    kind: command,
    ...(file !== undefined ? { file } : {}),
    ...(bans !== undefined ? { bans } : {}),
    ...(fraud !== undefined ? { fraud } : {}),
    ...(passwd !== undefined ? { passwd } : {}),
    ...(v.source !== undefined ? { source: v.source } : {}),
    ...(v.transport !== undefined ? { transport: v.transport } : {}),
    ...(v.config !== undefined ? { configFile: v.config } : {}),
    noConfig: v['no-config'] === true,
    overrides,
  };
}

/**
 * Environment variables that stand in for the flags: a container's or a unit file's usual
 * interface (`docker run -e SIPEDGE_LISTEN=udp:0.0.0.0:5060 ...`). A flag wins over its variable,
 * the variable over the config file. List variables take items separated by commas or spaces;
 * "off" turns metrics or Redis off as the flags do. An empty variable counts as unset.
 */
export const ENV_SETTINGS = {
  SIPEDGE_LISTEN: 'listen',
  SIPEDGE_UPSTREAMS: 'upstreams',
  SIPEDGE_DOMAINS: 'domains',
  SIPEDGE_INSIDE: 'inside',
  SIPEDGE_TRUSTED: 'trusted',
  SIPEDGE_ADVERTISE: 'advertise',
  SIPEDGE_METRICS: 'metrics',
  SIPEDGE_LOG_LEVEL: 'logLevel',
  SIPEDGE_RULES: 'rules',
  SIPEDGE_REDIS: 'redis',
  SIPEDGE_USERS: 'users',
} as const satisfies Record<string, Exclude<keyof CliOverrides, 'origin'>>;
const LIST_SETTINGS: ReadonlySet<string> = new Set(['listen', 'upstreams', 'domains', 'inside', 'trusted']);

/** The overrides and config file a command runs with: its flags over the SIPEDGE_* variables. */
export function withEnv(p: CommandCli, env: NodeJS.ProcessEnv): CommandCli {
  const fromEnv: Record<string, unknown> = {};
  const origin: Record<string, string> = {};
  for (const [name, key] of Object.entries(ENV_SETTINGS)) {
    const raw = env[name]?.trim();
    if (raw === undefined || raw === '') continue;
    origin[key] = `env ${name}`;
    if (LIST_SETTINGS.has(key)) fromEnv[key] = raw.split(/[\s,]+/).filter((x) => x !== '');
    else if ((key === 'metrics' || key === 'redis') && (raw === 'off' || raw === 'none')) fromEnv[key] = null;
    else fromEnv[key] = raw;
  }
  // a flag given on the command line keeps its own name in errors
  for (const k of Object.keys(p.overrides)) delete origin[k];
  const overrides: CliOverrides = { ...(fromEnv as CliOverrides), ...p.overrides, ...(Object.keys(origin).length > 0 ? { origin } : {}) };
  const configFile = p.configFile ?? (env.SIPEDGE_CONFIG?.trim() || undefined);
  if (p.noConfig || configFile === undefined) return { ...p, overrides };
  return { ...p, overrides, configFile };
}

/**
 * Which file to load: --config when given; none with --no-config; otherwise the shipped
 * sip-edge.yaml when it exists (flags still override it), else built-in defaults + flags.
 */
export function chooseConfigFile(p: { configFile?: string; noConfig: boolean }, shipped = SHIPPED_CONFIG): string | undefined {
  if (p.configFile !== undefined) return p.configFile;
  if (p.noConfig) return undefined;
  return fs.existsSync(shipped) ? shipped : undefined;
}

export interface EdgeHandle {
  close(graceMs: number): Promise<void>;
  readonly listeners: ReadonlyArray<{ transport: string; address: string; port: number }>;
  /** the bound admin (/metrics, /healthz, /readyz) address, when enabled */
  readonly admin?: { address: string; port: number };
  /** SIGHUP */
  reloadRules?(): unknown;
}
export type StartEdge = (cfg: ResolvedConfig, log: Logger) => Promise<EdgeHandle>;

export interface CliIo {
  out(text: string): void;
  err(text: string): void;
  env: NodeJS.ProcessEnv;
  /** where SIGTERM/SIGINT come from (process in production, an EventEmitter in tests) */
  signals: Pick<NodeJS.EventEmitter, 'on' | 'removeListener'>;
  /** edge factory; default require('./edge').startEdge */
  startEdge?: StartEdge;
  /** logger factory; default createLogger */
  logger?: (cfg: ResolvedConfig) => Logger;
  shippedConfig?: string;
  /** where `passwd` reads the password; default process.stdin */
  stdin?: PasswordInput;
}

/** the part of process.stdin that `passwd` uses */
export type PasswordInput = NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?(mode: boolean): unknown };

const defaultIo = (): CliIo => ({
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
  env: process.env,
  signals: process,
});

export function version(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

/** Dispatch; resolves to the process exit code. `run` resolves only after shutdown. */
export async function main(argv: readonly string[], io: CliIo = defaultIo()): Promise<number> {
  const parsed = parseCli(argv);
  const p = 'overrides' in parsed ? withEnv(parsed, io.env) : parsed;
  switch (p.kind) {
    case 'help':
      io.out(USAGE);
      return 0;
    case 'version':
      io.out(`sip-edge ${version()}\n`);
      return 0;
    case 'usage_error':
      io.err(`sip-edge: ${p.message}\n\n${USAGE}`);
      return 2;
    case 'check':
    case 'run':
    case 'explain':
    case 'bans':
    case 'fraud':
      break;
    case 'passwd':
      return passwdCommand(p, io);
  }
  const file = chooseConfigFile(p, io.shippedConfig ?? SHIPPED_CONFIG);
  const loaded = loadConfig({ ...(file !== undefined ? { file } : {}), overrides: p.overrides, env: io.env });
  if (p.kind === 'check') return checkCommand(loaded, file, io);
  if (!loaded.ok) {
    io.err(loaded.errors.map((e) => `${e}\n`).join(''));
    return 1;
  }
  if (p.kind === 'bans') return bansCommand(p.bans!, loaded.config, io);
  if (p.kind === 'fraud') return fraudCommand(p.fraud!, loaded.config, io);
  const rulesDir = loaded.config.rulesDir ?? defaultRulesDir();
  const rules = loadRules(rulesDir, { displayDir: path.relative(process.cwd(), rulesDir) || '.' });
  if (!rules.ok) {
    io.err(rules.errors.map((e) => `${e}\n`).join(''));
    return 1;
  }
  // users files of edge-mode domains: a broken one must show here, not at the next start
  const usersFiles = edgeUsersFiles(loaded.config.auth);
  const usersErrors = usersFiles.flatMap((f) => { const r = UsersDb.load(f); return r.ok ? [] : r.errors; });
  if (usersErrors.length > 0 && p.kind !== 'explain') {
    io.err(usersErrors.map((e) => `${e}\n`).join(''));
    return 1;
  }
  if (p.kind === 'explain') return explainCommand(p.file!, p.source!, p.transport ?? 'udp', loaded.config, rules.snapshot, io);
  return run(loaded.config, io);
}

/** Exit code after a second SIGTERM/SIGINT during the drain: 128 + the signal number (143, 130). */
export function secondSignalExitCode(signal: 'SIGTERM' | 'SIGINT'): number {
  return 128 + os.constants.signals[signal];
}

/** `sip-edge check`: the config, the rule files and the users files, every error of every file in
 *  one run (a config error does not hide a rule error, a schema error not the regex error beside
 *  it); exit 1 when there is any. */
function checkCommand(loaded: ReturnType<typeof loadConfig>, file: string | undefined, io: CliIo): number {
  const errors: string[] = loaded.ok ? [] : [...loaded.errors];
  const part = loaded.ok ? { rulesDir: loaded.config.rulesDir, auth: loaded.config.auth } : loaded.partial;
  let rulesDir: string | undefined;
  let version: string | undefined;
  let usersFiles: string[] = [];
  if (part !== undefined) {
    rulesDir = part.rulesDir ?? defaultRulesDir();
    const rules = loadRules(rulesDir, { displayDir: path.relative(process.cwd(), rulesDir) || '.' });
    if (rules.ok) version = rules.snapshot.version;
    else errors.push(...rules.errors);
    usersFiles = edgeUsersFiles(part.auth);
    const usersLoaded = new Map(usersFiles.map((f) => [f, UsersDb.load(f)] as const));
    for (const r of usersLoaded.values()) if (!r.ok) errors.push(...r.errors);
    if (rules.ok && part.auth !== undefined) {
      // challenges some users cannot answer: a warning, not an error (the edge starts with them)
      for (const w of auditOffers(part.auth, rules.snapshot.authClients, (f) => { const r = usersLoaded.get(f); return r?.ok ? r.db : undefined; })) {
        io.err(`warning: ${w.message}\n`);
      }
    }
  }
  let tlsSummary = '';
  if (loaded.ok && loaded.config.tls !== undefined && loaded.config.tls.certificates.length > 0) {
    // the TLS files the edge would load: key matches certificate, validity, names (tls-context.ts)
    const t = checkTls(loaded.config.tls, loaded.config.domains);
    errors.push(...t.errors);
    for (const w of t.warnings) io.err(`warning: ${w}\n`);
    tlsSummary = t.summary;
  }
  if (errors.length > 0 || !loaded.ok) {
    io.err(errors.map((e) => `${e}\n`).join(''));
    // say what could not be looked at, rather than let "no error" suggest it was fine
    if (part === undefined) io.err(`(rule and users files not checked: ${file ?? 'the configuration'} cannot be read far enough to say where they are)\n`);
    return 1;
  }
  const tx = loaded.config.transactions;
  io.out(`ok: ${loaded.config.configFile ?? '(built-in defaults)'}; rules ${rulesDir} version ${version}${usersFiles.length > 0 ? `; users ${usersFiles.join(', ')}` : ''}; transactions: up to ${tx.max} live (memoryBudgetMB ${tx.memoryBudgetMB})${tlsSummary}${trunkSummary(loaded.config.trunks, loaded.config.egress)}\n`);
  return 0;
}

/** Days before expiry from which `check` warns about a certificate. */
const CERT_WARN_DAYS = 30;

/** `check` on the TLS files: errors (unreadable, key of another certificate, expired, not yet
 *  valid, no name), warnings (expiring within CERT_WARN_DAYS, a served domain no certificate names). */
export function checkTls(t: TlsSettings, domains: readonly string[], now = new Date()): { errors: readonly string[]; warnings: string[]; summary: string } {
  const r = loadTlsMaterial(t, now);
  if (!r.ok) return { errors: r.errors, warnings: [], summary: '' };
  const warnings: string[] = [];
  for (const c of r.value.certs) {
    const d = daysLeft(c, now);
    if (d < CERT_WARN_DAYS) warnings.push(`${c.file}: certificate expires in ${d} day(s), on ${c.notAfter.toISOString()}`);
  }
  const covers = (d: string): boolean => r.value.certs.some((c) => c.names.some((n) => n === d || (n.startsWith('*.') && d.endsWith(n.slice(1)) && !d.slice(0, -n.length + 1).includes('.'))));
  for (const d of domains) if (!covers(d)) warnings.push(`served domain ${d}: no TLS certificate names it (clients verifying the edge as ${d} will refuse it)`);
  return { errors: [], warnings, summary: `; tls ${r.value.certs.map((c) => `${c.file} (${c.names.slice(0, 5).join(', ')}; until ${c.notAfter.toISOString().slice(0, 10)})`).join(', ')}` };
}

/** "600", "10m", "2h", "1d" -> seconds; null when invalid */
export function parseDuration(text: string | undefined): number | null {
  const m = /^(\d{1,9})([smhd]?)$/.exec(text ?? '');
  if (!m) return null;
  const n = Number(m[1]) * ({ '': 1, s: 1, m: 60, h: 3600, d: 86400 } as Record<string, number>)[m[2]!]!;
  return n > 0 && n <= 365 * 86400 ? n : null;
}

/** "SHA-256,MD5" -> the algorithms in the order given; a message when invalid */
export function parseAlgorithms(text: string): DigestAlgorithm[] | string {
  const out: DigestAlgorithm[] = [];
  for (const raw of text.split(',')) {
    const name = raw.trim();
    // the names RFC 7616 3.3 / RFC 8760 2 define; -sess variants are not offered by the edge
    const alg = DIGEST_ALGORITHMS.find((a) => a === name.toUpperCase());
    if (alg === undefined) return `--algorithms: ${JSON.stringify(name)} is not one of ${DIGEST_ALGORITHMS.join(', ')}`;
    if (out.includes(alg)) return `--algorithms: ${alg} given twice`;
    out.push(alg);
  }
  return out;
}

/** Passwords shorter than this are refused: SIP brute force (svcrack and friends) starts with
 *  short numeric and dictionary passwords, and a cracked extension is the usual way into toll fraud. */
export const MIN_PASSWORD_CHARS = 8;
const MAX_PASSWORD_CHARS = 1024;

/** Why `password` is unacceptable for `user`, or undefined. */
export function passwordProblem(user: string, password: string): string | undefined {
  if (password.length === 0) return 'empty password';
  // control characters cannot be typed on a phone's keypad or web form: a paste accident
  if (/[\u0000-\u001f\u007f]/.test(password)) return 'the password contains control characters';
  const chars = [...password].length;
  if (chars < MIN_PASSWORD_CHARS) return `the password is shorter than ${MIN_PASSWORD_CHARS} characters`;
  if (chars > MAX_PASSWORD_CHARS) return `the password is longer than ${MAX_PASSWORD_CHARS} characters`;
  // user = password is the first guess of every SIP cracker
  if (password.toLowerCase() === user.toLowerCase()) return 'the password must not be the user name';
  return undefined;
}

/**
 * Keystrokes of a no-echo prompt (the terminal is in raw mode, so editing is ours): Enter ends
 * the line, Backspace/DEL removes the last character, Ctrl-U clears, Ctrl-C cancels, Ctrl-D on
 * an empty line cancels, escape sequences (arrow keys) and other control keys are ignored.
 */
export class HiddenLineReader {
  private chars: string[] = [];
  private esc: 'none' | 'esc' | 'csi' = 'none';
  private overflow = false;

  /** feed decoded input; 'more' until the line ends */
  feed(text: string): 'more' | 'cancel' | { readonly line: string } | { readonly error: string } {
    for (const ch of text) {
      const c = ch.codePointAt(0)!;
      if (this.esc === 'esc') { this.esc = ch === '[' || ch === 'O' ? 'csi' : 'none'; continue; }
      if (this.esc === 'csi') { if (c >= 0x40 && c <= 0x7e) this.esc = 'none'; continue; }
      if (ch === '\r' || ch === '\n') {
        return this.overflow ? { error: `the password is longer than ${MAX_PASSWORD_CHARS} characters` } : { line: this.chars.join('') };
      }
      if (c === 0x03) return 'cancel';
      if (c === 0x04) { if (this.chars.length === 0) return 'cancel'; continue; }
      if (c === 0x7f || c === 0x08) { this.chars.pop(); continue; }
      if (c === 0x15) { this.chars = []; this.overflow = false; continue; }
      if (c === 0x1b) { this.esc = 'esc'; continue; }
      if (c < 0x20) continue;
      if (this.chars.length >= MAX_PASSWORD_CHARS) { this.overflow = true; continue; }
      this.chars.push(ch);
    }
    return 'more';
  }
}

/** the first line of a non-terminal stdin, trailing CR/LF removed; bounded */
function readFirstLine(input: PasswordInput): Promise<{ line: string } | { error: string }> {
  const max = MAX_PASSWORD_CHARS * 4 + 2; // UTF-8 is at most 4 bytes per character, plus CRLF
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const finish = (r: { line: string } | { error: string }): void => {
      if (settled) return;
      settled = true;
      input.removeListener('data', onData);
      input.removeListener('end', onEnd);
      input.removeListener('error', onError);
      input.pause();
      resolve(r);
    };
    const decode = (b: Buffer): { line: string } | { error: string } => {
      let end = b.length;
      while (end > 0 && (b[end - 1] === 0x0a || b[end - 1] === 0x0d)) end--;
      try {
        // a wrong byte would silently give the wrong HA1: refuse instead of replacing it
        return { line: new TextDecoder('utf-8', { fatal: true }).decode(b.subarray(0, end)) };
      } catch {
        return { error: 'the password is not valid UTF-8' };
      }
    };
    const onData = (d: Buffer | string): void => {
      const b = typeof d === 'string' ? Buffer.from(d, 'utf8') : d;
      const nl = b.indexOf(0x0a);
      if (nl >= 0) {
        chunks.push(b.subarray(0, nl));
        size += nl;
        if (size > max) finish({ error: `the password is longer than ${MAX_PASSWORD_CHARS} characters` });
        else finish(decode(Buffer.concat(chunks)));
        return;
      }
      chunks.push(b);
      size += b.length;
      if (size > max) finish({ error: `the password is longer than ${MAX_PASSWORD_CHARS} characters` });
    };
    const onEnd = (): void => finish(size === 0 ? { error: 'no password on stdin' } : decode(Buffer.concat(chunks)));
    const onError = (e: Error): void => finish({ error: `cannot read stdin: ${e.message}` });
    input.on('data', onData);
    input.on('end', onEnd);
    input.on('error', onError);
    input.resume();
  });
}

/** one no-echo line from a terminal; prompt on stderr */
function promptHidden(input: PasswordInput, prompt: string, io: CliIo): Promise<{ line: string } | { error: string }> {
  return new Promise((resolve) => {
    const reader = new HiddenLineReader();
    const decoder = new TextDecoder('utf-8'); // streaming: a multi-byte key may split across reads
    const finish = (r: { line: string } | { error: string }): void => {
      input.removeListener('data', onData);
      try { input.setRawMode?.(false); } catch { /* terminal gone */ }
      input.pause();
      io.err('\n');
      resolve(r);
    };
    const onData = (d: Buffer | string): void => {
      const r = reader.feed(typeof d === 'string' ? d : decoder.decode(d, { stream: true }));
      if (r === 'more') return;
      finish(r === 'cancel' ? { error: 'cancelled' } : r);
    };
    io.err(prompt);
    input.setRawMode!(true);
    input.on('data', onData);
    input.resume();
  });
}

async function readPassword(io: CliIo): Promise<{ line: string } | { error: string }> {
  const input = io.stdin ?? (process.stdin as PasswordInput);
  if (input.isTTY !== true) return readFirstLine(input);
  if (typeof input.setRawMode !== 'function') return { error: 'cannot turn off echo on this terminal: pipe the password on stdin' };
  const first = await promptHidden(input, 'Password: ', io);
  if ('error' in first) return first;
  const again = await promptHidden(input, 'Again: ', io);
  if ('error' in again) return again;
  if (again.line !== first.line) return { error: 'the passwords do not match' };
  return first;
}

/** The realm the edge challenges with by default: auth.realm, else the first served domain name.
 *  undefined when the config names neither (the edge's last resort, its own address, is not a
 *  guess we make for the operator: a users file for the wrong realm fails every login). */
export function defaultRealm(cfg: ResolvedConfig): string | undefined {
  const firstDomain = cfg.domains.find((d) => isIP(d) === 0);
  const realm = cfg.auth?.fallback.realm ?? firstDomain;
  if (realm === undefined || (firstDomain === undefined && realm === addressRealm(cfg.listen, cfg.advertise))) return undefined;
  return realm;
}

/** `sip-edge passwd USER`: write HA1s for USER@REALM into the users file. */
async function passwdCommand(p: CommandCli, io: CliIo): Promise<number> {
  const pw = p.passwd!;
  let realm = pw.realm;
  if (realm === undefined) {
    const cfgFile = chooseConfigFile(p, io.shippedConfig ?? SHIPPED_CONFIG);
    const loaded = loadConfig({ ...(cfgFile !== undefined ? { file: cfgFile } : {}), overrides: p.overrides, env: io.env });
    if (!loaded.ok) {
      io.err(`sip-edge passwd: no --realm, and the configuration does not load:\n${loaded.errors.map((e) => `${e}\n`).join('')}`);
      return 1;
    }
    realm = defaultRealm(loaded.config);
    if (realm === undefined) {
      io.err(`sip-edge passwd: give --realm (the configuration ${loaded.config.configFile ?? '(built-in defaults)'} names no auth.realm and no domain)\n`);
      return 1;
    }
    const bad = checkRealm(realm);
    if (bad) {
      io.err(`sip-edge passwd: realm ${JSON.stringify(realm)} from the configuration: ${bad[1]}; give --realm\n`);
      return 1;
    }
  }
  const file = pw.file ?? 'users.txt';
  const got = await readPassword(io);
  if ('error' in got) {
    io.err(`sip-edge passwd: ${got.error}\n`);
    return 1;
  }
  const problem = passwordProblem(pw.user, got.line);
  if (problem !== undefined) {
    io.err(`sip-edge passwd: ${problem}\n`);
    return 1;
  }
  const r = upsertUser(file, pw.user, realm, got.line, pw.algorithms);
  if (!r.ok) {
    io.err(r.errors.map((e) => (e.startsWith(`${file}:`) ? `${e}\n` : `sip-edge passwd: ${e}\n`)).join(''));
    return 1;
  }
  if ((r.mode & 0o077) !== 0) {
    // an HA1 answers any challenge for its realm: whoever reads the file can register as the user
    io.err(`sip-edge passwd: warning: ${file} is readable by others (mode ${(r.mode & 0o777).toString(8).padStart(4, '0')}); HA1 values are as good as passwords for their realm: chmod 600 ${file}\n`);
  }
  for (const w of passwdWarnings(p, realm, io)) io.err(`sip-edge passwd: warning: ${w}\n`);
  io.out(`updated ${pw.user}@${realm} in ${file}\n`);
  return 0;
}

/**
 * With --algorithms leaving some out: the algorithms the configuration (and its rules) can still
 * challenge this realm's clients with, which the user now has no HA1 for. Its phones answering
 * those fail like a wrong password, so say it now rather than at the next start. Nothing when the
 * configuration or the rules do not load (passwd does not need them).
 */
function passwdWarnings(p: CommandCli, realm: string, io: CliIo): string[] {
  const pw = p.passwd!;
  if (p.noConfig || DIGEST_ALGORITHMS.every((a) => pw.algorithms.includes(a))) return [];
  const cfgFile = chooseConfigFile(p, io.shippedConfig ?? SHIPPED_CONFIG);
  const loaded = loadConfig({ ...(cfgFile !== undefined ? { file: cfgFile } : {}), overrides: p.overrides, env: io.env });
  if (!loaded.ok || loaded.config.auth === undefined) return [];
  const rules = loadRules(loaded.config.rulesDir ?? defaultRulesDir());
  if (!rules.ok) return [];
  // the domain whose realm this is (whatever its mode today: a users file is written to be used)
  const policies = authPolicies(loaded.config.auth);
  const policy = policies.find((x) => x.realm.toLowerCase() === realm.toLowerCase()) ?? loaded.config.auth.fallback;
  const out: string[] = [];
  for (const [alg, profiles] of offerable(policy, rules.snapshot.authClients)) {
    if (pw.algorithms.includes(alg)) continue;
    out.push(`${pw.user} has no ${alg} HA1 now, but clients matching ${profiles.join(', ')} are challenged with ${alg} in realm ${realm}: those phones cannot authenticate as ${pw.user} (without --algorithms, passwd writes every algorithm)`);
  }
  return out;
}

/** `sip-edge bans`: on the shared Redis when configured, else through the admin listener of the
 *  running single-node edge (its /bans endpoint, with the metrics token). */
async function bansCommand(b: NonNullable<CommandCli['bans']>, cfg: ResolvedConfig, io: CliIo): Promise<number> {
  // --json: the store's records as they are (epoch milliseconds), for scripts; else for people
  const print = (x: unknown): void => io.out(b.json === true ? `${JSON.stringify(x, null, 2)}\n` : formatBans(b.op, x, b.key));
  if (cfg.redis) {
    const { createRedisStore, redactRedisUrl } = require('./store') as typeof import('./store');
    let store;
    try {
      store = await createRedisStore({ url: cfg.redis.url, requireReady: true });
    } catch (e) {
      io.err(`sip-edge: Redis unreachable at ${redactRedisUrl(cfg.redis.url)}: ${(e as Error).message}\n`);
      return 1;
    }
    try {
      if (b.op === 'list') print(await store.listBans());
      else if (b.op === 'add') print(await store.ban({ key: b.key!, reason: b.reason ?? 'manual', rule: 'manual', seconds: b.seconds! }));
      else {
        const removed = await store.unban(b.key!);
        print({ removed });
        if (!removed) return 1;
      }
      return 0;
    } catch (e) {
      io.err(`sip-edge: ${(e as Error).message}\n`);
      return 1;
    } finally {
      await store.close();
    }
  }
  if (!cfg.metrics.listen) {
    io.err('sip-edge: no Redis configured and the admin listener is off: nothing to talk to\n');
    return 1;
  }
  const q = new URLSearchParams();
  if (b.key) q.set('key', b.key);
  if (b.seconds) q.set('seconds', String(b.seconds));
  if (b.reason) q.set('reason', b.reason);
  const token = b.token ?? io.env.SIPEDGE_ADMIN_TOKEN ?? cfg.metrics.token;
  try {
    const res = await fetch(`http://${cfg.metrics.listen}/bans${q.size ? `?${q}` : ''}`, {
      method: b.op === 'list' ? 'GET' : b.op === 'add' ? 'POST' : 'DELETE',
      headers: token ? { Authorization: `Bearer ${token}` } : {},
      signal: AbortSignal.timeout(5000),
    });
    const text = await res.text();
    if (!res.ok && !(b.op === 'remove' && res.status === 404)) {
      io.err(`sip-edge: the edge answered ${res.status}: ${text}`);
      return 1;
    }
    let body: unknown;
    try { body = JSON.parse(text); } catch { io.err(`sip-edge: the edge answered something that is not JSON: ${text.slice(0, 200)}\n`); return 1; }
    print(body);
    return res.ok ? 0 : 1;
  } catch (e) {
    io.err(`sip-edge: cannot reach the edge's admin listener at ${cfg.metrics.listen}: ${(e as Error).message}\n`);
    return 1;
  }
}

/** Bans for people: one line per ban, times in ISO-8601 UTC (the store keeps epoch milliseconds,
 *  which is what --json prints). Reasons may come from anyone with the admin token: control
 *  characters are shown escaped, never sent to the terminal. */
export function formatBans(op: 'list' | 'add' | 'remove', x: unknown, key?: string): string {
  const shown = (v: unknown): string => String(v).replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  const iso = (ms: unknown): string => (typeof ms === 'number' && Number.isFinite(ms) ? new Date(ms).toISOString() : shown(ms));
  type B = { key?: unknown; since?: unknown; until?: unknown; count?: unknown; rule?: unknown; reason?: unknown };
  if (op === 'remove') return (x as { removed?: unknown } | null)?.removed === true ? `removed ${key ?? ''}\n` : `not banned: ${key ?? ''}\n`;
  if (op === 'add') {
    const ban = (x ?? {}) as B;
    return `banned ${shown(ban.key)} until ${iso(ban.until)} (since ${iso(ban.since)}, count ${shown(ban.count)}, rule ${shown(ban.rule)}, reason ${shown(ban.reason)})\n`;
  }
  const list = Array.isArray(x) ? (x as B[]) : [];
  if (list.length === 0) return 'no active bans\n';
  const rows = [['KEY', 'UNTIL', 'SINCE', 'COUNT', 'RULE', 'REASON'], ...list.map((ban) => [shown(ban.key), iso(ban.until), iso(ban.since), shown(ban.count), shown(ban.rule), shown(ban.reason)])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}

/** `sip-edge explain` exit codes, for scripts: the verdict, not just "it ran" (1 and 2 keep
 *  their meaning: error, usage). */
export const EXPLAIN_EXIT = { forward: 0, reply: 3, drop: 4 } as const;

function explainExitCode(v: { readonly action: string }): number {
  if (v.action === 'reply') return EXPLAIN_EXIT.reply;
  if (v.action === 'drop' || v.action === 'ban') return EXPLAIN_EXIT.drop;
  return EXPLAIN_EXIT.forward; // continue (and log, which lets the message go on)
}

/** `sip-edge explain`: one message through every stage, nothing sent. */
async function explainCommand(file: string, sourceText: string, transportText: string, cfg: ResolvedConfig, snapshot: RulesSnapshot, io: CliIo): Promise<number> {
  const hp = parseHostPort(sourceText);
  if ('error' in hp || isIP(hp.host) === 0) {
    io.err(`sip-edge: --source must be IP[:PORT], got ${JSON.stringify(sourceText)}\n`);
    return 2;
  }
  if (transportText !== 'udp' && transportText !== 'tcp' && transportText !== 'tls') {
    io.err(`sip-edge: --transport must be udp, tcp or tls\n`);
    return 2;
  }
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    io.err(`sip-edge: cannot read ${file}: ${(e as Error).message}\n`);
    return 1;
  }
  // message files are usually written with LF line ends: SIP needs CRLF (RFC 3261 7)
  if (!bytes.includes('\r\n') && bytes.includes('\n')) bytes = Buffer.from(bytes.toString('latin1').replace(/\n/g, '\r\n'), 'latin1');
  const { createPolicy } = require('./policy') as typeof import('./policy');
  const policy = await createPolicy(() => snapshot);
  try {
    const report = await explainMessage({
      bytes, cfg, rules: snapshot, stages: policy.entries(snapshot),
      source: { transport: transportText, address: canonicalAddress(hp.host), port: hp.port ?? 5060 },
    });
    let text = formatExplain(report);
    if (!text.endsWith('\n')) text += '\n';
    // stages that need the running edge's state are named, not silently left out
    const notHere = snapshot.stages.filter((st) => st.mode !== 'off' && !policy.stages.has(st.name));
    if (notHere.length > 0 && report.parse.ok) {
      text += 'not evaluated here (they need the running edge):\n';
      for (const st of notHere) {
        if (st.name === 'ratelimit') text += `  ${st.name.padEnd(9)} ${st.mode.padEnd(7)}  budgets and bans live in the running edge (memory or Redis)\n`;
        else if (st.name === 'userlimit') text += `  ${st.name.padEnd(9)} ${st.mode.padEnd(7)}  per-user budgets, spent only by authenticated (or PBX-accepted) requests, live in the running edge\n`;
        else if (st.name === 'ping') text += `  ${st.name.padEnd(9)} ${st.mode.padEnd(7)}  pings: ${cfg.pings} (an OPTIONS without a user part to the edge's own address or a served domain${cfg.pings === 'answer' ? ' gets 200 from the edge' : cfg.pings === 'forward' ? ' goes to the PBX unchallenged' : ' is treated like any request'})\n`;
        else if (st.name === 'auth') {
          const a = cfg.auth;
          const modes = a ? authPolicies(a).map((d) => `${d.name === '*' ? 'other served names' : d.name}: ${d.mode}`).join(', ') : 'pbx';
          text += `  ${st.name.padEnd(9)} ${st.mode.padEnd(7)}  ${modes} (edge mode: an untrusted request without valid credentials gets 401/407)\n`;
        } else text += `  ${st.name.padEnd(9)} ${st.mode.padEnd(7)}\n`;
      }
    }
    io.out(text);
    return explainExitCode(report.final.verdict);
  } finally {
    policy.close();
  }
}

async function run(cfg: ResolvedConfig, io: CliIo): Promise<number> {
  const log = io.logger ? io.logger(cfg) : createLogger(cfg.log.level);
  let startEdge = io.startEdge;
  if (startEdge === undefined) {
    try {
      // Resolved at run time so that `check` works even where the edge itself is not built.
      startEdge = (require('./edge') as { startEdge: StartEdge }).startEdge;
    } catch (e) {
      log.fatal({ err: e }, 'cannot load the edge module');
      return 1;
    }
  }
  let edge: EdgeHandle;
  if (cfg.warmUpCalls > 0 && io.startEdge === undefined) {
    try {
      const { warmUp } = require('./warmup') as typeof import('./warmup');
      const w = await warmUp(cfg, cfg.warmUpCalls);
      log.info({ calls: w.calls, forwarded: w.forwarded, ms: Math.round(w.ms) }, 'warm-up done');
    } catch (e) {
      // only a slower first few seconds: start anyway
      log.warn({ err: e }, 'warm-up failed');
    }
  }
  try {
    edge = await startEdge(cfg, log);
  } catch (e) {
    log.fatal({ err: e }, 'start failed');
    return 1;
  }
  const done = new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (signal: 'SIGTERM' | 'SIGINT'): void => {
      if (stopping) {
        // The operator asked twice: do not wait for the grace period. The shell's code for "killed
        // by this signal" (128 + its number): not 0, live transactions were abandoned; not 1,
        // nothing failed.
        log.warn({ signal }, 'second signal, exiting now');
        cleanup();
        resolve(secondSignalExitCode(signal));
        return;
      }
      stopping = true;
      log.info({ signal, graceMs: cfg.shutdownGraceMs }, 'shutting down');
      edge.close(cfg.shutdownGraceMs).then(
        () => {
          log.info('stopped');
          cleanup();
          resolve(0);
        },
        (e: unknown) => {
          log.error({ err: e }, 'error during shutdown');
          cleanup();
          resolve(1);
        },
      );
    };
    const onTerm = (): void => onSignal('SIGTERM');
    const onInt = (): void => onSignal('SIGINT');
    // SIGHUP: re-read the rule files; the edge logs and counts the outcome itself
    const onHup = (): void => { edge.reloadRules?.(); };
    const cleanup = (): void => {
      io.signals.removeListener('SIGTERM', onTerm);
      io.signals.removeListener('SIGINT', onInt);
      io.signals.removeListener('SIGHUP', onHup);
    };
    io.signals.on('SIGTERM', onTerm);
    io.signals.on('SIGINT', onInt);
    io.signals.on('SIGHUP', onHup);
  });
  // Only now: a supervisor (or test) that sends SIGTERM as soon as it reads this line must
  // find the handlers installed, or the default action kills us without a graceful close.
  // which domains the edge authenticates itself and which it leaves to the PBX: said once, at start
  const auth = cfg.auth ? Object.fromEntries(authPolicies(cfg.auth).map((d) => [d.name, d.mode === 'edge' ? `edge (${d.algorithms.join(', ')})` : d.mode])) : null;
  log.info({ listeners: edge.listeners, admin: edge.admin ?? null, upstreams: cfg.upstreams, auth, configFile: cfg.configFile ?? null }, 'listening');
  return done;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`sip-edge: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
