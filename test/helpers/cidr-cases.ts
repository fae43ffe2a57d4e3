// One table of CIDR inputs and the one answer each must get, whichever way an operator hands it
// to the edge: config inside/trusted, rules/access.yaml, an access list file, `sip-edge bans`
// and the admin listener (test/cidr.test.ts and test/cli-bans.test.ts walk every entry point).

export type CidrCase =
  /** accepted: its canonical CIDR (config, access) and the ban key (bans: one address bare) */
  | { readonly text: string; readonly cidr: string; readonly key: string }
  /** refused with these words (after the entry point's own prefix) */
  | { readonly text: string; readonly error: string };

const NOT_AN_ADDRESS = 'not an IP address or CIDR (e.g. "192.0.2.7", "10.0.0.0/8", "2001:db8::/32")';

export const CIDR_CASES: readonly CidrCase[] = [
  { text: '10.0.0.0/8', cidr: '10.0.0.0/8', key: '10.0.0.0/8' },
  { text: '192.0.2.7', cidr: '192.0.2.7/32', key: '192.0.2.7' },
  { text: '192.0.2.7/32', cidr: '192.0.2.7/32', key: '192.0.2.7' },
  { text: '2001:DB8:0::/48', cidr: '2001:db8::/48', key: '2001:db8::/48' },
  { text: '2001:db8::7/128', cidr: '2001:db8::7/128', key: '2001:db8::7' },
  { text: '::ffff:10.0.0.0/104', cidr: '10.0.0.0/8', key: '10.0.0.0/8' },
  // host bits set: refused everywhere, with the network it would have been
  { text: '10.1.2.3/8', error: 'host bits set (did you mean "10.0.0.0/8"?)' },
  { text: '192.168.1.10/24', error: 'host bits set (did you mean "192.168.1.0/24"?)' },
  { text: '2001:db8::1/32', error: 'host bits set (did you mean "2001:db8::/32"?)' },
  { text: '::ffff:10.0.0.1/104', error: 'host bits set (did you mean "10.0.0.0/8"?)' },
  { text: '10.0.0.0/33', error: 'prefix length must be 0..32' },
  { text: '10.0.0.0/08', error: 'prefix length must be 0..32' },
  { text: '2001:db8::/129', error: 'prefix length must be 0..128' },
  { text: '::ffff:10.0.0.0/95', error: 'prefix length must be 96..128 for an IPv4-mapped address' },
  { text: '10.0.0.300/8', error: NOT_AN_ADDRESS },
  { text: '010.0.0.0/8', error: NOT_AN_ADDRESS }, // inet_aton would read octal 8.0.0.0
  { text: 'fe80::1%eth0', error: NOT_AN_ADDRESS },
  { text: 'carrier.example.com', error: NOT_AN_ADDRESS },
];

/** the first address of an accepted case's network (a probe that must match it) */
export function firstAddress(cidr: string): string {
  return cidr.slice(0, cidr.indexOf('/'));
}
