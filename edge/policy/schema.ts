// Schema of rules/stages.yaml: which policy stages run, in which order, in which mode, and which
// of them sources trusted by address skip. The per-stage rule files (scanner.yaml, access.yaml,
// geoip.yaml) have their own schemas beside their compile functions (edge/policy/scanner/compile.ts,
// edge/policy/access/compile.ts, edge/policy/geo/compile.ts).
//
// Structural checks (types, unknown keys, modes) are the schema's; the semantic ones (known
// stage names, sanity first and never off, no duplicates, trustedSkip never sanity) are in
// checkStages() below, reported with the same file:line:column positions through `at(path)`.
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import { suggest } from '../config/yaml';
import type { ValuePath } from '../config/yaml';
import type { StageMode } from '../verdict';
import type { StageSetting } from './snapshot';

/** Stages a rules file may name. */
export const KNOWN_STAGES = ['sanity', 'scanner', 'access', 'geoip', 'ratelimit', 'ping', 'auth', 'userlimit', 'cac'] as const;
export type KnownStage = (typeof KNOWN_STAGES)[number];

export const STAGE_MODES: readonly StageMode[] = ['enforce', 'shadow', 'off'];

/**
 * Shipped order: the cheapest and most decisive stages first. sanity must come first (every
 * later stage reads headers through accessors it has vetted); access is one trie lookup on the
 * source address and settles allow/deny/trusted before any header is read; scanner signatures
 * read a few headers; geoip needs a database lookup; ratelimit comes last because it is the only
 * one that talks to the shared store (Redis) and spends budget: a message refused by an earlier,
 * local stage costs no round trip and no budget. ping answers OPTIONS pings addressed to the edge
 * itself once everything that decides about the source has had its say (a banned source, a scanner
 * or a flood gets no 200), and before auth would challenge them. auth comes late: hashing is the
 * most expensive work and a flood must be cut by the rate limits before it can make the edge hash.
 * userlimit follows auth: the budgets of a user are spent only by requests whose identity auth
 * has established.
 */
export const DEFAULT_STAGES: readonly StageSetting[] = Object.freeze([
  Object.freeze({ name: 'sanity', mode: 'enforce' as const }),
  Object.freeze({ name: 'access', mode: 'enforce' as const }),
  Object.freeze({ name: 'scanner', mode: 'enforce' as const }),
  Object.freeze({ name: 'geoip', mode: 'enforce' as const }),
  Object.freeze({ name: 'ratelimit', mode: 'enforce' as const }),
  Object.freeze({ name: 'ping', mode: 'enforce' as const }),
  Object.freeze({ name: 'auth', mode: 'enforce' as const }),
  Object.freeze({ name: 'userlimit', mode: 'enforce' as const }),
]);

/** Carriers and partner PBXs trusted by address are not scanners, may sit anywhere, and send
 *  whole trunks' worth of calls from one address (rate limits would throttle a carrier). */
export const DEFAULT_TRUSTED_SKIP: readonly KnownStage[] = Object.freeze(['scanner', 'geoip', 'ratelimit', 'auth', 'userlimit'] as const);

const StageModeSchema = Type.Union(
  STAGE_MODES.map((m) => Type.Literal(m)),
  {
    default: 'enforce',
    description: 'enforce: the verdict is carried out; shadow: counted and logged as if enforced, the message goes on; off: the stage does not run',
    errorMessage: `expected one of ${STAGE_MODES.join(', ')}`,
  },
);

const StageEntrySchema = Type.Object(
  {
    name: Type.String({ description: `stage name: ${KNOWN_STAGES.join(', ')}`, errorMessage: 'expected a stage name' }),
    mode: StageModeSchema,
  },
  { additionalProperties: false, description: 'one stage and its mode' },
);

export const StagesFileSchema = Type.Object(
  {
    stages: Type.Array(StageEntrySchema, {
      default: DEFAULT_STAGES.map((s) => ({ name: s.name, mode: s.mode })),
      minItems: 1,
      maxItems: 32,
      description: 'Stages in the order they run; the first decisive verdict wins. A stage not listed does not run.',
      errorMessage: 'expected a list of {name, mode} entries (1 to 32)',
    }),
    trustedSkip: Type.Array(Type.String({ errorMessage: 'expected a stage name' }), {
      default: [...DEFAULT_TRUSTED_SKIP],
      maxItems: 32,
      description: 'Stages that sources trusted by address skip. Never sanity.',
      errorMessage: 'expected a list of stage names',
    }),
  },
  { additionalProperties: false, description: 'sip-edge stage order (rules/stages.yaml)' },
);

export type StagesFile = Static<typeof StagesFileSchema>;

export interface CheckedStages {
  readonly stages: readonly StageSetting[];
  readonly trustedSkip: ReadonlySet<KnownStage>;
  readonly errors: string[];
}

function unknownStage(name: string): string {
  const guess = suggest(name, KNOWN_STAGES);
  return `unknown stage "${name}"${guess ? ` (did you mean "${guess}"?)` : ''}; known stages: ${KNOWN_STAGES.join(', ')}`;
}

/** Semantic checks of a schema-valid stages file; errors carry file:line:column from `at`. */
export function checkStages(doc: StagesFile, at: (path: ValuePath) => string): CheckedStages {
  const errors: string[] = [];
  const known = new Set<string>(KNOWN_STAGES);
  const isKnown = (n: string): n is KnownStage => known.has(n);
  const seen = new Set<string>();
  const stages: StageSetting[] = [];
  doc.stages.forEach((s, i) => {
    const name = s.name;
    if (!isKnown(name)) {
      errors.push(`${at(['stages', i, 'name'])}: ${unknownStage(name)}`);
      return;
    }
    if (seen.has(s.name)) {
      errors.push(`${at(['stages', i, 'name'])}: stage "${s.name}" is listed twice`);
      return;
    }
    seen.add(s.name);
    // sanity vets the structure every later stage relies on (single From/To/Call-ID/CSeq,
    // parseable Request-URI and Via: RFC 3261 8.1.1, 8.2.2): it must see every message first.
    if (s.name === 'sanity' && i !== 0) {
      errors.push(`${at(['stages', i, 'name'])}: sanity must be the first stage`);
    }
    if (s.name === 'sanity' && s.mode === 'off') {
      errors.push(`${at(['stages', i, 'mode'])}: sanity cannot be off (use shadow to observe without enforcing)`);
    }
    stages.push(Object.freeze({ name, mode: s.mode }));
  });
  if (!seen.has('sanity')) {
    errors.push(`${at(['stages', 0, 'name'])}: sanity must be the first stage (it is missing)`);
  }

  const skip = new Set<KnownStage>();
  doc.trustedSkip.forEach((name, i) => {
    if (!isKnown(name)) {
      errors.push(`${at(['trustedSkip', i])}: ${unknownStage(name)}`);
    } else if (name === 'sanity') {
      // a trusted carrier can still send (or relay) malformed bytes: sanity is never skipped
      errors.push(`${at(['trustedSkip', i])}: sanity cannot be skipped, not even by trusted sources`);
    } else if (skip.has(name)) {
      errors.push(`${at(['trustedSkip', i])}: stage "${name}" is listed twice`);
    } else {
      skip.add(name);
    }
  });
  return { stages: Object.freeze(stages), trustedSkip: skip, errors };
}
