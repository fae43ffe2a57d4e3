// rules/cac.yaml and rules/fraud.yaml: schemas, defaults and compilation (issue 16).
// Compiled once per load (STYLE.md principle 6): prefixes into one longest-prefix table.
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import type { ValuePath } from '../../config/yaml';

/** closed set of destination classes: they are metric labels (sipedge_dialogs_live{class}) */
export const DEST_CLASSES = ['emergency', 'internal', 'premium', 'international', 'national', 'other'] as const;
export type DestClass = (typeof DEST_CLASSES)[number];

const Limit = Type.Union([Type.Integer({ minimum: 0 }), Type.Null()]);
const Budget = Type.Object({
  concurrent: Type.Optional(Type.Integer({ minimum: 0 })),
  perMinute: Type.Optional(Type.Integer({ minimum: 0 })),
}, { additionalProperties: false });
const ClassName = Type.Union(DEST_CLASSES.map((c) => Type.Literal(c)));

export const CacRulesSchema = Type.Object({
  limits: Type.Object({
    total: Type.Optional(Limit),
    perUser: Type.Optional(Limit),
    perSource: Type.Optional(Limit),
    perTrunk: Type.Optional(Type.Record(Type.String(), Type.Integer({ minimum: 0 }))),
    perSourceClass: Type.Optional(Type.Object({
      untrusted: Type.Optional(Limit), promoted: Type.Optional(Limit), trusted: Type.Optional(Limit),
    }, { additionalProperties: false })),
  }, { additionalProperties: false, default: {} }),
  answer: Type.Object({
    status: Type.Union([Type.Literal(486), Type.Literal(503)], { default: 503 }),
    retryAfter: Type.Integer({ minimum: 1, maximum: 86400, default: 30 }),
  }, { additionalProperties: false, default: {} }),
  leaseTtlSeconds: Type.Integer({ minimum: 3, maximum: 600, default: 30 }),
  maxDurationSeconds: Type.Integer({ minimum: 60, maximum: 7 * 86400, default: 14400 }),
  dialPlan: Type.Object({
    countryCode: Type.String({ pattern: '^[1-9][0-9]{0,2}$', default: '1' }),
    nationalPrefix: Type.String({ pattern: '^[0-9]{0,3}$', default: '1' }),
    internationalPrefix: Type.String({ pattern: '^[0-9]{0,4}$', default: '011' }),
    /** dialled numbers of at most this many digits are internal extensions */
    internalMaxDigits: Type.Integer({ minimum: 0, maximum: 8, default: 5 }),
    /** never normalised, always emergency (matched on the digits as dialled) */
    emergency: Type.Array(Type.String({ pattern: '^[0-9]{2,6}$' }), { default: ['911', '112', '999'] }),
  }, { additionalProperties: false, default: {} }),
  /** prefixes of normalised E.164 numbers (with '+'), longest match wins */
  classes: Type.Object({
    premium: Type.Array(Type.String({ pattern: '^\\+[0-9]{1,15}$' }), { default: ['+1900', '+1976'] }),
  }, { additionalProperties: false, default: {} }),
  groups: Type.Record(Type.String({ pattern: '^[A-Za-z0-9_-]{1,32}$' }), Type.Object({
    allow: Type.Array(ClassName),
    users: Type.Optional(Type.Array(Type.String())),
  }, { additionalProperties: false }), { default: { default: { allow: ['emergency', 'internal', 'national', 'international'], users: [] } } }),
  /** per class concurrency (per user) and velocity (new calls per minute, per user) */
  classBudgets: Type.Object(Object.fromEntries(DEST_CLASSES.map((c) => [c, Type.Optional(Budget)])), { additionalProperties: false, default: {} }),
}, { additionalProperties: false });
export type CacRules = Static<typeof CacRulesSchema>;

const Thr = Type.Object({ warning: Type.Integer({ minimum: 1 }), critical: Type.Integer({ minimum: 1 }) }, { additionalProperties: false });
export const FRAUD_SIGNALS = ['calls_per_minute', 'concurrent', 'sequential', 'distinct_per_hour', 'minutes_per_day'] as const;
export type FraudSignal = (typeof FRAUD_SIGNALS)[number];
export const FraudProfileSchema = Type.Object({
  callsPerMinute: Type.Optional(Thr),
  concurrent: Type.Optional(Thr),
  sequential: Type.Optional(Thr),
  distinctPerHour: Type.Optional(Thr),
  minutesPerDay: Type.Optional(Thr),
}, { additionalProperties: false });
export const FraudRulesSchema = Type.Object({
  /** per destination class, the thresholds (OpenSIPS fraud_detection's profile rule); emergency
   *  can never be listed: it is never blocked */
  classes: Type.Object(Object.fromEntries(DEST_CLASSES.filter((c) => c !== 'emergency').map((c) => [c, Type.Optional(FraudProfileSchema)])), {
    additionalProperties: false,
    default: {
      premium: { callsPerMinute: { warning: 3, critical: 6 }, concurrent: { warning: 2, critical: 4 }, sequential: { warning: 5, critical: 10 }, distinctPerHour: { warning: 10, critical: 20 }, minutesPerDay: { warning: 60, critical: 120 } },
      international: { callsPerMinute: { warning: 10, critical: 20 }, concurrent: { warning: 5, critical: 10 }, sequential: { warning: 20, critical: 40 }, distinctPerHour: { warning: 30, critical: 60 }, minutesPerDay: { warning: 300, critical: 600 } },
    },
  }),
}, { additionalProperties: false });
export type FraudRules = Static<typeof FraudRulesSchema>;
export type FraudProfile = Static<typeof FraudProfileSchema>;

// ---- defaults and the semantic checks the schema cannot express (rules/cac.yaml, rules/fraud.yaml
// are loaded by edge/policy/load.ts; errors carry file:line:column through `at`)

/** what a missing rules/cac.yaml means: every schema default (no concurrency limit) */
export const defaultCacRules = (): CacRules => Value.Default(CacRulesSchema, {}) as CacRules;
/** what a missing rules/fraud.yaml means: the shipped premium and international thresholds */
export const defaultFraudRules = (): FraudRules => Value.Default(FraudRulesSchema, {}) as FraudRules;

export function checkCacRules(r: CacRules, at: (p: ValuePath) => string): string[] {
  const errors: string[] = [];
  const seen = new Map<string, string>();
  for (const [g, def] of Object.entries(r.groups)) {
    (def.users ?? []).forEach((u, i) => {
      const prev = seen.get(u);
      if (prev !== undefined) errors.push(`${at(['groups', g, 'users', i])}: user "${u}" is already in group "${prev}"`);
      else seen.set(u, g);
    });
  }
  return errors;
}

export function checkFraudRules(r: FraudRules, at: (p: ValuePath) => string): string[] {
  const errors: string[] = [];
  for (const [cls, prof] of Object.entries(r.classes) as Array<[string, FraudProfile | undefined]>) {
    for (const [sig, t] of Object.entries(prof ?? {}) as Array<[string, { warning: number; critical: number } | undefined]>) {
      if (t && t.warning > t.critical) errors.push(`${at(['classes', cls, sig, 'warning'])}: warning (${t.warning}) above critical (${t.critical})`);
    }
  }
  return errors;
}
