// Which digest challenges a request gets (edge authentication): the domain's allow-list
// (auth.algorithms), the client profile its headers match (rules/auth-clients.yaml), and what the
// same source did before.
//
// RFC 8760 2.3 has the server send one challenge per algorithm, most preferred first, and 2.4 has
// the client use the topmost one it supports. Deployed clients differ: baresip before 3.12 (libre
// src/sip/auth.c) refuses the whole 401 with ENOSYS when any challenge is not MD5, sipp 3.6 reads
// only the first challenge and only does MD5, baresip 3.12+ refuses SHA-512-256 and answers every
// challenge of a realm at once. One list cannot serve them all, so:
//
// 1. a profile (first match in auth-clients.yaml, else its `default`) gives the list, filtered by
//    the domain's allow-list, in the profile's order; `offer: first` keeps only the first;
// 2. learning, per source (UDP: address and port; TCP: address) and User-Agent, local to this
//    instance:
//    - fallback: a client that was offered a challenge besides MD5 and came back in the same
//      Call-ID with a higher CSeq and still no credentials could not answer it (that is what
//      baresip 1.0 does: libre retries the REGISTER 30-60 s later); from then on its requests
//      (its calls too) are offered MD5 alone. One that cannot answer MD5 alone either (the same
//      test again) is put back on its profile;
//    - stronger: a client that authenticated with SHA-256 or SHA-512-256 keeps that algorithm
//      first, and a later fallback trigger is ignored for it (it has shown it can do better).
//    What a spoofer gains (UDP sources can be forged): it can put another phone's address, port
//    and User-Agent on the MD5 fallback, which an on-path attacker could do anyway by rewriting
//    the challenge (RFC 8760 3); the phone answers with MD5, or, if it cannot, is put back on its
//    profile at its next retry; a phone that authenticated with SHA-256 is immune. README
//    "Authentication" weighs it.
//
// Anti-enumeration: every input is something the sender controls equally for every user (its
// headers, its address, its own earlier requests); nothing here looks at the users file, so an
// existing and a non-existing user get the same challenge.
//
// Bounded: both tables hold at most learning.maxEntries entries, oldest forgotten first, and
// entries expire. Synchronous: one Map lookup per table per challenge.
import { createHash } from 'node:crypto';
import type { AuthAlgorithm, AuthConfig, AuthDomainPolicy } from '../config/types';
import { AUTH_CLIENT_RULES } from './clients';
import type { CompiledAuthClients } from './clients';
import { callId, cseq, first } from '../sip/headers';
import type { Endpoint, SipRequest } from '../sip/types';
import { compactKey } from '../store/bounded';
import type { UsersDb } from './users';

export interface ChallengeOffer {
  /** challenges in the order they are sent; never empty */
  readonly algorithms: readonly AuthAlgorithm[];
  /** rule name for sipedge_rule_hits_total (auth-clients:<profile>), absent without a rules file */
  readonly rule?: string;
}

/** Longer User-Agents and Call-IDs are kept in a key as a hash: both tables then cost at most
 *  ~150 bytes of key per entry, whatever a flood of odd headers looks like. */
const MAX_KEY_TEXT = 64;
const keyText = (t: string): string => (t.length <= MAX_KEY_TEXT ? t : `#${createHash('sha256').update(t, 'latin1').digest('base64url').slice(0, 22)}`);

interface Learned { kind: 'fallback' | 'stronger'; alg?: AuthAlgorithm; until: number }
interface Pending { cseq: number; beyondMd5: boolean; until: number }

/** The profile's list filtered by the domain's allow-list (profile order); the allow-list itself
 *  when nothing is left (the client then cannot answer: `auditOffers` warns about it). */
function allowedOf(list: readonly AuthAlgorithm[], allowed: readonly AuthAlgorithm[]): AuthAlgorithm[] {
  const out = list.filter((a) => allowed.includes(a));
  return out.length > 0 ? out : [...allowed];
}

export class OfferSelector {
  private readonly learned = new Map<string, Learned>();
  private readonly pending = new Map<string, Pending>();
  /** eviction cursors of the two tables (see put) */
  private readonly cursors = new Map<Map<string, unknown>, Iterator<string>>();

  constructor(private readonly now: () => number = Date.now) {}

  /** entries held (this instance): learned choices and challenges awaiting an answer */
  get sizes(): { learned: number; pending: number } { return { learned: this.learned.size, pending: this.pending.size }; }

  /**
   * The challenges for `req`. `unanswered`: the request carried no credentials for the realm
   * (the case that feeds the fallback); `learn`: the stage enforces (shadow mode decides the same
   * way but remembers nothing, since the client never saw the challenge).
   */
  select(req: SipRequest, source: Endpoint, policy: AuthDomainPolicy, clients: CompiledAuthClients | null, o: { unanswered: boolean; learn: boolean }): ChallengeOffer {
    if (clients === null) return { algorithms: policy.algorithms };
    const profile = clients.match(req);
    let algs = allowedOf(profile?.algorithms ?? clients.default, policy.algorithms);
    if (profile?.offer === 'first') algs = algs.slice(0, 1);
    let rule = profile?.rule ?? AUTH_CLIENT_RULES.default;
    if (!clients.learning.enabled) return { algorithms: algs, rule };

    const now = this.now();
    const key = learnKey(req, source);
    let learned = this.get(this.learned, key, now);
    if (o.unanswered && o.learn) {
      const pk = pendingKey(req, source);
      const seq = cseq(req)?.seq;
      const p = pk !== undefined ? this.get(this.pending, pk, now) : undefined;
      // RFC 3261 8.1.3.5 / 22.2: a client that can answer re-sends the request with credentials
      // and CSeq + 1; the same Call-ID with a higher CSeq and still none means it could not. A
      // retransmission (the same CSeq: our 401 is stateless) proves nothing.
      if (p !== undefined && seq !== undefined && seq > p.cseq && learned?.kind !== 'stronger') {
        if (p.beyondMd5 && policy.algorithms.includes('MD5')) {
          learned = { kind: 'fallback', until: now + clients.learning.seconds * 1000 };
          this.put(this.learned, key, learned, clients.learning.maxEntries);
        } else if (!p.beyondMd5 && learned?.kind === 'fallback') {
          // it could not answer MD5 alone either: the fallback was wrong for it (or forged)
          this.learned.delete(key);
          learned = undefined;
        }
      }
    }
    if (learned?.kind === 'fallback' && policy.algorithms.includes('MD5')) {
      algs = ['MD5'];
      rule = AUTH_CLIENT_RULES.fallback;
    } else if (learned?.kind === 'stronger' && learned.alg !== undefined && policy.algorithms.includes(learned.alg) && algs[0] !== learned.alg) {
      algs = profile?.offer === 'first' ? [learned.alg] : [learned.alg, ...algs.filter((a) => a !== learned!.alg)];
      rule = AUTH_CLIENT_RULES.learned;
    }
    if (o.unanswered && o.learn) {
      const pk = pendingKey(req, source);
      const seq = cseq(req)?.seq;
      if (pk !== undefined && seq !== undefined) {
        this.put(this.pending, pk, { cseq: seq, beyondMd5: algs.some((a) => a !== 'MD5'), until: now + clients.learning.retrySeconds * 1000 }, clients.learning.maxEntries);
      }
    }
    return { algorithms: algs, rule };
  }

  /** the request carried credentials for the realm: whatever it was challenged with, it answered */
  answered(req: SipRequest, source: Endpoint): void {
    const pk = pendingKey(req, source);
    if (pk !== undefined) this.pending.delete(pk);
  }

  /** a right answer: a stronger algorithm than MD5 is kept first for this source and User-Agent */
  succeeded(req: SipRequest, source: Endpoint, alg: AuthAlgorithm, clients: CompiledAuthClients | null): void {
    this.answered(req, source);
    if (clients === null || !clients.learning.enabled) return;
    const key = learnKey(req, source);
    if (alg === 'MD5') {
      // MD5 after a fallback: the fallback stays (it is why MD5 worked); otherwise nothing learned
      return;
    }
    this.put(this.learned, key, { kind: 'stronger', alg, until: this.now() + clients.learning.seconds * 1000 }, clients.learning.maxEntries);
  }

  private get<V extends { until: number }>(m: Map<string, V>, k: string, now: number): V | undefined {
    const v = m.get(k);
    if (v === undefined) return undefined;
    if (v.until <= now) { m.delete(k); return undefined; }
    return v;
  }

  private put<V>(m: Map<string, V>, k: string, v: V, max: number): void {
    m.delete(k); // re-insert: the Map's order is the eviction order
    // the oldest through one persistent iterator per table (Map iterators are live): a fresh
    // keys().next() skips every deleted slot at the front again, quadratic while a flood keeps
    // the table full (the technique of edge/store/bounded.ts)
    let it = this.cursors.get(m);
    while (m.size >= max) {
      let r = it?.next();
      if (r === undefined || r.done === true) {
        it = m.keys();
        r = it.next();
        if (r.done === true) break;
      }
      m.delete(r.value);
    }
    if (it !== undefined) this.cursors.set(m, it);
    // a flat copy of the key: the template strings above are cons-string trees, ~160 bytes
    // more per entry, and a spoofed-source flood makes an entry per source (issue 12)
    m.set(compactKey(k), v);
  }
}

/** the client: its source (a UDP port too: a forger must guess it; a TCP source cannot be forged,
 *  and its port changes with every connection) and its User-Agent */
function learnKey(req: SipRequest, source: Endpoint): string {
  const ua = first(req, 'user-agent') ?? '';
  const where = source.transport === 'udp' ? `udp\0${source.address}\0${source.port}` : `${source.transport}\0${source.address}`;
  return `${where}\0${keyText(ua)}`;
}

function pendingKey(req: SipRequest, source: Endpoint): string | undefined {
  const id = callId(req);
  if (!id) return undefined;
  return `${source.transport}\0${source.address}\0${source.port}\0${keyText(id)}`;
}

// ---------------------------------------------------------------- audit (start and reload)

export interface OfferWarning {
  /** ha1_missing: users the policy can challenge with `algorithm` have no HA1 for it;
   *  profile_unservable: a profile names only algorithms the domain does not allow */
  readonly kind: 'ha1_missing' | 'profile_unservable';
  readonly realm: string;
  readonly domain: string;
  readonly algorithm?: AuthAlgorithm;
  /** the profiles (or "default", "learned_md5_fallback") that lead to the algorithm */
  readonly profiles: readonly string[];
  readonly file?: string;
  readonly missing?: number;
  readonly users?: number;
  /** a few of the users concerned (the operator's own users file; never attacker input) */
  readonly examples?: readonly string[];
  readonly message: string;
}

/** Every algorithm a policy can put in a challenge, with the profiles that lead to it. */
export function offerable(policy: AuthDomainPolicy, clients: CompiledAuthClients | null): Map<AuthAlgorithm, string[]> {
  const out = new Map<AuthAlgorithm, string[]>();
  const add = (a: AuthAlgorithm, why: string): void => { const l = out.get(a) ?? []; if (!l.includes(why)) l.push(why); out.set(a, l); };
  if (clients === null) {
    for (const a of policy.algorithms) add(a, 'auth.algorithms');
    return out;
  }
  const entries: Array<{ name: string; algorithms: readonly AuthAlgorithm[]; offer: 'all' | 'first' }> = [
    ...clients.clients.map((c) => ({ name: c.name, algorithms: c.algorithms, offer: c.offer })),
    { name: 'default', algorithms: clients.default, offer: 'all' as const },
  ];
  for (const e of entries) {
    let algs = allowedOf(e.algorithms, policy.algorithms);
    if (e.offer === 'first') algs = algs.slice(0, 1);
    for (const a of algs) add(a, e.name);
  }
  if (clients.learning.enabled && policy.algorithms.includes('MD5')) add('MD5', 'learned_md5_fallback');
  return out;
}

/**
 * What an operator must hear at start and on every reload (rules or users): a client that can be
 * challenged with an algorithm its user has no HA1 for can never authenticate (and, by design,
 * its failure looks exactly like a wrong password), and a profile the domain's allow-list leaves
 * empty gets challenges it cannot answer. `users(file)` is the loaded users file, if any.
 */
export function auditOffers(auth: AuthConfig, clients: CompiledAuthClients | null, users: (file: string) => UsersDb | undefined): OfferWarning[] {
  const warnings: OfferWarning[] = [];
  for (const policy of [auth.fallback, ...auth.domains]) {
    if (policy.mode !== 'edge') continue;
    const domain = policy.name === '*' ? '(default)' : policy.name;
    if (clients !== null) {
      for (const c of [...clients.clients, { name: 'default', algorithms: clients.default }]) {
        if (c.algorithms.some((a) => policy.algorithms.includes(a))) continue;
        warnings.push({
          kind: 'profile_unservable', realm: policy.realm, domain, profiles: [c.name],
          message: `auth-clients profile ${c.name} offers ${c.algorithms.join(', ')}, none of which domain ${domain} allows (auth.algorithms: ${policy.algorithms.join(', ')}): these clients get ${policy.algorithms.join(', ')} and cannot authenticate`,
        });
      }
    }
    if (policy.usersFile === undefined) continue;
    const db = users(policy.usersFile);
    if (db === undefined) continue;
    const realm = policy.realm.toLowerCase();
    const inRealm = [...db.entries()].filter((e) => e.realm.toLowerCase() === realm);
    for (const [alg, profiles] of offerable(policy, clients)) {
      const lacking = inRealm.filter((e) => e.ha1[alg] === undefined);
      if (lacking.length === 0) continue;
      const examples = lacking.slice(0, 5).map((e) => e.user);
      warnings.push({
        kind: 'ha1_missing', realm: policy.realm, domain, algorithm: alg, profiles, file: policy.usersFile,
        missing: lacking.length, users: inRealm.length, examples,
        message: `${lacking.length} of ${inRealm.length} users of realm ${policy.realm} in ${policy.usersFile} have no ${alg} HA1 (e.g. ${examples.join(', ')}), `
          + `but clients matching ${profiles.join(', ')} are challenged with ${alg}: they cannot authenticate as those users `
          + `(run sip-edge passwd USER again, which writes every algorithm by default, or take ${alg} out of the profiles)`,
      });
    }
  }
  return warnings;
}
