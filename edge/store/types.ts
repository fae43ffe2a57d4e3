// CONTRACT (issue: rate limits, flood detection, trust and bans shared through Redis).
// One small interface for shared state; an in-memory implementation for a single node and a
// Redis one for a cluster. Every call is bounded in time: with Redis unreachable nothing hangs.

export interface Ban {
  /** canonical address, or an aggregated IPv6 prefix like "2001:db8:1:2::/64", or a CIDR added by hand */
  readonly key: string;
  readonly reason: string;
  /** rule that caused it (rule name from a rule file, or "manual") */
  readonly rule: string;
  /** epoch ms */
  readonly since: number;
  readonly until: number;
  /** how many times this key has been banned within the escalation memory (1 = first) */
  readonly count: number;
}

export interface ConsumeResult {
  /** false when the budget for this key is exhausted */
  readonly allowed: boolean;
  readonly remaining: number;
  /** ms until the budget refills */
  readonly msBeforeNext: number;
  /** true when the answer came from the in-memory insurance limiter because Redis failed */
  readonly degraded: boolean;
}

export interface LimiterSpec {
  /** unique name, e.g. "source_all", "source_suspicion", "aor_register" */
  readonly name: string;
  readonly points: number;
  readonly durationSec: number;
  /** Redis unreachable: 'open' lets the request through, 'closed' refuses it; the insurance
   *  limiter (per process, in memory) still counts either way */
  readonly onStoreDown: 'open' | 'closed';
}

export interface Limiter {
  readonly spec: LimiterSpec;
  consume(key: string, points?: number): Promise<ConsumeResult>;
  /** the key's budget without spending any: `allowed` is false when it is used up (a budget
   *  that only established identities spend, checked for everyone). Never rejects. */
  peek(key: string): Promise<ConsumeResult>;
  /** forget a key (trust promotion, unban) */
  reset(key: string): Promise<void>;
}

export type BanEvent = { readonly kind: 'added'; readonly ban: Ban } | { readonly kind: 'removed'; readonly key: string };

export interface SharedStore {
  readonly kind: 'memory' | 'redis';
  limiter(spec: LimiterSpec): Limiter;
  /** add or extend a ban; announced to every instance (pub/sub) */
  ban(b: Omit<Ban, 'count' | 'since' | 'until'> & { readonly seconds: number; readonly escalate?: { readonly factor: number; readonly maxSeconds: number; readonly memorySeconds: number } }): Promise<Ban>;
  unban(key: string): Promise<boolean>;
  /** every active ban (a starting instance loads them all) */
  listBans(): Promise<Ban[]>;
  /** ban added/removed anywhere in the cluster, including this instance */
  onBanEvent(fn: (e: BanEvent) => void): void;
  /** First use of `key` within ttlSec: true; a repeat (replay): false. Redis: SET key 1 NX PX.
   *  Redis unreachable: answered from a bounded per-process map (never rejects, never hangs).
   *  Long keys are hashed (bounded length); ttlSec is clamped to [1 s, 7 days]. */
  once(key: string, ttlSec: number): Promise<boolean>;
  /** Adds `member` to the set `key` (window starts at the first member and lasts windowSec) and
   *  returns how many distinct members the set holds, counting at most cap+1 (members beyond cap
   *  are not stored). Used to spot extension enumeration (many distinct target users from one
   *  source). Redis: one Lua script (SCARD check, SADD, EXPIRE on creation). Unreachable: bounded
   *  per-process fallback. Never rejects. cap is clamped to [1, 10000]. */
  distinct(key: string, member: string, windowSec: number, cap: number): Promise<number>;
  /** Announce to every instance (including this one) that a source key is promoted until untilMs
   *  (epoch ms). Fire and forget; never throws. Best effort: an instance disconnected from the
   *  store misses it (promotion is an optimisation; bans are the safety mechanism). */
  announcePromotion(key: string, untilMs: number): void;
  /** promotion announced anywhere in the cluster, including this instance */
  onPromotion(fn: (key: string, untilMs: number) => void): void;
  /** store reachable right now (health flag for /readyz and sipedge_redis_up) */
  healthy(): boolean;
  onHealth(fn: (up: boolean) => void): void;
  /** errors talking to the store since start */
  readonly errors: number;
  close(): Promise<void>;
}

/** The per-packet ban check: a local copy of the shared ban set, never a store round trip. */
export interface BanCache {
  /** the ban covering this canonical address (exact, its IPv6 /prefix aggregate, or a CIDR ban), or null */
  check(address: string, nowMs: number): Ban | null;
  readonly size: number;
}
