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

/**
 * A key to keep for a while: a fresh flat copy. Keys are built by concatenation (`enum:` + an
 * address made of four numbers and three dots): V8 keeps such a string as a tree of cons strings
 * (32 bytes a node) even after hashing it; a copy costs its characters only (about 55 bytes less
 * per key, measured on Node 20). Only on insertion; Latin-1 text only (anything else is kept as
 * it is: a round trip through latin1 would change it).
 */
export function compactKey(s: string): string {
  const c = Buffer.from(s, 'latin1').toString('latin1');
  return c === s ? c : s;
}

interface Entry<V> {
  readonly v: V;
  readonly exp: number;
}

/** Below this many entries at its peak a table is not rebuilt after a flood (window-counters.ts). */
const SHRINK_MIN_PEAK = 4096;

/** Map with per-entry expiry and a size cap; oldest (by creation) evicted first. */
export class ExpiringMap<V> {
  private map = new Map<string, Entry<V>>();
  private it: Iterator<[string, Entry<V>]> | null = null;
  private head: [string, Entry<V>] | null = null;
  /** most entries held since the last rebuild */
  private peak = 0;
  /** entries dropped because the table was full */
  evicted = 0;
  /** times the table was rebuilt smaller after a flood */
  shrinks = 0;

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
    this.map.set(compactKey(key), { v, exp });
    if (this.map.size > this.peak) this.peak = this.map.size;
    // amortised expiry: the front holds the oldest entries, usually the first to expire
    this.sweepFront(now, 2);
    while (this.map.size > this.maxEntries) {
      if (!this.evictOldest()) break;
    }
  }

  /**
   * Drop every expired entry (insert() only looks at the front: entries of longer TTLs behind a
   * young one wait there), and once the table holds under a quarter of its peak, move the rest
   * into a fresh Map: a V8 Map never gives back the backing store of its largest size while it
   * holds entries (see window-counters.ts). Returns the entries dropped.
   */
  sweep(now: number): number {
    let dropped = 0;
    for (const [k, e] of this.map) {
      if (e.exp <= now) {
        this.drop(k, e);
        dropped++;
      }
    }
    if (this.peak >= SHRINK_MIN_PEAK && this.map.size * 4 <= this.peak) {
      this.map = new Map(this.map); // same order: the oldest stays first
      this.it = null;
      this.head = null;
      this.peak = this.map.size;
      this.shrinks++;
    }
    return dropped;
  }

  /** Swap the value of a live entry in place: its age and expiry stay (no onDrop). */
  replaceValue(key: string, v: V): void {
    const e = this.map.get(key);
    if (e === undefined) return;
    const next = { v, exp: e.exp };
    this.map.set(key, next);
    if (this.head !== null && this.head[1] === e) this.head = [key, next];
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

  get shrinks(): number {
    return this.t.shrinks;
  }

  sweep(now: number): number {
    return this.t.sweep(now);
  }
}

/** distinct(): distinct members per key within a window, capped per set and in total.
 *  A key with one member holds that member itself, not a Set around it: that is every source of a
 *  spoofed-source flood (one request each), and a Set costs about 150 bytes more per source. */
export class DistinctTable {
  private readonly t: ExpiringMap<string | Set<string>>;
  private members = 0;

  constructor(
    maxSets = DISTINCT_MAX_SETS,
    private readonly maxMembers = DISTINCT_MAX_MEMBERS,
  ) {
    this.t = new ExpiringMap<string | Set<string>>(Math.max(1, Math.floor(maxSets)), (_k, s) => {
      this.members -= typeof s === 'string' ? 1 : s.size;
    });
  }

  /** Add `member` to `key`'s set; the count of distinct members, at most cap + 1 (members beyond
   *  cap are not stored). Under memory pressure (the total member cap reached with this set the
   *  oldest) a new member is counted but not stored: the answer errs towards "more". */
  add(key: string, member: string, window: number, cap: number, now: number): number {
    const have = this.t.get(key, now);
    if (have === undefined) {
      this.makeRoom(key);
      this.t.insert(key, compactKey(member), now + window, now);
      this.members++;
      return 1;
    }
    const size = typeof have === 'string' ? 1 : have.size;
    if (typeof have === 'string' ? have === member : have.has(member)) return size;
    if (size >= cap) return cap + 1;
    if (!this.makeRoom(key)) return size + 1;
    if (typeof have === 'string') {
      // the second member: now it takes a Set (same entry, same window and age)
      this.t.replaceValue(key, new Set([have, compactKey(member)]));
    } else {
      have.add(compactKey(member));
    }
    this.members++;
    return size + 1;
  }

  /** evict the oldest sets until one more member fits; false when `key` itself is the oldest */
  private makeRoom(key: string): boolean {
    while (this.members >= this.maxMembers) {
      const oldest = this.t.oldestKey();
      if (oldest === undefined || oldest === key) return false;
      this.t.evictOldest();
    }
    return true;
  }

  get sets(): number {
    return this.t.size;
  }

  get shrinks(): number {
    return this.t.shrinks;
  }

  /** expired sets go (their members with them: onDrop keeps the member count) */
  sweep(now: number): number {
    return this.t.sweep(now);
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

  sweep(now: number): number {
    return this.t.sweep(now);
  }
}
