// Stream framing for SIP over TCP (RFC 3261 18.3): cut a byte stream into messages by
// Content-Length, answer RFC 5626 keepalive pings, and refuse anything that is not SIP.
//
// Linear time whatever the chunking: the search for the end of the header section resumes
// where the previous chunk stopped, the head is parsed once, and the body is only counted.
// Memory is bounded: pending bytes never exceed maxMessageBytes plus one socket read, and an
// empty framer holds no buffer at all (idle connections cost nothing).

export interface FramerOptions {
  /** whole message: head + body (413 beyond) */
  readonly maxMessageBytes: number;
  /** header section including the empty line; defaults to maxMessageBytes */
  readonly maxHeaderBytes?: number;
}

/** Closed list of framing failures; after any of them the framer is dead and the stream must close. */
export type FramingError =
  | 'not_sip'                  // first bytes cannot start a SIP message (TLS ClientHello, HTTP, binary)
  | 'headers_too_large'        // no empty line within maxHeaderBytes
  | 'message_too_large'        // head + Content-Length over maxMessageBytes (head is given for a 413)
  | 'content_length_missing'   // RFC 3261 18.3: mandatory on stream transports
  | 'content_length_invalid'   // not 1*DIGIT, or absurdly large
  | 'content_length_duplicate';// two Content-Length fields, or one with a list

export type FrameResult =
  | { readonly kind: 'message'; readonly bytes: Buffer }
  /** RFC 5626 3.5.1: a CRLFCRLF ping was received; write one CRLF pong */
  | { readonly kind: 'pong' }
  | { readonly kind: 'error'; readonly reason: FramingError; readonly head?: Buffer };

const CR = 0x0d;
const LF = 0x0a;
const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');
const MIN_CAPACITY = 2048;
/** A buffer grown for a large message is dropped once empty when bigger than this. */
const KEEP_CAPACITY = 16384;

/** RFC 3261 25.1 token characters: what a Method (and so a request) may start with. */
const TOKEN = new Uint8Array(256);
for (const c of 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`\'~') TOKEN[c.charCodeAt(0)] = 1;

type State = 'between' | 'head' | 'body';

export class StreamFramer {
  private buf: Buffer = Buffer.alloc(0);
  /** unread bytes are buf[start, end) */
  private start = 0;
  private end = 0;
  private state: State = 'between';
  /** head: bytes (relative to start) already searched for CRLFCRLF without success */
  private scanned = 0;
  /** head: the start line has been checked */
  private startLineOk = false;
  /** head: bytes already searched for the end of the start line */
  private lineScanned = 0;
  /** body: total message length (head + body) once the head is parsed */
  private total = 0;
  private dead: FramingError | null = null;
  private readonly maxMessage: number;
  private readonly maxHeader: number;
  /** messages emitted so far (lets the caller restart a per-message timer) */
  messages = 0;

  constructor(opts: FramerOptions) {
    this.maxMessage = Math.max(1, Math.floor(opts.maxMessageBytes));
    this.maxHeader = Math.min(this.maxMessage, Math.max(4, Math.floor(opts.maxHeaderBytes ?? opts.maxMessageBytes)));
  }

  /** Bytes of an unfinished message are pending (not counting CRLF keepalives between messages). */
  get midMessage(): boolean {
    return this.dead === null && this.state !== 'between';
  }

  /** bytes currently held */
  get pending(): number {
    return this.end - this.start;
  }

  /** the error that killed this framer, if any */
  get error(): FramingError | null {
    return this.dead;
  }

  /** Append one chunk (copied). Call next() until it returns null afterwards. */
  push(chunk: Buffer): void {
    if (this.dead !== null || chunk.length === 0) return;
    const len = this.end - this.start;
    if (this.end + chunk.length > this.buf.length) {
      const need = len + chunk.length;
      // compact only when that frees at least half the buffer, else grow geometrically: either
      // way each byte is moved O(1) times on average. Pending bytes never exceed
      // maxMessageBytes + one chunk, so the capacity stays within twice that.
      if (need * 2 <= this.buf.length) {
        this.buf.copy(this.buf, 0, this.start, this.end);
      } else {
        const next = Buffer.allocUnsafe(Math.max(MIN_CAPACITY, need * 2));
        this.buf.copy(next, 0, this.start, this.end);
        this.buf = next;
      }
      this.start = 0;
      this.end = len;
    }
    chunk.copy(this.buf, this.end);
    this.end += chunk.length;
  }

  /** The next complete frame, or null when more bytes are needed (or after an error was returned). */
  next(): FrameResult | null {
    if (this.dead !== null) return null;
    for (;;) {
      const avail = this.end - this.start;
      if (this.state === 'between') {
        if (avail === 0) { this.release(); return null; }
        const b = this.buf;
        const s = this.start;
        if (b[s] === CR) {
          // RFC 3261 7.5: CRLFs before a start line are ignored on streams; RFC 5626 3.5.1: a
          // double CRLF is a ping that deserves a single CRLF pong
          if (avail < 2) return null;
          if (b[s + 1] !== LF) return this.fail('not_sip');
          if (avail < 3) return null;
          if (b[s + 2] !== CR) { this.start += 2; continue; }
          if (avail < 4) return null;
          if (b[s + 3] !== LF) return this.fail('not_sip');
          this.start += 4;
          return { kind: 'pong' };
        }
        // a request starts with a Method token, a response with "SIP/"; a TLS ClientHello (0x16),
        // binary junk or a bare LF is refused at the first byte
        if (TOKEN[b[s]] !== 1) return this.fail('not_sip');
        this.state = 'head';
        this.scanned = 0;
        this.lineScanned = 0;
        this.startLineOk = false;
      }
      if (this.state === 'head') {
        if (!this.startLineOk) {
          const verdict = this.checkStartLine();
          if (verdict === 'wait') return this.headLimit();
          if (verdict !== 'ok') return this.fail('not_sip');
          this.startLineOk = true;
        }
        // resume 3 bytes back so a CRLFCRLF split across chunks is still found
        const from = this.start + Math.max(0, this.scanned - 3);
        const limit = Math.min(this.end, this.start + this.maxHeader);
        const at = this.buf.subarray(0, limit).indexOf(CRLFCRLF, from);
        if (at < 0) {
          this.scanned = limit - this.start;
          return this.headLimit();
        }
        const headLen = at + 4 - this.start;
        const cl = this.contentLength(headLen);
        if (typeof cl === 'string') return this.fail(cl);
        if (headLen + cl > this.maxMessage) {
          // RFC 3261 21.4.11: the caller answers 413 from the head, then closes the stream
          // (the body will never be read, so the stream cannot be resynchronised)
          const head = Buffer.from(this.buf.subarray(this.start, this.start + headLen));
          this.dead = 'message_too_large';
          this.drop();
          return { kind: 'error', reason: 'message_too_large', head };
        }
        this.total = headLen + cl;
        this.state = 'body';
      }
      // body
      if (this.end - this.start < this.total) return null;
      const bytes = Buffer.allocUnsafe(this.total);
      this.buf.copy(bytes, 0, this.start, this.start + this.total);
      this.start += this.total;
      this.state = 'between';
      this.total = 0;
      this.messages++;
      if (this.start === this.end) this.release();
      return { kind: 'message', bytes };
    }
  }

  /** Either wait for more head bytes, or fail when the header section is already over its limit. */
  private headLimit(): FrameResult | null {
    return this.end - this.start >= this.maxHeader ? this.fail('headers_too_large') : null;
  }

  /**
   * RFC 3261 7.1: Request-Line = Method SP Request-URI SP SIP-Version; Status-Line = SIP-Version SP
   * Status-Code SP Reason-Phrase. SIP-Version is "SIP/" case-insensitively (7.1). Only the shape
   * that tells SIP from other protocols (HTTP, SMTP ...) is checked here; the parser does the rest.
   */
  private checkStartLine(): 'ok' | 'bad' | 'wait' {
    const b = this.buf;
    const s = this.start;
    const limit = Math.min(this.end, s + this.maxHeader);
    const eol = b.subarray(0, limit).indexOf(LF, s + this.lineScanned);
    if (eol < 0) {
      this.lineScanned = limit - s;
      // a response is recognisable from its first four bytes
      if (limit - s >= 4 && isSipSlash(b, s)) return 'ok';
      return 'wait';
    }
    if (eol === s || b[eol - 1] !== CR) return 'bad';
    if (eol - s >= 4 && isSipSlash(b, s)) return 'ok';
    // request: the last SP-separated word must be SIP/x.y
    const lineEnd = eol - 1;
    let sp = lineEnd - 1;
    while (sp > s && b[sp] !== 0x20) sp--;
    if (sp <= s || lineEnd - (sp + 1) < 4) return 'bad';
    return isSipSlash(b, sp + 1) ? 'ok' : 'bad';
  }

  /**
   * Content-Length from the head (RFC 3261 20.14, compact form "l" per 7.3.3; header names are
   * case-insensitive and HCOLON allows whitespace before the colon, 7.3.1; folded continuation
   * lines belong to the header above them).
   */
  private contentLength(headLen: number): number | FramingError {
    const text = this.buf.toString('latin1', this.start, this.start + headLen - 4);
    const lines = text.split('\r\n');
    let found: string | null = null;
    let value: string | null = null;
    const finish = (): FramingError | null => {
      if (value === null) return null;
      if (found !== null) return 'content_length_duplicate';
      found = value;
      value = null;
      return null;
    };
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i];
      const c0 = line.charCodeAt(0);
      if (c0 === 0x20 || c0 === 0x09) {
        if (value !== null) value += ' ' + line.trim();
        continue;
      }
      const e = finish();
      if (e !== null) return e;
      const colon = line.indexOf(':');
      if (colon <= 0) continue; // the parser reports header syntax; framing only needs the length
      const name = line.slice(0, colon).replace(/[ \t]+$/, '').toLowerCase();
      if (name === 'content-length' || name === 'l') value = line.slice(colon + 1).trim();
    }
    const e = finish();
    if (e !== null) return e;
    if (found === null) return 'content_length_missing';
    const v: string = (found as string).trim();
    if (v.indexOf(',') >= 0) return 'content_length_duplicate';
    // RFC 3261 20.14: 1*DIGIT (leading zeros are legal). Over 9 significant digits is beyond
    // any size limit: report it as too large so the sender still gets a 413.
    if (!/^[0-9]{1,20}$/.test(v)) return 'content_length_invalid';
    const significant = v.replace(/^0+(?=.)/, '');
    return significant.length > 9 ? Number.POSITIVE_INFINITY : Number(significant);
  }

  private fail(reason: FramingError): FrameResult {
    this.dead = reason;
    this.drop();
    return { kind: 'error', reason };
  }

  private drop(): void {
    this.buf = Buffer.alloc(0);
    this.start = 0;
    this.end = 0;
  }

  /** everything consumed: give a big buffer back so idle connections cost nothing */
  private release(): void {
    if (this.buf.length > KEEP_CAPACITY) this.buf = Buffer.alloc(0);
    this.start = 0;
    this.end = 0;
  }
}

function isSipSlash(b: Buffer, i: number): boolean {
  return (b[i] | 0x20) === 0x73 && (b[i + 1] | 0x20) === 0x69 && (b[i + 2] | 0x20) === 0x70 && b[i + 3] === 0x2f;
}
