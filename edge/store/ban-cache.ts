// The per-packet ban check: a local copy of the cluster's ban set, fed by store events.
//
// check() never touches the store. Three tables, probed in this order:
// 1. exact canonical address (IPv4, IPv6 /128): one Map lookup;
// 2. IPv6 aggregates ("2001:db8:1:2::/64"): one customer usually holds a whole /64 (RFC 6177), so
//    the ban stage bans the prefix, not the address; one Map lookup per configured prefix length
//    (default only 64) on the ipv6Prefix() of the address;
// 3. any other CIDR (added by hand, or an IPv4 aggregate): CidrMap longest-prefix match, one
//    probe per prefix length in use.
// Expired entries are ignored when met and deleted (an expired ban needs no 'removed' event);
// each one deleted because its time ran out is reported once to `onExpire` (sipedge_bans_expired_total).
// The cache is bounded (default 1,000,000 entries): beyond the cap new keys are refused and
// counted (`refused`), updates of keys already held are still applied. A full cache is swept of
// expired entries (at most once a second) before it refuses.
import { bytesToIp, ipToBytes, ipv6Prefix } from '../net/address';
import { CidrMap, parseCidr } from '../net/cidr';
import type { Ban, BanCache, BanEvent, SharedStore } from './types';

export interface BanCacheOptions {
  /** maximum entries (all three tables together); default 1,000,000 */
  readonly maxEntries?: number;
  /** IPv6 aggregate prefix lengths probed on every check; default [64] */
  readonly ipv6PrefixBits?: readonly number[];
  /** clock used when applying events (epoch ms); default Date.now */
  readonly now?: () => number;
}

type Table = 'exact' | 'prefix' | 'cidr';

/** Where a ban key belongs, and its canonical spelling; null for a key that is no address. */
function classify(key: string, prefixBits: ReadonlySet<number>): { table: Table; key: string } | null {
  if (key.indexOf('/') < 0) {
    const b = ipToBytes(key);
    return b === null ? null : { table: 'exact', key: bytesToIp(b) };
  }
  const p = parseCidr(key);
  if (typeof p === 'string') return null;
  const canon = `${bytesToIp(p.bytes)}/${p.bits}`;
  if (p.bytes.length === 4 && p.bits === 32) return { table: 'exact', key: bytesToIp(p.bytes) };
  if (p.bytes.length === 16 && p.bits === 128) return { table: 'exact', key: bytesToIp(p.bytes) };
  if (p.bytes.length === 16 && prefixBits.has(p.bits)) return { table: 'prefix', key: canon };
  return { table: 'cidr', key: canon };
}

export class LocalBanCache implements BanCache {
  private readonly exact = new Map<string, Ban>();
  private readonly prefix = new Map<string, Ban>();
  /** CIDR bans by canonical key; `cidrMap` is rebuilt from it when one is removed (CidrMap has no
   *  delete; CIDR bans are few and hand-made) */
  private readonly cidrs = new Map<string, Ban>();
  private cidrMap = new CidrMap<Ban>();
  private cidrDirty = false;
  private readonly maxEntries: number;
  private readonly bits: readonly number[];
  private readonly bitSet: ReadonlySet<number>;
  private readonly now: () => number;
  private lastSweep = -Infinity;
  /** new keys refused because the cache was full */
  refused = 0;
  /** keys that are no address or CIDR (ignored) */
  invalid = 0;
  /** called once for each ban deleted because its time ran out (not for removals or replacements) */
  onExpire: ((ban: Ban) => void) | null = null;

  constructor(opts: BanCacheOptions = {}) {
    this.maxEntries = Math.max(1, Math.floor(opts.maxEntries ?? 1_000_000));
    const bits = (opts.ipv6PrefixBits ?? [64]).filter((b) => Number.isInteger(b) && b > 0 && b < 128);
    this.bits = [...new Set(bits)].sort((a, b) => b - a);
    this.bitSet = new Set(this.bits);
    this.now = opts.now ?? Date.now;
  }

  /**
   * A cache kept current from `store`: listens first, then loads listBans(), so nothing announced
   * while loading is lost. When the store is down the cache starts empty; the Redis store re-emits
   * every ban as 'added' once it reconnects.
   */
  static async create(store: SharedStore, opts: BanCacheOptions = {}): Promise<LocalBanCache> {
    const cache = new LocalBanCache(opts);
    let loading = true;
    const removedWhileLoading = new Set<string>();
    store.onBanEvent((e) => {
      if (loading && e.kind === 'removed') removedWhileLoading.add(e.key);
      if (loading && e.kind === 'added') removedWhileLoading.delete(e.ban.key);
      cache.apply(e);
    });
    try {
      const bans = await store.listBans();
      // a ban removed while the list was in flight must not come back from the stale list
      for (const b of bans) if (!removedWhileLoading.has(b.key)) cache.add(b);
    } catch {
      // store down: start empty (see above)
    } finally {
      loading = false;
    }
    return cache;
  }

  apply(e: BanEvent): void {
    if (e === null || typeof e !== 'object') return;
    if (e.kind === 'added') this.add(e.ban);
    else if (e.kind === 'removed') this.remove(e.key);
  }

  /** Add or replace. false when refused (full, expired, or not an address). */
  add(ban: Ban): boolean {
    if (ban === null || typeof ban !== 'object' || typeof ban.key !== 'string' || !Number.isFinite(ban.until)) return false;
    if (ban.until <= this.now()) {
      this.remove(ban.key);
      return false;
    }
    const c = classify(ban.key, this.bitSet);
    if (c === null) {
      this.invalid++;
      return false;
    }
    const table = this.table(c.table);
    if (!table.has(c.key) && this.size >= this.maxEntries) {
      this.sweep(true);
      if (this.size >= this.maxEntries) {
        this.refused++;
        return false;
      }
    }
    table.set(c.key, ban);
    if (c.table === 'cidr') this.cidrMap.add(c.key, ban);
    return true;
  }

  remove(key: string): boolean {
    if (typeof key !== 'string') return false;
    const c = classify(key, this.bitSet);
    if (c === null) return false;
    const gone = this.table(c.table).delete(c.key);
    if (gone && c.table === 'cidr') this.cidrDirty = true;
    return gone;
  }

  check(address: string, nowMs: number): Ban | null {
    if (typeof address !== 'string' || address.length === 0) return null;
    let b = this.exact.get(address);
    if (b !== undefined) {
      if (b.until > nowMs) return b;
      this.exact.delete(address);
      this.expired(b);
    }
    if (this.prefix.size > 0 && address.indexOf(':') >= 0) {
      for (const bits of this.bits) {
        const k = ipv6Prefix(address, bits);
        b = this.prefix.get(k);
        if (b === undefined) continue;
        if (b.until > nowMs) return b;
        this.prefix.delete(k);
        this.expired(b);
      }
    }
    if (this.cidrs.size > 0) {
      if (this.cidrDirty) this.rebuildCidr();
      const m = this.cidrMap.match(address);
      if (m !== null) {
        if (m.value.until > nowMs) return m.value;
        // an expired CIDR may hide a shorter live one: drop it and look again
        this.cidrs.delete(m.cidr);
        this.expired(m.value);
        this.rebuildCidr();
        const again = this.cidrMap.match(address);
        if (again !== null && again.value.until > nowMs) return again.value;
      }
    }
    return null;
  }

  get size(): number {
    return this.exact.size + this.prefix.size + this.cidrs.size;
  }

  /** every ban held (expired ones included until swept), for diagnostics and the admin API */
  entries(): Ban[] {
    return [...this.exact.values(), ...this.prefix.values(), ...this.cidrs.values()];
  }

  /** Delete expired entries. `throttled`: at most once a second (a full cache under a flood of
   *  new bans must not pay O(n) per refusal). */
  sweep(throttled = false): void {
    const now = this.now();
    if (throttled && now - this.lastSweep < 1000) return;
    this.lastSweep = now;
    for (const [k, b] of this.exact) if (b.until <= now) { this.exact.delete(k); this.expired(b); }
    for (const [k, b] of this.prefix) if (b.until <= now) { this.prefix.delete(k); this.expired(b); }
    let cidrGone = false;
    for (const [k, b] of this.cidrs) if (b.until <= now) { this.cidrs.delete(k); this.expired(b); cidrGone = true; }
    if (cidrGone) this.rebuildCidr();
  }

  private expired(b: Ban): void {
    const fn = this.onExpire;
    if (fn === null) return;
    try {
      fn(b);
    } catch {
      // a counting hook must not break the per-packet check
    }
  }

  private table(t: Table): Map<string, Ban> {
    return t === 'exact' ? this.exact : t === 'prefix' ? this.prefix : this.cidrs;
  }

  private rebuildCidr(): void {
    const m = new CidrMap<Ban>();
    for (const [k, b] of this.cidrs) m.add(k, b);
    this.cidrMap = m;
    this.cidrDirty = false;
  }
}
