// CIDR sets and maps with longest-prefix match, for trusted/inside peers and IP rules, and the one
// CIDR parser of the edge: config (inside, trusted), rules/access.yaml and its list files,
// `sip-edge bans` and the admin listener all parse and report through parseCidr() and
// cidrErrorText() below, so one input gets one answer whichever way it comes in.
//
// Layout: one hash map per prefix length in use, per family, probed from the longest length
// down (the classic "binary search on prefix lengths" structure without the binary search).
// A lookup costs at most one masked hash probe per distinct prefix length present (<= 33 for
// IPv4, <= 129 for IPv6), independent of how many entries there are: 100,000 /32s cost one
// probe, the same as 10. Memory is O(entries); a bit trie would need up to 128 nodes per IPv6
// entry.
//
// Host bits set ("10.1.2.3/8") are refused, never masked: such an entry is almost always a typo
// for one address ("10.1.2.3") or for the network ("10.0.0.0/8"), and on a trusted or allow list
// guessing the network would trust 16 million addresses for one mistyped host. The error says
// which network was probably meant (Python's ipaddress and PostgreSQL's cidr refuse the same way;
// iptables masks silently). IPv4-mapped IPv6 prefixes ("::ffff:10.0.0.0/104") are stored as IPv4.
import { bytesToIp, ipToBytes, maskBytes, type IpBytes } from './address';

/** Stable codes for a CIDR that does not parse. */
export type CidrError = 'cidr_invalid_address' | 'cidr_invalid_prefix' | 'cidr_host_bits';

export interface CidrMatch<T> {
  /** the entry that matched, canonical: "10.0.0.0/8", "2001:db8::/32" */
  readonly cidr: string;
  readonly value: T;
}

export interface ParsedCidr {
  /** the network: 4 bytes for IPv4 (and IPv4-mapped), 16 for IPv6; no bit set past `bits` */
  readonly bytes: IpBytes;
  readonly bits: number;
}

/** the text as written, masked to its prefix, and whether masking changed it */
function parseLoose(text: string): { net: ParsedCidr; hostBits: boolean } | Exclude<CidrError, 'cidr_host_bits'> {
  if (typeof text !== 'string' || text.length === 0 || text.length > 64) return 'cidr_invalid_address';
  const s = text.trim();
  const slash = s.indexOf('/');
  const addrText = slash < 0 ? s : s.slice(0, slash);
  // brackets are fine around an address, never around a prefix; a zone id has no place in a rule
  if (addrText.indexOf('%') >= 0) return 'cidr_invalid_address';
  const raw = ipToBytes(addrText);
  if (raw === null) return 'cidr_invalid_address';
  const wasV6Text = addrText.indexOf(':') >= 0;
  const max = wasV6Text ? 128 : 32;
  let bits = max;
  if (slash >= 0) {
    const p = s.slice(slash + 1);
    if (!/^[0-9]{1,3}$/.test(p) || (p.length > 1 && p[0] === '0')) return 'cidr_invalid_prefix';
    bits = Number(p);
    if (bits > max) return 'cidr_invalid_prefix';
  }
  if (wasV6Text && raw.length === 4) {
    // IPv4-mapped: the first 96 bits are fixed (RFC 4291 2.5.5.2); a shorter prefix would also
    // cover real IPv6 space, which cannot be expressed as an IPv4 entry
    if (bits < 96) return 'cidr_invalid_prefix';
    bits -= 96;
  }
  const bytes = maskBytes(raw, bits);
  let hostBits = false;
  for (let i = 0; i < raw.length; i++) if (bytes[i] !== raw[i]) hostBits = true;
  return { net: { bytes, bits }, hostBits };
}

/** Parse "a.b.c.d/n", "x::y/n" or a plain address (/32 or /128). An address with bits set past
 *  the prefix is refused ('cidr_host_bits'); see the file comment. */
export function parseCidr(text: string): ParsedCidr | CidrError {
  const p = parseLoose(text);
  if (typeof p === 'string') return p;
  return p.hostBits ? 'cidr_host_bits' : p.net;
}

/** The canonical text of a parsed CIDR: "10.0.0.0/8", "2001:db8::/32", "192.0.2.9/32". */
export function formatCidr(p: ParsedCidr): string {
  return `${bytesToIp(p.bytes)}/${p.bits}`;
}

/**
 * The one spelling of a ban target (an address or a CIDR), as the ban cache files it: a single
 * address (no prefix, /32, /128) as the canonical address, a network as canonical "network/len".
 * `sip-edge bans` and the admin listener key the store with it, so that "2001:DB8::/32" added
 * and "2001:db8::/32" removed are one ban.
 */
export function cidrKey(p: ParsedCidr): string {
  return p.bits === p.bytes.length * 8 ? bytesToIp(p.bytes) : formatCidr(p);
}

/** What is wrong with `text`, for an operator: the same words from every entry point. */
export function cidrErrorText(text: string, error: CidrError): string {
  switch (error) {
    case 'cidr_invalid_address':
      return 'not an IP address or CIDR (e.g. "192.0.2.7", "10.0.0.0/8", "2001:db8::/32")';
    case 'cidr_invalid_prefix': {
      const addr = String(text).trim().split('/')[0] ?? '';
      if (addr.indexOf(':') < 0) return 'prefix length must be 0..32';
      const b = ipToBytes(addr);
      return b !== null && b.length === 4 ? 'prefix length must be 96..128 for an IPv4-mapped address' : 'prefix length must be 0..128';
    }
    case 'cidr_host_bits': {
      const p = parseLoose(text);
      return typeof p === 'string' ? 'host bits set' : `host bits set (did you mean "${formatCidr(p.net)}"?)`;
    }
    default:
      return String(error);
  }
}

function v4Number(b: IpBytes): number {
  return ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
}

/** Key of the first `bits` bits of an IPv4 address: the prefix value itself, which stays a small
 *  integer (no heap number per probe) for every length up to /30. */
function v4Key(n: number, bits: number): number {
  return bits === 0 ? 0 : n >>> (32 - bits);
}

/** Key of the first `bits` bits of an IPv6 address: one UTF-16 code unit per 16-bit group. */
function v6Key(b: IpBytes, bits: number): string {
  const groups = (bits + 15) >> 4;
  let key = '';
  for (let g = 0; g < groups; g++) {
    let v = (b[g * 2] << 8) | b[g * 2 + 1];
    const keep = bits - g * 16;
    if (keep < 16) v &= (0xffff << (16 - keep)) & 0xffff;
    key += String.fromCharCode(v);
  }
  return key;
}

/** 64 Kibit presence filter per prefix length: a probe whose filter bit is clear skips the hash
 *  map. The filters (8 KiB each) stay in CPU cache where big hash maps do not, so lengths that
 *  cannot match cost one cached bit test instead of a cache miss. False positives only. */
const FILTER_WORDS = 2048;

function v4Filter(n: number, bits: number): number {
  return bits >= 16 ? n >>> 16 : bits === 0 ? 0 : n >>> (32 - bits);
}

/** mix of the first four (masked) groups: IPv6 rules often share their first 32 bits */
function v6Filter(b: IpBytes, bits: number): number {
  let h = 0x811c9dc5;
  for (let g = 0; g < 4; g++) {
    const keep = bits - g * 16;
    if (keep <= 0) break;
    let v = (b[g * 2] << 8) | b[g * 2 + 1];
    if (keep < 16) v &= (0xffff << (16 - keep)) & 0xffff;
    h = Math.imul(h ^ v, 0x01000193);
  }
  return (h ^ (h >>> 16)) & 0xffff;
}

interface Level<K, T> {
  readonly bits: number;
  readonly map: Map<K, CidrMatch<T>>;
  readonly filter: Uint32Array;
}

function levelFor<K, T>(levels: Array<Level<K, T>>, bits: number): { level: Level<K, T>; levels: Array<Level<K, T>> } {
  const found = levels.find((l) => l.bits === bits);
  if (found !== undefined) return { level: found, levels };
  const level: Level<K, T> = { bits, map: new Map(), filter: new Uint32Array(FILTER_WORDS) };
  return { level, levels: [...levels, level].sort((a, b) => b.bits - a.bits) };
}

/** Longest-prefix-match map from CIDR to a value (rule name, country set ...). */
export class CidrMap<T> {
  // one level per prefix length in use, longest first: prefix key -> entry
  private v4: Array<Level<number, T>> = [];
  private v6: Array<Level<string, T>> = [];
  private count = 0;

  /** Add or replace an entry. Returns an error code for invalid input, null on success. */
  add(cidr: string, value: T): CidrError | null {
    const p = parseCidr(cidr);
    if (typeof p === 'string') return p;
    const entry: CidrMatch<T> = { cidr: formatCidr(p), value };
    let f: number;
    if (p.bytes.length === 4) {
      const r = levelFor(this.v4, p.bits);
      this.v4 = r.levels;
      const n = v4Number(p.bytes);
      const k = v4Key(n, p.bits);
      if (!r.level.map.has(k)) this.count++;
      r.level.map.set(k, entry);
      f = v4Filter(n, p.bits);
      r.level.filter[f >>> 5] |= 1 << (f & 31);
    } else {
      const r = levelFor(this.v6, p.bits);
      this.v6 = r.levels;
      const k = v6Key(p.bytes, p.bits);
      if (!r.level.map.has(k)) this.count++;
      r.level.map.set(k, entry);
      f = v6Filter(p.bytes, p.bits);
      r.level.filter[f >>> 5] |= 1 << (f & 31);
    }
    return null;
  }

  /** The most specific entry covering `addr` (any spelling; IPv4-mapped matches IPv4 entries). */
  match(addr: string): CidrMatch<T> | null {
    const b = ipToBytes(addr);
    return b === null ? null : this.matchBytes(b);
  }

  /** Same as match() for an address already in bytes (see ipToBytes). At most one filter test and
   *  one hash probe per prefix length in use, whatever the number of entries. */
  matchBytes(b: IpBytes): CidrMatch<T> | null {
    if (b.length === 4) {
      const n = v4Number(b);
      for (const l of this.v4) {
        const f = v4Filter(n, l.bits);
        if ((l.filter[f >>> 5] & (1 << (f & 31))) === 0) continue;
        const hit = l.map.get(v4Key(n, l.bits));
        if (hit !== undefined) return hit;
      }
      return null;
    }
    for (const l of this.v6) {
      const f = v6Filter(b, l.bits);
      if ((l.filter[f >>> 5] & (1 << (f & 31))) === 0) continue;
      const hit = l.map.get(v6Key(b, l.bits));
      if (hit !== undefined) return hit;
    }
    return null;
  }

  get(addr: string): T | undefined {
    return this.match(addr)?.value;
  }

  has(addr: string): boolean {
    return this.match(addr) !== null;
  }

  /** number of distinct entries */
  get size(): number {
    return this.count;
  }

  /** every entry, longest prefixes first within each family (for diagnostics and tests) */
  entries(): CidrMatch<T>[] {
    const out: CidrMatch<T>[] = [];
    for (const l of this.v4) out.push(...l.map.values());
    for (const l of this.v6) out.push(...l.map.values());
    return out;
  }
}

/** A set of CIDRs; match() tells which entry covered the address. */
export class CidrSet {
  private readonly map = new CidrMap<true>();

  /** Returns an error code for invalid input (the set is unchanged), null on success. */
  add(cidr: string): CidrError | null {
    return this.map.add(cidr, true);
  }

  has(addr: string): boolean {
    return this.map.match(addr) !== null;
  }

  /** the canonical entry ("10.0.0.0/8") covering addr, longest prefix first; null when none */
  match(addr: string): string | null {
    return this.map.match(addr)?.cidr ?? null;
  }

  get size(): number {
    return this.map.size;
  }
}
