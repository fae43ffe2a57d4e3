// Scanner signatures (rules/scanner.yaml): schema, compilation and matching.
//
// Compiled ONCE per rules load into an immutable CompiledScanner (edge/policy/snapshot.ts). Matching is
// total (never throws) and linear in the message size:
// - regex signatures are grouped by where they look (a header, any header, the body, the
//   Request-URI) and by case sensitivity; each group is ONE combined RegExp (alternation of
//   non-capturing groups), so a clean message costs one regex scan per group and value. Only
//   when a group hits are its members tested one by one to learn which signature it was.
// - every pattern is vetted before it is compiled: constructs that make a backtracking engine
//   super-linear are errors (nested quantifiers, quantified alternation, backreferences,
//   lookaround), unbounded repetition (* + {n,}) is bounded to MAX_REPEAT, and the product of
//   the variable repetitions of a pattern is capped, so the work per start position is bounded
//   by a constant and the scan of a value is O(length).
// - structural fingerprints are small hand-written checks on parsed headers.
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import type { ValuePath } from '../../config/yaml';
import { canonicalName, contacts, fields, from, to } from '../../sip/headers';
import type { SipMessage } from '../../sip/types';
import type { RuleAction } from '../snapshot';

// ---- scanner (rules/scanner.yaml)
/** Built-in structural fingerprints a signature may name instead of a regex. */
export type FingerprintName =
  | 'sipvicious_from_tag'   // From tag is hex that decodes to "<digits>\x01<random>" (svwar/svcrack/svmap)
  | 'sipsak_port9'          // From or Contact URI on port 9 (sipsak's discard-port default)
  | 'sipp_default_tag'      // From tag "<pid>SIPpTag<nn><call>" (sipp's default scenarios)
  | 'to_equals_from_scan';  // OPTIONS/REGISTER whose To user == From user and numeric (svmap/svwar probes)

export interface CompiledSignature {
  readonly name: string;
  readonly confidence: 'high' | 'medium' | 'low';
  readonly note?: string;
  readonly action: RuleAction;
  /** where the pattern looks: a canonical header name, '*' (any header), 'body', 'request-uri' */
  readonly where?: string;
  readonly fingerprint?: FingerprintName;
}

export interface CompiledScanner {
  readonly signatures: readonly CompiledSignature[];
  /** total: the first matching signature (in file order) or null; linear time */
  match(msg: SipMessage): CompiledSignature | null;
}

// ---- limits -----------------------------------------------------------------------------------

/** longest pattern source accepted (operators write short signatures; long ones are mistakes) */
export const MAX_PATTERN_LENGTH = 256;
/** `*`, `+` and `{n,}` match at most this many repetitions */
export const MAX_REPEAT = 64;
/** cap on the product of (max - min + 1) over a pattern's variable repetitions: the number of
 *  ways one start position can be backtracked through */
export const MAX_BACKTRACK_WIDTH = 512;
/** the body is scanned up to this many bytes; the parser's message cap (at most 1 MiB,
 *  limits.maxMessageBytes) already bounds it, this is a second guard */
export const MAX_BODY_SCAN = 1024 * 1024;
export const MAX_SIGNATURES = 1000;

export const FINGERPRINTS = ['sipvicious_from_tag', 'sipsak_port9', 'sipp_default_tag', 'to_equals_from_scan'] as const;
// compile-time check that the list covers the contract's union exactly
type _FpCheck = [Exclude<FingerprintName, (typeof FINGERPRINTS)[number]>, Exclude<(typeof FINGERPRINTS)[number], FingerprintName>];
const _fpCheck: _FpCheck extends [never, never] ? true : never = true;
void _fpCheck;

// ---- schema -----------------------------------------------------------------------------------

const ActionSchema = Type.Union(
  [
    Type.Literal('drop'),
    Type.Literal('log'),
    Type.Object({ kind: Type.Literal('drop') }, { additionalProperties: false }),
    Type.Object({ kind: Type.Literal('log') }, { additionalProperties: false }),
    Type.Object(
      {
        kind: Type.Literal('reject'),
        status: Type.Integer({ minimum: 400, maximum: 699, description: 'final error status (RFC 3261 21.4-21.6)' }),
        phrase: Type.Optional(Type.String({ minLength: 1, maxLength: 64, pattern: '^[\\x20-\\x7e]+$' })),
      },
      { additionalProperties: false },
    ),
    Type.Object(
      {
        kind: Type.Literal('ban'),
        seconds: Type.Integer({ minimum: 1, maximum: 30 * 86400, description: 'ban duration' }),
      },
      { additionalProperties: false },
    ),
  ],
  {
    default: 'drop',
    description: 'drop (silent, default) | log | {kind: reject, status: 4xx-6xx, phrase?} | {kind: ban, seconds}',
    errorMessage: 'expected drop, log, {kind: reject, status: 400-699}, {kind: ban, seconds: 1-2592000} or {kind: drop|log}',
  },
);

/** a rule's regular expression and its case flag (here and in rules/auth-clients.yaml);
 *  compilePattern turns them into the RegExp to run */
export const PatternSchema = Type.String({
  minLength: 1,
  maxLength: MAX_PATTERN_LENGTH,
  description: 'JavaScript regular expression (no flags); searched anywhere in the value unless anchored',
  errorMessage: `expected a regular expression of 1 to ${MAX_PATTERN_LENGTH} characters`,
});
export const CaseInsensitiveSchema = Type.Boolean({ default: true, description: 'ignore ASCII case (default true)', errorMessage: 'expected true or false' });

const MatchSchema = Type.Object(
  {
    where: Type.String({
      minLength: 1,
      maxLength: 64,
      description: "a header name (compact forms allowed: f = From), '*' (any header value), 'body' or 'request-uri'",
      errorMessage: 'expected a header name, *, body or request-uri',
    }),
    pattern: PatternSchema,
    caseInsensitive: CaseInsensitiveSchema,
  },
  { additionalProperties: false, description: 'a regular expression over one part of the message' },
);

const SignatureSchema = Type.Object(
  {
    name: Type.String({
      pattern: '^[a-z0-9][a-z0-9_.-]{0,63}$',
      description: 'unique rule name (metrics label, logs): lower-case, digits, _ . -',
      errorMessage: 'expected a name of lower-case letters, digits, _ . - (at most 64)',
    }),
    confidence: Type.Union([Type.Literal('high'), Type.Literal('medium'), Type.Literal('low')], {
      description: 'how sure a hit means a scanner',
      errorMessage: 'expected high, medium or low',
    }),
    note: Type.Optional(Type.String({ maxLength: 1000, description: 'why this signature exists' })),
    source: Type.Optional(Type.String({ maxLength: 1000, description: 'where the behaviour is documented' })),
    action: ActionSchema,
    match: Type.Optional(MatchSchema),
    fingerprint: Type.Optional(
      Type.Union(FINGERPRINTS.map((f) => Type.Literal(f)), {
        description: 'a built-in structural check',
        errorMessage: `expected one of ${FINGERPRINTS.join(', ')}`,
      }),
    ),
  },
  { additionalProperties: false, description: 'one scanner signature: exactly one of match or fingerprint' },
);

export const ScannerFileSchema = Type.Object(
  {
    signatures: Type.Array(SignatureSchema, {
      default: [],
      maxItems: MAX_SIGNATURES,
      description: 'signatures in priority order: the first that matches decides',
      errorMessage: `expected a list of signatures (at most ${MAX_SIGNATURES})`,
    }),
  },
  { additionalProperties: false, description: 'sip-edge scanner signatures (rules/scanner.yaml)' },
);

export type ScannerFile = Static<typeof ScannerFileSchema>;
type SignatureDoc = ScannerFile['signatures'][number];

// ---- pattern vetting --------------------------------------------------------------------------

export type VetResult = { readonly ok: true; readonly source: string } | { readonly ok: false; readonly error: string };

/**
 * A rule's pattern as the RegExp to run, or why not: syntax first (in the engine's own words),
 * then the linear-time vetting (vetPattern), then compiled with `flags`. A pattern that matches
 * the empty string would match every `subject` (message, client ...) and is refused. The error
 * starts with `pattern "<the pattern>"`.
 */
export function compilePattern(pattern: string, flags: string, subject: string): { readonly ok: true; readonly re: RegExp } | { readonly ok: false; readonly error: string } {
  const named = `pattern ${JSON.stringify(pattern)}`;
  const invalid = (e: unknown): { ok: false; error: string } =>
    ({ ok: false, error: `${named} is not a valid regular expression (${String((e as Error).message).replace(/^Invalid regular expression: \/.*\/[a-z]*: /, '')})` });
  try {
    new RegExp(pattern);
  } catch (e) {
    return invalid(e);
  }
  const vet = vetPattern(pattern);
  if (!vet.ok) return { ok: false, error: `${named} ${vet.error}` };
  let re: RegExp;
  try {
    re = new RegExp(vet.source, flags);
  } catch (e) {
    return invalid(e);
  }
  if (re.test('')) return { ok: false, error: `${named} matches the empty string, so it would match every ${subject}` };
  return { ok: true, re };
}

interface GroupFrame {
  /** output index where the group's "(" was written */
  readonly outStart: number;
  hasAlt: boolean;
  /** a variable-width quantifier appears inside */
  hasVarQuant: boolean;
}

/**
 * Checks a pattern for constructs that make backtracking super-linear and returns the source to
 * compile (unbounded repetitions bounded to MAX_REPEAT). Syntax errors are left to RegExp itself.
 * The rules, each a known ReDoS shape (OWASP "Regular expression Denial of Service"; Davis et al.,
 * "The impact of regular expression denial of service", FSE 2018):
 *   - a quantified group that itself contains a variable quantifier: (a+)+, (a*b?)*  -> exponential
 *   - a group with alternation repeated more than once: (a|a)*, (a|ab){2,}            -> exponential
 *   - backreferences \1, \k<n>: not regular, no linear bound
 *   - lookbehind / lookahead: each can rescan the input from every position
 *   - named groups: the combined per-group RegExp would declare a name twice
 */
export function vetPattern(pattern: string): VetResult {
  if (pattern.length > MAX_PATTERN_LENGTH) return { ok: false, error: `is longer than ${MAX_PATTERN_LENGTH} characters` };
  let out = '';
  const stack: GroupFrame[] = [{ outStart: 0, hasAlt: false, hasVarQuant: false }];
  let width = 1;
  /** start (in out) of the last atom, and whether it was a group (with its frame) */
  let atomStart = -1;
  let atomGroup: GroupFrame | null = null;
  const n = pattern.length;
  let i = 0;
  const fail = (error: string): VetResult => ({ ok: false, error });
  while (i < n) {
    const c = pattern[i]!;
    if (c === '\\') {
      const d = pattern[i + 1];
      if (d === undefined) return fail('ends with a lone backslash');
      if (d >= '1' && d <= '9') return fail('uses a backreference (\\' + d + '), which cannot be matched in linear time');
      if (d === 'k') return fail('uses a named backreference (\\k<...>), which cannot be matched in linear time');
      atomStart = out.length;
      atomGroup = null;
      // \xHH, \uHHHH, \cX: copy the whole escape so a following quantifier applies to it
      let len = 2;
      if (d === 'x') len = 4;
      else if (d === 'u') len = pattern[i + 2] === '{' ? pattern.indexOf('}', i) - i + 1 : 6;
      else if (d === 'c') len = 3;
      if (len <= 1) return fail('has an unterminated \\u{...} escape');
      out += pattern.slice(i, i + len);
      i += len;
      continue;
    }
    if (c === '[') {
      // character class: copy through the closing ]; escapes inside are literal members
      let j = i + 1;
      if (pattern[j] === '^') j++;
      if (pattern[j] === ']') j++;
      while (j < n && pattern[j] !== ']') j += pattern[j] === '\\' ? 2 : 1;
      if (j >= n) return fail('has an unterminated character class [...]');
      atomStart = out.length;
      atomGroup = null;
      out += pattern.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    if (c === '(') {
      if (pattern[i + 1] === '?') {
        const k = pattern[i + 2];
        const k2 = pattern[i + 3];
        if (k === '<' && (k2 === '=' || k2 === '!')) return fail('uses a lookbehind (?<= or (?<!, which is not allowed (super-linear risk)');
        if (k === '=' || k === '!') return fail('uses a lookahead (?= or (?!, which is not allowed (super-linear risk)');
        if (k === '<') return fail('uses a named group (?<name>...); use (?:...) instead');
        if (k !== ':') return fail(`uses an unsupported group syntax (?${k ?? ''}`);
        stack.push({ outStart: out.length, hasAlt: false, hasVarQuant: false });
        out += '(?:';
        i += 3;
      } else {
        stack.push({ outStart: out.length, hasAlt: false, hasVarQuant: false });
        out += '(';
        i += 1;
      }
      atomStart = -1;
      atomGroup = null;
      continue;
    }
    if (c === ')') {
      if (stack.length <= 1) return fail('has an unmatched )');
      const g = stack.pop()!;
      out += ')';
      i += 1;
      atomStart = g.outStart;
      atomGroup = g;
      // a variable quantifier inside a group is inside the enclosing group too
      if (g.hasVarQuant) stack[stack.length - 1]!.hasVarQuant = true;
      continue;
    }
    if (c === '|') {
      stack[stack.length - 1]!.hasAlt = true;
      out += '|';
      i += 1;
      atomStart = -1;
      atomGroup = null;
      continue;
    }
    // quantifiers
    let q: { min: number; max: number; len: number } | null = null;
    if (c === '*') q = { min: 0, max: Infinity, len: 1 };
    else if (c === '+') q = { min: 1, max: Infinity, len: 1 };
    else if (c === '?') q = { min: 0, max: 1, len: 1 };
    else if (c === '{') {
      const m = /^\{(\d{1,6})(,(\d{0,6}))?\}/.exec(pattern.slice(i, i + 16));
      if (m) {
        const min = Number(m[1]);
        const max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
        q = { min, max, len: m[0].length };
      }
      // otherwise a literal "{" (Annex B), handled below as an atom
    }
    if (q !== null) {
      if (atomStart < 0) return fail('has a quantifier with nothing to repeat');
      if (q.max < q.min) return fail('has a repetition {n,m} with m < n');
      if (q.min > MAX_REPEAT || (q.max !== Infinity && q.max > MAX_REPEAT)) return fail(`repeats more than ${MAX_REPEAT} times`);
      const max = q.max === Infinity ? Math.max(MAX_REPEAT, q.min) : q.max;
      const variable = max > q.min;
      if (atomGroup !== null) {
        if (atomGroup.hasVarQuant && max > 1) return fail('has a nested quantifier like (a+)+, which can backtrack exponentially');
        if (atomGroup.hasAlt && max > 1) return fail('repeats a group with alternatives like (a|b)*, which can backtrack exponentially');
      }
      if (variable) {
        stack[stack.length - 1]!.hasVarQuant = true;
        width *= max - q.min + 1;
        if (width > MAX_BACKTRACK_WIDTH) {
          return fail(`has too many open-ended repetitions (at most one * or + per pattern; bound the others, e.g. \\d{1,5})`);
        }
      }
      let j = i + q.len;
      const lazy = pattern[j] === '?';
      if (lazy) j++;
      if (pattern[j] === '*' || pattern[j] === '+' || pattern[j] === '?' || (pattern[j] === '{' && /^\{\d/.test(pattern.slice(j)))) {
        return fail('has a quantifier directly after a quantifier');
      }
      out += q.min === 1 && max === 1 ? '' : q.min === max ? `{${q.min}}` : `{${q.min},${max}}`;
      if (lazy) out += '?';
      i = j;
      atomStart = -1;
      atomGroup = null;
      continue;
    }
    // a plain atom: literal, ".", "^", "$"
    atomStart = c === '^' || c === '$' ? -1 : out.length;
    atomGroup = null;
    out += c;
    i += 1;
  }
  if (stack.length !== 1) return fail('has an unterminated group (');
  return { ok: true, source: out };
}

// ---- fingerprints -----------------------------------------------------------------------------

const isHex = (c: number): boolean => (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
const hexVal = (c: number): number => (c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x61 + 10);
const isDigitCode = (c: number): boolean => c >= 0x30 && c <= 0x39;
const allDigits = (s: string): boolean => {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) if (!isDigitCode(s.charCodeAt(i))) return false;
  return true;
};

/** svcrack.py Register(): `localtag = '3206210844'.encode()` ("Embedding value so as to not run
 *  into errors"), sent as-is (not hex-encoded) on every unauthenticated REGISTER. */
const SVCRACK_STATIC_TAG = '3206210844';

/**
 * SIPVicious From tags (EnableSecurity/sipvicious, sipvicious/libs/svhelper.py createTag()):
 *   b2a_hex(str(data) + b'\x01' + str(getrandbits(32)))
 * data is the target "<ip as %02x x4><port as %04x>" (svmap.py), the probed extension
 * (svwar.py createRequest) or "user:password" (svcrack.py after a challenge). The scanner
 * decodes its own tag from the reply (getTag) to map answers to probes. So: even-length hex
 * that decodes to 1-64 printable ASCII bytes, one 0x01, then 1-10 decimal digits. A phone's
 * random hex tag decodes to bytes of every value; this shape by chance is vanishingly rare.
 */
export function isSipviciousTag(tag: string): boolean {
  if (tag === SVCRACK_STATIC_TAG) return true;
  const n = tag.length;
  if (n < 6 || n > 2 * (64 + 1 + 10) || (n & 1) !== 0) return false;
  let sep = -1;
  for (let i = 0; i < n; i += 2) {
    const a = tag.charCodeAt(i), b = tag.charCodeAt(i + 1);
    if (!isHex(a) || !isHex(b)) return false;
    const byte = hexVal(a) * 16 + hexVal(b);
    const k = i >> 1;
    if (byte === 0x01) {
      if (sep >= 0 || k === 0) return false;
      sep = k;
    } else if (sep < 0) {
      if (byte < 0x20 || byte > 0x7e) return false;
    } else if (!isDigitCode(byte)) return false;
  }
  const suffix = n / 2 - sep - 1;
  return sep > 0 && sep <= 64 && suffix >= 1 && suffix <= 10;
}

/** sipp's built-in scenarios (sipp -sn uac / uas, src/scenario.cpp default scenarios):
 *  From tag "[pid]SIPpTag00[call_number]" (uac), To tag "[pid]SIPpTag01[call_number]" (uas). */
const SIPP_TAG = /^\d{1,10}SIPpTag\d{2}\d{1,10}$/;

function tagOf(params: ReadonlyMap<string, string | null> | undefined): string | null {
  const t = params?.get('tag');
  return typeof t === 'string' ? t : null;
}

const FP: Record<FingerprintName, (msg: SipMessage) => boolean> = {
  sipvicious_from_tag(msg) {
    const f = from(msg);
    const tag = f ? tagOf(f.params) : null;
    return tag !== null && isSipviciousTag(tag);
  },
  // sipsak flood mode (sipsak -F; sipsak(1): "source port 9 (discard) of localhost is advertised
  // in topmost Via"; header.c create_msg() writes Via, From and Contact as sipsak@host:9).
  // Port 9 is the discard service (RFC 863): no real UA can receive replies there.
  sipsak_port9(msg) {
    const f = from(msg);
    if (f && f.uri.port === 9) return true;
    const cs = contacts(msg);
    if (cs) for (const c of cs) if (c.uri.port === 9) return true;
    return false;
  },
  sipp_default_tag(msg) {
    const f = from(msg);
    const ft = f ? tagOf(f.params) : null;
    if (ft !== null && SIPP_TAG.test(ft)) return true;
    const t = to(msg);
    const tt = t ? tagOf(t.params) : null;
    return tt !== null && SIPP_TAG.test(tt);
  },
  // svmap.py sets `toaddr = fromaddr` ('"sipvicious"<sip:100@1.1.1.1>'); svwar.py and svcrack.py
  // build From and To as the same '"<ext>"<sip:<ext>@<domain>>'. A phone's REGISTER also has
  // To == From (RFC 3261 10.2: both are the address of record), so a REGISTER counts only when it
  // also states no expiry at all (no Expires header, no Contact expires param: RFC 3261 10.2.1
  // lets the registrar choose, but phones state one; SIPVicious never does). Low confidence.
  to_equals_from_scan(msg) {
    if (msg.kind !== 'request' || (msg.method !== 'OPTIONS' && msg.method !== 'REGISTER')) return false;
    const f = from(msg), t = to(msg);
    if (!f || !t || tagOf(t.params) !== null) return false;
    const fu = f.uri.user, tu = t.uri.user;
    if (fu === undefined || tu === undefined || fu !== tu || !allDigits(fu) || fu.length > 15) return false;
    if (f.uri.host !== t.uri.host || (f.displayName ?? '') !== (t.displayName ?? '')) return false;
    if (msg.method === 'REGISTER') {
      if (fields(msg, 'expires').length > 0) return false;
      const cs = contacts(msg);
      if (cs) for (const c of cs) if (c.params.has('expires')) return false;
    }
    return true;
  },
};

/** Runs one built-in fingerprint; total (a throwing accessor counts as no match). */
export function runFingerprint(name: FingerprintName, msg: SipMessage): boolean {
  try {
    return FP[name](msg);
  } catch {
    return false;
  }
}

// ---- compilation ------------------------------------------------------------------------------

type Where = { kind: 'header'; name: string } | { kind: 'any-header' } | { kind: 'body' } | { kind: 'request-uri' };

interface Member { readonly index: number; readonly re: RegExp }

interface Unit {
  /** smallest signature index in the unit: a unit never improves on a better hit */
  readonly minIndex: number;
  /** index of the first member (in file order) that matches with index < best, or -1 */
  test(msg: SipMessage, best: number): number;
}

const TOKEN_RE = /^[!%'*+\-.0-9A-Z^_`a-z|~]+$/; // RFC 3261 25.1 token (header field names)

function parseWhere(w: string): Where | null {
  const lw = w.toLowerCase();
  if (lw === '*') return { kind: 'any-header' };
  if (lw === 'body') return { kind: 'body' };
  if (lw === 'request-uri') return { kind: 'request-uri' };
  if (!TOKEN_RE.test(w)) return null;
  return { kind: 'header', name: canonicalName(w) };
}

function whereKey(w: Where): string {
  return w.kind === 'header' ? `h:${w.name}` : w.kind;
}

function valuesOf(msg: SipMessage, w: Where): readonly string[] {
  switch (w.kind) {
    case 'header': return fields(msg, w.name).map((h) => h.value);
    case 'any-header': return msg.headers.map((h) => h.value);
    case 'request-uri': return msg.kind === 'request' ? [msg.uri] : [];
    case 'body': {
      let b = msg.cache.get('scanner:body') as string | undefined;
      if (b === undefined) {
        const len = Math.min(msg.bodyLength, MAX_BODY_SCAN, Math.max(0, msg.raw.length - msg.bodyStart));
        b = len > 0 ? msg.raw.toString('latin1', msg.bodyStart, msg.bodyStart + len) : '';
        msg.cache.set('scanner:body', b);
      }
      return b.length > 0 ? [b] : [];
    }
  }
}

function regexUnit(w: Where, members: Member[], flags: string): Unit {
  const combined = new RegExp(members.map((m) => `(?:${m.re.source})`).join('|'), flags);
  const minIndex = members[0]!.index;
  return {
    minIndex,
    test(msg, best) {
      let hit = -1;
      for (const v of valuesOf(msg, w)) {
        if (!combined.test(v)) continue;
        for (const m of members) {
          if (m.index >= best) break;
          if (m.re.test(v)) {
            best = m.index;
            hit = m.index;
            break;
          }
        }
      }
      return hit;
    },
  };
}

function toAction(a: SignatureDoc['action']): RuleAction {
  if (a === 'drop' || a === undefined) return Object.freeze({ kind: 'drop' as const });
  if (a === 'log') return Object.freeze({ kind: 'log' as const });
  switch (a.kind) {
    case 'drop': return Object.freeze({ kind: 'drop' as const });
    case 'log': return Object.freeze({ kind: 'log' as const });
    case 'reject': return Object.freeze(a.phrase !== undefined ? { kind: 'reject' as const, status: a.status, phrase: a.phrase } : { kind: 'reject' as const, status: a.status });
    case 'ban': return Object.freeze({ kind: 'ban' as const, seconds: a.seconds });
  }
}

export interface CompileScannerResult {
  readonly scanner: CompiledScanner;
  readonly errors: string[];
}

/**
 * Compiles a schema-valid scanner.yaml document. Semantic errors (duplicate names, match and
 * fingerprint both or neither, unknown `where`, unsafe or invalid patterns) come back with the
 * file:line:column of the offending node through `at`. The scanner returned holds the valid
 * signatures only; a loader refuses the whole file when `errors` is non-empty.
 */
export function compileScanner(doc: ScannerFile, at: (path: ValuePath) => string): CompileScannerResult {
  const errors: string[] = [];
  const sigs: CompiledSignature[] = [];
  const names = new Map<string, number>();
  const groups = new Map<string, { where: Where; flags: string; members: Member[] }>();
  const units: Unit[] = [];

  (doc.signatures ?? []).forEach((s, i) => {
    const prev = names.get(s.name);
    if (prev !== undefined) {
      errors.push(`${at(['signatures', i, 'name'])}: signature name "${s.name}" is already used by signatures[${prev}]`);
      return;
    }
    names.set(s.name, i);
    if ((s.match === undefined) === (s.fingerprint === undefined)) {
      errors.push(`${at(['signatures', i])}: signature "${s.name}" needs exactly one of match or fingerprint`);
      return;
    }
    const index = sigs.length;
    const base = { name: s.name, confidence: s.confidence, action: toAction(s.action) };
    if (s.fingerprint !== undefined) {
      const fp = s.fingerprint as FingerprintName;
      sigs.push(Object.freeze({ ...base, ...(s.note !== undefined ? { note: s.note } : {}), fingerprint: fp }));
      units.push({ minIndex: index, test: (msg, best) => (index < best && runFingerprint(fp, msg) ? index : -1) });
      return;
    }
    const m = s.match!;
    const w = parseWhere(m.where);
    if (w === null) {
      errors.push(`${at(['signatures', i, 'match', 'where'])}: "${m.where}" is not a header name, *, body or request-uri`);
      return;
    }
    const flags = m.caseInsensitive === false ? '' : 'i';
    const c = compilePattern(m.pattern, flags, 'message');
    if (!c.ok) {
      errors.push(`${at(['signatures', i, 'match', 'pattern'])}: ${c.error}`);
      return;
    }
    const re = c.re;
    const where = w.kind === 'header' ? w.name : w.kind === 'any-header' ? '*' : w.kind;
    sigs.push(Object.freeze({ ...base, ...(s.note !== undefined ? { note: s.note } : {}), where }));
    const key = `${whereKey(w)}|${flags}`;
    let g = groups.get(key);
    if (!g) {
      g = { where: w, flags, members: [] };
      groups.set(key, g);
    }
    g.members.push({ index, re });
  });

  for (const g of groups.values()) units.push(regexUnit(g.where, g.members, g.flags));
  units.sort((a, b) => a.minIndex - b.minIndex);
  const frozenSigs = Object.freeze(sigs.slice());

  const scanner: CompiledScanner = Object.freeze({
    signatures: frozenSigs,
    match(msg: SipMessage): CompiledSignature | null {
      let best = Infinity;
      for (const u of units) {
        if (u.minIndex >= best) break; // sorted: no later unit can hold an earlier signature
        let hit = -1;
        try {
          hit = u.test(msg, best);
        } catch {
          hit = -1; // total: a defect in one unit never turns into a throw on attacker input
        }
        if (hit >= 0 && hit < best) best = hit;
      }
      return best === Infinity ? null : frozenSigs[best]!;
    },
  });
  return { scanner, errors };
}
