// Transports only move bytes. They hand framed messages up and send what the router gives them.
import type { Endpoint, TransportName } from '../sip/types';
import type { PeerCertificate, TlsHandshakeReason } from './tls';
import type { WsUpgradeReason } from './ws';

export interface Inbound {
  /** one SIP message: a datagram (UDP) or one Content-Length framed message (stream) */
  readonly bytes: Buffer;
  /** canonical source address; connId set for stream transports; listenerId always set */
  readonly source: Endpoint;
  /** performance.now() at receipt */
  readonly receivedAt: number;
}

export interface ListenerSpec {
  readonly transport: TransportName;
  /** bind address, canonical ("0.0.0.0", "::", "127.0.0.1", "::1") */
  readonly host: string;
  /** 0 = ephemeral */
  readonly port: number;
}

export interface Listener {
  readonly id: string;
  readonly spec: ListenerSpec;
  /** the bound address and port (after listen; port resolved when spec.port was 0) */
  readonly local: { readonly address: string; readonly port: number; readonly family: 4 | 6 };
  /** address family the socket serves */
  readonly family: 4 | 6;
  /**
   * Send one message. UDP: a datagram to dest.address:dest.port.
   * Stream: on connection dest.connId when given and still open; otherwise, when
   * `mayConnect` is true, on an existing connection to dest.address:dest.port or a new one.
   * Returns false when the bytes could not be handed to the OS (no connection, socket closed).
   */
  send(dest: Endpoint, bytes: Buffer, mayConnect?: boolean): boolean;
  /** stream transports: is this connection still open? */
  isOpen?(connId: number): boolean;
  /** stream transports: connections open right now, inbound and outbound (sipedge_tcp_connections) */
  connections?(): number;
  /** stream transports: let connection `connId` stay silent for `ms` (never less than the idle
   *  timeout, at most 24 h) before it is closed; the allowance restarts with every byte */
  holdOpen?(connId: number, ms: number): void;
  /** datagram transports: share of receive rounds since the last call that did not drain the
   *  socket (0-1; overload control reads it) */
  backlog?(): number;
  /** stop accepting; with `graceMs` > 0 stream connections are ended after what is queued has
   *  been written, and cut after `graceMs`; 0 cuts them at once */
  close(graceMs?: number): Promise<void>;
}

/** Events a transport reports for counting (bounded label values). */
export type TransportEvent =
  | 'conn_opened' | 'conn_closed' | 'conn_rejected_total_cap' | 'conn_rejected_source_cap'
  | 'conn_idle_timeout' | 'conn_message_timeout' | 'conn_framing_error' | 'conn_oversize'
  | 'keepalive_pong' | 'datagram_oversize' | 'datagram_queue_full' | 'send_error'
  | 'conn_rejected_class_cap' | 'conn_evicted' | 'conn_rejected_banned';

/**
 * Who an inbound connection's source is, as the edge sees it (the transport reads no SIP header:
 * the edge hands it a classifier). Ranked: inside (the PBX side) > trusted (configured peers) >
 * promoted (authenticated recently) > unknown. Capacity is reserved from the top down.
 */
export type SourceClass = 'inside' | 'trusted' | 'promoted' | 'unknown';
/** what happened to an inbound connection at admission (or later, evicted for a higher class) */
export type AdmissionResult = 'accepted' | 'evicted' | 'rejected_class_cap' | 'rejected_total_cap' | 'rejected_source_cap'
  /** TLS, from a certificate-trusted peer's address (tls.peers addresses): admitted into trusted
   *  capacity before the handshake; then verified (its certificate matched a peer) or failed
   *  (it did not: the connection is closed) */
  | 'probation' | 'probation_verified' | 'probation_failed';

export interface TransportHooks {
  onMessage(msg: Inbound): void;
  /** framing failures on stream transports (after which the connection is closed) and counts */
  onEvent?(event: TransportEvent, listener: Listener, source?: Endpoint): void;
  /** stream transports: admission of an inbound connection by source class (counting) */
  onAdmission?(cls: SourceClass, result: AdmissionResult, listener: Listener): void;
  /** stream transports: an outbound connection to `dest` failed before it was established.
   *  `remote`: the peer refused or could not be reached (ECONNREFUSED, EHOSTUNREACH, ENETUNREACH,
   *  ETIMEDOUT ...), evidence about the peer; `local`: the edge's own trouble (EMFILE, ENFILE,
   *  EADDRNOTAVAIL ...), which says nothing about the peer. */
  onConnectFailed?(dest: Endpoint, cause: 'remote' | 'local', listener: Listener): void;
  /** stream framing produced a message over the size limit whose head was complete: bytes of the head
   *  are given so the caller can answer 413 before the connection is closed */
  onOversize?(head: Buffer, source: Endpoint): void;
  /** TLS listeners: how the handshake of an admitted inbound connection ended ('ok' or why not) */
  onHandshake?(reason: TlsHandshakeReason, listener: Listener, source: Endpoint): void;
  /** TLS listeners: the connection's client certificate verified against the client CA */
  onPeerCertificate?(source: Endpoint, peer: PeerCertificate, listener: Listener): boolean | void;
  /** WebSocket listeners: how the HTTP upgrade of an admitted connection ended */
  onUpgrade?(reason: WsUpgradeReason, listener: Listener, source: Endpoint): void;
}
