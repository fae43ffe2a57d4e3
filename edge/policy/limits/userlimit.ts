// User-limit stage: the budgets of one user or one address-of-record (limits.yaml aorRegister:
// REGISTER per AOR, the To URI; userInvite: out-of-dialog INVITE per calling user, the From
// user@host), spent only by requests whose identity is established.
//
// Why a stage of its own, after auth: these budgets used to be counted by the ratelimit stage,
// before authentication, on whatever the message claimed. Anyone could spend them: a spray of
// unauthenticated INVITEs "From: <sip:2000@example.com>" (or REGISTERs for AOR 2000) from other
// addresses used up 2000's budget, after which 2000's own phone was refused. An identity is
// established
//   - in edge auth mode, when the auth stage has verified the digest (it sets ctx.identity): the
//     request is counted here and refused when the budget is used up;
//   - in pbx mode, when the PBX accepts the request: the edge sees that on the PBX's 2xx to a
//     request that carried credentials (the auth stage's success event; edge/edge.ts calls
//     accepted()), and counts it then.
// Every other request (pbx mode, auth off) spends nothing here but is refused while the budget of
// the user it claims is used up: only the owner can have used it up, and the owner is over its
// budget whoever asks. Unauthenticated attempts are counted before auth instead, per source and
// per (source, user) (edge/policy/limits/ratelimit.ts), so one source still cannot hammer an extension.
//
// Over a budget: a promoted source (one that authenticated; the owner's phone) gets 503 with a
// jittered Retry-After (RFC 3261 21.5.4, 20.33), as the ratelimit stage answers it; an unknown
// source is dropped silently. In-dialog INVITEs (To tag, RFC 3261 12.2) are not new calls and are
// not counted. Trusted sources skip the stage (rules/stages.yaml trustedSkip). Async: one store
// round trip per REGISTER or new INVITE; synchronous for everything else.
import type { RulesSnapshot } from '../snapshot';
import { LIMIT_RULES } from './compile';
import { from, to } from '../../sip/headers';
import type { SipRequest } from '../../sip/types';
import { LimiterCache } from '../../suspicion';
import { CONTINUE, drop, type MessageContext, type Stage, type Verdict } from '../../verdict';
import { aorKey, askBudget, overBudget, type Budget as BudgetOf, type RateLimitStageOptions } from './ratelimit';

export const USERLIMIT_REASONS = [
  'aor_register_rate',  // REGISTERs for one AOR over aorRegister (established identities only)
  'user_invite_rate',   // new calls of one user over userInvite (established identities only)
  'store_down_closed',  // the shared store is unreachable and the limit says onStoreDown: closed
] as const;

export type UserLimitReason = (typeof USERLIMIT_REASONS)[number];

/** the ratelimit stage's dependencies, and: */
export interface UserLimitStageOptions extends RateLimitStageOptions {
  /** does the stage run at all (stages.yaml)? accepted() counts nothing when it does not */
  readonly active?: () => boolean;
}

export interface UserLimitStage extends Stage {
  /** pbx mode: the PBX accepted this request (a 2xx to a request with credentials): spend the
   *  budget of the identity it carried. Fire and forget; never throws. */
  accepted(req: SipRequest): void;
}

type Budget = BudgetOf<UserLimitReason>;

/** the user budget a request belongs to, or null (other methods, in-dialog, limit off) */
function budgetOf(req: SipRequest, limits: RulesSnapshot['limits']): Budget | null {
  if (req.method === 'REGISTER') {
    const t = to(req);
    return t && limits.aorRegister !== null ? { spec: limits.aorRegister, key: aorKey(t), reason: 'aor_register_rate', rule: LIMIT_RULES.aorRegister } : null;
  }
  if (req.method === 'INVITE') {
    const t = to(req);
    if (!t || t.params.has('tag') || limits.userInvite === null) return null;
    const f = from(req);
    return f ? { spec: limits.userInvite, key: aorKey(f), reason: 'user_invite_rate', rule: LIMIT_RULES.userInvite } : null;
  }
  return null;
}

export function createUserLimitStage(o: UserLimitStageOptions): UserLimitStage {
  const { rules, suspicion } = o;
  const random = o.random ?? Math.random;
  const limiters = suspicion.limiters.store === o.store ? suspicion.limiters : new LimiterCache(o.store);

  async function decide(ctx: MessageContext, b: Budget): Promise<Verdict> {
    const r = await askBudget(limiters.get(b.spec), b.key, ctx.identity !== undefined);
    return overBudget(r, b, ctx.promoted ?? suspicion.isPromoted(ctx.source.address), rules().limits.retryAfter, random) ?? CONTINUE;
  }

  return {
    name: 'userlimit',
    skippableForTrusted: true,
    reasons: USERLIMIT_REASONS,
    scope: { sides: ['outside'], requests: ['REGISTER', 'INVITE'], responses: false },
    check(ctx: MessageContext): Verdict | Promise<Verdict> {
      if (ctx.side === 'inside' || ctx.msg.kind !== 'request') return CONTINUE;
      const b = budgetOf(ctx.msg as SipRequest, rules().limits);
      if (b === null) return CONTINUE;
      // every accessor and the store are total; a bug answers like a store outage of this limit
      return decide(ctx, b).catch(() => (b.spec.onStoreDown === 'closed' ? drop('store_down_closed', b.rule) : CONTINUE));
    },
    accepted(req: SipRequest): void {
      try {
        if (o.active?.() === false) return;
        const b = budgetOf(req, rules().limits);
        if (b !== null) void askBudget(limiters.get(b.spec), b.key);
      } catch {
        // never break the response path
      }
    },
  };
}
