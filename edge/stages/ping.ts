// Ping stage: OPTIONS addressed to the edge itself (keepalives and monitoring "qualify" pings).
//
// Carriers and monitoring systems check that a SIP server is alive with an OPTIONS whose
// Request-URI names the server and no user (RFC 3261 11: "sip:edge.example.com"). In edge auth
// mode such a ping from an untrusted source used to be challenged (407) like a call; the prober
// never answers a challenge, every ping was a missing_auth suspicion event, and after about 50
// pings (20 of budget, 30 more during the grace) the prober was banned and got nothing more.
// Kamailio's default configuration answers these pings itself with 200; so does this stage.
//
// What is a ping to the edge: method OPTIONS; a sip/sips Request-URI without a user part whose
// host is the edge (a listening address, the advertised address) or a served domain; outside any
// dialog (no To tag, RFC 3261 12.2); no Route except the edge's own entries (a Route toward
// anything else means the ping is for whatever lies behind it). An OPTIONS to a user
// ("sip:1000@example.com") is for the PBX and goes on as before.
//
// Modes (sip-edge.yaml `pings`):
//   answer     this stage answers 200 (default)
//   forward    the ping goes on to the PBX without an edge challenge (the auth stage is told so
//              through isPing(), edge/edge.ts)
//   challenge  nothing special: in edge auth mode the ping is challenged like any request
//
// Where it runs (rules/stages.yaml): after sanity, access, scanner, geoip and ratelimit, before
// auth. A banned source is dropped at the gate before any stage, a scanner signature or an access
// or GeoIP refusal still decides first, and a ping flood is still a flood (the per-source budget
// counts pings and drops the excess). Answering before auth means no challenge and no suspicion.
// Being a stage, shadow mode, the verdict metrics and "never reply to an ACK" stay in the
// pipeline and the one function that turns verdicts into bytes.
//
// The 200 carries what RFC 3261 11.2 asks of an answer to OPTIONS: Allow, Accept,
// Accept-Encoding, Accept-Language and Supported (the edge answers as the UAS the Request-URI
// names, so Allow is not ambiguous here), and no body. It names no product (no Server header):
// a prober learns that something is alive, not what.
import { requestUri, routes, to } from '../sip/headers';
import type { SipRequest, SipUri } from '../sip/types';
import { CONTINUE, reply, type MessageContext, type Stage, type Verdict } from '../verdict';

export const PING_REASONS = [
  'options_ping', // an OPTIONS to the edge itself, answered 200 by the edge
] as const;

export const PING_MODES = ['answer', 'forward', 'challenge'] as const;
export type PingMode = (typeof PING_MODES)[number];

/** The headers of the 200 (RFC 3261 11.2, 20.5, 20.1, 20.2, 20.3, 20.37). Allow lists the methods
 *  the edge takes from outside and hands on; Supported names path (RFC 3327), which the edge
 *  implements for registrations. */
export const PING_REPLY_HEADERS: ReadonlyArray<readonly [string, string]> = Object.freeze([
  ['Allow', 'INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, PRACK, UPDATE, INFO, MESSAGE, SUBSCRIBE, NOTIFY, REFER'],
  ['Accept', 'application/sdp'],
  ['Accept-Encoding', 'identity'],
  ['Accept-Language', 'en'],
  ['Supported', 'path'],
] as const);

export interface PingTarget {
  /** is this (lower-case) host the edge itself, its advertised address or a served domain? */
  serves(host: string): boolean;
  /** is this Route URI one of the edge's own entries (the proxy pops them, RFC 3261 16.4)? */
  isOwnRoute(u: SipUri): boolean;
}

/** Is `req` an OPTIONS ping addressed to the edge itself (see the header)? Total. */
export function isPing(req: SipRequest, target: PingTarget): boolean {
  if (req.method !== 'OPTIONS') return false;
  const ruri = requestUri(req);
  if (!ruri || (ruri.scheme !== 'sip' && ruri.scheme !== 'sips') || (ruri.user !== undefined && ruri.user !== '')) return false;
  if (!target.serves(ruri.host)) return false;
  if (to(req)?.params.has('tag') !== false) return false;
  const rs = routes(req);
  if (rs === null) return false; // unreadable Route: not ours to answer
  if (rs !== undefined) for (const r of rs) if (!target.isOwnRoute(r.uri)) return false;
  return true;
}

export interface PingStageOptions {
  /** sip-edge.yaml `pings` */
  readonly mode: PingMode;
  readonly target: PingTarget;
}

export function createPingStage(o: PingStageOptions): Stage {
  const answer: Verdict = reply(200, 'options_ping', { headers: PING_REPLY_HEADERS });
  return {
    name: 'ping',
    reasons: PING_REASONS,
    scope: { sides: ['outside'], requests: ['OPTIONS'], responses: false },
    check(ctx: MessageContext): Verdict {
      // the PBX side is not answered for: its OPTIONS go where they are addressed
      if (o.mode !== 'answer' || ctx.side !== 'outside' || ctx.msg.kind !== 'request') return CONTINUE;
      return isPing(ctx.msg as SipRequest, o.target) ? answer : CONTINUE;
    },
  };
}
