// Property tests: hostile bytes never make the parser or the header accessors throw, accepted
// messages round-trip through the writer, and parsing stays linear in the input size.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DEFAULT_LIMITS, parseMessage, type ParseLimits } from '../edge/sip/parser';
import * as H from '../edge/sip/headers';
import { MessageWriter } from '../edge/sip/writer';
import type { SipMessage } from '../edge/sip/types';
import { SAMPLES } from './helpers/messages';

/** calls every accessor; returns a value so the work cannot be optimised away */
function touchAll(m: SipMessage): number {
  let n = 0;
  const seen = (v: unknown): void => { if (v !== undefined) n++; };
  seen(H.vias(m)); seen(H.topVia(m)); seen(H.from(m)); seen(H.to(m)); seen(H.callId(m)); seen(H.cseq(m));
  seen(H.maxForwards(m)); seen(H.contentLength(m)); seen(H.expires(m)); seen(H.routes(m)); seen(H.recordRoutes(m));
  seen(H.paths(m)); seen(H.contacts(m)); seen(H.requestUri(m));
  n += H.optionTags(m, 'supported').length + H.optionTags(m, 'require').length + H.optionTags(m, 'proxy-require').length;
  for (const h of m.headers) n += H.splitCommaList(h.value).length;
  return n;
}

/** checks the structural invariants of a parse result and the writer round trip */
function checkAccepted(m: SipMessage): void {
  let pos = m.startLineEnd;
  for (const h of m.headers) {
    assert.equal(h.start, pos);
    pos = h.end;
  }
  assert.equal(pos + 2, m.bodyStart);
  assert.ok(m.bodyStart + m.bodyLength <= m.raw.length);
  touchAll(m);
  let s0 = 0;
  while (m.raw[s0] === 0x0d && m.raw[s0 + 1] === 0x0a) s0 += 2;
  assert.ok(new MessageWriter(m).toBuffer().equals(m.raw.subarray(s0, m.bodyStart + m.bodyLength)));
  // an edited message must parse again
  const edited = new MessageWriter(m).prependTop('Via', 'SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKfuzz').removeFirstValue('via').toBuffer();
  assert.equal(typeof parseMessage(edited).ok, 'boolean');
}

const SPECIALS = ['\r', '\n', '\r\n', '\r\n ', '\u0000', ':', '<', '>', '"', '\\', ',', ';', '=', '%', '@', '[', ']', ' ', '\t', '\u00ff', 'SIP/2.0', '\r\n\r\n'];

type Op =
  | { t: 'flip'; pos: number; byte: number }
  | { t: 'insert'; pos: number; text: string }
  | { t: 'truncate'; pos: number }
  | { t: 'dupLine'; line: number }
  | { t: 'delete'; pos: number; len: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ t: fc.constant('flip' as const), pos: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ t: fc.constant('insert' as const), pos: fc.nat(), text: fc.constantFrom(...SPECIALS) }),
  fc.record({ t: fc.constant('truncate' as const), pos: fc.nat() }),
  fc.record({ t: fc.constant('dupLine' as const), line: fc.nat() }),
  fc.record({ t: fc.constant('delete' as const), pos: fc.nat(), len: fc.integer({ min: 1, max: 8 }) }),
);

function mutate(src: Buffer, ops: readonly Op[]): Buffer {
  let b = Buffer.from(src);
  for (const op of ops) {
    const len = Math.max(b.length, 1);
    switch (op.t) {
      case 'flip': if (b.length > 0) b[op.pos % b.length] = op.byte; break;
      case 'insert': { const p = op.pos % (b.length + 1); b = Buffer.concat([b.subarray(0, p), Buffer.from(op.text, 'latin1'), b.subarray(p)]); break; }
      case 'truncate': b = b.subarray(0, op.pos % len); break;
      case 'delete': { const p = op.pos % len; b = Buffer.concat([b.subarray(0, p), b.subarray(p + op.len)]); break; }
      case 'dupLine': {
        const s = b.toString('latin1');
        const ls = s.split('\r\n');
        const i = op.line % ls.length;
        ls.splice(i, 0, ls[i] ?? '');
        b = Buffer.from(ls.join('\r\n'), 'latin1');
        break;
      }
    }
  }
  return b;
}

test('mutated real messages: parser and accessors never throw; accepted ones round-trip', () => {
  let accepted = 0;
  fc.assert(
    fc.property(fc.integer({ min: 0, max: SAMPLES.length - 1 }), fc.array(opArb, { minLength: 1, maxLength: 6 }), fc.boolean(), (si, ops, stream) => {
      const bytes = mutate((SAMPLES[si] as (typeof SAMPLES)[number]).bytes, ops);
      const r = parseMessage(bytes, { framing: stream ? 'stream' : 'datagram' });
      if (r.ok) {
        accepted++;
        checkAccepted(r.msg);
      } else if (r.partial !== undefined) {
        touchAll(r.partial);
        assert.ok([400, 413, 414, 505].includes(r.status));
      }
    }),
    { numRuns: 4000, seed: 4475, endOnFailure: true },
  );
  // the property must have exercised the accepted path too, not only rejections
  assert.ok(accepted > 100, `accepted ${accepted}`);
});

test('arbitrary bytes never make the parser throw', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 2048 }), (u8) => {
      const r = parseMessage(Buffer.from(u8));
      if (r.ok) checkAccepted(r.msg);
    }),
    { numRuns: 2000, seed: 3261 },
  );
  fc.assert(
    fc.property(fc.array(fc.constantFrom(...SPECIALS, 'INVITE', 'sip:', 'a', 'Via', 'v: ', 'l: 0'), { maxLength: 200 }), (parts) => {
      const r = parseMessage(Buffer.from('INVITE sip:a@b SIP/2.0\r\n' + parts.join(''), 'latin1'));
      if (r.ok) checkAccepted(r.msg);
    }),
    { numRuns: 2000, seed: 5118 },
  );
});

test('header value parsers are total on arbitrary strings', () => {
  fc.assert(
    fc.property(fc.string({ unit: fc.constantFrom(...SPECIALS, 'a', 'sip:', 'SIP/2.0/UDP ', '1', 'tag', '2001:db8::1', '\u00e9', '\u0100') , maxLength: 60 }), (s) => {
      H.parseUri(s); H.parseUri('sip:' + s); H.parseNameAddr(s); H.parseNameAddr('<sip:' + s); H.parseVia(s); H.parseVia('SIP/2.0/UDP h' + s);
      const parts = H.splitCommaList(s);
      assert.ok(parts.length <= s.length + 1);
    }),
    { numRuns: 3000, seed: 3581 },
  );
});

// ---- linearity ----------------------------------------------------------------------------

const WIDE: ParseLimits = { ...DEFAULT_LIMITS, maxHeaderLineBytes: DEFAULT_LIMITS.maxMessageBytes };
const PATTERNS = ['<', '"', ';', ',', '%', '\\', ':', '[', '@', ' ', 'a;', ';a', ';a=b', '<sip:', '"\\', 'sip:a@', 'a,', '\r\n ', '1', '=', '"a",'];
const HEADER_NAMES = ['Via', 'From', 'Contact', 'Route', 'Call-ID', 'CSeq', 'Supported', 'X-Other'];

function fill(pattern: string, n: number): string {
  return pattern.repeat(Math.ceil(n / pattern.length)).slice(0, n);
}

/** inputs of about `size` bytes for one pattern: the pattern as each header value, and as the whole head */
function inputs(pattern: string, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (const name of HEADER_NAMES) {
    const pre = `INVITE sip:a@example.com SIP/2.0\r\n${name}: `;
    const value = fill(pattern, size - pre.length - 40).replace(/\r\n $/, 'x');
    out.push(Buffer.from(`${pre}${value}\r\nContent-Length: 0\r\n\r\n`, 'latin1'));
  }
  out.push(Buffer.from(fill(pattern, size), 'latin1'));
  out.push(Buffer.from('INVITE sip:a@example.com SIP/2.0\r\n' + fill(`X-${pattern.replace(/[\r\n]/g, '')}: ${pattern}\r\n`, size), 'latin1'));
  return out;
}

function work(bufs: readonly Buffer[], strs: readonly string[]): number {
  let n = 0;
  for (const b of bufs) {
    const r = parseMessage(b, { limits: WIDE });
    if (r.ok) n += touchAll(r.msg);
    else if (r.partial) n += touchAll(r.partial);
  }
  for (const s of strs) {
    if (H.parseUri('sip:' + s) !== null) n++;
    if (H.parseNameAddr(s) !== null) n++;
    if (H.parseVia('SIP/2.0/UDP h' + s) !== null) n++;
    n += H.splitCommaList(s).length;
  }
  return n;
}

/** median nanoseconds per byte over `samples` samples of `reps` repetitions */
function nsPerByte(pattern: string, size: number, reps: number, samples: number): number {
  const bufs = inputs(pattern, size);
  const strs = [fill(pattern, size)];
  const bytes = bufs.reduce((a, b) => a + b.length, 0) + size;
  const times: number[] = [];
  let sink = 0;
  for (let s = 0; s < samples; s++) {
    const t0 = process.hrtime.bigint();
    for (let r = 0; r < reps; r++) sink += work(bufs, strs);
    times.push(Number(process.hrtime.bigint() - t0) / reps / bytes);
  }
  assert.ok(sink >= 0);
  times.sort((a, b) => a - b);
  return times[samples >> 1] as number;
}

test('pathological inputs near the size cap parse in time linear in their size', () => {
  const small = 1024, large = 16 * 1024 - 64;
  let worst = 0, worstPattern = '';
  for (const p of PATTERNS) {
    // warm up both sizes so the JIT state is comparable
    nsPerByte(p, small, 16, 3);
    nsPerByte(p, large, 1, 3);
    const a = nsPerByte(p, small, 32, 15);
    const b = nsPerByte(p, large, 2, 15);
    const factor = b / a;
    if (factor > worst) { worst = factor; worstPattern = p; }
  }
  // quadratic behaviour would show as ~16x per byte; allow generous noise headroom
  assert.ok(worst < 10, `time per byte grew ${worst.toFixed(1)}x from 1 KiB to 16 KiB for pattern ${JSON.stringify(worstPattern)}`);
});

test('many short header lines and huge inputs stay bounded by the caps', () => {
  const many = Buffer.from('OPTIONS sip:a@b SIP/2.0\r\n' + 'X: a\r\n'.repeat(5000) + '\r\n', 'latin1');
  const r = parseMessage(many);
  assert.equal(!r.ok && r.reason, 'message_too_large');
  const hundredBig = Buffer.from('OPTIONS sip:a@b SIP/2.0\r\n' + `X-Big: ${'v'.repeat(4089)}\r\n`.repeat(100) + '\r\n', 'latin1');
  const r2 = parseMessage(hundredBig);
  assert.equal(!r2.ok && r2.reason, 'message_too_large');
  assert.ok(!r2.ok && r2.partial !== undefined && r2.partial.headers.length <= DEFAULT_LIMITS.maxHeaders);
  const r3 = parseMessage(Buffer.alloc(1 << 20, 0x3c));
  assert.equal(!r3.ok && r3.reason, 'message_too_large');
});
