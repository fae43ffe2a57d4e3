// Upstream (internal SIP server) health and failover order. Failover picks the first healthy
// upstream in configured order that this request has not tried yet.
//
// Who decides health (issue 12). Only evidence an outsider cannot manufacture:
// - the edge's own OPTIONS probes (sent by the proxy, which owns the sockets): no answer within
//   health.timeoutMs, or a 503 the PBX gives about itself, is a failure; any other answer is life;
// - transport errors toward the PBX that only a dead or unreachable PBX produces (TCP connect
//   refused or unreachable; local errors such as EMFILE are the edge's own trouble and say nothing
//   about the PBX);
// - any response the PBX sends on real traffic is life (it cannot be forged: our branch is
//   random and the source must be the upstream).
// Never: a real transaction timing out, or a 503 on real traffic. Anyone on the internet can
// send a request the PBX will not answer, or whose answer the edge itself refuses, and pick a
// number the PBX answers with 503 (a congested trunk behind an Asterisk does): those timers and
// answers describe the request, not the PBX. They only fail that one transaction over (RFC 3261
// 16.7 item 6) and ask for an early probe, whose answer decides.
// And a burst is one event: failures closer together than `minFailureGapMs` (half the probe
// timeout) count once, so 100 refused connects from one burst of calls are not 100 independent
// failures. Probes cannot burst: one at a time per upstream, at least health.timeoutMs apart.
import type { UpstreamSpec } from '../config/types';

/** why a failure was counted (metric label values: a closed set) */
export const HEALTH_FAILURE_CAUSES = ['probe_timeout', 'probe_unavailable', 'transport_error'] as const;
export type HealthFailureCause = (typeof HEALTH_FAILURE_CAUSES)[number];

export interface UpstreamState {
  readonly spec: UpstreamSpec;
  readonly label: string;
  up: boolean;
  failures: number;
  /** at least one probe or response has been seen (readiness before the first probe is optimistic) */
  seen: boolean;
  /** clock time of the last counted failure */
  lastFailureAt: number;
  /** clock time it was marked down */
  downSince: number;
}

export interface UpstreamPoolOptions {
  readonly failuresBeforeDown: number;
  /** failures closer together than this count once (the proxy passes health.timeoutMs / 2) */
  readonly minFailureGapMs?: number;
  /** clock for the two rules above and below; default: no gap, no retry */
  readonly now?: () => number;
  /** without probes nothing would ever bring a down upstream back: after this long it is given
   *  another chance (half-open: the next counted failure marks it down again). 0 = never. */
  readonly retryDownAfterMs?: number;
  readonly onChange?: (idx: number, up: boolean, cause?: HealthFailureCause) => void;
  /** a failure was counted (not one absorbed as part of a burst) */
  readonly onFailure?: (idx: number, cause: HealthFailureCause) => void;
}

export class UpstreamPool {
  readonly list: UpstreamState[];
  private readonly o: UpstreamPoolOptions;
  private readonly now: () => number;
  constructor(specs: readonly UpstreamSpec[], opts: UpstreamPoolOptions) {
    this.o = opts;
    this.now = opts.now ?? (() => 0);
    this.list = specs.map((spec) => ({
      spec, label: `${spec.transport}:${spec.host.includes(':') ? `[${spec.host}]` : spec.host}:${spec.port}`,
      up: true, failures: 0, seen: false, lastFailureAt: Number.NEGATIVE_INFINITY, downSince: 0,
    }));
  }

  /** first healthy upstream not in `exclude`; -1 when none */
  pick(exclude: readonly number[] = []): number {
    for (let i = 0; i < this.list.length; i++) {
      if (this.isUp(i) && !exclude.includes(i)) return i;
    }
    return -1;
  }

  anyUp(): boolean {
    for (let i = 0; i < this.list.length; i++) if (this.isUp(i)) return true;
    return false;
  }

  /** up, or down for longer than retryDownAfterMs (then it is marked up again, half-open) */
  private isUp(i: number): boolean {
    const u = this.list[i]!;
    if (u.up) return true;
    const retry = this.o.retryDownAfterMs ?? 0;
    if (retry <= 0 || this.now() - u.downSince < retry) return false;
    u.up = true;
    u.failures = Math.max(0, this.o.failuresBeforeDown - 1);
    this.o.onChange?.(i, true);
    return true;
  }

  /** index of the upstream at this address (and port, when given) */
  indexOf(address: string, port?: number): number {
    return this.list.findIndex((u) => u.spec.host === address && (port === undefined || u.spec.port === port));
  }

  success(i: number): void {
    const u = this.list[i];
    if (!u) return;
    u.failures = 0;
    u.seen = true;
    if (!u.up) { u.up = true; this.o.onChange?.(i, true); }
  }

  /** Count a failure of upstream i; returns false when it was absorbed as part of a burst. */
  failure(i: number, cause: HealthFailureCause = 'probe_timeout'): boolean {
    const u = this.list[i];
    if (!u) return false;
    u.seen = true;
    const now = this.now();
    if (now - u.lastFailureAt < (this.o.minFailureGapMs ?? 0)) return false;
    u.lastFailureAt = now;
    u.failures++;
    this.o.onFailure?.(i, cause);
    if (u.up && u.failures >= this.o.failuresBeforeDown) {
      u.up = false;
      u.downSince = now;
      this.o.onChange?.(i, false, cause);
    }
    return true;
  }
}
