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

  /**
   * The forwardable bytes: start line, headers, CRLF, exactly bodyLength body bytes.
   * With `origin`, also how to get the received message back from them (see receivedBytes):
   * the received bytes (less any CRLFs before the start line and bytes past the body) in order,
   * as ranges of the output (number pairs) where they were copied, and latin1 text where they
   * were removed or rewritten. A stateful proxy must keep the forwarded bytes for retransmission
   * anyway; with this it need not keep the received message beside them (RFC 3261 16.7 item 6
   * failover, locally generated finals: rare paths that re-parse it).
   */
  toBuffer(origin?: (string | number)[]): Buffer {
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
    // origin: received bytes [lostStart, lostEnd) not (yet) written out as text
    let lostStart = -1, lostEnd = -1;
    const flushLost = (): void => {
      if (origin && lostStart >= 0) origin.push(raw.toString('latin1', lostStart, lostEnd));
      lostStart = -1;
    };
    const copy = (a: number, b: number): void => {
      if (origin) {
        // received bytes that land in the output at its current end
        flushLost();
        const at = total + (runStart >= 0 ? runEnd - runStart : 0);
        const n = origin.length;
        if (n >= 2 && typeof origin[n - 1] === 'number' && origin[n - 1] === at) origin[n - 1] = at + b - a;
        else origin.push(at, at + b - a);
      }
      if (runStart >= 0 && runEnd === a) { runEnd = b; return; }
      flushRun();
      runStart = a; runEnd = b;
    };
    /** received bytes [a, b) that are not forwarded (removed or rewritten lines); consecutive
     *  ones are adjacent in the received message */
    const lose = (a: number, b: number): void => {
      if (!origin) return;
      if (lostStart < 0) lostStart = a;
      lostEnd = b;
    };

    if (this.startLine !== undefined) { lose(s0, m.startLineEnd); text(this.startLine + '\r\n'); }
    else copy(s0, m.startLineEnd);
    for (const t of this.top) text(t);
    for (let i = 0; i < hs.length; i++) {
      const b = this.before[i];
      if (b !== undefined) for (const t of b) text(t);
      const r = this.repl[i];
      const h = hs[i] as HeaderField;
      if (r === undefined) copy(h.start, h.end);
      else {
        lose(h.start, h.end);
        if (r !== null) text(r);
      }
    }
    for (const t of this.tail) text(t);
    // the empty line and the body (raw from headEnd also covers any bytes between, none when valid)
    copy(headEnd, end);
    flushRun();
    flushLost();

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

/**
 * The origin toBuffer() filled in, as one flat string (a transaction keeps it: one string costs
 * less than an array of pieces): `r<a>,<b>;` for a range of the output, `t<length>:<text>` for
 * received text that was not forwarded. With `out` (the output as a latin1 string), received
 * text that is also in the output is referenced instead of copied (packText).
 */
export function packOrigin(origin: readonly (string | number)[], out?: string): string {
  const parts: string[] = [];
  for (let k = 0; k < origin.length; k++) {
    const p = origin[k] as string | number;
    if (typeof p === 'number') parts.push(`r${p},${origin[++k] as number};`);
    else if (out !== undefined) packText(p, out, parts);
    else parts.push(`t${p.length}:`, p);
  }
  return parts.join('');
}

/** shortest run of received text worth a reference into the output instead of a copy */
const MIN_REF = 16;

/**
 * Received text that was not forwarded as is, packed against the forwarded bytes `out`: most of
 * it is there anyway with a few bytes changed (the client's Via gets its received/rport stamp,
 * RFC 3581 4), so runs of at least MIN_REF characters found in `out` become output ranges (`r`)
 * and only the rest is kept as text (`t`): about 90 bytes less per live transaction for a
 * typical INVITE. Looked up from the start of the text and after each delimiter (space, ';',
 * ',', CR), a few indexOf per transaction; exact by construction (every range is compared
 * character by character), so receivedBytes is unchanged.
 */
function packText(p: string, out: string, parts: string[]): void {
  let lit = 0; // start of the pending literal
  let i = 0;
  while (i < p.length) {
    let len = 0;
    let at = -1;
    if (p.length - i >= MIN_REF) {
      at = out.indexOf(p.substring(i, i + MIN_REF));
      if (at >= 0) {
        len = MIN_REF;
        while (i + len < p.length && at + len < out.length && out.charCodeAt(at + len) === p.charCodeAt(i + len)) len++;
      }
    }
    if (at >= 0) {
      if (lit < i) parts.push(`t${i - lit}:`, p.substring(lit, i));
      parts.push(`r${at},${at + len};`);
      i += len;
      lit = i;
      continue;
    }
    // no run here: the literal goes on to just past the next delimiter
    i++;
    while (i < p.length) {
      const c = p.charCodeAt(i - 1);
      if (c === 0x20 || c === 0x3b || c === 0x2c || c === 0x0d || c === 0x0a) break;
      i++;
    }
  }
  if (lit < p.length) parts.push(`t${p.length - lit}:`, p.substring(lit));
}

/** The received message back from the forwarded bytes (a Buffer, or a latin1 string of them)
 *  and their packed origin (packOrigin); undefined when the origin does not fit the bytes (never
 *  for a pair made by toBuffer; total anyway). */
export function receivedBytes(out: Buffer | string, origin: string): Buffer | undefined {
  const pieces: (string | number)[] = [];
  let len = 0;
  const num = (from: number, stop: string): [number, number] => {
    const e = origin.indexOf(stop, from);
    if (e < 0 || e === from || e - from > 9) return [-1, -1];
    const v = Number(origin.slice(from, e));
    return Number.isInteger(v) && v >= 0 ? [v, e + 1] : [-1, -1];
  };
  for (let i = 0; i < origin.length;) {
    const tag = origin[i];
    if (tag === 'r') {
      const [a, i1] = num(i + 1, ',');
      if (a < 0) return undefined;
      const [b, i2] = num(i1, ';');
      if (b < a || b > out.length) return undefined;
      pieces.push(a, b);
      len += b - a;
      i = i2;
    } else if (tag === 't') {
      const [n, i1] = num(i + 1, ':');
      if (n < 0 || i1 + n > origin.length) return undefined;
      pieces.push(origin.slice(i1, i1 + n));
      len += n;
      i = i1 + n;
    } else {
      return undefined;
    }
  }
  const buf = Buffer.allocUnsafe(len);
  let off = 0;
  for (let k = 0; k < pieces.length; k++) {
    const p = pieces[k] as string | number;
    if (typeof p !== 'number') off += buf.write(p, off, 'latin1');
    else if (typeof out === 'string') off += buf.write(out.substring(p, pieces[++k] as number), off, 'latin1');
    else off += out.copy(buf, off, p, pieces[++k] as number);
  }
  return buf;
}
