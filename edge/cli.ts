#!/usr/bin/env node
// sip-edge command line. The pure parts (parseCli, main with injected I/O) are exported for
// tests; the bottom of the file is the only place that touches process.exit.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import type { ResolvedConfig } from './config/types';
import { loadConfig } from './config/load';
import type { CliOverrides } from './config/load';
import { isIP } from 'node:net';
import { defaultRulesDir, loadRules } from '../rules/load';
import type { RulesSnapshot } from '../rules/types';
import { explainMessage, formatExplain } from './explain';
import { canonicalAddress, parseHostPort } from './net/address';
import { parseCidr } from './net/cidr';
import { createLogger } from './log';
import type { Logger } from './log';

/** Package root: dist/edge/cli.js -> the folder holding package.json and sip-edge.yaml. */
export const PACKAGE_ROOT = path.resolve(__dirname, '../..');
export const SHIPPED_CONFIG = path.join(PACKAGE_ROOT, 'sip-edge.yaml');

export const USAGE = `Usage:
  sip-edge run   [options]   start the edge
  sip-edge check [options]   validate the configuration and the rule files, exit (0 ok, 1 invalid)
  sip-edge explain FILE.sip --source IP[:PORT] [--transport udp|tcp] [options]
                             run one message through every stage without sending anything
  sip-edge bans list | add IP|CIDR --for DURATION [--reason TEXT] | remove IP|CIDR
                             the shared ban list (Redis from --redis or the config; without
                             Redis, the running edge's admin listener)
  sip-edge --help | --version

Options (list flags may repeat; given flags replace the file's list, they do not extend it):
  --config FILE               config file (default: the shipped sip-edge.yaml)
  --no-config                 use no file: built-in defaults plus flags
  --listen PROTO:HOST:PORT    socket to bind, e.g. udp:0.0.0.0:5060, tcp:[::]:5060
  --upstream PROTO:HOST:PORT  PBX to forward to, e.g. udp:10.0.0.5:5060
  --domain NAME               served SIP domain
  --inside CIDR               inside (PBX side) network
  --trusted CIDR              outside peers trusted by address
  --advertise HOST[:PORT]     address to put in Via / Record-Route / Path
  --metrics HOST:PORT|off     Prometheus endpoint
  --log-level LEVEL           fatal|error|warn|info|debug|trace|silent
  --rules DIR                 rule files directory (default: the shipped rules/)
  --redis URL|off             shared state for limits and bans (default: in memory)

Signals (run): SIGTERM/SIGINT drain and stop; SIGHUP re-reads the rule files (an invalid file
keeps the previous rules in force and is reported).

Environment: SIPEDGE_SECRET (HMAC secret shared by a cluster; overrides the file's secret).
Exit codes: 0 ok, 1 invalid configuration or runtime failure, 2 usage error.
`;

export type ParsedCli =
  | { readonly kind: 'help' }
  | { readonly kind: 'version' }
  | { readonly kind: 'usage_error'; readonly message: string }
  | {
      readonly kind: 'run' | 'check' | 'explain' | 'bans';
      /** bans: list | add | remove, its target, duration (s) and reason */
      readonly bans?: { readonly op: 'list' | 'add' | 'remove'; readonly key?: string; readonly seconds?: number; readonly reason?: string; readonly token?: string };
      /** explain: the message file, source and transport */
      readonly file?: string;
      readonly source?: string;
      readonly transport?: string;
      /** explicit --config */
      readonly configFile?: string;
      readonly noConfig: boolean;
      readonly overrides: CliOverrides;
    };

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
  for: { type: 'string' },
  reason: { type: 'string' },
  token: { type: 'string' },
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
  if (command !== 'run' && command !== 'check' && command !== 'explain' && command !== 'bans') return { kind: 'usage_error', message: `unknown command "${command}"` };
  let bans: { op: 'list' | 'add' | 'remove'; key?: string; seconds?: number; reason?: string; token?: string } | undefined;
  if (command === 'bans') {
    const op = extra.shift();
    if (op !== 'list' && op !== 'add' && op !== 'remove') return { kind: 'usage_error', message: 'bans needs list, add or remove' };
    bans = { op, ...(v.token !== undefined ? { token: v.token } : {}) };
    if (op !== 'list') {
      const key = extra.shift();
      if (key === undefined) return { kind: 'usage_error', message: `bans ${op} needs an IP or CIDR` };
      const c = parseCidr(key);
      if (typeof c === 'string') return { kind: 'usage_error', message: `bans ${op}: "${key}" is not an IP address or CIDR` };
      bans.key = key.includes('/') ? key : canonicalAddress(key);
    }
    if (op === 'add') {
      const seconds = parseDuration(v.for);
      if (seconds === null) return { kind: 'usage_error', message: 'bans add needs --for DURATION (e.g. 600, 10m, 2h, 1d)' };
      bans.seconds = seconds;
      bans.reason = v.reason ?? 'manual';
    }
  } else if (v.for !== undefined || v.reason !== undefined || v.token !== undefined) {
    return { kind: 'usage_error', message: '--for, --reason and --token go with bans' };
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
  };
  return {
    kind: command,
    ...(file !== undefined ? { file } : {}),
    ...(bans !== undefined ? { bans } : {}),
    ...(v.source !== undefined ? { source: v.source } : {}),
    ...(v.transport !== undefined ? { transport: v.transport } : {}),
    ...(v.config !== undefined ? { configFile: v.config } : {}),
    noConfig: v['no-config'] === true,
    overrides,
  };
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
}

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
  const p = parseCli(argv);
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
      break;
  }
  const file = chooseConfigFile(p, io.shippedConfig ?? SHIPPED_CONFIG);
  const loaded = loadConfig({ ...(file !== undefined ? { file } : {}), overrides: p.overrides, env: io.env });
  if (!loaded.ok) {
    io.err(loaded.errors.map((e) => `${e}\n`).join(''));
    return 1;
  }
  if (p.kind === 'bans') return bansCommand(p.bans!, loaded.config, io);
  const rulesDir = loaded.config.rulesDir ?? defaultRulesDir();
  const rules = loadRules(rulesDir, { displayDir: path.relative(process.cwd(), rulesDir) || '.' });
  if (!rules.ok) {
    io.err(rules.errors.map((e) => `${e}\n`).join(''));
    return 1;
  }
  if (p.kind === 'check') {
    io.out(`ok: ${loaded.config.configFile ?? '(built-in defaults)'}; rules ${rulesDir} version ${rules.snapshot.version}\n`);
    return 0;
  }
  if (p.kind === 'explain') return explainCommand(p.file!, p.source!, p.transport ?? 'udp', loaded.config, rules.snapshot, io);
  return run(loaded.config, io);
}

/** "600", "10m", "2h", "1d" -> seconds; null when invalid */
export function parseDuration(text: string | undefined): number | null {
  const m = /^(\d{1,9})([smhd]?)$/.exec(text ?? '');
  if (!m) return null;
  const n = Number(m[1]) * ({ '': 1, s: 1, m: 60, h: 3600, d: 86400 } as Record<string, number>)[m[2]!]!;
  return n > 0 && n <= 365 * 86400 ? n : null;
}

/** `sip-edge bans`: on the shared Redis when configured, else through the admin listener of the
 *  running single-node edge (its /bans endpoint, with the metrics token). */
async function bansCommand(b: NonNullable<Extract<ParsedCli, { kind: 'bans' | 'run' | 'check' | 'explain' }>['bans']>, cfg: ResolvedConfig, io: CliIo): Promise<number> {
  const print = (x: unknown): void => io.out(`${JSON.stringify(x, null, 2)}\n`);
  if (cfg.redis) {
    const { createRedisStore } = require('./store') as typeof import('./store');
    let store;
    try {
      store = await createRedisStore({ url: cfg.redis.url, requireReady: true });
    } catch (e) {
      io.err(`sip-edge: Redis unreachable at ${cfg.redis.url}: ${(e as Error).message}\n`);
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
    if (!res.ok) {
      io.err(`sip-edge: the edge answered ${res.status}: ${text}`);
      return 1;
    }
    io.out(text);
    return 0;
  } catch (e) {
    io.err(`sip-edge: cannot reach the edge's admin listener at ${cfg.metrics.listen}: ${(e as Error).message}\n`);
    return 1;
  }
}

/** `sip-edge explain`: one message through every stage, nothing sent. */
async function explainCommand(file: string, sourceText: string, transportText: string, cfg: ResolvedConfig, snapshot: RulesSnapshot, io: CliIo): Promise<number> {
  const hp = parseHostPort(sourceText);
  if ('error' in hp || isIP(hp.host) === 0) {
    io.err(`sip-edge: --source must be IP[:PORT], got ${JSON.stringify(sourceText)}\n`);
    return 2;
  }
  if (transportText !== 'udp' && transportText !== 'tcp') {
    io.err(`sip-edge: --transport must be udp or tcp\n`);
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
    const text = formatExplain(report);
    io.out(text.endsWith("\n") ? text : `${text}\n`);
    return 0;
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
  try {
    edge = await startEdge(cfg, log);
  } catch (e) {
    log.fatal({ err: e }, 'start failed');
    return 1;
  }
  const done = new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (signal: string): void => {
      if (stopping) {
        // The operator asked twice: do not wait for the grace period.
        log.warn({ signal }, 'second signal, exiting now');
        cleanup();
        resolve(1);
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
  log.info({ listeners: edge.listeners, admin: edge.admin ?? null, upstreams: cfg.upstreams, configFile: cfg.configFile ?? null }, 'listening');
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
