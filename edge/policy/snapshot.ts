// CONTRACT for the rule files (issue: rule files and policy stages). The loader (edge/policy/load.ts)
// reads rules/*.yaml, validates them (file:line:col errors), compiles them ONCE into an immutable
// RulesSnapshot; the stages read `current()` once per message; a reload swaps the whole snapshot.
import type { KnownStage } from './schema';
import type { StageMode } from '../verdict';
import type { CompiledAuthClients } from '../auth/clients';
import type { CompiledAccess } from './access/compile';
import type { CompiledGeo } from './geo/compile';
import type { CompiledLimits } from './limits/compile';
import type { CompiledScanner } from './scanner/compile';
import type { CacRules, FraudRules } from './cac/rules';

/** What a matching rule does. `log` only counts and logs; the message goes on. */
export type RuleAction =
  | { readonly kind: 'drop' }
  | { readonly kind: 'reject'; readonly status: number; readonly phrase?: string }
  | { readonly kind: 'ban'; readonly seconds: number }
  | { readonly kind: 'log' };

export interface StageSetting {
  /** a closed set: the names the rules schema knows (edge/policy/schema.ts KNOWN_STAGES) */
  readonly name: KnownStage;
  readonly mode: StageMode;
}

// ---- what spends the suspicion budget (rules/limits.yaml weights; edge/policy/limits/compile.ts)
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

export interface RulesSnapshot {
  /** short content hash of every rule and list file: the active rules version */
  readonly version: string;
  readonly loadedAt: string;
  readonly files: readonly string[];
  /** stage order and modes; sanity is always first and never 'off' */
  readonly stages: readonly StageSetting[];
  /** stages that trusted sources skip (never 'sanity') */
  readonly trustedSkip: ReadonlySet<KnownStage>;
  readonly scanner: CompiledScanner;
  readonly access: CompiledAccess;
  readonly geoip: CompiledGeo;
  /** rate limits, suspicion weights, bans, promotion (rules/limits.yaml; defaults when absent) */
  readonly limits: CompiledLimits;
  /** digest challenge profiles; null = no auth-clients.yaml: every client is offered the
   *  domain's auth.algorithms in their order, nothing is learned */
  readonly authClients: CompiledAuthClients | null;
  /** call admission limits, destination classes, user groups (rules/cac.yaml; defaults when absent) */
  readonly cac: CacRules;
  /** fraud signal thresholds per destination class (rules/fraud.yaml; defaults when absent) */
  readonly fraud: FraudRules;
  /** every rule name (signature names, list rule names, geoip rule names) for metrics */
  readonly ruleNames: readonly string[];
}

export type LoadRulesResult = { readonly ok: true; readonly snapshot: RulesSnapshot } | { readonly ok: false; readonly errors: readonly string[] };
