// Shared state for rate limits, bans, replay/enumeration counters and trust promotion: pick the
// store from configuration, build the local ban cache. See types.ts for the contract, memory.ts /
// redis.ts for the two implementations (redis-url.ts: the three Redis topologies' URLs).
import { LocalBanCache, type BanCacheOptions } from './ban-cache';
import { createMemoryStore, type MemoryStoreOptions } from './memory';
import { createRedisStore, type RedisStoreOptions } from './redis';
import type { SharedStore } from './types';

export type { Ban, BanCache, BanEvent, ConsumeResult, Limiter, LimiterSpec, SharedStore } from './types';
export { LocalBanCache, type BanCacheOptions } from './ban-cache';
export { createMemoryStore, StoreInputError, banSeconds, MAX_BAN_SECONDS, MAX_PROMOTION_MS, type MemoryStoreOptions, type BanRequest, type Escalation } from './memory';
export { createRedisStore, StoreUnavailableError, PROMOTION_ANNOUNCE_INTERVAL_MS, type RedisStoreOptions } from './redis';
// the URL parser has no ioredis dependency: config validation may import './store/redis-url' directly
export { parseRedisUrl, redactRedisUrl, type ParsedRedisUrl, type RedisEndpoint } from './redis-url';
export { boundedKey, MAX_STORE_KEY_CHARS, ONCE_MAX_ENTRIES, DISTINCT_MAX_SETS, DISTINCT_MAX_MEMBERS, MAX_DISTINCT_CAP } from './bounded';

export type StoreOptions = ({ readonly kind: 'memory' } & MemoryStoreOptions) | ({ readonly kind: 'redis' } & RedisStoreOptions);

/** The store a configuration asks for: memory for a single node, Redis for a cluster. */
export async function openStore(o: StoreOptions): Promise<SharedStore> {
  if (o.kind === 'redis') return createRedisStore(o);
  return createMemoryStore(o);
}

/** Store plus its ban cache, ready for the pipeline: `cache.check(addr, now)` per packet. */
export async function openStoreWithCache(o: StoreOptions, cacheOpts: BanCacheOptions = {}): Promise<{ store: SharedStore; cache: LocalBanCache }> {
  const store = await openStore(o);
  const cache = await LocalBanCache.create(store, cacheOpts);
  return { store, cache };
}
