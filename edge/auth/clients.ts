// rules/auth-clients.yaml: which digest challenges the edge offers to which client (edge-mode
// authentication, edge/auth/stage.ts), compiled once per rules load.
//
//   default: [SHA-256, MD5]                  # clients no profile names
//   learning: { enabled: true, seconds: 86400, retrySeconds: 900, maxEntries: 100000 }
//   clients:                                 # in order: the first whose pattern matches decides
//     - name: baresip_libre_md5
//       match: { where: User-Agent, pattern: '^baresip v(?:[0-2]\.|3\.(?:\d|1[01])\.)' }
//       algorithms: [MD5]
//     - name: baresip
//       match: { where: User-Agent, pattern: '^baresip v' }
//       algorithms: [SHA-256, MD5]
//       offer: first                          # one challenge: the first the domain allows
//
// Why a rule file and not one list: RFC 8760 2.3 has the server send one challenge per algorithm
// in its order of preference and 2.4 has the client use the topmost it supports, but deployed
// clients do not all behave so: some read only the first challenge, some refuse the whole
// response when any challenge names an algorithm they do not know (baresip before 3.12), some
// answer every challenge at once (baresip from 3.12). No single list works for all of them, and
// the only thing the edge knows about a client before it authenticates is what the client says
// about itself. The choice depends only on the request's own headers (and, in the stage, on what
// the same source did before), never on the user it names, so the challenge stays the same for
// every user, existing or not (anti-enumeration).
//
// The domain's `auth.algorithms` (sip-edge.yaml) stays the allow-list: what is offered is the
// profile's list filtered by it, and an answer in an algorithm the domain does not allow is
// refused whatever the profile says.
//
// Patterns are vetted and compiled like scanner patterns, once (edge/policy/scanner/compile.ts
// compilePattern: linear-time constructs only); matching is total (never throws).
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import type { AuthAlgorithm } from '../config/types';
import type { ValuePath } from '../config/yaml';
import { canonicalName, fields } from '../sip/headers';
import type { SipMessage } from '../sip/types';
import { CaseInsensitiveSchema, PatternSchema, compilePattern } from '../policy/scanner/compile';

// ---- digest challenge profiles (rules/auth-clients.yaml; edge/auth/clients.ts)
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
  match(msg: SipMessage): CompiledAuthClient | null;
}

export const MAX_AUTH_CLIENTS = 1000;

/** The rule names challenge verdicts carry (sipedge_rule_hits_total{rule}): one per profile, plus
 *  the default, the learned MD5 fallback and the learned preference for a stronger algorithm. */
export const authClientRule = (name: string): string => `auth-clients:${name}`;
export const AUTH_CLIENT_RULES = Object.freeze({
  default: authClientRule('default'),
  fallback: authClientRule('learned_md5_fallback'),
  learned: authClientRule('learned_stronger'),
});

const ALGORITHMS = ['SHA-256', 'SHA-512-256', 'MD5'] as const;

const algorithmList = (def: readonly AuthAlgorithm[] | undefined, description: string) =>
  Type.Array(Type.Union(ALGORITHMS.map((a) => Type.Literal(a)), { errorMessage: `expected one of ${ALGORITHMS.join(', ')}` }), {
    ...(def !== undefined ? { default: [...def] } : {}),
    minItems: 1,
    maxItems: 3,
    uniqueItems: true,
    description,
    errorMessage: `expected a non-empty list of distinct ${ALGORITHMS.join(', ')}`,
  });

const int = (def: number, minimum: number, maximum: number, description: string) =>
  Type.Integer({ default: def, minimum, maximum, description, errorMessage: `expected an integer from ${minimum} to ${maximum}` });

const ClientSchema = Type.Object(
  {
    name: Type.String({
      pattern: '^[a-z0-9][a-z0-9_.-]{0,63}$',
      description: 'unique profile name (metrics label auth-clients:<name>, logs): lower-case, digits, _ . -',
      errorMessage: 'expected a name of lower-case letters, digits, _ . - (at most 64)',
    }),
    note: Type.Optional(Type.String({ maxLength: 1000, description: 'why this profile exists' })),
    source: Type.Optional(Type.String({ maxLength: 1000, description: 'where the client behaviour is documented' })),
    match: Type.Object(
      {
        where: Type.String({
          minLength: 1,
          maxLength: 64,
          description: 'a header name (compact forms allowed: f = From); usually User-Agent',
          errorMessage: 'expected a header name',
        }),
        pattern: PatternSchema,
        caseInsensitive: CaseInsensitiveSchema,
      },
      { additionalProperties: false, description: 'a regular expression over one header' },
    ),
    algorithms: algorithmList(undefined, 'challenges for this client, in order of preference (filtered by the domain\'s auth.algorithms)'),
    offer: Type.Union([Type.Literal('all'), Type.Literal('first')], {
      default: 'all',
      description: 'all: one challenge per algorithm (RFC 8760 2.3); first: only the first one the domain allows, for clients that refuse or answer every challenge at once',
      errorMessage: 'expected all or first',
    }),
  },
  { additionalProperties: false, description: 'one client profile' },
);

export const AuthClientsFileSchema = Type.Object(
  {
    default: algorithmList(['SHA-256', 'MD5'], 'challenges for clients no profile matches, in order of preference'),
    learning: Type.Object(
      {
        enabled: Type.Boolean({ default: true, description: 'learn from what each source did (MD5 fallback, stronger algorithm kept)', errorMessage: 'expected true or false' }),
        seconds: int(86400, 60, 30 * 86400, 'how long a learned choice is kept per source and User-Agent'),
        retrySeconds: int(900, 10, 86400, 'a request without credentials in the same Call-ID this long after a challenge it did not answer means the client could not answer it'),
        maxEntries: int(100000, 100, 10_000_000, 'bound on remembered sources (oldest forgotten first)'),
      },
      { additionalProperties: false, default: {}, description: 'per-source learning' },
    ),
    clients: Type.Array(ClientSchema, {
      default: [],
      maxItems: MAX_AUTH_CLIENTS,
      description: 'client profiles in priority order: the first that matches decides',
      errorMessage: `expected a list of client profiles (at most ${MAX_AUTH_CLIENTS})`,
    }),
  },
  { additionalProperties: false, description: 'sip-edge digest challenge profiles (rules/auth-clients.yaml)' },
);

export type AuthClientsFile = Static<typeof AuthClientsFileSchema>;

const TOKEN_RE = /^[!%'*+\-.0-9A-Z^_`a-z|~]+$/; // RFC 3261 25.1 token (header field names)

interface Member { readonly client: CompiledAuthClient; readonly header: string; readonly re: RegExp }

export interface CompileAuthClientsResult {
  readonly authClients: CompiledAuthClients;
  readonly errors: string[];
  readonly ruleNames: readonly string[];
}

/**
 * Compiles a schema-valid auth-clients.yaml document. Semantic errors (duplicate names, a header
 * name that is not a token, unsafe or invalid patterns, a pattern that matches nothing-at-all)
 * carry the file:line:column of the node through `at`.
 */
export function compileAuthClients(doc: AuthClientsFile, at: (path: ValuePath) => string): CompileAuthClientsResult {
  const errors: string[] = [];
  const members: Member[] = [];
  const names = new Map<string, number>();
  (doc.clients ?? []).forEach((c, i) => {
    const prev = names.get(c.name);
    if (prev !== undefined) {
      errors.push(`${at(['clients', i, 'name'])}: profile name "${c.name}" is already used by clients[${prev}]`);
      return;
    }
    names.set(c.name, i);
    if (['default', 'learned_md5_fallback', 'learned_stronger'].includes(c.name)) {
      errors.push(`${at(['clients', i, 'name'])}: "${c.name}" is reserved for the edge's own choices`);
      return;
    }
    if (!TOKEN_RE.test(c.match.where)) {
      errors.push(`${at(['clients', i, 'match', 'where'])}: "${c.match.where}" is not a header name`);
      return;
    }
    const compiled = compilePattern(c.match.pattern, c.match.caseInsensitive === false ? '' : 'i', 'client');
    if (!compiled.ok) {
      errors.push(`${at(['clients', i, 'match', 'pattern'])}: ${compiled.error}`);
      return;
    }
    const re = compiled.re;
    const header = canonicalName(c.match.where);
    const client: CompiledAuthClient = Object.freeze({
      name: c.name,
      rule: authClientRule(c.name),
      algorithms: Object.freeze([...c.algorithms]) as readonly AuthAlgorithm[],
      offer: c.offer ?? 'all',
      where: header,
    });
    members.push({ client, header, re });
  });

  const learning = Object.freeze({ ...doc.learning });
  const clients = Object.freeze(members.map((m) => m.client));
  const authClients: CompiledAuthClients = Object.freeze({
    clients,
    default: Object.freeze([...doc.default]) as readonly AuthAlgorithm[],
    learning,
    match(msg: SipMessage): CompiledAuthClient | null {
      try {
        for (const m of members) {
          for (const f of fields(msg, m.header)) if (m.re.test(f.value)) return m.client;
        }
      } catch {
        // total: a defect in a header accessor never becomes a throw on attacker input
      }
      return null;
    },
  });
  const ruleNames = [...clients.map((c) => c.rule), AUTH_CLIENT_RULES.default, AUTH_CLIENT_RULES.fallback, AUTH_CLIENT_RULES.learned];
  return { authClients, errors, ruleNames };
}
