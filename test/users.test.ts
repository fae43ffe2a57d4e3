// The users file for edge digest authentication: strict parsing with file:line:col errors, HA1
// values that answer the RFC 7616 3.9.1 example, byte-preserving atomic updates, and the holder
// that swaps the db when the file changes and keeps the old one when an edit is bad.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import fc from 'fast-check';
import { ha1, responseFor } from '../edge/auth/digest';
import {
  MAX_USERS_FILE_BYTES, MAX_USERS_FILE_LINES, USERS_FILE_HEADER, UsersDb, UsersHolder, formatUserLine, upsertUser,
} from '../edge/auth/users';

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-users-'));
after(() => fs.rmSync(TMP, { recursive: true, force: true }));
let n = 0;
const tmpDir = (): string => fs.mkdtempSync(path.join(TMP, `d${n++}-`));

const H64 = 'a'.repeat(64);
const H32 = 'b'.repeat(32);

// RFC 7616 3.9.1 (password as corrected by verified erratum 4495)
const EX = {
  username: 'Mufasa', realm: 'http-auth@example.org', password: 'Circle of Life', method: 'GET', uri: '/dir/index.html',
  nonce: '7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v', cnonce: 'f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ', nc: '00000001',
};

function parse(text: string): ReturnType<typeof UsersDb.parse> {
  return UsersDb.parse(text, 'users.txt');
}
function errorsOf(text: string): string[] {
  const r = parse(text);
  assert.equal(r.ok, false, 'expected errors');
  return r.ok ? [] : r.errors;
}

test('RFC 7616 3.9.1: the HA1s passwd writes are digest.ts ha1() and answer the RFC example', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'users.txt');
  const r = upsertUser(file, EX.username, EX.realm, EX.password, ['SHA-256', 'SHA-512-256', 'MD5']);
  assert.deepEqual(r, { ok: true, replaced: false, mode: 0o600 });
  const loaded = UsersDb.load(file);
  assert.ok(loaded.ok, loaded.ok ? '' : loaded.errors.join('\n'));
  const db = loaded.db;
  // independent values (coreutils md5sum / sha256sum, openssl dgst -sha512-256)
  assert.equal(db.ha1('Mufasa', EX.realm, 'MD5'), '3d78807defe7de2157e2b0b6573a855f');
  assert.equal(db.ha1('Mufasa', EX.realm, 'SHA-256'), '7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232');
  assert.equal(db.ha1('Mufasa', EX.realm, 'SHA-512-256'), 'fb174f5c3c7802721517cae13b98e2b8dae2e0118cb705d94ee29946319204ce');
  for (const alg of ['MD5', 'SHA-256', 'SHA-512-256'] as const) {
    assert.equal(db.ha1('Mufasa', EX.realm, alg), ha1(alg, EX.username, EX.realm, EX.password), alg);
  }
  // the stored HA1 is all a verifier needs: it yields the RFC's request-digests
  assert.equal(responseFor('MD5', db.ha1('Mufasa', EX.realm, 'MD5')!, { ...EX, qop: 'auth' }), '8ca523f5e9506fed4657c9700eebdbec');
  assert.equal(responseFor('SHA-256', db.ha1('Mufasa', EX.realm, 'SHA-256')!, { ...EX, qop: 'auth' }),
    '753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1');
  const text = fs.readFileSync(file, 'utf8');
  assert.ok(!text.includes(EX.password), 'never the password');
  assert.equal(text, `${USERS_FILE_HEADER}\n${formatUserLine('Mufasa', EX.realm, {
    'SHA-256': ha1('SHA-256', EX.username, EX.realm, EX.password),
    'SHA-512-256': ha1('SHA-512-256', EX.username, EX.realm, EX.password),
    'MD5': ha1('MD5', EX.username, EX.realm, EX.password),
  })}\n`);
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
});

test('parse: comments, blank lines, CRLF, blanks around fields, either hex case; lookups', () => {
  const text = [
    USERS_FILE_HEADER,
    '',
    '   # indented comment: ünïcödé and "quotes" are fine here',
    `1001 pbx.example.com SHA-256=${'A'.repeat(64)} MD5=${H32}`,
    `\t 1002\tPBX.Example.com   SHA-512-256=${H64}  \r`,
    `alice%40home pbx.example.com MD5=${'C'.repeat(32)}`,
    `Bob other.example.org SHA-256=${H64}`,
  ].join('\n');
  const r = parse(text);
  assert.ok(r.ok, r.ok ? '' : r.errors.join('\n'));
  const db = r.db;
  assert.equal(db.size, 4);
  assert.equal(db.ha1('1001', 'pbx.example.com', 'SHA-256'), 'a'.repeat(64), 'stored lower-case');
  assert.equal(db.ha1('1001', 'pbx.example.com', 'MD5'), H32);
  assert.equal(db.ha1('1001', 'pbx.example.com', 'SHA-512-256'), undefined, 'not given for this user');
  // realms compare case-insensitively (domain names), users exactly
  assert.equal(db.ha1('1002', 'pbx.example.com', 'SHA-512-256'), H64);
  assert.equal(db.ha1('1001', 'PBX.EXAMPLE.COM', 'SHA-256'), 'a'.repeat(64));
  assert.equal(db.has('bob', 'other.example.org'), false);
  assert.equal(db.has('Bob', 'other.example.org'), true);
  // stored as written in the URI: escapes are not decoded
  assert.equal(db.ha1('alice%40home', 'pbx.example.com', 'MD5'), 'c'.repeat(32));
  assert.equal(db.has('alice@home', 'pbx.example.com'), false);
  assert.equal(db.has('1001', 'other.example.org'), false);
  // only ASCII folds: U+212A KELVIN SIGN lower-cases to "k" in JavaScript, and must not alias
  const k = parse(`1001 k.example SHA-256=${H64}\n`);
  assert.ok(k.ok);
  assert.equal(k.db.has('1001', 'K.example'), true);
  assert.equal(k.db.has('1001', '\u212a.example'), false);
  // hostile lookups are plain misses
  assert.equal(db.ha1('1001\npbx.example.com', '', 'MD5'), undefined);
  assert.equal(db.ha1('__proto__', 'pbx.example.com', 'MD5'), undefined);
  assert.equal(db.get('1002', 'pbx.example.com')?.realm, 'PBX.Example.com');
});

test('version: a 12-hex content hash, equal for equal bytes, different after an edit', () => {
  const a = `1001 pbx.example.com SHA-256=${H64}\n`;
  const v1 = parse(a);
  const v2 = parse(a);
  const v3 = parse(`${a}1002 pbx.example.com SHA-256=${H64}\n`);
  assert.ok(v1.ok && v2.ok && v3.ok);
  assert.match(v1.db.version, /^[0-9a-f]{12}$/);
  assert.equal(v1.db.version, v2.db.version);
  assert.notEqual(v1.db.version, v3.db.version);
  const empty = parse('# nobody yet\n');
  assert.ok(empty.ok);
  assert.equal(empty.db.size, 0);
});

test('parse: every error as file:line:col, all of them', () => {
  const text = [
    '# users',                                                  // 1
    `1001 pbx.example.com SHA-256=${H64}`,                      // 2 ok
    `10 01 pbx.example.com SHA-256=${H64}`,                     // 3 "01" is the realm, "pbx..." not ALG=HEX
    `us"er pbx.example.com SHA-256=${H64}`,                     // 4 bad user char at col 3
    `100%4 pbx.example.com SHA-256=${H64}`,                     // 5 bad escape at col 4
    `${'u'.repeat(65)} pbx.example.com SHA-256=${H64}`,         // 6 user too long
    '1003',                                                     // 7 no realm
    '1004 pbx.example.com',                                     // 8 no HA1
    `1005 pbx"example SHA-256=${H64}`,                          // 9 bad realm char at col 9
    `1006 pbx.example.com SHA-1=${H64}`,                        // 10 unknown algorithm
    `1007 pbx.example.com sha-256=${H64}`,                      // 11 wrong spelling
    `1008 pbx.example.com SHA-256=${H64} SHA-256=${H64}`,       // 12 twice
    `1009 pbx.example.com SHA-256=${'a'.repeat(63)}`,           // 13 short hex
    `1010 pbx.example.com MD5=${'a'.repeat(30)}zz`,             // 14 non-hex at col 52
    `1011 pbx.example.com MD5=${H64}`,                          // 15 MD5 with 64 digits
    `1001 PBX.example.com MD5=${H32}`,                          // 16 duplicate of line 2 (realm case)
    `1012 pbx.example.com SHA-256=${H64} # trailing comment`,    // 17 "#" not a comment mid-line
    `1013 pbx.example.com \u00e9=${H64}`,                       // 18 unknown algorithm, non-ASCII shown safely
    `1014\u0007 pbx.example.com MD5=${H32}`,                    // 19 control character in the user
  ].join('\n');
  assert.deepEqual(errorsOf(text), [
    'users.txt:3:7: expected ALGORITHM=HEX',
    'users.txt:4:3: user: character "\\"" is not allowed in a SIP URI user part (RFC 3261 25.1)',
    'users.txt:5:4: user: "%" must start an escape %XX (RFC 3261 25.1)',
    'users.txt:6:1: user is longer than 64 characters',
    'users.txt:7:5: missing realm after the user',
    'users.txt:8:21: missing HA1 values (ALGORITHM=HEX, e.g. SHA-256=<64 hex digits>)',
    'users.txt:9:9: realm: character "\\"" is not allowed (visible ASCII except " and \\)',
    'users.txt:10:22: unknown algorithm "SHA-1" (expected SHA-256, SHA-512-256 or MD5)',
    'users.txt:11:22: algorithm "sha-256" is written SHA-256',
    'users.txt:12:95: SHA-256 given twice on this line',
    'users.txt:13:30: SHA-256 HA1 must be 64 hex digits (got 63)',
    'users.txt:14:56: MD5: character "z" is not a hex digit',
    'users.txt:15:26: MD5 HA1 must be 32 hex digits (got 64)',
    'users.txt:16:1: duplicate entry for 1001 in realm PBX.example.com (first at line 2)',
    'users.txt:17:95: a comment must be a line of its own ("#" first)',
    'users.txt:18:22: unknown algorithm "\u00e9" (expected SHA-256, SHA-512-256 or MD5)',
    'users.txt:19:5: user: character 0x07 is not allowed in a SIP URI user part (RFC 3261 25.1)',
  ]);
});

test('parse: columns count from after a byte-order mark; CR inside a line is an error', () => {
  assert.deepEqual(errorsOf(`\xef\xbb\xbf1001 pbx.example.com MD5=${H32.slice(1)}\n`), ['users.txt:1:26: MD5 HA1 must be 32 hex digits (got 31)']);
  assert.ok(parse(`\ufeff1001 pbx.example.com MD5=${H32}\n`).ok);
  assert.deepEqual(errorsOf(`1001 pbx.example.com\rMD5=${H32}\n`), [
    'users.txt:1:21: realm: character 0x0d is not allowed (visible ASCII except " and \\)',
    'users.txt:1:58: missing HA1 values (ALGORITHM=HEX, e.g. SHA-256=<64 hex digits>)',
  ]);
});

test('parse: caps on lines, bytes and the number of errors shown', () => {
  assert.deepEqual(errorsOf('\n'.repeat(MAX_USERS_FILE_LINES + 1)), [`users.txt: more than ${MAX_USERS_FILE_LINES} lines`]);
  assert.ok(parse('\n'.repeat(MAX_USERS_FILE_LINES)).ok, 'exactly the cap is fine');
  assert.deepEqual(errorsOf('#'.repeat(MAX_USERS_FILE_BYTES + 1)), [`users.txt: file is larger than ${MAX_USERS_FILE_BYTES} bytes`]);
  const many = errorsOf('bad\n'.repeat(150));
  assert.equal(many.length, 101);
  assert.equal(many[0], 'users.txt:1:4: missing realm after the user');
  assert.equal(many[99], 'users.txt:100:4: missing realm after the user');
  assert.equal(many[100], 'users.txt: 50 more errors not shown');
});

test('parse never throws and every error has a position or names the file (property)', () => {
  const line = fc.oneof(
    fc.string({ maxLength: 80 }),
    fc.constantFrom(`1001 pbx.example.com SHA-256=${H64}`, '# c', '', `x y MD5=${H32}`, 'a b =', 'a b SHA-256=', '%', '\r'),
  );
  fc.assert(fc.property(fc.array(line, { maxLength: 20 }), (lines) => {
    const r = UsersDb.parse(lines.join('\n'), 'f');
    if (!r.ok) for (const e of r.errors) assert.match(e, /^f(:\d+:\d+)?: \S/);
  }), { numRuns: 500 });
});

test('load: unreadable and oversized files are errors, not exceptions', () => {
  const dir = tmpDir();
  assert.deepEqual(UsersDb.load(path.join(dir, 'nope.txt')), { ok: false, errors: [`${path.join(dir, 'nope.txt')}: cannot read file (ENOENT)`] });
  assert.deepEqual(UsersDb.load(dir), { ok: false, errors: [`${dir}: not a regular file`] });
  const big = path.join(dir, 'big.txt');
  fs.writeFileSync(big, '');
  fs.truncateSync(big, MAX_USERS_FILE_BYTES + 1); // sparse: no 64 MiB write
  assert.deepEqual(UsersDb.load(big), { ok: false, errors: [`${big}: file is larger than ${MAX_USERS_FILE_BYTES} bytes`] });
});

test('upsert: other lines and comments stay byte-for-byte; replace in place; append at the end', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'users.txt');
  // a Latin-1 comment (not UTF-8), CRLF lines and no final line end: all must survive
  const before = Buffer.concat([
    Buffer.from('# hand-written \xe9\xe8 comment\r\n', 'latin1'),
    Buffer.from(`1001 pbx.example.com SHA-256=${'F'.repeat(64)}\r\n`, 'latin1'),
    Buffer.from('\r\n   # note about 1002\r\n', 'latin1'),
    Buffer.from(`1002 pbx.example.com MD5=${H32} SHA-256=${H64}\r\n`, 'latin1'),
    Buffer.from(`1003 pbx.example.com MD5=${H32}`, 'latin1'),
  ]);
  fs.writeFileSync(file, before, { mode: 0o600 });
  const r1 = upsertUser(file, '1002', 'PBX.example.com', 'new password 1002', ['MD5']);
  assert.deepEqual(r1, { ok: true, replaced: true, mode: 0o600 });
  const after1 = fs.readFileSync(file);
  const newLine = `1002 PBX.example.com MD5=${ha1('MD5', '1002', 'PBX.example.com', 'new password 1002')}\r\n`;
  const lines = before.toString('latin1').split('\r\n');
  lines[4] = newLine.slice(0, -2);
  assert.equal(after1.toString('latin1'), lines.join('\r\n'), 'only line 5 changed, CRLF kept; the old SHA-256 HA1 is gone');

  const r2 = upsertUser(file, '1004', 'pbx.example.com', 'pw of 1004!', ['SHA-256']);
  assert.deepEqual(r2, { ok: true, replaced: false, mode: 0o600 });
  const after2 = fs.readFileSync(file);
  assert.deepEqual(after2.subarray(0, after1.length), after1, 'the existing bytes are a prefix');
  assert.equal(after2.subarray(after1.length).toString('latin1'),
    `\r\n1004 pbx.example.com SHA-256=${ha1('SHA-256', '1004', 'pbx.example.com', 'pw of 1004!')}\r\n`);
  const db = UsersDb.load(file);
  assert.ok(db.ok);
  assert.equal(db.db.size, 4);
  assert.equal(db.db.ha1('1002', 'pbx.example.com', 'SHA-256'), undefined);
  assert.ok(!after2.includes('new password 1002') && !after2.includes('pw of 1004!'));
});

test('upsert: atomic replace (new inode, no temp left), mode kept under any umask, symlink followed', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'users.txt');
  fs.writeFileSync(file, `1001 pbx.example.com MD5=${H32}\n`);
  fs.chmodSync(file, 0o640);
  const ino = fs.statSync(file).ino;
  const old = process.umask(0o077);
  try {
    const r = upsertUser(file, '1001', 'pbx.example.com', 'changed-password', ['MD5']);
    assert.deepEqual(r, { ok: true, replaced: true, mode: 0o640 });
  } finally {
    process.umask(old);
  }
  const st = fs.statSync(file);
  assert.notEqual(st.ino, ino, 'a rename, not an in-place write a reader could see half done');
  assert.equal(st.mode & 0o777, 0o640, 'existing mode kept despite umask 077');
  assert.deepEqual(fs.readdirSync(dir), ['users.txt'], 'no temp file left');

  // a new file is 0600 even under umask 000
  const fresh = path.join(dir, 'fresh.txt');
  const old2 = process.umask(0);
  try {
    assert.equal(upsertUser(fresh, '1001', 'pbx.example.com', 'fresh-password', ['SHA-256']).ok, true);
  } finally {
    process.umask(old2);
  }
  assert.equal(fs.statSync(fresh).mode & 0o777, 0o600);

  // a symlinked users file (config management, ConfigMaps): the target is replaced, the link stays
  const real = path.join(dir, 'real.txt');
  const link = path.join(dir, 'link.txt');
  fs.writeFileSync(real, `1001 pbx.example.com MD5=${H32}\n`, { mode: 0o600 });
  fs.symlinkSync('real.txt', link);
  assert.equal(upsertUser(link, '1002', 'pbx.example.com', 'linked-password', ['MD5']).ok, true);
  assert.ok(fs.lstatSync(link).isSymbolicLink());
  const viaLink = UsersDb.load(link);
  assert.ok(viaLink.ok && viaLink.db.has('1002', 'pbx.example.com'));
});

test('upsert: an invalid file is left alone and its errors returned; bad arguments are refused', () => {
  const dir = tmpDir();
  const file = path.join(dir, 'users.txt');
  const bad = `1001 pbx.example.com MD5=${H32}\n1001 pbx.example.com MD5=${H32}\n`;
  fs.writeFileSync(file, bad, { mode: 0o600 });
  assert.deepEqual(upsertUser(file, '1002', 'pbx.example.com', 'whatever-pw', ['MD5']),
    { ok: false, errors: [`${file}:2:1: duplicate entry for 1001 in realm pbx.example.com (first at line 1)`] });
  assert.equal(fs.readFileSync(file, 'utf8'), bad);
  assert.equal(upsertUser(file, 'a b', 'pbx.example.com', 'whatever-pw', ['MD5']).ok, false);
  assert.equal(upsertUser(file, '1002', 'pbx example', 'whatever-pw', ['MD5']).ok, false);
  assert.equal(upsertUser(file, '1002', 'pbx.example.com', 'whatever-pw', []).ok, false);
  assert.deepEqual(fs.readdirSync(dir), ['users.txt']);
});

/** resolves with the first of the holder's events, or rejects after `ms` */
function nextEvent(h: UsersHolder, ms = 5000): Promise<{ kind: 'reloaded'; db: UsersDb } | { kind: 'failed'; errors: readonly string[] }> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => { cleanup(); reject(new Error(`no holder event within ${ms} ms`)); }, ms);
    const onR = (db: UsersDb): void => { cleanup(); resolve({ kind: 'reloaded', db }); };
    const onF = (errors: readonly string[]): void => { cleanup(); resolve({ kind: 'failed', errors }); };
    const cleanup = (): void => { clearTimeout(t); h.removeListener('reloaded', onR); h.removeListener('failed', onF); };
    h.on('reloaded', onR);
    h.on('failed', onF);
  });
}

test('holder: swaps on a change on disk, keeps the old db on a bad edit, recovers after', async () => {
  const dir = tmpDir();
  const file = path.join(dir, 'users.txt');
  assert.equal(upsertUser(file, '1001', 'pbx.example.com', 'first-password', ['SHA-256']).ok, true);
  const opened = UsersHolder.open(file, { debounceMs: 30 });
  assert.ok(opened.ok);
  const h = opened.holder;
  try {
    h.watch();
    const v0 = h.current();
    assert.equal(v0.size, 1);

    // passwd writes by rename: the directory watch sees it
    const ev1 = nextEvent(h);
    assert.equal(upsertUser(file, '1002', 'pbx.example.com', 'second-password', ['SHA-256']).ok, true);
    const e1 = await ev1;
    assert.equal(e1.kind, 'reloaded');
    const v1 = h.current();
    assert.equal(v1.size, 2);
    assert.ok(v1.has('1002', 'pbx.example.com'));
    assert.notEqual(v1.version, v0.version);

    // an editor saving a broken file in place: errors reported, the previous db stays in force
    const ev2 = nextEvent(h);
    fs.appendFileSync(file, '1003 pbx.example.com SHA-256=nothex\n');
    const e2 = await ev2;
    assert.equal(e2.kind, 'failed');
    assert.deepEqual(e2.kind === 'failed' ? e2.errors : [], [`${file}:4:30: SHA-256: character "n" is not a hex digit`]);
    assert.equal(h.current(), v1);
    assert.equal(h.current().ha1('1002', 'pbx.example.com', 'SHA-256'), ha1('SHA-256', '1002', 'pbx.example.com', 'second-password'));

    // the fix is picked up
    const ev3 = nextEvent(h);
    const fixed = fs.readFileSync(file, 'utf8').replace(/^1003 .*\n/m, `1003 pbx.example.com MD5=${H32}\n`);
    fs.writeFileSync(file, fixed);
    const e3 = await ev3;
    assert.equal(e3.kind, 'reloaded');
    assert.equal(h.current().size, 3);

    // explicit reload (SIGHUP) of unchanged bytes: no swap
    const same = h.current();
    assert.deepEqual(h.reload(), { ok: true, version: same.version, changed: false });
    assert.equal(h.current(), same);

    // the file deleted: failed, old db kept
    const ev4 = nextEvent(h);
    fs.unlinkSync(file);
    const e4 = await ev4;
    assert.deepEqual(e4, { kind: 'failed', errors: [`${file}: cannot read file (ENOENT)`] });
    assert.equal(h.current(), same);
  } finally {
    h.close();
  }
});

test('holder: open reports a bad file; close stops reloading', async () => {
  const dir = tmpDir();
  const file = path.join(dir, 'users.txt');
  fs.writeFileSync(file, '1001\n');
  assert.deepEqual(UsersHolder.open(file), { ok: false, errors: [`${file}:1:5: missing realm after the user`] });
  fs.writeFileSync(file, `1001 pbx.example.com MD5=${H32}\n`);
  const o = UsersHolder.open(file, { debounceMs: 10 });
  assert.ok(o.ok);
  const h = o.holder;
  h.watch();
  h.close();
  let events = 0;
  h.on('reloaded', () => events++);
  h.on('failed', () => events++);
  fs.writeFileSync(file, `1001 pbx.example.com MD5=${'c'.repeat(32)}\n`);
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(events, 0);
  assert.equal(h.current().ha1('1001', 'pbx.example.com', 'MD5'), H32);
});
