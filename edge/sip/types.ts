// Core SIP data types shared by the parser, the stages, the transaction layer and the router.
//
// A parsed message keeps the bytes it was parsed from (`raw`) and, for every header line,
// the byte range it occupies. Forwarding rewrites only the lines it must (see writer.ts) and
// copies every other byte exactly as received, so that signatures, odd-but-legal formatting
// and unknown headers reach the PBX untouched.
//
// Header values are decoded as latin1 so that one JS character is exactly one byte: offsets
// computed on strings are byte offsets into `raw`. UTF-8 text (display names) therefore shows
// as its bytes; decode with Buffer.from(s, 'latin1').toString('utf8') where a human reads it.

export type TransportName = 'udp' | 'tcp' | 'tls' | 'ws' | 'wss';

/** A transport-level peer: where bytes came from or go to. Addresses are canonical
 *  (IPv4-mapped IPv6 `::ffff:a.b.c.d` becomes `a.b.c.d`; IPv6 lower-case, compressed, no brackets). */
export interface Endpoint {
  readonly transport: TransportName;
  readonly address: string;
  readonly port: number;
  /** stream transports: the id of the connection the bytes came on / must go out on */
  readonly connId?: number;
  /** id of the local listener that received the bytes / should send them */
  readonly listenerId?: string;
}

/** One header line (with its folded continuation lines) as found in the message. */
export interface HeaderField {
  /** the name as received ("v", "Via", "VIA") */
  readonly rawName: string;
  /** canonical lower-case long name: "v" -> "via", "Call-ID" -> "call-id" */
  readonly name: string;
  /** value with folding (CRLF + WSP) replaced by one SP, and leading/trailing LWS removed; latin1 */
  readonly value: string;
  /** byte offset of the first byte of the line in raw */
  readonly start: number;
  /** byte offset just past the CRLF that ends the line (after any continuation lines) */
  readonly end: number;
}

export interface SipMessageBase {
  /** the bytes this message was parsed from (for UDP, possibly followed by discarded bytes) */
  readonly raw: Buffer;
  /** byte offset just past the start line's CRLF */
  readonly startLineEnd: number;
  readonly headers: readonly HeaderField[];
  /** byte offset of the first body byte (just past the empty line) */
  readonly bodyStart: number;
  /** number of body bytes: Content-Length when present, else (UDP) the rest of the datagram */
  readonly bodyLength: number;
  /** "SIP/2.0" */
  readonly version: string;
  /** memo of lazily parsed header values; owned by edge/sip/headers.ts (a Map: string-keyed
   *  objects that grow per message fall into V8's dictionary mode, which cost ~5 % of a call) */
  readonly cache: Map<string, unknown>;
}

export interface SipRequest extends SipMessageBase {
  readonly kind: 'request';
  /** method token, case-sensitive as RFC 3261 7.1 says ("INVITE", "invite" is another method) */
  readonly method: string;
  /** Request-URI exactly as received */
  readonly uri: string;
}

export interface SipResponse extends SipMessageBase {
  readonly kind: 'response';
  readonly status: number;
  readonly reason: string;
}

export type SipMessage = SipRequest | SipResponse;

/** A parsed SIP/SIPS/TEL URI. Strings are latin1 and keep their %-escapes unless noted. */
export interface SipUri {
  /** lower-case scheme: "sip", "sips", "tel", ... */
  readonly scheme: string;
  readonly user?: string;
  readonly password?: string;
  /** lower-case host; IPv6 references without brackets ("2001:db8::1") */
  readonly host: string;
  readonly isIPv6: boolean;
  readonly port?: number;
  /** uri-parameters: lower-case names; value null when the parameter has no "=value" */
  readonly params: ReadonlyMap<string, string | null>;
  /** the "?h=v&..." headers part without the "?" */
  readonly headers?: string;
  readonly raw: string;
}

/** name-addr / addr-spec with header parameters: From, To, Contact, Route, Record-Route, Path. */
export interface NameAddr {
  readonly displayName?: string;
  readonly uri: SipUri;
  /** the URI text between < > (or the bare addr-spec) */
  readonly uriRaw: string;
  /** header parameters (after the URI): lower-case names */
  readonly params: ReadonlyMap<string, string | null>;
  readonly raw: string;
}

export interface Via {
  /** "SIP/2.0" */
  readonly protocol: string;
  /** upper-case transport: "UDP", "TCP", "TLS", "WS", "WSS", "SCTP" ... */
  readonly transport: string;
  /** sent-by host, lower-case, IPv6 without brackets */
  readonly host: string;
  readonly port?: number;
  readonly params: ReadonlyMap<string, string | null>;
  readonly branch?: string;
  readonly raw: string;
}

export interface CSeq {
  readonly seq: number;
  readonly method: string;
}
