// Time source for every RFC 3261 timer. Tests inject ManualClock and advance it, so no test
// ever sleeps for a real timer duration (T1 = 500 ms, Timer B = 32 s ...).
import { performance } from 'node:perf_hooks';

export interface TimerHandle { readonly __timer: true }

export interface Clock {
  /** monotonic milliseconds */
  now(): number;
  setTimer(ms: number, fn: () => void): TimerHandle;
  clearTimer(h: TimerHandle | undefined): void;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  setTimer(ms, fn) {
    const t = setTimeout(fn, ms);
    // timers never keep the process alive: shutdown is driven by the listeners
    t.unref();
    return t as unknown as TimerHandle;
  },
  clearTimer(h) {
    if (h) clearTimeout(h as unknown as NodeJS.Timeout);
  },
};

interface ManualTimer { at: number; seq: number; fn: () => void; cancelled: boolean }

/** Deterministic clock for tests: timers fire only inside advance(). */
export class ManualClock implements Clock {
  private t = 0;
  private seq = 0;
  private timers: ManualTimer[] = [];
  now(): number { return this.t; }
  setTimer(ms: number, fn: () => void): TimerHandle {
    const timer: ManualTimer = { at: this.t + Math.max(0, ms), seq: this.seq++, fn, cancelled: false };
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
      next.fn();
    }
    this.timers = this.timers.filter((x) => !x.cancelled);
    this.t = end;
  }
}
