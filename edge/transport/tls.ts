// SIP over TLS (RFC 3261 26.2, 18.3 framing): once the handshake is done a TLS connection is a
// stream exactly like TCP, so the TCP listener (edge/transport/tcp.ts) carries it, with its caps,
// framing, flows and write queue. This module is what differs: the handshake.
//
// An accepted TCP connection passes the TCP admission first (connections per source and by
// source class, counted before a byte of TLS is spent), then this module's handshake limits:
// handshakes in progress per source (IPv6: per prefix) and in total, and a deadline for the
// whole handshake. Each handshake ends with a result and a stable reason (TLS_HANDSHAKE_REASONS)
// that the edge counts, and that spends the source's suspicion budget when it says the peer is
// hostile or broken (garbage, timeouts, refused client certificates).
//
// The handshake itself is node's tls.Server, never listening: accepted sockets are injected
// with emit('connection') (documented for tls.Server), so the certificate chosen by SNI and the
// default one are whatever the holder has in service at that handshake (edge/transport/tls-context.ts).
import type * as net from 'node:net';
import * as tls from 'node:tls';
import type { TlsHolder, TlsMaterial, TlsSettings } from './tls-context';
import { policyOptions } from './tls-context';

/** How a handshake ended (closed list: metric label values). */
export const TLS_HANDSHAKE_REASONS = [
  'ok',
  /** refused before the handshake: too many in progress from this source / in total */
  'source_cap', 'total_cap',
  /** no ClientHello and Finished within handshakeTimeoutMs (slow or half-open handshakes) */
  'timeout',
  /** bytes that are not TLS (plain SIP to a TLS port, scanners, garbage before the ClientHello) */
  'not_tls',
  /** TLS older than the minimum (1.0, 1.1, SSLv3) or an unknown version */
  'protocol_version',
  /** no cipher suite in common (a client offering only weak suites) */
  'no_shared_cipher',
  /** mutual TLS: no client certificate / one that does not verify against the client CA */
  'client_cert_missing', 'client_cert_invalid',
  /** the peer closed or reset the connection during the handshake */
  'reset',
  /** any other handshake failure */
  'failed',
] as const;
export type TlsHandshakeReason = (typeof TLS_HANDSHAKE_REASONS)[number];

/** A verified client certificate (mutual TLS). */
export interface PeerCertificate {
  /** upper-case "AA:BB:..." SHA-256 of the DER certificate */
  readonly fingerprint256: string;
  /** SAN DNS names (the CN when there is none), lower-case */
  readonly names: readonly string[];
}

export type TlsAcceptResult =
  | { readonly ok: true; readonly socket: tls.TLSSocket; readonly peer: PeerCertificate | null }
  | { readonly ok: false; readonly reason: TlsHandshakeReason };

/** What tcp.ts needs to carry TLS: the handshake on accept, a TLS client on connect. */
export interface StreamSecurity {
  readonly transport: 'tls';
  /** run the handshake on an accepted socket (admitted by the TCP caps); `done` is called once */
  accept(raw: net.Socket, sourceKey: string, done: (r: TlsAcceptResult) => void): void;
  /** open a TLS connection toward an upstream (the host given is an IP address) */
  connect(o: { host: string; port: number; localAddress?: string }): tls.TLSSocket;
  /** handshakes in progress (tests, gauges) */
  handshaking(): number;
}

export interface TlsListenerOptions {
  readonly holder: TlsHolder;
  readonly settings: TlsSettings;
  /** this listener asks for and requires a client certificate that verifies against clientCa */
  readonly requireClientCert: boolean;
}

/** an OpenSSL error code of a failed server handshake -> reason */
export function handshakeReason(err: NodeJS.ErrnoException | undefined): TlsHandshakeReason {
  const code = err?.code ?? '';
  if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return 'timeout';
  if (code === 'ECONNRESET' || code === 'EPIPE') return 'reset';
  if (/WRONG_VERSION_NUMBER|HTTP_REQUEST|HTTPS_PROXY_REQUEST|PACKET_LENGTH_TOO_LONG|RECORD_LENGTH_MISMATCH|BAD_PACKET|UNEXPECTED_RECORD|LENGTH_MISMATCH|RECORD_LAYER_FAILURE|DECODE_ERROR/.test(code)) return 'not_tls';
  if (/UNSUPPORTED_PROTOCOL|VERSION_TOO_LOW|PROTOCOL_VERSION/.test(code)) return 'protocol_version';
  if (/NO_SHARED_CIPHER|NO_CIPHERS|NO_SUITABLE/.test(code)) return 'no_shared_cipher';
  if (/PEER_DID_NOT_RETURN_A_CERTIFICATE|CERTIFICATE_REQUIRED/.test(code)) return 'client_cert_missing';
  return 'failed';
}

function peerOf(s: tls.TLSSocket): PeerCertificate | null {
  const c = s.getPeerCertificate(false);
  if (c === null || c === undefined || Object.keys(c).length === 0) return null;
  const names: string[] = [];
  for (const part of (c.subjectaltname ?? '').split(/,\s*/)) if (part.startsWith('DNS:')) names.push(part.slice(4).toLowerCase());
  const cn = typeof c.subject?.CN === 'string' ? c.subject.CN : undefined;
  if (names.length === 0 && cn !== undefined) names.push(cn.toLowerCase());
  return { fingerprint256: c.fingerprint256.toUpperCase(), names };
}

/** Build the TLS side of one listener. */
export function createTlsSecurity(o: TlsListenerOptions): StreamSecurity {
  const s = o.settings;
  const material = (): TlsMaterial => o.holder.current();
  // one tls.Server per listener, never bound. With a client CA every listener asks for a client
  // certificate (a peer identified by it is trusted, tls.peers); a listener in
  // requireClientCert refuses a client without a valid one. Verification is node's (against the
  // context's `ca`), the verdict ours: rejectUnauthorized false so that a refused certificate gets
  // its own reason (client_cert_missing / client_cert_invalid) instead of a bare reset.
  const askCert = s.clientCa !== undefined;
  const requireCert = o.requireClientCert && askCert;
  const serverOptions = (m: TlsMaterial): tls.TlsOptions => m.defaultOptions;
  const server = tls.createServer({
    ...serverOptions(material()),
    requestCert: askCert,
    rejectUnauthorized: false,
    // our own deadline below covers the TCP admission too; node's is a backstop
    handshakeTimeout: s.handshakeTimeoutMs + 1000,
    SNICallback: (name, cb) => cb(null, material().contextFor(name)),
  });
  // the default certificate (no SNI, or a name nothing covers) follows reloads like the others
  let inService = material();
  const refreshDefault = (): void => {
    const m = material();
    if (m === inService) return;
    inService = m;
    server.setSecureContext(serverOptions(m));
  };

  interface Pending {
    readonly raw: net.Socket;
    readonly sourceKey: string;
    readonly done: (r: TlsAcceptResult) => void;
    readonly timer: NodeJS.Timeout;
    settled: boolean;
  }
  const pending = new Map<string, Pending>();
  const perSource = new Map<string, number>();

  const settle = (key: string, r: TlsAcceptResult): void => {
    const p = pending.get(key);
    if (p === undefined || p.settled) return;
    p.settled = true;
    pending.delete(key);
    clearTimeout(p.timer);
    const n = (perSource.get(p.sourceKey) ?? 1) - 1;
    if (n <= 0) perSource.delete(p.sourceKey);
    else perSource.set(p.sourceKey, n);
    p.done(r);
  };
  const keyOf = (sock: net.Socket): string => `${sock.remoteAddress}|${sock.remotePort}`;

  server.on('secureConnection', (sock: tls.TLSSocket) => {
    const key = keyOf(sock);
    // RFC 5246 7.4.1.2 / RFC 5746: renegotiation is refused by OpenSSL (SSL_OP_NO_RENEGOTIATION);
    // node's own guard as well, so a client that tries it is cut off either way
    sock.disableRenegotiation();
    if (requireCert && !sock.authorized) {
      const missing = sock.authorizationError === undefined || Object.keys(sock.getPeerCertificate(false) ?? {}).length === 0;
      sock.destroy();
      settle(key, { ok: false, reason: missing ? 'client_cert_missing' : 'client_cert_invalid' });
      return;
    }
    settle(key, { ok: true, socket: sock, peer: s.clientCa !== undefined && sock.authorized ? peerOf(sock) : null });
  });
  // never listening, so nothing should come here; an 'error' without a listener would throw
  server.on('error', () => undefined);
  server.on('tlsClientError', (err: NodeJS.ErrnoException, sock: tls.TLSSocket) => {
    sock.destroy();
    settle(keyOf(sock), { ok: false, reason: handshakeReason(err) });
  });

  return {
    transport: 'tls',
    accept(raw, sourceKey, done) {
      const have = perSource.get(sourceKey) ?? 0;
      if (have >= s.maxHandshakesPerSource) { raw.destroy(); done({ ok: false, reason: 'source_cap' }); return; }
      if (pending.size >= s.maxHandshakes) { raw.destroy(); done({ ok: false, reason: 'total_cap' }); return; }
      const key = keyOf(raw);
      if (pending.has(key)) { raw.destroy(); done({ ok: false, reason: 'failed' }); return; }
      perSource.set(sourceKey, have + 1);
      const timer = setTimeout(() => {
        raw.destroy();
        settle(key, { ok: false, reason: 'timeout' });
      }, s.handshakeTimeoutMs);
      timer.unref();
      pending.set(key, { raw, sourceKey, done, timer, settled: false });
      refreshDefault();
      server.emit('connection', raw);
    },
    connect(c) {
      const m = material();
      const sock = tls.connect({
        host: c.host,
        port: c.port,
        ...(c.localAddress !== undefined ? { localAddress: c.localAddress } : {}),
        ...policyOptions(s),
        ...(m.upstreamCa !== undefined ? { ca: m.upstreamCa } : {}),
        // RFC 5922 7.1 / RFC 6125: the upstream's certificate must name it: the configured name,
        // else its address (an IP SAN)
        ...(s.upstreamName !== undefined ? { servername: s.upstreamName } : {}),
        checkServerIdentity: (host, cert) => tls.checkServerIdentity(s.upstreamName ?? c.host, cert),
        rejectUnauthorized: true,
      });
      return sock;
    },
    handshaking: () => pending.size,
  };
}
