// The UDP I/O thread: owns one UDP socket, moves every received datagram into the inbound ring
// and sends every datagram of the outbound ring. It runs no SIP code. Why a thread: on loopback
// and in VMs most of a datagram's cost is the syscall (a sendmsg to a local peer also runs the
// receiver's side of the stack and wakes it, in the sender's context), and Node 20 has neither
// sendmmsg nor SO_REUSEPORT. Moving the syscalls here leaves the event-loop thread the SIP work
// only: measured with sipp, about a third of its time per call (bench/README.md).
//
// Record formats (ring.ts frames them):
//   inbound  (this thread -> event loop): f64 receive time (ms since the epoch), u16 port,
//            u8 address length, address (latin1), datagram
//   outbound (event loop -> this thread): u16 port, u8 address length, address, datagram
import dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import { RingReader, RingWriter, type RingBuffers } from './ring';

export interface UdpIoInit {
  readonly host: string;
  readonly port: number;
  readonly type: 'udp4' | 'udp6';
  readonly ipv6Only: boolean;
  readonly recvBufferBytes: number;
  readonly inbound: RingBuffers;
  readonly outbound: RingBuffers;
  /** Int32 counters shared with the event loop: [0] send errors */
  readonly counters: SharedArrayBuffer;
}

/** messages on the worker's port */
export type UdpIoReply =
  | { readonly kind: 'bound'; readonly address: string; readonly port: number; readonly rcvbuf: number }
  | { readonly kind: 'bind_error'; readonly message: string; readonly code?: string }
  | { readonly kind: 'closed' };

export const IN_HEAD = 11; // f64 + u16 + u8
export const OUT_HEAD = 3; // u16 + u8
export const SEND_ERRORS = 0;

function run(init: UdpIoInit): void {
  const port = parentPort;
  if (!port) return;
  const counters = new Int32Array(init.counters);
  const inbound = new RingWriter(init.inbound);
  const outbound = new RingReader(init.outbound);
  const inBuf = inbound.buffer;
  const outBuf = outbound.buffer;
  // literal addresses only (the event loop checks): no dns.lookup and no nextTick per datagram
  const lookup = (address: string, _o: unknown, cb: (e: Error | null, a: string, f: number) => void): void =>
    cb(null, address, init.type === 'udp6' ? 6 : 4);
  const socket = dgram.createSocket({ type: init.type, ipv6Only: init.ipv6Only, lookup: lookup as never });
  let closing = false;

  const afterSend = (err: Error | null): void => {
    if (err) Atomics.add(counters, SEND_ERRORS, 1);
  };
  socket.on('error', () => Atomics.add(counters, SEND_ERRORS, 1));
  socket.on('message', (msg: Buffer, rinfo: dgram.RemoteInfo) => {
    const addr = rinfo.address;
    const off = inbound.reserve(IN_HEAD + addr.length + msg.length);
    if (off < 0) {
      inbound.dropped();
      return;
    }
    inBuf.writeDoubleLE(performance.timeOrigin + performance.now(), off);
    inBuf.writeUInt16LE(rinfo.port, off + 8);
    inBuf[off + 10] = addr.length;
    inBuf.write(addr, off + IN_HEAD, 'latin1');
    msg.copy(inBuf, off + IN_HEAD + addr.length);
    inbound.commit();
  });

  /** send everything the event loop has queued */
  function sendQueued(): void {
    let off: number;
    while ((off = outbound.next()) >= 0) {
      const len = outbound.bodyLength();
      const dport = outBuf.readUInt16LE(off);
      const alen = outBuf[off + 2] as number;
      const address = outBuf.toString('latin1', off + OUT_HEAD, off + OUT_HEAD + alen);
      // a copy: when the socket queue is full libuv keeps the buffer until the send completes
      const bytes = Buffer.from(outBuf.subarray(off + OUT_HEAD + alen, off + len));
      outbound.release();
      try {
        socket.send(bytes, dport, address, afterSend);
      } catch {
        Atomics.add(counters, SEND_ERRORS, 1);
      }
    }
  }

  function pump(): void {
    while (!closing) {
      sendQueued();
      const p = outbound.wait();
      if (p) {
        void p.then(pump);
        return;
      }
    }
  }

  port.on('message', (m: { kind: string }) => {
    if (m.kind !== 'close' || closing) return;
    // what the event loop queued before it closed the listener still goes out (final replies)
    sendQueued();
    closing = true;
    socket.close(() => port.postMessage({ kind: 'closed' } satisfies UdpIoReply));
  });

  socket.once('error', (err: NodeJS.ErrnoException) => {
    if (!bound) port.postMessage({ kind: 'bind_error', message: err.message, code: err.code } satisfies UdpIoReply);
  });
  let bound = false;
  socket.bind({ address: init.host, port: init.port, exclusive: true }, () => {
    bound = true;
    try { socket.setRecvBufferSize(init.recvBufferBytes); } catch { /* a smaller buffer only drops earlier */ }
    let rcvbuf = 0;
    try { rcvbuf = socket.getRecvBufferSize(); } catch { rcvbuf = 0; }
    const a = socket.address();
    port.postMessage({ kind: 'bound', address: a.address, port: a.port, rcvbuf } satisfies UdpIoReply);
    pump();
  });
}

if (parentPort && workerData && (workerData as { udpIo?: UdpIoInit }).udpIo) run((workerData as { udpIo: UdpIoInit }).udpIo);
