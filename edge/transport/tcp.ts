// SIP over TCP (RFC 3261 18.3) with the caps an internet-facing listener needs: total and
// per-source connection limits, a per-message deadline (slowloris), an idle deadline, a
// bounded write queue, and framing that closes the stream on the first error.
//
// Capacity by source class (issue 12). A flat total cap is a prize: 330 addresses x 32 CRLF-
// pinging connections (about 313 IPv6 /64s) held all 10,000 slots and every new connection,
// the carrier's and the PBX's included, was refused. So the edge hands the listener a classifier
// (source address -> inside | trusted | promoted | unknown; the transport still reads no SIP
// header) and capacity is reserved from the top down: unknown sources together may hold at most
// `unknownPercent` of maxConnections, unknown and promoted ones together `promotedPercent`,
// trusted and inside sources everything. When a connection of a higher class finds no room, the
// least recently used connection of the lowest class present below it is closed for it (LRU by
// last SIP message: CRLF keepalives do not count as use); an unknown source at its share is
// refused, never given someone else's slot. A source's class is looked up again at most once a
// second as it sends messages, and before it is chosen for eviction, so a phone promoted after
// it connected is counted where it belongs.
//
// TLS (RFC 3261 26.2) is this same stream transport once its handshake is done: with
// `secure` (edge/transport/tls.ts) an admitted connection holds its slot through the handshake
// and is framed only after it; outbound connections are TLS clients. The listener then names
// itself and its endpoints "tls".
//
// Connections are identified by a process-wide numeric connId carried in Endpoint.connId:
// responses go back on the connection the request came in on (RFC 3261 18.2.2), and
// outbound connections opened towards an upstream are framed and handed up the same way so
// that the upstream's responses and requests come back with their own connId.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Endpoint } from '../sip/types';
import { addressFamily, canonicalAddress, formatHostPort, ipv6Prefix, isIP } from '../net/address';
import { StreamFramer } from './framing';
import type { StreamSecurity } from './tls';
import type { StreamUpgrade, WsChannel } from './ws';
import type { AdmissionResult, Inbound, Listener, ListenerSpec, SourceClass, TransportEvent, TransportHooks } from './types';

export interface TcpOptions {
  readonly maxMessageBytes: number;
  /** inbound connections in total (outbound connections to upstreams are not capped by this) */
  readonly maxConnections: number;
  /** inbound connections per source address (IPv6: per source prefix, see ipv6SourcePrefix) */
  readonly maxConnectionsPerSource: number;
  /** from the first byte of a message to its last (slowloris guard) */
  readonly messageTimeoutMs: number;
  /** no byte in either direction for this long closes the connection */
  readonly idleTimeoutMs: number;
  /** header section limit; defaults to maxMessageBytes */
  readonly maxHeaderBytes?: number;
  /** IPv6 sources are counted per prefix of this length for maxConnectionsPerSource (default 64:
   *  one subscriber usually holds a whole /64, RFC 6177) */
  readonly ipv6SourcePrefix?: number;
  /** bytes allowed to wait in one connection's write queue before the peer counts as not reading
   *  and the connection is dropped (default 1 MiB) */
  readonly maxWriteQueueBytes?: number;
  /** IPv6 binds: refuse IPv4-mapped peers. Default true for "::", false otherwise. */
  readonly ipv6Only?: boolean;
  /** the edge's view of a source address (never a SIP header). Without one every source is
   *  alike and the class shares below do not apply. */
  readonly classify?: (address: string) => SourceClass;
  /** per cent of maxConnections unknown sources may hold together (default 80) */
  readonly unknownPercent?: number;
  /** per cent of maxConnections unknown and promoted sources may hold together (default 90) */
  readonly promotedPercent?: number;
  /** the gate at accept: a banned source's connection is closed before it costs a slot or a
   *  TLS handshake (the edge passes its local ban cache; never a store round trip) */
  readonly refuse?: (address: string) => boolean;
  /** TLS: the handshake on accepted connections and the client side of outbound ones */
  readonly secure?: StreamSecurity;
  /** TLS with mutual TLS: is this the address of a certificate-trusted peer (tls.peers
   *  addresses)? Such a connection is admitted into trusted capacity before its handshake, on
   *  probation: it stays only if its certificate matches a peer (onPeerCertificate says true);
   *  otherwise it is closed, having held a reserved slot it had no claim to. Without this, a flood
   *  of unknown connections fills the unknown share and the peer, still unknown while its
   *  handshake runs, is refused before it can show its certificate. */
  readonly probation?: (address: string) => boolean;
  /** WebSocket (RFC 7118, edge/transport/ws.ts): the HTTP upgrade on admitted connections (after
   *  the TLS handshake for wss), then WebSocket messages instead of Content-Length framing */
  readonly websocket?: StreamUpgrade;
}

/** classes by rank, lowest first: capacity is reserved from the top down */
const CLASSES: readonly SourceClass[] = ['unknown', 'promoted', 'trusted', 'inside'];
const RANK: Readonly<Record<SourceClass, number>> = { unknown: 0, promoted: 1, trusted: 2, inside: 3 };
/** a connection's class is looked up again at most this often as it carries messages */
const RECLASSIFY_MS = 1000;
/** how many eviction candidates one admission may re-classify (bounds the work per accept) */
const MAX_RECLASSIFY_PER_ADMISSION = 64;

let nextConnId = 1;
/** unique per process, across listeners, so a connId alone names a connection */
function allocConnId(): number {
  const id = nextConnId;
  nextConnId = nextConnId >= Number.MAX_SAFE_INTEGER ? 1 : nextConnId + 1;
  return id;
}

const CRLF = Buffer.from('\r\n', 'latin1');
const DEFAULT_WRITE_QUEUE = 1024 * 1024;
/** holdOpen ceiling: the largest idleTimeoutMs the config accepts */
const MAX_HOLD_MS = 86_400_000;

interface Conn {
  readonly id: number;
  /** TLS: the raw socket during the handshake, then the TLS socket */
  socket: net.Socket;
  readonly framer: StreamFramer;
  /** WebSocket: the client address may be a forwarded one once the upgrade is read */
  remote: Endpoint;
  /** WebSocket: the upgraded channel; writes and idle handling go through it */
  ws: WsChannel | null;
  /** "address|port" of the peer, for reuse by send() */
  readonly peerKey: string;
  /** per-source cap key; null for outbound connections */
  readonly sourceKey: string | null;
  connected: boolean;
  /** outbound: bytes written before the connection was established */
  queue: Buffer[] | null;
  queuedBytes: number;
  closing: boolean;
  closed: boolean;
  msgTimer: NodeJS.Timeout | null;
  /** framer.messages when msgTimer was armed: a completed message restarts the deadline */
  msgTimerAt: number;
  /** inbound: rank of the source class it is counted under (-1 for outbound) */
  rank: number;
  /** performance.now() when the class was last looked up */
  classAt: number;
  /** its client certificate matched a trusted peer: never counted below trusted, whatever its
   *  address classifies as */
  certTrusted: boolean;
}

/** errno codes of a failed connect that are about the peer or the path to it (the rest, such as
 *  EMFILE or EADDRNOTAVAIL, are about this host) */
const REMOTE_CONNECT_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN', 'ETIMEDOUT']);

function connectFailureCause(code: string | undefined): 'remote' | 'local' {
  if (code === undefined) return 'local';
  // TLS: a certificate that does not verify, or a handshake the peer refused, is about the peer
  if (/^ERR_TLS_|^ERR_SSL_|CERT|SIGNATURE|SELF_SIGNED|ISSUER/.test(code)) return 'remote';
  return REMOTE_CONNECT_ERRORS.has(code) ? 'remote' : 'local';
}

/** TLS toward an upstream: after a failed connect, no new one to that peer for this long,
 *  doubling per failure up to the maximum, reset by a connection that gets through (each attempt
 *  costs a handshake on both sides; requests meanwhile fail at once and the proxy fails over) */
const RECONNECT_MIN_MS = 250;
const RECONNECT_MAX_MS = 30_000;
const MAX_BACKOFF_ENTRIES = 10_000;

export async function createTcpListener(spec: ListenerSpec, hooks: TransportHooks, opts: TcpOptions): Promise<Listener> {
  const family = isIP(spec.host);
  if (family === 0) throw new Error(`listen_host_not_ip: ${spec.host}`);
  const ipv6Only = family === 6 ? (opts.ipv6Only ?? canonicalAddress(spec.host) === '::') : false;
  const maxWriteQueue = opts.maxWriteQueueBytes ?? DEFAULT_WRITE_QUEUE;
  const secure = opts.secure;
  const websocket = opts.websocket;
  const transport = websocket?.transport ?? secure?.transport ?? 'tcp';
  const v6Prefix = opts.ipv6SourcePrefix ?? 64;

  const conns = new Map<number, Conn>();
  const byPeer = new Map<string, Set<number>>();
  const perSource = new Map<string, number>();
  let inboundCount = 0;
  /** TLS: peers ("address|port") whose last connect failed: no new attempt before `until` */
  const backoff = new Map<string, { until: number; delay: number }>();
  const classify = opts.classify;
  const pct = (p: number | undefined, def: number): number => Math.min(100, Math.max(0, p ?? def));
  // per rank: how many inbound connections may be held by sources of this class and below
  const capUpTo = classify === undefined
    ? [opts.maxConnections, opts.maxConnections, opts.maxConnections, opts.maxConnections]
    : [Math.floor(opts.maxConnections * pct(opts.unknownPercent, 80) / 100),
      Math.floor(opts.maxConnections * Math.max(pct(opts.unknownPercent, 80), pct(opts.promotedPercent, 90)) / 100),
      opts.maxConnections, opts.maxConnections];
  // inbound connections per rank, least recently used first (Map insertion order; a message
  // moves its connection to the end)
  const byRank: Array<Map<number, Conn>> = CLASSES.map(() => new Map());
  const countUpTo = (rank: number): number => {
    let n = 0;
    for (let r = 0; r <= rank; r++) n += byRank[r]!.size;
    return n;
  };
  let closed = false;
  let closePromise: Promise<void> | null = null;
  let onDrained: (() => void) | null = null;

  const server = net.createServer({ noDelay: true, pauseOnConnect: false });

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen({ host: spec.host, port: spec.port, ipv6Only, exclusive: true }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  // after listen, errors (EMFILE on accept ...) must not crash the process
  server.on('error', () => undefined);

  const addr = server.address() as net.AddressInfo;
  const local = { address: canonicalAddress(addr.address), port: addr.port, family };
  const id = `${transport}:${formatHostPort(local.address, local.port)}`;

  const event = (e: TransportEvent, source?: Endpoint): void => hooks.onEvent?.(e, listener, source);

  function sourceKeyOf(address: string): string {
    return addressFamily(address) === 6 ? ipv6Prefix(address, v6Prefix) : address;
  }

  /** `handshaking`: TLS accepted, handshake running: the connection holds its slot (and counts
   *  for the caps and eviction) but its socket is not read until attach() */
  function setup(socket: net.Socket, remote: Endpoint, outbound: boolean, sourceKey: string | null, rank = -1, handshaking = false): Conn {
    const conn: Conn = {
      id: remote.connId!,
      socket,
      framer: new StreamFramer({ maxMessageBytes: opts.maxMessageBytes, maxHeaderBytes: opts.maxHeaderBytes }),
      remote,
      ws: null,
      peerKey: `${remote.address}|${remote.port}`,
      sourceKey,
      // bytes for a connection still connecting (outbound) or in its handshake wait in the queue
      connected: !outbound && !handshaking,
      queue: outbound || handshaking ? [] : null,
      queuedBytes: 0,
      closing: false,
      closed: false,
      msgTimer: null,
      msgTimerAt: 0,
      rank,
      classAt: performance.now(),
      certTrusted: false,
    };
    conns.set(conn.id, conn);
    if (rank >= 0) byRank[rank]!.set(conn.id, conn);
    let set = byPeer.get(conn.peerKey);
    if (set === undefined) byPeer.set(conn.peerKey, (set = new Set()));
    set.add(conn.id);
    if (handshaking) {
      socket.on('error', () => destroy(conn));
      socket.on('close', () => cleanup(conn));
      return conn;
    }
    attach(conn);
    return conn;
  }

  function attach(conn: Conn): void {
    const socket = conn.socket;
    socket.setNoDelay(true);
    // Node resets this on every read and write: exactly "no traffic either way"
    socket.setTimeout(opts.idleTimeoutMs);
    socket.on('timeout', () => {
      event('conn_idle_timeout', conn.remote);
      destroy(conn);
    });
    socket.on('data', (chunk: Buffer) => onData(conn, chunk));
    // RFC 3261 18.3 gives no meaning to a half-close; the peer is gone for our purposes
    socket.on('end', () => destroy(conn));
    socket.on('error', () => destroy(conn));
    socket.on('close', () => cleanup(conn));
  }

  function onData(conn: Conn, chunk: Buffer): void {
    if (conn.closing || conn.closed) return;
    const receivedAt = performance.now();
    conn.framer.push(chunk);
    for (;;) {
      const r = conn.framer.next();
      if (r === null) break;
      if (r.kind === 'pong') {
        // RFC 5626 3.5.1: one CRLF answers a CRLFCRLF ping
        event('keepalive_pong', conn.remote);
        write(conn, CRLF);
        continue;
      }
      if (r.kind === 'error') {
        if (r.reason === 'message_too_large') {
          event('conn_oversize', conn.remote);
          if (r.head !== undefined) hooks.onOversize?.(r.head, conn.remote);
        } else {
          event('conn_framing_error', conn.remote);
        }
        // flush what the caller wrote (a 413 or 400), then close
        endThenDestroy(conn);
        return;
      }
      if (conn.rank >= 0) touch(conn, receivedAt);
      hooks.onMessage({ bytes: r.bytes, source: conn.remote, receivedAt } satisfies Inbound);
      if (conn.closing || conn.closed) return;
    }
    armMessageTimer(conn);
  }

  /** a SIP message arrived: most recently used now; look the class up again now and then */
  function touch(conn: Conn, now: number): void {
    const m = byRank[conn.rank]!;
    m.delete(conn.id);
    if (classify !== undefined && now - conn.classAt >= RECLASSIFY_MS) {
      conn.classAt = now;
      conn.rank = rankOf(conn);
    }
    byRank[conn.rank]!.set(conn.id, conn);
  }

  /** the class rank of an inbound connection now: its address's, or trusted for a certificate-trusted peer */
  function rankOf(c: Conn): number {
    const r = RANK[classify!(c.remote.address)];
    return c.certTrusted && r < RANK.trusted ? RANK.trusted : r;
  }

  /** the least recently used connection of the lowest class below `rank`, re-classified first
   *  (a source promoted since it connected is not evicted as unknown); null when none */
  function victimBelow(rank: number): Conn | null {
    let budget = MAX_RECLASSIFY_PER_ADMISSION;
    for (let r = 0; r < rank; r++) {
      const m = byRank[r]!;
      for (const c of m.values()) {
        if (classify === undefined || budget <= 0) return c;
        budget--;
        const now = performance.now();
        c.classAt = now;
        const actual = rankOf(c);
        if (actual === r) return c;
        // counted in the wrong class: move it and look further (the Map iterator is live and
        // skips what we delete)
        m.delete(c.id);
        c.rank = actual;
        byRank[actual]!.set(c.id, c);
        if (actual < r) return c;
      }
    }
    return null;
  }

  function admissionEvent(cls: SourceClass, result: AdmissionResult): void {
    hooks.onAdmission?.(cls, result, listener);
  }

  /** connected (outbound) or through its handshake: what waited in the queue goes out */
  function established(conn: Conn): void {
    if (conn.closed) return;
    conn.connected = true;
    const q = conn.queue ?? [];
    conn.queue = null;
    conn.queuedBytes = 0;
    for (const b of q) if (!write(conn, b)) return;
  }

  function armMessageTimer(conn: Conn): void {
    const f = conn.framer;
    if (!f.midMessage) {
      if (conn.msgTimer !== null) { clearTimeout(conn.msgTimer); conn.msgTimer = null; }
      return;
    }
    if (conn.msgTimer !== null && conn.msgTimerAt === f.messages) return; // same message still arriving
    if (conn.msgTimer !== null) clearTimeout(conn.msgTimer);
    conn.msgTimerAt = f.messages;
    conn.msgTimer = setTimeout(() => {
      conn.msgTimer = null;
      event('conn_message_timeout', conn.remote);
      destroy(conn);
    }, opts.messageTimeoutMs);
    conn.msgTimer.unref();
  }

  function write(conn: Conn, bytes: Buffer): boolean {
    if (conn.closing || conn.closed) return false;
    if (!conn.connected) {
      if (conn.queuedBytes + bytes.length > maxWriteQueue) return false;
      conn.queue!.push(bytes);
      conn.queuedBytes += bytes.length;
      return true;
    }
    if (conn.ws !== null) {
      if (conn.ws.buffered() + bytes.length > maxWriteQueue) { destroy(conn); return false; }
      return conn.ws.send(bytes);
    }
    if (conn.socket.writableLength + bytes.length > maxWriteQueue) {
      // the peer does not read: holding its bytes would let it pin our memory
      destroy(conn);
      return false;
    }
    try {
      conn.socket.write(bytes);
      return true;
    } catch {
      destroy(conn);
      return false;
    }
  }

  function endThenDestroy(conn: Conn): void {
    if (conn.closing || conn.closed) return;
    conn.closing = true;
    if (conn.msgTimer !== null) { clearTimeout(conn.msgTimer); conn.msgTimer = null; }
    if (conn.ws !== null) { conn.ws.close(1001); return; }
    conn.socket.end(() => conn.socket.destroy());
    // a peer that never reads would keep the socket alive; the idle timer still applies
  }

  function destroy(conn: Conn): void {
    if (conn.closed) return;
    conn.closing = true;
    conn.socket.destroy();
    cleanup(conn);
  }

  function cleanup(conn: Conn): void {
    if (conn.closed) return;
    conn.closed = true;
    conn.closing = true;
    if (conn.msgTimer !== null) { clearTimeout(conn.msgTimer); conn.msgTimer = null; }
    conns.delete(conn.id);
    const set = byPeer.get(conn.peerKey);
    if (set !== undefined) {
      set.delete(conn.id);
      if (set.size === 0) byPeer.delete(conn.peerKey);
    }
    if (conn.rank >= 0) byRank[conn.rank]!.delete(conn.id);
    if (conn.sourceKey !== null) {
      inboundCount--;
      const n = (perSource.get(conn.sourceKey) ?? 1) - 1;
      if (n <= 0) perSource.delete(conn.sourceKey);
      else perSource.set(conn.sourceKey, n);
    }
    if (conn.queuedBytes > 0) event('send_error', conn.remote);
    conn.queue = null;
    conn.queuedBytes = 0;
    event('conn_closed', conn.remote);
    if (closed && conns.size === 0 && onDrained !== null) onDrained();
  }

  server.on('connection', (socket: net.Socket) => {
    const address = canonicalAddress(socket.remoteAddress ?? '');
    const port = socket.remotePort ?? 0;
    socket.on('error', () => undefined); // a reset before we finish accepting must not crash
    if (closed || address === '' || port === 0) {
      socket.destroy();
      return;
    }
    const probe: Endpoint = { transport, address, port, listenerId: id };
    if (opts.refuse?.(address) === true) {
      socket.destroy();
      event('conn_rejected_banned', probe);
      return;
    }
    let cls: SourceClass = classify === undefined ? 'unknown' : classify(address);
    // RFC 5922 / issue 14: a certificate-trusted peer's address takes trusted capacity before
    // its certificate is seen (on probation, decided when the handshake ends)
    const probation = secure !== undefined && classify !== undefined && RANK[cls] < RANK.trusted && opts.probation?.(address) === true;
    if (probation) cls = 'trusted';
    const rank = RANK[cls];
    const sourceKey = sourceKeyOf(address);
    const have = perSource.get(sourceKey) ?? 0;
    if (have >= opts.maxConnectionsPerSource) {
      socket.destroy();
      event('conn_rejected_source_cap', probe);
      admissionEvent(cls, 'rejected_source_cap');
      return;
    }
    // room for this class: its share (counting the classes below it) and the total; a higher
    // class makes room by closing the least recently used connection of the lowest class present
    while (countUpTo(rank) >= capUpTo[rank]! || inboundCount >= opts.maxConnections) {
      const victim = rank > 0 ? victimBelow(rank) : null;
      if (victim === null) {
        socket.destroy();
        const total = inboundCount >= opts.maxConnections;
        event(total ? 'conn_rejected_total_cap' : 'conn_rejected_class_cap', probe);
        admissionEvent(cls, total ? 'rejected_total_cap' : 'rejected_class_cap');
        return;
      }
      event('conn_evicted', victim.remote);
      admissionEvent(CLASSES[victim.rank]!, 'evicted');
      destroy(victim);
    }
    perSource.set(sourceKey, have + 1);
    inboundCount++;
    const remote: Endpoint = { ...probe, connId: allocConnId() };
    admissionEvent(cls, probation ? 'probation' : 'accepted');
    if (secure === undefined && websocket === undefined) {
      setup(socket, remote, false, sourceKey, rank);
      event('conn_opened', remote);
      return;
    }
    const conn = setup(socket, remote, false, sourceKey, rank, true);
    if (secure === undefined) { upgrade(conn); return; }
    secure.accept(socket, sourceKey, (r) => {
      hooks.onHandshake?.(r.ok ? 'ok' : r.reason, listener, remote);
      if (!r.ok) {
        if (probation) admissionEvent('trusted', 'probation_failed');
        destroy(conn);
        return;
      }
      if (conn.closed) { r.socket.destroy(); return; }
      conn.socket = r.socket;
      const peerTrusted = r.peer !== null && hooks.onPeerCertificate?.(remote, r.peer, listener) === true;
      if (probation) {
        admissionEvent('trusted', peerTrusted ? 'probation_verified' : 'probation_failed');
        if (!peerTrusted) { destroy(conn); return; }
      }
      if (peerTrusted && conn.rank < RANK.trusted) {
        // a certificate-trusted peer from an address not listed for it: counted as trusted from
        // now on (not evicted for a promoted or trusted-by-address newcomer)
        byRank[conn.rank]!.delete(conn.id);
        conn.rank = RANK.trusted;
        byRank[conn.rank]!.set(conn.id, conn);
      }
      conn.certTrusted = peerTrusted;
      if (websocket !== undefined) {
        r.socket.on('error', () => destroy(conn));
        r.socket.on('close', () => cleanup(conn));
        upgrade(conn);
        return;
      }
      attach(conn);
      event('conn_opened', remote);
      established(conn);
    });
  });

  /** WebSocket: the HTTP upgrade (the connection keeps its slot meanwhile), then messages are
   *  WebSocket messages; the edge never dials a WebSocket peer (openOutbound) */
  function upgrade(conn: Conn): void {
    websocket!.accept(conn.socket, conn.remote, (r) => {
      hooks.onUpgrade?.(r.ok ? 'ok' : r.reason, listener, conn.remote);
      if (!r.ok) {
        // the refusal (400/403/426/431) is on its way out: ws.ts cuts the socket after a short
        // grace, and its 'close' frees the slot; a socket already gone is freed now
        conn.closing = true;
        if (conn.socket.destroyed) cleanup(conn);
        return;
      }
      if (conn.closed) return;
      // behind a trusted proxy the client's address is the source for every policy stage
      if (r.client !== conn.remote.address) conn.remote = { ...conn.remote, address: r.client };
      conn.ws = r.start({
        message: (bytes, receivedAt) => {
          if (conn.closing || conn.closed) return;
          if (conn.rank >= 0) touch(conn, receivedAt);
          hooks.onMessage({ bytes, source: conn.remote, receivedAt } satisfies Inbound);
        },
        event: (e) => event(e, conn.remote),
      });
      event('conn_opened', conn.remote);
      established(conn);
    });
  }

  function openOutbound(address: string, port: number): Conn | null {
    if (websocket !== undefined) return null;
    const remote: Endpoint = { transport, address, port, connId: allocConnId(), listenerId: id };
    const destFamily = addressFamily(address);
    let host = address;
    if (destFamily !== family) {
      if (family === 6 && destFamily === 4 && !ipv6Only) host = `::ffff:${address}`;
      else return null;
    }
    const wildcard = local.address === '0.0.0.0' || local.address === '::';
    let socket: net.Socket;
    try {
      socket = secure !== undefined
        ? secure.connect({ host, port, ...(wildcard ? {} : { localAddress: addr.address }) })
        : net.connect({ host, port, noDelay: true, ...(wildcard ? {} : { localAddress: addr.address }) });
    } catch {
      return null;
    }
    const conn = setup(socket, remote, true, null);
    socket.once('error', (err: NodeJS.ErrnoException) => {
      if (conn.connected) return;
      if (secure !== undefined) {
        const prev = backoff.get(conn.peerKey);
        const delay = prev === undefined ? RECONNECT_MIN_MS : Math.min(RECONNECT_MAX_MS, prev.delay * 2);
        if (backoff.size >= MAX_BACKOFF_ENTRIES) backoff.clear();
        backoff.set(conn.peerKey, { until: performance.now() + delay, delay });
      }
      hooks.onConnectFailed?.(remote, connectFailureCause(err.code), listener);
    });
    // TLS: bytes may go out only once the upstream's certificate has been verified
    socket.once(secure !== undefined ? 'secureConnect' : 'connect', () => {
      backoff.delete(conn.peerKey);
      established(conn);
    });
    event('conn_opened', remote);
    return conn;
  }

  const listener: Listener = {
    id,
    spec,
    local,
    family,
    send(dest: Endpoint, bytes: Buffer, mayConnect = false): boolean {
      if (dest.connId !== undefined) {
        const c = conns.get(dest.connId);
        if (c !== undefined && !c.closing) return write(c, bytes) || fail(dest);
      }
      // RFC 3261 18.2.2: a response goes back on the connection the request came in on; opening
      // another one is the caller's decision (mayConnect), never a default
      if (!mayConnect || closed) return fail(dest);
      const address = canonicalAddress(dest.address);
      if (addressFamily(address) === 0 || !Number.isInteger(dest.port) || dest.port <= 0 || dest.port > 65535) return fail(dest);
      const set = byPeer.get(`${address}|${dest.port}`);
      if (set !== undefined) {
        // newest first: an older connection may be the one that is about to time out
        const ids = [...set];
        for (let i = ids.length - 1; i >= 0; i--) {
          const c = conns.get(ids[i]);
          if (c !== undefined && !c.closing) return write(c, bytes) || fail(dest);
        }
      }
      const b = backoff.get(`${address}|${dest.port}`);
      if (b !== undefined && performance.now() < b.until) return fail(dest);
      const c = openOutbound(address, dest.port);
      if (c === null) return fail(dest);
      return write(c, bytes) || fail(dest);
    },
    isOpen(connId: number): boolean {
      const c = conns.get(connId);
      return c !== undefined && !c.closing;
    },
    connections(): number {
      return conns.size;
    },
    holdOpen(connId: number, ms: number): void {
      const c = conns.get(connId);
      if (c === undefined || c.closing || !Number.isFinite(ms)) return;
      if (c.ws !== null) { c.ws.holdOpen(ms); return; }
      // the same Node idle timer as for every connection (re-armed by each read and write),
      // only longer
      c.socket.setTimeout(Math.max(opts.idleTimeoutMs, Math.min(Math.round(ms), MAX_HOLD_MS)));
    },
    close(graceMs = 0): Promise<void> {
      if (closePromise !== null) return closePromise;
      closed = true;
      websocket?.close();
      const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
      const drained = new Promise<void>((resolve) => {
        onDrained = resolve;
        if (conns.size === 0) resolve();
      });
      const finish = (): void => {
        for (const c of [...conns.values()]) destroy(c);
      };
      let t: NodeJS.Timeout | null = null;
      if (graceMs > 0) {
        // what was written last (the 503s of a shutdown) goes out before the FIN; a peer that
        // does not close its side in time is cut off
        for (const c of [...conns.values()]) endThenDestroy(c);
        t = setTimeout(finish, graceMs);
      } else finish();
      closePromise = Promise.all([serverClosed, drained]).then(() => {
        if (t !== null) clearTimeout(t);
      });
      return closePromise;
    },
  };

  function fail(dest: Endpoint): false {
    event('send_error', dest);
    return false;
  }

  return listener;
}
