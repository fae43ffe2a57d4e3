// Where a packet comes from and how far it is trusted: one derivation for the running edge and
// for `sip-edge explain`, so the two can never disagree.
//
// An upstream is recognised like Kamailio's ds_is_from_list(): by address and port over UDP (so
// a phone on the PBX's own host is still outside), by address over TCP (a PBX opens its
// connections from ephemeral ports). `inside` CIDRs mark whole hosts. Trusted: --trusted CIDRs or
// the access rules' trusted list, decided on the transport source, never on a header.
import type { ResolvedConfig } from './config/types';
import { CidrSet } from './net/cidr';
import { accessTrust } from './policy/access/stage';
import type { RulesSnapshot } from './policy/snapshot';
import type { Endpoint } from './sip/types';
import type { Side, Trust } from './verdict';

export interface SourceClassifier {
  /** is this host an inside host (PBX side)? for routing decisions on URIs */
  isInside(address: string): boolean;
  /** is this transport endpoint inside? */
  isInsideSource(ep: Endpoint): boolean;
  trustOf(address: string, side: Side): Trust;
  /** an outside source's trust and the access lists' answer for it, with one lookup (the access
   *  stage reads the answer from the context instead of looking again) */
  outside(address: string): { trust: Trust; access: AccessClass | null };
  classify(ep: Endpoint): { side: Side; trust: Trust };
}

type AccessClass = ReturnType<RulesSnapshot['access']['classify']>;

export function sourceClassifier(cfg: ResolvedConfig, rules: () => RulesSnapshot): SourceClassifier {
  const inside = new CidrSet();
  for (const c of cfg.inside) inside.add(c);
  const trusted = new CidrSet();
  for (const c of cfg.trusted) trusted.add(c);
  const upstreamHosts = new Set(cfg.upstreams.map((u) => u.host));
  // address -> ports: asked for every packet, so no "address|port" string is built per lookup
  const upstreamUdp = new Map<string, Set<number>>();
  for (const u of cfg.upstreams) {
    if (u.transport !== 'udp') continue;
    let ports = upstreamUdp.get(u.host);
    if (ports === undefined) upstreamUdp.set(u.host, ports = new Set());
    ports.add(u.port);
  }
  const upstreamStream = new Set(cfg.upstreams.filter((u) => u.transport !== 'udp').map((u) => u.host));
  const isInsideSource = (ep: Endpoint): boolean =>
    (ep.transport === 'udp' ? upstreamUdp.get(ep.address)?.has(ep.port) === true : upstreamStream.has(ep.address)) ||
    (inside.size > 0 && inside.has(ep.address));
  const trustOf = (a: string, side: Side): Trust =>
    (side === 'inside' ? 'inside' : trusted.has(a) || accessTrust(rules(), a) ? 'trusted' : 'untrusted');
  return {
    outside(a) {
      const access = rules().access.classify(a);
      return { trust: trusted.has(a) || access?.list === 'trusted' ? 'trusted' : 'untrusted', access };
    },
    isInside: (a) => upstreamHosts.has(a) || inside.has(a),
    isInsideSource,
    trustOf,
    classify(ep) {
      const side: Side = isInsideSource(ep) ? 'inside' : 'outside';
      return { side, trust: trustOf(ep.address, side) };
    },
  };
}
