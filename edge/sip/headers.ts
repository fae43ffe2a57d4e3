// CONTRACT (implementation pending): typed, lazily memoised access to header values.
// Every function is total: it never throws; `undefined` means absent, `null` means present but
// unparsable (the caller turns that into its own reason code).
import type { CSeq, HeaderField, NameAddr, SipMessage, SipUri, Via } from './types';

/** canonical long lower-case name for a header name as received (compact forms expanded):
 *  v via, f from, t to, i call-id, m contact, l content-length, c content-type, k supported,
 *  s subject, e content-encoding, o event, u allow-events, r refer-to, b referred-by,
 *  x session-expires, y identity, a accept-contact, j reject-contact, d request-disposition. */
export declare function canonicalName(rawName: string): string;

/** all header fields with this canonical name, in order */
export declare function fields(msg: SipMessage, name: string): HeaderField[];
/** value of the first field with this name */
export declare function first(msg: SipMessage, name: string): string | undefined;
/** number of header lines with this name */
export declare function count(msg: SipMessage, name: string): number;

/** split a header value on top-level commas (not inside quotes, <>, or after a backslash in quotes) */
export declare function splitCommaList(value: string): string[];

export declare function parseUri(text: string): SipUri | null;
export declare function parseNameAddr(text: string): NameAddr | null;
export declare function parseVia(text: string): Via | null;

/** all Via values, across all Via lines, top first; null when any value is unparsable */
export declare function vias(msg: SipMessage): Via[] | null;
export declare function topVia(msg: SipMessage): Via | null | undefined;
export declare function from(msg: SipMessage): NameAddr | null | undefined;
export declare function to(msg: SipMessage): NameAddr | null | undefined;
export declare function callId(msg: SipMessage): string | null | undefined;
export declare function cseq(msg: SipMessage): CSeq | null | undefined;
/** Max-Forwards value 0..255 (RFC 3261 20.22 allows any 1*DIGIT; values over 255 are clamped? no: null) */
export declare function maxForwards(msg: SipMessage): number | null | undefined;
export declare function contentLength(msg: SipMessage): number | null | undefined;
export declare function expires(msg: SipMessage): number | null | undefined;
/** all Route / Record-Route / Path / Contact values across lines, in order; null if any unparsable.
 *  Contact "*" is returned as an empty array with msg.cache.contactStar = true. */
export declare function routes(msg: SipMessage): NameAddr[] | null | undefined;
export declare function recordRoutes(msg: SipMessage): NameAddr[] | null | undefined;
export declare function paths(msg: SipMessage): NameAddr[] | null | undefined;
export declare function contacts(msg: SipMessage): NameAddr[] | null | undefined;
/** option tags from Proxy-Require / Require / Supported, lower-case */
export declare function optionTags(msg: SipMessage, name: 'proxy-require' | 'require' | 'supported'): string[];
/** the Request-URI of a request, parsed (memoised) */
export declare function requestUri(msg: SipMessage): SipUri | null;
