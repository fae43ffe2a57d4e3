// A fast, non-cryptographic 64-bit string hash (two FNV-1a lanes with different offsets), for
// values that must be stable and well spread but need no secrecy: the loop-detection part of our
// Via branches (RFC 3261 16.6 item 8) and the branch of statelessly forwarded ACKs (16.11).
// HMAC there cost about a tenth of the proxy's CPU per call.
const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_';

export function fastHash(parts: readonly string[], len = 10): string {
  let a = 0x811c9dc5 | 0;
  let b = 0x01000193 ^ 0x5bd1e995;
  for (const s of parts) {
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      a = Math.imul(a ^ c, 0x01000193);
      b = Math.imul(b ^ c, 0x5bd1e995) ^ (b >>> 15);
    }
    // separator, so ["ab","c"] and ["a","bc"] differ
    a = Math.imul(a ^ 0xff, 0x01000193);
    b = Math.imul(b ^ 0xff, 0x5bd1e995) ^ (b >>> 15);
  }
  let out = '';
  let x = a >>> 0;
  let y = b >>> 0;
  for (let i = 0; i < len; i++) {
    if (i === 5) x = y;
    out += ALPHABET[x & 63];
    x >>>= 6;
  }
  return out;
}
