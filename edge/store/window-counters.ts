// Fixed-window counters in a compact, bounded, shrinkable table: the per-process state behind the
// rate limits of the memory store and the Redis store's insurance limiter (issue 12: a
// spoofed-source flood must cost little per source, and the memory must come back after it).
//
// rate-limiter-flexible's MemoryStorage holds, per key, a Record object, a Node Timeout (with its
// closure and context) and the key prefixed with the limiter name: about 330 bytes per key and
// limiter, measured with a heap snapshot after a 12,000-source flood (19,052 Timeouts and Records
// for 9,472 sources), and its Map keeps the backing store of its largest size for good. Here a key
// is one entry of a Map<string, slot> (a small integer: no heap number, no object) and its window
// two doubles in typed arrays; expired windows go in sweep() (one timer for the whole store, not
// one per key); and once a flood is over and the table is mostly empty, sweep() moves the
// survivors into a fresh Map and fresh arrays: a V8 Map never shrinks its backing store while it
// still holds entries, a replaced one is garbage as a whole.
//
// Semantics are MemoryStorage's (RateLimiterMemory's fixed window): the first points of a key
// open a window of `durationMs`; later points within it add up; the first points after it open a
// new one. A new window is a re-insertion, so the Map's order is the order windows started in:
// for one limiter (one duration) the oldest entry is also the first to expire, and it is the one
// evicted when the table is full (the one losing least by being forgotten).
//
// Bounded: at most maxKeys keys. Evicting gives that key a fresh budget (an unknown source that
// was counted longest ago); it never touches a ban (bans live elsewhere) nor another limiter's
// counts: promoted sources and established identities have limiters of their own (source_all
// versus source_all_promoted, aor_register versus aor_register_source, rules/limits-compile.ts),
// so a flood of unknown sources cannot push them out.
//
// The oldest entry is found through ONE persistent Map iterator (as in bounded.ts and
// edge/suspicion.ts): ECMAScript Map iterators are live, so each slot is passed once instead of
// once per eviction.
import { RateLimiterRes } from 'rate-limiter-flexible';
import { compactKey } from './bounded';

/** Default cap on keys per limiter: about 100-150 bytes each, ~30 MB at worst per limiter. */
export const WINDOW_MAX_KEYS = 200_000;
/** Below this many entries at its peak a table is never rebuilt: the saving is not worth it. */
const SHRINK_MIN_PEAK = 4096;
const MIN_CAPACITY = 16;

export class WindowCounters {
  private index = new Map<string, number>();
  private ends: Float64Array;
  private used: Float64Array;
  /** free slots (a stack); slots below `top` that are not in it are in use */
  private freeSlots: Int32Array;
  private freeCount = 0;
  private top = 0;
  private cursor: Iterator<[string, number]> | null = null;
  /** most entries held since the last rebuild */
  private peak = 0;
  /** keys dropped because the table was full */
  evicted = 0;
  /** times the table was rebuilt smaller after a flood */
  shrinks = 0;

  constructor(readonly maxKeys: number = WINDOW_MAX_KEYS) {
    this.maxKeys = Math.max(1, Math.floor(Number.isFinite(maxKeys) ? maxKeys : WINDOW_MAX_KEYS));
    const cap = Math.min(MIN_CAPACITY, this.maxKeys);
    this.ends = new Float64Array(cap);
    this.used = new Float64Array(cap);
    this.freeSlots = new Int32Array(cap);
  }

  get size(): number {
    return this.index.size;
  }

  /** slots the arrays have room for (tests: it comes back down after a flood) */
  get capacity(): number {
    return this.ends.length;
  }

  /** Add `points` (may be negative: a reward) to `key`'s window, opening a new window of
   *  `durationMs` (Infinity: none) when it has none or its window ended. Returns the slot. */
  add(key: string, points: number, durationMs: number, now: number): { slot: number; fresh: boolean } {
    const slot = this.index.get(key);
    if (slot !== undefined && this.ends[slot]! > now) {
      this.used[slot]! += points;
      return { slot, fresh: false };
    }
    return { slot: this.open(key, points, durationMs, now), fresh: true };
  }

  /** Start a new window for `key` holding `points` (MemoryStorage.set). */
  open(key: string, points: number, durationMs: number, now: number): number {
    const old = this.index.get(key);
    if (old !== undefined) this.release(key, old);
    while (this.index.size >= this.maxKeys) if (!this.evictOldest()) break;
    const slot = this.alloc();
    this.ends[slot] = durationMs > 0 ? now + durationMs : Infinity;
    this.used[slot] = points;
    this.index.set(compactKey(key), slot);
    if (this.index.size > this.peak) this.peak = this.index.size;
    return slot;
  }

  /** the live window's slot, or undefined (an expired one is dropped here) */
  find(key: string, now: number): number | undefined {
    const slot = this.index.get(key);
    if (slot === undefined) return undefined;
    if (this.ends[slot]! <= now) {
      this.release(key, slot);
      return undefined;
    }
    return slot;
  }

  usedAt(slot: number): number {
    return this.used[slot]!;
  }

  endAt(slot: number): number {
    return this.ends[slot]!;
  }

  delete(key: string): boolean {
    const slot = this.index.get(key);
    if (slot === undefined) return false;
    this.release(key, slot);
    return true;
  }

  /**
   * Drop every expired window (a full pass: a store sweeps every few seconds, and a pass over
   * 200,000 entries takes a few ms), then, when the table holds under a quarter of its peak,
   * rebuild it at its present size so that the memory of the flood goes back to the allocator.
   */
  sweep(now: number): number {
    let dropped = 0;
    for (const [k, slot] of this.index) {
      if (this.ends[slot]! <= now) {
        this.release(k, slot);
        dropped++;
      }
    }
    if (this.peak >= SHRINK_MIN_PEAK && this.index.size * 4 <= this.peak) this.rebuild();
    return dropped;
  }

  private rebuild(): void {
    const n = this.index.size;
    const cap = Math.min(this.maxKeys, Math.max(MIN_CAPACITY, 2 ** Math.ceil(Math.log2(n + 1))));
    const index = new Map<string, number>();
    const ends = new Float64Array(cap);
    const used = new Float64Array(cap);
    let i = 0;
    // same order: the oldest window stays first
    for (const [k, slot] of this.index) {
      ends[i] = this.ends[slot]!;
      used[i] = this.used[slot]!;
      index.set(k, i++);
    }
    this.index = index;
    this.ends = ends;
    this.used = used;
    this.freeSlots = new Int32Array(cap);
    this.freeCount = 0;
    this.top = i;
    this.cursor = null;
    this.peak = n;
    this.shrinks++;
  }

  private evictOldest(): boolean {
    for (let restarted = false; ; ) {
      let r = this.cursor?.next();
      if (r === undefined || r.done === true) {
        // a finished iterator never resumes (ECMAScript 24.1.5.2): start over, at most once
        if (restarted) return false;
        restarted = true;
        this.cursor = this.index.entries();
        r = this.cursor.next();
        if (r.done === true) return false;
      }
      // a live iterator yields only entries present now: this is the oldest one
      this.release(r.value[0], r.value[1]);
      this.evicted++;
      return true;
    }
  }

  private alloc(): number {
    if (this.freeCount > 0) return this.freeSlots[--this.freeCount]!;
    if (this.top === this.ends.length) this.grow();
    return this.top++;
  }

  private grow(): void {
    const cap = Math.min(this.maxKeys, this.ends.length * 2);
    const ends = new Float64Array(cap);
    ends.set(this.ends);
    const used = new Float64Array(cap);
    used.set(this.used);
    const free = new Int32Array(cap);
    free.set(this.freeSlots.subarray(0, this.freeCount));
    this.ends = ends;
    this.used = used;
    this.freeSlots = free;
  }

  private release(key: string, slot: number): void {
    this.index.delete(key);
    this.freeSlots[this.freeCount++] = slot;
  }
}

/**
 * rate-limiter-flexible's MemoryStorage interface (incrby, set, get, delete) over WindowCounters,
 * on an injected clock: RateLimiterMemory keeps its whole behaviour (points, remaining,
 * msBeforeNext, isFirstInDuration, blocking) and stops holding an object graph and a timer per
 * key. Installed with useWindowCounters().
 */
export class CounterStorage {
  constructor(
    readonly counters: WindowCounters,
    private readonly now: () => number,
  ) {}

  incrby(key: string, value: number, durationSec: number): RateLimiterRes {
    const now = this.now();
    const { slot, fresh } = this.counters.add(key, value, durationSec * 1000, now);
    return this.res(slot, now, fresh);
  }

  set(key: string, value: number, durationSec: number): RateLimiterRes {
    const now = this.now();
    return this.res(this.counters.open(key, value, durationSec * 1000, now), now, true);
  }

  get(key: string): RateLimiterRes | null {
    const now = this.now();
    const slot = this.counters.find(key, now);
    return slot === undefined ? null : this.res(slot, now, false);
  }

  delete(key: string): boolean {
    return this.counters.delete(key);
  }

  private res(slot: number, now: number, fresh: boolean): RateLimiterRes {
    const end = this.counters.endAt(slot);
    // MemoryStorage answers -1 for a window without end
    return new RateLimiterRes(0, end === Infinity ? -1 : end - now, this.counters.usedAt(slot), fresh);
  }
}

/**
 * Put a RateLimiterMemory (or a subclass: the Redis store's insurance limiter) on WindowCounters.
 * Its storage is a private field of the library: if a release renames it, this throws at startup
 * (and in the tests) rather than leaving the per-key timers in place unnoticed.
 */
export function useWindowCounters(rl: object, counters: WindowCounters, now: () => number): CounterStorage {
  const holder = rl as { _memoryStorage?: unknown };
  if (typeof holder._memoryStorage !== 'object' || holder._memoryStorage === null) {
    throw new Error('rate-limiter-flexible: RateLimiterMemory has no _memoryStorage to replace');
  }
  const storage = new CounterStorage(counters, now);
  holder._memoryStorage = storage;
  return storage;
}

/**
 * The counter tables of one store, swept together by the store's timer. Held weakly: a rules
 * reload that changes a limit makes a new limiter (edge/suspicion.ts LimiterCache), and the old
 * one's table must be able to go.
 */
export class CounterTables {
  private refs: Array<WeakRef<WindowCounters>> = [];

  constructor(private readonly maxKeys: number = WINDOW_MAX_KEYS) {}

  create(): WindowCounters {
    const c = new WindowCounters(this.maxKeys);
    this.refs.push(new WeakRef(c));
    return c;
  }

  /** every live table's expired windows go; returns the windows dropped */
  sweep(now: number): number {
    let dropped = 0;
    const live: Array<WeakRef<WindowCounters>> = [];
    for (const r of this.refs) {
      const c = r.deref();
      if (c === undefined) continue;
      dropped += c.sweep(now);
      live.push(r);
    }
    this.refs = live;
    return dropped;
  }

  /** the live tables (tests, diagnostics) */
  tables(): WindowCounters[] {
    const out: WindowCounters[] = [];
    for (const r of this.refs) {
      const c = r.deref();
      if (c !== undefined) out.push(c);
    }
    return out;
  }
}
