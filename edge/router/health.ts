// Upstream health probes: periodic OPTIONS to each upstream (health.intervalMs), an early probe
// when real traffic hints that one is sick (a timeout, a 503, a transport error), and the probe
// answers. What counts as a failure and when an upstream goes down is upstreams.ts's business.
import type { Clock } from '../clock';
import type { ResolvedConfig } from '../config/types';
import type { Endpoint, SipResponse } from '../sip/types';
import type { UpstreamPool } from './upstreams';
import { viaValue } from './edits';
import type { Wire } from './wire';

export class HealthProbes {
  private readonly probes = new Map<string, { idx: number; timer: ReturnType<Clock['setTimer']> }>();
  private probeTimer?: ReturnType<Clock['setTimer']>;
  /** clock time of the last probe sent to each upstream (early probes are spaced by timeoutMs) */
  private readonly probeSentAt: number[];
  private stopped = false;

  constructor(private readonly cfg: ResolvedConfig, private readonly clock: Clock,
    private readonly wire: Wire, private readonly upstreams: UpstreamPool) {
    this.probeSentAt = cfg.upstreams.map(() => Number.NEGATIVE_INFINITY);
  }

  /** Start periodic OPTIONS probes toward each upstream (health.intervalMs 0 disables them). */
  start(): void {
    const every = this.cfg.health.intervalMs;
    if (every <= 0 || this.stopped) return;
    const run = (): void => {
      this.upstreams.list.forEach((_, i) => this.probe(i));
      this.probeTimer = this.clock.setTimer(every, run);
    };
    run();
  }

  /** No more probes (shutdown); those in flight are forgotten. */
  stop(): void {
    this.stopped = true;
    this.clock.clearTimer(this.probeTimer);
    for (const p of this.probes.values()) this.clock.clearTimer(p.timer);
    this.probes.clear();
  }

  /**
   * Real traffic hinted that upstream idx may be sick (a timeout, a 503, a transport error):
   * probe it now rather than at the next period. Bounded whatever the traffic: one probe in flight
   * per upstream, at most one per health.timeoutMs. Without periodic probes (intervalMs 0) the
   * edge sends no OPTIONS at all, as configured.
   */
  suspect(idx: number): void {
    if (this.cfg.health.intervalMs <= 0 || this.stopped) return;
    if (this.clock.now() - this.probeSentAt[idx]! < this.cfg.health.timeoutMs) return;
    this.probe(idx);
  }

  /**
   * The transport could not connect to dest (TCP: refused, unreachable, timed out; local causes
   * such as EMFILE are filtered out by the caller). When dest is an upstream this is evidence only
   * a dead or unreachable PBX produces: a failure (bursts count once) and an early probe.
   */
  transportFailed(dest: Endpoint): void {
    const idx = this.upstreams.list.findIndex((u) => u.spec.transport === dest.transport && u.spec.host === dest.address && u.spec.port === dest.port);
    if (idx < 0) return;
    this.upstreams.failure(idx, 'transport_error');
    this.suspect(idx);
  }

  probe(idx: number): void {
    const u = this.upstreams.list[idx]!.spec;
    const dest: Endpoint = { transport: u.transport, address: u.host, port: u.port };
    const l = this.wire.listenerFor(dest.transport, dest.address);
    if (!l) return;
    // one probe at a time per upstream: an answer or a timeout first
    for (const p of this.probes.values()) if (p.idx === idx) return;
    this.probeSentAt[idx] = this.clock.now();
    const adv = this.wire.adv.get(l.id)!;
    const branch = `z9hG4bK${this.wire.randomToken(12)}.hc`;
    const host = u.host.includes(':') ? `[${u.host}]` : u.host;
    const bytes = Buffer.from([
      `OPTIONS sip:${host}:${u.port} SIP/2.0`,
      `Via: ${viaValue(u.transport, adv.hostPort, branch)}`,
      `From: <sip:sip-edge@${adv.hostPort}>;tag=${this.wire.randomToken(6)}`,
      `To: <sip:${host}:${u.port}>`,
      `Call-ID: ${this.wire.randomToken(12)}@sip-edge`,
      'CSeq: 1 OPTIONS', 'Max-Forwards: 70', 'User-Agent: sip-edge health check', 'Content-Length: 0', '', '',
    ].join('\r\n'), 'latin1');
    const timer = this.clock.setTimer(this.cfg.health.timeoutMs, () => {
      if (this.probes.delete(branch)) this.upstreams.failure(idx, 'probe_timeout');
    });
    this.probes.set(branch, { idx, timer });
    // a probe that could not even be handed to the socket (a full send queue, no listener for
    // the transport) stays pending: it fails by its timeout like any unanswered one, once
    this.wire.sendOn(l, dest, bytes, true, 'inside', 'request');
  }

  /**
   * A response whose top Via carries `branch`: is it the answer to one of our probes? Then it is
   * consumed here ('probe'), or refused when it comes from elsewhere ('unmatched'); 'none' when
   * it is not a probe's.
   */
  onResponse(branch: string, res: SipResponse, source: Endpoint): 'none' | 'probe' | 'unmatched' {
    const probe = this.probes.get(branch);
    if (!probe) return 'none';
    // only the upstream we probed answers a probe (the branch is random; the source must match)
    const u = this.upstreams.list[probe.idx]!.spec;
    if (source.address !== u.host) return 'unmatched';
    if (res.status < 200) return 'probe'; // wait for the final answer (or the timeout)
    this.clock.clearTimer(probe.timer);
    this.probes.delete(branch);
    // RFC 3261 21.5.4: a 503 to an OPTIONS aimed at the PBX itself is the PBX saying it cannot
    // serve now; any other answer means it is alive (a 404 or 401 from Asterisk included)
    if (res.status === 503) this.upstreams.failure(probe.idx, 'probe_unavailable');
    else this.upstreams.success(probe.idx);
    return 'probe';
  }
}
