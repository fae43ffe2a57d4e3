// CONTRACT (implementation pending): strict, linear-time, byte-faithful SIP parser.
import type { SipMessage } from './types';

export interface ParseLimits {
  /** whole message, start line + headers + body (default 16384) */
  maxMessageBytes: number;
  /** Request-URI length (default 512) -> 414 */
  maxRequestUriBytes: number;
  /** one header line including folded continuation lines (default 4096) */
  maxHeaderLineBytes: number;
  /** number of header lines (default 100) */
  maxHeaders: number;
}

export const DEFAULT_LIMITS: ParseLimits = {
  maxMessageBytes: 16384,
  maxRequestUriBytes: 512,
  maxHeaderLineBytes: 4096,
  maxHeaders: 100,
};

/** Closed list of parse failure reasons (stable: used in tests, metrics and logs). */
export type ParseReason =
  | 'empty'                    // nothing but whitespace
  | 'start_line_invalid'       // not "METHOD SP URI SP SIP/x.y" nor "SIP/x.y SP 3DIGIT SP reason"
  | 'method_invalid'           // method is not an RFC 3261 token
  | 'version_unsupported'      // SIP version other than 2.0 -> 505 (RFC 3261 8.2.2? / 21.5.6)
  | 'status_invalid'           // response status not 3 digits 100..699
  | 'request_uri_invalid'      // Request-URI contains whitespace/control bytes or is empty
  | 'request_uri_too_long'     // -> 414
  | 'header_line_too_long'     // a header line (with folding) over the limit
  | 'too_many_headers'
  | 'message_too_large'        // -> 413
  | 'headers_unterminated'     // no empty line ending the header section
  | 'header_syntax'            // no colon, empty or invalid header name, or folding before the first header
  | 'control_char'             // NUL, bare CR, bare LF or another control byte (except HT) in the head
  | 'content_length_invalid'   // non-numeric, negative, too large
  | 'content_length_duplicate' // more than one Content-Length (or one with several values)
  | 'content_length_missing'   // stream transports: RFC 3261 18.3 requires it
  | 'body_truncated';          // fewer body bytes than Content-Length announces (RFC 3261 18.3)

export type ParseResult =
  | { readonly ok: true; readonly msg: SipMessage }
  | {
      readonly ok: false;
      readonly reason: ParseReason;
      /** the status a request with this defect deserves (400, 413, 414, 505) */
      readonly status: number;
      /** the message as far as it could be tokenized (start line and header fields), when it
       *  could: lets the caller build an error reply from Via/From/To/Call-ID/CSeq. */
      readonly partial?: SipMessage;
    };

export interface ParseOptions {
  limits?: ParseLimits;
  /** 'datagram': bytes past Content-Length are discarded, missing Content-Length means "to the end".
   *  'stream': the buffer holds exactly one framed message, Content-Length is mandatory. */
  framing?: 'datagram' | 'stream';
}

/** Never throws on any input. */
export declare function parseMessage(raw: Buffer, opts?: ParseOptions): ParseResult;
