// The users file for edge digest authentication: one line per (user, realm) with the HA1 of each
// algorithm, never a password (RFC 7616 3.4.2: HA1 = H(username ":" realm ":" password); the
// verifier needs nothing else, so the file cannot leak a password that works elsewhere).
//
//   # sip-edge users file: written by `sip-edge passwd`; ...
//   1001 pbx.example.com SHA-256=<64 hex> SHA-512-256=<64 hex> MD5=<32 hex>
//
// An HA1 is still password-equivalent for its realm (it answers any challenge of that realm), so
// the file is written 0600 and swapped in whole: a reader sees the old file or the new one.
//
// Parsing is strict and total: every defect is a `file:line:col: message` (all of them, up to a
// cap), never an exception, and the size of what we keep is bounded by the file caps. Parsing
// works on the latin1 view of the bytes: every field is ASCII, so a byte >= 0x80 in a field is an
// error at its exact column, while comments may hold any bytes and upsertUser() writes them back
// byte-for-byte.
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileStamp, WatchedFile } from '../../lib/watched-file';
import { HEX, USER } from '../sip/chars';
import { type DigestAlgorithm, ha1 as computeHa1 } from './digest';

export interface UserEntry {
  readonly user: string;
  readonly realm: string;
  /** lower-case hex per algorithm */
  readonly ha1: Partial<Record<DigestAlgorithm, string>>;
}

export type UsersLoadResult = { readonly ok: true; readonly db: UsersDb } | { readonly ok: false; readonly errors: string[] };

/** Caps: a runaway or hostile file must not eat the edge's memory. */
export const MAX_USERS_FILE_BYTES = 64 * 1024 * 1024;
export const MAX_USERS_FILE_LINES = 1_000_000;
/** Past this many errors the rest is noise (one wrong separator repeats on every line). */
const MAX_ERRORS = 100;
export const MAX_USER_CHARS = 64;
export const MAX_REALM_CHARS = 255;

/** The order lines are written in: strongest first (RFC 8760 2.4 order of preference). */
export const DIGEST_ALGORITHMS: readonly DigestAlgorithm[] = ['SHA-256', 'SHA-512-256', 'MD5'];
const HEX_LEN: Record<DigestAlgorithm, number> = { 'SHA-256': 64, 'SHA-512-256': 64, 'MD5': 32 };

export const USERS_FILE_HEADER = '# sip-edge users file: written by `sip-edge passwd`; HA1 = H(user:realm:password) per algorithm, never passwords';

/** ASCII-only lower-casing: String#toLowerCase maps e.g. U+212A KELVIN SIGN to "k", which would let
 *  a non-ASCII realm alias an ASCII one. Stored realms are ASCII, so only A-Z needs folding. */
function asciiLower(s: string): string {
  return /[A-Z]/.test(s) ? s.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32)) : s;
}

/** user and realm never contain "\n" (both are checked), so the key cannot be forged by splitting */
const keyOf = (user: string, realm: string): string => `${user}\n${asciiLower(realm)}`;

/** a character for an error message: printable ASCII quoted, anything else as a code (never raw
 *  control bytes: the message goes to a terminal or a log) */
function showChar(c: number): string {
  return c >= 0x21 && c <= 0x7e ? JSON.stringify(String.fromCharCode(c)) : `0x${c.toString(16).padStart(2, '0')}`;
}

/** undefined when `user` is a valid SIP URI user part as written in the URI (RFC 3261 25.1:
 *  user = 1*( unreserved / escaped / user-unreserved )), else [offset, message] */
export function checkUser(user: string): [number, string] | undefined {
  if (user.length === 0) return [0, 'user is empty'];
  if (user.length > MAX_USER_CHARS) return [0, `user is longer than ${MAX_USER_CHARS} characters`];
  for (let i = 0; i < user.length; i++) {
    const c = user.charCodeAt(i);
    if (c === 0x25) {
      // RFC 3261 25.1: escaped = "%" HEXDIG HEXDIG
      const h1 = user.charCodeAt(i + 1), h2 = user.charCodeAt(i + 2);
      if (!(h1 < 0x80 && HEX[h1]! >= 0 && h2 < 0x80 && HEX[h2]! >= 0)) return [i, 'user: "%" must start an escape %XX (RFC 3261 25.1)'];
      i += 2;
      continue;
    }
    if (c > 0x7f || USER[c] === 0) return [i, `user: character ${showChar(c)} is not allowed in a SIP URI user part (RFC 3261 25.1)`];
  }
  return undefined;
}

/** undefined when `realm` is acceptable: 1..255 visible ASCII characters other than `"` and `\`
 *  (the realm travels as a quoted-string, RFC 7616 3.3; keeping it free of quoting means the HA1
 *  is computed over exactly what the phone sees) */
export function checkRealm(realm: string): [number, string] | undefined {
  if (realm.length === 0) return [0, 'realm is empty'];
  if (realm.length > MAX_REALM_CHARS) return [0, `realm is longer than ${MAX_REALM_CHARS} characters`];
  for (let i = 0; i < realm.length; i++) {
    const c = realm.charCodeAt(i);
    if (c < 0x21 || c > 0x7e || c === 0x22 || c === 0x5c) return [i, `realm: character ${showChar(c)} is not allowed (visible ASCII except " and \\)`];
  }
  return undefined;
}

/** One line of the file (no line end): `USER REALM ALG=HEX ...` in DIGEST_ALGORITHMS order. */
export function formatUserLine(user: string, realm: string, ha1: Partial<Record<DigestAlgorithm, string>>): string {
  const parts = [user, realm];
  for (const alg of DIGEST_ALGORITHMS) {
    const h = ha1[alg];
    if (h !== undefined) parts.push(`${alg}=${h.toLowerCase()}`);
  }
  return parts.join(' ');
}

const ALG_BY_NAME: ReadonlyMap<string, DigestAlgorithm> = new Map(DIGEST_ALGORITHMS.map((a) => [a, a]));
/** field bounds of the line being parsed (start, end pairs), reused: parsing is synchronous */
const FIELDS: number[] = [];

interface ParsedFile {
  readonly entries: Map<string, UserEntry>;
  /** the line of each entry (duplicate reports, upsert) */
  readonly lines: Map<string, number>;
  readonly errors: string[];
}

/** Parse the latin1 view of the file. Total: any input gives entries or errors. */
function parseText(text: string, file: string): ParsedFile {
  const entries = new Map<string, UserEntry>();
  const lines = new Map<string, number>();
  const errors: string[] = [];
  let dropped = 0;
  const err = (line: number, col: number, msg: string): void => {
    if (errors.length < MAX_ERRORS) errors.push(`${file}:${line}:${col}: ${msg}`);
    else dropped++;
  };
  if (text.length > MAX_USERS_FILE_BYTES) return { entries, lines, errors: [`${file}: file is larger than ${MAX_USERS_FILE_BYTES} bytes`] };

  let start = 0;
  let lineNo = 0;
  // a UTF-8 (or already decoded) byte-order mark some editors put first: not part of line 1
  if (text.startsWith('\xef\xbb\xbf')) start = 3;
  else if (text.startsWith('\ufeff')) start = 1;
  while (start < text.length) {
    lineNo++;
    if (lineNo > MAX_USERS_FILE_LINES) {
      return { entries, lines, errors: [`${file}: more than ${MAX_USERS_FILE_LINES} lines`] };
    }
    let end = text.indexOf('\n', start);
    if (end < 0) end = text.length;
    const next = end + 1;
    if (end > start && text.charCodeAt(end - 1) === 0x0d) end--; // CRLF line ends
    // column 1 is the line's first character (on line 1, the first after a BOM)
    const colBase = start;
    const at = lineNo;
    parseLine(text, start, end, lineNo, (off, msg) => err(at, off - colBase + 1, msg), entries, lines);
    start = next;
  }
  if (dropped > 0) errors.push(`${file}: ${dropped} more error${dropped === 1 ? '' : 's'} not shown`);
  return { entries, lines, errors };
}

function parseLine(
  s: string,
  from: number,
  to: number,
  lineNo: number,
  err: (offset: number, msg: string) => void,
  entries: Map<string, UserEntry>,
  lines: Map<string, number>,
): void {
  // fields: runs of anything but space/tab; leading and trailing blanks are fine
  const fields = FIELDS;
  fields.length = 0;
  let i = from;
  while (i < to) {
    while (i < to && (s.charCodeAt(i) === 0x20 || s.charCodeAt(i) === 0x09)) i++;
    if (i >= to) break;
    // a comment is a whole line whose first non-blank character is "#"; a "#" later on a line is
    // a character like any other (and an error in every field), so a half-commented entry is caught
    if (fields.length === 0 && s.charCodeAt(i) === 0x23) return;
    const fs0 = i;
    while (i < to && s.charCodeAt(i) !== 0x20 && s.charCodeAt(i) !== 0x09) i++;
    fields.push(fs0, i);
  }
  const nFields = fields.length >> 1;
  if (nFields === 0) return;
  let ok = true;
  const us = fields[0]!, ue = fields[1]!;
  const user = s.slice(us, ue);
  const bu = checkUser(user);
  if (bu) { err(us + bu[0], bu[1]); ok = false; }
  if (nFields < 2) {
    err(to, 'missing realm after the user');
    return;
  }
  const rs = fields[2]!, re = fields[3]!;
  const realm = s.slice(rs, re);
  const br = checkRealm(realm);
  if (br) { err(rs + br[0], br[1]); ok = false; }
  if (nFields < 3) {
    err(to, 'missing HA1 values (ALGORITHM=HEX, e.g. SHA-256=<64 hex digits>)');
    return;
  }
  const ha1: Partial<Record<DigestAlgorithm, string>> = {};
  for (let f = 2; f < nFields; f++) {
    const fs1 = fields[2 * f]!, fe = fields[2 * f + 1]!;
    if (s.charCodeAt(fs1) === 0x23) { err(fs1, 'a comment must be a line of its own ("#" first)'); ok = false; break; }
    const eq = s.indexOf('=', fs1);
    if (eq < 0 || eq >= fe) { err(fs1, 'expected ALGORITHM=HEX'); ok = false; continue; }
    const name = s.slice(fs1, eq);
    const alg = ALG_BY_NAME.get(name);
    if (alg === undefined) {
      const folded = DIGEST_ALGORITHMS.find((a) => a === name.toUpperCase());
      err(fs1, folded !== undefined
        ? `algorithm ${JSON.stringify(name)} is written ${folded}`
        : `unknown algorithm ${JSON.stringify(name.length > 20 ? `${name.slice(0, 20)}...` : name)} (expected SHA-256, SHA-512-256 or MD5)`);
      ok = false;
      continue;
    }
    if (ha1[alg] !== undefined) { err(fs1, `${alg} given twice on this line`); ok = false; continue; }
    const hs = eq + 1;
    let bad = -1;
    for (let k = hs; k < fe; k++) {
      const c = s.charCodeAt(k);
      if (c > 0x7f || HEX[c]! < 0) { bad = k; break; }
    }
    if (bad >= 0) { err(bad, `${alg}: character ${showChar(s.charCodeAt(bad))} is not a hex digit`); ok = false; continue; }
    if (fe - hs !== HEX_LEN[alg]) { err(hs, `${alg} HA1 must be ${HEX_LEN[alg]} hex digits (got ${fe - hs})`); ok = false; continue; }
    ha1[alg] = asciiLower(s.slice(hs, fe));
  }
  if (!ok) return;
  const key = keyOf(user, realm);
  const first = lines.get(key);
  if (first !== undefined) {
    // RFC 7616 3.4.2: one HA1 per (user, realm, algorithm); two lines would make the answer
    // depend on which one wins, so neither does
    err(us, `duplicate entry for ${user} in realm ${realm} (first at line ${first})`);
    return;
  }
  lines.set(key, lineNo);
  entries.set(key, { user, realm, ha1 });
}

/** Read a users file's bytes with the size cap; an error string when it cannot be read. */
function readCapped(file: string): Buffer | string {
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) return `${file}: not a regular file`;
    if (st.size > MAX_USERS_FILE_BYTES) return `${file}: file is larger than ${MAX_USERS_FILE_BYTES} bytes`;
    const b = fs.readFileSync(file);
    // it may have grown between stat and read
    if (b.length > MAX_USERS_FILE_BYTES) return `${file}: file is larger than ${MAX_USERS_FILE_BYTES} bytes`;
    return b;
  } catch (e) {
    return `${file}: cannot read file (${(e as NodeJS.ErrnoException).code ?? 'EIO'})`;
  }
}

/** An immutable, parsed users file. Lookups are one Map get. */
export class UsersDb {
  private constructor(
    private readonly byKey: ReadonlyMap<string, UserEntry>,
    /** first 12 hex digits of SHA-256 over the file's bytes: for logs and metrics */
    readonly version: string,
  ) {}

  /** `text` is the file's content; bytes >= 0x80 may be given as latin1 (what load() does) */
  static parse(text: string, file: string): UsersLoadResult {
    const r = parseText(text, file);
    if (r.errors.length > 0) return { ok: false, errors: r.errors };
    // entries are handed out only as readonly views (the type says so); no per-entry freeze or
    // copy: at the 64 MiB cap that would add a second pass over ~300k objects on every reload
    const version = createHash('sha256').update(text, 'latin1').digest('hex').slice(0, 12);
    return { ok: true, db: new UsersDb(r.entries, version) };
  }

  /** Synchronous read + parse (startup, reload). */
  static load(file: string): UsersLoadResult {
    const b = readCapped(file);
    if (typeof b === 'string') return { ok: false, errors: [b] };
    return UsersDb.parse(b.toString('latin1'), file);
  }

  static empty(): UsersDb {
    return new UsersDb(new Map(), createHash('sha256').digest('hex').slice(0, 12));
  }

  /** HA1 hex (lower-case) for (user, realm, algorithm), or undefined. The user is compared
   *  exactly as stored; the realm ASCII-case-insensitively (realms here are domain names). */
  ha1(user: string, realm: string, alg: DigestAlgorithm): string | undefined {
    return this.byKey.get(keyOf(user, realm))?.ha1[alg];
  }

  has(user: string, realm: string): boolean {
    return this.byKey.has(keyOf(user, realm));
  }

  get(user: string, realm: string): UserEntry | undefined {
    return this.byKey.get(keyOf(user, realm));
  }

  entries(): IterableIterator<UserEntry> {
    return this.byKey.values();
  }

  get size(): number {
    return this.byKey.size;
  }
}

export type UsersReloadResult =
  | { readonly ok: true; readonly version: string; /** false when the bytes hashed the same: the old db stays */ readonly changed: boolean }
  | { readonly ok: false; readonly errors: readonly string[] };

export interface UsersHolderOptions {
  /** quiet time after the last file event before reloading (default 200 ms) */
  readonly debounceMs?: number;
}

/**
 * Holds the active UsersDb and swaps it whole on reload: a request sees the old users or the new
 * ones, never a mix. A file that does not load leaves the previous db active and emits 'failed'
 * with every error; 'reloaded' (db, previous) after a swap.
 *
 * watch(): the file's directory, not the file (`sip-edge passwd` and editors replace it by rename,
 * Kubernetes ConfigMaps swap a `..data` symlink beside it), debounced, and a stat skips re-reading
 * a large file when another file in the directory changed: lib/watched-file.ts, the same holder
 * as the rules and the GeoIP databases.
 */
export class UsersHolder extends WatchedFile<UsersDb> {
  private constructor(readonly file: string, db: UsersDb, stamp: string | undefined, opts: UsersHolderOptions) {
    super(db, {
      file,
      same: (next, previous) => next.version === previous.version,
      ...(opts.debounceMs !== undefined ? { debounceMs: opts.debounceMs } : {}),
    }, stamp);
  }

  /** Load once; at startup there is no previous db to keep, so errors are the result. */
  static open(file: string, opts: UsersHolderOptions = {}): { ok: true; holder: UsersHolder } | { ok: false; errors: readonly string[] } {
    const stamp = fileStamp(file);
    const r = UsersDb.load(file);
    if (!r.ok) return { ok: false, errors: r.errors };
    return { ok: true, holder: new UsersHolder(file, r.db, stamp, opts) };
  }

  /** Reload now (SIGHUP, or the watcher). Emits 'reloaded' (db, previous) when the content
   *  changed, 'failed' (errors) when the file does not load; the previous db stays then. */
  reload(): UsersReloadResult {
    const r = this.load(() => {
      const l = UsersDb.load(this.file);
      return l.ok ? { ok: true, value: l.db } : l;
    });
    return r.ok ? { ok: true, version: r.value.version, changed: r.changed } : r;
  }
}

export type UpsertResult =
  | { readonly ok: true; /** true when a line for (user, realm) was replaced, false when one was added */ readonly replaced: boolean; /** the file's mode after the write */ readonly mode: number }
  | { readonly ok: false; readonly errors: string[] };

/**
 * Add or replace the (user, realm) line with fresh HA1s of `password` for `algs`, keeping every
 * other line and comment byte-for-byte. A replaced line keeps its position and its line end; a
 * new one is appended. The old line's HA1s are all dropped (they belong to the old password).
 *
 * Written atomically: a temp file in the same directory, fsync, rename over the file (a symlink
 * is followed and its target replaced). A new file gets mode 0600; an existing one keeps its mode
 * and, when we may, its owner (so a root-run passwd does not lock the edge's user out).
 * An existing file that does not parse is left alone: its errors are the result.
 * Concurrent runs: the last rename wins.
 */
export function upsertUser(file: string, user: string, realm: string, password: string, algs: readonly DigestAlgorithm[]): UpsertResult {
  const bu = checkUser(user);
  if (bu) return { ok: false, errors: [bu[1]] };
  const br = checkRealm(realm);
  if (br) return { ok: false, errors: [br[1]] };
  if (algs.length === 0) return { ok: false, errors: ['no algorithms given'] };
  for (const a of algs) if (!DIGEST_ALGORITHMS.includes(a)) return { ok: false, errors: [`unknown algorithm ${JSON.stringify(a)}`] };

  let target = file;
  let existing: { bytes: Buffer; mode: number; uid: number; gid: number } | undefined;
  try {
    target = fs.realpathSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') return { ok: false, errors: [`${file}: cannot read file (${(e as NodeJS.ErrnoException).code ?? 'EIO'})`] };
  }
  if (fs.existsSync(target)) {
    const b = readCapped(target);
    if (typeof b === 'string') return { ok: false, errors: [b.replace(target, file)] };
    const st = fs.statSync(target);
    existing = { bytes: b, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
  }

  const ha1: Partial<Record<DigestAlgorithm, string>> = {};
  for (const a of algs) ha1[a] = computeHa1(a, user, realm, password);
  const newLine = formatUserLine(user, realm, ha1);

  let out: Buffer;
  let replaced = false;
  if (existing === undefined) {
    out = Buffer.from(`${USERS_FILE_HEADER}\n${newLine}\n`, 'latin1');
  } else {
    const text = existing.bytes.toString('latin1');
    const parsed = parseText(text, file);
    if (parsed.errors.length > 0) return { ok: false, errors: parsed.errors };
    const old = parsed.lines.get(keyOf(user, realm));
    // the cap must still hold after the write, or the edge would refuse the file passwd wrote
    if (old === undefined && countLines(text) >= MAX_USERS_FILE_LINES) {
      return { ok: false, errors: [`${file}: already has ${MAX_USERS_FILE_LINES} lines`] };
    }
    if (old !== undefined) {
      // splice the bytes of line `old` (1-based), keeping its CR if it had one
      const [ls, le] = lineSpan(text, old);
      const cr = le > ls && text.charCodeAt(le - 1) === 0x0d;
      out = Buffer.concat([existing.bytes.subarray(0, ls), Buffer.from(newLine + (cr ? '\r' : ''), 'latin1'), existing.bytes.subarray(le)]);
      replaced = true;
    } else {
      // append; a last line without its line end gets one first (matching the file's style)
      const crlf = text.includes('\r\n');
      const eol = crlf ? '\r\n' : '\n';
      const needEol = text.length > 0 && !text.endsWith('\n');
      out = Buffer.concat([existing.bytes, Buffer.from(`${needEol ? eol : ''}${newLine}${eol}`, 'latin1')]);
    }
  }
  // what we write must read back: a bug here must not leave a file the edge refuses
  const check = parseText(out.toString('latin1'), file);
  if (check.errors.length > 0) return { ok: false, errors: check.errors };

  const mode = existing?.mode ?? 0o600;
  const w = writeAtomic(target, out, mode, existing);
  if (w !== undefined) return { ok: false, errors: [`${file}: ${w}`] };
  return { ok: true, replaced, mode };
}

function countLines(text: string): number {
  let n = 0;
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) n++;
  return text.length > 0 && !text.endsWith('\n') ? n + 1 : n;
}

/** [start, end) of 1-based line `n`, end before its "\n" (a CR stays inside) */
function lineSpan(text: string, n: number): [number, number] {
  let start = 0;
  for (let l = 1; l < n; l++) start = text.indexOf('\n', start) + 1;
  // line 1 may begin with a BOM: it stays in the prefix we keep
  if (n === 1 && text.startsWith('\xef\xbb\xbf')) start = 3;
  let end = text.indexOf('\n', start);
  if (end < 0) end = text.length;
  return [start, end];
}

/** temp file beside the target + rename; undefined on success, else the error */
function writeAtomic(target: string, bytes: Buffer, mode: number, existing: { uid: number; gid: number } | undefined): string | undefined {
  const dir = path.dirname(target);
  const tmp = path.join(dir, `.${path.basename(target)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let fd: number | undefined;
  try {
    // wx: never follow or reuse something an attacker placed at the temp name
    fd = fs.openSync(tmp, 'wx', 0o600);
    fs.writeSync(fd, bytes);
    // the umask may have narrowed the mode we asked for; the file ends with exactly `mode`
    fs.fchmodSync(fd, mode);
    if (existing !== undefined && typeof process.getuid === 'function' && (existing.uid !== process.getuid() || existing.gid !== process.getgid?.())) {
      try { fs.fchownSync(fd, existing.uid, existing.gid); } catch { /* not root: the file becomes ours */ }
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, target);
  } catch (e) {
    if (fd !== undefined) try { fs.closeSync(fd); } catch { /* already failing */ }
    try { fs.unlinkSync(tmp); } catch { /* never created */ }
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    return `cannot write file (${code})`;
  }
  // the rename is durable once the directory is synced; best effort (not every fs allows it)
  try {
    const dfd = fs.openSync(dir, 'r');
    try { fs.fsyncSync(dfd); } finally { fs.closeSync(dfd); }
  } catch { /* ignore */ }
  return undefined;
}
