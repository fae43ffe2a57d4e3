// Flow tokens (RFC 5626 section 5.2 style): the edge records, in the user part of the Path and
// Record-Route URIs it inserts, how to reach the phone that sent the request: transport, the
// real source address and port (behind NAT), the listener, and for TCP the connection. The token
// is HMAC-signed so an outside party cannot forge one to make the edge relay to an arbitrary
// address; with a shared secret every instance of a cluster can decode every other's tokens.
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Endpoint, TransportName } from '../sip/types';

const TRANSPORTS: readonly TransportName[] = ['udp', 'tcp', 'tls', 'ws', 'wss'];
const MAC_BYTES = 10;
export const FLOW_PREFIX = 'sef1';

/** Tokens repeat (every request of a dialog, every re-REGISTER of a phone): remember the last
 *  few thousand both ways instead of computing an HMAC per message. Cleared whole when full,
 *  so memory stays bounded under a flood of distinct sources. */
const CACHE_MAX = 8192;

export class FlowCodec {
  private readonly enc = new Map<string, string>();
  private readonly dec = new Map<string, Endpoint>();
  constructor(private readonly secret: Buffer) {}

  encode(ep: Endpoint): string {
    const k = `${ep.transport}|${ep.address}|${ep.port}|${ep.connId ?? ''}|${ep.listenerId ?? ''}`;
    let tok = this.enc.get(k);
    if (tok === undefined) {
      tok = this.encodeUncached(ep);
      if (this.enc.size >= CACHE_MAX) this.enc.clear();
      this.enc.set(k, tok);
    }
    return tok;
  }

  /** the endpoint, or null for anything that is not a token this cluster signed */
  decode(token: string | undefined): Endpoint | null {
    if (!token) return null;
    const hit = this.dec.get(token);
    if (hit) return hit;
    const ep = this.decodeUncached(token);
    if (ep) {
      // only verified tokens are cached: forged ones cannot fill the cache
      if (this.dec.size >= CACHE_MAX) this.dec.clear();
      this.dec.set(token, ep);
    }
    return ep;
  }

  private encodeUncached(ep: Endpoint): string {
    const t = TRANSPORTS.indexOf(ep.transport);
    const body = `${t}|${ep.address}|${ep.port}|${ep.connId ?? ''}|${ep.listenerId ?? ''}`;
    const b = Buffer.from(body, 'latin1');
    const mac = createHmac('sha256', this.secret).update(b).digest().subarray(0, MAC_BYTES);
    return FLOW_PREFIX + '.' + b.toString('base64url') + '.' + mac.toString('base64url');
  }

  private decodeUncached(token: string): Endpoint | null {
    if (token.length > 300 || !token.startsWith(FLOW_PREFIX + '.')) return null;
    const parts = token.split('.');
    if (parts.length !== 3) return null;
    const b = Buffer.from(parts[1]!, 'base64url');
    const mac = Buffer.from(parts[2]!, 'base64url');
    if (mac.length !== MAC_BYTES) return null;
    const want = createHmac('sha256', this.secret).update(b).digest().subarray(0, MAC_BYTES);
    if (!timingSafeEqual(mac, want)) return null;
    const f = b.toString('latin1').split('|');
    if (f.length !== 5) return null;
    const transport = TRANSPORTS[Number(f[0])];
    const port = Number(f[2]);
    if (!transport || !f[1] || !Number.isInteger(port) || port <= 0 || port > 65535) return null;
    const ep: { -readonly [K in keyof Endpoint]: Endpoint[K] } = { transport, address: f[1], port };
    if (f[3]) ep.connId = Number(f[3]);
    if (f[4]) ep.listenerId = f[4];
    return Object.freeze(ep);
  }
}
