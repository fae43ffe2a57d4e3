// The header edits of a forwarded request (RFC 3261 16.6): our Via on top (and the received /
// rport stamp on the client's, RFC 3581 4), Max-Forwards, the Route entries naming us removed,
// the double Record-Route with the phone's flow token, Path on REGISTER (RFC 3327), and the
// header edits a stage asked for. Pure functions of their arguments: the proxy supplies the
// listeners (chosen once by the wire) and the tokens.
import type { ResolvedConfig } from '../config/types';
import * as H from '../sip/headers';
import { stampVia } from '../sip/reply';
import type { Endpoint, SipRequest, TransportName } from '../sip/types';
import { MessageWriter } from '../sip/writer';
import type { ForwardEdits as StageEdits } from '../verdict';

/** RFC 3261 16.6 item 6 / 12.1.1: requests that create a dialog get Record-Route. */
export const DIALOG_CREATING = new Set(['INVITE', 'SUBSCRIBE', 'REFER', 'NOTIFY']);

/** Our Via for a request sent over `transport` from `hostPort` (rport asked for over UDP, RFC 3581). */
export function viaValue(transport: TransportName, hostPort: string, branch: string): string {
  return `SIP/2.0/${transport.toUpperCase()} ${hostPort};branch=${branch}${transport === 'udp' ? ';rport' : ''}`;
}

export interface RequestEdits {
  /** our Via value (viaValue) */
  readonly via: string;
  /** where the request came from (for the received/rport stamp) */
  readonly source: Endpoint;
  readonly popRoutes: number;
  readonly maxForwards: number;
  readonly stage?: StageEdits;
  /** the Record-Route value to insert (dialog-creating initial requests only) */
  readonly recordRoute?: string;
  /** the Path value to insert (REGISTER from outside) */
  readonly path?: string;
}

/** The writer holding `req` with the edits of a forwarded request applied. */
export function editForward(req: SipRequest, e: RequestEdits): MessageWriter {
  const w = new MessageWriter(req);
  // RFC 3581 4 / RFC 3261 18.2.1: record where the request really came from in the client's Via
  const top = H.topVia(req)!;
  const hasEmptyRport = top.params.has('rport') && !top.params.get('rport');
  if (hasEmptyRport || top.host !== e.source.address) {
    const stamped = stampVia(top.raw, e.source, top.host, hasEmptyRport);
    if (stamped !== top.raw) {
      w.removeFirstValue('via');
      w.prependTop('Via', stamped);
    }
  }
  w.prependTop('Via', e.via);
  // RFC 3261 16.6 item 3: decrement Max-Forwards, or add it
  const mf = H.maxForwards(req);
  if (typeof mf === 'number') w.replaceFirst('max-forwards', String(mf - 1));
  else w.append('Max-Forwards', String(e.maxForwards));
  // RFC 3261 16.4 / 16.6 item 6: remove the Route entries that name us
  for (let i = 0; i < e.popRoutes; i++) w.removeFirstValue('route');
  if (e.stage) {
    for (const name of e.stage.remove) w.removeAll(name);
    for (const [name, value] of e.stage.add) w.append(name, value);
  }
  if (e.recordRoute !== undefined) w.prependBefore('Record-Route', e.recordRoute);
  // RFC 3327 5.2: the registrar stores this Path and puts it as Route on requests to the phone
  if (e.path !== undefined) w.prependBefore('Path', e.path);
  return w;
}

/** The stateless forward of an ACK to a 2xx (RFC 3261 16.11): our Via, Max-Forwards, our Routes off. */
export function editAck(req: SipRequest, via: string, popRoutes: number, cfg: ResolvedConfig): Buffer {
  const w = new MessageWriter(req);
  w.prependTop('Via', via);
  const mf = H.maxForwards(req);
  if (typeof mf === 'number') w.replaceFirst('max-forwards', String(Math.max(0, mf - 1)));
  else w.append('Max-Forwards', String(cfg.proxy.maxForwards));
  for (let i = 0; i < popRoutes; i++) w.removeFirstValue('route');
  return w.toBuffer();
}

/** Double Record-Route (one entry per side). The outside entry carries the phone's flow token,
 *  the inside one the upstream index (`upUser`), so in-dialog requests find their way back.
 *  Top -> bottom: departure side first (the next hop sees it first), then the arrival side. */
export function recordRouteValue(fromInside: boolean, sips: boolean, flowToken: string, upUser: string | undefined,
  arrival: { hostPort: string; transport: TransportName }, departure: { hostPort: string; transport: TransportName }): string {
  const a = edgeUri(fromInside ? upUser : flowToken, arrival.hostPort, arrival.transport, sips);
  const d = edgeUri(fromInside ? flowToken : upUser, departure.hostPort, departure.transport, sips);
  return `${d}, ${a}`;
}

/** RFC 3261 16.6 item 4 / RFC 5630 4.1: is this a request for a SIPS URI (its Request-URI or its
 *  first Route)? Then the edge's Record-Route and Path entries on TLS sides are SIPS URIs. */
export function isSips(req: SipRequest): boolean {
  if (/^sips:/i.test(req.uri)) return true;
  const r = H.routes(req)?.[0];
  return r !== undefined && r.uri.scheme === 'sips';
}

/**
 * A Record-Route / Path URI naming the edge on one side: `<sips:user@host:port;lr>` for a SIPS
 * request on a TLS side (SIPS implies TLS, RFC 5630 3.1.1, so no transport parameter), else
 * `<sip:user@host:port;transport=T;lr>` (none for UDP). A SIPS request whose other side is not
 * TLS (an upstream over UDP or TCP) keeps a sip: entry there: that hop is not TLS, and a sips:
 * URI naming it would make the next hop try TLS on a UDP port.
 */
export function edgeUri(user: string | undefined, hostPort: string, transport: TransportName, sips: boolean): string {
  const u = user ? `${user}@` : '';
  if (sips && transport === 'tls') return `<sips:${u}${hostPort};lr>`;
  const t = transport === 'udp' ? '' : `;transport=${transport}`;
  return `<sip:${u}${hostPort}${t};lr>`;
}
