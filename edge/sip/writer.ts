// Rebuilds a message for forwarding, changing only what the proxy must change (RFC 3261 16.6:
// Via, Record-Route, Route, Max-Forwards, Path) and copying every other byte exactly as received.
//
// Edits are recorded per original header line; toBuffer() computes the output length once, then
// fills one allocUnsafe'd buffer, copying untouched runs of lines as single raw slices.
import type { HeaderField, SipMessage } from './types';
import { canonicalName } from './names';
import { firstTopComma } from './headers';

const CR = 0x0d;
const LF = 0x0a;

/** Header values handed to the writer are latin1 strings. CR, LF and other controls would let a
 *  value inject header lines (RFC 3261 7.3.1 lines end in CRLF); they become SP instead. */
function clean(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f || c > 0xff) return sanitize(s);
  }
  return s;
}
function sanitize(s: string): string {
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    out += (c < 0x20 && c !== 0x09) || c === 0x7f || c > 0xff ? ' ' : s[i];
  }
  return out;
}

const line = (name: string, value: string): string => clean(name) + ': ' + clean(value) + '\r\n';

export class MessageWriter {
  private readonly msg: SipMessage;
  private startLine: string | undefined;
  /** new lines above every original line, in output order */
  private readonly top: string[] = [];
  /** new lines after the last header line */
  private readonly tail: string[] = [];
  /** per original header index: undefined = copy raw bytes, null = removed, string = rewritten line */
  private readonly repl: (string | null | undefined)[];
  /** per original header index: lines inserted before it */
  private readonly before: (string[] | undefined)[];
  /** current value of rewritten lines (for a second removeFirstValue on the same line) */
  private readonly curValue: (string | undefined)[];

  constructor(msg: SipMessage) {
    this.msg = msg;
    const n = msg.headers.length;
    this.repl = new Array<string | null | undefined>(n);
    this.before = new Array<string[] | undefined>(n);
    this.curValue = new Array<string | undefined>(n);
  }

  /** replace the start line (without CRLF), e.g. strict-route RURI rewrite */
  setStartLine(startLine: string): this {
    this.startLine = clean(startLine);
    return this;
  }

  /** insert "Name: value" as the first header line of the message (used for Via) */
  prependTop(name: string, value: string): this {
    this.top.unshift(line(name, value));
    return this;
  }

  /** insert "Name: value" before the first existing line with this canonical name, or at the top
   *  of the header section if there is none (Record-Route, Path) */
  prependBefore(name: string, value: string): this {
    const i = this.firstLive(name);
    if (i < 0) return this.prependTop(name, value);
    const list = this.before[i];
    if (list === undefined) this.before[i] = [line(name, value)];
    else list.push(line(name, value));
    return this;
  }

  /** insert "name: value" before the first line named `anchor`; false (nothing done) when there
   *  is no such line */
  insertBefore(anchor: string, name: string, value: string): boolean {
    const i = this.firstLive(anchor);
    if (i < 0) return false;
    const list = this.before[i];
    if (list === undefined) this.before[i] = [line(name, value)];
    else list.push(line(name, value));
    return true;
  }

  /** append "Name: value" after the last header line */
  append(name: string, value: string): this {
    this.tail.push(line(name, value));
    return this;
  }

  /** remove the first value of a (possibly comma-separated, possibly multi-line) header among the
   *  received lines: the line is dropped if it held only that value, else rewritten as
   *  `ReceivedName: rest` where rest is the remaining values exactly as received */
  removeFirstValue(name: string): this {
    const i = this.firstLive(name);
    if (i < 0) return this;
    const h = this.msg.headers[i] as HeaderField;
    const v = this.curValue[i] ?? h.value;
    const comma = firstTopComma(v);
    const rest = comma < 0 ? '' : v.slice(comma + 1).trim();
    if (rest.length === 0) {
      this.repl[i] = null;
    } else {
      this.repl[i] = h.rawName + ': ' + rest + '\r\n';
      this.curValue[i] = rest;
    }
    return this;
  }

  /** replace the value of the first line with this name (keeps the received name form);
   *  does nothing when there is no such line */
  replaceFirst(name: string, value: string): this {
    const i = this.firstLive(name);
    if (i < 0) return this;
    const h = this.msg.headers[i] as HeaderField;
    const v = clean(value);
    this.repl[i] = h.rawName + ': ' + v + '\r\n';
    this.curValue[i] = v;
    return this;
  }

  /** remove every line with this canonical name */
  removeAll(name: string): this {
    const cn = canonicalName(name);
    const hs = this.msg.headers;
    for (let i = 0; i < hs.length; i++) if ((hs[i] as HeaderField).name === cn) this.repl[i] = null;
    return this;
  }

  /** the forwardable bytes: start line, headers, CRLF, exactly bodyLength body bytes */
  toBuffer(): Buffer {
    const m = this.msg;
    const raw = m.raw;
    const hs = m.headers;
    // RFC 3261 7.5: CRLFs before the start line were ignored by the parser; they are not forwarded
    let s0 = 0;
    while (s0 + 1 < m.startLineEnd && raw[s0] === CR && raw[s0 + 1] === LF) s0 += 2;
    const end = m.bodyStart + m.bodyLength;
    // the header section is contiguous: [startLineEnd, bodyStart - 2) then CRLF + body
    const headEnd = hs.length > 0 ? (hs[hs.length - 1] as HeaderField).end : m.startLineEnd;

    // pieces: numbers are raw ranges (pairs), strings are new text
    const pieces: (string | number)[] = [];
    let total = 0;
    let runStart = -1, runEnd = -1;
    const flushRun = (): void => {
      if (runStart >= 0 && runEnd > runStart) { pieces.push(runStart, runEnd); total += runEnd - runStart; }
      runStart = -1;
    };
    const text = (t: string): void => { flushRun(); pieces.push(t); total += t.length; };
    const copy = (a: number, b: number): void => {
      if (runStart >= 0 && runEnd === a) { runEnd = b; return; }
      flushRun();
      runStart = a; runEnd = b;
    };

    if (this.startLine !== undefined) text(this.startLine + '\r\n');
    else copy(s0, m.startLineEnd);
    for (const t of this.top) text(t);
    for (let i = 0; i < hs.length; i++) {
      const b = this.before[i];
      if (b !== undefined) for (const t of b) text(t);
      const r = this.repl[i];
      const h = hs[i] as HeaderField;
      if (r === undefined) copy(h.start, h.end);
      else if (r !== null) text(r);
    }
    for (const t of this.tail) text(t);
    // the empty line and the body (raw from headEnd also covers any bytes between, none when valid)
    copy(headEnd, end);
    flushRun();

    if (pieces.length === 2 && typeof pieces[0] === 'number') {
      // untouched message: one copy of the received bytes
      return Buffer.from(raw.subarray(pieces[0], pieces[1] as number));
    }
    const out = Buffer.allocUnsafe(total);
    let off = 0;
    for (let k = 0; k < pieces.length; k++) {
      const p = pieces[k] as string | number;
      if (typeof p === 'number') {
        const b = pieces[++k] as number;
        off += raw.copy(out, off, p, b);
      } else {
        off += out.write(p, off, 'latin1');
      }
    }
    return out;
  }

  private firstLive(name: string): number {
    const cn = canonicalName(name);
    const hs = this.msg.headers;
    for (let i = 0; i < hs.length; i++) {
      if ((hs[i] as HeaderField).name === cn && this.repl[i] !== null) return i;
    }
    return -1;
  }
}
