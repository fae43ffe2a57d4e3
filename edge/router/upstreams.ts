// Upstream (internal SIP server) health: passive (responses and timeouts on real traffic) and
// active (OPTIONS pings, sent by the proxy, which owns the sockets). Failover picks the first
// healthy upstream in configured order that this request has not tried yet.
import type { UpstreamSpec } from '../config/types';

export interface UpstreamState {
  readonly spec: UpstreamSpec;
  readonly label: string;
  up: boolean;
  failures: number;
  /** at least one probe or response has been seen (readiness before the first probe is optimistic) */
  seen: boolean;
}

export class UpstreamPool {
  readonly list: UpstreamState[];
  constructor(specs: readonly UpstreamSpec[], private readonly failuresBeforeDown: number,
    private readonly onChange?: (idx: number, up: boolean) => void) {
    this.list = specs.map((spec) => ({
      spec, label: `${spec.transport}:${spec.host.includes(':') ? `[${spec.host}]` : spec.host}:${spec.port}`,
      up: true, failures: 0, seen: false,
    }));
  }

  /** first healthy upstream not in `exclude`; -1 when none */
  pick(exclude: readonly number[] = []): number {
    for (let i = 0; i < this.list.length; i++) {
      if (this.list[i]!.up && !exclude.includes(i)) return i;
    }
    return -1;
  }

  anyUp(): boolean { return this.list.some((u) => u.up); }

  /** index of the upstream at this address (and port, when given) */
  indexOf(address: string, port?: number): number {
    return this.list.findIndex((u) => u.spec.host === address && (port === undefined || u.spec.port === port));
  }

  success(i: number): void {
    const u = this.list[i];
    if (!u) return;
    u.failures = 0;
    u.seen = true;
    if (!u.up) { u.up = true; this.onChange?.(i, true); }
  }

  failure(i: number): void {
    const u = this.list[i];
    if (!u) return;
    u.seen = true;
    u.failures++;
    if (u.up && u.failures >= this.failuresBeforeDown) { u.up = false; this.onChange?.(i, false); }
  }
}
