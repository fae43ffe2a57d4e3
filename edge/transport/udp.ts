// SIP over UDP (RFC 3261 18.1/18.2): one datagram is one message. Bytes go up untouched with a
// canonical source address; the parser decides what they mean.
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { endianness } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import type { Endpoint } from '../sip/types';
import { addressFamily, canonicalAddress, formatHostPort, ipToBytes, isIP } from '../net/address';
import type { Inbound, Listener, ListenerSpec, TransportHooks } from './types';
import { allocRing, RingReader, RingWriter } from './ring';
import { IN_HEAD, OUT_HEAD, SEND_ERRORS, type UdpIoInit, type UdpIoReply } from './udp-io';

export interface UdpOptions {
  /** datagrams larger than this are counted (datagram_oversize) but still handed up: the parser
   *  answers 413 (RFC 3261 18.1.1 keeps UDP messages under the MTU; bigger ones are suspicious) */
  readonly maxDatagramBytes: number;
  /** socket receive buffer to ask for; failure is ignored (the kernel caps it at rmem_max) */
  readonly recvBufferBytes?: number;
  /** IPv6 sockets: refuse IPv4-mapped traffic. Default: true for "::" (so that a udp4 listener on
   *  the same port can coexist), false for other IPv6 binds. */
  readonly ipv6Only?: boolean;
  /** run the socket's syscalls on a thread of their own (udp-io.ts), default true; false keeps
   *  them on the event loop (one thread fewer, about a third more event-loop time per call) */
  readonly ioThread?: boolean;
  /** most datagrams one turn of the event loop takes from the I/O thread (default 256) */
  readonly drainBudget?: number;
}

/** An IPv4 datagram cannot carry more than 65507 bytes of payload, IPv6 without jumbograms
 *  65527; anything past 64 KiB is not a SIP message whatever the limits say. */
const HARD_MAX_DATAGRAM = 65536;
const DEFAULT_RECV_BUFFER = 4 * 1024 * 1024;

function isKeepalive(b: Buffer): boolean {
  // RFC 5626 4.4.1 / RFC 3261 7.5: CRLF keepalives carry no message; answering them would make
  // the edge a reflector
  for (let i = 0; i < b.length; i++) if (b[i] !== 0x0d && b[i] !== 0x0a) return false;
  return true;
}

/** a /proc/net/udp read slower than this gives the backlog reading up (see createUdpListener) */
const SLOW_PROC_READ_MS = 5;

/** "0100007F:13C4": an address and port as /proc/net/udp{,6} print them (each 32-bit word of the
 *  address in host byte order, then the port), or null when the address does not parse */
export function procAddress(address: string, port: number, family: 4 | 6 = 4): string | null {
  let b = ipToBytes(address);
  if (b === null) return null;
  // an IPv6 socket serving IPv4 through the mapping shows the mapped form (::ffff:a.b.c.d)
  if (family === 6 && b.length === 4) b = Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...b]);
  const le = endianness() === 'LE';
  let hex = '';
  for (let w = 0; w < b.length; w += 4) {
    for (let k = 0; k < 4; k++) hex += (b[w + (le ? 3 - k : k)] as number).toString(16).padStart(2, '0');
  }
  return `${hex.toUpperCase()}:${port.toString(16).toUpperCase().padStart(4, '0')}`;
}

/** Socket family for a bind address as written ("::ffff:127.0.0.1" binds an IPv6 socket). */
export function socketFamily(host: string): 4 | 6 | 0 {
  const f = isIP(host);
  return f === 0 ? 0 : f;
}

/** What a listener needs of its socket, whichever thread does the syscalls. */
interface UdpIo {
  readonly address: string;
  readonly port: number;
  /** the kernel receive buffer granted (0 when unknown) */
  readonly rcvbuf: number;
  /** hand one datagram to the socket; false when it could not be queued */
  send(port: number, address: string, bytes: Buffer): boolean;
  /** share of the hand-over queue between the I/O thread and the event loop in use (0 without one) */
  queued(): number;
  /** begin handing received datagrams to deliver (after the listener exists) */
  start(): void;
  close(): Promise<void>;
}

type Deliver = (bytes: Buffer, address: string, port: number, receivedAt: number) => void;
/** send_error, or datagram_queue_full: the I/O thread dropped a datagram because the event loop
 *  had not taken the earlier ones (the hand-over queue was full, as a socket buffer can be) */
type Report = (event: 'send_error' | 'datagram_queue_full') => void;

/** The socket on the event loop: every recvmsg and sendmsg costs event-loop time. */
async function openDirect(spec: ListenerSpec, family: 4 | 6, ipv6Only: boolean, recvBufferBytes: number, deliver: Deliver, report: Report): Promise<UdpIo> {
  const socket = dgram.createSocket({ type: family === 6 ? 'udp6' : 'udp4', ipv6Only });
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    socket.once('error', onError);
    socket.bind({ address: spec.host, port: spec.port, exclusive: true }, () => {
      socket.off('error', onError);
      resolve();
    });
  });
  try {
    socket.setRecvBufferSize(recvBufferBytes);
  } catch {
    // a smaller buffer only means earlier drops under a flood; not a reason to fail
  }
  let rcvbuf = 0;
  try { rcvbuf = socket.getRecvBufferSize(); } catch { rcvbuf = 0; }
  // one callback for every send (no closure per datagram); asynchronous send errors are counted
  const afterSend = (err: Error | null): void => {
    if (err) report('send_error');
  };
  // ICMP errors surface as socket errors on some platforms; a UDP socket stays usable after them
  socket.on('error', () => report('send_error'));
  const bound = socket.address();
  return {
    address: bound.address,
    port: bound.port,
    rcvbuf,
    send(port, address, bytes) {
      socket.send(bytes, port, address, afterSend);
      return true;
    },
    queued: () => 0,
    start() {
      socket.on('message', (msg: Buffer, rinfo: dgram.RemoteInfo) => deliver(msg, rinfo.address, rinfo.port, performance.now()));
    },
    close: () => new Promise<void>((resolve) => {
      try {
        socket.close(() => resolve());
      } catch {
        resolve();
      }
    }),
  };
}

/** most datagrams one turn of the event loop takes from the I/O thread before letting timers
 *  and TCP run (when each is handled in full; with prioritization, edge/path/priority.ts, they
 *  are only classified and queued, and the edge asks for more per turn) */
const DRAIN_BUDGET = 256;
const CLOSE_WAIT_MS = 2000;
const MIN_RING = 1 << 20;
const MAX_RING = 64 << 20;

/** The socket on its own thread (udp-io.ts), datagrams handed over through two rings. */
async function openThreaded(spec: ListenerSpec, family: 4 | 6, ipv6Only: boolean, recvBufferBytes: number, deliver: Deliver, report: Report, drainBudget = DRAIN_BUDGET): Promise<UdpIo> {
  const ringBytes = Math.min(MAX_RING, Math.max(MIN_RING, recvBufferBytes));
  const inboundRing = allocRing(ringBytes);
  const outboundRing = allocRing(ringBytes);
  const counters = new SharedArrayBuffer(16);
  const init: UdpIoInit = {
    host: spec.host, port: spec.port, type: family === 6 ? 'udp6' : 'udp4', ipv6Only, recvBufferBytes,
    inbound: inboundRing, outbound: outboundRing, counters,
  };
  const worker = new Worker(join(__dirname, 'udp-io.js'), { workerData: { udpIo: init } });
  const bound = await new Promise<Extract<UdpIoReply, { kind: 'bound' }>>((resolve, reject) => {
    const onExit = (code: number): void => reject(new Error(`udp_io_thread_exit: ${code}`));
    worker.once('error', reject);
    worker.once('exit', onExit);
    worker.once('message', (m: UdpIoReply) => {
      worker.off('error', reject);
      worker.off('exit', onExit);
      if (m.kind === 'bound') resolve(m);
      else {
        void worker.terminate();
        const err = new Error(m.kind === 'bind_error' ? m.message : 'udp_io_thread_closed') as NodeJS.ErrnoException;
        if (m.kind === 'bind_error' && m.code) err.code = m.code;
        reject(err);
      }
    });
  });
  const reader = new RingReader(inboundRing);
  const writer = new RingWriter(outboundRing);
  const inBuf = reader.buffer;
  const outBuf = writer.buffer;
  const errors = new Int32Array(counters);
  let seenErrors = 0;
  let seenDrops = 0;
  let closed = false;

  // a dead I/O thread is a dead listener: fail loudly so that a supervisor restarts the edge
  worker.on('error', (err) => {
    if (!closed) setImmediate(() => { throw err; });
  });
  worker.on('exit', (code) => {
    if (!closed) setImmediate(() => { throw new Error(`udp_io_thread_exit: ${code}`); });
  });

  function reportCounts(): void {
    for (const e = Atomics.load(errors, SEND_ERRORS); seenErrors < e; seenErrors++) report('send_error');
    for (const d = reader.droppedTotal(); seenDrops < d; seenDrops++) report('datagram_queue_full');
  }

  function drain(): void {
    try {
      for (let n = 0; !closed; ) {
        let off: number;
        while ((off = reader.next()) >= 0) {
          const end = off + reader.bodyLength();
          const receivedAt = inBuf.readDoubleLE(off) - performance.timeOrigin;
          const port = inBuf.readUInt16LE(off + 8);
          const alen = inBuf[off + 10] as number;
          const address = inBuf.toString('latin1', off + IN_HEAD, off + IN_HEAD + alen);
          // an allocation of its own, as dgram gives: a pooled slice would pin its neighbours for
          // as long as a transaction keeps this message
          const bytes = Buffer.allocUnsafeSlow(end - off - IN_HEAD - alen);
          inBuf.copy(bytes, 0, off + IN_HEAD + alen, end);
          reader.release();
          deliver(bytes, address, port, receivedAt);
          if (++n >= drainBudget) {
            reportCounts();
            setImmediate(drain);
            return;
          }
        }
        reportCounts();
        const p = reader.wait();
        if (p) {
          void p.then(drain);
          return;
        }
      }
    } catch (err) {
      // a throwing handler must not stop the receive loop; the error still surfaces as before
      setImmediate(drain);
      throw err;
    }
  }

  return {
    address: bound.address,
    port: bound.port,
    rcvbuf: bound.rcvbuf,
    send(port, address, bytes) {
      const alen = address.length;
      const off = writer.reserve(OUT_HEAD + alen + bytes.length);
      if (off < 0) return false; // counted as send_error, as a full socket buffer would be
      outBuf.writeUInt16LE(port, off);
      outBuf[off + 2] = alen;
      outBuf.write(address, off + OUT_HEAD, 'latin1');
      bytes.copy(outBuf, off + OUT_HEAD + alen);
      writer.commit();
      return true;
    },
    queued: () => reader.fill(),
    start: drain,
    close: () => new Promise<void>((resolve) => {
      closed = true;
      const done = (): void => {
        clearTimeout(timer);
        worker.terminate().then(() => resolve(), () => resolve());
      };
      const timer = setTimeout(done, CLOSE_WAIT_MS);
      worker.once('message', done);
      worker.postMessage({ kind: 'close' });
      RingReader.poke(outboundRing);
      RingReader.poke(inboundRing);
    }),
  };
}

export async function createUdpListener(spec: ListenerSpec, hooks: TransportHooks, opts: UdpOptions): Promise<Listener> {
  const family = socketFamily(spec.host);
  if (family === 0) throw new Error(`listen_host_not_ip: ${spec.host}`);
  const ipv6Only = family === 6 ? (opts.ipv6Only ?? canonicalAddress(spec.host) === '::') : false;
  const maxDatagram = Math.min(HARD_MAX_DATAGRAM, Math.max(1, opts.maxDatagramBytes));
  const recvBufferBytes = opts.recvBufferBytes ?? DEFAULT_RECV_BUFFER;
  const deliver: Deliver = (msg, address, port, receivedAt) => {
    if (msg.length === 0 || msg.length > HARD_MAX_DATAGRAM) return;
    if (isKeepalive(msg)) return;
    const source: Endpoint = { transport: 'udp', address: canonicalAddress(address), port, listenerId: id };
    if (msg.length > maxDatagram) hooks.onEvent?.('datagram_oversize', listener, source);
    const inbound: Inbound = { bytes: msg, source, receivedAt };
    hooks.onMessage(inbound);
  };
  const report: Report = (event) => hooks.onEvent?.(event, listener);
  const io = opts.ioThread ?? true
    ? await openThreaded(spec, family, ipv6Only, recvBufferBytes, deliver, report, opts.drainBudget)
    : await openDirect(spec, family, ipv6Only, recvBufferBytes, deliver, report);

  const local = { address: canonicalAddress(io.address), port: io.port, family };
  const id = `udp:${formatHostPort(local.address, local.port)}`;
  let closed = false;
  // Backlog: how full the kernel's receive queue is (rx_queue over the socket buffer, from
  // /proc/net/udp), or with the I/O thread the hand-over ring, whichever is fuller (the thread
  // keeps the kernel's queue short, so the ring is where an overloaded event loop shows). A queue that fills is what turns an overload into a collapse: with a buffer
  // of megabytes, datagrams wait longer than T1 (500 ms), every client retransmits, and the
  // retransmissions add to the load. Tried and rejected: event-loop utilization (it also counts
  // the time the process waits for a CPU on a contended host: it shed calls at 900 cps that the
  // edge carried with 0 failures), the share of full 32-datagram read rounds and the time since
  // the queue was last empty (both high at sustainable load, with bursty senders). The /proc
  // file lists every UDP socket of the network namespace: on an edge host a few lines, about
  // 0.1 ms per read (1 ms per second at the guard's 10 Hz), but 130 ms with 10,000 sockets; after
  // three slow reads in a row the reading is given up (NaN from then on: overload control
  // reports itself blind and stays off).
  const procFile = family === 6 ? '/proc/net/udp6' : '/proc/net/udp';
  const procLocal = procAddress(local.address, local.port, family);
  const rcvbuf = io.rcvbuf;
  let procUsable = procLocal !== null && rcvbuf > 0;
  let slowReads = 0;

  const listener: Listener = {
    id,
    spec,
    local,
    family,
    send(dest: Endpoint, bytes: Buffer): boolean {
      if (closed) return fail(dest);
      const destFamily = addressFamily(dest.address);
      // only literal addresses: a host name here would mean a DNS lookup per packet
      if (destFamily === 0 || !Number.isInteger(dest.port) || dest.port <= 0 || dest.port > 65535) return fail(dest);
      let address = dest.address;
      if (destFamily !== family) {
        // an IPv6 socket that accepts IPv4-mapped traffic answers IPv4 peers through the mapping
        if (family === 6 && destFamily === 4 && !ipv6Only) address = `::ffff:${dest.address}`;
        else return fail(dest);
      }
      try {
        return io.send(dest.port, address, bytes) || fail(dest);
      } catch {
        return fail(dest);
      }
    },
    backlog(): number {
      // with an I/O thread the queue that backs up is the hand-over ring, not the kernel's
      const queued = io.queued();
      if (!procUsable || closed) return procUsable ? queued : Number.NaN;
      const t0 = performance.now();
      let text: string;
      try { text = readFileSync(procFile, 'latin1'); } catch { procUsable = false; return Number.NaN; }
      // one slow read may be a preemption; three in a row are the size of the file
      if (performance.now() - t0 > SLOW_PROC_READ_MS) {
        if (++slowReads >= 3) { procUsable = false; return Number.NaN; }
      } else slowReads = 0;
      // "sl local_address rem_address st tx_queue:rx_queue ...": our line has our exact local address
      // (after "sl:", so that a socket connected to us, whose rem_address is our address, is skipped)
      const at = text.indexOf(`: ${procLocal} `);
      if (at < 0) return queued;
      const fields = text.slice(at + 1, text.indexOf('\n', at)).trim().split(/\s+/);
      const rx = parseInt(fields[3]?.split(':')[1] ?? '', 16);
      return Number.isFinite(rx) ? Math.max(queued, Math.min(1, rx / rcvbuf)) : queued;
    },
    close(): Promise<void> {
      if (closed) return Promise.resolve();
      closed = true;
      return io.close();
    },
  };

  function fail(dest: Endpoint): false {
    hooks.onEvent?.('send_error', listener, dest);
    return false;
  }

  io.start();
  return listener;
}
