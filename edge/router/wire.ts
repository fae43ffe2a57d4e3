// The proxy's wire: which listener sends toward an endpoint, what the edge advertises on each
// listener (its Via / Record-Route / Path host:port), which hosts and ports are the edge's own,
// and the one send() that counts what went out. Routing, edits and transactions use it; none of
// them picks a listener or touches a socket on its own.
import { randomFillSync } from 'node:crypto';
import { isIP } from 'node:net';
import type { ResolvedConfig } from '../config/types';
import type { Endpoint, TransportName } from '../sip/types';
import type { Listener } from '../transport/types';
import type { Topology } from './topology';

export type Side = 'outside' | 'inside';
export type SentKind = 'request' | 'response';

/** What the edge writes as its own address on one listener. */
export interface Advertised { readonly host: string; readonly port: number; readonly hostPort: string }

export class Wire {
  readonly listeners: readonly Listener[];
  /** per listener id */
  readonly adv = new Map<string, Advertised>();
  readonly ownHosts = new Set<string>();
  readonly ownPorts = new Set<number>();
  private readonly isInsideEp: (ep: Endpoint) => boolean;
  private readonly sent?: (transport: TransportName, side: Side, kind: SentKind) => void;
  /** topology hiding toward the outside (edge/router/topology.ts); undefined when off */
  topo?: Topology;
  private rnd = Buffer.alloc(0);
  private rndOff = 0;

  constructor(cfg: ResolvedConfig, listeners: readonly Listener[], isInsideEp: (ep: Endpoint) => boolean,
    sent: ((transport: TransportName, side: Side, kind: SentKind) => void) | undefined, localAddresses: readonly string[] = []) {
    this.listeners = listeners;
    this.isInsideEp = isInsideEp;
    this.sent = sent;
    for (const l of listeners) {
      const wildcard = l.local.address === '0.0.0.0' || l.local.address === '::';
      const host = cfg.advertise?.host ?? (wildcard ? (localAddresses.find((a) => (isIP(a) === 6) === (l.family === 6)) ?? l.local.address) : l.local.address);
      const port = cfg.advertise?.port ?? l.local.port;
      this.adv.set(l.id, { host, port, hostPort: host.includes(':') ? `[${host}]:${port}` : `${host}:${port}` });
      this.ownPorts.add(l.local.port);
      if (!wildcard) this.ownHosts.add(l.local.address);
    }
    if (cfg.advertise) {
      this.ownHosts.add(cfg.advertise.host.toLowerCase());
      if (cfg.advertise.port) this.ownPorts.add(cfg.advertise.port);
    }
    for (const a of localAddresses) this.ownHosts.add(a);
  }

  /** The listener that sends toward (transport, address): the one named by preferId when it fits
   *  (a connection's own listener), else the first of that transport and address family. */
  listenerFor(transport: TransportName, address: string, preferId?: string): Listener | undefined {
    const fam = isIP(address) === 6 ? 6 : 4;
    if (preferId) {
      const l = this.listeners.find((x) => x.id === preferId);
      if (l && l.spec.transport === transport && l.family === fam) return l;
    }
    return this.listeners.find((x) => x.spec.transport === transport && x.family === fam);
  }

  /** Send through a listener already chosen (the forward path picks it once, for Via and send). */
  sendOn(l: Listener, dest: Endpoint, bytes: Buffer, mayConnect: boolean, side: Side, kind: SentKind, hide = true): boolean {
    // TOPOLOGY HOOK (out): everything leaving toward the outside passes the topology rewrite
    if (this.topo && hide && side === 'outside') bytes = this.topo.outbound(bytes, { hostPort: this.adv.get(l.id)!.hostPort, transport: dest.transport });
    const ok = l.send(dest, bytes, mayConnect);
    if (ok) this.sent?.(dest.transport, side, kind);
    return ok;
  }

  send(dest: Endpoint, bytes: Buffer, mayConnect: boolean, side: Side, kind: SentKind, hide = true): boolean {
    const l = this.listenerFor(dest.transport, dest.address, dest.listenerId);
    return l !== undefined && this.sendOn(l, dest, bytes, mayConnect, side, kind, hide);
  }

  sideOf(ep: Endpoint): Side {
    return this.isInsideEp(ep) ? 'inside' : 'outside';
  }

  /** n random bytes as base64url, from a refilled pool (one randomFillSync per 4 KiB). */
  randomToken(n: number): string {
    if (this.rndOff + n > this.rnd.length) {
      this.rnd = randomFillSync(Buffer.allocUnsafe(4096));
      this.rndOff = 0;
    }
    const s = this.rnd.subarray(this.rndOff, this.rndOff + n).toString('base64url');
    this.rndOff += n;
    return s;
  }
}
