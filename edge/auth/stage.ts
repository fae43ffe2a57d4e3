// Auth stage: digest authentication at the edge (edge mode) or a watch over the PBX's own
// challenges (pbx mode), per served domain (sip-edge.yaml `auth`), plus identity anti-spoofing.
//
// Edge mode (RFC 3261 22, RFC 7616, RFC 8760; the checks live in edge/auth/verify.ts):
//   no credentials            -> 401 (REGISTER) / 407 (others) with one challenge per algorithm
//                                the client is offered (edge/auth/offer.ts: the domain's allow-list,
//                                the client profile of rules/auth-clients.yaml, what the source did
//                                before), built before any user lookup: the same for every user
//   unreadable credentials    -> 400 (RFC 3261 21.4.1)
//   wrong password, unknown user, foreign or replayed nonce, downgraded qop, a locked user
//                             -> the same fresh challenge (the client learns nothing)
//   expired nonce, right answer -> challenge with stale=true (RFC 7616 3.3), not a failure
//   right answer              -> the From user (and for REGISTER the To AOR) must be the
//                                authenticated user (403 otherwise); credentials and untrusted
//                                identity headers are stripped before forwarding; the source is
//                                promoted (limits.yaml promotion)
// Requests that are not challenged (RFC 3261 22.1): ACK and CANCEL (they cannot be resubmitted
// with credentials), in-dialog requests that carry the edge's signed Route (their dialog was set
// up through the edge, so its creation was authenticated), retransmissions of a transaction the
// edge already holds.
//
// PBX mode: requests go on; finalToOutside() watches the PBX's answers: a 401/407/403 to a request
// that carried credentials is a failure (per source and per user), a 2xx to one a success
// (promotion), and a 404/480 to an unauthenticated request is rewritten to the uniform challenge
// or a 403 (Kamailio's WITH_BLOCK3XX/BLOCK401407 spirit): svwar tells users apart by exactly that.
//
// Suspicion (per source, edge/suspicion.ts): missing_auth, auth_failure, unknown_user and
// enumeration (more than `enumeration.users` distinct target users from one source in the
// window, counted in the shared store). Lockout (per user, any source): `lockout.failures` failures
// in `lockout.seconds` lock the user for sources that have not authenticated recently; the owner,
// whose phones are promoted, keeps working. The stage records no suspicion and promotes nobody
// itself: its verdicts carry those events as values, and what it learns later (an enumeration
// count, the PBX's answer) it reports; the observer (edge/path/observer.ts) applies them only when
// the stage enforces. Lockouts and learned challenge offers also happen only when it enforces.
import { createHash, randomBytes } from 'node:crypto';
import type { AuthAlgorithm, AuthConfig, AuthDomainPolicy } from '../config/types';
import { DigestVerifier, credentialUser, type Ha1Lookup, type VerifyResult } from './verify';
import { OfferSelector } from './offer';
import type { CompiledAuthClients } from './clients';
import { first, from, requestUri, to } from '../sip/headers';
import type { Endpoint, SipRequest, SipResponse } from '../sip/types';
import type { FinalSubstitute } from '../router/proxy';
import { decodeUser } from '../sip/uri';
import type { LimiterSpec, SharedStore } from '../store/types';
import type { Suspicion, SuspicionEvent } from '../suspicion';
import { CONTINUE, reply, type ForwardEdits, type MessageContext, type Stage, type StageEvent, type Verdict } from '../verdict';

export const AUTH_REASONS = [
  'challenge',              // no credentials: challenged
  'nonce_stale',            // right answer to an expired nonce: challenged with stale=true
  'credentials_malformed',  // 400
  'uri_mismatch',           // 400: the credentials are for another Request-URI
  'realm_mismatch',
  'nonce_invalid',
  'algorithm_not_offered',
  'qop_invalid',
  'unknown_user',
  'ha1_missing',            // the user has no HA1 for the algorithm it answered with (users file)
  'wrong_credentials',
  'nonce_replay',
  'user_locked',
  'from_mismatch',          // 403: authenticated as one user, From claims another
  'aor_mismatch',           // 403: REGISTER for an AOR that is not the authenticated user's
  'pbx_not_found',          // pbx mode: the PBX's 404/480 replaced
] as const;
export type AuthReason = (typeof AUTH_REASONS)[number];

/** Identity headers an untrusted source may not set (RFC 3325 9.1; RPID: draft-ietf-sip-privacy-04). */
const IDENTITY_HEADERS = ['p-asserted-identity', 'p-preferred-identity', 'remote-party-id'];

export type AuthEvent =
  | { readonly kind: 'challenge' | 'stale'; readonly mode: 'edge' | 'pbx' }
  | { readonly kind: 'success'; readonly mode: 'edge' | 'pbx'; readonly source: Endpoint; readonly user: string; readonly request?: SipRequest }
  /** a right answer to the edge's challenge, in this algorithm (before From/lockout checks) */
  | { readonly kind: 'answer'; readonly algorithm: AuthAlgorithm }
  | { readonly kind: 'failure'; readonly mode: 'edge' | 'pbx'; readonly reason: string; readonly source: Endpoint }
  | { readonly kind: 'lockout'; readonly mode: 'edge' | 'pbx'; readonly source: Endpoint; readonly user: string; readonly realm: string; readonly seconds: number };

export interface AuthStageOptions {
  readonly auth: AuthConfig;
  /** HA1 lookup for a users file (its current version), or undefined when the file is not loaded */
  readonly users: (file: string) => Ha1Lookup | undefined;
  readonly store: SharedStore;
  readonly suspicion: Suspicion;
  /** is this host one of the served domains or the edge's own addresses? */
  readonly serves: (host: string) => boolean;
  /** the request's first Route is the edge's, with a flow token the edge signed */
  readonly hasDialogRoute: (req: SipRequest) => boolean;
  /** a retransmission (same transaction, same transport source) of a request the edge holds */
  readonly isRetransmission: (req: SipRequest, source: Endpoint) => boolean;
  /** requests the edge lets through unchallenged by configuration: OPTIONS pings to the edge
   *  itself when sip-edge.yaml `pings` is forward (edge/stages/ping.ts) */
  readonly unchallenged?: (req: SipRequest) => boolean;
  /** does the stage enforce right now (stages.yaml mode)? shadow: decide and count only */
  readonly enforcing: () => boolean;
  /** digest challenge profiles (rules/auth-clients.yaml) of the current rules; absent or null:
   *  every client is offered the domain's algorithms as listed */
  readonly clients?: () => CompiledAuthClients | null;
  /** epoch ms (nonce timestamps, lockouts) */
  readonly now?: () => number;
  readonly onEvent?: (e: AuthEvent) => void;
  /** events learned after a verdict (an enumeration count back from the store, the PBX's answer
   *  to a request the stage let through): the observer applies them when the stage enforces */
  readonly report?: (source: Endpoint, events: readonly StageEvent[]) => void;
}

export interface AuthStage extends Stage {
  /** proxy hook (ProxyEvents.finalToOutside): the pbx-mode watcher */
  finalToOutside(req: SipRequest, client: Endpoint, res: SipResponse): FinalSubstitute | undefined;
  /** users locked out right now (this instance's view) */
  readonly lockedCount: number;
}

/** Lockouts remembered per instance; oldest forgotten first beyond this. */
const MAX_LOCKED = 100_000;
/** Bound on the user text that goes into a store key. */
const MAX_KEY_USER = 128;

export function createAuthStage(o: AuthStageOptions): AuthStage {
  const secret = o.auth.secret;
  const verifier = secret !== undefined ? new DigestVerifier(Buffer.from(secret, 'utf8'), o.auth.nonceSeconds) : undefined;
  const now = o.now ?? Date.now;
  const clients = o.clients ?? (() => null);
  const offers = new OfferSelector(now);
  const byDomain = new Map(o.auth.domains.map((d) => [d.name, d]));
  const lockSpec: LimiterSpec = { name: 'auth_user_failures', points: o.auth.lockout.failures, durationSec: o.auth.lockout.seconds, onStoreDown: 'open' };
  const locked = new Map<string, number>();
  /** last challenge the PBX sent per domain policy and status (pbx mode): the template for
   *  rewritten 404s: its reason phrase, the header value, and the header that followed it */
  const pbxChallenge = new Map<string, { phrase: string; value: string; next?: string }>();
  const templateKey = (policy: AuthDomainPolicy, status: number): string => `${policy.name}\0${status}`;

  const policyFor = (host: string | undefined): AuthDomainPolicy | undefined => {
    if (host === undefined) return undefined;
    const h = host.toLowerCase();
    return byDomain.get(h) ?? (o.serves(h) ? o.auth.fallback : undefined);
  };

  /** RFC 3261 10.2: a REGISTER's domain is its Request-URI; other requests authenticate in the
   *  caller's domain (From) when we serve it, else in the callee's (Request-URI). */
  const policyOf = (req: SipRequest): AuthDomainPolicy | undefined => {
    const ruri = requestUri(req);
    if (req.method === 'REGISTER') return policyFor(ruri?.host);
    return policyFor(from(req)?.uri.host) ?? policyFor(ruri?.host);
  };

  const suspect = (event: SuspicionEvent, rule: string): StageEvent => ({ kind: 'suspect', event, rule });
  const PROMOTE: StageEvent = Object.freeze({ kind: 'promote' });
  /** a verdict with the events it asks for */
  const says = (v: Verdict, ...events: StageEvent[]): Verdict => (events.length > 0 ? { ...v, events } : v);
  const report = (src: Endpoint, ...events: StageEvent[]): void => { try { o.report?.(src, events); } catch { /* observers never break auth */ } };
  const promotedOf = (ctx: MessageContext): boolean => ctx.promoted ?? o.suspicion.isPromoted(ctx.source.address);
  const emit = (e: AuthEvent): void => { try { o.onEvent?.(e); } catch { /* observers never break auth */ } };

  const lockKey = (realm: string, user: string): string => {
    const u = user.length <= MAX_KEY_USER ? user : createHash('sha256').update(user).digest('base64url');
    return `${realm}\0${u}`;
  };
  const isLocked = (realm: string, user: string): boolean => {
    const k = lockKey(realm, user);
    const until = locked.get(k);
    if (until === undefined) return false;
    if (until <= now()) { locked.delete(k); return false; }
    return true;
  };
  /** count a failure against a user that exists; lock it when the budget runs out (shared store) */
  const userFailed = (realm: string, user: string, src: Endpoint, mode: 'edge' | 'pbx'): void => {
    if (!o.enforcing()) return;
    const k = lockKey(realm, user);
    void o.suspicion.limiters.get(lockSpec).consume(k, 1).then((r) => {
      if (r.allowed || isLocked(realm, user)) return;
      if (locked.size >= MAX_LOCKED) { const oldest = locked.keys().next().value; if (oldest !== undefined) locked.delete(oldest); }
      locked.set(k, now() + o.auth.lockout.seconds * 1000);
      emit({ kind: 'lockout', mode, source: src, user, realm, seconds: o.auth.lockout.seconds });
    }, () => undefined);
  };

  /** the target user of an unauthenticated request, for enumeration counting */
  const targetUser = (req: SipRequest): string | undefined => {
    const u = req.method === 'REGISTER' ? to(req)?.uri : requestUri(req);
    return u?.user ? decodeUser(u.user) : undefined;
  };
  const trackEnumeration = (req: SipRequest, src: Endpoint, policy: AuthDomainPolicy, promoted: boolean): void => {
    if (!o.enforcing() || promoted) return;
    const user = targetUser(req);
    if (user === undefined) return;
    const cap = o.auth.enumeration.users;
    const key = `enum:${o.suspicion.sourceKey(src.address)}`;
    const member = lockKey(policy.realm, user);
    void o.store.distinct(key, member, o.auth.enumeration.seconds, cap).then((n) => {
      if (n > cap) report(src, suspect('enumeration', 'auth.enumeration'));
    }, () => undefined);
  };

  const identityEdits = (edits: ForwardEdits, policy: AuthDomainPolicy | undefined, asserted?: string): ForwardEdits => {
    edits.remove.push(...IDENTITY_HEADERS);
    if (asserted !== undefined && policy?.identity === 'assert') edits.add.push(['P-Asserted-Identity', asserted]);
    return edits;
  };

  /** `unanswered`: the request carried no credentials for the realm (feeds the MD5 fallback) */
  const challenge = (req: SipRequest, src: Endpoint, policy: AuthDomainPolicy, reason: AuthReason, stale = false, unanswered = false): Verdict => {
    const status = DigestVerifier.statusFor(req.method);
    emit({ kind: stale ? 'stale' : 'challenge', mode: 'edge' });
    const offer = offers.select(req, src, policy, clients(), { unanswered, learn: o.enforcing() });
    return reply(status, reason, {
      headers: verifier!.challenge(req.method, policy, src.address, now(), stale, offer.algorithms),
      ...(offer.rule !== undefined ? { rule: offer.rule } : {}),
    });
  };

  function edgeCheck(ctx: MessageContext, req: SipRequest, policy: AuthDomainPolicy): Verdict | Promise<Verdict> {
    const src = ctx.source;
    if (verifier === undefined) return reply(500, 'challenge'); // config load refuses this; be total
    const lookup = policy.usersFile !== undefined ? o.users(policy.usersFile) : undefined;
    const users: Ha1Lookup = lookup ?? (() => undefined);
    const r = verifier.verify(req, policy, src.address, now(), users);
    // credentials of any kind: the client answered whatever it was offered (no MD5 fallback)
    if (r.kind !== 'none') offers.answered(req, src);
    switch (r.kind) {
      case 'none': {
        // soft: every phone's first request is unauthenticated; only a source that never comes
        // back with credentials is banned for these (edge/suspicion.ts grace)
        const promoted = promotedOf(ctx);
        trackEnumeration(req, src, policy, promoted);
        const ch = challenge(req, src, policy, 'challenge', false, true);
        return promoted ? ch : says(ch, suspect('missing_auth', 'auth.missing'));
      }
      case 'malformed':
        emit({ kind: 'failure', mode: 'edge', reason: 'credentials_malformed', source: src });
        return says(reply(400, 'credentials_malformed', { phrase: 'Malformed Credentials' }), suspect('malformed', 'auth.credentials'));
      case 'uri_mismatch':
        emit({ kind: 'failure', mode: 'edge', reason: 'uri_mismatch', source: src });
        return reply(400, 'uri_mismatch', { phrase: 'Credentials URI Mismatch' });
      case 'stale':
        return challenge(req, src, policy, 'nonce_stale', true);
      case 'fail':
      case 'ok':
        break;
    }
    if (r.kind === 'fail' && r.replayKey === undefined) return failed(ctx, req, policy, r);
    // every answer to a live nonce spends its nonce-count (shared store: cluster-wide); the wait
    // is the same for right and wrong answers
    return o.store.once(`nc:${r.replayKey}`, o.auth.nonceSeconds * 2).then(
      (first) => {
        if (!first) {
          emit({ kind: 'failure', mode: 'edge', reason: 'nonce_replay', source: src });
          return says(challenge(req, src, policy, 'nonce_replay'), suspect('auth_failure', 'auth.nonce_replay'));
        }
        if (r.kind === 'ok') {
          emit({ kind: 'answer', algorithm: r.algorithm });
          if (o.enforcing()) offers.succeeded(req, src, r.algorithm, clients());
        }
        return r.kind === 'ok' ? succeeded(ctx, req, policy, r.user) : failed(ctx, req, policy, r);
      },
      () => challenge(req, src, policy, 'nonce_replay'), // the store never rejects; be total anyway
    );
  }

  function failed(ctx: MessageContext, req: SipRequest, policy: AuthDomainPolicy, r: Extract<VerifyResult, { kind: 'fail' }>): Verdict {
    const src = ctx.source;
    // the lockout bookkeeping (known users only) runs after the reply is out, and an unknown
    // user schedules the same (empty) turn: no timing difference before the answer
    const user = r.known ? r.user : undefined;
    setImmediate(() => { if (user !== undefined) userFailed(policy.realm, user, src, 'edge'); });
    trackEnumeration(req, src, policy, promotedOf(ctx));
    emit({ kind: 'failure', mode: 'edge', reason: r.reason, source: src });
    return says(challenge(req, src, policy, r.reason), suspect(r.reason === 'unknown_user' ? 'unknown_user' : 'auth_failure', `auth.${r.reason}`));
  }

  function succeeded(ctx: MessageContext, req: SipRequest, policy: AuthDomainPolicy, user: string): Verdict {
    const src = ctx.source;
    // a locked user: the answer was right, but from a source that has not earned trust, during a
    // brute-force run against this user: the same challenge as a wrong password
    if (isLocked(policy.realm, user) && !promotedOf(ctx)) {
      emit({ kind: 'failure', mode: 'edge', reason: 'user_locked', source: src });
      return says(challenge(req, src, policy, 'user_locked'), suspect('auth_failure', 'auth.user_locked'));
    }
    if (policy.matchFrom) {
      const f = from(req);
      if (!f || decodeUser(f.uri.user ?? '') !== user || policyFor(f.uri.host) !== policy) {
        emit({ kind: 'failure', mode: 'edge', reason: 'from_mismatch', source: src });
        return says(reply(403, 'from_mismatch', { phrase: 'From Does Not Match Credentials' }), suspect('auth_failure', 'auth.from_mismatch'));
      }
      if (req.method === 'REGISTER') {
        const t = to(req);
        if (!t || decodeUser(t.uri.user ?? '') !== user || policyFor(t.uri.host) !== policy) {
          emit({ kind: 'failure', mode: 'edge', reason: 'aor_mismatch', source: src });
          return says(reply(403, 'aor_mismatch', { phrase: 'AOR Does Not Match Credentials' }), suspect('auth_failure', 'auth.aor_mismatch'));
        }
      }
    }
    emit({ kind: 'success', mode: 'edge', source: src, user });
    // an established identity: the per-user budgets count this request (the userlimit stage)
    ctx.identity = user;
    const edits: ForwardEdits = { remove: policy.forwardCredentials ? [] : [DigestVerifier.headerFor(req.method)], add: [] };
    ctx.edits = identityEdits(edits, policy, `<sip:${user}@${policy.name === '*' ? policy.realm : policy.name}>`);
    // the source holds valid credentials: the larger budget (applied when the stage enforces)
    return says(CONTINUE, PROMOTE);
  }

  function pbxCheck(ctx: MessageContext, req: SipRequest, policy: AuthDomainPolicy): Verdict {
    const cred = credentialUser(req);
    if (cred === undefined) {
      trackEnumeration(req, ctx.source, policy, promotedOf(ctx));
    } else if (isLocked(policy.realm, cred.user) && !promotedOf(ctx)) {
      // the PBX would check the password; during a lockout the edge answers for it, with the
      // PBX's own challenge shape
      emit({ kind: 'failure', mode: 'pbx', reason: 'user_locked', source: ctx.source });
      return says(reply(DigestVerifier.statusFor(req.method), 'user_locked', { headers: pbxStyleChallenge(req, policy) }), suspect('auth_failure', 'auth.user_locked'));
    }
    ctx.edits = identityEdits({ remove: [], add: [] }, policy);
    return CONTINUE;
  }

  /** the PBX's last challenge for this domain with a fresh nonce, or one of ours in its realm */
  function pbxStyleChallenge(req: SipRequest, policy: AuthDomainPolicy): Array<[string, string]> {
    const status = DigestVerifier.statusFor(req.method);
    const name = status === 401 ? 'WWW-Authenticate' : 'Proxy-Authenticate';
    // the PBX's challenge for this status, else its other one (a PBX words 401 and 407 alike)
    const t = pbxChallenge.get(templateKey(policy, status)) ?? pbxChallenge.get(templateKey(policy, status === 401 ? 407 : 401));
    if (t !== undefined) {
      const value = t.value
        .replace(/(nonce\s*=\s*")([^"]*)(")/i, (_m, a: string, n: string, b: string) => `${a}${randomLike(n)}${b}`)
        .replace(/(opaque\s*=\s*")([^"]*)(")/i, (_m, a: string, n: string, b: string) => `${a}${randomLike(n)}${b}`);
      return [[name, value]];
    }
    return [[name, `Digest realm="${policy.realm}", nonce="${randomBytes(16).toString('hex')}", algorithm=MD5, qop="auth"`]];
  }

  /** remember the PBX's challenge: what a rewritten 404 must look like */
  function learnChallenge(policy: AuthDomainPolicy, res: SipResponse): void {
    const name = res.status === 401 ? 'www-authenticate' : 'proxy-authenticate';
    const i = res.headers.findIndex((h) => h.name === name);
    if (i < 0 || !/^\s*digest\s/i.test(res.headers[i]!.value)) return;
    let next: string | undefined;
    for (let k = i + 1; k < res.headers.length; k++) if (res.headers[k]!.name !== name) { next = res.headers[k]!.name; break; }
    pbxChallenge.set(templateKey(policy, res.status), { phrase: res.reason, value: res.headers[i]!.value, ...(next !== undefined ? { next } : {}) });
  }

  const stage: AuthStage = {
    name: 'auth',
    reasons: AUTH_REASONS,
    scope: { sides: ['outside'], requests: 'all', responses: false },
    get lockedCount() { return locked.size; },
    check(ctx: MessageContext): Verdict | Promise<Verdict> {
      if (ctx.side !== 'outside' || ctx.msg.kind !== 'request' || ctx.trust !== 'untrusted') return CONTINUE;
      const req = ctx.msg as SipRequest;
      const policy = policyOf(req);
      if (policy?.mode === 'off') return CONTINUE;
      // RFC 3261 22.1: ACK and CANCEL cannot be challenged; a retransmission belongs to a
      // transaction already decided; an in-dialog request with our signed Route belongs to a
      // dialog whose creation was authenticated
      const inDialog = to(req)?.params.has('tag') === true && o.hasDialogRoute(req);
      if (req.method === 'ACK' || req.method === 'CANCEL' || inDialog || o.isRetransmission(req, ctx.source) || policy === undefined || o.unchallenged?.(req) === true) {
        ctx.edits = identityEdits({ remove: [], add: [] }, policy);
        return CONTINUE;
      }
      return policy.mode === 'edge' ? edgeCheck(ctx, req, policy) : pbxCheck(ctx, req, policy);
    },

    finalToOutside(req, client, res) {
      const policy = policyOf(req);
      if (policy === undefined || policy.mode !== 'pbx') return undefined;
      const status = res.status;
      const cred = credentialUser(req);
      if (status === 401 || status === 407) {
        const header = first(res, status === 401 ? 'www-authenticate' : 'proxy-authenticate');
        learnChallenge(policy, res);
        // RFC 7616 3.3: stale=true says the answer was right, only the nonce old
        const stale = header !== undefined && /stale\s*=\s*"?true/i.test(header);
        if (cred !== undefined && !stale) {
          report(client, suspect('auth_failure', 'auth.pbx_rejected'));
          userFailed(policy.realm, cred.user, client, 'pbx');
          emit({ kind: 'failure', mode: 'pbx', reason: 'wrong_credentials', source: client });
        } else {
          if (cred === undefined && !o.suspicion.isPromoted(client.address)) report(client, suspect('missing_auth', 'auth.missing'));
          emit({ kind: stale ? 'stale' : 'challenge', mode: 'pbx' });
        }
        return undefined;
      }
      if (status === 403 && cred !== undefined) {
        report(client, suspect('auth_failure', 'auth.pbx_forbidden'));
        userFailed(policy.realm, cred.user, client, 'pbx');
        emit({ kind: 'failure', mode: 'pbx', reason: 'wrong_credentials', source: client });
        return undefined;
      }
      if (status < 300 && cred !== undefined) {
        // a REGISTER the PBX accepted is promoted by the message path whatever the auth mode
        // (ProxyEvents.registered): once per response, not twice
        if (req.method !== 'REGISTER') report(client, PROMOTE);
        emit({ kind: 'success', mode: 'pbx', source: client, user: cred.user, request: req });
        return undefined;
      }
      // RFC 3261 21.4.5 / 21.4.18: "no such user" answers are what svwar sorts extensions by
      if ((status === 404 || status === 480 || status === 484) && cred === undefined) {
        report(client, suspect('unknown_user', 'auth.pbx_not_found'));
        if (!o.enforcing() || policy.pbxRewrite === 'off') return undefined;
        // built from the PBX's own answer (its headers, its To tag) so that nothing but the
        // nonce tells it from the PBX's genuine challenge
        if (policy.pbxRewrite === 'forbidden') return { status: 403, reason: 'pbx_not_found', fromResponse: {} };
        emit({ kind: 'challenge', mode: 'pbx' });
        const ch = DigestVerifier.statusFor(req.method);
        const t = pbxChallenge.get(templateKey(policy, ch));
        return {
          status: ch, reason: 'pbx_not_found', headers: pbxStyleChallenge(req, policy),
          ...(t !== undefined ? { phrase: t.phrase } : {}), // else the standard phrase for the status
          fromResponse: t?.next !== undefined ? { before: t.next } : {},
        };
      }
      return undefined;
    },
  };
  return stage;
}

/** random text of the same length and alphabet class as `like` (hex stays hex) */
function randomLike(like: string): string {
  const n = Math.max(8, Math.min(128, like.length));
  const hex = /^[0-9a-f]*$/i.test(like);
  const raw = randomBytes(n).toString(hex ? 'hex' : 'base64url').slice(0, n);
  return like.length > 0 && /^[0-9A-F]+$/.test(like) ? raw.toUpperCase() : raw;
}
