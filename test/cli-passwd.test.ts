// `sip-edge passwd` as an operator runs it: the built CLI as a child process with the password on
// stdin, writing the users file the edge reads; plus `--users` for run/check and the no-echo
// prompt's key handling.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { ha1 } from '../edge/auth/digest';
import { UsersDb } from '../edge/auth/users';
import { HiddenLineReader, parseCli } from '../edge/cli';

const CLI = path.resolve(__dirname, '../edge/cli.js');
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-passwd-'));
after(() => fs.rmSync(TMP, { recursive: true, force: true }));
let n = 0;
const tmpDir = (): string => fs.mkdtempSync(path.join(TMP, `d${n++}-`));

/** run the CLI in `cwd` with `stdin` piped in (then closed); bounded by a kill timer */
function passwd(cwd: string, stdin: string | Buffer, ...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [CLI, ...args], { cwd, stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '' } });
    let out = '';
    let err = '';
    c.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    c.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    c.stdin.on('error', () => { /* the CLI may exit before reading everything */ });
    c.stdin.end(stdin);
    const t = setTimeout(() => c.kill('SIGKILL'), 15_000);
    c.on('close', (code) => { clearTimeout(t); resolve({ code, out, err }); });
  });
}

const R = 'pbx.example.com';
const base = ['--no-config', '--realm', R];

test('passwd: creates users.txt (0600) in the working directory with HA1s only, never the password', async () => {
  const dir = tmpDir();
  const r = await passwd(dir, 'Tr0ub4dor&3\n', 'passwd', '1001', ...base);
  assert.deepEqual(r, { code: 0, out: `updated 1001@${R} in users.txt\n`, err: '' });
  const file = path.join(dir, 'users.txt');
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  const text = fs.readFileSync(file, 'utf8');
  assert.ok(!text.includes('Tr0ub4dor'), 'the plaintext is absent');
  const db = UsersDb.load(file);
  assert.ok(db.ok, db.ok ? '' : db.errors.join('\n'));
  // all three algorithms by default, each the HA1 of the password as given (newline stripped)
  for (const alg of ['SHA-256', 'SHA-512-256', 'MD5'] as const) {
    assert.equal(db.db.ha1('1001', R, alg), ha1(alg, '1001', R, 'Tr0ub4dor&3'), alg);
  }
});

test('passwd: a second user is appended, a re-run replaces in place, CRLF on stdin is stripped', async () => {
  const dir = tmpDir();
  assert.equal((await passwd(dir, 'first-password\n', 'passwd', '1001', ...base)).code, 0);
  const one = fs.readFileSync(path.join(dir, 'users.txt'), 'utf8');
  const r2 = await passwd(dir, 'second-password\r\n', 'passwd', '1002', ...base);
  assert.equal(r2.code, 0, r2.err);
  const two = fs.readFileSync(path.join(dir, 'users.txt'), 'utf8');
  assert.ok(two.startsWith(one), 'the first user is untouched');
  assert.equal(two.split('\n').length, one.split('\n').length + 1);
  const db2 = UsersDb.load(path.join(dir, 'users.txt'));
  assert.ok(db2.ok);
  assert.equal(db2.db.ha1('1002', R, 'SHA-256'), ha1('SHA-256', '1002', R, 'second-password'));

  const r3 = await passwd(dir, 'first-password-changed\n', 'passwd', '1001', ...base, '--algorithms', 'SHA-256');
  assert.deepEqual(r3, { code: 0, out: `updated 1001@${R} in users.txt\n`, err: '' });
  const three = fs.readFileSync(path.join(dir, 'users.txt'), 'utf8').split('\n');
  assert.equal(three.length, two.split('\n').length, 'replaced, not added');
  assert.equal(three[1], `1001 ${R} SHA-256=${ha1('SHA-256', '1001', R, 'first-password-changed')}`, 'same position, old HA1s dropped');
  assert.equal(three[2], two.split('\n')[2], '1002 untouched');
  for (const pw of ['first-password', 'second-password']) assert.ok(!three.join('\n').includes(pw), 'no plaintext of any run');
});

test('passwd: weak or missing passwords are refused and the file is not touched', async () => {
  const dir = tmpDir();
  assert.equal((await passwd(dir, 'a-good-password\n', 'passwd', '1001', ...base)).code, 0);
  const before = fs.readFileSync(path.join(dir, 'users.txt'));
  const cases: ReadonlyArray<readonly [string | Buffer, string[], string]> = [
    ['short\n', ['passwd', '1001'], 'sip-edge passwd: the password is shorter than 8 characters\n'],
    ['1234567\n', ['passwd', '1002'], 'sip-edge passwd: the password is shorter than 8 characters\n'],
    ['alice2024\n', ['passwd', 'ALICE2024'], 'sip-edge passwd: the password must not be the user name\n'],
    ['\n', ['passwd', '1003'], 'sip-edge passwd: empty password\n'],
    ['', ['passwd', '1003'], 'sip-edge passwd: no password on stdin\n'],
    ['tab\tin password\n', ['passwd', '1003'], 'sip-edge passwd: the password contains control characters\n'],
    [Buffer.from([0x70, 0x61, 0x73, 0x73, 0xff, 0xfe, 0x77, 0x6f, 0x72, 0x64, 0x0a]), ['passwd', '1003'], 'sip-edge passwd: the password is not valid UTF-8\n'],
    [`${'x'.repeat(5000)}\n`, ['passwd', '1003'], 'sip-edge passwd: the password is longer than 1024 characters\n'],
  ];
  for (const [stdin, args, err] of cases) {
    const r = await passwd(dir, stdin, ...args, ...base);
    assert.deepEqual(r, { code: 1, out: '', err }, JSON.stringify(args));
  }
  assert.deepEqual(fs.readFileSync(path.join(dir, 'users.txt')), before);
});

test('passwd: only the first line of stdin is the password; multi-byte characters count as one', async () => {
  const dir = tmpDir();
  // 8 characters, 16 bytes: long enough
  const r = await passwd(dir, 'ääääääää\nsecond line is ignored\n', 'passwd', '1001', ...base, '--algorithms', 'md5');
  assert.equal(r.code, 0, r.err);
  const db = UsersDb.load(path.join(dir, 'users.txt'));
  assert.ok(db.ok);
  assert.equal(db.db.ha1('1001', R, 'MD5'), ha1('MD5', '1001', R, 'ääääääää'));
  assert.equal(db.db.ha1('1001', R, 'SHA-256'), undefined, '--algorithms md5 writes MD5 only');
});

test('passwd: --file; realm from the config (auth.realm, else the first domain, --domain applies); "give --realm" without one', async () => {
  const dir = tmpDir();
  const cfg = (name: string, text: string): string => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, `upstreams: [udp:127.0.0.1:5080]\n${text}`);
    return f;
  };
  const domains = cfg('domains.yaml', 'domains: [192.0.2.10, a.example.com, b.example.com]\n');
  const file = path.join(dir, 'sub', 'users.db');
  fs.mkdirSync(path.dirname(file));
  const r = await passwd(dir, 'configured-pass\n', 'passwd', 'bob', '--config', domains, '--file', file);
  assert.deepEqual(r, { code: 0, out: `updated bob@a.example.com in ${file}\n`, err: '' }, 'first domain name (not the IP)');
  const db = UsersDb.load(file);
  assert.ok(db.ok && db.db.has('bob', 'a.example.com'));
  assert.ok(!fs.existsSync(path.join(dir, 'users.txt')), '--file, not ./users.txt');

  const over = await passwd(dir, 'configured-pass\n', 'passwd', 'bob', '--config', domains, '--domain', 'voip.example.net');
  assert.deepEqual(over, { code: 0, out: 'updated bob@voip.example.net in users.txt\n', err: '' });

  const realm = cfg('realm.yaml', 'domains: [a.example.com]\nauth:\n  realm: Example-Realm\n');
  const c = await passwd(dir, 'configured-pass\n', 'passwd', 'carol', '--config', realm);
  assert.deepEqual(c, { code: 0, out: 'updated carol@Example-Realm in users.txt\n', err: '' });

  const bare = cfg('bare.yaml', 'domains: [192.0.2.10]\n');
  const none = await passwd(dir, 'configured-pass\n', 'passwd', 'dave', '--config', bare);
  assert.deepEqual(none, { code: 1, out: '', err: `sip-edge passwd: give --realm (the configuration ${bare} names no auth.realm and no domain)\n` });
  const broken = await passwd(dir, 'configured-pass\n', 'passwd', 'dave', '--no-config');
  assert.equal(broken.code, 1);
  assert.match(broken.err, /^sip-edge passwd: no --realm, and the configuration does not load:\nconfig: upstreams: /);
  assert.ok(!fs.readFileSync(path.join(dir, 'users.txt'), 'utf8').includes('dave'));
});

test('passwd: the mode of an existing file is kept, with a warning when others can read it', async () => {
  const dir = tmpDir();
  const file = path.join(dir, 'users.txt');
  fs.writeFileSync(file, '# shared with the ops group\n');
  fs.chmodSync(file, 0o640);
  const r = await passwd(dir, 'a-good-password\n', 'passwd', '1001', ...base);
  assert.equal(r.code, 0);
  assert.equal(r.err, 'sip-edge passwd: warning: users.txt is readable by others (mode 0640); HA1 values are as good as passwords for their realm: chmod 600 users.txt\n');
  assert.equal(fs.statSync(file).mode & 0o777, 0o640);
  assert.ok(fs.readFileSync(file, 'utf8').startsWith('# shared with the ops group\n1001 '));
});

test('passwd: an invalid users file is reported as file:line:col and left alone', async () => {
  const dir = tmpDir();
  const file = path.join(dir, 'users.txt');
  fs.writeFileSync(file, '1001 pbx.example.com MD5=xyz\n', { mode: 0o600 });
  const r = await passwd(dir, 'a-good-password\n', 'passwd', '1002', ...base);
  assert.deepEqual(r, { code: 1, out: '', err: 'users.txt:1:26: MD5: character "x" is not a hex digit\n' });
  assert.equal(fs.readFileSync(file, 'utf8'), '1001 pbx.example.com MD5=xyz\n');
});

test('passwd: usage errors exit 2', async () => {
  const dir = tmpDir();
  const cases: ReadonlyArray<readonly [string[], string]> = [
    [['passwd'], 'sip-edge: passwd needs a user name\n'],
    [['passwd', 'a b'], 'sip-edge: passwd: "a b": user: character 0x20 is not allowed in a SIP URI user part (RFC 3261 25.1)\n'],
    [['passwd', 'alice', '--realm', 'a"b'], 'sip-edge: --realm "a\\"b": realm: character "\\"" is not allowed (visible ASCII except " and \\)\n'],
    [['passwd', 'alice', '--algorithms', 'SHA-1'], 'sip-edge: --algorithms: "SHA-1" is not one of SHA-256, SHA-512-256, MD5\n'],
    [['passwd', 'alice', '--algorithms', 'MD5,md5'], 'sip-edge: --algorithms: MD5 given twice\n'],
    [['passwd', 'alice', '--users', 'u.txt'], 'sip-edge: passwd takes --file PATH, not --users\n'],
    [['passwd', 'alice', 'bob'], 'sip-edge: unexpected argument "bob"\n'],
    [['run', '--realm', R], 'sip-edge: --realm, --file and --algorithms go with passwd\n'],
  ];
  for (const [args, first] of cases) {
    const r = await passwd(dir, 'a-good-password\n', ...args);
    assert.equal(r.code, 2, JSON.stringify(args));
    assert.equal(r.out, '');
    assert.ok(r.err.startsWith(`${first}\nUsage:`), r.err);
  }
  assert.deepEqual(fs.readdirSync(dir), [], 'nothing written');
});

test('--help lists passwd and --users', async () => {
  const r = await passwd(TMP, '', '--help');
  assert.equal(r.code, 0);
  assert.match(r.out, /\n {2}sip-edge passwd USER \[--realm REALM\] \[--file PATH\] \[--algorithms SHA-256,SHA-512-256,MD5\]\n/);
  assert.match(r.out, /\n {2}--users PATH {16}users file for edge digest authentication/);
});

test('--users PATH goes to the config loader as overrides.users (run and check)', () => {
  const run = parseCli(['run', '--users', '/etc/sip-edge/users.txt']);
  assert.ok(run.kind === 'run');
  assert.equal(run.overrides.users, '/etc/sip-edge/users.txt');
  const check = parseCli(['check', '--users', 'users.txt']);
  assert.ok(check.kind === 'check');
  assert.equal(check.overrides.users, 'users.txt');
  assert.deepEqual(parseCli(['run', '--users', '']), { kind: 'usage_error', message: '--users needs a file name' });
  assert.deepEqual(parseCli(['passwd', '1001', '--realm', R, '--file', 'u.txt', '--algorithms', 'md5, sha-256']), {
    kind: 'passwd', passwd: { user: '1001', realm: R, file: 'u.txt', algorithms: ['MD5', 'SHA-256'] }, noConfig: false, overrides: {},
  });
});

test('no-echo prompt keys: Enter, Backspace/DEL, Ctrl-U, arrows ignored, Ctrl-C / Ctrl-D cancel', () => {
  const typed = (...chunks: string[]): ReturnType<HiddenLineReader['feed']> => {
    const r = new HiddenLineReader();
    let last: ReturnType<HiddenLineReader['feed']> = 'more';
    for (const c of chunks) { last = r.feed(c); if (last !== 'more') break; }
    return last;
  };
  assert.deepEqual(typed('secret', '\r'), { line: 'secret' });
  assert.deepEqual(typed('secreX\x7ft\r'), { line: 'secret' });
  assert.deepEqual(typed('secreX\bt\n'), { line: 'secret' });
  assert.deepEqual(typed('wrong\x15right\r'), { line: 'right' });
  assert.deepEqual(typed('ab\x1b[D\x1b[', 'Ccd\x1bOA\r'), { line: 'abcd' }, 'escape sequences, even split across reads');
  assert.deepEqual(typed('pässwörd🔑\x7f\r'), { line: 'pässwörd' }, 'backspace removes a whole character');
  assert.equal(typed('abc\x03'), 'cancel');
  assert.equal(typed('\x04'), 'cancel');
  assert.deepEqual(typed('ab\x04c\r'), { line: 'abc' }, 'Ctrl-D mid-line is ignored');
  assert.deepEqual(typed('x'.repeat(2000), '\r'), { error: 'the password is longer than 1024 characters' });
  assert.equal(typed('abc'), 'more');
});

test('check: a users file with an error is reported as file:line:col and fails the check; a good one is named', async () => {
  const dir = tmpDir();
  const r = await passwd(dir, 'a long enough password\n', 'passwd', '1001', ...base);
  assert.equal(r.code, 0, r.err);
  const users = path.join(dir, 'users.txt');
  const cfg = path.join(dir, 'edge.yaml');
  fs.writeFileSync(cfg, `upstreams: [udp:127.0.0.1:5080]\ndomains: [${R}]\nauth:\n  users: users.txt\n  secret: "7c1e9a3f5b2d8e4a6c0f1b3d5e7a9c2e"\n`);
  const good = await passwd(dir, '', 'check', '--config', cfg);
  assert.equal(good.code, 0, good.err);
  assert.match(good.out, new RegExp(`users ${users.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
  fs.appendFileSync(users, '1002 pbx.example.com SHA-256=nothex\n');
  const bad = await passwd(dir, '', 'check', '--config', cfg);
  assert.equal(bad.code, 1);
  assert.match(bad.err, new RegExp(`${path.basename(users)}:3:\\d+: `), bad.err);
});
