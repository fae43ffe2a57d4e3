// The edge's side of TLS, kept out of edge.ts: the certificate holder (loaded at start, reloaded
// on file change and SIGHUP, logged and counted), the handshake side of each tls listener,
// handshake outcomes turned into metrics and suspicion, and the trusted peers identified by
// their client certificate (mutual TLS) instead of, or together with, their address.
import type { Logger } from 'pino';
import type { ResolvedConfig } from './config/types';
import type { EdgeMetrics } from './metrics';
import type { Endpoint } from './sip/types';
import type { SuspicionEvent } from './suspicion';
import { securityEvent } from './log';
import { CidrSet } from './net/cidr';
import { createTlsSecurity, type PeerCertificate, type StreamSecurity, type TlsHandshakeReason } from './transport/tls';
import { daysLeft, TlsHolder, type TlsSettings } from './transport/tls-context';
import type { ListenerSpec } from './transport/types';

/** What a failed handshake says about its source (the suspicion API, as the gate and the stages
 *  use it): bytes that are not TLS, dead protocol versions and handshakes left hanging are
 *  malformed traffic; a client certificate that does not verify is a failed credential, like a
 *  wrong password (issue 14); running into the handshake caps is a flood. Reasons that say
 *  nothing about intent (reset, no shared cipher: an old phone) cost nothing. */
const SUSPICION: Partial<Record<TlsHandshakeReason, SuspicionEvent>> = {
  not_tls: 'malformed',
  protocol_version: 'malformed',
  timeout: 'malformed',
  client_cert_invalid: 'auth_failure',
  client_cert_missing: 'auth_failure',
  source_cap: 'flood',
};

/** days before expiry from which every load logs a warning (as `sip-edge check` does) */
const EXPIRY_WARN_DAYS = 30;

export interface TlsService {
  /** ListenerOptions.tls: the handshake side of one tls listener */
  security(spec: ListenerSpec): StreamSecurity;
  onHandshake(reason: TlsHandshakeReason, source: Endpoint): void;
  /** a verified client certificate: true when it matches a tls.peers entry (a trusted peer) */
  onPeerCertificate(source: Endpoint, peer: PeerCertificate): boolean;
  /** is `address` one a certificate-trusted peer connects from (tls.peers addresses)? Its
   *  connections are admitted into trusted-class TCP capacity before their handshake, on
   *  probation: kept there only if the handshake yields a matching certificate */
  probation(address: string): boolean;
  onClosed(source: Endpoint | undefined): void;
  /** is this inbound connection a trusted peer by its certificate? */
  trustedConnection(source: Endpoint): boolean;
  reload(): void;
  close(): void;
}

/** "tls:host:port" as config writes it (IPv6 in brackets) */
export function listenerText(spec: ListenerSpec): string {
  return `${spec.transport}:${spec.host.includes(':') ? `[${spec.host}]` : spec.host}:${spec.port}`;
}

/** A certificate could not be loaded at start. */
export class TlsLoadError extends Error {
  constructor(readonly errors: readonly string[]) {
    super(`TLS certificates not loaded:\n${errors.join('\n')}`);
    this.name = 'TlsLoadError';
  }
}

export function peerMatches(settings: TlsSettings, peer: PeerCertificate): boolean {
  for (const p of settings.peers) {
    if (p.fingerprint !== undefined && p.fingerprint === peer.fingerprint256) return true;
    if (p.name !== undefined && peer.names.includes(p.name)) return true;
  }
  return false;
}

export function startTls(cfg: ResolvedConfig, log: Logger, metrics: EdgeMetrics, suspect: (source: Endpoint, event: SuspicionEvent, rule: string) => void, watch: boolean): TlsService | undefined {
  const settings = cfg.tls;
  if (settings === undefined || settings.certificates.length === 0) return undefined;
  const r = TlsHolder.open(settings);
  if (!r.ok) throw new TlsLoadError(r.errors);
  const holder = r.holder;
  const describe = (): Array<{ file: string; names: readonly string[]; notAfter: string; daysLeft: number }> =>
    holder.current().certs.map((c) => ({ file: c.file, names: c.names.slice(0, 20), notAfter: c.notAfter.toISOString(), daysLeft: daysLeft(c) }));
  /** a certificate close to its end is an outage waiting to happen: say so at every load */
  const warnExpiring = (): void => {
    for (const c of describe()) {
      if (c.daysLeft < EXPIRY_WARN_DAYS) log.warn({ event: 'tls_certificate_expiring', file: c.file, notAfter: c.notAfter, daysLeft: c.daysLeft }, 'TLS certificate expires soon');
    }
  };
  log.info({ event: 'tls_loaded', version: holder.current().version, certificates: describe() }, 'TLS certificates loaded');
  warnExpiring();
  holder.on('reloaded', (m) => {
    metrics.tlsReload(true);
    securityEvent(log, 'tls_reload', { result: 'ok', version: m.version, certificates: describe() });
    warnExpiring();
  });
  holder.on('failed', (errors) => {
    metrics.tlsReload(false);
    securityEvent(log, 'tls_reload', { result: 'error', version: holder.current().version, errors: errors.slice(0, 20) });
  });
  if (watch) holder.watch();
  /** connIds of open connections whose client certificate matched tls.peers */
  const trusted = new Set<number>();
  const peerAddresses = new CidrSet();
  for (const p of settings.peers) for (const a of p.addresses ?? []) peerAddresses.add(a);
  return {
    security: (spec) => createTlsSecurity({ holder, settings, requireClientCert: settings.requireClientCert.includes(listenerText(spec)) }),
    onHandshake(reason, source) {
      metrics.tlsHandshake(reason);
      const ev = SUSPICION[reason];
      if (ev !== undefined) suspect(source, ev, `tls_${reason}`);
    },
    onPeerCertificate(source, peer) {
      const ok = peerMatches(settings, peer);
      if (ok && source.connId !== undefined) trusted.add(source.connId);
      return ok;
    },
    probation: (address) => peerAddresses.has(address),
    onClosed(source) {
      if (source?.connId !== undefined) trusted.delete(source.connId);
    },
    trustedConnection: (source) => source.connId !== undefined && trusted.has(source.connId),
    reload: () => { holder.reload(); },
    close: () => holder.close(),
  };
}
