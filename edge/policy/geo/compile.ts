// geoip.yaml: country allow-list or deny-list, an explicit policy for addresses whose country is
// unknown, denied ASNs (hosting networks scanners rent), the action, per-listener and per-domain
// overrides, and the database paths.
//
//   mode: deny                 # allow | deny | off (default off: no country policy)
//   countries: [CN, RU]        # ISO 3166-1 alpha-2
//   unknownCountry: allow      # allow | deny: private/loopback addresses and gaps in the database
//   denyAsns: [14061]          # autonomous system numbers (needs asnDb)
//   action: drop               # drop (default) | reject (403 Forbidden)
//   countryDb: null            # null = the embedded default (npm @ip-location-db/geo-whois-asn-country-mmdb)
//   asnDb: null                # e.g. /var/lib/GeoIP/GeoLite2-ASN.mmdb; null = no ASN checks
//   listeners:                 # overrides by listener id; unset fields inherit the top level
//     - { listener: "udp:0.0.0.0:5061", mode: allow, countries: [DE, AT], unknownCountry: deny }
//   domains:                   # overrides by Request-URI host
//     - { domain: pbx.example.com, mode: allow, countries: [DE] }
//
// Policy choice per message (edge/policy/geo/stage.ts): a domain override when the Request-URI host
// names one, else the listener override, else the top level.
import { Type } from '@sinclair/typebox';
import type { Static, TProperties } from '@sinclair/typebox';
import type { ValuePath } from '../../config/yaml';
import type { RuleAction } from '../snapshot';

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

/** ISO 3166-1 alpha-2, the 249 officially assigned codes. */
export const ISO_COUNTRIES: ReadonlySet<string> = new Set(
  ('AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ ' +
    'CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR ' +
    'GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP ' +
    'KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT ' +
    'MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW ' +
    'SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ ' +
    'UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW').split(' '),
);
/** Codes outside ISO 3166-1 that GeoIP data uses: XK (Kosovo, user-assigned, used by MaxMind and
 *  the RIRs), EU and AP (RIR blocks registered to a region, not a country). */
export const EXTRA_GEO_CODES: ReadonlySet<string> = new Set(['XK', 'EU', 'AP']);
/** common mistakes: the code people type -> the ISO code */
const COUNTRY_HINTS: Readonly<Record<string, string>> = { UK: 'GB', EL: 'GR', KO: 'KR', SP: 'ES' };

const MAX_ASN = 4294967295; // RFC 6793: 4-byte AS numbers

const ModeSchema = Type.Union([Type.Literal('allow'), Type.Literal('deny'), Type.Literal('off')], {
  description: 'allow: only the listed countries; deny: all but the listed countries; off: no country check.',
  errorMessage: 'expected allow, deny or off',
});
const UnknownSchema = Type.Union([Type.Literal('allow'), Type.Literal('deny')], {
  description: 'What happens when the country is unknown (private addresses, database gaps, no database).',
  errorMessage: 'expected allow or deny',
});
const ActionSchema = Type.Union([Type.Literal('drop'), Type.Literal('reject')], {
  description: 'drop (silence) or reject (403 Forbidden).',
  errorMessage: 'expected drop or reject',
});
const CountriesSchema = Type.Array(Type.String({ minLength: 1, maxLength: 8, errorMessage: 'expected a country code' }), {
  maxItems: 300,
  uniqueItems: true,
  description: 'ISO 3166-1 alpha-2 country codes ("DE", "US").',
  errorMessage: 'expected a list of distinct country codes',
});
const AsnsSchema = Type.Array(Type.Integer({ minimum: 0, maximum: MAX_ASN, errorMessage: `expected an AS number from 0 to ${MAX_ASN}` }), {
  maxItems: 100000,
  description: 'Autonomous system numbers to refuse (needs asnDb).',
  errorMessage: 'expected a list of AS numbers',
});

function overrideSchema<P extends TProperties>(key: P) {
  return Type.Object(
    {
      ...key,
      mode: Type.Optional(ModeSchema),
      countries: Type.Optional(CountriesSchema),
      unknownCountry: Type.Optional(UnknownSchema),
      denyAsns: Type.Optional(AsnsSchema),
      action: Type.Optional(ActionSchema),
    },
    { additionalProperties: false },
  );
}

export const GeoFileSchema = Type.Object(
  {
    mode: Type.Union([Type.Literal('allow'), Type.Literal('deny'), Type.Literal('off')], {
      default: 'off',
      description: 'allow: only the listed countries; deny: all but the listed countries; off: no country check.',
      errorMessage: 'expected allow, deny or off',
    }),
    countries: Type.Array(Type.String({ minLength: 1, maxLength: 8, errorMessage: 'expected a country code' }), {
      default: [],
      maxItems: 300,
      uniqueItems: true,
      description: 'ISO 3166-1 alpha-2 country codes ("DE", "US").',
      errorMessage: 'expected a list of distinct country codes',
    }),
    unknownCountry: Type.Union([Type.Literal('allow'), Type.Literal('deny')], {
      default: 'allow',
      description: 'What happens when the country is unknown (private addresses, database gaps, no database).',
      errorMessage: 'expected allow or deny',
    }),
    denyAsns: Type.Array(Type.Integer({ minimum: 0, maximum: MAX_ASN, errorMessage: `expected an AS number from 0 to ${MAX_ASN}` }), {
      default: [],
      maxItems: 100000,
      description: 'Autonomous system numbers to refuse (needs asnDb).',
      errorMessage: 'expected a list of AS numbers',
    }),
    action: Type.Union([Type.Literal('drop'), Type.Literal('reject')], {
      default: 'drop',
      description: 'drop (silence, the default) or reject (403 Forbidden).',
      errorMessage: 'expected drop or reject',
    }),
    countryDb: Type.Union([Type.String({ minLength: 1, maxLength: 1024 }), Type.Null()], {
      default: null,
      description: 'Country database (.mmdb: GeoLite2/GeoIP2 Country or City, ip-location-db); null = the embedded default.',
      errorMessage: 'expected a file path or null',
    }),
    asnDb: Type.Union([Type.String({ minLength: 1, maxLength: 1024 }), Type.Null()], {
      default: null,
      description: 'ASN database (.mmdb: GeoLite2-ASN or ip-location-db asn); null = no ASN checks.',
      errorMessage: 'expected a file path or null',
    }),
    listeners: Type.Array(
      overrideSchema({ listener: Type.String({ minLength: 1, maxLength: 200, description: 'listener id, "udp:0.0.0.0:5060"', errorMessage: 'expected a listener id ("udp:0.0.0.0:5060")' }) }),
      { default: [], maxItems: 100, description: 'Per-listener overrides; unset fields inherit the top level.', errorMessage: 'expected a list of overrides' },
    ),
    domains: Type.Array(
      overrideSchema({ domain: Type.String({ minLength: 1, maxLength: 253, description: 'served SIP domain (Request-URI host)', errorMessage: 'expected a domain name' }) }),
      { default: [], maxItems: 1000, description: 'Per-domain overrides (Request-URI host); unset fields inherit the top level.', errorMessage: 'expected a list of overrides' },
    ),
  },
  { additionalProperties: false, description: 'GeoIP country / ASN policy (rules/geoip.yaml).' },
);

export type GeoFile = Static<typeof GeoFileSchema>;

export interface GeoCompileResult {
  readonly geo: CompiledGeo;
  readonly errors: string[];
  /** rule names a geoip verdict can carry: geoip:default, geoip:listener:<id>, geoip:domain:<d> */
  readonly ruleNames: readonly string[];
}

/** Rule name of a policy scope, as the geoip stage puts it on its verdicts. */
export function geoRuleName(scope: 'default' | 'listener' | 'domain', key?: string): string {
  return scope === 'default' ? 'geoip:default' : `geoip:${scope}:${key ?? ''}`;
}

interface PolicyFields {
  readonly mode?: 'allow' | 'deny' | 'off';
  readonly countries?: readonly string[];
  readonly unknownCountry?: 'allow' | 'deny';
  readonly denyAsns?: readonly number[];
  readonly action?: 'drop' | 'reject';
}

function actionOf(a: 'drop' | 'reject'): RuleAction {
  return a === 'reject' ? Object.freeze({ kind: 'reject' as const, status: 403, phrase: 'Forbidden' }) : Object.freeze({ kind: 'drop' as const });
}

export function compileGeo(doc: GeoFile, at: (p: ValuePath) => string): GeoCompileResult {
  const errors: string[] = [];

  const countrySet = (codes: readonly string[], where: ValuePath): Set<string> => {
    const out = new Set<string>();
    codes.forEach((raw, i) => {
      const c = raw.trim().toUpperCase(); // ISO 3166-1 codes are case-insensitive in practice
      if (ISO_COUNTRIES.has(c) || EXTRA_GEO_CODES.has(c)) {
        out.add(c);
        return;
      }
      const hint = COUNTRY_HINTS[c];
      errors.push(`${at([...where, i])}: unknown country code "${raw.slice(0, 8)}" (expected ISO 3166-1 alpha-2${hint ? `; did you mean "${hint}"?` : ''})`);
    });
    return out;
  };

  const build = (f: PolicyFields, base: GeoPolicy | null, where: ValuePath): GeoPolicy => {
    const countryMode = f.mode ?? base?.countryMode ?? 'off';
    const countries = f.countries !== undefined ? countrySet(f.countries, [...where, 'countries']) : new Set(base?.countries ?? []);
    if (countryMode === 'allow' && countries.size === 0 && (f.countries !== undefined || f.mode !== undefined)) {
      // an empty allow-list would refuse every source: certainly a mistake
      errors.push(`${at(f.mode !== undefined ? [...where, 'mode'] : [...where, 'countries'])}: mode allow needs at least one country in countries`);
    }
    return Object.freeze({
      countryMode,
      countries,
      unknownCountry: f.unknownCountry ?? base?.unknownCountry ?? 'allow',
      denyAsns: f.denyAsns !== undefined ? new Set(f.denyAsns) : new Set(base?.denyAsns ?? []),
      action: f.action !== undefined ? actionOf(f.action) : base?.action ?? actionOf('drop'),
    });
  };

  const policy = build(doc, null, []);
  const ruleNames = [geoRuleName('default')];

  const listenerOverrides = new Map<string, GeoPolicy>();
  (doc.listeners ?? []).forEach((o, i) => {
    const id = o.listener.trim().toLowerCase();
    // listener ids are "proto:host:port" as the transports name them (edge/transport)
    if (!/^(udp|tcp|tls|ws|wss):.+:\d{1,5}$/.test(id)) {
      errors.push(`${at(['listeners', i, 'listener'])}: expected a listener id "proto:host:port" (got "${o.listener.slice(0, 60)}")`);
      return;
    }
    if (listenerOverrides.has(id)) {
      errors.push(`${at(['listeners', i, 'listener'])}: listener "${id}" has two overrides`);
      return;
    }
    listenerOverrides.set(id, build(o, policy, ['listeners', i]));
    ruleNames.push(geoRuleName('listener', id));
  });

  const domainOverrides = new Map<string, GeoPolicy>();
  (doc.domains ?? []).forEach((o, i) => {
    // RFC 4343: domain names compare case-insensitively; a trailing dot is the same name
    const d = o.domain.trim().toLowerCase().replace(/\.$/, '');
    if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(d) && !/^[0-9a-f:.[\]]+$/.test(d)) {
      errors.push(`${at(['domains', i, 'domain'])}: expected a domain name (got "${o.domain.slice(0, 60)}")`);
      return;
    }
    const key = d.replace(/^\[|\]$/g, '');
    if (domainOverrides.has(key)) {
      errors.push(`${at(['domains', i, 'domain'])}: domain "${key}" has two overrides`);
      return;
    }
    domainOverrides.set(key, build(o, policy, ['domains', i]));
    ruleNames.push(geoRuleName('domain', key));
  });

  const geo: CompiledGeo = Object.freeze({
    policy,
    listenerOverrides,
    domainOverrides,
    countryDb: doc.countryDb ?? null,
    asnDb: doc.asnDb ?? null,
  });
  return { geo, errors, ruleNames: Object.freeze(ruleNames) };
}
