// SIP over UDP (RFC 3261 18.1/18.2): one datagram is one message. Bytes go up untouched with a
// canonical source address; the parser decides what they mean.
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { endianness } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Endpoint } from '../sip/types';
import { addressFamily, canonicalAddress, formatHostPort, ipToBytes, isIP } from '../net/address';
import type { Inbound, Listener, ListenerSpec, TransportHooks } from './types';

export interface UdpOptions {
  /** datagrams larger than this are counted (datagram_oversize) but still handed up: the parser
   *  answers 413 (RFC 3261 18.1.1 keeps UDP messages under the MTU; bigger ones are suspicious) */
  readonly maxDatagramBytes: number;
  /** socket receive buffer to ask for; failure is ignored (the kernel caps it at rmem_max) */
  readonly recvBufferBytes?: number;
  /** IPv6 sockets: refuse IPv4-mapped traffic. Default: true for "::" (so that a udp4 listener on
   *  the same port can coexist), false for other IPv6 binds. */
  readonly ipv6Only?: boolean;
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

export async function createUdpListener(spec: ListenerSpec, hooks: TransportHooks, opts: UdpOptions): Promise<Listener> {
  const family = socketFamily(spec.host);
  if (family === 0) throw new Error(`listen_host_not_ip: ${spec.host}`);
  const ipv6Only = family === 6 ? (opts.ipv6Only ?? canonicalAddress(spec.host) === '::') : false;
  const socket = dgram.createSocket({ type: family === 6 ? 'udp6' : 'udp4', ipv6Only });
  const maxDatagram = Math.min(HARD_MAX_DATAGRAM, Math.max(1, opts.maxDatagramBytes));

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    socket.once('error', onError);
    socket.bind({ address: spec.host, port: spec.port, exclusive: true }, () => {
      socket.off('error', onError);
      resolve();
    });
  });

  try {
    socket.setRecvBufferSize(opts.recvBufferBytes ?? DEFAULT_RECV_BUFFER);
  } catch {
    // a smaller buffer only means earlier drops under a flood; not a reason to fail
  }

  const bound = socket.address();
  const local = { address: canonicalAddress(bound.address), port: bound.port, family };
  const id = `udp:${formatHostPort(local.address, local.port)}`;
  let closed = false;

  // Backlog: how full the kernel's receive queue is (rx_queue over the socket buffer, from
  // /proc/net/udp). A queue that fills is what turns an overload into a collapse: with a buffer
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
  let rcvbuf = 0;
  try { rcvbuf = socket.getRecvBufferSize(); } catch { rcvbuf = 0; }
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
        socket.send(bytes, dest.port, address, afterSend);
        return true;
      } catch {
        return fail(dest);
      }
    },
    backlog(): number {
      if (!procUsable || closed) return procUsable ? 0 : Number.NaN;
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
      if (at < 0) return 0;
      const fields = text.slice(at + 1, text.indexOf('\n', at)).trim().split(/\s+/);
      const rx = parseInt(fields[3]?.split(':')[1] ?? '', 16);
      return Number.isFinite(rx) ? Math.min(1, rx / rcvbuf) : 0;
    },
    close(): Promise<void> {
      if (closed) return Promise.resolve();
      closed = true;
      return new Promise<void>((resolve) => {
        try {
          socket.close(() => resolve());
        } catch {
          resolve();
        }
      });
    },
  };

  // one callback for every send (no closure per datagram); asynchronous send errors are counted
  function afterSend(err: Error | null): void {
    if (err) hooks.onEvent?.('send_error', listener);
  }

  function fail(dest: Endpoint): false {
    hooks.onEvent?.('send_error', listener, dest);
    return false;
  }

  socket.on('message', (msg: Buffer, rinfo: dgram.RemoteInfo) => {
    const receivedAt = performance.now();
    if (msg.length === 0 || msg.length > HARD_MAX_DATAGRAM) return;
    if (isKeepalive(msg)) return;
    const source: Endpoint = { transport: 'udp', address: canonicalAddress(rinfo.address), port: rinfo.port, listenerId: id };
    if (msg.length > maxDatagram) hooks.onEvent?.('datagram_oversize', listener, source);
    const inbound: Inbound = { bytes: msg, source, receivedAt };
    hooks.onMessage(inbound);
  });
  // ICMP errors surface as socket errors on some platforms; a UDP socket stays usable after them
  socket.on('error', () => {
    hooks.onEvent?.('send_error', listener);
  });

  return listener;
}
