// Resolve the `trunks:` and `egress:` keys (schema: trunks-schema.ts) into TrunkSpec values,
// with the same file:line errors as the rest of load.ts.
import { ipLiteral, isHostName } from '../net/address';
import { cidrErrorText, formatCidr, parseCidr } from '../net/cidr';
import type { ConfigFile } from './schema';
import type { TrunkSpec } from './types';
import type { ValuePath } from './yaml';

export interface TrunkResolution {
  readonly trunks: TrunkSpec[];
  readonly egress: 'trunks' | 'any';
  /** CIDRs of trunks whose inbound traffic skips auth: added to `trusted` */
  readonly trusted: string[];
}

export function resolveTrunks(
  f: Pick<ConfigFile, 'trunks' | 'egress'>,
  h: { err: (where: string, msg: string) => void; at: (p: ValuePath) => string },
): TrunkResolution {
  const trunks: TrunkSpec[] = [];
  const trusted: string[] = [];
  const names = new Set<string>();
  const hostOwner = new Map<string, string>();
  f.trunks.forEach((t, i) => {
    if (names.has(t.name)) h.err(h.at(['trunks', i, 'name']), `trunks: the name ${JSON.stringify(t.name)} is used twice`);
    names.add(t.name);
    const addresses: string[] = [];
    t.addresses.forEach((text, j) => {
      const p = parseCidr(text);
      if (typeof p === 'string') h.err(h.at(['trunks', i, 'addresses', j]), `trunks[${t.name}].addresses ${JSON.stringify(text)}: ${cidrErrorText(text, p)}`);
      else addresses.push(formatCidr(p));
    });
    const hosts: string[] = [];
    t.hosts.forEach((text, j) => {
      const host = text.toLowerCase().replace(/\.$/, '');
      if (ipLiteral(host) !== null || !isHostName(host)) {
        h.err(h.at(['trunks', i, 'hosts', j]), `trunks[${t.name}].hosts ${JSON.stringify(text)}: not a host name (IP addresses go in addresses)`);
        return;
      }
      const owner = hostOwner.get(host);
      if (owner !== undefined && owner !== t.name) h.err(h.at(['trunks', i, 'hosts', j]), `trunks[${t.name}].hosts ${JSON.stringify(text)}: already a host of trunk ${owner}`);
      hostOwner.set(host, t.name);
      hosts.push(host);
    });
    if (addresses.length === 0 && hosts.length === 0) h.err(h.at(['trunks', i]), `trunks[${t.name}]: needs addresses or hosts`);
    if (t.inbound.allowed && t.inbound.skipAuth) for (const c of addresses) trusted.push(c);
    trunks.push({
      name: t.name, addresses, hosts,
      ...(t.transport !== null ? { transport: t.transport } : {}),
      inbound: { ...t.inbound }, outbound: { ...t.outbound }, register: { ...t.register },
    });
  });
  const egress = f.egress ?? (trunks.length > 0 ? 'trunks' : 'any');
  return { trunks, egress, trusted };
}
