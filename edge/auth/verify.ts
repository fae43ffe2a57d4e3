// Digest verification for edge authentication: RFC 3261 22 (SIP's use of HTTP digest), RFC 7616
// (SHA-256, qop, nonce-count, stale) and RFC 8760 (SHA-256 / SHA-512-256 in SIP, one challenge
// per algorithm in order of preference).
//
// Anti-enumeration is built into the shape of this code, not bolted on:
// - a challenge never depends on the user: it is made from the domain policy and the source only;
// - a credential for a user that does not exist is checked against a dummy HA1 derived from the
//   secret (stable per user, so repeated tries look the same), and the same hashes are computed
//   whether the user exists or not: the two paths differ by one Map lookup, not by a hash;
// - every failure the client could learn from (wrong password, unknown user, locked user, foreign
//   nonce, replay) ends in the same fresh challenge; only the reason code (metrics, logs) differs.
//
// Synchronous and total: hostile header values give a typed result, never an exception.
import { createHmac } from 'node:crypto';
import type { AuthAlgorithm, AuthDomainPolicy } from '../config/types';
import type { SipRequest } from '../sip/types';
import { fields } from '../sip/headers';
import { type DigestAlgorithm, NonceCodec, digestHex, digestsEqual, parseCredentials } from './digest';

/** HA1 for (user, realm, algorithm); undefined for an unknown user; null for a user whose line
 *  has no HA1 for this algorithm (it cannot authenticate with it: `sip-edge passwd` writes all) */
export type Ha1Lookup = (user: string, realm: string, alg: DigestAlgorithm) => string | null | undefined;

export type VerifyResult =
  /** no credentials for our realm: challenge */
  | { readonly kind: 'none' }
  /** the Authorization value cannot be read: 400 (RFC 3261 21.4.1) */
  | { readonly kind: 'malformed'; readonly detail: string }
  /** the credentials name another resource than the Request-URI: 400 (RFC 2617 3.2.2.5) */
  | { readonly kind: 'uri_mismatch' }
  /** a correct answer to a nonce of ours that has expired: challenge with stale=true (RFC 7616 3.3) */
  | { readonly kind: 'stale'; readonly user: string }
  /** replayKey: set when the nonce was a live one of ours (the nonce-count is then spent) */
  | { readonly kind: 'fail'; readonly reason: AuthFailReason; readonly user?: string; readonly known: boolean; readonly replayKey?: string }
  | { readonly kind: 'ok'; readonly user: string; readonly replayKey: string; readonly algorithm: DigestAlgorithm };

export type AuthFailReason =
  | 'realm_mismatch'         // credentials for another realm only
  | 'nonce_invalid'          // not a nonce of ours (forged, another source's, another realm's)
  | 'algorithm_not_offered'  // MD5 (or -sess, or anything) when the policy does not offer it
  | 'qop_invalid'            // no qop (an RFC 2069 downgrade) or a qop we did not offer
  | 'unknown_user'
  | 'ha1_missing'            // the user exists but has no HA1 for the algorithm answered with
  | 'wrong_credentials';

/** Node hash output length in hex, per algorithm: an answer of another length is not an answer. */
const HEX_LEN: Record<DigestAlgorithm, number> = { 'MD5': 32, 'SHA-256': 64, 'SHA-512-256': 64 };

const ALGS: ReadonlySet<string> = new Set(['MD5', 'SHA-256', 'SHA-512-256']);

/** Credentials we look at per request: a request with more lines than this is malformed. */
const MAX_CREDENTIAL_LINES = 8;

export class DigestVerifier {
  private readonly nonces: NonceCodec;
  private readonly dummyKey: Buffer;

  constructor(secret: Buffer, nonceSeconds: number) {
    // separate keys for nonces and dummy HA1s, both derived from the one configured secret
    this.nonces = new NonceCodec(createHmac('sha256', secret).update('sip-edge nonce v1').digest(), nonceSeconds * 1000);
    this.dummyKey = createHmac('sha256', secret).update('sip-edge dummy ha1 v1').digest();
  }

  /** The credentials header a request answers with: Authorization for 401, Proxy-Authorization
   *  for 407 (RFC 3261 22.2 / 22.3). */
  static headerFor(method: string): 'authorization' | 'proxy-authorization' {
    return method === 'REGISTER' ? 'authorization' : 'proxy-authorization';
  }

  /** The status we challenge with for this method: 401 for REGISTER (we act as the registrar's
   *  front), 407 for the rest (a proxy) (RFC 3261 22.1, 22.3). */
  static statusFor(method: string): 401 | 407 {
    return method === 'REGISTER' ? 401 : 407;
  }

  /**
   * The challenge header lines, one per algorithm in order of preference (RFC 8760 section 2.3;
   * 2.4: the UAC picks the topmost it supports): the policy's allow-list, or the subset
   * edge/auth/offer.ts chose for this client. One nonce serves them all, so a client that reads
   * only the first challenge but answers in another offered algorithm still succeeds. Nothing in
   * them depends on the user.
   */
  challenge(method: string, policy: AuthDomainPolicy, source: string, nowMs: number, stale: boolean,
    algorithms: readonly AuthAlgorithm[] = policy.algorithms): Array<[string, string]> {
    const name = DigestVerifier.statusFor(method) === 401 ? 'WWW-Authenticate' : 'Proxy-Authenticate';
    const nonce = this.nonces.issue(policy.realm, source, nowMs);
    const qop = policy.qop.join(',');
    return algorithms.map((alg) => [
      name,
      `Digest realm="${quoteEscape(policy.realm)}", nonce="${nonce}", algorithm=${alg}, qop="${qop}"${stale ? ', stale=true' : ''}`,
    ]);
  }

  verify(req: SipRequest, policy: AuthDomainPolicy, source: string, nowMs: number, users: Ha1Lookup): VerifyResult {
    const lines = fields(req, DigestVerifier.headerFor(req.method));
    if (lines.length === 0) return { kind: 'none' };
    if (lines.length > MAX_CREDENTIAL_LINES) return { kind: 'malformed', detail: 'too many credentials' };
    // RFC 3261 22.4: several credentials may be present, one per realm; ours is the one with our
    // realm. Credentials for other realms are the PBX's business (pass-through).
    let mine: ReadonlyMap<string, string> | undefined;
    let anyDigest = false;
    for (const f of lines) {
      const c = parseCredentials(f.value);
      if (c === null) return { kind: 'malformed', detail: 'unparsable credentials' };
      if (c.scheme !== 'digest') continue;
      anyDigest = true;
      if (c.params.get('realm') === policy.realm) {
        if (mine === undefined) { mine = c.params; continue; }
        // RFC 8760 2.4 has a client answer one challenge per realm; libre 3.12+ (baresip) answers
        // every one it was offered. Only the strongest the domain allows is checked, the others
        // are ignored: still one check (and one nonce-count) per request. The same algorithm
        // twice is no such client: malformed.
        const a = algorithmOf(mine), b = algorithmOf(c.params);
        if (a === b) return { kind: 'malformed', detail: 'two credentials for one realm' };
        if (strength(b, policy) > strength(a, policy)) mine = c.params;
      }
    }
    if (mine === undefined) return anyDigest ? { kind: 'fail', reason: 'realm_mismatch', known: false } : { kind: 'none' };
    const p = mine;
    const user = p.get('username');
    const nonce = p.get('nonce');
    const uri = p.get('uri');
    const response = p.get('response');
    if (!user || user.length > 256 || nonce === undefined || uri === undefined || response === undefined) {
      return { kind: 'malformed', detail: 'missing username, nonce, uri or response' };
    }
    // RFC 7616 3.4.4: userhash is only valid when the server offered it; we do not
    if (p.get('userhash') === 'true') return { kind: 'fail', reason: 'algorithm_not_offered', user, known: false };
    // RFC 7616 3.4: an absent algorithm means MD5
    const algText = p.get('algorithm') ?? 'MD5';
    const algUpper = algText.toUpperCase();
    if (!ALGS.has(algUpper) || !policy.algorithms.includes(algUpper as AuthAlgorithm)) {
      return { kind: 'fail', reason: 'algorithm_not_offered', user, known: false };
    }
    const alg = algUpper as DigestAlgorithm;
    // qop is mandatory here: without it (RFC 2069 compatibility) there is no cnonce and no nc, so
    // a captured answer replays forever; a client that drops it is downgrading us
    const qop = p.get('qop');
    if (qop === undefined || !(policy.qop as readonly string[]).includes(qop)) return { kind: 'fail', reason: 'qop_invalid', user, known: false };
    const nc = p.get('nc');
    const cnonce = p.get('cnonce');
    if (nc === undefined || !/^[0-9a-fA-F]{8}$/.test(nc) || !cnonce || cnonce.length > 256) {
      return { kind: 'malformed', detail: 'qop without a valid nc and cnonce' };
    }
    if (!sameResource(uri, req.uri)) return { kind: 'uri_mismatch' };
    const n = this.nonces.check(nonce, policy.realm, source, nowMs);

    // the same work whether or not the user exists: dummy HA1 always, the real one when known
    const dummy = this.dummyHa1(alg, user, policy.realm);
    const real = users(user, policy.realm, alg);
    const known = typeof real === 'string' && real.length === HEX_LEN[alg];
    const ha1 = known ? real : dummy;
    // for metrics and logs only: to the client this fails exactly like a wrong password
    const failReason: AuthFailReason = known ? 'wrong_credentials' : real === null ? 'ha1_missing' : 'unknown_user';
    const a2 = qop === 'auth-int'
      ? `${req.method}:${uri}:${digestHex(alg, bodyOf(req))}`
      : `${req.method}:${uri}`;
    const expected = digestHex(alg, `${ha1}:${nonce}:${nc}:${cnonce}:${qop}:${digestHex(alg, a2)}`);
    const match = digestsEqual(expected, response);
    // RFC 7616 3.4: nc counts the requests a client sent with one nonce; each value is good for one
    // attempt, right or wrong, so re-sending nc=00000001 with a reused nonce (svcrack -n) or a
    // captured request gets nowhere
    const replayKey = `${nonce}:${nc.toLowerCase()}`;
    // RFC 7616 3.3: stale=true when the nonce is not (or no longer) good "and with a valid digest
    // for that nonce (indicating that the client knows the correct username/password)". That covers
    // a nonce issued before a restart with a per-process secret, or by another instance with
    // another secret: the phone is asked again with stale=true and answers at once, without a
    // failure counted against it. Only the right password gets there, so it tells an attacker
    // nothing; a wrong answer to a nonce not ours stays a failure.
    if (n === 'invalid') return match && known ? { kind: 'stale', user } : { kind: 'fail', reason: 'nonce_invalid', user, known: false };
    if (n === 'stale') return match && known ? { kind: 'stale', user } : { kind: 'fail', reason: failReason, user, known };
    if (!match || !known) return { kind: 'fail', reason: failReason, user, known, replayKey };
    return { kind: 'ok', user, replayKey, algorithm: alg };
  }

  private dummyHa1(alg: DigestAlgorithm, user: string, realm: string): string {
    return createHmac('sha256', this.dummyKey).update(`${alg}\0${user}\0${realm}`).digest('hex').slice(0, HEX_LEN[alg]);
  }
}

/** RFC 7616 3.4: an absent algorithm means MD5 */
function algorithmOf(p: ReadonlyMap<string, string>): string {
  return (p.get('algorithm') ?? 'MD5').toUpperCase();
}

/** Preference among answers to several challenges of one realm: the stronger hash, if allowed. */
const STRENGTH: Readonly<Record<string, number>> = { 'MD5': 1, 'SHA-256': 2, 'SHA-512-256': 3 };
function strength(alg: string, policy: AuthDomainPolicy): number {
  return (policy.algorithms as readonly string[]).includes(alg) ? STRENGTH[alg] ?? 0 : 0;
}

function quoteEscape(s: string): string {
  return s.replace(/["\\]/g, (c) => `\\${c}`);
}

/** the body as the digest sees it (auth-int, RFC 7616 3.4.3: H(entity-body)) */
function bodyOf(req: SipRequest): string {
  return req.raw.subarray(req.bodyStart, req.bodyStart + req.bodyLength).toString('latin1');
}

/**
 * RFC 2617 3.2.2.5 / RFC 3261 22.4: the digest-uri must name the Request-URI. Byte-equal in
 * practice; phones that re-case the scheme or host are allowed (RFC 3261 19.1.4: those parts
 * compare case-insensitively), nothing else.
 */
function sameResource(digestUri: string, requestUri: string): boolean {
  if (digestUri === requestUri) return true;
  if (digestUri.length !== requestUri.length) return false;
  const at = requestUri.indexOf('@');
  if (at < 0) return digestUri.toLowerCase() === requestUri.toLowerCase();
  // user part exact, the rest case-insensitive
  const colon = requestUri.indexOf(':');
  return digestUri.slice(colon, at) === requestUri.slice(colon, at)
    && digestUri.slice(0, colon).toLowerCase() === requestUri.slice(0, colon).toLowerCase()
    && digestUri.slice(at).toLowerCase() === requestUri.slice(at).toLowerCase();
}

/** exported for the PBX pass-through watcher: the user name in a request's credentials, if any */
export function credentialUser(req: SipRequest): { user: string; realm?: string } | undefined {
  for (const name of ['authorization', 'proxy-authorization'] as const) {
    for (const f of fields(req, name)) {
      const c = parseCredentials(f.value);
      const u = c?.params.get('username');
      if (c && c.scheme === 'digest' && u) return { user: u, realm: c.params.get('realm') };
    }
  }
  return undefined;
}
