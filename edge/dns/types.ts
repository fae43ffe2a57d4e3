// Shared shapes of the DNS resolver (edge/dns): query results, the closed label sets its metrics
// use, and the metrics hook itself (a small interface, so the module does not depend on
// edge/metrics.ts; the edge passes an adapter).

/** Record types the RFC 3263 procedure asks for; a closed set (metric label). */
export const DNS_QUERY_TYPES = ['NAPTR', 'SRV', 'A', 'AAAA'] as const;
export type DnsQueryType = (typeof DNS_QUERY_TYPES)[number];

/**
 * Outcome of one question (after retries), and of one resolution. A closed set: metric label and
 * stable reason code.
 * - ok: records of the asked type;
 * - nxdomain: RCODE 3, the name does not exist (RFC 2308 2.1);
 * - nodata: NOERROR with no record of the type (RFC 2308 2.2);
 * - servfail: RCODE 2 from every server tried;
 * - refused: RCODE 5 (or another RCODE we cannot use: FORMERR, NOTIMP) from every server tried;
 * - timeout: no acceptable answer from any server within the bound;
 * - busy: not asked, too many questions outstanding (edge/dns/client.ts maxOutstanding);
 * - error: local failure (socket error, malformed answer from every server).
 */
export const DNS_RESULTS = ['ok', 'nxdomain', 'nodata', 'servfail', 'refused', 'timeout', 'busy', 'error'] as const;
export type DnsResult = (typeof DNS_RESULTS)[number];

/** Where a synchronous lookup found its answer: fresh in cache, stale (served while a refresh
 *  runs, RFC 8767), or not at all. */
export const DNS_CACHE_RESULTS = ['hit', 'stale', 'miss'] as const;
export type DnsCacheResult = (typeof DNS_CACHE_RESULTS)[number];

/** One resource record of an answer, reduced to what RFC 3263 needs. */
export type DnsRecord =
  | { readonly type: 'A' | 'AAAA'; readonly ttl: number; readonly address: string }
  | { readonly type: 'SRV'; readonly ttl: number; readonly priority: number; readonly weight: number; readonly port: number; readonly target: string }
  | { readonly type: 'NAPTR'; readonly ttl: number; readonly order: number; readonly preference: number; readonly flags: string; readonly services: string; readonly regexp: string; readonly replacement: string };

/** The answer to one question, after retries. Never thrown: a value. */
export interface DnsAnswer {
  readonly result: DnsResult;
  /** records of the asked type (answer section, owner = the asked name); empty unless ok */
  readonly records: readonly DnsRecord[];
  /** seconds this answer may be cached: min TTL of the records (ok), RFC 2308 5 for negative
   *  answers (min of the SOA's TTL and MINIMUM), absent when the answer gives none */
  readonly ttl?: number;
}

/** Metrics hook. Labels are closed sets; never a name or an address. */
export interface DnsMetrics {
  /** one question answered (or given up) on the wire */
  query(type: DnsQueryType, result: DnsResult): void;
  /** one synchronous lookup (SipResolver.lookup) */
  cache(result: DnsCacheResult): void;
}

export const nullDnsMetrics: DnsMetrics = { query() {}, cache() {} };
