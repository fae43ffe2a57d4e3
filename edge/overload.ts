// Overload control: while the edge falls behind its input, turn away a share of NEW work
// (initial requests from outside: unknown sources silently, trusted and promoted ones with 503 +
// Retry-After), so that calls already accepted keep their ACKs, BYEs and responses flowing.
// Without it, a proxy past its capacity lets the kernel's socket queue grow at random: responses
// and ACKs of accepted calls wait as long as new INVITEs, every late one triggers a
// retransmission, and the throughput collapses (measured: 1,200 cps offered to an edge good for
// 1,100 gave about 500 cps achieved and 24 % failed calls).
//
// The signal is the fill level of the kernel's UDP receive queue (transport/udp.ts): work
// waiting there is what becomes lateness, retransmissions and losses.
// The control law moves the probability of refusing a new request up and down around a target:
// the loss-based scheme of RFC 7339, applied locally (the 503s tell the client to back off,
// RFC 3261 21.5.4, with a jittered Retry-After so clients do not return in lock-step). Only
// requests that start new work are refused; in-dialog requests, ACK, CANCEL, responses and
// retransmissions of held transactions never are.
import { systemClock, type Clock, type TimerHandle } from './clock';

export interface OverloadOptions {
  readonly enabled: boolean;
  /** Retry-After on the 503, seconds (jittered up to +50 %) */
  readonly retryAfterSeconds: number;
}

/** the pressure reading, 0-1 since the previous call; injectable for tests */
export type PressureSource = () => number;

/** receive queue fill above which shedding grows; at or below it, shedding decays at half the
 *  pace. With the default 4 MiB buffer (8 MiB as the kernel counts it), 10 % is about 350 small
 *  datagrams, some 50 ms of work: a queue that is no longer draining, still far from the 500 ms
 *  (T1) at which clients start to retransmit. A dead band between two thresholds was tried: near
 *  capacity the queue sits in it, and the shedding it had reached never decayed (2,000 of 8,000
 *  calls refused at 1,000 cps, which the edge carries with 0 failures). */
const HIGH = 0.1;

export interface OverloadState {
  readonly shedding: boolean;
  /** share of new requests from unknown sources refused, 0-1 */
  readonly unknown: number;
  /** share of new requests from favoured sources (trusted peers, promoted sources) refused,
   *  0-MAX_SHED; above zero only once every unknown newcomer is refused */
  readonly favoured: number;
  readonly pressure: number;
  /** the pressure source cannot be read (NaN): overload control is off */
  readonly blind: boolean;
}

/** never refuse every favoured request: a share always gets through, so that the guard keeps
 *  seeing what admitting work costs and service resumes without an operator */
const MAX_SHED = 0.95;
/** per sample (100 ms): 0 to 100 % in two seconds, the time the kernel's socket buffer and the
 *  clients' first retransmissions (T1 = 500 ms) take to turn an overload into a collapse */
const STEP = 0.05;

/**
 * Two shed probabilities with strict priority: while unknown sources send new requests, they
 * are refused first (up to all of them); only when that is not enough are favoured sources
 * (trusted peers and authenticated, promoted sources) refused too, and they are the first to be
 * admitted again. A flood of unknown newcomers that saturates the loop costs known customers
 * nothing until refusing every unknown newcomer does not relieve the loop.
 */
export class OverloadGuard {
  private pu = 0;
  private pf = 0;
  private pressure = 0;
  private blind = false;
  private unknownSeen = 0;
  private timer: TimerHandle | undefined;
  private clock: Clock = systemClock;

  constructor(
    private readonly opts: OverloadOptions,
    private readonly source: PressureSource,
    private readonly onChange?: (s: OverloadState) => void,
    private readonly random: () => number = Math.random,
  ) {}

  /** start sampling every `intervalMs` on `clock` (default the system clock, whose timers never
   *  keep the process alive; tests inject a ManualClock, edge/clock.ts) */
  start(intervalMs = 100, clock: Clock = systemClock): this {
    if (!this.opts.enabled || this.timer) return this;
    this.clock = clock;
    const tick = (): void => {
      this.timer = clock.setTimer(intervalMs, tick);
      this.sample();
    };
    this.timer = clock.setTimer(intervalMs, tick);
    return this;
  }

  stop(): void {
    this.clock.clearTimer(this.timer);
    this.timer = undefined;
  }

  /** an outside request from an unknown source arrived (tells the guard there is a tier to refuse first) */
  sawUnknown(): void {
    this.unknownSeen++;
  }

  /** one control step: read the backlog, move the shed probabilities */
  sample(): OverloadState {
    const u = this.source();
    const before = this.active;
    if (Number.isNaN(u)) {
      // no signal: shed nothing rather than guess; said once
      this.pu = 0; this.pf = 0; this.pressure = 0;
      if (!this.blind) { this.blind = true; this.onChange?.(this.state()); }
      return this.state();
    }
    this.pressure = Number.isFinite(u) ? u : 0;
    const unknownPresent = this.unknownSeen > 0;
    this.unknownSeen = 0;
    if (this.pressure > HIGH) {
      if (unknownPresent && this.pu < 1) this.pu = Math.min(1, this.pu + STEP);
      else this.pf = Math.min(MAX_SHED, this.pf + STEP);
    } else {
      if (this.pf > 0) this.pf = Math.max(0, this.pf - STEP / 2);
      else this.pu = Math.max(0, this.pu - STEP / 2);
    }
    // round away float dust so that "off" is exactly 0
    if (this.pu < 1e-9) this.pu = 0;
    if (this.pf < 1e-9) this.pf = 0;
    const s = this.state();
    if (before !== this.active) this.onChange?.(s);
    return s;
  }

  /** should this new request be turned away? (call only when `active`) */
  shed(favoured: boolean): boolean {
    const q = favoured ? this.pf : this.pu;
    return q > 0 && this.random() < q;
  }

  /** is any shedding going on? (the per-request checks are skipped when not) */
  get active(): boolean {
    return this.pu > 0 || this.pf > 0;
  }

  retryAfter(): string {
    const base = this.opts.retryAfterSeconds;
    return String(base + Math.floor(this.random() * (Math.floor(base / 2) + 1)));
  }

  state(): OverloadState {
    return { shedding: this.active, unknown: this.pu, favoured: this.pf, pressure: this.pressure, blind: this.blind };
  }
}
