// The ping stage (edge/stages/ping.ts) on its own: which OPTIONS count as pings to the edge itself,
// the modes, the sides, and shadow mode through the real Pipeline. The same stage through a
// spawned edge, sipsak and the auth stage: test/pings.test.ts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Pipeline } from '../edge/pipeline';
import { parseMessage } from '../edge/sip/parser';
import type { SipRequest, SipUri } from '../edge/sip/types';
import { PING_REASONS, PING_REPLY_HEADERS, createPingStage, isPing, type PingTarget } from '../edge/stages/ping';
import type { MessageContext, Stage, Verdict } from '../edge/verdict';

const target: PingTarget = {
  serves: (h) => h === 'example.com' || h === '192.0.2.10',
  isOwnRoute: (u: SipUri) => u.host === '192.0.2.10' && (u.port ?? 5060) === 5060,
};

function options(ruri: string, o: { method?: string; toTag?: boolean; route?: string } = {}): SipRequest {
  const method = o.method ?? 'OPTIONS';
  const text = [
    `${method} ${ruri} SIP/2.0`, 'Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-p1', 'Max-Forwards: 70',
    ...(o.route !== undefined ? [`Route: ${o.route}`] : []),
    'From: <sip:monitor@monitoring.example.net>;tag=a', `To: <${ruri}>${o.toTag ? ';tag=b' : ''}`, 'Call-ID: p1', `CSeq: 1 ${method}`,
    'Content-Length: 0', '', '',
  ].join('\r\n');
  const r = parseMessage(Buffer.from(text, 'latin1'), { framing: 'datagram' });
  assert.ok(r.ok);
  return r.msg as SipRequest;
}

const ctx = (msg: SipRequest, side: 'outside' | 'inside' = 'outside'): MessageContext =>
  ({ msg, source: { transport: 'udp', address: '198.51.100.7', port: 5060 }, side, trust: side === 'inside' ? 'inside' : 'untrusted', receivedAt: 0 });

test('what is a ping to the edge itself: OPTIONS, no user part, the edge or a served domain, outside a dialog, no foreign Route', () => {
  const cases: Array<[string, SipRequest, boolean]> = [
    ['served domain', options('sip:example.com'), true],
    ['the edge address with a port', options('sip:192.0.2.10:5060'), true],
    ['sips', options('sips:example.com'), true],
    ['the edge\'s own Route (popped by the proxy)', options('sip:example.com', { route: '<sip:192.0.2.10;lr>' }), true],
    ['a user part: for the PBX', options('sip:1000@example.com'), false],
    ['another domain', options('sip:other.example.org'), false],
    ['in a dialog (To tag)', options('sip:example.com', { toTag: true }), false],
    ['a Route toward another host', options('sip:example.com', { route: '<sip:203.0.113.5;lr>' }), false],
    ['another method', options('sip:example.com', { method: 'INFO' }), false],
    ['tel URI', options('tel:+4930123'), false],
  ];
  for (const [what, req, want] of cases) assert.equal(isPing(req, target), want, what);
});

test('answer mode replies 200 with the RFC 3261 11.2 headers; forward, challenge and the PBX side go on', () => {
  const answer = createPingStage({ mode: 'answer', target });
  assert.equal(answer.name, 'ping');
  assert.deepEqual([...answer.reasons], [...PING_REASONS]);
  const v = answer.check(ctx(options('sip:example.com'))) as Verdict;
  assert.deepEqual(v, { action: 'reply', status: 200, reason: 'options_ping', headers: PING_REPLY_HEADERS });
  assert.deepEqual(PING_REPLY_HEADERS.map(([n]) => n), ['Allow', 'Accept', 'Accept-Encoding', 'Accept-Language', 'Supported']);
  assert.equal((answer.check(ctx(options('sip:1000@example.com'))) as Verdict).action, 'continue');
  assert.equal((answer.check(ctx(options('sip:example.com'), 'inside')) as Verdict).action, 'continue', 'the PBX\'s OPTIONS go where addressed');
  for (const mode of ['forward', 'challenge'] as const) {
    assert.equal((createPingStage({ mode, target }).check(ctx(options('sip:example.com'))) as Verdict).action, 'continue', mode);
  }
});

test('shadow mode: the answer is counted but the ping goes on to the next stage', () => {
  const seen: string[] = [];
  const next: Stage = { name: 'auth', reasons: ['challenge'], check: () => ({ action: 'reply', status: 407, reason: 'challenge' }) };
  const shadow = new Pipeline([{ stage: createPingStage({ mode: 'answer', target }), mode: 'shadow' }, { stage: next, mode: 'enforce' }], (stage, v, mode) => seen.push(`${stage}:${v.action}:${mode}`));
  const out = shadow.run(ctx(options('sip:example.com')));
  assert.ok(!(out instanceof Promise));
  assert.equal(out.stage, 'auth');
  assert.deepEqual(seen, ['ping:reply:shadow', 'auth:reply:enforce']);
});
