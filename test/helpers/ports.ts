// Ephemeral loopback ports for real-peer tests (sipp, the edge). Bind port 0, read the number the OS
// chose, close, hand it out. A small race remains between close and the peer's bind; callers that
// can pass port 0 to the peer itself should prefer that.
import * as dgram from 'node:dgram';
import * as net from 'node:net';

export type PortKind = 'udp' | 'tcp' | 'both';

const LOOPBACK = '127.0.0.1';
const MAX_TRIES = 50;

function bindUdp(port: number): Promise<number | null> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket({ type: 'udp4', reuseAddr: false });
    sock.once('error', () => { sock.close(); resolve(null); });
    sock.bind({ port, address: LOOPBACK, exclusive: true }, () => {
      const got = sock.address().port;
      sock.close(() => resolve(got));
    });
  });
}

function bindTcp(port: number): Promise<number | null> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(null));
    srv.listen({ port, host: LOOPBACK, exclusive: true }, () => {
      const addr = srv.address();
      const got = addr !== null && typeof addr === 'object' ? addr.port : null;
      srv.close(() => resolve(got));
    });
  });
}

/** A port currently free on 127.0.0.1 for `kind`; for 'both' the same number is free on UDP and TCP. */
export async function freePort(kind: PortKind = 'udp'): Promise<number> {
  for (let i = 0; i < MAX_TRIES; i++) {
    if (kind === 'udp') {
      const p = await bindUdp(0);
      if (p !== null) return p;
    } else if (kind === 'tcp') {
      const p = await bindTcp(0);
      if (p !== null) return p;
    } else {
      // take a TCP ephemeral port, then check UDP has the same number free
      const p = await bindTcp(0);
      if (p !== null && (await bindUdp(p)) === p) return p;
    }
  }
  throw new Error(`freePort(${kind}): no free port after ${MAX_TRIES} tries`);
}

/** `n` distinct free ports of one kind (distinct within this call). */
export async function freePorts(n: number, kind: PortKind = 'udp'): Promise<number[]> {
  const out = new Set<number>();
  for (let i = 0; out.size < n && i < n * MAX_TRIES; i++) out.add(await freePort(kind));
  if (out.size < n) throw new Error(`freePorts(${n}, ${kind}): only found ${out.size}`);
  return [...out];
}
