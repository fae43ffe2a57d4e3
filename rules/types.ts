// CONTRACT for the rule files (issue: rule files and policy stages). The loader (rules/load.ts)
// reads rules/*.yaml, validates them (file:line:col errors), compiles them ONCE into an immutable
// RulesSnapshot; the stages read `current()` once per message; a reload swaps the whole snapshot.
import type { StageMode } from '../edge/verdict';
import type { LimiterSpec } from '../edge/store/types';
import type { AuthAlgorithm } from '../edge/config/types';

/** What a matching rule does. `log` only counts and logs; the message goes on. */
export type RuleAction =
  | { readonly kind: 'drop' }
  | { readonly kind: 'reject'; readonly status: number; readonly phrase?: string }
  | { readonly kind: 'ban'; readonly seconds: number }
  | { readonly kind: 'log' };

export interface StageSetting {
  /** 'sanity' | 'scanner' | 'access' | 'geoip' | 'ratelimit' | 'ping' | 'auth' | 'userlimit' */
  readonly name: string;
  readonly mode: StageMode;
}

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
  match(msg: import('../edge/sip/types').SipMessage): CompiledSignature | null;
}

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

// ---- geoip (rules/geoip.yaml)
export interface GeoPolicy {
  readonly countryMode: 'allow' | 'deny' | 'off';
  readonly countries: ReadonlySet<string>; // ISO 3166-1 alpha-2, upper-case
  readonly unknownCountry: 'allow' | 'deny';
  readonly denyAsns: ReadonlySet<number>;
  readonly action: RuleAction;
}

export interface CompiledGeo {
  readonly policy: GeoPolicy;
  /** per-listener-id overrides ("udp:0.0.0.0:5060") */
  readonly listenerOverrides: ReadonlyMap<string, GeoPolicy>;
  /** per served domain (Request-URI host) overrides */
  readonly domainOverrides: ReadonlyMap<string, GeoPolicy>;
  /** country and database paths; null = the embedded default country database */
  readonly countryDb: string | null;
  readonly asnDb: string | null;
}

// ---- rate limits, suspicion budget, bans, promotion (rules/limits.yaml; rules/limits-compile.ts)
/** Weighted events that spend a source's suspicion budget (edge/suspicion.ts). */
export type SuspicionEvent =
  | 'malformed'        // parse or sanity failure
  | 'scanner'          // a scanner signature matched
  | 'unmatched_reply'  // a response that matches no transaction of the edge
  | 'auth_failure'     // wrong credentials
  | 'missing_auth'     // a request that needed credentials came without
  | 'unknown_user'     // credentials for a user that does not exist
  | 'enumeration'      // extension probing (REGISTER/OPTIONS/INVITE walking numbers)
  | 'flood';           // a request dropped for going over a rate limit (a source that keeps flooding is banned)

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

// ---- digest challenge profiles (rules/auth-clients.yaml; rules/auth-clients-compile.ts)
export interface CompiledAuthClient {
  readonly name: string;
  /** rule name on challenge verdicts: "auth-clients:<name>" */
  readonly rule: string;
  /** challenges in order of preference, before the domain's allow-list filters them */
  readonly algorithms: readonly AuthAlgorithm[];
  /** all: one challenge per algorithm; first: only the first the domain allows */
  readonly offer: 'all' | 'first';
  /** canonical header name the pattern looks at */
  readonly where: string;
}

export interface CompiledAuthClients {
  readonly clients: readonly CompiledAuthClient[];
  /** challenges for a client no profile matches */
  readonly default: readonly AuthAlgorithm[];
  readonly learning: { readonly enabled: boolean; readonly seconds: number; readonly retrySeconds: number; readonly maxEntries: number };
  /** total, linear: the first profile (file order) whose pattern matches, or null */
  match(msg: import('../edge/sip/types').SipMessage): CompiledAuthClient | null;
}

export interface RulesSnapshot {
  /** short content hash of every rule and list file: the active rules version */
  readonly version: string;
  readonly loadedAt: string;
  readonly files: readonly string[];
  /** stage order and modes; sanity is always first and never 'off' */
  readonly stages: readonly StageSetting[];
  /** stages that trusted sources skip (never 'sanity') */
  readonly trustedSkip: ReadonlySet<string>;
  readonly scanner: CompiledScanner;
  readonly access: CompiledAccess;
  readonly geoip: CompiledGeo;
  /** rate limits, suspicion weights, bans, promotion (rules/limits.yaml; defaults when absent) */
  readonly limits: CompiledLimits;
  /** digest challenge profiles; null = no auth-clients.yaml: every client is offered the
   *  domain's auth.algorithms in their order, nothing is learned */
  readonly authClients: CompiledAuthClients | null;
  /** every rule name (signature names, list rule names, geoip rule names) for metrics */
  readonly ruleNames: readonly string[];
}

export type LoadRulesResult = { readonly ok: true; readonly snapshot: RulesSnapshot } | { readonly ok: false; readonly errors: readonly string[] };
