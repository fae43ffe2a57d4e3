// The edge's side of WebSocket (RFC 7118), kept out of edge.ts: each ws/wss listener's upgrade
// settings (its Origin allow-list, the trusted proxies, the ban check for a forwarded client
// address), upgrade outcomes counted and turned into suspicion.
import type { ResolvedConfig } from './config/types';
import type { EdgeMetrics } from './metrics';
import { CidrSet } from './net/cidr';
import type { Endpoint } from './sip/types';
import type { SuspicionEvent } from './suspicion';
import { listenerText } from './tls-service';
import type { ListenerSpec } from './transport/types';
import { createWsUpgrade, type StreamUpgrade, type WsUpgradeReason } from './transport/ws';

/** What a failed upgrade says about its source: bytes that are not HTTP, heads over the cap,
 *  upgrades left hanging and plain HTTP requests (scanners probing a web port) are malformed
 *  traffic. A refused Origin or a missing subprotocol is a web page or a client configured
 *  wrong, not an attack on us: counted, no suspicion. */
const SUSPICION: Partial<Record<WsUpgradeReason, SuspicionEvent>> = {
  bad_request: 'malformed',
  too_large: 'malformed',
  timeout: 'malformed',
  not_websocket: 'malformed',
  bad_handshake: 'malformed',
};

export interface WsService {
  /** ListenerOptions.ws: the upgrade side of one ws/wss listener */
  upgrade(spec: ListenerSpec): StreamUpgrade;
  onUpgrade(reason: WsUpgradeReason, source: Endpoint): void;
}

export function startWs(cfg: ResolvedConfig, metrics: EdgeMetrics, suspect: (source: Endpoint, event: SuspicionEvent, rule: string) => void, refuse: (address: string) => boolean): WsService | undefined {
  const w = cfg.websocket;
  if (w === undefined) return undefined;
  let proxies: CidrSet | null = null;
  if (w.trustedProxies.length > 0) {
    proxies = new CidrSet();
    for (const c of w.trustedProxies) proxies.add(c);
  }
  return {
    upgrade: (spec) => createWsUpgrade(spec.transport === 'wss' ? 'wss' : 'ws', {
      origins: w.origins[listenerText(spec)] ?? [],
      trustedProxies: proxies,
      upgradeTimeoutMs: w.upgradeTimeoutMs,
      maxUpgradeBytes: w.maxUpgradeBytes,
      maxMessageBytes: cfg.limits.maxMessageBytes,
      pingIntervalMs: w.pingIntervalMs,
      idleTimeoutMs: cfg.tcp.idleTimeoutMs,
      refuse,
    }),
    onUpgrade(reason, source) {
      metrics.wsUpgrade(reason);
      const ev = SUSPICION[reason];
      if (ev !== undefined) suspect(source, ev, `ws_${reason}`);
    },
  };
}
