// Time source for every RFC 3261 timer. Tests inject ManualClock and advance it, so no test
// ever sleeps for a real timer duration (T1 = 500 ms, Timer B = 32 s ...).
import { performance } from 'node:perf_hooks';

export interface TimerHandle { readonly __timer: true }

export interface Clock {
  /** monotonic milliseconds */
  now(): number;
  setTimer(ms: number, fn: () => void): TimerHandle;
  /** setTimer without a closure: `fn(arg)` when due. A proxy holds several timers per live
   *  transaction; a shared handler and the transaction as argument cost one small entry each
   *  instead of a closure and its context (bench/README.md "memory") */
  setTimerWith<T>(ms: number, fn: (arg: T) => void, arg: T): TimerHandle;
  clearTimer(h: TimerHandle | undefined): void;
}

interface WheelEntry { fn: ((arg: unknown) => void) | null; arg: unknown }

/**
 * The production clock: a timer wheel with 10 ms slots driven by one unref'd interval. A proxy
 * arms and disarms several RFC 3261 timers per transaction (A/E, B/F, G, H, D/K/J, L/M); with
 * one Node timer each that was a tenth of the CPU per call, here arming is a push into an array
 * and disarming clears a field. Timers fire up to one slot late, never early: far below T1.
 */
export class WheelClock implements Clock {
  private readonly slots = new Map<number, WheelEntry[]>();
  private done: number;
  private interval?: NodeJS.Timeout;
  private pending = 0;
  constructor(private readonly slotMs = 10) {
    this.done = Math.floor(performance.now() / slotMs);
  }

  now(): number { return performance.now(); }

  setTimer(ms: number, fn: () => void): TimerHandle {
    return this.setTimerWith(ms, fn as (arg: unknown) => void, undefined);
  }

  setTimerWith<T>(ms: number, fn: (arg: T) => void, arg: T): TimerHandle {
    const e: WheelEntry = { fn: fn as (arg: unknown) => void, arg };
    // idle wheel (no interval, nothing pending): skip the empty slots since the last run
    if (!this.interval) this.done = Math.max(this.done, Math.floor(performance.now() / this.slotMs));
    // the slot that ends at or after the deadline: never early
    const slot = Math.max(this.done + 1, Math.ceil((performance.now() + Math.max(0, ms)) / this.slotMs));
    let list = this.slots.get(slot);
    if (!list) { list = []; this.slots.set(slot, list); }
    list.push(e);
    this.pending++;
    if (!this.interval) {
      this.interval = setInterval(() => this.run(), this.slotMs);
      this.interval.unref();
    }
    return e as unknown as TimerHandle;
  }

  clearTimer(h: TimerHandle | undefined): void {
    if (h) {
      const e = h as unknown as WheelEntry;
      e.fn = null;
      e.arg = undefined; // a cleared timer must not keep its transaction alive until its slot
    }
  }

  private run(): void {
    const upTo = Math.floor(performance.now() / this.slotMs);
    while (this.done < upTo) {
      const slot = ++this.done;
      const list = this.slots.get(slot);
      if (!list) continue;
      this.slots.delete(slot);
      this.pending -= list.length;
      for (const e of list) {
        const fn = e.fn;
        if (!fn) continue;
        const arg = e.arg;
        e.fn = null;
        e.arg = undefined;
        try { fn(arg); } catch { /* a timer callback must not stop the wheel */ }
      }
    }
    if (this.pending === 0 && this.interval) {
      clearInterval(this.interval);
      this.interval = undefined;
    }
  }
}

export const systemClock: Clock = new WheelClock();

interface ManualTimer { at: number; seq: number; fn: (arg: unknown) => void; arg: unknown; cancelled: boolean }

/** Deterministic clock for tests: timers fire only inside advance(). */
export class ManualClock implements Clock {
  private t = 0;
  private seq = 0;
  private timers: ManualTimer[] = [];
  now(): number { return this.t; }
  setTimer(ms: number, fn: () => void): TimerHandle {
    return this.setTimerWith(ms, fn as (arg: unknown) => void, undefined);
  }
  setTimerWith<T>(ms: number, fn: (arg: T) => void, arg: T): TimerHandle {
    const timer: ManualTimer = { at: this.t + Math.max(0, ms), seq: this.seq++, fn: fn as (arg: unknown) => void, arg, cancelled: false };
    this.timers.push(timer);
    return timer as unknown as TimerHandle;
  }
  clearTimer(h: TimerHandle | undefined): void {
    if (h) (h as unknown as ManualTimer).cancelled = true;
  }
  /** number of timers still pending */
  get pending(): number { return this.timers.filter((x) => !x.cancelled).length; }
  /** move time forward, firing due timers in order (timers set while firing are honoured) */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let next: ManualTimer | undefined;
      for (const x of this.timers) {
        if (x.cancelled || x.at > end) continue;
        if (!next || x.at < next.at || (x.at === next.at && x.seq < next.seq)) next = x;
      }
      if (!next) break;
      next.cancelled = true;
      this.t = Math.max(this.t, next.at);
      next.fn(next.arg);
    }
    this.timers = this.timers.filter((x) => !x.cancelled);
    this.t = end;
  }
}
