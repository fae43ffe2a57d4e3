// Transports only move bytes. They hand framed messages up and send what the router gives them.
import type { Endpoint, TransportName } from '../sip/types';

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
  /** stream transports: let connection `connId` stay silent for `ms` (never less than the idle
   *  timeout, at most 24 h) before it is closed; the allowance restarts with every byte */
  holdOpen?(connId: number, ms: number): void;
  /** datagram transports: share of receive rounds since the last call that did not drain the
   *  socket (0-1; overload control reads it) */
  backlog?(): number;
  /** stop accepting; close sockets after `graceMs` (existing connections may finish) */
  close(graceMs?: number): Promise<void>;
}

/** Events a transport reports for counting (bounded label values). */
export type TransportEvent =
  | 'conn_opened' | 'conn_closed' | 'conn_rejected_total_cap' | 'conn_rejected_source_cap'
  | 'conn_idle_timeout' | 'conn_message_timeout' | 'conn_framing_error' | 'conn_oversize'
  | 'keepalive_pong' | 'datagram_oversize' | 'datagram_queue_full' | 'send_error';

export interface TransportHooks {
  onMessage(msg: Inbound): void;
  /** framing failures on stream transports (after which the connection is closed) and counts */
  onEvent?(event: TransportEvent, listener: Listener, source?: Endpoint): void;
  /** stream framing produced a message over the size limit whose head was complete: bytes of the head
   *  are given so the caller can answer 413 before the connection is closed */
  onOversize?(head: Buffer, source: Endpoint): void;
}
