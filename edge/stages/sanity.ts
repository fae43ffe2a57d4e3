// Sanity stage: structural checks every message must pass before any other stage reads a header.
// Modelled on Kamailio's sanity module (ruri scheme/version, required headers, Via protocol, CSeq
// method and value, Expires, Proxy-Require, URI parsing) plus the edge's own rules (duplicates of
// single-valued headers, Max-Forwards, Vias that would aim responses at maddr or broadcast
// addresses, refused on requests and responses alike).
//
// Requests get a reply when one can be built; responses and ACKs are only ever dropped
// (RFC 3261 17: nothing answers an ACK; a response is never answered).
// Synchronous and cheap: one pass over the header list, then only the memoised accessors.
import {
  callId, contacts, cseq, expires, fields, from, maxForwards, requestUri, splitCommaList, to, topVia, vias,
} from '../sip/headers';
import type { SipMessage, Via } from '../sip/types';
import { CONTINUE, drop, reply, type MessageContext, type Stage, type Verdict } from '../verdict';

export const SANITY_REASONS = [
  'ruri_invalid',
  'ruri_scheme_unsupported',
  'ruri_headers',
  'header_missing_via',
  'header_missing_from',
  'header_missing_to',
  'header_missing_call_id',
  'header_missing_cseq',
  'header_duplicate_from',
  'header_duplicate_to',
  'header_duplicate_call_id',
  'header_duplicate_cseq',
  'header_duplicate_max_forwards',
  'via_invalid',
  'cseq_invalid',
  'cseq_method_mismatch',
  'from_invalid',
  'to_invalid',
  'from_tag_missing',
  'max_forwards_invalid',
  'max_forwards_exceeded',
  'expires_invalid',
  'contact_invalid',
  'proxy_require_unsupported',
  'via_maddr',
  'via_broadcast',
] as const;

export type SanityReason = (typeof SANITY_REASONS)[number];

export interface SanityOptions {
  /** Request-URI schemes the edge routes (lower-case). Default sip, sips, tel. */
  readonly schemes: readonly string[];
  /** reject requests whose From has no tag. Default false: RFC 2543 clients (RFC 4475 3.4.1) send none. */
  readonly requireFromTag: boolean;
  /** option tags the edge itself implements for Proxy-Require (case-insensitive). Default none. */
  readonly proxyRequireSupported: readonly string[];
  /** check Contact values parse and that an addr-spec Contact carries no URI headers. Default true. */
  readonly checkContact: boolean;
  /** drop responses whose top or next Via carries maddr or a broadcast/multicast address, and
   *  refuse requests whose top Via does (their responses would be dropped). Default true. */
  readonly checkResponseVia: boolean;
}

export const DEFAULT_SANITY_OPTIONS: SanityOptions = Object.freeze({
  schemes: Object.freeze(['sip', 'sips', 'tel']),
  requireFromTag: false,
  proxyRequireSupported: Object.freeze([]) as readonly string[],
  checkContact: true,
  checkResponseVia: true,
});

// RFC 3261 8.1.1.5: the sequence number MUST be expressible as a 32-bit unsigned integer and be
// less than 2**31.
const CSEQ_MAX = 2 ** 31 - 1;
// RFC 3261 20.19 / 25.1: delta-seconds; RFC 4475 3.1.2.4 (scalar02) treats values past 2**32-1 as
// overlarge.
const EXPIRES_MAX = 2 ** 32 - 1;
// RFC 3986 3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
const SCHEME_RE = /^([A-Za-z][A-Za-z0-9+.-]*):/;

interface Counts {
  via: number;
  from: number;
  to: number;
  callId: number;
  cseq: number;
  maxForwards: number;
  contact: number;
  proxyRequire: number;
  expires: number;
}

/** one pass over the header list instead of one scan per header name */
function countHeaders(msg: SipMessage): Counts {
  const c: Counts = { via: 0, from: 0, to: 0, callId: 0, cseq: 0, maxForwards: 0, contact: 0, proxyRequire: 0, expires: 0 };
  const hs = msg.headers;
  for (let i = 0; i < hs.length; i++) {
    switch (hs[i]!.name) {
      case 'via': c.via++; break;
      case 'from': c.from++; break;
      case 'to': c.to++; break;
      case 'call-id': c.callId++; break;
      case 'cseq': c.cseq++; break;
      case 'max-forwards': c.maxForwards++; break;
      case 'contact': c.contact++; break;
      case 'proxy-require': c.proxyRequire++; break;
      case 'expires': c.expires++; break;
      default: break;
    }
  }
  return c;
}

function isBroadcastOrMulticast(host: string): boolean {
  // IPv6 multicast ff00::/8 (RFC 4291 2.7)
  if (host.includes(':')) return /^ff[0-9a-f]{2}:/i.test(host);
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  if (!m) return false;
  const a = Number(m[1]);
  // limited broadcast (RFC 919) and IPv4 multicast 224.0.0.0/4 (RFC 5771)
  if (host === '255.255.255.255') return true;
  return a >= 224 && a <= 239;
}

/**
 * The one predicate for both directions (RFC 3261 18.2.2): would a response routed by this Via go
 * somewhere the edge refuses to send? A response is dropped when its top Via (the hop it is for)
 * or its next Via (where it would be sent) fails; a request is refused when its top Via fails,
 * because that Via becomes the next Via of every response to it. Refusing the request is what
 * matters: forwarded, it creates transactions whose answers the edge then drops, and the PBX is
 * left answering into nothing while the edge's client transaction runs to its timeout.
 */
export function viaUndeliverable(v: Via): SanityReason | null {
  // RFC 3261 18.2.2: a response goes to maddr when present; an edge facing the internet never
  // sends to a multicast group (or any address but the real source) on an attacker's say-so.
  if (v.params.has('maddr')) return 'via_maddr';
  // RFC 4475 3.3.10 (bcast): a Via sent-by of 255.255.255.255 turns the next hop into a broadcast.
  if (isBroadcastOrMulticast(v.host)) return 'via_broadcast';
  const received = v.params.get('received');
  if (received && isBroadcastOrMulticast(received.replace(/^\[|\]$/g, ''))) return 'via_broadcast';
  return null;
}

export function createSanityStage(opts?: Partial<SanityOptions>): Stage {
  const o: SanityOptions = { ...DEFAULT_SANITY_OPTIONS, ...opts };
  const schemes = new Set(o.schemes.map((s) => s.toLowerCase()));
  const proxySupported = new Set(o.proxyRequireSupported.map((s) => s.toLowerCase()));

  function check(ctx: MessageContext): Verdict {
    const msg = ctx.msg;
    const isRequest = msg.kind === 'request';
    const c = countHeaders(msg);
    // RFC 3261 8.2.6.2: a response copies Via, From, To, Call-ID and CSeq; without one of each no
    // reply can be built, so the request is dropped instead. With duplicates (RFC 4475 multi01,
    // which expects a 400) the reply echoes the first of each, as Kamailio's sl_send_reply does.
    // (an ACK is never answered: edge/path/respond.ts turns a reply aimed at one into a drop)
    const replyable = isRequest && c.via > 0 && c.from > 0 && c.to > 0 && c.callId > 0 && c.cseq > 0;
    const fail = (status: number, reason: SanityReason, headers?: ReadonlyArray<readonly [string, string]>): Verdict =>
      replyable ? reply(status, reason, headers ? { headers } : undefined) : drop(reason);

    // RFC 3261 8.1.1: To, From, CSeq, Call-ID, Max-Forwards and Via are mandatory in requests.
    // Max-Forwards is not required here: RFC 3261 16.3 step 3 lets a proxy pass a request without
    // one, and RFC 2543 clients (RFC 4475 3.4.1 inv2543) never send it. Responses carry the same
    // five (RFC 3261 8.2.6.2).
    if (c.via === 0) return fail(400, 'header_missing_via');
    if (c.from === 0) return fail(400, 'header_missing_from');
    if (c.to === 0) return fail(400, 'header_missing_to');
    if (c.callId === 0) return fail(400, 'header_missing_call_id');
    if (c.cseq === 0) return fail(400, 'header_missing_cseq');
    // RFC 3261 7.3.1 / 20: these are single-valued; two of them (RFC 4475 3.3.8 multi01) make the
    // dialog and transaction identity ambiguous.
    if (c.from > 1) return fail(400, 'header_duplicate_from');
    if (c.to > 1) return fail(400, 'header_duplicate_to');
    if (c.callId > 1) return fail(400, 'header_duplicate_call_id');
    if (c.cseq > 1) return fail(400, 'header_duplicate_cseq');
    if (c.maxForwards > 1) return fail(400, 'header_duplicate_max_forwards');

    // RFC 3261 20.42 / 8.1.1.7: sent-protocol must be SIP/2.0 (Kamailio sanity "via sip version").
    const top = topVia(msg);
    if (!top || top.protocol.replace(/\s+/g, '').toUpperCase() !== 'SIP/2.0') return fail(400, 'via_invalid');

    // RFC 3261 8.1.1.5 / 20.16: CSeq = 1*DIGIT LWS Method, number < 2**31.
    const cs = cseq(msg);
    if (!cs || !Number.isSafeInteger(cs.seq) || cs.seq < 0 || cs.seq > CSEQ_MAX) return fail(400, 'cseq_invalid');
    // RFC 3261 8.1.1.5: the CSeq method MUST match the request method (RFC 4475 3.1.2.17/18).
    // ACK and CANCEL carry their own method in CSeq (RFC 3261 17.1.1.3, 9.1), so equality holds too.
    if (isRequest && cs.method !== msg.method) return fail(400, 'cseq_method_mismatch');

    if (!callId(msg)) return fail(400, 'header_missing_call_id');

    if (isRequest) {
      const v = checkRequestUri(msg.uri, msg);
      if (v !== null) return v === 'ruri_scheme_unsupported' ? fail(416, v) : fail(400, v);
    }

    // RFC 3261 20.20 / 20.39: From/To are name-addr or addr-spec (Kamailio sanity "parse uris").
    const f = from(msg);
    if (!f) return fail(400, 'from_invalid');
    if (!to(msg)) return fail(400, 'to_invalid');
    // RFC 3261 8.1.1.3 makes the From tag mandatory, but RFC 2543 peers omit it (RFC 4475 3.4.1):
    // required only when configured.
    if (o.requireFromTag && isRequest && !f.params.get('tag')) return fail(400, 'from_tag_missing');

    if (isRequest) {
      if (c.maxForwards === 1) {
        const mf = maxForwards(msg);
        // RFC 3261 20.22: Max-Forwards = 1*DIGIT, 0-255.
        if (mf === null || mf === undefined || mf < 0 || mf > 255) return fail(400, 'max_forwards_invalid');
        // RFC 3261 16.3 step 3: a request with Max-Forwards 0 must not be forwarded: 483. OPTIONS
        // MAY be answered by the proxy itself; the edge is not the target, so 483 too (RFC 4475
        // 3.3.11 zeromf: "a proxy should ... respond 483").
        if (mf === 0) return fail(483, 'max_forwards_exceeded');
      }
      if (c.expires > 0) {
        // RFC 3261 20.19: Expires = delta-seconds; RFC 4475 3.1.2.4 scalar02.
        const ex = expires(msg);
        if (ex === null || ex === undefined || ex < 0 || ex > EXPIRES_MAX) return fail(400, 'expires_invalid');
      }
    }

    if (o.checkContact && c.contact > 0) {
      const cs2 = contacts(msg);
      if (cs2 === null) return fail(400, 'contact_invalid');
      if (cs2 !== undefined) {
        for (const na of cs2) {
          // RFC 3261 20.10: a URI with a comma, question mark or semicolon MUST be enclosed in
          // <>; an addr-spec Contact with "?headers" is ambiguous (RFC 4475 3.1.2.13 regbadct).
          if (na.uri.headers !== undefined && !na.raw.includes('<')) return fail(400, 'contact_invalid');
        }
      }
    }

    if (isRequest && c.proxyRequire > 0) {
      // RFC 3261 16.3 step 4 / 20.29: a proxy MUST reject option tags it does not understand in
      // Proxy-Require with 420, listing them in Unsupported (RFC 4475 3.3.5 bext01). Tags are
      // echoed as received; Require is for the UAS and is not the edge's business.
      const unsupported: string[] = [];
      for (const h of fields(msg, 'proxy-require')) {
        for (const raw of splitCommaList(h.value)) {
          const tag = raw.trim();
          if (tag.length > 0 && !proxySupported.has(tag.toLowerCase())) unsupported.push(tag);
        }
      }
      if (unsupported.length > 0) return fail(420, 'proxy_require_unsupported', [['Unsupported', unsupported.join(', ')]]);
    }

    if (o.checkResponseVia) {
      // every Via must parse: a response whose Via list does not is dropped below, so a request
      // with one would be forwarded only to have its answers dropped
      const all = vias(msg);
      if (isRequest) {
        // RFC 3261 18.2.2: refuse on the way in what would be refused on the way out, before any
        // transaction exists (the response to this request would carry `top` as its next Via)
        if (all === null) return fail(400, 'via_invalid');
        const r = viaUndeliverable(top);
        if (r !== null) return fail(400, r);
      } else {
        // The top Via is the hop this response is for; the next one is where it would be sent.
        const r = viaUndeliverable(top);
        if (r !== null) return drop(r);
        if (all === null) return drop('via_invalid');
        if (all !== undefined && all.length > 1) {
          const r2 = viaUndeliverable(all[1]!);
          if (r2 !== null) return drop(r2);
        }
      }
    }

    return CONTINUE;
  }

  function checkRequestUri(text: string, msg: SipMessage): SanityReason | null {
    const m = SCHEME_RE.exec(text);
    // RFC 3261 25.1: Request-URI = SIP-URI / SIPS-URI / absoluteURI; "<sip:...>" (RFC 4475
    // 3.1.2.7 ltgtruri) has no scheme at all.
    if (!m) return 'ruri_invalid';
    // RFC 3261 8.2.2.1 / 16.3 step 1: an unsupported scheme gets 416 (RFC 4475 3.3.2/3.3.3).
    if (!schemes.has(m[1]!.toLowerCase())) return 'ruri_scheme_unsupported';
    const u = requestUri(msg);
    if (!u) return 'ruri_invalid';
    // RFC 3261 19.1.1 table: "headers" are not allowed in a Request-URI (RFC 4475 3.1.2.11).
    if (u.headers !== undefined) return 'ruri_headers';
    return null;
  }

  // every refusal is evidence of a broken or hostile sender (a ban verdict bans)
  return { name: 'sanity', reasons: SANITY_REASONS, suspects: { event: 'malformed', on: ['reply', 'drop'], rule: 'reason' }, check };
}
