// Give a flood's memory back once the flood is over (issue 12: RSS back near its baseline 60 s
// after a spoofed-source flood ends).
//
// Why this exists: after a flood the edge's tables are emptied by their own timers and sweeps
// (transactions by RFC 3261 timers, per-source windows by the store's sweep), so what is left is
// garbage. V8 collects the old generation only when allocation pushes it to, and an edge whose
// traffic went back to a trickle allocates too little for that: measured after 640,000 spoofed
// sources, 60 s idle, the heap still counted ~790 MiB "used" of which nearly all was garbage, and
// RSS never came down. A full collection returns those pages.
//
// When: on a slow tick (the injected clock; the production one runs on an unref'd interval), if the heap grew well past the
// size it had after the last full collection AND the edge is quiet now (few messages in the last
// tick compared with the busiest tick since that collection). A full collection of a large heap
// stops the event loop for tens to hundreds of milliseconds; doing it only when traffic has
// dropped means a flood is never made worse by it, and the few messages that arrive during it
// wait in the socket buffer and the I/O thread's ring.
//
// How: `global.gc` when node runs with --expose-gc; otherwise the flag is set at run time
// (v8.setFlagsFromString) and the function taken from a fresh context, the documented way to get
// it without a command-line flag. If neither works, the edge runs as before (no collection forced)
// and says so once.
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import type { Clock, TimerHandle } from './clock';

export interface IdleGcOptions {
  /** messages received so far (a monotonic counter) */
  readonly activity: () => number;
  /** V8 heap in use, bytes (process.memoryUsage().heapUsed; injectable for tests) */
  readonly heapUsed?: () => number;
  /** V8 heap committed, bytes (process.memoryUsage().heapTotal; injectable for tests) */
  readonly heapTotal?: () => number;
  /** the collector; default: a full GC obtained as described above */
  readonly collect?: () => void;
  readonly clock: Clock;
  /** tick, ms (default 5000) */
  readonly intervalMs?: number;
  /** growth over the post-collection heap that makes a collection worth it, bytes (default 64 MiB) */
  readonly minGrowthBytes?: number;
  /** "quiet": this tick's messages at most this share of the busiest tick since (default 0.1) */
  readonly quietShare?: number;
  /** called after each forced collection (logs, metrics) */
  readonly onCollect?: (e: { before: number; after: number; ms: number }) => void;
}

/** a full-GC function, or undefined when the runtime refuses to give one */
export function fullGc(): (() => void) | undefined {
  const g = (globalThis as { gc?: () => void }).gc;
  if (typeof g === 'function') return compacting(g);
  try {
    v8.setFlagsFromString('--expose-gc');
    const f = vm.runInNewContext('gc') as unknown;
    return typeof f === 'function' ? compacting(f as () => void) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The collection with compaction forced for its duration. Why: after a flood the survivors (bans,
 * promotions, the tables' rebuilt Maps) are scattered over the pages the flood filled, and a plain
 * full GC frees only pages left completely empty; V8 picks few pages to evacuate, so the heap
 * stays committed at its flood size (measured on main after 640,000 sources: 42 MiB used of
 * 313 MiB committed 60 s later). `--compact-on-every-full-gc` makes this one collection move the
 * survivors together so whole pages go back to the OS; it is switched off again at once, so the
 * collections V8 starts by itself stay as they are (compaction costs time on a big live heap).
 */
function compacting(gc: () => void): () => void {
  return () => {
    try { v8.setFlagsFromString('--compact-on-every-full-gc'); } catch { /* flag unknown: plain GC */ }
    try { gc(); } finally {
      try { v8.setFlagsFromString('--no-compact-on-every-full-gc'); } catch { /* as above */ }
    }
  };
}

export class IdleGc {
  private readonly heapUsed: () => number;
  private readonly heapTotal: () => number;
  /** committed heap right after the last full collection (or at start) */
  private floorTotal: number;
  private readonly collect: (() => void) | undefined;
  private readonly intervalMs: number;
  private readonly minGrowth: number;
  private readonly quietShare: number;
  private timer: TimerHandle | undefined;
  private lastCount: number;
  /** heap right after the last full collection (or at start) */
  private floor: number;
  /** busiest tick (messages) since the last collection */
  private peakTick = 0;
  collections = 0;

  constructor(private readonly o: IdleGcOptions) {
    this.heapUsed = o.heapUsed ?? (() => process.memoryUsage().heapUsed);
    this.heapTotal = o.heapTotal ?? (() => process.memoryUsage().heapTotal);
    this.collect = o.collect ?? fullGc();
    this.intervalMs = o.intervalMs ?? 5000;
    this.minGrowth = o.minGrowthBytes ?? 64 * 1024 * 1024;
    this.quietShare = o.quietShare ?? 0.1;
    this.lastCount = o.activity();
    this.floor = this.heapUsed();
    this.floorTotal = this.heapTotal();
  }

  /** false when no collector could be obtained (nothing is scheduled then) */
  get available(): boolean { return this.collect !== undefined; }

  start(): this {
    if (this.collect !== undefined) this.arm();
    return this;
  }

  stop(): void {
    this.o.clock.clearTimer(this.timer);
    this.timer = undefined;
  }

  private arm(): void {
    this.timer = this.o.clock.setTimer(this.intervalMs, () => { this.tick(); this.arm(); });
  }

  /** one decision; public for tests on a manual clock */
  tick(): void {
    const count = this.o.activity();
    const n = count - this.lastCount;
    this.lastCount = count;
    if (n > this.peakTick) this.peakTick = n;
    const used = this.heapUsed();
    // the heap shrank by itself (V8 collected): that is the new floor
    if (used < this.floor) this.floor = used;
    // committed counts too: V8's own collections during a flood empty the heap of garbage but keep
    // the pages it was spread over (measured after 200,000 sources: 179 MiB used, 347 MiB
    // committed 60 s later), and committed pages are what RSS sees; the compacting collection
    // gives them back
    const total = this.heapTotal();
    if (total < this.floorTotal) this.floorTotal = total;
    if (used - this.floor < this.minGrowth && total - this.floorTotal < this.minGrowth) return;
    if (n > this.peakTick * this.quietShare) return;
    const t0 = Date.now();
    this.collect!();
    const after = this.heapUsed();
    this.collections++;
    this.floor = after;
    this.floorTotal = this.heapTotal();
    this.peakTick = n;
    this.o.onCollect?.({ before: used, after, ms: Date.now() - t0 });
  }
}
