// Rate-limit stage: budgets in the shared store (memory on one node, Redis in a cluster) for
//
//   source_all        every request from a source (IPv6: per prefix), x promotion.factor once
//                     the source has authenticated (Suspicion.isPromoted); requests carrying
//                     credentials (answers to challenges) have a second budget of the same size
//   aor_register_source  REGISTER without credentials per (source, address-of-record): the To
//                     URI (RFC 3261 10.2, 10.3 step 5: scheme:user@host with escapes decoded and
//                     parameters dropped)
//   user_invite_source   out-of-dialog INVITE without credentials per (source, calling user: From
//                     user@host)
//   prefix_rate       out-of-dialog INVITE to an expensive destination prefix (toll fraud),
//                     matched on the normalized Request-URI user, longest prefix wins
//   store_down_closed a limit with onStoreDown: closed while the store answers degraded
//
// Over a limit, a source that has not authenticated (not promoted) is dropped silently: a scanner
// or flooder learns nothing and gets no reply to amplify. A promoted source (a real phone or PBX)
// gets 503 with Retry-After (RFC 3261 21.5.4: the server is temporarily overloaded; 20.33) set to
// base + random jitter, so phones throttled together do not retry in the same second. An ACK is
// only ever dropped: nothing answers an ACK (RFC 3261 17.1.1.3, 17.2.1; edge/path/respond.ts).
//
// Responses pass (they belong to transactions the edge created; forged ones are the proxy's
// unmatched-reply check), inside traffic passes (the PBX is not limited), trusted sources skip
// the stage when stages.yaml trustedSkip says so (the default).
//
// The budgets of a user or an AOR themselves (limits.yaml aorRegister, userInvite) are not spent
// here: this stage runs before authentication, on what the message claims, and counting there let
// anyone spend a user's budget (a spray of INVITEs "From: 2000" from other addresses, and 2000's
// own phone was refused). They are spent only once the identity is established, by the userlimit
// stage after auth (edge/policy/limits/userlimit.ts). Here, a request without credentials is an
// unauthenticated attempt and counts per source and per (source, user): the same numbers, so one
// source still cannot hammer one extension, but only its own share. An answer to a challenge is
// counted where it is verified: a right one in the user's budget, a wrong one as an auth_failure
// suspicion event and toward the user's lockout.
//
// In-dialog requests (To tag present, RFC 3261 12.2) are not counted against user_invite and
// prefix_rate: a re-INVITE's Request-URI is the remote target, not a dialled number, and an
// INVITE with a made-up To tag matches no dialog, so the PBX answers 481 (RFC 3261 12.2.2).
//
// Checks run in order and stop at the first refusal, so a refused request spends no budget of
// the later limits. Async: each check is one store round trip (bounded in time by the store).
import { createHash } from 'node:crypto';
import type { RulesSnapshot } from '../snapshot';
import { LIMIT_RULES, normalizeDialString } from './compile';
import { first, from, requestUri, to } from '../../sip/headers';
import { decodeUser } from '../../sip/uri';
import type { NameAddr, SipRequest } from '../../sip/types';
import type { ConsumeResult, Limiter, LimiterSpec, SharedStore } from '../../store/types';
import { LimiterCache, type Suspicion } from '../../suspicion';
import { CONTINUE, drop, reply, type MessageContext, type Stage, type Verdict } from '../../verdict';

export const RATELIMIT_REASONS = [
  'source_rate',        // the source's request budget (source.all) is spent
  'aor_register_source_rate',  // REGISTERs without credentials from one source for one AOR over aorRegister
  'user_invite_source_rate',   // new calls without credentials from one source as one From user over userInvite
  'prefix_rate',        // new calls to a limited destination prefix over its budget
  'store_down_closed',  // the shared store is unreachable and the limit says onStoreDown: closed
] as const;

export type RateLimitReason = (typeof RATELIMIT_REASONS)[number];

export interface RateLimitStageOptions {
  readonly rules: () => RulesSnapshot;
  readonly store: SharedStore;
  readonly suspicion: Suspicion;
  /** uniform [0, 1) for the Retry-After jitter (default Math.random; tests) */
  readonly random?: () => number;
}

/** Store keys longer than this are hashed: a 4 KB To header must not become a 4 KB Redis key. */
const MAX_KEY_CHARS = 128;

function boundedKey(k: string): string {
  return k.length <= MAX_KEY_CHARS ? k : `h:${createHash('sha256').update(k, 'latin1').digest('base64url').slice(0, 32)}`;
}

/** RFC 3261 10.3 step 5 canonical AOR: scheme:user@host, escapes decoded, no port or params.
 *  The host is already lower-case from the parser; the user stays case-sensitive (19.1.4). */
export function aorKey(na: NameAddr): string {
  const u = na.uri;
  return boundedKey(`${u.scheme}:${decodeUser(u.user ?? '')}@${u.host}`);
}

/** the key of a (source, AOR) budget */
export function sourceAorKey(sourceKey: string, na: NameAddr): string {
  return boundedKey(`${sourceKey}|${aorKey(na)}`);
}


/** Retry-After seconds: base + a uniform integer from jitterMin to jitterMax (both inclusive). */
export function jitteredRetryAfter(r: RulesSnapshot['limits']['retryAfter'], random: () => number = Math.random): number {
  const span = Math.max(0, r.jitterMax - r.jitterMin);
  const x = random();
  const u = Number.isFinite(x) && x >= 0 && x < 1 ? x : 0;
  return r.base + r.jitterMin + Math.min(span, Math.floor(u * (span + 1)));
}

/** One budget a request spends: the limit, the key it counts under, what a refusal says. */
export interface Budget<R extends string> {
  readonly spec: LimiterSpec;
  readonly key: string;
  readonly reason: R;
  readonly rule: string;
}

type Check = Budget<RateLimitReason>;

/** Spend one of a budget, or only look at it (peek). The store contract says neither fails; if
 *  one does anyway, that is a store outage of this limit. */
export async function askBudget(limiter: Limiter, key: string, spend = true): Promise<ConsumeResult> {
  try {
    return await (spend ? limiter.consume(key, 1) : limiter.peek(key));
  } catch {
    return { allowed: limiter.spec.onStoreDown === 'open', remaining: 0, msBeforeNext: 0, degraded: true };
  }
}

/** The verdict on a budget's answer, null within it. Refused: the store is down and the limit
 *  says onStoreDown: closed (store_down_closed), or the budget is spent (its own reason). An
 *  unknown source learns nothing (drop); a promoted one (the owner's phone) gets 503 with a
 *  jittered Retry-After (RFC 3261 21.5.4, 20.33). `answer` false: drop even a promoted source. */
export function overBudget<R extends string>(
  r: ConsumeResult, b: Budget<R>, answer: boolean, retryAfter: RulesSnapshot['limits']['retryAfter'], random: () => number,
): Verdict | null {
  let reason: R | 'store_down_closed' | null = null;
  if (r.degraded && b.spec.onStoreDown === 'closed') reason = 'store_down_closed';
  else if (!r.allowed) reason = b.reason;
  if (reason === null) return null;
  if (!answer) return drop(reason, b.rule);
  return reply(503, reason, { headers: [['Retry-After', String(jitteredRetryAfter(retryAfter, random))]], rule: b.rule });
}

export function createRateLimitStage(opts: RateLimitStageOptions): Stage {
  const { rules, suspicion } = opts;
  const random = opts.random ?? Math.random;
  // share limiters with the suspicion budget when it talks to this very store
  const limiters = suspicion.limiters.store === opts.store ? suspicion.limiters : new LimiterCache(opts.store);

  function checksFor(msg: SipRequest, sourceKey: string, promoted: boolean, limits: RulesSnapshot['limits']): Check[] {
    // answers to challenges (requests with credentials) count in a budget of their own, of the
    // same size: a burst of first, unauthenticated requests (an office after an outage) must not
    // starve the answers whose success promotes the source. Guessing is no cheaper for it: every
    // wrong answer is an auth_failure suspicion event (hard: a ban after the budget).
    const answering = first(msg, 'authorization') !== undefined || first(msg, 'proxy-authorization') !== undefined;
    const out: Check[] = [
      { spec: promoted ? limits.sourceAllPromoted : limits.sourceAll, key: answering ? `${sourceKey}|auth` : sourceKey, reason: 'source_rate', rule: LIMIT_RULES.sourceAll },
    ];
    if (msg.method === 'REGISTER') {
      const t = to(msg);
      if (t && !answering && limits.aorRegisterSource !== null) {
        out.push({ spec: limits.aorRegisterSource, key: sourceAorKey(sourceKey, t), reason: 'aor_register_source_rate', rule: LIMIT_RULES.aorRegister });
      }
    } else if (msg.method === 'INVITE') {
      const t = to(msg);
      const inDialog = t ? t.params.has('tag') : false;
      if (!inDialog) {
        const f = from(msg);
        if (f && !answering && limits.userInviteSource !== null) {
          out.push({ spec: limits.userInviteSource, key: sourceAorKey(sourceKey, f), reason: 'user_invite_source_rate', rule: LIMIT_RULES.userInvite });
        }
        if (limits.prefixes.length > 0) {
          const user = requestUri(msg)?.user;
          if (user !== undefined) {
            const p = limits.matchPrefix(normalizeDialString(user));
            if (p !== null) out.push({ spec: p.spec, key: p.per === 'global' ? '*' : sourceKey, reason: 'prefix_rate', rule: p.rule });
          }
        }
      }
    }
    return out;
  }

  function check(ctx: MessageContext): Verdict | Promise<Verdict> {
    // synchronous for what is never limited (the PBX side, responses): no promise, no microtask
    // per message on the hot path, and the pipeline stays in order for them
    if (ctx.side === 'inside' || ctx.msg.kind !== 'request') return CONTINUE;
    return decide(ctx).catch(() =>
      // a bug (every accessor and the store are total): answer as for a store outage of the
      // per-source limit, so "closed" stays closed and nothing rejects into the pipeline
      rules().limits.sourceAll.onStoreDown === 'closed' ? drop('store_down_closed', LIMIT_RULES.sourceAll) : CONTINUE);
  }

  async function decide(ctx: MessageContext): Promise<Verdict> {
    if (ctx.side === 'inside' || ctx.msg.kind !== 'request') return CONTINUE;
    const msg = ctx.msg;
    const snapshot = rules();
    const limits = snapshot.limits;
    const address = ctx.source.address;
    // classified once by the message path (edge/path/server.ts) when it ran this
    const sourceKey = ctx.sourceKey ?? suspicion.sourceKey(address);
    const promoted = ctx.promoted ?? suspicion.isPromoted(address);

    for (const c of checksFor(msg, sourceKey, promoted, limits)) {
      const r = await askBudget(limiters.get(c.spec), c.key);
      // a 503 aimed at an ACK becomes a drop where replies are sent (edge/path/respond.ts)
      const v = overBudget(r, c, promoted, limits.retryAfter, random);
      if (v !== null) return v;
    }
    return CONTINUE;
  }

  return {
    name: 'ratelimit',
    skippableForTrusted: true,
    reasons: RATELIMIT_REASONS,
    scope: { sides: ['outside'], requests: 'all', responses: false },
    // an unknown source over a limit is dropped; if it keeps going, the drops spend its budget
    // (promoted sources get a 503 instead and are not counted)
    suspects: { event: 'flood', on: ['drop'], rule: 'reason' },
    check,
  };
}
