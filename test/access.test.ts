// Access stage and access.yaml compiler: inline lists with and without names, list files with
// comments and errors at their line numbers, IPv6 prefixes, longest-prefix and equal-prefix
// precedence, 100,000-entry lists, trusted sources, and the stage's verdicts.
import { after, test } from 'node:test';
import { snapshotWith } from './helpers/snapshot';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadYamlText, loadYamlFile } from '../edge/config/yaml';
import { parseMessage } from '../edge/sip/parser';
import type { Endpoint, SipMessage } from '../edge/sip/types';
import type { MessageContext, Trust, Verdict } from '../edge/verdict';
import { AccessFileSchema, compileAccess, NOT_ALLOWED_RULE, type AccessCompileResult } from '../edge/policy/access/compile';
import type { RulesSnapshot } from '../edge/policy/snapshot';
import type { CompiledAccess } from '../edge/policy/access/compile';
import { ACCESS_REASONS, accessTrust, createAccessStage } from '../edge/policy/access/stage';

const ROOT = path.resolve(__dirname, '../..');

const dirs: string[] = [];
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function tmpDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'sip-edge-access-'));
  dirs.push(d);
  return d;
}

/** compile access.yaml text as the loader does: errors name "rules/access.yaml:line:col" */
function compile(yaml: string, baseDir = tmpDir()): AccessCompileResult {
  const r = loadYamlText(yaml, 'rules/access.yaml', AccessFileSchema);
  assert.ok(r.ok, `schema must accept: ${r.ok ? '' : r.errors.join('; ')}`);
  return compileAccess(r.value, r.at, baseDir);
}

function ok(yaml: string, baseDir?: string): CompiledAccess {
  const r = compile(yaml, baseDir);
  assert.deepEqual(r.errors, []);
  return r.access;
}


function snapshot(access: CompiledAccess): RulesSnapshot {
  return snapshotWith({ stages: [{ name: 'sanity', mode: 'enforce' }, { name: 'access', mode: 'enforce' }], trustedSkip: new Set(['geoip']), access });
}

const INVITE = (() => {
  // the headers name a denied address everywhere: the stage must not read them
  const lines = [
    'INVITE sip:bob@example.com SIP/2.0',
    'Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds;received=198.51.100.7',
    'Max-Forwards: 70',
    'To: <sip:bob@example.com>',
    'From: <sip:alice@198.51.100.7>;tag=1928301774',
    'Call-ID: a84b4c76e66710@198.51.100.7',
    'CSeq: 314159 INVITE',
    'Contact: <sip:alice@198.51.100.7:5060>',
    'X-Forwarded-For: 198.51.100.7',
    'Content-Length: 0',
  ];
  const r = parseMessage(Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), { framing: 'datagram' });
  assert.ok(r.ok);
  return r.msg;
})();

function ctx(address: string, side: 'outside' | 'inside' = 'outside', trust: Trust = 'untrusted', msg: SipMessage = INVITE): MessageContext {
  const source: Endpoint = { transport: 'udp', address, port: 5060, listenerId: 'udp:127.0.0.1:5060' };
  return { msg, source, side, trust, receivedAt: 0 };
}

function run(access: CompiledAccess, c: MessageContext): Verdict {
  const v = createAccessStage(() => snapshot(access)).check(c);
  assert.ok(!(v instanceof Promise));
  return v as Verdict;
}

test('inline lists: bare and named entries, default rule names, counts', () => {
  const r = compile(`
deny:
  - 198.51.100.0/24
  - { cidr: 203.0.113.0/24, name: abuse-203 }
allow:
  - 192.0.2.0/24
trusted:
  - { cidr: 2001:db8:100::/48, name: carrier-a }
  - 192.0.2.10
`);
  assert.deepEqual(r.errors, []);
  const a = r.access;
  assert.deepEqual(a.classify('198.51.100.7'), { list: 'deny', rule: 'access:deny:198.51.100.0/24' });
  assert.deepEqual(a.classify('203.0.113.99'), { list: 'deny', rule: 'abuse-203' });
  assert.deepEqual(a.classify('192.0.2.1'), { list: 'allow', rule: 'access:allow:192.0.2.0/24' });
  assert.deepEqual(a.classify('192.0.2.10'), { list: 'trusted', rule: 'access:trusted:192.0.2.10' });
  assert.deepEqual(a.classify('2001:db8:100:5::1'), { list: 'trusted', rule: 'carrier-a' });
  assert.equal(a.classify('8.8.8.8'), null);
  assert.equal(a.allowListActive, true);
  assert.deepEqual(a.denyAction, { kind: 'drop' });
  assert.deepEqual(a.counts, { allow: 1, deny: 2, trusted: 2 });
  assert.deepEqual([...r.ruleNames].sort(), [
    'abuse-203', 'access:allow:192.0.2.0/24', 'access:deny:198.51.100.0/24', 'access:trusted:192.0.2.10', 'carrier-a', NOT_ALLOWED_RULE,
  ].sort());
});

test('longest prefix wins; at equal prefix deny beats allow beats trusted, in any order', () => {
  const a = ok(`
trusted: [10.1.2.0/24, 172.16.0.0/12]
deny: [10.0.0.0/8, 172.16.0.0/12, 10.1.2.3]
allow: [10.1.0.0/16, 172.16.0.0/12, 192.168.0.0/16]
files: []
`);
  assert.equal(a.classify('10.9.9.9')?.list, 'deny');     // only /8
  assert.equal(a.classify('10.1.9.9')?.list, 'allow');    // /16 beats /8
  assert.equal(a.classify('10.1.2.9')?.list, 'trusted');  // /24 beats /16
  assert.equal(a.classify('10.1.2.3')?.list, 'deny');     // /32 beats /24
  assert.equal(a.classify('172.20.0.1')?.list, 'deny');   // same /12 on all three lists
  assert.deepEqual(a.counts, { allow: 2, deny: 3, trusted: 1 });
  const b = ok('allow: [192.0.2.0/24]\ntrusted: [192.0.2.0/24]\n');
  assert.equal(b.classify('192.0.2.5')?.list, 'allow');
  const c = ok('trusted: [192.0.2.0/24]\nallow: [192.0.2.0/24]\n');
  assert.equal(c.classify('192.0.2.5')?.list, 'allow');
  // host bits set are refused as in the config file (edge/net/cidr.ts: a typo for one host must
  // not turn into a whole network on a list)
  assert.deepEqual(compile('trusted: [10.1.2.3/8]\n').errors, ['rules/access.yaml:1:11: invalid CIDR "10.1.2.3/8": host bits set (did you mean "10.0.0.0/8"?)']);
});

test('IPv6: prefixes and single addresses, any spelling; IPv4-mapped sources match IPv4 entries', () => {
  const a = ok(`
deny:
  - 2001:db8:bad::/48
  - 2001:db8::1
  - 192.0.2.66
allow:
  - 2001:db8::/32
`);
  assert.equal(a.classify('2001:db8:bad:1::5')?.list, 'deny');
  assert.equal(a.classify('2001:DB8:BAD:0:0:0:0:1')?.list, 'deny');
  assert.equal(a.classify('[2001:db8:bad::1]')?.list, 'deny');
  assert.equal(a.classify('2001:db8::1')?.list, 'deny');
  assert.equal(a.classify('2001:db8::2')?.list, 'allow');
  assert.equal(a.classify('2001:db8:bae::1')?.list, 'allow');
  assert.equal(a.classify('2001:db9::1'), null);
  assert.equal(a.classify('::ffff:192.0.2.66')?.list, 'deny');
  assert.equal(a.classify('::ffff:c000:242')?.list, 'deny');
});

test('hostile or odd input to classify gives null, never a throw', () => {
  const a = ok('deny: [0.0.0.0/0, "::/0"]\n');
  for (const s of ['', 'example.com', '1.2.3', '01.2.3.4', '1.2.3.4.5', ':::', 'x'.repeat(100000), '1.2.3.4/8']) {
    assert.equal(a.classify(s), null, s.slice(0, 20));
  }
  assert.equal(a.classify(undefined as unknown as string), null);
  assert.equal(a.classify('203.0.113.1')?.list, 'deny');
  assert.equal(a.classify('2001:db8::1')?.list, 'deny');
});

test('invalid inline entries are errors at their file:line:column', () => {
  const r = compile(`deny:
  - 198.51.100.0/24
  - 10.0.0.300/8
  - { cidr: 10.0.0.0/33, name: too-long }
allow:
  - 2001:db8::/129
`);
  assert.deepEqual(r.errors, [
    'rules/access.yaml:3:5: invalid CIDR "10.0.0.300/8": not an IP address or CIDR (e.g. "192.0.2.7", "10.0.0.0/8", "2001:db8::/32")',
    'rules/access.yaml:4:13: invalid CIDR "10.0.0.0/33": prefix length must be 0..32',
    'rules/access.yaml:6:5: invalid CIDR "2001:db8::/129": prefix length must be 0..128',
  ]);
});

test('schema: unknown keys, bad list kinds, bad names and bad actions are refused with positions', () => {
  const bad = (yaml: string): string[] => {
    const r = loadYamlText(yaml, 'rules/access.yaml', AccessFileSchema);
    assert.ok(!r.ok);
    return r.errors;
  };
  assert.match(bad('dney: [10.0.0.0/8]\n')[0]!, /^rules\/access\.yaml:1:1: unknown key "dney" \(did you mean "deny"\?\)/);
  assert.match(bad('files:\n  - { path: x.txt, list: block }\n')[0]!, /^rules\/access\.yaml:2:\d+: files\[0\]\.list: expected allow, deny or trusted/);
  assert.match(bad('denyAction: ban\n')[0]!, /^rules\/access\.yaml:1:13: denyAction: expected drop or reject/);
  assert.match(bad('deny:\n  - { cidr: 10.0.0.0/8, name: "bad name!" }\n')[0]!, /^rules\/access\.yaml:2:\d+: /);
  // defaults: an empty file is valid and says nothing
  const r = loadYamlText('', 'rules/access.yaml', AccessFileSchema);
  assert.ok(r.ok);
  const c = compileAccess(r.value, r.at, tmpDir());
  assert.deepEqual(c.errors, []);
  assert.equal(c.access.allowListActive, false);
  assert.equal(c.access.classify('198.51.100.1'), null);
});

test('list files: comments, blank lines, CRLF, BOM; entries carry the file rule name; errors name file:line', () => {
  const dir = tmpDir();
  fs.mkdirSync(path.join(dir, 'lists'));
  fs.writeFileSync(path.join(dir, 'lists', 'scanners.txt'), '\ufeff# scanners seen\r\n\r\n198.51.100.0/24\r\n203.0.113.9   # one host\r\n2001:db8:bad::/48 ; note\r\n');
  fs.writeFileSync(path.join(dir, 'lists', 'bad.txt'), '192.0.2.0/24\n# ok so far\n10.0.0.300/8\n\nnot-a-cidr\n2001:db8::/200\n192.0.2.128/25\n');
  fs.writeFileSync(path.join(dir, 'lists', 'partners.txt'), '192.0.2.200\n');
  const r = compile(`
files:
  - { path: lists/scanners.txt, list: deny }
  - { path: lists/bad.txt, list: deny, name: bad-list }
  - { path: lists/partners.txt, list: trusted, name: partners }
`, dir);
  assert.deepEqual(r.errors, [
    'rules/lists/bad.txt:3: invalid CIDR "10.0.0.300/8": not an IP address or CIDR (e.g. "192.0.2.7", "10.0.0.0/8", "2001:db8::/32")',
    'rules/lists/bad.txt:5: invalid CIDR "not-a-cidr": not an IP address or CIDR (e.g. "192.0.2.7", "10.0.0.0/8", "2001:db8::/32")',
    'rules/lists/bad.txt:6: invalid CIDR "2001:db8::/200": prefix length must be 0..128',
  ]);
  const a = r.access;
  assert.deepEqual(a.classify('198.51.100.77'), { list: 'deny', rule: 'access:deny:scanners' });
  assert.deepEqual(a.classify('203.0.113.9'), { list: 'deny', rule: 'access:deny:scanners' });
  assert.equal(a.classify('203.0.113.10'), null);
  assert.deepEqual(a.classify('2001:db8:bad:ffff::1'), { list: 'deny', rule: 'access:deny:scanners' });
  assert.deepEqual(a.classify('192.0.2.129'), { list: 'deny', rule: 'bad-list' });
  assert.deepEqual(a.classify('192.0.2.200'), { list: 'trusted', rule: 'partners' });
  assert.deepEqual([...r.files].sort(), ['bad.txt', 'partners.txt', 'scanners.txt'].map((f) => path.join(dir, 'lists', f)));
  assert.ok(r.ruleNames.includes('access:deny:scanners') && r.ruleNames.includes('bad-list') && r.ruleNames.includes('partners'));
});

test('list files: a missing file is an error at its path node; many bad lines are summarised', () => {
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, 'junk.txt'), Array.from({ length: 30 }, (_, i) => `junk-${i}`).join('\n'));
  const r = compile(`files:
  - { path: lists/missing.txt, list: deny }
  - { path: junk.txt, list: allow }
`, dir);
  assert.equal(r.errors[0], 'rules/access.yaml:2:13: rules/lists/missing.txt: cannot read list file (ENOENT)');
  assert.equal(r.errors.filter((e) => e.startsWith('rules/junk.txt:')).length, 21); // 20 lines + summary
  assert.equal(r.errors[1], 'rules/junk.txt:1: invalid CIDR "junk-0": not an IP address or CIDR (e.g. "192.0.2.7", "10.0.0.0/8", "2001:db8::/32")');
  assert.equal(r.errors.at(-1), 'rules/junk.txt: 10 more invalid lines');
});

test('100,000-entry list file loads and matches (longest prefix, both families)', () => {
  const dir = tmpDir();
  const lines: string[] = ['# generated'];
  for (let i = 0; i < 90_000; i++) lines.push(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
  for (let i = 0; i < 10_000; i++) lines.push(`2001:db8:${i.toString(16)}::/48`);
  fs.writeFileSync(path.join(dir, 'big.txt'), lines.join('\n'));
  const r = compile(`
allow: [10.0.0.0/8]
files:
  - { path: big.txt, list: deny, name: big }
`, dir);
  assert.deepEqual(r.errors, []);
  assert.deepEqual(r.access.counts, { allow: 1, deny: 100_000, trusted: 0 });
  assert.deepEqual(r.access.classify('10.0.0.0'), { list: 'deny', rule: 'big' });
  assert.deepEqual(r.access.classify('10.1.95.143'), { list: 'deny', rule: 'big' }); // i = 89999
  assert.equal(r.access.classify('10.1.95.144')?.list, 'allow'); // i = 90000 was not written
  assert.equal(r.access.classify('2001:db8:270f:1::1')?.list, 'deny'); // 9999 = 0x270f
  assert.equal(r.access.classify('2001:db8:2710::1'), null);
  // a bounded loop of lookups, no timing assertion: each is one probe per prefix length
  let hits = 0;
  for (let i = 0; i < 100_000; i += 7) if (r.access.classify(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`)?.list === 'deny') hits++;
  assert.equal(hits, Math.ceil(90_000 / 7));
});

test('the shipped example list compiles without errors', () => {
  const rulesDir = path.join(ROOT, 'rules');
  const r = compile('files:\n  - { path: lists/example-deny.txt, list: deny, name: example-deny }\n', rulesDir);
  assert.deepEqual(r.errors, []);
  assert.equal(r.access.classify('192.0.2.66')?.rule, 'example-deny');
  assert.equal(r.access.classify('198.51.100.200')?.list, 'deny');
  assert.equal(r.access.classify('2001:db8:bad::7')?.list, 'deny');
  assert.equal(r.access.counts.deny, 3);
  // and a real access.yaml in a rules directory loads through the YAML file loader too
  const dir = tmpDir();
  fs.copyFileSync(path.join(rulesDir, 'lists', 'example-deny.txt'), path.join(dir, 'deny.txt'));
  fs.writeFileSync(path.join(dir, 'access.yaml'), 'denyAction: reject\nfiles:\n  - { path: deny.txt, list: deny }\n');
  const y = loadYamlFile(path.join(dir, 'access.yaml'), AccessFileSchema);
  assert.ok(y.ok);
  const c = compileAccess(y.value, y.at, dir);
  assert.deepEqual(c.errors, []);
  assert.deepEqual(c.access.denyAction, { kind: 'reject', status: 403, phrase: 'Forbidden' });
});

test('stage: deny list drops (or rejects 403), with reason and rule; decides on the source address only', () => {
  const drop = ok('deny:\n  - { cidr: 198.51.100.0/24, name: scanners }\n');
  assert.deepEqual(run(drop, ctx('198.51.100.7')), { action: 'drop', reason: 'ip_denied', rule: 'scanners' });
  assert.deepEqual(run(drop, ctx('::ffff:198.51.100.7')), { action: 'drop', reason: 'ip_denied', rule: 'scanners' });
  // every header of INVITE names 198.51.100.7, but the packet came from elsewhere: no decision
  assert.deepEqual(run(drop, ctx('192.0.2.1')), { action: 'continue' });
  const rej = ok('denyAction: reject\ndeny: [198.51.100.0/24]\n');
  assert.deepEqual(run(rej, ctx('198.51.100.7')), { action: 'reply', status: 403, reason: 'ip_denied', phrase: 'Forbidden', rule: 'access:deny:198.51.100.0/24' });
});

test('stage: an active allow-list refuses sources on no list; allowed, trusted and config-trusted pass', () => {
  const a = ok('allow: [192.0.2.0/24]\ntrusted: [203.0.113.5]\ndeny: [192.0.2.66]\n');
  assert.deepEqual(run(a, ctx('8.8.8.8')), { action: 'drop', reason: 'ip_not_allowed', rule: NOT_ALLOWED_RULE });
  assert.deepEqual(run(a, ctx('2001:db8::1')), { action: 'drop', reason: 'ip_not_allowed', rule: NOT_ALLOWED_RULE });
  assert.deepEqual(run(a, ctx('192.0.2.1')), { action: 'continue' });
  assert.deepEqual(run(a, ctx('203.0.113.5')), { action: 'continue' });
  assert.deepEqual(run(a, ctx('192.0.2.66')), { action: 'drop', reason: 'ip_denied', rule: 'access:deny:192.0.2.66' });
  // a peer the main config trusts (--trusted) is allowed, but not past a deny entry
  assert.deepEqual(run(a, ctx('8.8.8.8', 'outside', 'trusted')), { action: 'continue' });
  assert.equal(run(a, ctx('192.0.2.66', 'outside', 'trusted')).action, 'drop');
  // without an allow-list nobody is refused for being unlisted
  assert.deepEqual(run(ok('deny: [192.0.2.66]\n'), ctx('8.8.8.8')), { action: 'continue' });
});

test('stage: inside traffic always passes; shape of the stage; accessTrust', () => {
  const a = ok('allow: [192.0.2.0/24]\ndeny: [10.0.0.0/8]\ntrusted: [{ cidr: "2001:db8:100::/48", name: carrier-a }]\n');
  assert.deepEqual(run(a, ctx('10.0.0.5', 'inside', 'inside')), { action: 'continue' });
  assert.deepEqual(run(a, ctx('127.0.0.1', 'inside', 'inside')), { action: 'continue' });
  const stage = createAccessStage(() => snapshot(a));
  assert.equal(stage.name, 'access');
  assert.equal(stage.skippableForTrusted, false);
  assert.deepEqual([...stage.reasons], ['ip_denied', 'ip_not_allowed']);
  assert.deepEqual([...ACCESS_REASONS], ['ip_denied', 'ip_not_allowed']);
  const snap = snapshot(a);
  assert.equal(accessTrust(snap, '2001:db8:100::9'), true);
  assert.equal(accessTrust(snap, '2001:db8:101::9'), false);
  assert.equal(accessTrust(snap, '192.0.2.1'), false);
  assert.equal(accessTrust(snap, 'garbage'), false);
});

test('stage: reads the current snapshot on every message (a reload takes effect at once)', () => {
  let current = snapshot(ok('deny: [198.51.100.0/24]\n'));
  const stage = createAccessStage(() => current);
  assert.equal((stage.check(ctx('198.51.100.1')) as Verdict).action, 'drop');
  current = snapshot(ok('deny: [203.0.113.0/24]\n'));
  assert.equal((stage.check(ctx('198.51.100.1')) as Verdict).action, 'continue');
  assert.equal((stage.check(ctx('203.0.113.1')) as Verdict).action, 'drop');
});
