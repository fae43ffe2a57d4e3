// access.yaml: allow / deny / trusted lists of CIDRs, inline or in plain-text list files,
// compiled into one longest-prefix CidrMap (edge/net/cidr.ts: a lookup costs at most one hash
// probe per distinct prefix length, whatever the number of entries, so a 100,000-line blocklist
// costs the same per message as a 10-line one).
//
//   denyAction: drop            # drop (default: a scanner learns nothing) | reject (403 Forbidden)
//   allow:   [ 192.0.2.0/24 ]   # non-empty = default deny: sources on no list get ip_not_allowed
//   deny:
//     - 198.51.100.0/24                               # rule name access:deny:198.51.100.0/24
//     - { cidr: 203.0.113.0/24, name: abuse-203 }
//   trusted:
//     - { cidr: 2001:db8:100::/48, name: carrier-a }  # trusted = allowed + may skip later stages
//   files:
//     - { path: lists/example-deny.txt, list: deny, name: example-deny }
//
// List files: one CIDR or address per line; "#" or ";" starts a comment (whole line or after the
// entry, as in Spamhaus DROP and FireHOL lists); blank lines ignored; CRLF and a UTF-8 BOM are
// accepted. Every entry of a file carries the file's rule name (one metric label per file, not
// per line). Errors name the line: `rules/lists/x.txt:12: invalid CIDR "10.0.0.300/8": not an IP
// address or CIDR ...`, in the words every other entry point uses (edge/net/cidr.ts
// cidrErrorText); an entry with host bits set ("10.1.2.3/8") is refused like everywhere else.
//
// Precedence (CompiledAccess contract): the longest prefix wins; on the very same prefix
// deny beats allow beats trusted, whichever file or list names it first.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import type { ValuePath } from '../../config/yaml';
import { CidrMap, cidrErrorText, formatCidr, parseCidr } from '../../net/cidr';
import type { RuleAction } from '../snapshot';

// ---- access (rules/access.yaml + list files)
export interface CompiledAccess {
  /** 'trusted' | 'deny' | 'allow' | null (no list says anything); longest prefix wins,
   *  and at equal prefix deny beats allow beats trusted */
  classify(address: string): { readonly list: 'trusted' | 'deny' | 'allow'; readonly rule: string } | null;
  /** when the allow-list is non-empty, sources on no list are denied */
  readonly allowListActive: boolean;
  readonly denyAction: RuleAction;
  readonly counts: { readonly allow: number; readonly deny: number; readonly trusted: number };
}

export type AccessList = 'allow' | 'deny' | 'trusted';
export const ACCESS_LISTS: readonly AccessList[] = ['allow', 'deny', 'trusted'];

/** list file size cap: the biggest public blocklists (FireHOL level 1-3) are a few MiB */
export const MAX_LIST_FILE_BYTES = 64 * 1024 * 1024;
/** entries over every list: bounded memory whatever the files hold (~100 bytes per entry) */
export const MAX_ACCESS_ENTRIES = 2_000_000;
/** invalid lines reported per file before summarising */
const MAX_ERRORS_PER_FILE = 20;
/** rule name of the verdict for sources on no list while an allow-list is active */
export const NOT_ALLOWED_RULE = 'access:not-allowed';

// rule names end up as metric label values: keep them short and printable
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,79}$/;
const NAME_MSG = 'expected a name of 1-80 characters: letters, digits, _ . : / @ -';

const CidrText = Type.String({ minLength: 1, maxLength: 64, errorMessage: 'expected a CIDR ("203.0.113.0/24", "2001:db8::/32") or an address' });

const Entry = Type.Union(
  [
    CidrText,
    Type.Object(
      {
        cidr: CidrText,
        name: Type.Optional(Type.String({ pattern: NAME_RE.source, errorMessage: NAME_MSG })),
      },
      { additionalProperties: false },
    ),
  ],
  { errorMessage: 'expected a CIDR string or { cidr: CIDR, name: NAME }' },
);

function entryList(description: string) {
  return Type.Array(Entry, { default: [], maxItems: 100000, description, errorMessage: 'expected a list of CIDRs (at most 100000; use files: for more)' });
}

export const AccessFileSchema = Type.Object(
  {
    denyAction: Type.Union([Type.Literal('drop'), Type.Literal('reject')], {
      default: 'drop',
      description: 'What a denied source gets: drop (silence, the default: scanners learn nothing) or reject (403 Forbidden).',
      errorMessage: 'expected drop or reject',
    }),
    allow: entryList('When non-empty, only these sources (and trusted ones) get past the access stage.'),
    deny: entryList('Sources always refused (longest prefix wins over allow/trusted entries).'),
    trusted: entryList('Outside peers trusted by address (carriers): allowed, and skip the stages stages.yaml lists.'),
    files: Type.Array(
      Type.Object(
        {
          path: Type.String({ minLength: 1, maxLength: 1024, description: 'Plain-text list, relative to the rules directory.', errorMessage: 'expected a file path' }),
          list: Type.Union([Type.Literal('allow'), Type.Literal('deny'), Type.Literal('trusted')], { errorMessage: 'expected allow, deny or trusted' }),
          name: Type.Optional(Type.String({ pattern: NAME_RE.source, errorMessage: NAME_MSG, description: 'Rule name of every entry of the file (default access:<list>:<file name>).' })),
        },
        { additionalProperties: false },
      ),
      { default: [], maxItems: 100, description: 'Plain-text CIDR list files (one per line, # comments).', errorMessage: 'expected a list of { path, list, name } (at most 100)' },
    ),
  },
  { additionalProperties: false, description: 'IP/CIDR access lists (rules/access.yaml).' },
);

export type AccessFile = Static<typeof AccessFileSchema>;

export interface AccessCompileResult {
  readonly access: CompiledAccess;
  readonly errors: string[];
  /** every rule name a verdict of the access stage can carry (for metrics) */
  readonly ruleNames: readonly string[];
  /** absolute paths of the list files read (for the rules version hash and reload watching) */
  readonly files: readonly string[];
}

interface Classified {
  readonly list: AccessList;
  readonly rule: string;
}

const RANK: Readonly<Record<AccessList, number>> = { deny: 3, allow: 2, trusted: 1 };

/** The display directory of access.yaml as the loader prints it ("rules" in
 *  "rules/access.yaml:3:5"), so list-file errors read the same way. */
function displayDirFrom(at: (p: ValuePath) => string, baseDir: string): string {
  const m = /^(.*):\d+:\d+$/.exec(at([]));
  return m ? path.dirname(m[1]!) : baseDir;
}

/** line * 1e6 + column of a "file:line:col: message" error, for sorting */
function linePos(e: string): number {
  const m = /:(\d+):(\d+): /.exec(e);
  return m ? Number(m[1]) * 1e6 + Number(m[2]) : 0;
}

function preview(s: string): string {
  const clean = s.replace(/[^\x20-\x7e]/g, '?');
  return clean.length > 60 ? `${clean.slice(0, 57)}...` : clean;
}

export function compileAccess(doc: AccessFile, at: (p: ValuePath) => string, baseDir: string): AccessCompileResult {
  const errors: string[] = [];
  const map = new CidrMap<Classified>();
  // strongest list seen per canonical prefix (compile time only)
  const seen = new Map<string, AccessList>();
  const counts: Record<AccessList, number> = { allow: 0, deny: 0, trusted: 0 };
  const ruleNames = new Set<string>();
  const files: string[] = [];
  let total = 0;
  let capped = false;

  /** null on success, else a short description of what is wrong */
  const add = (cidr: string, value: Classified): string | null => {
    const p = parseCidr(cidr);
    if (typeof p === 'string') return cidrErrorText(cidr, p);
    if (total >= MAX_ACCESS_ENTRIES) {
      capped = true;
      return null;
    }
    const key = formatCidr(p);
    const prev = seen.get(key);
    if (prev !== undefined) {
      // the same prefix on two lists: deny > allow > trusted; on the same list the first name stays
      if (RANK[prev] >= RANK[value.list]) return null;
      counts[prev]--;
    } else {
      total++;
    }
    seen.set(key, value.list);
    counts[value.list]++;
    map.add(cidr, value);
    return null;
  };

  for (const list of ACCESS_LISTS) {
    const entries = doc[list] ?? [];
    entries.forEach((e, i) => {
      const cidr = typeof e === 'string' ? e : e.cidr;
      const rule = typeof e === 'string' || e.name === undefined ? `access:${list}:${cidr.trim()}` : e.name;
      const err = add(cidr, Object.freeze({ list, rule }));
      if (err !== null) {
        errors.push(`${at(typeof e === 'string' ? [list, i] : [list, i, 'cidr'])}: invalid CIDR "${preview(cidr)}": ${err}`);
        return;
      }
      ruleNames.add(rule);
    });
  }

  // file order reads best in an editor (the lists were walked allow, deny, trusted)
  errors.sort((a, b) => linePos(a) - linePos(b));

  const displayDir = displayDirFrom(at, baseDir);
  (doc.files ?? []).forEach((f, i) => {
    const abs = path.resolve(baseDir, f.path);
    const shown = path.isAbsolute(f.path) ? f.path : path.join(displayDir, f.path);
    const rule = f.name ?? `access:${f.list}:${path.basename(f.path).replace(/\.[^.]*$/, '')}`;
    let text: string;
    try {
      const st = fs.statSync(abs);
      if (!st.isFile()) {
        errors.push(`${at(['files', i, 'path'])}: ${shown}: not a regular file`);
        return;
      }
      if (st.size > MAX_LIST_FILE_BYTES) {
        errors.push(`${at(['files', i, 'path'])}: ${shown}: larger than ${MAX_LIST_FILE_BYTES} bytes`);
        return;
      }
      text = fs.readFileSync(abs, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
      errors.push(`${at(['files', i, 'path'])}: ${shown}: cannot read list file (${code})`);
      return;
    }
    files.push(abs);
    ruleNames.add(rule);
    // one frozen value shared by every entry of the file: 100,000 lines, one object
    const value: Classified = Object.freeze({ list: f.list, rule });
    let bad = 0;
    let lineNo = 0;
    let start = text.charCodeAt(0) === 0xfeff ? 1 : 0; // UTF-8 BOM
    while (start <= text.length) {
      let end = text.indexOf('\n', start);
      if (end < 0) end = text.length;
      lineNo++;
      let line = text.slice(start, end);
      start = end + 1;
      const hash = line.indexOf('#');
      if (hash >= 0) line = line.slice(0, hash);
      const semi = line.indexOf(';');
      if (semi >= 0) line = line.slice(0, semi);
      line = line.trim(); // also drops the CR of CRLF files
      if (line.length === 0) continue;
      const err = add(line, value);
      if (err === null) continue;
      bad++;
      if (bad <= MAX_ERRORS_PER_FILE) errors.push(`${shown}:${lineNo}: invalid CIDR "${preview(line)}": ${err}`);
    }
    if (bad > MAX_ERRORS_PER_FILE) errors.push(`${shown}: ${bad - MAX_ERRORS_PER_FILE} more invalid lines`);
  });

  if (capped) errors.push(`${at([])}: more than ${MAX_ACCESS_ENTRIES} access entries in total; split or aggregate the lists`);

  const allowListActive = counts.allow > 0;
  if (allowListActive) ruleNames.add(NOT_ALLOWED_RULE);
  const denyAction: RuleAction = doc.denyAction === 'reject'
    ? Object.freeze({ kind: 'reject' as const, status: 403, phrase: 'Forbidden' })
    : Object.freeze({ kind: 'drop' as const });

  const access: CompiledAccess = Object.freeze({
    classify(address: string): Classified | null {
      // CidrMap.match is total: any spelling (IPv4-mapped, brackets, zone id), null for non-IPs
      return typeof address === 'string' ? map.match(address)?.value ?? null : null;
    },
    allowListActive,
    denyAction,
    counts: Object.freeze({ ...counts }),
  });
  return { access, errors, ruleNames: Object.freeze([...ruleNames]), files: Object.freeze(files) };
}
