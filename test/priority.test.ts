// Trusted-first prioritization under overload (edge/path/priority.ts): once the edge has spent
// its handling budget for a turn of the event loop, the work of established calls comes first,
// then trusted peers, the PBX side and promoted sources, and unknown sources are shed, silently,
// before they cost a parse.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hasToTag, MAX_DELAY_MS, priorityClass, PriorityQueues, type PriorityClass, type PriorityShedReason } from '../edge/path/priority';
import type { Inbound } from '../edge/transport/types';
import { endpoint, startMemoryEdge } from './helpers/memory-edge';
import { sample } from './helpers/prom';
import { header, request, response } from './helpers/udp-peer';

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const busy = (ms: number): void => { const end = performance.now() + ms; while (performance.now() < end) { /* the edge falls behind */ } };
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

test('the cheap view: a status line or a To tag is dialog work; the rest goes by source', () => {
  const cases: [string, boolean, PriorityClass][] = [
    ['SIP/2.0 200 OK\r\nVia: x\r\n\r\n', true, 'dialog'],
    ['BYE sip:a@b SIP/2.0\r\nVia: x\r\nTo: <sip:a@b>;tag=abc\r\n\r\n', true, 'dialog'],
    ['BYE sip:a@b SIP/2.0\r\nVia: x\r\nt: sip:a@b ; TAG = abc\r\n\r\n', true, 'dialog'], // compact form, SWS around '=' (RFC 3261 7.3.3, 25.1)
    ['ACK sip:a@b SIP/2.0\r\nTO  : "A;tag=no" <sip:a@b>;x=1;tag=t\r\n\r\n', true, 'dialog'],
    // a tag costs an attacker nothing: from an unknown source it only ranks above unknown new work
    ['SIP/2.0 200 OK\r\nVia: x\r\n\r\n', false, 'unknown_dialog'],
    ['INVITE sip:a@b SIP/2.0\r\nVia: x\r\nTo: <sip:a@b>;tag=forged\r\n\r\n', false, 'unknown_dialog'],
    ['INVITE sip:a@b SIP/2.0\r\nVia: x\r\nTo: <sip:a@b>\r\n\r\n', true, 'favoured'],
    ['INVITE sip:a@b SIP/2.0\r\nVia: x\r\nTo: <sip:a@b;tag=inuri>\r\n\r\n', false, 'unknown'], // a URI parameter is not the header's tag
    ['INVITE sip:a@b SIP/2.0\r\nTimestamp: 1;tag=x\r\nTo: <sip:a@b>\r\n\r\n', false, 'unknown'],
    ['INVITE sip:a@b SIP/2.0\r\nTo: <sip:a@b>\r\n\r\nTo: <sip:a@b>;tag=inbody', false, 'unknown'], // the body is not a header
    ['OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n', false, 'unknown'],
    ['\x16\x03\x01garbage', false, 'unknown'],
    ['', true, 'favoured'],
  ];
  for (const [text, favoured, cls] of cases) assert.equal(priorityClass(b(text), favoured), cls, JSON.stringify(text));
  assert.equal(hasToTag(b('SIP/2.0 180 Ringing\r\nTo: <sip:a@b>;tag=1\r\n\r\n')), true);
});

test('the cheap view never throws on attacker bytes and reads no further than the headers allow', () => {
  // seeded, so a failure reproduces
  let seed = 7;
  const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  const alphabet = b('To: t:;tag=<>\r\n =SIP/2.0 ');
  for (let i = 0; i < 3000; i++) {
    const buf = Buffer.alloc(rnd(600));
    for (let k = 0; k < buf.length; k++) buf[k] = rnd(4) === 0 ? rnd(256) : alphabet[rnd(alphabet.length)]!;
    priorityClass(buf, rnd(2) === 0);
  }
  // a To tag past the first 4 KiB of headers is not looked for: the message only loses its class
  const deep = b(`BYE sip:a@b SIP/2.0\r\n${'X-Pad: x\r\n'.repeat(500)}To: <sip:a@b>;tag=1\r\n\r\n`);
  assert.equal(hasToTag(deep), false);
});

/** queues around a handler that records what it handled, each costing `costMs` */
/** delay bounds long enough that a loaded test machine never sheds by delay where a test does not mean it */
const PATIENT = { dialog: 60_000, favoured: 60_000, unknown_dialog: 60_000, unknown: 60_000 };

function queues(costMs: number, maxQueuedBytes = 1 << 20, maxDelayMs: Record<PriorityClass, number> = PATIENT) {
  const handled: string[] = [];
  const shed: string[] = [];
  const q = new PriorityQueues({
    turnBudgetMs: 1, maxQueuedBytes, maxDelayMs,
    classify: (inb) => priorityClass(inb.bytes, inb.source.address.startsWith('10.')),
    handle: (inb) => { handled.push(inb.bytes.toString('latin1').split('\r\n')[1]!); busy(costMs); },
    onShed: (cls: PriorityClass, reason: PriorityShedReason) => shed.push(`${cls}:${reason}`),
  });
  const push = (name: string, from: string, tag = false, at = performance.now()): void =>
    q.push({ bytes: b(`X sip:a SIP/2.0\r\n${name}\r\nTo: <sip:a>${tag ? ';tag=1' : ''}\r\n\r\n`), source: endpoint(from, 5060), receivedAt: at } as Inbound);
  return { q, handled, shed, push };
}

test('past the turn budget, work waits and is served best class first; below it, at once and in order', async () => {
  const { q, handled, push } = queues(2);
  push('u1', '203.0.113.1');
  assert.deepEqual(handled, ['u1'], 'nothing waiting, budget left: handled at once');
  push('u2', '203.0.113.2');
  push('f1', '10.0.0.1');
  push('u3', '203.0.113.3');
  push('x1', '203.0.113.5', true); // a To tag from an unknown source
  push('d1', '10.0.0.4', true);
  assert.deepEqual(handled, ['u1'], 'the budget of this turn is spent: the rest waits');
  assert.deepEqual(q.depth, { dialog: 1, favoured: 1, unknown_dialog: 1, unknown: 2 });
  for (let i = 0; i < 10 && handled.length < 6; i++) await turn();
  assert.deepEqual(handled, ['u1', 'd1', 'f1', 'x1', 'u2', 'u3'], 'dialog, favoured, unknown dialog, unknown, each in arrival order');
});

test('stale work is dropped by its class delay bound, unknown sources long before dialog work', async () => {
  assert.deepEqual(MAX_DELAY_MS, { dialog: 2000, favoured: 500, unknown_dialog: 500, unknown: 200 }, 'the shipped bounds (README)');
  // the shipped unknown bound; the others stretched so that a loaded machine cannot push them over
  const { handled, shed, push } = queues(2, 1 << 20, { ...PATIENT, unknown: MAX_DELAY_MS.unknown });
  push('u0', '203.0.113.1');
  const t = performance.now() - 300; // as if they had waited 300 ms in the socket
  push('u1', '203.0.113.1', false, t);
  push('f1', '10.0.0.1', false, t);
  push('d1', '10.0.0.4', true, t);
  for (let i = 0; i < 10 && handled.length + shed.length < 4; i++) await turn();
  assert.deepEqual(handled, ['u0', 'd1', 'f1'], 'dialog and favoured work still served after 300 ms');
  assert.deepEqual(shed, ['unknown:queue_delay'], 'an unknown request older than 200 ms is not worth a parse');
});

test('a full queue evicts the lowest class first, never dialog work for an unknown newcomer', async () => {
  const size = b('X sip:a SIP/2.0\r\nu1\r\nTo: <sip:a>\r\n\r\n').length;
  const { q, handled, shed, push } = queues(2, 3 * size + 20); // room for three unknown requests, or two with a To tag and one without
  push('u0', '203.0.113.1'); // handled at once, spends the budget
  push('u1', '203.0.113.1'); push('u2', '203.0.113.1'); push('u3', '203.0.113.1');
  push('f1', '10.0.0.1');
  assert.deepEqual(shed, ['unknown:queue_full'], 'the favoured newcomer took the oldest unknown place');
  push('d1', '10.0.0.1', true); push('d2', '10.0.0.1', true);
  assert.deepEqual(q.depth, { dialog: 2, favoured: 1, unknown_dialog: 0, unknown: 0 });
  push('u4', '203.0.113.1');
  assert.deepEqual(shed, ['unknown:queue_full', 'unknown:queue_full', 'unknown:queue_full', 'unknown:queue_full'], 'an unknown newcomer never displaces better work');
  for (let i = 0; i < 10 && handled.length < 4; i++) await turn();
  assert.deepEqual(handled, ['u0', 'd1', 'd2', 'f1']);
});

const PBX = { address: '127.0.0.2', port: 5070 };
const CARRIER = { address: '198.51.100.7', port: 5060 }; // a trusted peer
const PHONE = { address: '192.0.2.44', port: 5062 }; // a promoted (authenticated) source
const UNKNOWN = 3000;
const FRESH = 500;

/** an edge that fell behind: the unknown flood (its first 500 fresh, enough to spend the turn's
 *  budget, the rest already 300 ms old, as after a stall), a trusted INVITE, a promoted INVITE
 *  and the PBX's 200 OK to an established call arrive in one burst */
async function burst(prioritize: boolean) {
  const m = await startMemoryEdge({
    upstreams: [{ transport: 'udp', host: PBX.address, port: PBX.port }],
    trusted: ['198.51.100.0/24'],
    transactions: { max: 100000, memoryBudgetMB: 1024, t1Ms: 500, t2Ms: 4000, t4Ms: 5000 },
    overload: { enabled: false, retryAfterSeconds: 5, prioritize, turnBudgetMs: 10, maxQueuedMB: 32 },
  });
  m.edge.suspicion.promote(PHONE.address);
  // an established call: the carrier's INVITE forwarded before the burst; the PBX's 200 OK comes in it
  const call = request(CARRIER, { ruri: 'sip:1000@example.com', callId: 'established' });
  m.deliver(call, CARRIER);
  await m.settle();
  const fwd = m.sentTo(PBX.address, PBX.port).find((s) => header(s.text, 'Call-ID') === 'established');
  assert.ok(fwd, 'the call was forwarded before the overload');
  await new Promise((r) => setTimeout(r, 20)); // a new turn: the budget is whole again
  const sentBefore = m.sent.length;
  const stale = performance.now() - 300;
  for (let i = 0; i < UNKNOWN; i++) {
    const src = { address: `203.0.${113 + (i >> 8)}.${i & 255}`, port: 5060 };
    const bytes = Buffer.from(request(src, { ruri: 'sip:1000@example.com', callId: `flood-${i}` }), 'latin1');
    m.edge.inject({ bytes, source: endpoint(src.address, src.port), receivedAt: i < FRESH ? performance.now() : stale } as Inbound);
  }
  m.deliver(request(CARRIER, { ruri: 'sip:2000@example.com', callId: 'trusted-new' }), CARRIER);
  m.deliver(request(PHONE, { ruri: 'sip:3000@example.com', callId: 'promoted-new' }), PHONE);
  m.deliver(response(fwd.text, 200, 'OK', { toTag: 'pbx' }), PBX);
  for (let i = 0; i < 50; i++) await turn();
  const after = m.sent.slice(sentBefore);
  const about = (cid: string) => after.filter((s) => header(s.text, 'Call-ID') === cid);
  const flood = after.filter((s) => header(s.text, 'Call-ID')?.startsWith('flood-')).length;
  const metrics = await m.edge.metrics.metrics();
  await m.close();
  return { about, flood, metrics };
}

test('an edge past its capacity serves established calls, trusted peers and promoted sources, and sheds unknown sources silently', async () => {
  const r = await burst(true);
  assert.ok(r.about('established').some((s) => s.dest.address === CARRIER.address && s.text.startsWith('SIP/2.0 200 ')), 'the 200 OK of the established call reaches the carrier');
  assert.ok(r.about('trusted-new').some((s) => s.dest.address === PBX.address && s.text.startsWith('INVITE ')), 'the trusted peer\'s new call is forwarded');
  assert.ok(r.about('promoted-new').some((s) => s.dest.address === PBX.address && s.text.startsWith('INVITE ')), 'the promoted source\'s new call is forwarded');
  // only what was handled before the turn's budget ran out got anything; the rest cost no parse
  // and got no answer
  const shed = sample(r.metrics, 'sipedge_priority_shed_total', { class: 'unknown', reason: 'queue_delay' }) ?? 0;
  assert.ok(r.flood < UNKNOWN / 2, `unknown sources got ${r.flood} messages out of the edge`);
  assert.ok(shed >= UNKNOWN - FRESH, `shed ${shed}: every stale one`);
  assert.equal(sample(r.metrics, 'sipedge_priority_shed_total', { class: 'favoured', reason: 'queue_delay' }), 0);
  assert.equal(sample(r.metrics, 'sipedge_priority_shed_total', { class: 'dialog', reason: 'queue_full' }), 0, 'closed label set, declared at zero');
  assert.equal(sample(r.metrics, 'sipedge_priority_queue_delay_seconds_count', { class: 'favoured' }), 3, 'the first INVITE and the two new ones');
  assert.ok((sample(r.metrics, 'sipedge_priority_queue_delay_seconds_count', { class: 'dialog' }) ?? 0) >= 1, 'the PBX\'s 200 OK');
});

test('without prioritization the same burst is worked through in arrival order: every flood INVITE is handled', async () => {
  const r = await burst(false);
  assert.equal(r.flood >= UNKNOWN, true, `unknown sources got ${r.flood} messages out of the edge`);
});
