// SIP over WebSocket (RFC 7118): what differs from the TCP/TLS stream path is the opening HTTP
// upgrade and the framing. Everything else - admission caps per source and by class, the slot
// held through the TLS handshake (wss), connIds, flows (RFC 5626) and 430 when a browser's
// connection is gone - is edge/transport/tcp.ts, which hands an admitted (and, for wss,
// TLS-established) socket to accept() here and carries the resulting channel.
//
// The upgrade is node's HTTP parser (an http.Server that never listens: accepted sockets are
// injected with emit('connection'), as documented), with our own deadline, a header byte cap
// (maxHeaderSize) and our checks before `ws` completes the handshake, so each refusal gets a
// stable reason (WS_UPGRADE_REASONS):
//   - RFC 6455 4.2.1: GET, Upgrade: websocket, a 16-byte Sec-WebSocket-Key, version 13;
//   - RFC 7118 4.1: the client MUST offer the "sip" subprotocol, and the edge answers with it;
//   - RFC 6455 10.2: Origin is the browser's word on which page opened the socket: a listener
//     accepts only the origins configured for it (none configured = browsers refused). A client
//     that sends no Origin is not a browser (RFC 6455 4.1: browsers always send it) and is let in;
//   - RFC 7239 / X-Forwarded-For: behind a TLS-terminating load balancer the client's address is
//     read from those headers, and only when the socket's peer is a configured proxy.
// After the upgrade: one SIP message per WebSocket message (RFC 7118 5), text or binary; no
// permessage-deflate (compression bombs); maxPayload caps frames and reassembled messages; a
// ping every pingIntervalMs, closed when the previous one went unanswered (RFC 6455 5.5.2);
// idle = no SIP message either way for idleTimeoutMs (pings do not count: a client that only
// answers pings holds a slot for nothing).
import { isUtf8 } from 'node:buffer';
import * as http from 'node:http';
import type * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Endpoint } from '../sip/types';
import { canonicalAddress, ipLiteral, isIP } from '../net/address';
import type { CidrSet } from '../net/cidr';
import type { TransportEvent } from './types';

/** How an upgrade ended (closed list: metric label values). */
export const WS_UPGRADE_REASONS = [
  'ok',
  /** an HTTP request that is no WebSocket upgrade (a scanner's GET /, a POST), or not GET */
  'not_websocket',
  /** Sec-WebSocket-Key or -Version missing or invalid (RFC 6455 4.2.1) */
  'bad_handshake',
  /** "sip" not among the offered subprotocols (RFC 7118 4.1) */
  'no_subprotocol',
  /** an Origin this listener does not allow (RFC 6455 10.2) */
  'origin_refused',
  /** from a trusted proxy, but its Forwarded / X-Forwarded-For names no usable address */
  'forwarded_invalid',
  /** the forwarded client address is banned */
  'banned',
  /** no complete upgrade request within upgradeTimeoutMs */
  'timeout',
  /** request head over maxUpgradeBytes (431) */
  'too_large',
  /** bytes that are not HTTP */
  'bad_request',
  /** the peer closed the connection before the upgrade was complete */
  'reset',
] as const;
export type WsUpgradeReason = (typeof WS_UPGRADE_REASONS)[number];

export const WS_UPGRADE_RESULTS = ['ok', 'refused', 'failed'] as const;
/** refused: a well-formed request the policy says no to; failed: a broken or hostile one */
export function wsUpgradeResult(reason: WsUpgradeReason): (typeof WS_UPGRADE_RESULTS)[number] {
  if (reason === 'ok') return 'ok';
  return reason === 'origin_refused' || reason === 'no_subprotocol' || reason === 'banned' ? 'refused' : 'failed';
}

export interface WsSettings {
  /** the Origin values a browser may come from ("https://app.example.com"); empty = no browser */
  readonly origins: readonly string[];
  /** peers whose Forwarded / X-Forwarded-For is believed; null = nobody's */
  readonly trustedProxies: CidrSet | null;
  readonly upgradeTimeoutMs: number;
  readonly maxUpgradeBytes: number;
  /** ws maxPayload: one frame, and one message reassembled from fragments */
  readonly maxMessageBytes: number;
  readonly pingIntervalMs: number;
  readonly idleTimeoutMs: number;
  /** the gate for a forwarded client address (the socket's own address was checked at accept) */
  readonly refuse?: (address: string) => boolean;
}

/** One upgraded connection as tcp.ts drives it. */
export interface WsChannel {
  /** one SIP message = one WebSocket message (text when it is valid UTF-8) */
  send(bytes: Buffer): boolean;
  /** bytes queued toward the peer */
  buffered(): number;
  /** close handshake (1000 / 1001), cut after a short grace */
  close(code?: number): void;
  /** allow `ms` without a SIP message (a registration's lifetime), never less than idleTimeoutMs */
  holdOpen(ms: number): void;
}

export interface WsChannelEvents {
  message(bytes: Buffer, receivedAt: number): void;
  event(e: TransportEvent): void;
}

export type WsAcceptResult =
  | { readonly ok: true; readonly client: string; readonly start: (ev: WsChannelEvents) => WsChannel }
  | { readonly ok: false; readonly reason: WsUpgradeReason };

/** What tcp.ts needs to carry WebSocket. */
export interface StreamUpgrade {
  readonly transport: 'ws' | 'wss';
  accept(socket: net.Socket, remote: Endpoint, done: (r: WsAcceptResult) => void): void;
  /** upgrades in progress (tests, gauges) */
  upgrading(): number;
  close(): void;
}

/** RFC 7239 4: for= node values, or X-Forwarded-For's list, left (client) to right (last proxy) */
function forwardedChain(req: http.IncomingMessage): string[] | null {
  const fwd = req.headers.forwarded;
  if (typeof fwd === 'string' && fwd.length > 0) {
    const out: string[] = [];
    for (const element of fwd.split(',')) {
      let found: string | null = null;
      for (const pair of element.split(';')) {
        const eq = pair.indexOf('=');
        if (eq < 0) continue;
        if (pair.slice(0, eq).trim().toLowerCase() !== 'for') continue;
        let v = pair.slice(eq + 1).trim();
        if (v.startsWith('"') && v.endsWith('"') && v.length >= 2) v = v.slice(1, -1);
        // RFC 7239 6: "[v6]:port", "v4:port", "_obfuscated", "unknown"
        if (v.startsWith('[')) v = v.slice(1, v.indexOf(']') > 0 ? v.indexOf(']') : v.length);
        else if (v.split(':').length === 2) v = v.slice(0, v.indexOf(':'));
        found = v;
      }
      if (found === null) return null;
      out.push(found);
    }
    return out;
  }
  const xff = req.headers['x-forwarded-for'];
  if (typeof xff === 'string' && xff.length > 0) return xff.split(',').map((s) => s.trim());
  return null;
}

/**
 * The client's address: the socket's peer, unless that peer is a trusted proxy; then the right-
 * most address of the forwarded chain that is not itself a trusted proxy (each proxy appends
 * what it saw; everything left of the last untrusted hop is the client's own claim). A trusted
 * proxy that sends no forwarded header is itself the client. undefined: the chain is unusable.
 */
export function clientAddress(socketAddress: string, req: http.IncomingMessage, trusted: CidrSet | null): string | undefined {
  if (trusted === null || !trusted.has(socketAddress)) return socketAddress;
  const chain = forwardedChain(req);
  if (chain === null) return socketAddress;
  if (chain.length === 0 || chain.length > 32) return undefined;
  for (let i = chain.length - 1; i >= 0; i--) {
    const ip = ipLiteral(chain[i]!);
    if (ip === null || isIP(ip) === 0) return undefined;
    const a = canonicalAddress(ip);
    if (!trusted.has(a) || i === 0) return a;
  }
  return undefined;
}

/** RFC 7118 4.1 / RFC 6455 4.2.1: the offered subprotocols include "sip" (token, case-sensitive) */
function offersSip(header: string | undefined): boolean {
  if (header === undefined) return false;
  return header.split(',').some((p) => p.trim() === 'sip');
}

const KEY_RE = /^[+/0-9A-Za-z]{22}==$/;
/** after a protocol error or a refused close, the peer gets this long to answer the close frame */
const CLOSE_GRACE_MS = 1000;

const STATUS_TEXT: Readonly<Record<number, string>> = { 400: 'Bad Request', 403: 'Forbidden', 426: 'Upgrade Required', 431: 'Request Header Fields Too Large' };

function refuseHttp(socket: net.Socket, status: number, extra: readonly string[] = []): void {
  if (!socket.writable) { socket.destroy(); return; }
  try {
    socket.end([`HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}`, 'Connection: close', 'Content-Length: 0', ...extra, '', ''].join('\r\n'));
  } catch { /* closed meanwhile */ }
  // a peer that never reads must not keep the socket
  setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
}

export function createWsUpgrade(transport: 'ws' | 'wss', s: WsSettings): StreamUpgrade {
  const origins = new Set(s.origins.map((o) => o.toLowerCase().replace(/\/+$/, '')));
  const wss = new WebSocketServer({
    noServer: true,
    clientTracking: false,
    perMessageDeflate: false,
    maxPayload: s.maxMessageBytes,
    // RFC 7118 4.1: the server's answer names the subprotocol it speaks
    handleProtocols: (offered) => (offered.has('sip') ? 'sip' : false),
  });
  const server = http.createServer({
    maxHeaderSize: s.maxUpgradeBytes,
    // ours below covers the whole upgrade; node's are backstops
    requestTimeout: s.upgradeTimeoutMs + 1000,
    headersTimeout: s.upgradeTimeoutMs + 1000,
    keepAliveTimeout: 1,
  });
  server.on('error', () => undefined);

  interface Pending {
    readonly socket: net.Socket;
    readonly remote: Endpoint;
    readonly done: (r: WsAcceptResult) => void;
    readonly timer: NodeJS.Timeout;
  }
  const pending = new Map<net.Socket, Pending>();
  const settle = (socket: net.Socket, r: WsAcceptResult): void => {
    const p = pending.get(socket);
    if (p === undefined) return;
    pending.delete(socket);
    clearTimeout(p.timer);
    p.done(r);
  };
  const refuse = (socket: net.Socket, reason: WsUpgradeReason, status: number, extra: readonly string[] = []): void => {
    refuseHttp(socket, status, extra);
    settle(socket, { ok: false, reason });
  };

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    // plain HTTP on a SIP WebSocket port: nothing is served here
    const socket = req.socket;
    res.shouldKeepAlive = false;
    res.writeHead(426, { Upgrade: 'websocket', Connection: 'close', 'Content-Length': '0' });
    res.end();
    setTimeout(() => socket.destroy(), CLOSE_GRACE_MS).unref();
    settle(socket, { ok: false, reason: 'not_websocket' });
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
    const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
    if (!pending.has(socket)) { socket.destroy(); return; }
    if (err.code === 'ECONNRESET' || !socket.writable) { socket.destroy(); settle(socket, { ok: false, reason: 'reset' }); return; }
    refuse(socket, tooLarge ? 'too_large' : 'bad_request', tooLarge ? 431 : 400);
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    const p = pending.get(socket);
    if (p === undefined) { socket.destroy(); return; }
    // RFC 6455 4.2.1
    if (req.method !== 'GET' || (req.headers.upgrade ?? '').toLowerCase() !== 'websocket') { refuse(socket, 'not_websocket', 426, ['Upgrade: websocket']); return; }
    const key = req.headers['sec-websocket-key'];
    if (typeof key !== 'string' || !KEY_RE.test(key) || req.headers['sec-websocket-version'] !== '13') {
      refuse(socket, 'bad_handshake', 400, ['Sec-WebSocket-Version: 13']);
      return;
    }
    // RFC 7118 4.1
    if (!offersSip(req.headers['sec-websocket-protocol'])) { refuse(socket, 'no_subprotocol', 400); return; }
    // RFC 6455 10.2
    const origin = req.headers.origin;
    if (origin !== undefined && !origins.has(origin.toLowerCase().replace(/\/+$/, ''))) { refuse(socket, 'origin_refused', 403); return; }
    const client = clientAddress(p.remote.address, req, s.trustedProxies);
    if (client === undefined) { refuse(socket, 'forwarded_invalid', 400); return; }
    if (client !== p.remote.address && s.refuse?.(client) === true) { refuse(socket, 'banned', 403); return; }
    try {
      wss.handleUpgrade(req, socket, head, (ws) => {
        if (!pending.has(socket)) { ws.terminate(); return; }
        settle(socket, { ok: true, client, start: (ev) => channel(ws, ev) });
      });
    } catch {
      socket.destroy();
      settle(socket, { ok: false, reason: 'bad_handshake' });
    }
  });

  function channel(ws: WebSocket, ev: WsChannelEvents): WsChannel {
    ws.binaryType = 'nodebuffer';
    let idleMs = s.idleTimeoutMs;
    let lastSip = performance.now();
    let awaitingPong = false;
    let ended = false;
    const end = (code: number, e?: TransportEvent): void => {
      if (ended) return;
      ended = true;
      clearInterval(ticker);
      if (e !== undefined) ev.event(e);
      try { ws.close(code); } catch { /* already closing */ }
      setTimeout(() => ws.terminate(), CLOSE_GRACE_MS).unref();
    };
    const ticker = setInterval(() => {
      if (awaitingPong) { ended = true; clearInterval(ticker); ev.event('conn_idle_timeout'); ws.terminate(); return; }
      if (performance.now() - lastSip >= idleMs) { end(1001, 'conn_idle_timeout'); return; }
      awaitingPong = true;
      try { ws.ping(); } catch { /* closing */ }
    }, s.pingIntervalMs);
    ticker.unref();
    ws.on('pong', () => {
      awaitingPong = false;
      ev.event('keepalive_pong');
    });
    ws.on('message', (data: Buffer | Buffer[] | ArrayBuffer) => {
      if (ended) return;
      const now = performance.now();
      lastSip = now;
      const bytes = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
      ev.message(bytes, now);
    });
    ws.on('error', (err: Error & { code?: string }) => {
      // ws has already sent its close frame (1009 too big, 1002 protocol, 1007 bad UTF-8)
      if (ended) return;
      ended = true;
      clearInterval(ticker);
      ev.event(err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? 'conn_oversize' : 'conn_framing_error');
      setTimeout(() => ws.terminate(), CLOSE_GRACE_MS).unref();
    });
    ws.on('close', () => {
      ended = true;
      clearInterval(ticker);
    });
    return {
      send(bytes) {
        if (ended || ws.readyState !== ws.OPEN) return false;
        lastSip = performance.now();
        try {
          ws.send(bytes, { binary: !isUtf8(bytes) });
          return true;
        } catch {
          return false;
        }
      },
      buffered: () => ws.bufferedAmount,
      close: (code = 1001) => end(code),
      holdOpen(ms) {
        if (Number.isFinite(ms)) idleMs = Math.max(s.idleTimeoutMs, Math.min(Math.round(ms), 86_400_000));
      },
    };
  }

  return {
    transport,
    accept(socket, remote, done) {
      const timer = setTimeout(() => {
        socket.destroy();
        settle(socket, { ok: false, reason: 'timeout' });
      }, s.upgradeTimeoutMs);
      timer.unref();
      pending.set(socket, { socket, remote, done, timer });
      socket.once('close', () => settle(socket, { ok: false, reason: 'reset' }));
      server.emit('connection', socket);
    },
    upgrading: () => pending.size,
    close() {
      for (const p of [...pending.values()]) { p.socket.destroy(); settle(p.socket, { ok: false, reason: 'reset' }); }
      server.close();
      wss.close();
    },
  };
}
