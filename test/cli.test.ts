// CLI as a user runs it (spawned `node .../edge/cli.js`), its pure parts, and the logger helpers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { chooseConfigFile, main, parseCli } from '../edge/cli';
import type { CliIo, EdgeHandle, StartEdge } from '../edge/cli';
import type { ResolvedConfig } from '../edge/config/types';
import { createLogger, createSampler, preview } from '../edge/log';
import { tempDir } from './helpers/tmp';

const ROOT = path.resolve(__dirname, '../..');
const CLI = path.resolve(__dirname, '../edge/cli.js');
const { dir: TMP, file: tmp } = tempDir('sipedge-cli-');

function cli(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 20000, env: { PATH: process.env.PATH ?? '' } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

// --- spawned, as a user would ----------------------------------------------------------------

test('check: a valid file prints ok and exits 0', () => {
  const file = tmp('listen: [udp:127.0.0.1:0]\nupstreams: [udp:127.0.0.1:5080]\n');
  const r = cli('check', '--config', file);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  assert.match(r.stdout, new RegExp(`^ok: ${escapeRe(file)}; rules ${escapeRe(path.join(ROOT, 'rules'))} version [0-9a-f]{12}; transactions: up to \\d+ live \\(memoryBudgetMB \\d+\\)\n$`));
});

test('check: errors one per line as file:line:column, exit 1', () => {
  const file = tmp('listne: [udp:127.0.0.1:0]\nupstreams: [udp:127.0.0.1:5080]\nlimits:\n  maxHeaders: 5\n');
  const r = cli('check', '--config', file);
  assert.equal(r.code, 1);
  assert.equal(r.stdout, '');
  assert.equal(
    r.stderr,
    `${file}:1:1: unknown key "listne" (did you mean "listen"?)\n` +
      `${file}:4:15: limits.maxHeaders: expected an integer from 10 to 1000 (got 5)\n`,
  );
});

test('check: a YAML syntax error exits 1 with its position', () => {
  const file = tmp('upstreams: [udp:127.0.0.1:5080\nlog:\n');
  const r = cli('check', '--config', file);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, `${file}:2:1: Flow sequence in block collection must be sufficiently indented and end with a ]\n`
    + `(rule and users files not checked: ${file} cannot be read far enough to say where they are)\n`);
});

test('check: a missing file exits 1', () => {
  const file = path.join(TMP, 'nope.yaml');
  assert.deepEqual(cli('check', '--config', file), {
    code: 1, stdout: '',
    stderr: `${file}: cannot read file (ENOENT)\n(rule and users files not checked: ${file} cannot be read far enough to say where they are)\n`,
  });
});

test('check: without --config validates the shipped sip-edge.yaml', () => {
  const r = cli('check');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^ok: ${escapeRe(path.join(ROOT, 'sip-edge.yaml'))}; rules .* version [0-9a-f]{12}; transactions: up to \\d+ live \\(memoryBudgetMB \\d+\\)\n$`));
});

test('check: flags override the file and are validated too', () => {
  const file = tmp('upstreams: [udp:127.0.0.1:5080]\n');
  const r = cli('check', '--config', file, '--listen', 'sctp:0.0.0.0:5061');
  assert.equal(r.code, 1);
  assert.equal(r.stderr, '--listen "sctp:0.0.0.0:5061": listen "sctp:0.0.0.0:5061": unknown transport "sctp" (expected udp or tcp or tls or ws or wss)\n');
});

function cliEnv(env: Record<string, string>, ...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 20000, env: { PATH: process.env.PATH ?? '', ...env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('environment: SIPEDGE_* stand in for the flags (a container\'s interface): over the file, under the flags, named in errors', () => {
  const file = tmp('listen: [udp:127.0.0.1:0]\nupstreams: [udp:127.0.0.1:5080]\n');
  // the variable replaces the file's list, and is validated like the flag (lists: commas or spaces)
  const bad = cliEnv({ SIPEDGE_CONFIG: file, SIPEDGE_LISTEN: 'udp:0.0.0.0:5060, sctp:0.0.0.0:5080' }, 'check');
  assert.equal(bad.code, 1);
  assert.equal(bad.stderr, 'env SIPEDGE_LISTEN "sctp:0.0.0.0:5080": listen "sctp:0.0.0.0:5080": unknown transport "sctp" (expected udp or tcp or tls or ws or wss)\n');
  // a flag wins over its variable: the bad value is never looked at
  const flag = cliEnv({ SIPEDGE_CONFIG: file, SIPEDGE_LISTEN: 'sctp:0.0.0.0:5080' }, 'check', '--listen', 'udp:127.0.0.1:0');
  assert.equal(flag.code, 0, flag.stderr);
  assert.match(flag.stdout, new RegExp(`^ok: ${escapeRe(file)};`));
  // --no-config, everything from the environment; metrics "off" as the flag says it
  const all = cliEnv({ SIPEDGE_UPSTREAMS: 'udp:127.0.0.1:5080 tcp:127.0.0.1:5080', SIPEDGE_METRICS: 'off', SIPEDGE_LOG_LEVEL: 'loud' }, 'check', '--no-config');
  assert.equal(all.code, 1);
  assert.equal(all.stderr, 'env SIPEDGE_LOG_LEVEL "loud": expected one of fatal, error, warn, info, debug, trace, silent\n');
  const metrics = cliEnv({ SIPEDGE_UPSTREAMS: 'udp:127.0.0.1:5080', SIPEDGE_METRICS: '0.0.0.0:9090' }, 'check', '--no-config');
  assert.equal(metrics.code, 1);
  assert.match(metrics.stderr, /^env SIPEDGE_METRICS "0\.0\.0\.0:9090": metrics\.listen "0\.0\.0\.0:9090": a non-loopback metrics address requires metrics\.token \(or SIPEDGE_METRICS_TOKEN\)\n$/);
  const withToken = cliEnv({ SIPEDGE_UPSTREAMS: 'udp:127.0.0.1:5080', SIPEDGE_METRICS: '0.0.0.0:9090', SIPEDGE_METRICS_TOKEN: 'a-metrics-token-of-32-characters' }, 'check', '--no-config');
  assert.equal(withToken.code, 0, withToken.stderr);
  // an empty variable is unset: the file's list stands
  const empty = cliEnv({ SIPEDGE_CONFIG: file, SIPEDGE_LISTEN: '' }, 'check');
  assert.equal(empty.code, 0, empty.stderr);
});

test('check --no-config: flags alone are a complete configuration', () => {
  const ok = cli('check', '--no-config', '--upstream', 'udp:127.0.0.1:5080');
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /^ok: \(built-in defaults\); rules .* version [0-9a-f]{12}; transactions: up to 21845 live \(memoryBudgetMB 1024\)\n$/);
  const r = cli('check', '--no-config');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^config: upstreams: at least one upstream is required/);
});

test('run: an invalid config exits 1 before starting anything', () => {
  const file = tmp('upstreams: [udp:pbx.example.com:5060]\n');
  const r = cli('run', '--config', file);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, `${file}:1:13: upstream "udp:pbx.example.com:5060": host "pbx.example.com" is not an IP address; DNS names for upstreams are not supported yet\n`);
});

test('--help and --version exit 0 on stdout', () => {
  const h = cli('--help');
  assert.equal(h.code, 0);
  assert.match(h.stdout, /^Usage:\n {2}sip-edge run/);
  assert.equal(h.stderr, '');
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  assert.deepEqual(cli('--version'), { code: 0, stdout: `sip-edge ${pkg.version}\n`, stderr: '' });
});

const USAGE_ERRORS: ReadonlyArray<readonly [string[], string]> = [
  [['check', '--bogus'], "sip-edge: Unknown option '--bogus'\n"],
  [['frobnicate'], 'sip-edge: unknown command "frobnicate"\n'],
  [[], 'sip-edge: missing command (run, check or explain)\n'],
  [['check', 'extra'], 'sip-edge: unexpected argument "extra"\n'],
  [['check', '--config'], "sip-edge: Option '--config <value>' argument missing\n"],
  [['check', '--config', 'a.yaml', '--no-config'], 'sip-edge: --config and --no-config exclude each other\n'],
];
for (const [args, first] of USAGE_ERRORS) {
  test(`usage error exits 2: ${JSON.stringify(args)}`, () => {
    const r = cli(...args);
    assert.equal(r.code, 2);
    assert.equal(r.stdout, '');
    assert.ok(r.stderr.startsWith(`${first}\nUsage:`), r.stderr);
  });
}

// --- pure parts ------------------------------------------------------------------------------

test('parseCli: repeated list flags collect in order; metrics off is null', () => {
  assert.deepEqual(
    parseCli(['run', '--listen', 'udp:0.0.0.0:5060', '--listen', 'tcp:0.0.0.0:5060', '--upstream', 'udp:10.0.0.5:5060',
      '--domain', 'example.com', '--inside', '10.0.0.0/8', '--trusted', '192.0.2.1', '--metrics', 'off', '--log-level', 'debug']),
    {
      kind: 'run',
      noConfig: false,
      overrides: {
        listen: ['udp:0.0.0.0:5060', 'tcp:0.0.0.0:5060'],
        upstreams: ['udp:10.0.0.5:5060'],
        domains: ['example.com'],
        inside: ['10.0.0.0/8'],
        trusted: ['192.0.2.1'],
        metrics: null,
        logLevel: 'debug',
      },
    },
  );
  assert.deepEqual(parseCli(['check', '--config=x.yaml']), { kind: 'check', configFile: 'x.yaml', noConfig: false, overrides: {} });
  assert.deepEqual(parseCli(['-h']), { kind: 'help' });
});

test('chooseConfigFile: explicit, none, shipped, or defaults when the shipped file is absent', () => {
  const shipped = tmp('{}\n');
  assert.equal(chooseConfigFile({ configFile: 'x.yaml', noConfig: false }, shipped), 'x.yaml');
  assert.equal(chooseConfigFile({ noConfig: true }, shipped), undefined);
  assert.equal(chooseConfigFile({ noConfig: false }, shipped), shipped);
  assert.equal(chooseConfigFile({ noConfig: false }, path.join(TMP, 'absent.yaml')), undefined);
});

/** A fake edge plus in-memory I/O for driving `run` without sockets. */
function harness(closeImpl: () => Promise<void>) {
  const lines: Record<string, unknown>[] = [];
  const out: string[] = [];
  const err: string[] = [];
  const signals = new EventEmitter();
  const started: ResolvedConfig[] = [];
  const closes: number[] = [];
  const startEdge: StartEdge = async (cfg) => {
    started.push(cfg);
    const edge: EdgeHandle = {
      listeners: cfg.listen.map((l, i) => ({ transport: l.transport, address: l.host, port: 40000 + i })),
      close: (graceMs) => {
        closes.push(graceMs);
        return closeImpl();
      },
    };
    return edge;
  };
  const io: CliIo = {
    out: (t) => void out.push(t),
    err: (t) => void err.push(t),
    env: {},
    signals,
    startEdge,
    logger: (cfg) => createLogger(cfg.log.level, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) }),
  };
  return { io, lines, out, err, signals, started, closes };
}

/** Lets queued promise callbacks run; bounded, no timers. */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise<void>((r) => setImmediate(r));
  assert.ok(cond(), 'condition not reached');
}

const RUN_ARGS = ['run', '--no-config', '--listen', 'udp:127.0.0.1:0', '--listen', 'tcp:[::1]:0', '--upstream', 'udp:127.0.0.1:5080', '--metrics', 'off'];

test('run: logs the bound listeners, then SIGTERM closes with the grace period and exits 0', async () => {
  const h = harness(async () => {});
  const code = main(RUN_ARGS, h.io);
  await until(() => h.lines.some((l) => l.msg === 'listening'));
  assert.equal(h.started.length, 1);
  assert.deepEqual(h.started[0].listen, [
    { transport: 'udp', host: '127.0.0.1', port: 0 },
    { transport: 'tcp', host: '::1', port: 0 },
  ]);
  const listening = h.lines.find((l) => l.msg === 'listening');
  assert.deepEqual(listening?.listeners, [
    { transport: 'udp', address: '127.0.0.1', port: 40000 },
    { transport: 'tcp', address: '::1', port: 40001 },
  ]);
  assert.equal(listening?.level, 'info');
  h.signals.emit('SIGTERM');
  assert.equal(await code, 0);
  assert.deepEqual(h.closes, [5000]);
  assert.deepEqual(h.lines.map((l) => l.msg), ['listening', 'shutting down', 'stopped']);
  assert.equal(h.signals.listenerCount('SIGTERM') + h.signals.listenerCount('SIGINT'), 0, 'handlers removed');
});

test('run: a second signal exits at once without waiting for close, with 128 + its number', async () => {
  for (const [first, second, want] of [['SIGINT', 'SIGTERM', 143], ['SIGTERM', 'SIGINT', 130]] as const) {
    const h = harness(() => new Promise<void>(() => {})); // close never finishes
    const code = main(RUN_ARGS, h.io);
    await until(() => h.lines.some((l) => l.msg === 'listening'));
    h.signals.emit(first);
    h.signals.emit(second);
    assert.equal(await code, want);
    assert.deepEqual(h.closes, [5000], 'close called once');
  }
});

test('run: a failing start exits 1 with a fatal log line', async () => {
  const h = harness(async () => {});
  h.io.startEdge = async () => {
    throw new Error('EADDRINUSE');
  };
  assert.equal(await main(RUN_ARGS, h.io), 1);
  assert.equal(h.lines[0]?.level, 'fatal');
  assert.equal(h.lines[0]?.msg, 'start failed');
});

test('run (spawned, real edge): prints the bound ports and exits 0 on SIGTERM', async () => {
  const args = ['run', '--no-config', '--listen', 'udp:127.0.0.1:0', '--listen', 'tcp:127.0.0.1:0', '--upstream', 'udp:127.0.0.1:5080', '--metrics', 'off'];
  const child = spawn(process.execPath, [CLI, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { PATH: process.env.PATH ?? '' },
  });
  const killer = setTimeout(() => child.kill('SIGKILL'), 20000);
  try {
    let buf = '';
    const listening = await new Promise<Record<string, unknown>>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        buf += d.toString('utf8');
        for (const line of buf.split('\n')) {
          if (line.includes('"msg":"listening"')) resolve(JSON.parse(line) as Record<string, unknown>);
        }
      });
      child.on('exit', (c) => reject(new Error(`exited early with ${c}: ${buf}`)));
    });
    const ls = listening.listeners as { port: number }[];
    assert.equal(ls.length, 2);
    // the JIT warm-up ran first, every synthetic call got through, and it said so once
    const warm = buf.split('\n').filter((l) => l.includes('"msg":"warm-up done"')).map((l) => JSON.parse(l) as Record<string, number>);
    assert.equal(warm.length, 1, buf);
    assert.deepEqual([warm[0]!.calls, warm[0]!.forwarded], [2000, 2000]);
    assert.ok(buf.indexOf('warm-up done') < buf.indexOf('"msg":"listening"'), 'before the sockets are bound');
    assert.ok(ls.every((l) => l.port > 0), 'ephemeral ports resolved');
    let errText = '';
    child.stderr.on('data', (d: Buffer) => void (errText += d.toString('utf8')));
    const exit = new Promise<string>((r) => child.on('exit', (c, sig) => r(`${c}/${sig}`)));
    child.kill('SIGTERM');
    assert.equal(await exit, '0/null', `stdout: ${buf}\nstderr: ${errText}`);
  } finally {
    clearTimeout(killer);
  }
});

// --- logger helpers --------------------------------------------------------------------------

test('preview: bounded, hex plus printable text, control bytes masked', () => {
  const p = preview(Buffer.from('INVITE sip:x SIP/2.0\r\n\x1b[31mVia: \x00'), 64);
  assert.equal(p.text, 'INVITE sip:x SIP/2.0...[31mVia: .', 'CR, LF and ESC each become one dot');
  assert.equal(p.hex.slice(0, 12), '494e56495445');
  assert.equal(p.truncated, false);
  const big = preview(Buffer.alloc(100000, 0x41));
  assert.deepEqual([big.bytes, big.hex.length, big.text.length, big.truncated], [100000, 128, 64, true]);
  assert.deepEqual(preview(Buffer.alloc(0)), { bytes: 0, hex: '', text: '', truncated: false });
});

test('sampler: token bucket per key, refills with (injected) time, counts what it suppressed', () => {
  let now = 0;
  const s = createSampler(() => now);
  const takes = (k: string, rate: number, times: number) => Array.from({ length: times }, () => s.take(k, rate));
  assert.deepEqual(takes('parse_error', 2, 4), [true, true, false, false]);
  assert.deepEqual(takes('other', 2, 1), [true], 'keys are independent');
  now += 500; // half a second at 2/s refills one token
  assert.deepEqual(takes('parse_error', 2, 2), [true, false]);
  assert.equal(s.suppressed('parse_error'), 2, 'two refused before this allowed one');
  now += 1_000_000; // refill is capped at the burst size
  assert.deepEqual(takes('parse_error', 2, 3), [true, true, false]);
  assert.deepEqual(takes('slow', 0.5, 2), [true, false]);
  now += 2000;
  assert.deepEqual(takes('slow', 0.5, 1), [true]);
});

test('sampler: the key map is bounded', () => {
  const s = createSampler(() => 0);
  let allowed = 0;
  for (let i = 0; i < 5000; i++) if (s.take(`k${i}`, 1)) allowed++;
  assert.equal(allowed, 4096);
  assert.equal(s.take('k1', 1), false, 'existing keys keep their own bucket (empty here)');
});

test('createLogger: JSON lines with a level label', () => {
  const lines: string[] = [];
  const log = createLogger('warn', { write: (s: string) => void lines.push(s) });
  log.info('hidden');
  log.warn({ reason: 'via_missing' }, 'dropped');
  assert.equal(lines.length, 1);
  const rec = JSON.parse(lines[0]) as Record<string, unknown>;
  assert.deepEqual([rec.level, rec.msg, rec.reason, rec.name], ['warn', 'dropped', 'via_missing', 'sip-edge']);
});

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

test('check: an invalid rule file fails with file:line:column', () => {
  const dir = fs.mkdtempSync(path.join(TMP, 'rules-'));
  fs.writeFileSync(path.join(dir, 'scanner.yaml'), 'signatures:\n  - name: bad\n    confidence: high\n    match: { where: user-agent, pattern: "((" }\n');
  const r = cli('check', '--no-config', '--upstream', 'udp:127.0.0.1:5080', '--rules', dir);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /scanner\.yaml:4:\d+: .*regular expression/);
});

test('explain: a scanner probe is dropped by the scanner stage, nothing is sent', () => {
  const file = path.join(TMP, 'probe.sip');
  fs.writeFileSync(file, [
    'OPTIONS sip:100@192.0.2.1 SIP/2.0', 'Via: SIP/2.0/UDP 198.51.100.9:5061;branch=z9hG4bK-1;rport', 'Max-Forwards: 70',
    'To: "sipvicious"<sip:100@1.1.1.1>', 'From: "sipvicious"<sip:100@1.1.1.1>;tag=31303001383234', 'User-Agent: friendly-scanner',
    'Call-ID: 1234', 'CSeq: 1 OPTIONS', 'Content-Length: 0', '', ''].join('\n'));
  const r = cli('explain', file, '--source', '198.51.100.9:5061', '--no-config', '--upstream', 'udp:127.0.0.1:5080');
  assert.equal(r.code, 4, r.stderr); // dropped (README: explain exit codes)
  assert.match(r.stdout, /scanner +enforce +drop, reason scanner_user_agent, rule \S+ +<- decides/);
  assert.match(r.stdout, /^forward +no$/m);
  // the stateful stages are named, with what they would do, not silently left out
  assert.match(r.stdout, /^not evaluated here \(they need the running edge\):\n {2}ratelimit +enforce .*\n {2}ping +enforce +pings: answer .*\n {2}auth +enforce +other served names: pbx.*\n {2}userlimit +enforce +per-user budgets/m);
});

// --- check reports everything, explain and bans speak to scripts and people ------------------

test('check: every error of every file in one run (config schema and semantics, a rule file\'s schema and regex errors, the users file), exit 1', () => {
  const dir = fs.mkdtempSync(path.join(TMP, 'all-'));
  const rules = path.join(dir, 'rules');
  fs.mkdirSync(rules);
  // one signature the schema refuses (a misspelt key), one whose regex does not compile
  fs.writeFileSync(path.join(rules, 'scanner.yaml'), [
    'signatures:',
    '  - name: typo',
    '    confidense: high',
    '    match: { where: user-agent, pattern: "x" }',
    '  - name: bad_regex',
    '    confidence: high',
    '    match: { where: user-agent, pattern: "((" }',
    '',
  ].join('\n'));
  const users = path.join(dir, 'users.txt');
  fs.writeFileSync(users, 'alice example.com SHA-256=nothex\n', { mode: 0o600 });
  const file = path.join(dir, 'edge.yaml');
  fs.writeFileSync(file, [
    'listne: [udp:127.0.0.1:0]',           // schema: unknown key
    'upstreams: [udp:pbx.example.com:5060]', // semantics: not an IP literal
    'rules: rules',
    'auth:',
    '  users: users.txt',
    '  secret: "ab0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e"',
    '',
  ].join('\n'));
  const r = cli('check', '--config', file);
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stdout, '');
  const lines = r.stderr.trim().split('\n');
  assert.match(lines.find((l) => l.startsWith(`${file}:1:1: unknown key "listne"`)) ?? '', /listen/, r.stderr);
  assert.ok(lines.some((l) => l.startsWith(`${file}:2:`) && /pbx\.example\.com/.test(l)), `the upstream error too:\n${r.stderr}`);
  assert.ok(lines.some((l) => /scanner\.yaml:3:\d+: .*confidense/.test(l)), `the rule file's schema error:\n${r.stderr}`);
  assert.ok(lines.some((l) => /scanner\.yaml:7:\d+: .*regular expression/.test(l)), `and its regex error in the same run:\n${r.stderr}`);
  assert.ok(lines.some((l) => l.startsWith(`${users}:1:`)), `the users file's error:\n${r.stderr}`);
});

test('explain: exit code by verdict for scripts: 0 forward, 3 reply, 4 drop', () => {
  const msg = (ua: string, extra: string[] = []): string => {
    const file = path.join(TMP, `explain-${Math.random().toString(36).slice(2)}.sip`);
    fs.writeFileSync(file, [
      'OPTIONS sip:100@127.0.0.1 SIP/2.0', 'Via: SIP/2.0/UDP 198.51.100.9:5061;branch=z9hG4bK-1;rport', 'Max-Forwards: 70',
      'To: <sip:100@127.0.0.1>', 'From: <sip:200@127.0.0.1>;tag=abc', `User-Agent: ${ua}`, ...extra,
      'Call-ID: 1234', 'CSeq: 1 OPTIONS', 'Content-Length: 0', '', ''].join('\n'));
    return file;
  };
  const run = (file: string): { code: number | null; stdout: string; stderr: string } =>
    cli('explain', file, '--source', '198.51.100.9:5061', '--no-config', '--upstream', 'udp:127.0.0.1:5080');
  const fwd = run(msg('Yealink SIP-T46S'));
  assert.equal(fwd.code, 0, fwd.stdout + fwd.stderr);
  assert.match(fwd.stdout, /^forward +yes/m);
  const reply = run(msg('Yealink SIP-T46S', ['Max-Forwards: 70'])); // duplicated Max-Forwards: sanity 400
  assert.equal(reply.code, 3, reply.stdout + reply.stderr);
  assert.match(reply.stdout, /^verdict +reply/m);
  const drop = run(msg('friendly-scanner'));
  assert.equal(drop.code, 4, drop.stdout + drop.stderr);
  assert.match(drop.stdout, /^verdict +drop/m);
});
