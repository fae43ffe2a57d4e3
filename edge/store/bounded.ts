// Bounded per-process tables behind once() and distinct(): the whole answer of the memory store,
// and the Redis store's answer while Redis is unreachable.
//
// Keys and members come from attackers (nonces, user names from Authorization and To headers):
// every key is bounded in length (boundedKey), and every table holds at most a fixed number of
// entries. Eviction is oldest-first by creation: a once() key is written once and a distinct()
// window starts at its first member and is never extended, so creation order is also (for equal
// windows) expiry order, and the oldest entry is the one losing least by being forgotten.
//
// The oldest entry is found through ONE persistent Map iterator (the technique of
// edge/suspicion.ts): a fresh `keys().next()` per eviction has to skip every deleted slot at the
// front of V8's hash table again, which is quadratic when a flood keeps the table full;
// ECMAScript Map iterators are live (they skip deleted entries and reach entries added later), so
// one iterator passes each slot once.
import { createHash } from 'node:crypto';

/** Longest key or member stored as given; longer ones are replaced by a hash (see boundedKey). */
export const MAX_STORE_KEY_CHARS = 128;

/** Default cap on once() keys held per process (about 250 bytes each: ~25 MB at worst). */
export const ONCE_MAX_ENTRIES = 100_000;
/** Default cap on distinct() sets held per process. */
export const DISTINCT_MAX_SETS = 20_000;
/** Default cap on distinct() members held per process, all sets together. */
export const DISTINCT_MAX_MEMBERS = 200_000;
/** Largest `cap` distinct() honours: the count answers "more than cap?", for which a few hundred
 *  distinct user names from one source are already an enumeration. */
export const MAX_DISTINCT_CAP = 10_000;
/** Longest once() TTL / distinct() window (a week): a typo cannot pin an entry forever. */
export const MAX_WINDOW_MS = 7 * 24 * 3600 * 1000;

/**
 * A key or member of bounded length: short ones unchanged, long ones as "h:" + 32 characters of
 * their SHA-256 (the scheme of edge/policy/limits/ratelimit.ts boundedKey). Distinct inputs stay distinct
 * (up to a hash collision); a 10 kB user name costs 34 bytes in Redis and in memory.
 */
export function boundedKey(k: string): string {
  const s = typeof k === 'string' ? k : String(k);
  return s.length <= MAX_STORE_KEY_CHARS ? s : `h:${createHash('sha256').update(s, 'utf8').digest('base64url').slice(0, 32)}`;
}

/** ttlSec / windowSec -> whole ms in [1000, MAX_WINDOW_MS]; NaN and <= 0 -> 1000 (a broken
 *  argument must not turn replay protection off by storing nothing). */
export function windowMs(sec: number): number {
  if (sec === Infinity) return MAX_WINDOW_MS;
  if (typeof sec !== 'number' || !Number.isFinite(sec) || sec <= 0) return 1000;
  return Math.min(MAX_WINDOW_MS, Math.max(1000, Math.floor(sec * 1000)));
}

/** distinct() cap -> integer in [1, MAX_DISTINCT_CAP]. */
export function distinctCap(cap: number): number {
  if (typeof cap !== 'number' || Number.isNaN(cap) || cap < 1) return 1;
  return Math.min(MAX_DISTINCT_CAP, Math.floor(cap));
}

interface Entry<V> {
  readonly v: V;
  readonly exp: number;
}

/** Map with per-entry expiry and a size cap; oldest (by creation) evicted first. */
export class ExpiringMap<V> {
  private readonly map = new Map<string, Entry<V>>();
  private it: Iterator<[string, Entry<V>]> | null = null;
  private head: [string, Entry<V>] | null = null;
  /** entries dropped because the table was full */
  evicted = 0;

  constructor(
    readonly maxEntries: number,
    private readonly onDrop?: (key: string, v: V) => void,
  ) {}

  get size(): number {
    return this.map.size;
  }

  /** The live value, or undefined (an expired entry met here is dropped). */
  get(key: string, now: number): V | undefined {
    const e = this.map.get(key);
    if (e === undefined) return undefined;
    if (e.exp <= now) {
      this.drop(key, e);
      return undefined;
    }
    return e.v;
  }

  /** Create `key` (replacing any old entry) at the young end; sweep a little, evict beyond the cap. */
  insert(key: string, v: V, exp: number, now: number): void {
    const old = this.map.get(key);
    if (old !== undefined) this.drop(key, old);
    this.map.set(key, { v, exp });
    // amortised expiry: the front holds the oldest entries, usually the first to expire
    this.sweepFront(now, 2);
    while (this.map.size > this.maxEntries) {
      if (!this.evictOldest()) break;
    }
  }

  /** Key of the oldest entry, or undefined when empty. */
  oldestKey(): string | undefined {
    return this.front()?.[0];
  }

  /** Drop the oldest entry; false when empty. */
  evictOldest(): boolean {
    const f = this.front();
    if (f === null) return false;
    this.evicted++;
    this.drop(f[0], f[1]);
    return true;
  }

  private sweepFront(now: number, n: number): void {
    for (let i = 0; i < n; i++) {
      const f = this.front();
      if (f === null || f[1].exp > now) return;
      this.drop(f[0], f[1]);
    }
  }

  /** The oldest live entry. Everything the persistent iterator has passed is gone (it only
   *  advances past the head once the head was dropped), so the first live entry it yields is the
   *  oldest. A replaced key is a new entry at the young end: the identity check skips its stale
   *  old position. */
  private front(): [string, Entry<V>] | null {
    if (this.head !== null && this.map.get(this.head[0]) === this.head[1]) return this.head;
    for (let restarted = false; ; ) {
      let r = this.it?.next();
      if (r === undefined || r.done === true) {
        // a finished iterator never resumes (ECMAScript 24.1.5.2): start over, at most once
        if (restarted) break;
        restarted = true;
        this.it = this.map.entries();
        r = this.it.next();
        if (r.done === true) break;
      }
      const [k, e] = r.value;
      if (this.map.get(k) === e) {
        this.head = r.value;
        return this.head;
      }
    }
    this.head = null;
    this.it = null;
    return null;
  }

  private drop(key: string, e: Entry<V>): void {
    if (this.map.get(key) !== e) return;
    this.map.delete(key);
    if (this.head !== null && this.head[1] === e) this.head = null;
    this.onDrop?.(key, e.v);
  }
}

/** once(): first use of a key within its TTL. */
export class OnceTable {
  private readonly t: ExpiringMap<true>;

  constructor(maxEntries = ONCE_MAX_ENTRIES) {
    this.t = new ExpiringMap<true>(Math.max(1, Math.floor(maxEntries)));
  }

  /** true on first use (and remembers it for ttlMs), false on a repeat within the TTL. */
  firstUse(key: string, ttlMs: number, now: number): boolean {
    if (this.t.get(key, now) !== undefined) return false;
    this.t.insert(key, true, now + ttlMs, now);
    return true;
  }

  get size(): number {
    return this.t.size;
  }

  get evicted(): number {
    return this.t.evicted;
  }
}

/** distinct(): distinct members per key within a window, capped per set and in total. */
export class DistinctTable {
  private readonly t: ExpiringMap<Set<string>>;
  private members = 0;

  constructor(
    maxSets = DISTINCT_MAX_SETS,
    private readonly maxMembers = DISTINCT_MAX_MEMBERS,
  ) {
    this.t = new ExpiringMap<Set<string>>(Math.max(1, Math.floor(maxSets)), (_k, s) => {
      this.members -= s.size;
    });
  }

  /** Add `member` to `key`'s set; the count of distinct members, at most cap + 1 (members beyond
   *  cap are not stored). Under memory pressure (the total member cap reached with this set the
   *  oldest) a new member is counted but not stored: the answer errs towards "more". */
  add(key: string, member: string, window: number, cap: number, now: number): number {
    let s = this.t.get(key, now);
    if (s === undefined) {
      s = new Set<string>();
      this.t.insert(key, s, now + window, now);
    }
    if (s.has(member)) return s.size;
    if (s.size >= cap) return cap + 1;
    while (this.members >= this.maxMembers) {
      const oldest = this.t.oldestKey();
      if (oldest === undefined || oldest === key) return s.size + 1;
      this.t.evictOldest();
    }
    s.add(member);
    this.members++;
    return s.size;
  }

  get sets(): number {
    return this.t.size;
  }

  get memberCount(): number {
    return this.members;
  }
}

/** Per-key "at most once per interval" gate (promotion announcements), bounded. */
export class IntervalGate {
  private readonly t: ExpiringMap<true>;

  constructor(
    private readonly intervalMs: number,
    maxEntries = 100_000,
  ) {
    this.t = new ExpiringMap<true>(Math.max(1, Math.floor(maxEntries)));
  }

  /** true (and the interval starts) when `key` has not passed within the interval. */
  pass(key: string, now: number): boolean {
    if (this.t.get(key, now) !== undefined) return false;
    this.t.insert(key, true, now + this.intervalMs, now);
    return true;
  }
}
