import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { StreamFramer, type FrameResult } from '../edge/transport/framing';

function sipMessage(body = '', clHeader = `Content-Length: ${Buffer.byteLength(body)}`, method = 'OPTIONS'): string {
  return `${method} sip:pbx.example.com SIP/2.0\r\n` +
    'Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n' +
    'From: <sip:alice@example.com>;tag=1928301774\r\nTo: <sip:bob@example.com>\r\n' +
    'Call-ID: a84b4c76e66710\r\nCSeq: 1 OPTIONS\r\n' +
    (clHeader ? `${clHeader}\r\n` : '') + '\r\n' + body;
}

function drain(f: StreamFramer): FrameResult[] {
  const out: FrameResult[] = [];
  for (let i = 0; i < 10000; i++) {
    const r = f.next();
    if (r === null) return out;
    out.push(r);
  }
  throw new Error('framer did not settle');
}

function feed(f: StreamFramer, data: Buffer, chunk: number): FrameResult[] {
  const out: FrameResult[] = [];
  for (let i = 0; i < data.length; i += chunk) {
    f.push(data.subarray(i, i + chunk));
    out.push(...drain(f));
  }
  return out;
}

const messages = (rs: FrameResult[]): string[] =>
  rs.flatMap((r) => (r.kind === 'message' ? [r.bytes.toString('latin1')] : []));

test('several messages in one chunk come out one at a time, bodies intact', () => {
  const a = sipMessage('v=0\r\n');
  const b = sipMessage('', 'l: 0');
  const c = sipMessage('xyz', 'content-length   :   3');
  const f = new StreamFramer({ maxMessageBytes: 4096 });
  f.push(Buffer.from(a + b + c, 'latin1'));
  assert.equal(f.next()?.kind, 'message');
  assert.equal(f.pending, b.length + c.length, 'one message per next()');
  const rest = drain(f);
  assert.deepEqual(messages(rest), [b, c]);
  assert.equal(f.midMessage, false);
  assert.equal(f.messages, 3);
});

test('a message split into 1-byte chunks frames exactly once', () => {
  const a = sipMessage('hello body');
  const f = new StreamFramer({ maxMessageBytes: 4096 });
  const rs = feed(f, Buffer.from(a + a, 'latin1'), 1);
  assert.deepEqual(messages(rs), [a, a]);
  assert.equal(rs.length, 2);
});

test('any chunking gives the same messages (property)', () => {
  const msgs = [sipMessage('a'), sipMessage(''), '\r\n', sipMessage('0123456789', 'L :10'), '\r\n\r\n', sipMessage('')];
  const stream = Buffer.from(msgs.join(''), 'latin1');
  const expected = msgs.filter((m) => !m.startsWith('\r\n'));
  fc.assert(fc.property(fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 200 }), (sizes) => {
    const f = new StreamFramer({ maxMessageBytes: 4096 });
    const out: FrameResult[] = [];
    let i = 0;
    let k = 0;
    while (i < stream.length) {
      const n = sizes[k++ % sizes.length];
      f.push(stream.subarray(i, i + n));
      i += n;
      out.push(...drain(f));
    }
    assert.deepEqual(messages(out), expected);
    assert.equal(out.filter((r) => r.kind === 'pong').length, 1);
    assert.equal(f.pending, 0);
  }), { numRuns: 300 });
});

test('RFC 5626 3.5.1: CRLFCRLF ping gives one pong; single CRLFs are skipped', () => {
  const f = new StreamFramer({ maxMessageBytes: 4096 });
  f.push(Buffer.from('\r\n\r\n'));
  assert.deepEqual(drain(f), [{ kind: 'pong' }]);
  f.push(Buffer.from('\r\n'));
  assert.deepEqual(drain(f), []);
  assert.equal(f.midMessage, false, 'a CRLF is not the start of a message');
  const m = sipMessage('');
  f.push(Buffer.from(m));
  assert.deepEqual(messages(drain(f)), [m]);
  // split ping
  f.push(Buffer.from('\r\n\r'));
  assert.deepEqual(drain(f), []);
  f.push(Buffer.from('\n'));
  assert.deepEqual(drain(f), [{ kind: 'pong' }]);
  f.push(Buffer.from('\r\n\r\n\r\n\r\n'));
  assert.deepEqual(drain(f), [{ kind: 'pong' }, { kind: 'pong' }]);
});

test('responses frame too', () => {
  const r = 'SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n';
  const f = new StreamFramer({ maxMessageBytes: 4096 });
  assert.deepEqual(messages(feed(f, Buffer.from(r), 3)), [r]);
});

test('Content-Length errors are values: missing, invalid, duplicate', () => {
  const cases: Array<[string, string]> = [
    [sipMessage('', ''), 'content_length_missing'],
    [sipMessage('', 'Content-Length: abc'), 'content_length_invalid'],
    [sipMessage('', 'Content-Length: -1'), 'content_length_invalid'],
    [sipMessage('', 'Content-Length:'), 'content_length_invalid'],
    [sipMessage('', 'Content-Length: 1 2'), 'content_length_invalid'],
    [sipMessage('', 'Content-Length: 0\r\nl: 0'), 'content_length_duplicate'],
    [sipMessage('', 'Content-Length: 0, 0'), 'content_length_duplicate'],
  ];
  for (const [text, reason] of cases) {
    const f = new StreamFramer({ maxMessageBytes: 4096 });
    f.push(Buffer.from(text, 'latin1'));
    const rs = drain(f);
    assert.equal(rs.length, 1, reason);
    assert.equal(rs[0].kind, 'error');
    assert.equal(rs[0].kind === 'error' && rs[0].reason, reason);
    // dead after an error: no more output, no more memory
    f.push(Buffer.from(sipMessage('')));
    assert.equal(f.next(), null);
    assert.equal(f.pending, 0);
  }
});

test('folded Content-Length and leading zeros are legal (RFC 3261 7.3.1, 20.14)', () => {
  const m = sipMessage('abcd', 'Content-Length:\r\n   004');
  const f = new StreamFramer({ maxMessageBytes: 4096 });
  f.push(Buffer.from(m + sipMessage('')));
  const out = messages(drain(f));
  assert.equal(out.length, 2);
  assert.ok(out[0].endsWith('\r\n\r\nabcd'));
});

test('oversize message: error with the head so the caller can answer 413', () => {
  const f = new StreamFramer({ maxMessageBytes: 1024 });
  const m = sipMessage('x'.repeat(2000));
  f.push(Buffer.from(m.slice(0, 100)));
  assert.deepEqual(drain(f), []);
  // the error comes as soon as the head is complete, before any body byte is buffered
  f.push(Buffer.from(m.slice(100, 300)));
  const rs = drain(f);
  assert.equal(rs.length, 1);
  const r = rs[0];
  assert.ok(r.kind === 'error' && r.reason === 'message_too_large');
  assert.ok(r.head !== undefined && r.head.toString().startsWith('OPTIONS sip:') && r.head.toString().endsWith('Content-Length: 2000\r\n\r\n'));
  // an absurd length is too large, not a crash or an overflow
  const g = new StreamFramer({ maxMessageBytes: 1024 });
  g.push(Buffer.from(sipMessage('', 'Content-Length: 99999999999999999999')));
  const rg = drain(g);
  assert.ok(rg[0].kind === 'error' && rg[0].reason === 'message_too_large');
});

test('header section over the limit fails without waiting for the end', () => {
  const f = new StreamFramer({ maxMessageBytes: 8192, maxHeaderBytes: 1024 });
  const head = 'INVITE sip:x SIP/2.0\r\n' + 'X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n'.repeat(100);
  const rs = feed(f, Buffer.from(head), 7);
  assert.equal(rs.length, 1);
  assert.ok(rs[0].kind === 'error' && rs[0].reason === 'headers_too_large');
  assert.ok(f.pending === 0);
});

test('bytes that cannot start SIP are a framing error', () => {
  const tlsHello = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]);
  const cases: Buffer[] = [
    tlsHello,
    Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'),
    Buffer.from('EHLO example.com\r\n'),
    Buffer.from('\nINVITE sip:x SIP/2.0\r\n'),
    Buffer.from('\r\rINVITE'),
    Buffer.from('INVITE sip:x SIP/2.0\n'),
    Buffer.from([0x00, 0x00, 0x00, 0x00]),
    Buffer.from(' INVITE sip:x SIP/2.0\r\n'),
  ];
  for (const c of cases) {
    const f = new StreamFramer({ maxMessageBytes: 4096 });
    f.push(c);
    const rs = drain(f);
    assert.equal(rs.length, 1, c.toString('hex'));
    assert.ok(rs[0].kind === 'error' && rs[0].reason === 'not_sip', c.toString('hex'));
  }
  // a TLS ClientHello is refused at its first byte, before any line end
  const f = new StreamFramer({ maxMessageBytes: 4096 });
  f.push(tlsHello.subarray(0, 1));
  assert.ok(f.next()?.kind === 'error');
});

test('linear time: a large message fed 1 byte at a time does not rescan', () => {
  // count indexOf calls' work indirectly: 1-byte feeding of a 60 KB head must stay within a
  // small multiple of 1-chunk feeding in framer work; measured as iterations, not time
  const pad = 'X-Pad: ' + 'a'.repeat(1000) + '\r\n';
  const m = sipMessage('', `Content-Length: 0\r\n${pad.repeat(60)}`.replace(/\r\n$/, ''));
  const buf = Buffer.from(m);
  const f = new StreamFramer({ maxMessageBytes: 128 * 1024 });
  const origIndexOf = Buffer.prototype.indexOf;
  let scanned = 0;
  // instrument: count bytes each indexOf call could have looked at
  Buffer.prototype.indexOf = function (this: Buffer, value: string | number | Uint8Array, byteOffset?: number | BufferEncoding, enc?: BufferEncoding): number {
    scanned += this.length - (typeof byteOffset === 'number' ? byteOffset : 0);
    return origIndexOf.call(this, value, byteOffset as number, enc);
  };
  let out: FrameResult[];
  try {
    out = feed(f, buf, 1);
  } finally {
    Buffer.prototype.indexOf = origIndexOf;
  }
  assert.deepEqual(messages(out), [m]);
  assert.ok(scanned < buf.length * 4, `scanned ${scanned} bytes for a ${buf.length}-byte message`);
});

test('memory: an idle framer drops a buffer grown for a large message', () => {
  const f = new StreamFramer({ maxMessageBytes: 256 * 1024 });
  const m = sipMessage('b'.repeat(100000));
  feed(f, Buffer.from(m), 4096);
  assert.equal(f.pending, 0);
  // internal, but the point of the test: nothing retained
  assert.equal((f as unknown as { buf: Buffer }).buf.length, 0);
});
