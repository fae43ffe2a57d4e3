// SharedStore for a single node: rate limits and bans in this process's memory.
//
// Same semantics as the Redis store (edge/store/redis.ts) so that stages cannot tell them apart:
// limiters count points per key over a fixed window (rate-limiter-flexible's RateLimiterMemory on
// the compact WindowCounters of window-counters.ts instead of an object and a timer per key:
// bounded per limiter, expired windows dropped by the store's sweep, the table rebuilt small after
// a flood); bans escalate with the same formula; events go to every listener, synchronously, before
// ban()/unban() resolve. Nothing here throws at a caller: a listener that throws is isolated.
// once() and distinct() are the bounded tables of bounded.ts (caps: ONCE_MAX_ENTRIES keys,
// DISTINCT_MAX_SETS sets holding DISTINCT_MAX_MEMBERS members in total, oldest evicted first);
// a promotion announcement is delivered to this process's listeners synchronously.
// Every table here is swept on one unref'd timer (sweepIntervalMs, on the injected clock `now`);
// bans are never evicted, only expired.
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import { DistinctTable, OnceTable, boundedKey, distinctCap, windowMs } from './bounded';
import { CounterTables, WINDOW_MAX_KEYS, useWindowCounters, type WindowCounters } from './window-counters';
import type { Ban, BanEvent, ConsumeResult, Limiter, LimiterSpec, SharedStore } from './types';

/** The `escalate` argument of SharedStore.ban(). */
export type Escalation = { readonly factor: number; readonly maxSeconds: number; readonly memorySeconds: number };
/** The argument of SharedStore.ban(). */
export type BanRequest = Parameters<SharedStore['ban']>[0];

/** Longest ban accepted at all (a year): larger or non-finite durations are clamped, so a typo in a
 *  rule file cannot create a ban that outlives every restart, nor an `until` that is not a number. */
export const MAX_BAN_SECONDS = 365 * 24 * 3600;

/**
 * Ban length for the `count`-th ban of a key within the escalation memory:
 * min(maxSeconds, seconds * factor^(count-1)), the fail2ban "bantime.increment" formula
 * (bantime.factor, bantime.maxtime). Without escalation: `seconds`. Always finite, >= 1 s.
 */
export function banSeconds(seconds: number, count: number, esc?: Escalation): number {
  const base = clampSeconds(seconds);
  if (esc === undefined) return base;
  const factor = Number.isFinite(esc.factor) && esc.factor >= 1 ? esc.factor : 1;
  const cap = clampSeconds(esc.maxSeconds);
  const n = Math.max(1, Math.floor(count));
  // factor^(n-1) overflows to Infinity for a long memory: min() then yields the cap
  return Math.min(cap, Math.max(base, Math.floor(base * Math.pow(factor, n - 1))));
}

export function clampSeconds(s: number): number {
  if (s === Infinity) return MAX_BAN_SECONDS;
  if (!Number.isFinite(s) || s < 1) return 1;
  return Math.min(MAX_BAN_SECONDS, Math.floor(s));
}

/** A validated escalation, or undefined when absent or meaningless (no memory, no growth). */
export function normaliseEscalation(e: Escalation | undefined): Escalation | undefined {
  if (e === undefined || e === null || typeof e !== 'object') return undefined;
  const memorySeconds = Number.isFinite(e.memorySeconds) ? Math.floor(e.memorySeconds) : 0;
  if (memorySeconds < 1) return undefined;
  return { factor: Number.isFinite(e.factor) && e.factor >= 1 ? e.factor : 1, maxSeconds: clampSeconds(e.maxSeconds), memorySeconds: Math.min(memorySeconds, MAX_BAN_SECONDS) };
}

/** Listener list whose members cannot break the emitter or each other. */
export class Listeners<T> {
  private readonly fns: Array<(v: T) => void> = [];
  /** listener exceptions swallowed so far (a bug in a listener, counted for diagnostics) */
  failures = 0;

  add(fn: (v: T) => void): void {
    if (typeof fn === 'function') this.fns.push(fn);
  }

  emit(v: T): void {
    for (const fn of this.fns) {
      try {
        fn(v);
      } catch {
        this.failures++;
      }
    }
  }
}

/** Map a rate-limiter-flexible answer (resolved: within budget; rejected with a RateLimiterRes:
 *  over budget) to the contract's ConsumeResult. */
export function toConsumeResult(res: RateLimiterRes, allowed: boolean, degraded: boolean): ConsumeResult {
  return {
    allowed,
    remaining: Number.isFinite(res.remainingPoints) ? Math.max(0, res.remainingPoints) : 0,
    msBeforeNext: Number.isFinite(res.msBeforeNext) ? Math.max(0, res.msBeforeNext) : 0,
    degraded,
  };
}

/** The answer to a peek: a budget is used up once `points` have been consumed in the window. */
export function peekResult(res: RateLimiterRes | null, points: number, degraded: boolean): ConsumeResult {
  if (res === null) return { allowed: true, remaining: points, msBeforeNext: 0, degraded };
  const used = Number.isFinite(res.consumedPoints) ? res.consumedPoints : 0;
  return {
    allowed: used < points,
    remaining: Math.max(0, points - used),
    msBeforeNext: Number.isFinite(res.msBeforeNext) ? Math.max(0, res.msBeforeNext) : 0,
    degraded,
  };
}

/** Points are whole numbers >= 1 (rate-limiter-flexible refuses fractions by throwing). */
export function normalisePoints(points: number | undefined): number {
  if (points === undefined) return 1;
  if (!Number.isFinite(points) || points < 1) return 1;
  return Math.min(Math.floor(points), 1_000_000);
}

/** A spec rate-limiter-flexible accepts: points >= 1, duration >= 1 s. */
export function normaliseSpec(spec: LimiterSpec): { points: number; duration: number } {
  const points = Number.isFinite(spec.points) && spec.points >= 1 ? Math.floor(spec.points) : 1;
  const duration = Number.isFinite(spec.durationSec) && spec.durationSec >= 1 ? Math.floor(spec.durationSec) : 1;
  return { points, duration };
}

/** Ban keys are canonical addresses or CIDRs: short printable text. Anything else is refused. */
export function validBanKey(key: unknown): key is string {
  return typeof key === 'string' && key.length > 0 && key.length <= 64 && /^[0-9A-Za-z.:/_-]+$/.test(key);
}

/** Longest promotion accepted (limits.yaml allows 31 days; a day of slack for clock skew). An
 *  announcement further out is not trusted-shaped and is ignored. */
export const MAX_PROMOTION_MS = 32 * 24 * 3600 * 1000;

/** A promotion worth delivering: an address-shaped key (the ban key alphabet) and an `until` in
 *  the future but not absurdly far. */
export function validPromotion(key: unknown, untilMs: unknown, now: number): boolean {
  return validBanKey(key) && typeof untilMs === 'number' && Number.isFinite(untilMs) && untilMs > now && untilMs <= now + MAX_PROMOTION_MS;
}

/** Reason and rule are log text: bounded, no control characters. */
export function cleanText(s: unknown, fallback: string): string {
  if (typeof s !== 'string' || s.length === 0) return fallback;
  // eslint-disable-next-line no-control-regex
  return s.slice(0, 128).replace(/[\u0000-\u001f\u007f]/g, '?');
}

class MemoryLimiter implements Limiter {
  private readonly rl: RateLimiterMemory;
  /** this limiter's windows (tests: held keys) */
  readonly counters: WindowCounters;

  constructor(readonly spec: LimiterSpec, counters: WindowCounters, now: () => number) {
    const { points, duration } = normaliseSpec(spec);
    // no key prefix: the table is this limiter's own, the name in every key would only cost bytes
    this.rl = new RateLimiterMemory({ points, duration, keyPrefix: '' });
    this.counters = counters;
    useWindowCounters(this.rl, counters, now);
  }

  async consume(key: string, points?: number): Promise<ConsumeResult> {
    try {
      return toConsumeResult(await this.rl.consume(String(key), normalisePoints(points)), true, false);
    } catch (e) {
      if (e instanceof RateLimiterRes) return toConsumeResult(e, false, false);
      // cannot happen with valid points; answer as the spec says for a broken store
      return { allowed: this.spec.onStoreDown === 'open', remaining: 0, msBeforeNext: 0, degraded: true };
    }
  }

  async peek(key: string): Promise<ConsumeResult> {
    try {
      return peekResult(await this.rl.get(String(key)), this.rl.points, false);
    } catch {
      return { allowed: this.spec.onStoreDown === 'open', remaining: 0, msBeforeNext: 0, degraded: true };
    }
  }

  async reset(key: string): Promise<void> {
    try {
      await this.rl.delete(String(key));
    } catch {
      // nothing to forget
    }
  }
}

interface EscalationEntry {
  count: number;
  expires: number;
}

export interface MemoryStoreOptions {
  /** clock for bans, limiter windows, once() and distinct() (epoch ms, default Date.now) */
  readonly now?: () => number;
  /** how often expired bans, escalation counters, limiter windows and once/distinct entries are
   *  swept, and tables emptied after a flood rebuilt small (default 10 s; 0 = only lazily) */
  readonly sweepIntervalMs?: number;
  /** cap on keys per limiter (default WINDOW_MAX_KEYS), oldest window evicted first */
  readonly limiterMaxKeys?: number;
  /** cap on once() keys held (default ONCE_MAX_ENTRIES) */
  readonly onceMaxEntries?: number;
  /** caps on distinct() sets and on their members in total (defaults DISTINCT_MAX_SETS / _MEMBERS) */
  readonly distinctMaxSets?: number;
  readonly distinctMaxMembers?: number;
}

class MemoryStore implements SharedStore {
  readonly kind = 'memory' as const;
  readonly errors = 0;
  private readonly bans = new Map<string, Ban>();
  private readonly escalation = new Map<string, EscalationEntry>();
  private readonly events = new Listeners<BanEvent>();
  private readonly promotions = new Listeners<{ key: string; until: number }>();
  private readonly onceTable: OnceTable;
  private readonly distinctTable: DistinctTable;
  private readonly counters: CounterTables;
  private readonly now: () => number;
  private readonly timer: NodeJS.Timeout | null;
  private closed = false;
  private lastSweep = 0;

  constructor(opts: MemoryStoreOptions) {
    this.now = opts.now ?? Date.now;
    this.onceTable = new OnceTable(opts.onceMaxEntries);
    this.distinctTable = new DistinctTable(opts.distinctMaxSets, opts.distinctMaxMembers);
    this.counters = new CounterTables(opts.limiterMaxKeys ?? WINDOW_MAX_KEYS);
    const every = opts.sweepIntervalMs ?? 10_000;
    this.timer = every > 0 ? setInterval(() => this.sweep(), every) : null;
    this.timer?.unref();
  }

  limiter(spec: LimiterSpec): Limiter {
    return new MemoryLimiter(spec, this.counters.create(), this.now);
  }

  async ban(b: BanRequest): Promise<Ban> {
    if (!validBanKey(b.key)) throw new StoreInputError('ban_key_invalid');
    const now = this.now();
    if (now - this.lastSweep >= 1000) this.sweepBans(); // at most once a second: O(bans) each
    const esc = normaliseEscalation(b.escalate);
    let count = 1;
    if (esc !== undefined) {
      const prev = this.escalation.get(b.key);
      count = prev !== undefined && prev.expires > now ? prev.count + 1 : 1;
      this.escalation.set(b.key, { count, expires: now + esc.memorySeconds * 1000 });
    }
    const seconds = banSeconds(b.seconds, count, esc);
    const old = this.bans.get(b.key);
    const active = old !== undefined && old.until > now;
    // "add or extend": a shorter new ban never cuts an active one short
    const until = Math.max(now + seconds * 1000, active ? old.until : 0);
    const ban: Ban = {
      key: b.key,
      reason: cleanText(b.reason, 'unspecified'),
      rule: cleanText(b.rule, 'manual'),
      since: active ? old.since : now,
      until,
      count,
    };
    this.bans.set(b.key, ban);
    this.events.emit({ kind: 'added', ban });
    return ban;
  }

  async unban(key: string): Promise<boolean> {
    const old = this.bans.get(key);
    this.escalation.delete(key); // a manual unban forgives: the next ban starts over
    if (old === undefined) return false;
    this.bans.delete(key);
    const wasActive = old.until > this.now();
    this.events.emit({ kind: 'removed', key });
    return wasActive;
  }

  async listBans(): Promise<Ban[]> {
    this.sweepBans();
    return [...this.bans.values()];
  }

  onBanEvent(fn: (e: BanEvent) => void): void {
    this.events.add(fn);
  }

  async once(key: string, ttlSec: number): Promise<boolean> {
    return this.onceTable.firstUse(boundedKey(key), windowMs(ttlSec), this.now());
  }

  async distinct(key: string, member: string, windowSec: number, cap: number): Promise<number> {
    return this.distinctTable.add(boundedKey(key), boundedKey(member), windowMs(windowSec), distinctCap(cap), this.now());
  }

  announcePromotion(key: string, untilMs: number): void {
    // a single node has nobody else to tell: deliver here, synchronously
    if (!validPromotion(key, untilMs, this.now())) return;
    this.promotions.emit({ key, until: untilMs });
  }

  onPromotion(fn: (key: string, untilMs: number) => void): void {
    if (typeof fn === 'function') this.promotions.add((p) => fn(p.key, p.until));
  }

  healthy(): boolean {
    return !this.closed;
  }

  onHealth(_fn: (up: boolean) => void): void {
    // always up: nothing will ever change
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== null) clearInterval(this.timer);
  }

  /** Drop expired bans and escalation counters: memory held only for what is in force. */
  private sweepBans(): void {
    const now = this.now();
    this.lastSweep = now;
    for (const [k, b] of this.bans) if (b.until <= now) this.bans.delete(k);
    for (const [k, e] of this.escalation) if (e.expires <= now) this.escalation.delete(k);
  }

  /** The periodic sweep: everything that expires, in every table (the idle half of issue 12:
   *  after a flood the per-source state goes, and the tables it grew are rebuilt small). */
  sweep(): void {
    this.sweepBans();
    const now = this.now();
    this.counters.sweep(now);
    this.onceTable.sweep(now);
    this.distinctTable.sweep(now);
  }

  /** for tests: entries held right now */
  get heldEntries(): { bans: number; escalation: number; once: number; distinctSets: number; distinctMembers: number; limiterKeys: number } {
    return {
      limiterKeys: this.counters.tables().reduce((n, c) => n + c.size, 0),
      bans: this.bans.size,
      escalation: this.escalation.size,
      once: this.onceTable.size,
      distinctSets: this.distinctTable.sets,
      distinctMembers: this.distinctTable.memberCount,
    };
  }
}

/** A request the store refuses (a bad ban key, a Redis URL it cannot use): a programming,
 *  configuration or rule-file error, not hostile input. `detail` says what is wrong (for a URL:
 *  parseRedisUrl's message, which never contains the password). */
export class StoreInputError extends Error {
  constructor(
    readonly code: 'ban_key_invalid' | 'redis_url_invalid',
    readonly detail?: string,
  ) {
    super(detail === undefined ? code : `${code}: ${detail}`);
    this.name = 'StoreInputError';
  }
}

export function createMemoryStore(opts: MemoryStoreOptions = {}): SharedStore {
  return new MemoryStore(opts);
}
