// The DNS resolver module: RFC 3263 / RFC 2782 resolution of SIP destinations (resolver.ts),
// the wire client under it (client.ts), selection rules (srv.ts), and the glue to the edge's
// config and metrics.
import type { DnsConfig } from '../config/types';
import type { EdgeMetrics } from '../metrics';
import { SipResolver } from './resolver';
import type { SipDnsTransport, SipResolverOptions } from './resolver';
import type { DnsMetrics } from './types';

export { DnsClient } from './client';
export { TargetCursor, targetKey } from './failover';
export type { DnsServer } from './client';
export { SipResolver, defaultPort, destKey, destinationFromUri, parseResolvConf, srvName } from './resolver';
export type { Resolution, SipDestination, SipDnsTransport, SipResolverOptions, SipTarget } from './resolver';
export type { DnsAnswer, DnsCacheResult, DnsMetrics, DnsQueryType, DnsRecord, DnsResult } from './types';
export { DNS_CACHE_RESULTS, DNS_QUERY_TYPES, DNS_RESULTS, nullDnsMetrics } from './types';

/** The resolver options a `dns:` config section means (servers empty = /etc/resolv.conf). */
export function resolverOptions(c: DnsConfig, transports: readonly SipDnsTransport[]): SipResolverOptions {
  return {
    ...(c.servers.length > 0 ? { servers: c.servers } : {}),
    timeoutMs: c.timeoutMs,
    attempts: c.attempts,
    maxOutstanding: c.maxOutstanding,
    transports,
    ipv6: c.ipv6,
    preferIpv6: c.preferIpv6,
    ...c.cache,
  };
}

/** The resolver's metrics hook counting into the edge's metrics (sipedge_dns_*). */
export function dnsMetricsOf(m: EdgeMetrics): DnsMetrics {
  return { query: (type, result) => m.dnsQuery(type, result), cache: (result) => m.dnsCache(result) };
}

/** A resolver for a resolved config's `dns:` section. */
export function createResolver(c: DnsConfig, transports: readonly SipDnsTransport[], metrics?: EdgeMetrics): SipResolver {
  return new SipResolver({ ...resolverOptions(c, transports), ...(metrics !== undefined ? { metrics: dnsMetricsOf(metrics) } : {}) });
}
