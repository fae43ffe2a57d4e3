// Access stage: allow / deny / trusted lists by source address (rules/access.yaml + list files).
//
// It classifies on the transport source address only (ctx.source.address: the UDP datagram's or
// TCP connection's peer, already canonical) and never on a header: Via, Contact and
// X-Forwarded-For are written by the sender, so a list keyed on them is a list an attacker edits.
// Over UDP the source can be spoofed, but then the attacker never sees a reply; a spoofed
// deny-listed address only gets itself dropped.
//
// Not skippable for trusted sources: this stage is what decides who is trusted. Inside traffic
// (the PBX side) always passes: a deny list must never cut the PBX off from the phones.
// One longest-prefix lookup per message (see edge/policy/access/compile.ts).
import type { RuleAction, RulesSnapshot } from '../snapshot';
import { ban, CONTINUE, drop, logOnly, reply, type MessageContext, type Stage, type Verdict } from '../../verdict';

export const ACCESS_REASONS = [
  'ip_denied',      // the source is on a deny list (longest prefix)
  'ip_not_allowed', // an allow-list is active and the source is on no list
] as const;

export type AccessReason = (typeof ACCESS_REASONS)[number];

/** A rule action as a verdict. Rejections carry the action's status (403 for access/geoip). */
export function actionVerdict(action: RuleAction, reason: string, rule?: string): Verdict {
  switch (action.kind) {
    case 'drop': return drop(reason, rule);
    case 'reject': {
      const extra: { rule?: string; phrase?: string } = {};
      if (rule !== undefined) extra.rule = rule;
      if (action.phrase !== undefined) extra.phrase = action.phrase;
      return reply(action.status, reason, extra);
    }
    case 'ban': return ban(reason, action.seconds, rule);
    case 'log': return logOnly(reason, rule);
    default: return drop(reason, rule);
  }
}

/** True when `address` is on the trusted list (and no longer deny/allow prefix covers it), so the
 *  caller can set ctx.trust = 'trusted' before the pipeline runs. */
export function accessTrust(snapshot: RulesSnapshot, address: string): boolean {
  return snapshot.access.classify(address)?.list === 'trusted';
}

export function createAccessStage(rules: () => RulesSnapshot): Stage {
  function check(ctx: MessageContext): Verdict {
    if (ctx.side === 'inside') return CONTINUE;
    const access = rules().access;
    // looked up once with the trust by the message path when it did (ctx.access)
    const c = ctx.access !== undefined ? ctx.access : access.classify(ctx.source.address);
    if (c !== null) {
      if (c.list === 'deny') return actionVerdict(access.denyAction, 'ip_denied', c.rule);
      return CONTINUE; // allow or trusted
    }
    // Default deny once an allow-list exists. Peers trusted by the main config (--trusted) count
    // as allowed: the operator named them explicitly.
    if (access.allowListActive && ctx.trust !== 'trusted') return actionVerdict(access.denyAction, 'ip_not_allowed', 'access:not-allowed');
    return CONTINUE;
  }
  return { name: 'access', skippableForTrusted: false, reasons: ACCESS_REASONS, scope: { sides: ['outside'], requests: 'all', responses: true }, check };
}
