// GeoIP stage: country allow/deny lists, an explicit unknown-country policy and denied ASNs,
// looked up on the transport source address (never a header; see access.ts for why).
//
// Policy choice: a per-domain override when the Request-URI host names one, else the override of
// the listener that received the message, else the top-level policy. The domain comes from the
// Request-URI, which the sender writes: a sender may pick the most lenient served domain. That
// is acceptable because every domain's policy is the operator's choice, and requests to domains
// that are not served get 403 from the proxy anyway; keep domain overrides at least as strict
// as you need for that domain to be reachable by anyone.
//
// Order of checks: denied ASN first (a hosting network is refused whatever country it sits in),
// then the country lists, then the unknown-country policy. Private, loopback, link-local,
// CGNAT and multicast addresses have no country (RFC 1918, RFC 6598, RFC 4193, RFC 4291 2.5.3,
// 2.5.6, 2.7), so they follow unknownCountry; that is also what tests on 127.0.0.x exercise.
// Inside traffic passes. Trusted sources may skip this stage (stages.yaml decides).
import type { RulesSnapshot } from '../snapshot';
import type { GeoPolicy } from './compile';
import { requestUri } from '../../sip/headers';
import { CidrSet } from '../../net/cidr';
import { CONTINUE, type MessageContext, type Stage, type Verdict } from '../../verdict';
import { actionVerdict } from '../access/stage';

export const GEO_REASONS = [
  'country_blocked',     // the country is on the deny-list
  'country_not_allowed', // an allow-list is active and the country is not on it
  'country_unknown',     // no country known for the source and unknownCountry is deny
  'asn_blocked',         // the source's autonomous system is denied
] as const;

export type GeoReason = (typeof GEO_REASONS)[number];

/** What the stage needs from the GeoIP library (geoip/GeoDb, combineGeo, openGeoDatabases). */
export interface GeoSource {
  lookup(addr: string): { readonly country?: string; readonly asn?: number };
}

/** Addresses no GeoIP database can place. */
const NO_COUNTRY = new CidrSet();
for (const c of [
  '0.0.0.0/8', '10.0.0.0/8', '100.64.0.0/10', '127.0.0.0/8', '169.254.0.0/16', '172.16.0.0/12',
  '192.168.0.0/16', '224.0.0.0/4', '240.0.0.0/4',
  '::/128', '::1/128', 'fc00::/7', 'fe80::/10', 'ff00::/8',
]) NO_COUNTRY.add(c);

/** True for private, loopback, link-local, CGNAT, multicast and reserved addresses. */
export function isUnlocatable(address: string): boolean {
  return NO_COUNTRY.has(address);
}

export function createGeoStage(rules: () => RulesSnapshot, geo: GeoSource): Stage {
  function pick(ctx: MessageContext, g: RulesSnapshot['geoip']): { policy: GeoPolicy; rule: string } {
    if (g.domainOverrides.size > 0 && ctx.msg.kind === 'request') {
      const host = requestUri(ctx.msg)?.host;
      if (host !== undefined) {
        const key = host.replace(/\.$/, '');
        const p = g.domainOverrides.get(key);
        if (p !== undefined) return { policy: p, rule: `geoip:domain:${key}` };
      }
    }
    const lid = ctx.source.listenerId;
    if (lid !== undefined && g.listenerOverrides.size > 0) {
      const p = g.listenerOverrides.get(lid.toLowerCase());
      if (p !== undefined) return { policy: p, rule: `geoip:listener:${lid.toLowerCase()}` };
    }
    return { policy: g.policy, rule: 'geoip:default' };
  }

  function check(ctx: MessageContext): Verdict {
    if (ctx.side === 'inside') return CONTINUE;
    const { policy, rule } = pick(ctx, rules().geoip);
    if (policy.countryMode === 'off' && policy.denyAsns.size === 0) return CONTINUE;
    const addr = ctx.source.address;
    let country: string | undefined;
    let asn: number | undefined;
    if (!isUnlocatable(addr)) {
      let info: { readonly country?: string; readonly asn?: number };
      try {
        info = geo.lookup(addr);
      } catch {
        info = {}; // the library is total; a broken lookup counts as unknown, never as a crash
      }
      country = typeof info.country === 'string' ? info.country.toUpperCase() : undefined;
      asn = typeof info.asn === 'number' ? info.asn : undefined;
    }
    if (asn !== undefined && policy.denyAsns.has(asn)) return actionVerdict(policy.action, 'asn_blocked', rule);
    if (policy.countryMode === 'off') return CONTINUE;
    if (country === undefined) {
      return policy.unknownCountry === 'deny' ? actionVerdict(policy.action, 'country_unknown', rule) : CONTINUE;
    }
    if (policy.countryMode === 'deny') {
      return policy.countries.has(country) ? actionVerdict(policy.action, 'country_blocked', rule) : CONTINUE;
    }
    return policy.countries.has(country) ? CONTINUE : actionVerdict(policy.action, 'country_not_allowed', rule);
  }

  return { name: 'geoip', skippableForTrusted: true, reasons: GEO_REASONS, scope: { sides: ['outside'], requests: 'all', responses: true }, check };
}
