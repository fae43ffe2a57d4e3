// Rule loader: shipped defaults, exact file:line:column for every error kind, version hashing,
// atomic reload and file watching. The scanner / access / geoip compilers belong to other
// modules; most tests here use small stand-ins (STUBS) with the same shape so that they test the
// orchestration only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Type } from '@sinclair/typebox';
import { loadRules, defaultRulesDir, rulesVersion, EMPTY_ACCESS, EMPTY_GEO, EMPTY_SCANNER, type RuleCompilers } from '../edge/policy/load';
import { RulesHolder, RulesLoadError } from '../edge/policy/reload';
import { KNOWN_STAGES } from '../edge/policy/schema';
import { AuthClientsFileSchema, compileAuthClients } from '../edge/auth/clients';
import { compileLimits, defaultLimits, LimitsFileSchema } from '../edge/policy/limits/compile';
import type { RulesSnapshot } from '../edge/policy/snapshot';
import type { CompiledSignature } from '../edge/policy/scanner/compile';

const ROOT = path.resolve(__dirname, '../..');

// ---- stand-in compilers (same signatures as the real ones)

const ScannerStubSchema = Type.Object({
  signatures: Type.Array(Type.Object({ name: Type.String(), userAgent: Type.String() }, { additionalProperties: false }), { default: [] }),
}, { additionalProperties: false });

const AccessStubSchema = Type.Object({
  lists: Type.Array(Type.String(), { default: [] }),
}, { additionalProperties: false });

const GeoStubSchema = Type.Object({
  denyCountries: Type.Array(Type.String(), { default: [] }),
}, { additionalProperties: false });

const STUBS: RuleCompilers = {
  scanner: {
    schema: ScannerStubSchema,
    compile(doc: { signatures: Array<{ name: string; userAgent: string }> }, at) {
      const errors: string[] = [];
      doc.signatures.forEach((s, i) => { if (s.userAgent === '') errors.push(`${at(['signatures', i, 'userAgent'])}: empty pattern`); });
      const signatures: CompiledSignature[] = doc.signatures.map((s) => ({ name: s.name, confidence: 'high', action: { kind: 'drop' } }));
      return { scanner: { signatures, match: () => null }, errors };
    },
  },
  access: {
    schema: AccessStubSchema,
    compile(doc: { lists: string[] }, at, baseDir) {
      const errors: string[] = [];
      const files: string[] = [];
      doc.lists.forEach((f, i) => {
        const p = path.resolve(baseDir, f);
        if (!fs.existsSync(p)) errors.push(`${at(['lists', i])}: list file not found`);
        else files.push(p);
      });
      return { access: EMPTY_ACCESS, errors, files, ruleNames: doc.lists.map((f) => `deny:${f}`) };
    },
  },
  geoip: {
    schema: GeoStubSchema,
    compile(doc: { denyCountries: string[] }) {
      return { geo: EMPTY_GEO, errors: [], ruleNames: doc.denyCountries.length > 0 ? ['geoip_country'] : [] };
    },
  },
  // the real limits compiler: small, pure, and a missing limits.yaml means its defaults
  limits: { schema: LimitsFileSchema, compile: compileLimits },
  authClients: { schema: AuthClientsFileSchema, compile: compileAuthClients },
};

/** rule names every snapshot carries from the default limits (limits.yaml absent) */
const LIMIT_RULE_NAMES = ['limits:aor_register', 'limits:source_all', 'limits:suspicion', 'limits:user_invite'];

// ---- helpers

let tmpCount = 0;
const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'sip-edge-rules-'));
test.after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

/** a fresh rules dir with these files (relative name -> content) */
function rulesDir(files: Record<string, string>): string {
  const dir = path.join(tmpRoot, `r${++tmpCount}`);
  fs.mkdirSync(dir, { recursive: true });
  for (const [name, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    fs.writeFileSync(path.join(dir, name), text);
  }
  return dir;
}

function load(dir: string): ReturnType<typeof loadRules> {
  return loadRules(dir, { compilers: STUBS, displayDir: 'rules' });
}

function ok(dir: string): RulesSnapshot {
  const r = load(dir);
  assert.ok(r.ok, r.ok ? '' : r.errors.join('\n'));
  return r.snapshot;
}

function errorsOf(files: Record<string, string>): readonly string[] {
  const r = load(rulesDir(files));
  assert.equal(r.ok, false, 'expected the rules to be refused');
  return r.ok ? [] : r.errors;
}

const VALID = {
  'stages.yaml': 'stages:\n  - name: sanity\n  - name: access\n  - name: scanner\n    mode: shadow\n  - name: geoip\n    mode: off\ntrustedSkip: [scanner]\n',
  'scanner.yaml': 'signatures:\n  - name: friendly_scanner_ua\n    userAgent: friendly-scanner\n',
  'access.yaml': 'lists:\n  - lists/deny.txt\n',
  'lists/deny.txt': '203.0.113.0/24\n',
  'geoip.yaml': 'denyCountries: [KP]\n',
};

// ---- defaults

test('the shipped rules directory loads with the real compilers: default order, all enforce, trusted skip scanner, geoip, ratelimit, auth and userlimit', () => {
  assert.equal(defaultRulesDir(), path.join(ROOT, 'rules'));
  const r = loadRules(defaultRulesDir());
  assert.ok(r.ok, r.ok ? '' : r.errors.join('\n'));
  const s = r.snapshot;
  assert.deepEqual(s.stages.map((x) => `${x.name}:${x.mode}`), ['sanity:enforce', 'access:enforce', 'scanner:enforce', 'geoip:enforce', 'ratelimit:enforce', 'ping:enforce', 'auth:enforce', 'userlimit:enforce']);
  assert.deepEqual([...s.trustedSkip].sort(), ['auth', 'geoip', 'ratelimit', 'scanner', 'userlimit']);
  assert.match(s.version, /^[0-9a-f]{12}$/);
  assert.ok(s.files.includes(path.join(ROOT, 'rules', 'stages.yaml')));
  // the shipped limits.yaml states exactly the built-in defaults
  assert.ok(s.files.includes(path.join(ROOT, 'rules', 'limits.yaml')));
  assert.deepEqual(JSON.parse(JSON.stringify(s.limits)), JSON.parse(JSON.stringify(defaultLimits())));
  for (const n of LIMIT_RULE_NAMES) assert.ok(s.ruleNames.includes(n), n);
  assert.ok(!Number.isNaN(Date.parse(s.loadedAt)));
  // every signature name is a rule name (metrics pre-declare them)
  for (const sig of s.scanner.signatures) assert.ok(s.ruleNames.includes(sig.name), sig.name);
});

test('an empty rules directory means the default order, empty scanner / access / geoip and the default limits', () => {
  const s = ok(rulesDir({}));
  assert.deepEqual(s.stages.map((x) => x.name), ['sanity', 'access', 'scanner', 'geoip', 'ratelimit', 'ping', 'auth', 'userlimit']);
  assert.deepEqual([...s.trustedSkip].sort(), ['auth', 'geoip', 'ratelimit', 'scanner', 'userlimit']);
  assert.equal(s.scanner, EMPTY_SCANNER);
  assert.equal(s.access, EMPTY_ACCESS);
  assert.equal(s.geoip, EMPTY_GEO);
  assert.deepEqual(s.files, []);
  assert.deepEqual([...s.ruleNames].sort(), LIMIT_RULE_NAMES);
  assert.equal(s.limits.sourceAll.points, 200);
  assert.equal(s.limits.suspicion.points, 20);
  assert.equal(s.version, rulesVersion([]));
  assert.equal(EMPTY_SCANNER.match({} as never), null);
  assert.equal(EMPTY_ACCESS.classify('198.51.100.1'), null);
  assert.equal(EMPTY_GEO.policy.countryMode, 'off');
});

test('a full valid set compiles: modes, order, trusted skip, files and rule names from every compiler', () => {
  const dir = rulesDir(VALID);
  const s = ok(dir);
  assert.deepEqual(s.stages.map((x) => `${x.name}:${x.mode}`), ['sanity:enforce', 'access:enforce', 'scanner:shadow', 'geoip:off']);
  assert.deepEqual([...s.trustedSkip], ['scanner']);
  assert.deepEqual(s.scanner.signatures.map((x) => x.name), ['friendly_scanner_ua']);
  assert.deepEqual([...s.ruleNames].sort(), ['deny:lists/deny.txt', 'friendly_scanner_ua', 'geoip_country', ...LIMIT_RULE_NAMES].sort());
  assert.deepEqual([...s.files].map((f) => path.relative(dir, f)).sort(), ['access.yaml', 'geoip.yaml', path.join('lists', 'deny.txt'), 'scanner.yaml', 'stages.yaml']);
  assert.ok(Object.isFrozen(s));
  assert.ok(Object.isFrozen(s.stages));
  assert.ok(Object.isFrozen(s.stages[0]));
  assert.throws(() => { (s as { version: string }).version = 'x'; }, TypeError);
});

test('a stages.yaml that lists only some stages runs only those', () => {
  const s = ok(rulesDir({ 'stages.yaml': 'stages:\n  - name: sanity\n    mode: shadow\n  - name: geoip\ntrustedSkip: []\n' }));
  assert.deepEqual(s.stages.map((x) => `${x.name}:${x.mode}`), ['sanity:shadow', 'geoip:enforce']);
  assert.equal(s.trustedSkip.size, 0);
});

// ---- errors: exact file:line:column

test('bad YAML reports file:line:column', () => {
  assert.deepEqual(errorsOf({ 'stages.yaml': 'stages:\n  - name: sanity\n    mode: enforce: x\n' }), [
    'rules/stages.yaml:3:11: Nested mappings are not allowed in compact mappings',
  ]);
  assert.deepEqual(errorsOf({ 'stages.yaml': 'stages:\n  - name: sanity\n\tmode: enforce\n' }), [
    'rules/stages.yaml:3:1: Tabs are not allowed as indentation',
  ]);
});

test('a duplicated key is a YAML error at the second key', () => {
  const errs = errorsOf({ 'stages.yaml': 'trustedSkip: []\ntrustedSkip: [geoip]\n' });
  assert.match(errs[0]!, /^rules\/stages\.yaml:2:1: /);
});

test('an unknown key is an error with a suggestion, in stages.yaml and in a stage rule file', () => {
  assert.deepEqual(errorsOf({ 'stages.yaml': 'stages:\n  - name: sanity\n    mdoe: enforce\n' }), [
    'rules/stages.yaml:3:5: unknown key "mdoe" in stages[0] (did you mean "mode"?)',
  ]);
  assert.deepEqual(errorsOf({ 'stages.yaml': '# comment\ntrustedskip: [scanner]\n' }), [
    'rules/stages.yaml:2:1: unknown key "trustedskip" (did you mean "trustedSkip"?)',
  ]);
  assert.deepEqual(errorsOf({ 'scanner.yaml': 'signatures:\n  - name: a\n    userAgent: b\n    usrAgent: c\n' }), [
    'rules/scanner.yaml:4:5: unknown key "usrAgent" in signatures[0] (did you mean "userAgent"?)',
  ]);
});

test('sanity not first is an error at the sanity entry', () => {
  assert.deepEqual(errorsOf({ 'stages.yaml': 'stages:\n  - name: access\n  - name: sanity\n' }), [
    'rules/stages.yaml:3:11: sanity must be the first stage',
  ]);
});

test('sanity missing is an error at the first entry', () => {
  assert.deepEqual(errorsOf({ 'stages.yaml': 'stages:\n  - name: access\n  - name: scanner\n' }), [
    'rules/stages.yaml:2:11: sanity must be the first stage (it is missing)',
  ]);
});

test('sanity off is an error at its mode', () => {
  assert.deepEqual(errorsOf({ 'stages.yaml': 'stages:\n  - name: sanity\n    mode: off\n  - name: access\n' }), [
    'rules/stages.yaml:3:11: sanity cannot be off (use shadow to observe without enforcing)',
  ]);
});

test('an unknown stage name is an error with a suggestion; a duplicate stage too', () => {
  const errs = errorsOf({ 'stages.yaml': 'stages:\n  - name: sanity\n  - name: scaner\n  - name: access\n  - name: access\n' });
  assert.deepEqual(errs, [
    `rules/stages.yaml:3:11: unknown stage "scaner" (did you mean "scanner"?); known stages: ${KNOWN_STAGES.join(', ')}`,
    'rules/stages.yaml:5:11: stage "access" is listed twice',
  ]);
});

test('an invalid mode is a schema error at the value', () => {
  const errs = errorsOf({ 'stages.yaml': 'stages:\n  - name: sanity\n    mode: enforcing\n' });
  assert.deepEqual(errs, ['rules/stages.yaml:3:11: stages[0].mode: expected one of enforce, shadow, off (got "enforcing")']);
});

test('trustedSkip containing sanity (or an unknown stage) is an error at the item', () => {
  assert.deepEqual(errorsOf({ 'stages.yaml': 'trustedSkip:\n  - scanner\n  - sanity\n' }), [
    'rules/stages.yaml:3:5: sanity cannot be skipped, not even by trusted sources',
  ]);
  assert.deepEqual(errorsOf({ 'stages.yaml': 'trustedSkip: [geoip, acess]\n' }), [
    `rules/stages.yaml:1:22: unknown stage "acess" (did you mean "access"?); known stages: ${KNOWN_STAGES.join(', ')}`,
  ]);
});

test('errors from several files are all reported, each with its own file, and compile errors keep positions', () => {
  const errs = errorsOf({
    'stages.yaml': 'stages:\n  - name: access\n',
    'scanner.yaml': 'signatures:\n  - name: a\n    userAgent: ""\n',
    'access.yaml': 'lists: [lists/missing.txt]\n',
  });
  assert.deepEqual(errs, [
    'rules/stages.yaml:2:11: sanity must be the first stage (it is missing)',
    'rules/scanner.yaml:3:16: empty pattern',
    'rules/access.yaml:1:9: list file not found',
  ]);
});

test('without displayDir, errors name the file by its path', () => {
  const dir = rulesDir({ 'stages.yaml': 'stages: 3\n' });
  const r = loadRules(dir, { compilers: STUBS });
  assert.equal(r.ok, false);
  const shown = path.relative(process.cwd(), path.join(dir, 'stages.yaml'));
  const expected = shown.startsWith('..') ? path.join(dir, 'stages.yaml') : shown;
  assert.ok(!r.ok && r.errors[0]!.startsWith(`${expected}:1:9: `), !r.ok ? r.errors[0] : '');
});

test('a rules path that is not a directory, and a rule file that is a directory, are errors, not throws', () => {
  const r1 = loadRules(path.join(tmpRoot, 'does-not-exist'), { compilers: STUBS });
  assert.equal(r1.ok, false);
  const dir = rulesDir({});
  fs.mkdirSync(path.join(dir, 'scanner.yaml'));
  const r2 = load(dir);
  assert.deepEqual(r2.ok ? [] : r2.errors, ['rules/scanner.yaml: not a regular file']);
});

test('a compiler that throws is reported as an error at the file, never thrown', () => {
  const dir = rulesDir({ 'geoip.yaml': 'denyCountries: []\n' });
  const broken: RuleCompilers = { ...STUBS, geoip: { schema: GeoStubSchema, compile: () => { throw new Error('boom'); } } };
  const r = loadRules(dir, { compilers: broken, displayDir: 'rules' });
  assert.deepEqual(r.ok ? [] : r.errors, ['rules/geoip.yaml:1:1: internal error while compiling: boom']);
});

// ---- version

test('the version changes when any file changes (rule files and list files) and not otherwise', () => {
  const dir = rulesDir(VALID);
  const v0 = ok(dir).version;
  assert.equal(ok(dir).version, v0, 'same files, same version');
  // touching a file without changing it keeps the version
  const later = new Date(Date.now() + 5000);
  fs.utimesSync(path.join(dir, 'stages.yaml'), later, later);
  assert.equal(ok(dir).version, v0);
  const seen = new Set([v0]);
  for (const [name, text] of Object.entries(VALID)) {
    const file = path.join(dir, name);
    fs.writeFileSync(file, `${text}# edited\n`);
    const v = ok(dir).version;
    assert.ok(!seen.has(v), `editing ${name} must change the version`);
    seen.add(v);
    fs.writeFileSync(file, text);
    assert.equal(ok(dir).version, v0, `restoring ${name} restores the version`);
  }
  // a file appearing (same content as the default it replaces) is a change too
  const d2 = rulesDir({});
  const e0 = ok(d2).version;
  fs.writeFileSync(path.join(d2, 'geoip.yaml'), '');
  assert.notEqual(ok(d2).version, e0);
});

test('the version hash separates file names from contents', () => {
  const a = rulesVersion([{ name: 'a.yaml', bytes: Buffer.from('bc') }]);
  const b = rulesVersion([{ name: 'a.yamlb', bytes: Buffer.from('c') }]);
  assert.notEqual(a, b);
  // order of the input does not matter: files are sorted by name
  const x = { name: 'x', bytes: Buffer.from('1') };
  const y = { name: 'y', bytes: Buffer.from('2') };
  assert.equal(rulesVersion([x, y]), rulesVersion([y, x]));
});

// ---- reload

test('reload keeps the old snapshot on an invalid file and swaps on a valid one', () => {
  const dir = rulesDir(VALID);
  const holder = new RulesHolder(dir, { compilers: STUBS, displayDir: 'rules' });
  const events: string[] = [];
  holder.on('reloaded', (s, prev) => events.push(`reloaded ${prev.version}->${s.version}`));
  holder.on('failed', (errs) => events.push(`failed ${errs.length}`));
  const first = holder.current();

  // unchanged files: ok, nothing swapped, nothing announced
  const same = holder.reload();
  assert.deepEqual(same, { ok: true, version: first.version, changed: false });
  assert.equal(holder.current(), first);

  fs.writeFileSync(path.join(dir, 'stages.yaml'), 'stages:\n  - name: access\n  - name: sanity\n');
  const bad = holder.reload();
  assert.equal(bad.ok, false);
  assert.deepEqual(bad.ok ? [] : bad.errors, ['rules/stages.yaml:3:11: sanity must be the first stage']);
  assert.equal(holder.current(), first, 'the old snapshot stays active');

  fs.writeFileSync(path.join(dir, 'stages.yaml'), 'stages:\n  - name: sanity\n  - name: scanner\n');
  const good = holder.reload();
  assert.ok(good.ok && good.changed);
  const second = holder.current();
  assert.notEqual(second, first);
  assert.equal(good.ok && good.version, second.version);
  assert.deepEqual(second.stages.map((s) => s.name), ['sanity', 'scanner']);
  // the old snapshot is untouched: whoever still holds it sees the old rules
  assert.deepEqual(first.stages.map((s) => s.name), ['sanity', 'access', 'scanner', 'geoip']);
  assert.deepEqual(events, ['failed 1', `reloaded ${first.version}->${second.version}`]);
  holder.close();
});

test('a holder refuses to start on invalid rules: RulesLoadError from new, a value from create()', () => {
  const dir = rulesDir({ 'stages.yaml': 'stages:\n  - name: sanity\n    mode: off\n' });
  assert.throws(() => new RulesHolder(dir, { compilers: STUBS, displayDir: 'rules' }), (e: unknown) =>
    e instanceof RulesLoadError && e.errors[0] === 'rules/stages.yaml:3:11: sanity cannot be off (use shadow to observe without enforcing)');
  const c = RulesHolder.create(dir, { compilers: STUBS, displayDir: 'rules' });
  assert.equal(c.ok, false);
  const g = RulesHolder.create(rulesDir({}), { compilers: STUBS });
  assert.ok(g.ok);
  if (g.ok) g.holder.close();
});

/** resolves with the event's first argument, rejects after `ms` (a bounded wait, not a timing assertion) */
function nextEvent<T>(holder: RulesHolder, event: 'reloaded' | 'failed', ms = 10000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no '${event}' event within ${ms} ms`)), ms);
    holder.once(event as 'failed', ((arg: T) => { clearTimeout(timer); resolve(arg); }) as never);
  });
}

test('watch() reloads after a rule file changes, after a list file changes, and reports a bad edit', async () => {
  const dir = rulesDir(VALID);
  const holder = new RulesHolder(dir, { compilers: STUBS, displayDir: 'rules', debounceMs: 50 });
  try {
    holder.watch();
    const v0 = holder.current().version;

    let next = nextEvent<RulesSnapshot>(holder, 'reloaded');
    fs.writeFileSync(path.join(dir, 'scanner.yaml'), 'signatures:\n  - name: sipvicious_ua\n    userAgent: sipvicious\n');
    const s1 = await next;
    assert.notEqual(s1.version, v0);
    assert.deepEqual(holder.current().scanner.signatures.map((s) => s.name), ['sipvicious_ua']);

    // a list file in a subdirectory (written the way editors do: temp file, then rename)
    next = nextEvent<RulesSnapshot>(holder, 'reloaded');
    const tmp = path.join(dir, 'lists', '.deny.txt.tmp');
    fs.writeFileSync(tmp, '203.0.113.0/24\n198.51.100.0/24\n');
    fs.renameSync(tmp, path.join(dir, 'lists', 'deny.txt'));
    const s2 = await next;
    assert.notEqual(s2.version, s1.version);
    assert.equal(holder.current(), s2);

    const failed = nextEvent<readonly string[]>(holder, 'failed');
    fs.writeFileSync(path.join(dir, 'stages.yaml'), 'stages:\n  - name: sanity\n    mode: off\n');
    const errs = await failed;
    assert.deepEqual(errs, ['rules/stages.yaml:3:11: sanity cannot be off (use shadow to observe without enforcing)']);
    assert.equal(holder.current(), s2, 'a bad edit keeps the last good rules');
  } finally {
    holder.close();
  }
});

// ---- with the real compilers (edge/policy/{scanner,access,geo}/compile.ts)

test('real compilers: errors in scanner.yaml, access.yaml and geoip.yaml carry file:line:column and suggestions', () => {
  const dir = rulesDir({
    'scanner.yaml': 'signatures:\n  - name: ua\n    confidence: high\n    action: drop\n    match:\n      where: user-agent\n      patern: x\n',
    'access.yaml': '# lists\ndenyActon: drop\n',
    'geoip.yaml': 'mode: deny\ncountries: [DE]\nunknownCountry: maybe\n',
  });
  const r = loadRules(dir, { displayDir: 'rules' });
  assert.equal(r.ok, false);
  const errs = r.ok ? [] : r.errors;
  assert.deepEqual(errs, [
    'rules/scanner.yaml:6:7: signatures[0].match.pattern: required',
    'rules/scanner.yaml:7:7: unknown key "patern" in signatures[0].match (did you mean "pattern"?)',
    'rules/access.yaml:2:1: unknown key "denyActon" (did you mean "denyAction"?)',
    'rules/geoip.yaml:3:17: unknownCountry: expected allow or deny (got "maybe")',
  ]);
});

test('real compilers: a list file named by access.yaml is part of the version and its rule name is a rule name', () => {
  const dir = rulesDir({
    'access.yaml': 'files:\n  - { path: lists/deny.txt, list: deny, name: abuse-list }\n',
    'lists/deny.txt': '203.0.113.0/24\n',
    'lists/unrelated.txt': 'not a list access.yaml names\n',
  });
  const a = loadRules(dir);
  assert.ok(a.ok, a.ok ? '' : a.errors.join('\n'));
  assert.ok(a.snapshot.ruleNames.includes('abuse-list'));
  assert.ok(a.snapshot.files.includes(path.join(dir, 'lists', 'deny.txt')));
  assert.ok(!a.snapshot.files.includes(path.join(dir, 'lists', 'unrelated.txt')));
  assert.equal(a.snapshot.access.classify('203.0.113.9')?.rule, 'abuse-list');
  // a file access.yaml does not name changes nothing
  fs.writeFileSync(path.join(dir, 'lists', 'unrelated.txt'), 'still unrelated\n');
  const b = loadRules(dir);
  assert.ok(b.ok);
  assert.equal(b.ok && b.snapshot.version, a.snapshot.version);
  fs.appendFileSync(path.join(dir, 'lists', 'deny.txt'), '198.51.100.0/24\n');
  const c = loadRules(dir);
  assert.ok(c.ok);
  assert.notEqual(c.ok && c.snapshot.version, a.snapshot.version);
  // an invalid line in the list refuses the whole set, naming the file and line
  fs.appendFileSync(path.join(dir, 'lists', 'deny.txt'), '10.0.0.300/8\n');
  const d = loadRules(dir, { displayDir: 'rules' });
  assert.equal(d.ok, false);
  assert.match(d.ok ? '' : d.errors.join('\n'), /rules\/lists\/deny\.txt:3: invalid CIDR "10\.0\.0\.300\/8"/);
});
