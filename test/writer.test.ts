import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseMessage } from '../edge/sip/parser';
import { MessageWriter } from '../edge/sip/writer';
import type { SipMessage } from '../edge/sip/types';
import { INVITE_YEALINK, MULTI, OK_INVITE, SAMPLES, WSINV, sip } from './helpers/messages';

function parsed(b: Buffer): SipMessage {
  const r = parseMessage(b);
  if (!r.ok) assert.fail(`parse failed: ${r.reason}`);
  return r.msg;
}
const lines = (b: Buffer): string[] => b.toString('latin1').split('\r\n');
/** the raw bytes of the header lines with this canonical name, in order */
const rawLines = (m: SipMessage, name: string): string[] => m.headers.filter((h) => h.name === name).map((h) => m.raw.toString('latin1', h.start, h.end));

test('round trip: an untouched message is copied byte for byte', () => {
  for (const s of SAMPLES) {
    const out = new MessageWriter(parsed(s.bytes)).toBuffer();
    assert.ok(out.equals(s.bytes), s.name);
  }
});

test('round trip drops bytes past Content-Length and leading CRLFs', () => {
  const m = parsed(Buffer.concat([Buffer.from('\r\n'), INVITE_YEALINK, Buffer.from('trailing junk')]));
  assert.ok(new MessageWriter(m).toBuffer().equals(INVITE_YEALINK));
});

test('prependTop adds the first header line, everything else unchanged', () => {
  const m = parsed(INVITE_YEALINK);
  const out = new MessageWriter(m).prependTop('Via', 'SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKedge1').toBuffer();
  const added = 'Via: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKedge1\r\n';
  assert.equal(out.length, INVITE_YEALINK.length + added.length);
  assert.ok(out.subarray(0, m.startLineEnd).equals(INVITE_YEALINK.subarray(0, m.startLineEnd)));
  assert.equal(out.toString('latin1', m.startLineEnd, m.startLineEnd + added.length), added);
  assert.ok(out.subarray(m.startLineEnd + added.length).equals(INVITE_YEALINK.subarray(m.startLineEnd)));
  // two prependTop calls: the last one ends up on top
  const out2 = new MessageWriter(m).prependTop('Via', 'first').prependTop('Via', 'second').toBuffer();
  assert.deepEqual(lines(out2).slice(1, 3), ['Via: second', 'Via: first']);
});

test('removeFirstValue rewrites a multi-value line keeping the received name, or drops it', () => {
  const m = parsed(OK_INVITE);
  const out = new MessageWriter(m).removeFirstValue('via').toBuffer();
  const via = m.headers[0];
  assert.ok(via !== undefined && via.name === 'via');
  const rewritten = 'Via: SIP/2.0/UDP 192.168.1.23:5060;branch=z9hG4bK1497823375;rport=5060;received=198.51.100.7\r\n';
  assert.ok(out.subarray(0, via.start).equals(OK_INVITE.subarray(0, via.start)));
  assert.equal(out.toString('latin1', via.start, via.start + rewritten.length), rewritten);
  assert.ok(out.subarray(via.start + rewritten.length).equals(OK_INVITE.subarray(via.end)));
  // second removal drops the (rewritten) line entirely
  const out2 = new MessageWriter(m).removeFirstValue('via').removeFirstValue('v').toBuffer();
  assert.ok(out2.subarray(via.start).equals(OK_INVITE.subarray(via.end)));
  const r2 = parseMessage(out2);
  assert.ok(r2.ok);
  assert.equal(r2.ok && r2.msg.headers.some((h) => h.name === 'via'), false);
});

test('removeFirstValue on a compact / folded line keeps the received name form', () => {
  const m = parsed(WSINV);
  const out = new MessageWriter(m).removeFirstValue('via').removeFirstValue('via').toBuffer();
  // the first Via line (single value) is gone; the folded "v:" line now holds only its second value
  const r = parseMessage(out);
  assert.ok(r.ok);
  if (!r.ok) return;
  const vias = r.msg.headers.filter((h) => h.name === 'via');
  assert.equal(vias.length, 1);
  assert.equal(vias[0]?.rawName, 'v');
  assert.equal(vias[0]?.value, 'SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239');
  // every other line is byte-identical
  const others = (b: SipMessage): string[] => b.headers.filter((h) => h.name !== 'via').map((h) => b.raw.toString('latin1', h.start, h.end));
  assert.deepEqual(others(r.msg), others(m));
});

test('replaceFirst, removeAll, prependBefore, append, setStartLine', () => {
  const m = parsed(MULTI);
  const out = new MessageWriter(m)
    .setStartLine('BYE sip:1002@10.0.0.9:5060 SIP/2.0')
    .replaceFirst('max-forwards', '68')
    .removeAll('Route')
    .prependBefore('Via', 'SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKnew')
    .prependBefore('Record-Route', '<sip:10.0.0.1;lr>')
    .append('X-Edge', 'yes')
    .toBuffer();
  const r = parseMessage(out);
  assert.ok(r.ok);
  if (!r.ok) return;
  const o = r.msg;
  assert.equal(o.kind === 'request' && o.uri, 'sip:1002@10.0.0.9:5060');
  assert.equal(o.headers.find((h) => h.name === 'max-forwards')?.value, '68');
  assert.equal(o.headers.some((h) => h.name === 'route'), false);
  const names = o.headers.map((h) => h.rawName);
  assert.deepEqual(names, ['Record-Route', 'Via', 'Via', 'Via', 'Max-Forwards', 'From', 'To', 'Call-ID', 'CSeq', 'Content-Length', 'X-Edge']);
  assert.equal(o.headers[1]?.value, 'SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKnew');
  // untouched lines are byte-identical
  for (const n of ['from', 'to', 'call-id', 'cseq', 'content-length']) assert.deepEqual(rawLines(o, n), rawLines(m, n), n);
  assert.deepEqual(rawLines(o, 'via').slice(1), rawLines(m, 'via'));
  assert.equal(o.bodyLength, 0);
});

test('edits keep the body exactly bodyLength bytes', () => {
  const m = parsed(OK_INVITE);
  const out = new MessageWriter(m).replaceFirst('Server', 'edge').toBuffer();
  const r = parseMessage(out);
  assert.ok(r.ok);
  if (!r.ok) return;
  assert.ok(r.msg.raw.subarray(r.msg.bodyStart).equals(OK_INVITE.subarray(m.bodyStart)));
  assert.equal(r.msg.headers.find((h) => h.name === 'server')?.value, 'edge');
});

test('no-ops when the named header is absent', () => {
  const m = parsed(INVITE_YEALINK);
  const out = new MessageWriter(m).replaceFirst('X-None', 'v').removeFirstValue('route').removeAll('path').toBuffer();
  assert.ok(out.equals(INVITE_YEALINK));
});

test('values cannot inject header lines: CR/LF/controls become SP', () => {
  const m = parsed(sip(['OPTIONS sip:a@example.com SIP/2.0', 'Content-Length: 0']));
  const out = new MessageWriter(m).append('X-Evil', 'a\r\nVia: injected\u0000').toBuffer();
  const r = parseMessage(out);
  assert.ok(r.ok);
  if (!r.ok) return;
  assert.equal(r.msg.headers.length, 2);
  assert.equal(r.msg.headers[1]?.value, 'a  Via: injected');
});
