// CONTRACT (implementation pending): rebuilds a message for forwarding, changing only what the
// proxy must change and copying every other byte exactly as received.
import type { SipMessage } from './types';

export declare class MessageWriter {
  constructor(msg: SipMessage);
  /** replace the start line (without CRLF), e.g. strict-route RURI rewrite */
  setStartLine(line: string): this;
  /** insert "Name: value" as the first header line of the message (used for Via) */
  prependTop(name: string, value: string): this;
  /** insert "Name: value" before the first existing line with this canonical name, or at the top
   *  of the header section if there is none (Record-Route, Path) */
  prependBefore(name: string, value: string): this;
  /** append "Name: value" after the last header line */
  append(name: string, value: string): this;
  /** remove the first value of a (possibly comma-separated, possibly multi-line) header:
   *  the line is dropped if it held only that value, else rewritten with the remaining values */
  removeFirstValue(name: string): this;
  /** replace the value of the first line with this name (keeps the received name form) */
  replaceFirst(name: string, value: string): this;
  /** remove every line with this canonical name */
  removeAll(name: string): this;
  /** the forwardable bytes: start line, headers, CRLF, exactly bodyLength body bytes */
  toBuffer(): Buffer;
}
