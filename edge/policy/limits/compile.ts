// limits.yaml: rate limits per source / AOR / user / destination prefix, the suspicion budget and
// its event weights, ban escalation, trust promotion and the answer to an over-limit source.
//
//   ipv6Prefix: 64                                   # IPv6 sources share one budget per prefix
//   source:
//     all:       { limit: 200, seconds: 10 }         # requests per source
//     suspicion: { limit: 20, seconds: 600 }         # weighted suspicion events before a ban
//   aorRegister: { limit: 20, seconds: 60 }          # REGISTER per AOR (To URI), and per (source, AOR)
//   userInvite:  { limit: 30, seconds: 60 }          # out-of-dialog INVITE per From user@host, and per (source, user)
//   prefixes:                                        # toll-fraud destinations (Request-URI user)
//     - { prefix: "+882", limit: 5, seconds: 3600, per: global, onStoreDown: closed }
//   overLimit: { retryAfter: 30, jitterMin: 0, jitterMax: 30 }
//   bans: { seconds: 600, escalation: 2, maxSeconds: 86400, memorySeconds: 86400 }
//   promotion: { factor: 10, seconds: 3600, maxEntries: 100000 }
//   weights: { malformed: 1, scanner: 5, unmatched_reply: 1, auth_failure: 1, missing_auth: 1, unknown_user: 1, enumeration: 1, flood: 1 }
//
// Every limit has onStoreDown: open (default: the per-process insurance limiter answers) or
// closed (refuse while the shared store is unreachable). Semantic errors (jitterMin > jitterMax,
// maxSeconds < seconds, duplicate or unusable prefixes) come back with file:line:column via `at`.
import { Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import type { Static, TProperties } from '@sinclair/typebox';
import type { ValuePath } from '../../config/yaml';
import type { LimiterSpec } from '../../store/types';
import type { SuspicionEvent } from '../snapshot';

// ---- the compiled limits (rules/limits.yaml)
/** One per-destination-prefix limit (toll-fraud destinations): Request-URI user prefix. */
export interface CompiledPrefixLimit {
  /** normalized prefix ("+882", "00"): what the Request-URI user must start with */
  readonly prefix: string;
  /** 'global': one budget for the prefix over all sources; 'source': one per source */
  readonly per: 'global' | 'source';
  readonly spec: LimiterSpec;
  /** rule name on verdicts and metrics: "limits:prefix:+882" */
  readonly rule: string;
}

export interface CompiledLimits {
  /** IPv6 sources are keyed by this prefix length (RFC 6177: a subscriber holds a /64) */
  readonly ipv6Prefix: number;
  /** requests per window per source (key: sourceKey) */
  readonly sourceAll: LimiterSpec;
  /** the same for promoted sources: points multiplied by promotion.factor */
  readonly sourceAllPromoted: LimiterSpec;
  /** the suspicion budget per source (weighted events) */
  readonly suspicion: LimiterSpec;
  /** REGISTER per AOR (To URI) whose identity is established (authenticated at the edge, or
   *  accepted by the PBX); null = no limit */
  readonly aorRegister: LimiterSpec | null;
  /** the same numbers per (source, AOR) for REGISTERs without credentials; null with aorRegister */
  readonly aorRegisterSource: LimiterSpec | null;
  /** out-of-dialog INVITE per From user@host whose identity is established; null = no limit */
  readonly userInvite: LimiterSpec | null;
  /** the same numbers per (source, From user@host) for INVITEs without credentials */
  readonly userInviteSource: LimiterSpec | null;
  readonly prefixes: readonly CompiledPrefixLimit[];
  /** longest configured prefix of a normalized Request-URI user, or null; O(longest prefix) */
  matchPrefix(normalizedUser: string): CompiledPrefixLimit | null;
  /** 503 Retry-After for promoted sources: base + uniform integer jitter in [jitterMin, jitterMax] */
  readonly retryAfter: { readonly base: number; readonly jitterMin: number; readonly jitterMax: number };
  readonly bans: { readonly seconds: number; readonly factor: number; readonly maxSeconds: number; readonly memorySeconds: number };
  /** after a successful authentication: `all` budget x factor for `seconds`; table capped at maxEntries */
  readonly promotion: { readonly factor: number; readonly seconds: number; readonly maxEntries: number };
  readonly weights: { readonly [E in SuspicionEvent]: number };
}

/** Every suspicion event, in the order the weights are documented. */
export const SUSPICION_EVENTS: readonly SuspicionEvent[] = Object.freeze([
  'malformed', 'scanner', 'unmatched_reply', 'auth_failure', 'missing_auth', 'unknown_user', 'enumeration', 'flood',
] as const);

/** Limiter names: stable, they become Redis key prefixes and metric labels. */
export const LIMITER_NAMES = Object.freeze({
  sourceAll: 'source_all',
  sourceAllPromoted: 'source_all_promoted',
  suspicion: 'source_suspicion',
  aorRegister: 'aor_register',
  aorRegisterSource: 'aor_register_source',
  userInvite: 'user_invite',
  userInviteSource: 'user_invite_source',
});

/** Rule names on ratelimit / suspicion verdicts and bans. */
export const LIMIT_RULES = Object.freeze({
  sourceAll: 'limits:source_all',
  aorRegister: 'limits:aor_register',
  userInvite: 'limits:user_invite',
  suspicion: 'limits:suspicion',
});
export const prefixRuleName = (prefix: string): string => `limits:prefix:${prefix}`;

/** Longest prefix an operator may write (E.164 numbers have at most 15 digits, plus "+" / "00"). */
export const MAX_PREFIX_LENGTH = 32;

const StoreDown = Type.Union([Type.Literal('open'), Type.Literal('closed')], {
  default: 'open',
  description: 'Shared store (Redis) unreachable: open = the per-process insurance limiter decides; closed = refuse.',
  errorMessage: 'expected open or closed',
});

function int(def: number, minimum: number, maximum: number, description: string) {
  return Type.Integer({ default: def, minimum, maximum, description, errorMessage: `expected an integer from ${minimum} to ${maximum}` });
}

function section<P extends TProperties>(properties: P, description: string) {
  return Type.Object(properties, { additionalProperties: false, default: {}, description });
}

function limitFields(limit: number, seconds: number) {
  return {
    limit: int(limit, 1, 10_000_000, 'points (requests or event weight) per window'),
    seconds: int(seconds, 1, 31 * 86400, 'window length in seconds'),
    onStoreDown: StoreDown,
  };
}

/** { limit, seconds, onStoreDown } with the given defaults */
function limitSchema(limit: number, seconds: number, description: string) {
  return section(limitFields(limit, seconds), description);
}

/** the same with `enabled` (default true) for the limits an operator may turn off */
function optionalLimitSchema(limit: number, seconds: number, description: string) {
  return section({
    enabled: Type.Boolean({ default: true, description: 'false: no such limit', errorMessage: 'expected true or false' }),
    ...limitFields(limit, seconds),
  }, description);
}

const PrefixSchema = Type.Object(
  {
    prefix: Type.String({
      minLength: 1, maxLength: MAX_PREFIX_LENGTH,
      description: 'Request-URI user prefix ("00", "+882"); visual separators (- . ( ) and spaces) are ignored',
      errorMessage: `expected a dial prefix of 1 to ${MAX_PREFIX_LENGTH} characters ("00", "+882")`,
    }),
    limit: int(10, 1, 10_000_000, 'out-of-dialog INVITEs per window'),
    seconds: int(3600, 1, 31 * 86400, 'window length in seconds'),
    per: Type.Union([Type.Literal('global'), Type.Literal('source')], {
      default: 'global',
      description: 'global: one budget for the prefix over every source; source: one per source',
      errorMessage: 'expected global or source',
    }),
    onStoreDown: StoreDown,
  },
  { additionalProperties: false },
);

const weight = (def: number, what: string) => int(def, 0, 1000, `suspicion weight of ${what} (0 = not counted)`);

export const LimitsFileSchema = Type.Object(
  {
    ipv6Prefix: int(64, 32, 128, 'IPv6 sources are aggregated by this prefix length (RFC 6177: a subscriber holds a /64)'),
    source: section(
      {
        all: limitSchema(200, 10, 'requests per source'),
        suspicion: limitSchema(20, 600, 'weighted suspicion events per source before a ban'),
      },
      'per-source limits',
    ),
    aorRegister: optionalLimitSchema(20, 60, 'REGISTER requests per AOR (To URI) whose identity is established (authenticated at the edge or accepted by the PBX); REGISTERs without credentials count per (source, AOR) with the same numbers'),
    userInvite: optionalLimitSchema(30, 60, 'out-of-dialog INVITEs per From user@host whose identity is established; INVITEs without credentials count per (source, user) with the same numbers'),
    prefixes: Type.Array(PrefixSchema, {
      default: [],
      maxItems: 1000,
      description: 'per destination prefix limits on out-of-dialog INVITEs (toll-fraud destinations)',
      errorMessage: 'expected a list of {prefix, limit, seconds, per, onStoreDown}',
    }),
    overLimit: section(
      {
        retryAfter: int(30, 0, 86400, 'Retry-After base seconds on the 503 a promoted source gets'),
        jitterMin: int(0, 0, 86400, 'least random seconds added to retryAfter'),
        jitterMax: int(30, 0, 86400, 'most random seconds added to retryAfter'),
      },
      'what an over-limit source gets: unknown sources are dropped; promoted ones get 503 + Retry-After',
    ),
    bans: section(
      {
        seconds: int(600, 1, 31 * 86400, 'first ban length'),
        escalation: Type.Number({ default: 2, minimum: 1, maximum: 100, description: 'each further ban within memorySeconds lasts this many times longer', errorMessage: 'expected a number from 1 to 100' }),
        maxSeconds: int(86400, 1, 366 * 86400, 'longest ban'),
        memorySeconds: int(86400, 0, 366 * 86400, 'how long earlier bans count for escalation'),
      },
      'bans from an exhausted suspicion budget',
    ),
    promotion: section(
      {
        factor: int(10, 1, 10000, 'the all budget of a source that authenticated is multiplied by this'),
        seconds: int(3600, 1, 31 * 86400, 'how long a promotion lasts after the last successful authentication'),
        maxEntries: int(100_000, 1, 10_000_000, 'promoted sources held in memory (oldest evicted first)'),
      },
      'trust promotion after a successful authentication',
    ),
    weights: section(
      {
        malformed: weight(1, 'a parse or sanity failure'),
        scanner: weight(5, 'a scanner signature hit'),
        unmatched_reply: weight(1, 'a response matching no transaction'),
        auth_failure: weight(1, 'a failed authentication'),
        missing_auth: weight(1, 'a request without credentials where they are needed'),
        unknown_user: weight(1, 'credentials for an unknown user'),
        enumeration: weight(1, 'extension enumeration'),
        flood: weight(1, 'a request dropped over a rate limit'),
      },
      'suspicion event weights',
    ),
  },
  { additionalProperties: false, description: 'sip-edge rate limits, suspicion budget, bans and promotion (rules/limits.yaml)' },
);

export type LimitsFile = Static<typeof LimitsFileSchema>;

export interface LimitsCompileResult {
  readonly limits: CompiledLimits;
  readonly errors: string[];
  readonly ruleNames: readonly string[];
}

/**
 * A dial string as compared against prefixes: %-escapes decoded (RFC 3261 19.1.4: "%2B882" and
 * "+882" are the same user), RFC 3966 5.1.1 visual separators removed ("+88-2" dials "+882"),
 * cut at the first ';' (user parameters such as ";isub=" or ";phone-context=", RFC 3966 3).
 * Linear in the input; never throws.
 */
export function normalizeDialString(user: string): string {
  let out = '';
  const n = Math.min(user.length, 256); // longer users are hostile; only their start is compared
  for (let i = 0; i < n; i++) {
    let c = user.charCodeAt(i);
    if (c === 0x25 && i + 2 < user.length) {
      const h1 = hexDigit(user.charCodeAt(i + 1));
      const h2 = hexDigit(user.charCodeAt(i + 2));
      if (h1 >= 0 && h2 >= 0) { c = h1 * 16 + h2; i += 2; }
    }
    if (c === 0x3b) break; // ';' starts user parameters
    if (c === 0x2d || c === 0x2e || c === 0x28 || c === 0x29 || c === 0x20) continue; // - . ( ) SP
    out += String.fromCharCode(c);
  }
  return out;
}

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

function spec(name: string, l: { limit: number; seconds: number; onStoreDown: 'open' | 'closed' }, factor = 1): LimiterSpec {
  return Object.freeze({ name, points: Math.min(l.limit * factor, Number.MAX_SAFE_INTEGER), durationSec: l.seconds, onStoreDown: l.onStoreDown });
}

/** Compiles a schema-valid limits document; semantic errors carry file:line:column from `at`. */
export function compileLimits(doc: LimitsFile, at: (path: ValuePath) => string): LimitsCompileResult {
  const errors: string[] = [];
  if (doc.overLimit.jitterMin > doc.overLimit.jitterMax) {
    errors.push(`${at(['overLimit', 'jitterMin'])}: jitterMin (${doc.overLimit.jitterMin}) is larger than jitterMax (${doc.overLimit.jitterMax})`);
  }
  if (doc.bans.maxSeconds < doc.bans.seconds) {
    errors.push(`${at(['bans', 'maxSeconds'])}: maxSeconds (${doc.bans.maxSeconds}) is shorter than the first ban (seconds: ${doc.bans.seconds})`);
  }

  const prefixes: CompiledPrefixLimit[] = [];
  const byPrefix = new Map<string, CompiledPrefixLimit>();
  let longest = 0;
  doc.prefixes.forEach((p, i) => {
    const norm = normalizeDialString(p.prefix);
    if (norm.length === 0 || norm !== p.prefix.replace(/[-.() ]/g, '') || /[;%@\s]/.test(p.prefix)) {
      errors.push(`${at(['prefixes', i, 'prefix'])}: prefix "${p.prefix}" is not a dial prefix (digits, "+", "*", "#"; no ";", "%" or "@")`);
      return;
    }
    if (byPrefix.has(norm)) {
      errors.push(`${at(['prefixes', i, 'prefix'])}: prefix "${norm}" is listed twice`);
      return;
    }
    const c: CompiledPrefixLimit = Object.freeze({
      prefix: norm,
      per: p.per,
      spec: spec(`prefix_${p.per}:${norm}`, p),
      rule: prefixRuleName(norm),
    });
    byPrefix.set(norm, c);
    prefixes.push(c);
    longest = Math.max(longest, norm.length);
  });

  const matchPrefix = (user: string): CompiledPrefixLimit | null => {
    if (byPrefix.size === 0) return null;
    // longest match first (as a dial plan would): at most `longest` map probes
    for (let len = Math.min(longest, user.length); len > 0; len--) {
      const hit = byPrefix.get(user.slice(0, len));
      if (hit !== undefined) return hit;
    }
    return null;
  };

  const w = doc.weights;
  const limits: CompiledLimits = Object.freeze({
    ipv6Prefix: doc.ipv6Prefix,
    sourceAll: spec(LIMITER_NAMES.sourceAll, doc.source.all),
    sourceAllPromoted: spec(LIMITER_NAMES.sourceAllPromoted, doc.source.all, doc.promotion.factor),
    suspicion: spec(LIMITER_NAMES.suspicion, doc.source.suspicion),
    aorRegister: doc.aorRegister.enabled ? spec(LIMITER_NAMES.aorRegister, doc.aorRegister) : null,
    aorRegisterSource: doc.aorRegister.enabled ? spec(LIMITER_NAMES.aorRegisterSource, doc.aorRegister) : null,
    userInvite: doc.userInvite.enabled ? spec(LIMITER_NAMES.userInvite, doc.userInvite) : null,
    userInviteSource: doc.userInvite.enabled ? spec(LIMITER_NAMES.userInviteSource, doc.userInvite) : null,
    prefixes: Object.freeze(prefixes),
    matchPrefix,
    retryAfter: Object.freeze({ base: doc.overLimit.retryAfter, jitterMin: doc.overLimit.jitterMin, jitterMax: doc.overLimit.jitterMax }),
    bans: Object.freeze({ seconds: doc.bans.seconds, factor: doc.bans.escalation, maxSeconds: doc.bans.maxSeconds, memorySeconds: doc.bans.memorySeconds }),
    promotion: Object.freeze({ factor: doc.promotion.factor, seconds: doc.promotion.seconds, maxEntries: doc.promotion.maxEntries }),
    weights: Object.freeze({
      malformed: w.malformed, scanner: w.scanner, unmatched_reply: w.unmatched_reply, auth_failure: w.auth_failure,
      missing_auth: w.missing_auth, unknown_user: w.unknown_user, enumeration: w.enumeration, flood: w.flood,
    }),
  });
  const ruleNames = Object.freeze([
    LIMIT_RULES.sourceAll, LIMIT_RULES.aorRegister, LIMIT_RULES.userInvite, LIMIT_RULES.suspicion,
    ...prefixes.map((p) => p.rule),
  ]);
  return { limits, errors, ruleNames };
}

let defaults: CompiledLimits | null = null;
/** What a missing limits.yaml means: every default above (compiled once). */
export function defaultLimits(): CompiledLimits {
  if (defaults === null) {
    const doc = Value.Default(LimitsFileSchema, {}) as LimitsFile;
    defaults = compileLimits(doc, () => 'limits.yaml').limits;
  }
  return defaults;
}
