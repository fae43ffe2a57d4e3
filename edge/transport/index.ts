// One entry point for listeners: the runtime builds every configured listener through here.
import { createTcpListener, type TcpOptions } from './tcp';
import { createUdpListener } from './udp';
import type { Listener, ListenerSpec, TransportHooks } from './types';
import type { StreamSecurity } from './tls';
import type { StreamUpgrade } from './ws';

export type { Inbound, Listener, ListenerSpec, TransportEvent, TransportHooks } from './types';
export { StreamFramer, type FrameResult, type FramingError, type FramerOptions } from './framing';
export { createTcpListener, type TcpOptions } from './tcp';
export { createUdpListener, type UdpOptions } from './udp';

export interface ListenerOptions extends TcpOptions {
  /** UDP: datagrams over this are counted as datagram_oversize (still handed up); defaults to
   *  maxMessageBytes, the parser limit that turns them into 413 */
  readonly maxDatagramBytes?: number;
  readonly recvBufferBytes?: number;
  /** UDP: syscalls on an I/O thread (default true) */
  readonly ioThread?: boolean;
  /** TLS listeners: the handshake side for a listener spec (edge/transport/tls.ts) */
  readonly tls?: (spec: ListenerSpec) => StreamSecurity;
  /** ws/wss listeners: the upgrade side for a listener spec (edge/transport/ws.ts) */
  readonly ws?: (spec: ListenerSpec) => StreamUpgrade;
}

/** Defaults matching ResolvedConfig's documented defaults (edge/config/types.ts). */
export const DEFAULT_LISTENER_OPTIONS: ListenerOptions = Object.freeze({
  maxMessageBytes: 16384,
  maxConnections: 10000,
  maxConnectionsPerSource: 32,
  unknownPercent: 80,
  promotedPercent: 90,
  messageTimeoutMs: 10000,
  idleTimeoutMs: 180000,
});

/**
 * Bind one listener. Rejects (startup error, not a packet verdict) when the address cannot be
 * bound or the transport is unknown.
 */
export function createListener(spec: ListenerSpec, hooks: TransportHooks, opts: ListenerOptions = DEFAULT_LISTENER_OPTIONS): Promise<Listener> {
  switch (spec.transport) {
    case 'udp':
      return createUdpListener(spec, hooks, {
        maxDatagramBytes: opts.maxDatagramBytes ?? opts.maxMessageBytes,
        recvBufferBytes: opts.recvBufferBytes,
        ipv6Only: opts.ipv6Only,
        ioThread: opts.ioThread,
      });
    case 'tcp':
      return createTcpListener(spec, hooks, opts);
    case 'tls':
      // a stream like TCP once the handshake is done (edge/transport/tls.ts)
      if (opts.tls === undefined) return Promise.reject(new Error('tls_not_configured: a tls listener needs tls.certificates'));
      return createTcpListener(spec, hooks, { ...opts, secure: opts.tls(spec) });
    case 'ws':
    case 'wss': {
      // RFC 7118: the stream path of TCP/TLS with an HTTP upgrade and WebSocket framing
      if (opts.ws === undefined) return Promise.reject(new Error('ws_not_configured: a ws/wss listener needs the websocket settings'));
      if (spec.transport === 'wss' && opts.tls === undefined) return Promise.reject(new Error('tls_not_configured: a wss listener needs tls.certificates'));
      const websocket = opts.ws(spec);
      return createTcpListener(spec, hooks, { ...opts, websocket, ...(spec.transport === 'wss' ? { secure: opts.tls!(spec) } : {}) });
    }
    default:
      return Promise.reject(new Error(`transport_unsupported: ${spec.transport}`));
  }
}
