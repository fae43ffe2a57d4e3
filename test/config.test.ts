// Config loading: schema defaults, overrides, and every kind of error at its exact file:line:column.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { Type } from '@sinclair/typebox';
import { loadConfig, parseTransportSpec } from '../edge/config/load';
import { loadYamlFile, loadYamlText, suggest } from '../edge/config/yaml';
import { ConfigFileSchema } from '../edge/config/schema';
import { DEFAULT_LIMITS } from '../edge/sip/parser';
import { tempDir } from './helpers/tmp';

const ROOT = path.resolve(__dirname, '../..');
const SHIPPED = path.join(ROOT, 'sip-edge.yaml');
const { dir: TMP, file: tmp } = tempDir('sipedge-config-');
const UP = { upstreams: ['udp:127.0.0.1:5080'] };

test('built-in defaults match the values named in edge/config/types.ts', () => {
  const r = loadConfig({ overrides: UP, env: {} });
  assert.ok(r.ok, JSON.stringify(r));
  const c = r.config;
  assert.deepEqual(c.listen, [
    { transport: 'udp', host: '127.0.0.1', port: 5060 },
    { transport: 'tcp', host: '127.0.0.1', port: 5060 },
  ]);
  assert.deepEqual(c.upstreams, [{ transport: 'udp', host: '127.0.0.1', port: 5080 }]);
  assert.equal(c.advertise, undefined);
  assert.deepEqual([c.domains, c.inside, c.trusted], [[], [], []]);
  assert.equal(c.secret, undefined);
  assert.deepEqual(c.limits, DEFAULT_LIMITS);
  assert.deepEqual(c.tcp, { maxConnections: 10000, maxConnectionsPerSource: 32, unknownPercent: 80, promotedPercent: 90, messageTimeoutMs: 10000, idleTimeoutMs: 180000 });
  assert.deepEqual(c.udp, { ioThread: true, recvBufferBytes: 4194304 });
  // 3/4 of 1024 MiB at 2 x 16384 + 4096 bytes per live transaction (edge/transaction/table.ts)
  assert.deepEqual(c.transactions, { max: 21845, memoryBudgetMB: 1024, t1Ms: 500, t2Ms: 4000, t4Ms: 5000 });
  assert.deepEqual(c.health, { intervalMs: 5000, timeoutMs: 2000, failuresBeforeDown: 2, retryAfterSeconds: 30 });
  assert.deepEqual(c.proxy, { recordRoute: true, path: true, maxForwards: 70 });
  assert.equal(c.shutdownGraceMs, 5000);
  assert.equal(c.warmUpCalls, 2000);
  assert.deepEqual(c.log, { level: 'info' });
  assert.deepEqual(c.metrics, { listen: '127.0.0.1:9090' });
  assert.deepEqual(c.dns, {
    servers: [], timeoutMs: 2000, attempts: 2, maxOutstanding: 256, ipv6: true, preferIpv6: false,
    cache: { maxNames: 10000, minTtlSeconds: 1, maxTtlSeconds: 3600, maxNegativeTtlSeconds: 300, negativeTtlSeconds: 30, errorTtlSeconds: 5, staleSeconds: 3600 },
  });
  assert.equal(c.configFile, undefined);
});

test('dns: servers are IP literals with an optional port (53 by default); errors at file:line', () => {
  const good = loadConfig({ file: tmp('dns:\n  servers: ["10.0.0.53", "[2001:db8::53]:5353", "127.0.0.1:5300"]\n  cache:\n    maxTtlSeconds: 60\n'), overrides: UP, env: {} });
  assert.ok(good.ok, JSON.stringify(good));
  assert.deepEqual(good.config.dns?.servers, [{ address: '10.0.0.53', port: 53 }, { address: '2001:db8::53', port: 5353 }, { address: '127.0.0.1', port: 5300 }]);
  assert.equal(good.config.dns?.cache.maxTtlSeconds, 60);
  const file = tmp('dns:\n  servers:\n    - resolver.example\n    - "10.0.0.1:0"\n    - "0.0.0.0"\n  cache:\n    minTtlSeconds: 100\n    maxTtlSeconds: 10\n');
  assert.deepEqual(errorsOf(loadConfig({ file, overrides: UP, env: {} })), {
    ok: false,
    errors: [
      `${file}:3:7: dns.servers "resolver.example": not an IP address`,
      `${file}:4:7: dns.servers "10.0.0.1:0": port must be 1..65535`,
      `${file}:5:7: dns.servers "0.0.0.0": a wildcard address is not a server`,
      `${file}:7:20: dns.cache.minTtlSeconds: must not exceed dns.cache.maxTtlSeconds`,
    ],
  });
});

test('the shipped sip-edge.yaml is valid and spells out exactly the built-in defaults', () => {
  const shipped = loadConfig({ file: SHIPPED, env: {} });
  assert.ok(shipped.ok, JSON.stringify(shipped));
  const defaults = loadConfig({ overrides: UP, env: {} });
  assert.ok(defaults.ok);
  assert.equal(shipped.config.configFile, SHIPPED);
  assert.deepEqual({ ...shipped.config, configFile: undefined }, { ...defaults.config, configFile: undefined });
});

test('the resolved config is deeply frozen', () => {
  const r = loadConfig({ overrides: UP, env: {} });
  assert.ok(r.ok);
  assert.ok(Object.isFrozen(r.config) && Object.isFrozen(r.config.listen) && Object.isFrozen(r.config.listen[0]));
  assert.ok(Object.isFrozen(r.config.limits) && Object.isFrozen(r.config.metrics));
});

test('an empty file means all defaults', () => {
  const r = loadConfig({ file: tmp('# nothing but a comment\n'), overrides: UP, env: {} });
  assert.ok(r.ok, JSON.stringify(r));
  assert.equal(r.config.limits.maxHeaders, 100);
});

test('file values are used; CLI list flags replace the file lists', () => {
  const file = tmp(
    [
      'listen: [udp:0.0.0.0:5060, tcp:0.0.0.0:5060, "udp:[::]:5060"]',
      'upstreams: [udp:10.0.0.5:5060]',
      'domains: [Example.COM]',
      'inside: [10.0.0.0/8]',
      'trusted: [198.51.100.7]',
      'advertise: sip.example.com:5070',
      'limits: { maxHeaders: 50 }',
      'log: { level: debug }',
      '',
    ].join('\n'),
  );
  const plain = loadConfig({ file, env: {} });
  assert.ok(plain.ok, JSON.stringify(plain));
  assert.equal(plain.config.listen.length, 3);
  assert.deepEqual(plain.config.listen[2], { transport: 'udp', host: '::', port: 5060 });
  assert.deepEqual(plain.config.domains, ['example.com']);
  assert.deepEqual(plain.config.trusted, ['198.51.100.7/32']);
  assert.deepEqual(plain.config.advertise, { host: 'sip.example.com', port: 5070 });
  assert.equal(plain.config.limits.maxHeaders, 50);
  assert.equal(plain.config.limits.maxMessageBytes, 16384, 'sibling fields keep their defaults');
  assert.equal(plain.config.log.level, 'debug');

  const r = loadConfig({
    file,
    env: {},
    overrides: {
      listen: ['udp:127.0.0.1:0', 'tcp:[::1]:0'],
      upstreams: ['tcp:localhost:5080'],
      domains: ['pbx.example.org'],
      trusted: [],
      metrics: null,
      logLevel: 'warn',
      advertise: null,
    },
  });
  assert.ok(r.ok, JSON.stringify(r));
  assert.deepEqual(r.config.listen, [
    { transport: 'udp', host: '127.0.0.1', port: 0 },
    { transport: 'tcp', host: '::1', port: 0 },
  ]);
  assert.deepEqual(r.config.upstreams, [{ transport: 'tcp', host: '127.0.0.1', port: 5080 }]);
  assert.deepEqual(r.config.domains, ['pbx.example.org']);
  assert.deepEqual(r.config.inside, ['10.0.0.0/8'], 'lists without a flag keep the file value');
  assert.deepEqual(r.config.trusted, []);
  assert.equal(r.config.metrics.listen, null);
  assert.equal(r.config.log.level, 'warn');
  assert.equal(r.config.advertise, undefined);
});

test('SIPEDGE_SECRET overrides the file secret and is length-checked', () => {
  const file = tmp('upstreams: [udp:10.0.0.5:5060]\nsecret: file-secret-0123456789\n');
  const fromFile = loadConfig({ file, env: {} });
  assert.ok(fromFile.ok);
  assert.equal(fromFile.config.secret, 'file-secret-0123456789');
  const fromEnv = loadConfig({ file, env: { SIPEDGE_SECRET: 'env-secret-0123456789' } });
  assert.ok(fromEnv.ok);
  assert.equal(fromEnv.config.secret, 'env-secret-0123456789');
  assert.deepEqual(errorsOf(loadConfig({ file, env: { SIPEDGE_SECRET: 'short' } })), {
    ok: false,
    errors: ['env SIPEDGE_SECRET: must be at least 16 characters'],
  });
});

/** [name, file text, expected error lines with FILE standing for the temp file path] */
const ERROR_CASES: ReadonlyArray<readonly [string, string, readonly string[]]> = [
  ['unknown top-level key with suggestion', 'listne:\n  - udp:127.0.0.1:5060\nupstreams: [udp:10.0.0.5:5060]\n',
    ['FILE:1:1: unknown key "listne" (did you mean "listen"?)']],
  ['unknown nested key with suggestion', 'upstreams: [udp:10.0.0.5:5060]\nlimits:\n  maxHeaders: 90\n  maxHeadrs: 80\n',
    ['FILE:4:3: unknown key "maxHeadrs" in limits (did you mean "maxHeaders"?)']],
  ['unknown key without a close match', 'upstreams: [udp:10.0.0.5:5060]\nfrobnicate: 1\n',
    ['FILE:2:1: unknown key "frobnicate"']],
  ['wrong type', 'upstreams: [udp:10.0.0.5:5060]\ntcp:\n  maxConnections: lots\n',
    ['FILE:3:19: tcp.maxConnections: expected an integer from 1 to 1000000 (got "lots")']],
  ['out of range', 'upstreams: [udp:10.0.0.5:5060]\nproxy: {maxForwards: 300}\n',
    ['FILE:2:22: proxy.maxForwards: expected an integer from 1 to 255 (got 300)']],
  ['YAML 1.2: "yes" is not a boolean', 'upstreams: [udp:10.0.0.5:5060]\nproxy:\n  path: yes\n',
    ['FILE:3:9: proxy.path: expected true or false (got "yes")']],
  ['udp section: a boolean and a bounded size', 'upstreams: [udp:10.0.0.5:5060]\nudp:\n  ioThread: on\n  recvBufferBytes: 1024\n',
    ['FILE:3:13: udp.ioThread: expected true or false (got "on")', 'FILE:4:20: udp.recvBufferBytes: expected an integer from 65536 to 268435456 (got 1024)']],
  ['bad enum', 'upstreams: [udp:10.0.0.5:5060]\nlog:\n  level: loud\n',
    ['FILE:3:10: log.level: expected one of fatal, error, warn, info, debug, trace, silent (got "loud")']],
  ['list expected', 'upstreams: udp:10.0.0.5:5060\n',
    ['FILE:1:12: upstreams: expected a list of strings (at most 10000) (got "udp:10.0.0.5:5060")']],
  ['YAML syntax error', 'upstreams: [udp:10.0.0.5:5060\nlimits:\n',
    ['FILE:2:1: Flow sequence in block collection must be sufficiently indented and end with a ]']],
  ['duplicate key', 'upstreams: [udp:10.0.0.5:5060]\nlog: {level: info}\nlog: {level: debug}\n',
    ['FILE:3:1: Map keys must be unique']],
  ['ws upstream not supported', 'upstreams: [ws:10.0.0.5:5060]\n',
    ['FILE:1:13: upstream "ws:10.0.0.5:5060": transport "ws" is not supported for upstreams yet (use udp or tcp or tls)']],
  ['wss listener without a certificate', 'upstreams: [udp:10.0.0.5:5060]\nlisten:\n  - udp:0.0.0.0:5060\n  - wss:0.0.0.0:4443\n',
    ['FILE:4:5: listen "wss:0.0.0.0:4443": a wss listener needs at least one certificate in tls.certificates ({cert, key})']],
  ['tls listener without a certificate', 'upstreams: [udp:10.0.0.5:5060]\nlisten:\n  - udp:0.0.0.0:5060\n  - tls:0.0.0.0:5061\n',
    ['FILE:4:5: listen "tls:0.0.0.0:5061": a tls listener needs at least one certificate in tls.certificates ({cert, key})']],
  ['tls upstream without a tls listener', 'upstreams: [tls:10.0.0.5:5061]\n',
    ['FILE:1:13: upstream "tls:10.0.0.5:5061": needs a tls listener of the same address family in listen (the edge connects from it)']],
  ['unknown transport', 'upstreams: [udp:10.0.0.5:5060]\nlisten: [sctp:0.0.0.0:5060]\n',
    ['FILE:2:10: listen "sctp:0.0.0.0:5060": unknown transport "sctp" (expected udp or tcp or tls or ws or wss)']],
  ['port out of range', 'upstreams: [udp:10.0.0.5:5060]\nlisten: [udp:0.0.0.0:70000]\n',
    ['FILE:2:10: listen "udp:0.0.0.0:70000": port "70000" is not a number from 0 to 65535']],
  ['missing transport', 'upstreams: [udp:10.0.0.5:5060]\nlisten: ["0.0.0.0:5060"]\n',
    ['FILE:2:10: listen "0.0.0.0:5060": expected "proto:host:port", e.g. "udp:127.0.0.1:5060"']],
  ['IPv6 without brackets', 'upstreams: [udp:10.0.0.5:5060]\nlisten: ["udp:::1:5060"]\n',
    ['FILE:2:10: listen "udp:::1:5060": IPv6 addresses must be in brackets, e.g. "[::1]:5060"']],
  ['listen on a host name', 'upstreams: [udp:10.0.0.5:5060]\nlisten: [udp:edge.example.com:5060]\n',
    ['FILE:2:10: listen "udp:edge.example.com:5060": host "edge.example.com" is not an IP address to bind (use e.g. 0.0.0.0, ::, 127.0.0.1)']],
  ['duplicate listener', 'upstreams: [udp:10.0.0.5:5060]\nlisten:\n  - udp:0.0.0.0:5060\n  - udp:0.0.0.0:5060\n',
    ['FILE:4:5: listen "udp:0.0.0.0:5060": listed twice']],
  ['no listener', 'upstreams: [udp:10.0.0.5:5060]\nlisten: []\n',
    ["FILE:2:9: listen: at least one listener is required (the file's listen list or --listen)"]],
  ['no upstream (absent key points at the document)', 'listen: [udp:0.0.0.0:5060]\n',
    ["FILE:1:1: upstreams: at least one upstream is required (the file's upstreams list or --upstream)"]],
  ['upstream DNS name', 'upstreams:\n  - udp:pbx.example.com:5060\n',
    ['FILE:2:5: upstream "udp:pbx.example.com:5060": host "pbx.example.com" is not an IP address; DNS names for upstreams are not supported yet']],
  ['upstream port 0', 'upstreams: [udp:10.0.0.5:0]\n',
    ['FILE:1:13: upstream "udp:10.0.0.5:0": upstream port must be 1..65535']],
  ['upstream is our own listener', 'listen: [udp:127.0.0.1:5060]\nupstreams: [udp:127.0.0.1:5060]\n',
    ["FILE:2:13: upstream \"udp:127.0.0.1:5060\": is one of the edge's own listeners (forwarding loop)"]],
  ['bad CIDR', 'upstreams: [udp:10.0.0.5:5060]\ninside:\n  - 10.0.0.0/8\n  - 10.0.0.0/33\n',
    ['FILE:4:5: inside "10.0.0.0/33": prefix length must be 0..32']],
  ['CIDR with host bits', 'upstreams: [udp:10.0.0.5:5060]\ntrusted: [192.168.1.10/24]\n',
    ['FILE:2:11: trusted "192.168.1.10/24": host bits set (did you mean "192.168.1.0/24"?)']],
  ['not an address at all', 'upstreams: [udp:10.0.0.5:5060]\ntrusted: [carrier]\n',
    ['FILE:2:11: trusted "carrier": not an IP address or CIDR (e.g. "192.0.2.7", "10.0.0.0/8", "2001:db8::/32")']],
  ['bad domain', 'upstreams: [udp:10.0.0.5:5060]\ndomains: [example.com, "exa mple.com"]\n',
    ['FILE:2:24: domain "exa mple.com": not a valid domain name (RFC 1035 2.3.1 / RFC 1123 2.1)']],
  ['advertise wildcard', 'upstreams: [udp:10.0.0.5:5060]\nadvertise: "0.0.0.0"\n',
    ['FILE:2:12: advertise "0.0.0.0": a wildcard address cannot be advertised']],
  ['metrics on a public address without token', 'upstreams: [udp:10.0.0.5:5060]\nmetrics:\n  listen: 0.0.0.0:9090\n',
    ['FILE:3:11: metrics.listen "0.0.0.0:9090": a non-loopback metrics address requires metrics.token (or SIPEDGE_METRICS_TOKEN)']],
  ['T2 below T1 (RFC 3261 17.1.2.2)', 'upstreams: [udp:10.0.0.5:5060]\ntransactions:\n  t1Ms: 2000\n  t2Ms: 1000\n',
    ['FILE:4:9: transactions.t2Ms: must be at least transactions.t1Ms']],
  ['a transaction cap the memory budget cannot hold (issue 12)', 'upstreams: [udp:10.0.0.5:5060]\ntransactions:\n  memoryBudgetMB: 512\n  max: 100000\n',
    ['FILE:4:8: transactions.max: 100000 live transactions of up to 16384 bytes (limits.maxMessageBytes) need up to 4688 MiB; transactions.memoryBudgetMB 512 holds 10922: raise the budget, lower max or limits.maxMessageBytes, or leave max out']],
  ['a memory budget too small for 100 live transactions', 'upstreams: [udp:10.0.0.5:5060]\nlimits:\n  maxMessageBytes: 1048576\ntransactions:\n  memoryBudgetMB: 16\n',
    ['FILE:5:19: transactions.memoryBudgetMB: 16 MiB holds only 5 live transactions of up to 1048576 bytes (2101248 bytes each at worst); at least 100 are needed']],
  ['short secret', 'upstreams: [udp:10.0.0.5:5060]\nsecret: abc\n',
    ['FILE:2:9: secret: expected a string of 16 to 4096 characters (got "abc")']],
  // a schema error does not hide the semantic errors of the rest of the file (sip-edge check
  // reports everything in one run), and they come in file order
  ['schema and semantic errors are reported together, in file order', 'listen: [sctp:0.0.0.0:5061]\nlimits: {maxHeaders: 1}\nupstreams: [udp:h:1]\n',
    [
      'FILE:1:10: listen "sctp:0.0.0.0:5061": unknown transport "sctp" (expected udp or tcp or tls or ws or wss)',
      'FILE:2:22: limits.maxHeaders: expected an integer from 10 to 1000 (got 1)',
      'FILE:3:13: upstream "udp:h:1": host "h" is not an IP address; DNS names for upstreams are not supported yet',
    ]],
  ['semantic errors are all reported together', 'listen: [sctp:0.0.0.0:5061]\nupstreams: [udp:h:1]\n',
    [
      'FILE:1:10: listen "sctp:0.0.0.0:5061": unknown transport "sctp" (expected udp or tcp or tls or ws or wss)',
      'FILE:2:13: upstream "udp:h:1": host "h" is not an IP address; DNS names for upstreams are not supported yet',
    ]],
];

for (const [name, text, expected] of ERROR_CASES) {
  test(`config error: ${name}`, () => {
    const file = tmp(text);
    const r = loadConfig({ file, env: {} });
    assert.deepEqual(errorsOf(r), { ok: false, errors: expected.map((e) => e.replace('FILE', file)) });
  });
}

test('transactions: the live cap follows the memory budget and the worst-case message size; an explicit max within it wins', () => {
  const cap = (yaml: string): unknown => {
    const r = loadConfig({ file: tmp('upstreams: [udp:10.0.0.5:5060]\n' + yaml), env: {} });
    return r.ok ? r.config.transactions.max : r.errors;
  };
  // floor(0.75 * budget / (2 * maxMessageBytes + 4096))
  assert.equal(cap(''), 21845);
  assert.equal(cap('transactions:\n  memoryBudgetMB: 4096\n'), 87381);
  assert.equal(cap('limits:\n  maxMessageBytes: 4096\ntransactions:\n  memoryBudgetMB: 1024\n'), 65536);
  // smaller messages, more transactions in the same memory; larger ones, fewer
  assert.equal(cap('limits:\n  maxMessageBytes: 65536\n'), 5957);
  assert.equal(cap('transactions:\n  max: 5000\n'), 5000);
  assert.equal(cap('transactions:\n  max: 21845\n'), 21845);
  assert.match(String(cap('transactions:\n  max: 21846\n')), /transactions\.max: 21846 live transactions .* holds 21845/);
});

/** a failed load without its `partial` (where the rule and users files are, for check) */
function errorsOf(r: ReturnType<typeof loadConfig>): unknown {
  return r.ok ? r : { ok: r.ok, errors: r.errors };
}

test('flag errors name the flag', () => {
  assert.deepEqual(errorsOf(loadConfig({ env: {}, overrides: { listen: ['sctp:0.0.0.0:80'], upstreams: ['udp:10.0.0.5:5060'], logLevel: 'chatty', metrics: 'x:y' } })), {
    ok: false,
    errors: [
      '--listen "sctp:0.0.0.0:80": listen "sctp:0.0.0.0:80": unknown transport "sctp" (expected udp or tcp or tls or ws or wss)',
      '--log-level "chatty": expected one of fatal, error, warn, info, debug, trace, silent',
      '--metrics "x:y": metrics.listen "x:y": port "y" is not a number from 0 to 65535',
    ],
  });
});

test('a failed load says where the rule and users files are, for check, as far as the file says', () => {
  const r = loadConfig({ file: tmp('listne: x\nupstreams: [udp:10.0.0.5:5060]\nrules: my-rules\nauth:\n  users: u.txt\n'), env: {} });
  assert.ok(!r.ok);
  assert.equal(r.partial?.rulesDir, path.join(TMP, 'my-rules'));
  assert.equal(r.partial?.auth.fallback.usersFile, path.join(TMP, 'u.txt'));
  const broken = loadConfig({ file: tmp('upstreams: [udp:10.0.0.5:5060\n'), env: {} });
  assert.ok(!broken.ok);
  assert.equal(broken.partial, undefined, 'a YAML syntax error: nothing can be said');
});

test('unreadable file', () => {
  const missing = path.join(TMP, 'does-not-exist.yaml');
  assert.deepEqual(loadConfig({ file: missing, env: {} }), { ok: false, errors: [`${missing}: cannot read file (ENOENT)`] });
});

test('loadYamlText is generic: defaults, nested positions, array items', () => {
  const Rule = Type.Object(
    { name: Type.String(), weight: Type.Integer({ default: 1, minimum: 1 }) },
    { additionalProperties: false },
  );
  const Schema = Type.Object({ rules: Type.Array(Rule, { default: [] }) }, { additionalProperties: false });
  const ok = loadYamlText('rules:\n  - name: a\n', 'r.yaml', Schema);
  assert.ok(ok.ok);
  assert.deepEqual(ok.value, { rules: [{ name: 'a', weight: 1 }] });
  assert.equal(ok.at(['rules', 0, 'name']), 'r.yaml:2:11');
  assert.equal(ok.at(['rules', 0, 'weight']), 'r.yaml:2:5', 'a defaulted field points at its parent');

  const bad = loadYamlText('rules:\n  - name: a\n  - name: b\n    wieght: 2\n  - weight: 0\n    name: c\n', 'r.yaml', Schema);
  assert.ok(!bad.ok);
  assert.deepEqual(bad.errors, [
    'r.yaml:4:5: unknown key "wieght" in rules[1] (did you mean "weight"?)',
    'r.yaml:5:13: rules[2].weight: expected integer to be greater or equal to 1 (got 0)',
  ]);
  // what the schema refused is left out of the repaired value (for check's further errors only):
  // a list entry with an error is removed whole
  assert.deepEqual(bad.repaired?.value, { rules: [{ name: 'a', weight: 1 }] });
  const missing = loadYamlText('rules:\n  - weight: 2\n', 'r.yaml', Schema);
  assert.ok(!missing.ok);
  assert.deepEqual(missing.errors, ['r.yaml:2:5: rules[0].name: required']);
  assert.deepEqual(missing.repaired?.value, { rules: [] });
  // positions in the repaired value map back to the file: items after a removed one moved up
  const shifted = loadYamlText('rules:\n  - name: 1\n  - name: b\n  - name: 2\n  - name: d\n', 'r.yaml', Schema);
  assert.ok(!shifted.ok);
  assert.deepEqual(shifted.repaired?.value, { rules: [{ name: 'b', weight: 1 }, { name: 'd', weight: 1 }] });
  assert.equal(shifted.repaired?.at(['rules', 0, 'name']), 'r.yaml:3:11');
  assert.equal(shifted.repaired?.at(['rules', 1, 'name']), 'r.yaml:5:11');
  // a document the schema refuses as a whole cannot be repaired
  const whole = loadYamlText('- a\n', 'r.yaml', Schema);
  assert.ok(!whole.ok);
  assert.equal(whole.repaired, undefined);
});

test('loadYamlFile bounds alias expansion (billion laughs)', () => {
  const lines = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
  for (let i = 1; i < 12; i++) lines.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${new Array(10).fill('*' + String.fromCharCode(96 + i)).join(', ')}]`);
  const r = loadYamlFile(tmp(lines.join('\n') + '\n'), ConfigFileSchema);
  assert.equal(r.ok, false);
  if (!r.ok) assert.match(r.errors[0], /^.*:1:1: .*[Aa]lias/);
});

test('typo suggestions', () => {
  assert.equal(suggest('listne', ['listen', 'upstreams']), 'listen');
  assert.equal(suggest('upstream', ['listen', 'upstreams']), 'upstreams');
  assert.equal(suggest('Domains', ['domains']), 'domains');
  assert.equal(suggest('zzz', ['listen', 'upstreams']), undefined);
});

test('address helpers canonicalize', () => {
  assert.deepEqual(parseTransportSpec('UDP:[2001:DB8:0:0::1]:5060', 'listen'), { transport: 'udp', host: '2001:db8::1', port: 5060 });
  assert.deepEqual(parseTransportSpec('tcp:[::ffff:10.0.0.1]:5080', 'upstream'), { transport: 'tcp', host: '10.0.0.1', port: 5080 });
  assert.deepEqual(parseTransportSpec('udp:10.0.0.1', 'upstream'), { transport: 'udp', host: '10.0.0.1', port: 5060 }, 'RFC 3261 19.1.2 default port');
  const cidrs = (list: string[]): unknown => {
    const r = loadConfig({ env: {}, overrides: { ...UP, trusted: list } });
    return r.ok ? r.config.trusted : r.errors;
  };
  assert.deepEqual(cidrs(['2001:DB8::/32', '::ffff:10.0.0.0/104', '::/0', '192.0.2.9']), ['2001:db8::/32', '10.0.0.0/8', '::/0', '192.0.2.9/32']);
  assert.deepEqual(cidrs(['2001:db8::1/32']), ['--trusted "2001:db8::1/32": trusted "2001:db8::1/32": host bits set (did you mean "2001:db8::/32"?)']);
  // a zone id names an interface of one host: meaningless in a shared config
  assert.deepEqual(errorsOf(loadConfig({ env: {}, overrides: { upstreams: ['udp:[fe80::1%eth0]:5060'] } })),
    { ok: false, errors: ['--upstream "udp:[fe80::1%eth0]:5060": upstream "udp:[fe80::1%eth0]:5060": host "fe80::1%eth0" is not an IP address; DNS names for upstreams are not supported yet'] });
  const up = loadConfig({ env: {}, overrides: { upstreams: ['udp:[2001:db8:0:0:1:0:0:1]:5060'] } });
  assert.equal(up.ok && up.config.upstreams[0]!.host, '2001:db8::1:0:0:1', 'RFC 5952 4.2.3: first of equal runs');
});

test('resolved addresses agree with edge/net (what the edge matches on)', async () => {
  // the loader parses with edge/net: this pins what it resolves to what the edge matches on
  const { canonicalAddress } = await import('../edge/net/address');
  const { CidrSet } = await import('../edge/net/cidr');
  const r = loadConfig({
    env: {},
    overrides: {
      listen: ['udp:[2001:DB8::0:1]:5060', 'tcp:[::ffff:127.0.0.1]:5060', 'udp:0.0.0.0:5062'],
      upstreams: ['udp:[::1]:5080', 'tcp:10.0.0.5:5080'],
      inside: ['10.0.0.0/8', '2001:DB8:0::/48', '::ffff:192.168.0.0/112', '192.0.2.9'],
      trusted: ['::/0', '0.0.0.0/0'],
    },
  });
  assert.ok(r.ok, JSON.stringify(r));
  for (const h of [...r.config.listen, ...r.config.upstreams].map((s) => s.host)) assert.equal(canonicalAddress(h), h);
  for (const c of [...r.config.inside, ...r.config.trusted]) {
    const set = new CidrSet();
    assert.equal(set.add(c), null, c);
    assert.equal(set.match(c.slice(0, c.indexOf('/'))), c, `edge/net spells ${c} the same way`);
  }
});

// ---- auth section

const SECRET_OK = '9f2c1a7e5b3d8f6a0c4e2b9d7f1a3c5e';

test('auth: without a users file every domain is in pbx mode with the documented defaults', () => {
  const r = loadConfig({ overrides: { ...UP, domains: ['pbx.example.com'] }, env: {} });
  assert.ok(r.ok, JSON.stringify(r));
  const a = r.config.auth!;
  assert.equal(a.fallback.mode, 'pbx');
  assert.equal(a.fallback.realm, 'pbx.example.com', 'the first served domain');
  assert.deepEqual(a.fallback.algorithms, ['SHA-256', 'SHA-512-256', 'MD5'], 'the allow-list accepts MD5: MD5-only phones must not be locked out (rules/auth-clients.yaml chooses per client)');
  assert.deepEqual(a.fallback.qop, ['auth']);
  assert.deepEqual([a.fallback.matchFrom, a.fallback.forwardCredentials, a.fallback.identity, a.fallback.pbxRewrite], [true, false, 'strip', 'challenge']);
  assert.deepEqual([a.nonceSeconds, a.lockout, a.enumeration], [300, { failures: 10, seconds: 900 }, { users: 10, seconds: 60 }]);
});

test('auth: a users file means edge mode, resolved relative to the config file (or --users to the working directory)', () => {
  const f = tmp(`auth:\n  users: users.txt\n  secret: "${SECRET_OK}"\n`);
  const r = loadConfig({ file: f, overrides: UP, env: {} });
  assert.ok(r.ok, JSON.stringify(r));
  assert.equal(r.config.auth!.fallback.mode, 'edge');
  assert.equal(r.config.auth!.fallback.usersFile, path.join(path.dirname(f), 'users.txt'));
  assert.equal(r.config.auth!.secret, SECRET_OK);
  const o = loadConfig({ file: f, overrides: { ...UP, users: 'other.txt' }, env: {} });
  assert.ok(o.ok);
  assert.equal(o.config.auth!.fallback.usersFile, path.resolve('other.txt'));
});

test('auth: edge mode without a nonce secret is fine (the edge makes one per process); a well-known or dull one is refused', () => {
  const none = loadConfig({ file: tmp('auth:\n  users: users.txt\n'), overrides: UP, env: {} });
  assert.ok(none.ok, JSON.stringify(none));
  assert.equal(none.config.auth!.secret, undefined);
  const example = loadConfig({ file: tmp('auth:\n  users: users.txt\n  secret: "change-me-to-32-random-characters"\n'), overrides: UP, env: {} });
  assert.ok(!example.ok);
  assert.match(example.errors.join('\n'), /:3:11: auth secret is a well-known example value/);
  const dull = loadConfig({ file: tmp('auth:\n  users: users.txt\n'), overrides: UP, env: { SIPEDGE_AUTH_SECRET: 'abababababababababab' } });
  assert.ok(!dull.ok);
  assert.match(dull.errors.join('\n'), /env SIPEDGE_AUTH_SECRET: auth secret has fewer than 8 distinct characters/);
  const env = loadConfig({ file: tmp('auth:\n  users: users.txt\n'), overrides: UP, env: { SIPEDGE_AUTH_SECRET: SECRET_OK } });
  assert.ok(env.ok, JSON.stringify(env));
  assert.equal(env.config.auth!.secret, SECRET_OK);
  // the main secret is the fallback
  const main = loadConfig({ file: tmp(`secret: "${SECRET_OK}"\nauth:\n  users: users.txt\n`), overrides: UP, env: {} });
  assert.ok(main.ok, JSON.stringify(main));
  // pbx mode needs no secret
  assert.ok(loadConfig({ file: tmp('auth:\n  mode: pbx\n'), overrides: UP, env: {} }).ok);
});

test('auth: per-domain entries override, must name served domains, and edge mode needs users', () => {
  const f = tmp([
    'domains: [a.example.com, b.example.com]',
    `auth:\n  secret: "${SECRET_OK}"\n  algorithms: [SHA-256]\n  domains:`,
    '    - {name: a.example.com, users: a-users.txt, algorithms: [SHA-256, MD5], identity: assert}',
    '    - {name: B.example.com, mode: off}',
  ].join('\n'));
  const r = loadConfig({ file: f, overrides: UP, env: {} });
  assert.ok(r.ok, JSON.stringify(r));
  const [a, b] = r.config.auth!.domains;
  assert.deepEqual([a!.name, a!.mode, a!.realm, a!.algorithms, a!.identity], ['a.example.com', 'edge', 'a.example.com', ['SHA-256', 'MD5'], 'assert']);
  assert.deepEqual([b!.name, b!.mode, b!.algorithms], ['b.example.com', 'off', ['SHA-256']]);
  assert.equal(r.config.auth!.fallback.mode, 'pbx');
  const schema = loadConfig({ file: tmp('auth:\n  algorithms: [SHA1]\n'), overrides: UP, env: {} });
  assert.ok(!schema.ok);
  assert.match(schema.errors.join('\n'), /:2:16: auth.algorithms\[0\]: expected one of SHA-256, SHA-512-256, MD5/);
  const bad = loadConfig({ file: tmp(`domains: [a.example.com]\nauth:\n  secret: "${SECRET_OK}"\n  domains:\n    - {name: c.example.com}\n    - {name: a.example.com, mode: edge}\n    - {name: a.example.com}\n`), overrides: UP, env: {} });
  assert.ok(!bad.ok);
  const text = bad.errors.join('\n');
  assert.match(text, /:5:\d+: auth.domains: "c.example.com" is not one of the served domains/);
  assert.match(text, /:6:\d+: auth: edge authentication for a.example.com needs a users file/);
  assert.match(text, /:7:\d+: auth.domains: "a.example.com" is listed twice/);
});
