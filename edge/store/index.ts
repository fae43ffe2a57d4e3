// Shared state for rate limits and bans: pick the store from configuration, build the local ban
// cache. See types.ts for the contract, memory.ts / redis.ts for the two implementations.
import { LocalBanCache, type BanCacheOptions } from './ban-cache';
import { createMemoryStore, type MemoryStoreOptions } from './memory';
import { createRedisStore, type RedisStoreOptions } from './redis';
import type { SharedStore } from './types';

export type { Ban, BanCache, BanEvent, ConsumeResult, Limiter, LimiterSpec, SharedStore } from './types';
export { LocalBanCache, type BanCacheOptions } from './ban-cache';
export { createMemoryStore, StoreInputError, banSeconds, MAX_BAN_SECONDS, type MemoryStoreOptions, type BanRequest, type Escalation } from './memory';
export { createRedisStore, StoreUnavailableError, type RedisStoreOptions } from './redis';

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
