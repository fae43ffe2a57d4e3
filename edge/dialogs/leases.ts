// Shared live-dialog counts with self-healing leases (issue 16, call admission control).
//
// Why leases and not INCR/DECR counters: a counter that an instance increments and then dies
// before decrementing stays wrong forever (the "phantom call" of hand-written Kamailio dialog
// profiles kept in a shared DB). Here every live dialog is a member of one sorted set per counted
// key (user, source, trunk, total, user+class), scored with the time its lease expires. The
// instance that holds the dialog refreshes the score every `refreshMs`; a count is the number of
// members whose lease is still in the future. An instance that dies stops refreshing, and its
// dialogs fall out of every count within `ttlMs`, with nobody having to notice the death.
//
// Admission is one atomic step (a Lua script in Redis, one synchronous function in memory): check
// every key against its limit and, only if all are under, add the dialog to all of them. Two
// edges admitting the last free slot at the same moment cannot both win.
import type { Redis, Cluster } from 'ioredis';

/** one counted dimension of a dialog: the sorted-set key and the limit (null: counted, unlimited) */
export interface LeaseKey {
  readonly key: string;
  readonly limit: number | null;
}

export type AdmitResult = { readonly ok: true } | { readonly ok: false; readonly key: string };

export interface LeaseBackend {
  readonly kind: 'memory' | 'redis';
  /** add `id` to every key when each is under its limit; otherwise the first full key */
  admit(id: string, keys: readonly LeaseKey[], nowMs: number, ttlMs: number): Promise<AdmitResult>;
  /** extend the leases of these dialogs (each with its keys) */
  refresh(items: ReadonlyArray<{ readonly id: string; readonly keys: readonly string[] }>, nowMs: number, ttlMs: number): Promise<void>;
  release(id: string, keys: readonly string[]): Promise<void>;
  /** live members of a key */
  count(key: string, nowMs: number): Promise<number>;
}

/** single-node backend; the same semantics as Redis so tests of one hold for the other */
export class MemoryLeases implements LeaseBackend {
  readonly kind = 'memory' as const;
  private readonly sets = new Map<string, Map<string, number>>();

  private live(key: string, now: number): Map<string, number> | undefined {
    const s = this.sets.get(key);
    if (!s) return undefined;
    for (const [m, exp] of s) if (exp <= now) s.delete(m);
    if (s.size === 0) { this.sets.delete(key); return undefined; }
    return s;
  }

  async admit(id: string, keys: readonly LeaseKey[], now: number, ttl: number): Promise<AdmitResult> {
    for (const k of keys) {
      const s = this.live(k.key, now);
      if (k.limit !== null && !(s?.has(id)) && (s?.size ?? 0) >= k.limit) return { ok: false, key: k.key };
    }
    for (const k of keys) {
      let s = this.sets.get(k.key);
      if (!s) { s = new Map(); this.sets.set(k.key, s); }
      s.set(id, now + ttl);
    }
    return { ok: true };
  }

  async refresh(items: ReadonlyArray<{ id: string; keys: readonly string[] }>, now: number, ttl: number): Promise<void> {
    for (const it of items) for (const k of it.keys) this.sets.get(k)?.set(it.id, now + ttl);
  }

  async release(id: string, keys: readonly string[]): Promise<void> {
    for (const k of keys) {
      const s = this.sets.get(k);
      if (s) { s.delete(id); if (s.size === 0) this.sets.delete(k); }
    }
  }

  async count(key: string, now: number): Promise<number> {
    return this.live(key, now)?.size ?? 0;
  }
}

// KEYS: the sorted sets; ARGV: id, now, expiry, then one limit per key (-1: unlimited).
// Expired members are dropped first, so a dead instance's leases free their slots right here.
const ADMIT_LUA = `
local id = ARGV[1]
local now = tonumber(ARGV[2])
local exp = tonumber(ARGV[3])
for i, k in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
  local lim = tonumber(ARGV[3 + i])
  if lim >= 0 and redis.call('ZSCORE', k, id) == false and redis.call('ZCARD', k) >= lim then
    return i
  end
end
for i, k in ipairs(KEYS) do
  redis.call('ZADD', k, exp, id)
  redis.call('PEXPIREAT', k, exp)
end
return 0
`;

export class RedisLeases implements LeaseBackend {
  readonly kind = 'redis' as const;
  constructor(private readonly redis: Redis | Cluster, private readonly prefix = 'sipedge:dlg:') {}

  private k(key: string): string {
    // one hash slot for every key of a dialog in a cluster: the admit script touches them all
    return `${this.prefix}{cac}:${key}`;
  }

  async admit(id: string, keys: readonly LeaseKey[], now: number, ttl: number): Promise<AdmitResult> {
    const r = await this.redis.eval(ADMIT_LUA, keys.length, ...keys.map((k) => this.k(k.key)), id, now, now + ttl, ...keys.map((k) => k.limit ?? -1)) as number;
    return r === 0 ? { ok: true } : { ok: false, key: keys[r - 1]!.key };
  }

  async refresh(items: ReadonlyArray<{ id: string; keys: readonly string[] }>, now: number, ttl: number): Promise<void> {
    if (items.length === 0) return;
    const p = this.redis.pipeline();
    for (const it of items) for (const k of it.keys) {
      // XX: a dialog released meanwhile (or expired and removed) is not brought back
      p.zadd(this.k(k), 'XX', now + ttl, it.id);
      p.pexpireat(this.k(k), now + ttl);
    }
    await p.exec();
  }

  async release(id: string, keys: readonly string[]): Promise<void> {
    const p = this.redis.pipeline();
    for (const k of keys) p.zrem(this.k(k), id);
    await p.exec();
  }

  async count(key: string, now: number): Promise<number> {
    return this.redis.zcount(this.k(key), `(${now}`, '+inf');
  }
}
