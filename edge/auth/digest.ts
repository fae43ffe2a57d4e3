// Digest authentication primitives for the edge-authentication mode (groundwork for the auth
// issue; the stage that uses them is not wired yet): RFC 3261 section 22 with RFC 7616 / RFC 8760
// algorithms, stateless nonces every instance of a cluster can verify, constant-time checks.
import { createHash, createHmac, randomFillSync, timingSafeEqual } from 'node:crypto';

export type DigestAlgorithm = 'MD5' | 'SHA-256' | 'SHA-512-256';

/** Node/OpenSSL hash names (RFC 7616 3.2: SHA-512/256 is the truncated SHA-512 variant) */
const HASH: Record<DigestAlgorithm, string> = { 'MD5': 'md5', 'SHA-256': 'sha256', 'SHA-512-256': 'sha512-256' };

export function digestHex(alg: DigestAlgorithm, data: string): string {
  return createHash(HASH[alg]).update(data, 'utf8').digest('hex');
}

/** HA1 = H(username ":" realm ":" password) (RFC 7616 3.4.2); the users file stores only this */
export function ha1(alg: DigestAlgorithm, username: string, realm: string, password: string): string {
  return digestHex(alg, `${username}:${realm}:${password}`);
}

/** request-digest for qop=auth (RFC 7616 3.4.1): H(HA1:nonce:nc:cnonce:qop:H(method:uri)) */
export function responseFor(alg: DigestAlgorithm, ha1Hex: string, p: { method: string; uri: string; nonce: string; nc: string; cnonce: string; qop: 'auth' }): string {
  const ha2 = digestHex(alg, `${p.method}:${p.uri}`);
  return digestHex(alg, `${ha1Hex}:${p.nonce}:${p.nc}:${p.cnonce}:${p.qop}:${ha2}`);
}

export interface Credentials {
  readonly scheme: string;
  readonly params: ReadonlyMap<string, string>;
}

/**
 * Authorization / Proxy-Authorization value (RFC 3261 25.1 credentials, RFC 7616 3.4):
 * `Digest name=value, name="quoted \"value\"", ...`. Total: null for anything malformed
 * (unterminated quotes, duplicate parameters, a value over 1 KiB, more than 32 parameters).
 */
export function parseCredentials(value: string): Credentials | null {
  const m = /^\s*([A-Za-z][A-Za-z0-9-]*)\s+/.exec(value);
  if (!m) return null;
  const params = new Map<string, string>();
  let i = m[0].length;
  const s = value;
  while (i < s.length) {
    while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++;
    const ns = i;
    while (i < s.length && /[A-Za-z0-9_-]/.test(s[i]!)) i++;
    const name = s.slice(ns, i).toLowerCase();
    if (!name) return null;
    while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++;
    if (s[i] !== '=') return null;
    i++;
    while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++;
    let v = '';
    if (s[i] === '"') {
      i++;
      let closed = false;
      while (i < s.length) {
        const ch = s[i]!;
        if (ch === '\\' && i + 1 < s.length) { v += s[i + 1]; i += 2; continue; }
        if (ch === '"') { closed = true; i++; break; }
        v += ch;
        i++;
      }
      if (!closed) return null;
    } else {
      const vs = i;
      while (i < s.length && s[i] !== ',' && s[i] !== ' ' && s[i] !== '\t') i++;
      v = s.slice(vs, i);
    }
    if (v.length > 1024 || params.has(name) || params.size >= 32) return null;
    params.set(name, v);
    while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++;
    if (i < s.length) {
      if (s[i] !== ',') return null;
      i++;
    }
  }
  return { scheme: m[1]!.toLowerCase(), params };
}

/**
 * Stateless nonces: base64url(timestamp, 6 random bytes) "." HMAC(secret, that|realm|source) truncated.
 * Any instance with the shared secret can verify one; binding the source address means a nonce
 * captured from one client is useless from another; the timestamp gives expiry (stale=true).
 */
export class NonceCodec {
  constructor(private readonly secret: Buffer, private readonly ttlMs: number) {
    if (secret.length < 16) throw new Error('nonce secret too short: use at least 16 bytes');
  }

  issue(realm: string, source: string, nowMs: number): string {
    // 8 bytes of time and 6 random: two phones behind one NAT challenged in the same millisecond
    // get different nonces, so their first nonce-counts do not look like a replay of each other
    const head = Buffer.alloc(14);
    head.writeBigUInt64BE(BigInt(Math.floor(nowMs)));
    randomFillSync(head, 8, 6);
    return `${head.toString('base64url')}.${this.mac(head, realm, source)}`;
  }

  /** 'ok', 'stale' (ours, but expired: RFC 7616 3.3 stale=true) or 'invalid' (not ours) */
  check(nonce: string, realm: string, source: string, nowMs: number): 'ok' | 'stale' | 'invalid' {
    const dot = nonce.indexOf('.');
    if (dot !== 19 || nonce.length > 64) return 'invalid';
    const head = nonce.slice(0, dot);
    const ts = Buffer.from(head, 'base64url');
    // 19 base64 characters carry 114 bits for 112: without the round trip, four spellings of one
    // head would verify, and a replay keyed on the nonce text could slip past nonce-count tracking
    if (ts.length !== 14 || ts.toString('base64url') !== head) return 'invalid';
    const want = Buffer.from(this.mac(ts, realm, source));
    const got = Buffer.from(nonce.slice(dot + 1));
    if (got.length !== want.length || !timingSafeEqual(got, want)) return 'invalid';
    const issued = Number(ts.readBigUInt64BE());
    if (issued > nowMs + 5_000) return 'invalid'; // from the future: not ours
    return nowMs - issued > this.ttlMs ? 'stale' : 'ok';
  }

  private mac(ts: Buffer, realm: string, source: string): string {
    return createHmac('sha256', this.secret).update(ts).update(`|${realm}|${source}`).digest('base64url').slice(0, 27);
  }
}

/** constant-time comparison of two hex digests (a mismatch in length is a mismatch) */
export function digestsEqual(a: string, b: string): boolean {
  const x = Buffer.from(a.toLowerCase(), 'latin1');
  const y = Buffer.from(b.toLowerCase(), 'latin1');
  return x.length === y.length && timingSafeEqual(x, y);
}
