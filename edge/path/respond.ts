// Respond: the only place where a verdict becomes bytes on the wire (Haraka's connection turns a
// plugin outcome into an SMTP reply; Kamailio's sanity_reply guards ACK in one place). Stages,
// the gate, the parse step and the proxy decide; this module builds the reply (RFC 3261 8.2.6)
// and sends it.
//
// Who is never answered is decided here, once, and before anything counts the verdict:
// RFC 3261 17 (17.1.1.3, 17.2.1): nothing is ever sent in reply to an ACK; RFC 3261 8.1.3.1 and
// 18.1.2: a response is never answered. A reply aimed at either is turned into a drop with the
// same reason, so the metrics say "drop" for what was dropped (before, a `reject` aimed at an ACK
// was counted as a reply that was never sent).
import { buildReply, stableTag } from '../sip/reply';
import type { Endpoint, SipMessage, SipRequest } from '../sip/types';
import type { Verdict } from '../verdict';

/** The verdict as it will be carried out: a reply to an ACK, a response or an unparsed message
 *  is a drop (same reason, rule and events). Idempotent; the pipeline and the gate call it
 *  before a verdict is counted. */
export function answerable(v: Verdict, msg: SipMessage | undefined): Verdict {
  if (v.action !== 'reply' || (msg !== undefined && msg.kind === 'request' && msg.method !== 'ACK')) return v;
  // the shape drop() makes (edge/verdict.ts), plus the events the reply carried
  return v.events !== undefined ? { action: 'drop', reason: v.reason, rule: v.rule, events: v.events } : { action: 'drop', reason: v.reason, rule: v.rule };
}

export interface ReplyParts {
  readonly phrase?: string;
  readonly headers?: ReadonlyArray<readonly [string, string]>;
}

export interface ResponderOptions {
  /** Server header value (config serverHeader); none when undefined */
  readonly server?: string;
  /** hand the bytes to the transport (the proxy's wire: picks the listener, counts the send) */
  readonly send: (dest: Endpoint, bytes: Buffer) => boolean;
}

export class Responder {
  constructor(private readonly o: ResponderOptions) {}

  /** Carry out a verdict: a reply is built and sent to `source`; anything else sends nothing.
   *  Returns the bytes sent, or null. */
  verdict(v: Verdict, msg: SipMessage | undefined, source: Endpoint): Buffer | null {
    const eff = answerable(v, msg);
    if (eff.action !== 'reply') return null;
    return this.reply(msg as SipRequest, source, eff.status, eff);
  }

  /** Answer `req` (a request, never an ACK: anything else is not answered) with `status`. The
   *  To tag is stable per request (RFC 3261 8.2.6.2), so a retransmission gets the same reply. */
  reply(req: SipMessage, source: Endpoint, status: number, parts: ReplyParts = {}): Buffer | null {
    if (req.kind !== 'request' || req.method === 'ACK') return null;
    const bytes = buildReply(req, status, { phrase: parts.phrase, headers: parts.headers, source, toTag: stableTag(req, 'se'), server: this.o.server });
    if (!bytes) return null;
    this.o.send(source, bytes);
    return bytes;
  }
}
