// SIPS enforcement (RFC 3261 26.2.2, RFC 5630): a request for a SIPS URI is secured with TLS on
// every hop, and the edge controls two of them: the one it arrived on and the one it leaves on.
//
// - Arriving: a sips: request from outside over a transport that is not TLS (UDP, TCP, plain
//   WS) has already crossed an insecure hop, against RFC 3261 26.2.2 / RFC 5630 3.1.1 (SIPS
//   means TLS on each hop); the edge does not launder it into a secure-looking request on the
//   inside: 400 `sips_not_tls_inbound`, Warning 381 "SIPS Required" (a warn-code RFC 5630
//   registered). From inside (the PBX side, the operator's own network) the edge does not
//   second-guess the PBX's transport.
// - Leaving: RFC 5630 removed RFC 3261's last-hop exception: if the next hop the edge chose is
//   not TLS (an upstream on UDP/TCP, a phone registered over UDP), the request is refused rather
//   than sent in clear: 480 Temporarily Unavailable with Warning 380 "SIPS Not Allowed", the
//   answer RFC 5630 5.3 gives when a SIPS request has no SIPS-capable target.
//   ACKs are never answered (RFC 3261 17): an ACK of a SIPS dialog toward a non-TLS hop is
//   dropped (its INVITE was refused the same way, so only a forged or stray one gets here).
//
// What counts as TLS: tls, and wss (SIP over secure WebSocket, RFC 7118 5.3 maps sips: to wss).
import type { Endpoint, SipRequest } from '../sip/types';
import * as H from '../sip/headers';

/** Closed list of this module's reason codes (they join the proxy's). */
export const SIPS_REASONS = ['sips_next_hop_not_tls', 'sips_not_tls_inbound'] as const;
export type SipsReason = (typeof SIPS_REASONS)[number];

export interface SipsRefusal {
  readonly status: number;
  readonly reason: SipsReason;
  readonly headers: ReadonlyArray<readonly [string, string]>;
}

/** RFC 3261 16.6 item 4 / RFC 5630 4.1: a request for a SIPS URI: its Request-URI, or, for a
 *  request following a route set, its first Route (the next hop it asked for). */
export function isSipsRequest(req: SipRequest): boolean {
  if (req.uri.length >= 5 && req.uri.slice(0, 5).toLowerCase() === 'sips:') return true;
  const r = H.routes(req)?.[0];
  return r !== undefined && r.uri.scheme === 'sips';
}

export function isSecureTransport(t: string): boolean {
  return t === 'tls' || t === 'wss';
}

/** warn-agent: a pseudonym (RFC 3261 20.43 allows one) so that no address is disclosed */
const AGENT = 'sip-edge';

/** Arrival check, for a request from outside: undefined when it may go on. */
export function sipsInbound(req: SipRequest, source: Endpoint): SipsRefusal | undefined {
  if (isSecureTransport(source.transport) || !isSipsRequest(req)) return undefined;
  return { status: 400, reason: 'sips_not_tls_inbound', headers: [['Warning', `381 ${AGENT} "SIPS Required"`]] };
}

/** Departure check, once the next hop is chosen: undefined when it may be sent there. */
export function sipsNextHop(req: SipRequest, dest: Endpoint): SipsRefusal | undefined {
  if (isSecureTransport(dest.transport) || !isSipsRequest(req)) return undefined;
  return { status: 480, reason: 'sips_next_hop_not_tls', headers: [['Warning', `380 ${AGENT} "SIPS Not Allowed"`]] };
}
