// Canonical address input for the GeoIP library. A leaf module: it imports nothing from edge/,
// so it has its own (small) canonicaliser instead of edge/net/address.ts.
//
// Why canonicalise at all: MaxMind trees store IPv4 at ::/96 (spec "IPv4 addresses in an IPv6
// tree"); an IPv4-mapped address ::ffff:a.b.c.d (RFC 4291 2.5.5.2), as a dual-stack socket
// reports an IPv4 peer, would walk a different branch and find nothing (checked against the
// ip-location-db database: ::ffff:8.8.8.8 -> null, 8.8.8.8 -> US). So mapped addresses become
// dotted quads before the lookup. Never throws: anything that is not an IP address gives null.
import * as net from 'node:net';

const MAX_TEXT = 64; // longest IPv6 text is 45 characters; longer input is hostile
const MAPPED_RE = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/;

/** "1.2.3.4", "2001:db8::1", "[2001:db8::1]", "fe80::1%eth0", "::ffff:1.2.3.4" -> canonical text
 *  (IPv4 dotted quad, IPv6 compressed lower-case); null for anything else. */
export function canonicalIp(input: unknown): string | null {
  if (typeof input !== 'string' || input.length === 0 || input.length > MAX_TEXT) return null;
  let s = input;
  if (s.charCodeAt(0) === 0x5b && s.charCodeAt(s.length - 1) === 0x5d) s = s.slice(1, -1);
  // RFC 4007 11: a zone id names a local interface, not a location
  const pct = s.indexOf('%');
  if (pct >= 0) s = s.slice(0, pct);
  // net.isIPv4 rejects leading zeros ("010.0.0.1"), so no octal ambiguity reaches the lookup
  if (net.isIPv4(s)) return s;
  if (!net.isIPv6(s)) return null;
  let host: string;
  try {
    // WHATWG URL host parsing is the RFC 5952 serialiser Node ships (compressed, lower-case)
    host = new URL(`http://[${s}]/`).hostname.slice(1, -1);
  } catch {
    return null;
  }
  const m = MAPPED_RE.exec(host);
  if (m) {
    const hi = parseInt(m[1]!, 16);
    const lo = parseInt(m[2]!, 16);
    return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  }
  return host;
}
