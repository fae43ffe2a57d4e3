// Scanner-signature stage: recognises SIP scanners (SIPVicious svmap/svwar/svcrack,
// friendly-scanner clones, sippts, sipsak floods ...) by the signatures of rules/scanner.yaml
// (compiled in edge/policy/scanner/compile.ts) and turns a hit into the signature's action.
//
// Default action is a silent drop: a scanner maps a network by what answers (svmap reports a
// device for any reply, svwar tells extensions apart by the status code), so the cheapest and
// safest answer is none. RFC 3261 does not oblige a server to answer traffic it refuses (18.2.1
// lets a server discard a request it cannot process; over UDP nothing distinguishes that from
// loss), and Kamailio/OpenSIPS scanner-blocking recipes drop the same way.
//
// Responses are checked too (a scanner can forge responses), but a response is only ever
// dropped: nothing answers a response (RFC 3261 17.1.3, 18.1.2), and a ban needs the later ban
// store. Inside traffic (the PBX) is never scanned: the rules are about what the internet sends.
import type { RulesSnapshot } from '../snapshot';
import { CONTINUE, ban, drop, logOnly, reply, type MessageContext, type Stage, type Verdict } from '../../verdict';
import type { CompiledSignature } from './compile';
import type { SipMessage } from '../../sip/types';

export const SCANNER_REASONS = [
  /** a User-Agent (or Server) pattern matched */
  'scanner_user_agent',
  /** a pattern on another header, or on any header ('*') */
  'scanner_header',
  /** a pattern on the Request-URI */
  'scanner_request_uri',
  /** a pattern on the body */
  'scanner_body',
  /** a structural fingerprint (From tag shape, port 9 ...) */
  'scanner_fingerprint',
] as const;

export type ScannerReason = (typeof SCANNER_REASONS)[number];

export function reasonFor(sig: CompiledSignature): ScannerReason {
  if (sig.fingerprint !== undefined) return 'scanner_fingerprint';
  switch (sig.where) {
    case 'user-agent':
    case 'server':
      return 'scanner_user_agent';
    case 'body':
      return 'scanner_body';
    case 'request-uri':
      return 'scanner_request_uri';
    default:
      return 'scanner_header';
  }
}

/** The verdict a matching signature gives for this message. */
export function verdictFor(sig: CompiledSignature, msg: SipMessage): Verdict {
  const reason = reasonFor(sig);
  const a = sig.action;
  if (a.kind === 'log') return logOnly(reason, sig.name);
  // a response never bans on its own: drop it (see the header comment); a reject aimed at a
  // response or an ACK is turned into a drop where replies are sent (edge/path/respond.ts)
  if (msg.kind === 'response' && a.kind === 'ban') return drop(reason, sig.name);
  switch (a.kind) {
    case 'drop':
      return drop(reason, sig.name);
    case 'reject':
      return reply(a.status, reason, a.phrase !== undefined ? { rule: sig.name, phrase: a.phrase } : { rule: sig.name });
    case 'ban':
      return ban(reason, a.seconds, sig.name);
  }
}

/**
 * `rules` returns the active snapshot; it is read once per message so a reload swaps the
 * signature set between two messages, never during one.
 */
export function createScannerStage(rules: () => RulesSnapshot): Stage {
  return {
    name: 'scanner',
    skippableForTrusted: true,
    reasons: SCANNER_REASONS,
    scope: { sides: ['outside'], requests: 'all', responses: true },
    // a signature hit that refuses spends the source's suspicion budget (a ban verdict bans)
    suspects: { event: 'scanner', on: ['reply', 'drop'], rule: 'rule' },
    check(ctx: MessageContext): Verdict {
      if (ctx.side === 'inside') return CONTINUE;
      const sig = rules().scanner.match(ctx.msg);
      if (sig === null) return CONTINUE;
      return verdictFor(sig, ctx.msg);
    },
  };
}
