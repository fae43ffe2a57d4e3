// Overload control: while the receive queue is backlogged, new outside requests are refused
// (known sources with 503 + Retry-After, unknown ones silently) while everything that belongs to
// work already accepted passes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { ManualClock } from '../edge/clock';
import { startEdge } from '../edge/edge';
import { OverloadGuard } from '../edge/overload';
import { testConfig } from './helpers/config';
import { sample } from './helpers/prom';
import { UdpPeer, header, headers, request, response, uniq } from './helpers/udp-peer';

const silent = pino({ level: 'silent' });

test('unknown newcomers are refused first; favoured sources only when that is not enough, and they are readmitted first', () => {
  let util = 0.5;
  const changes: boolean[] = [];
  const g = new OverloadGuard({ enabled: true, retryAfterSeconds: 5 }, () => util, (s) => changes.push(s.shedding), () => 0.5);
  assert.equal(g.active, false);
  const step = (unknown: boolean) => { if (unknown) g.sawUnknown(); const s = g.sample(); return [Math.round(s.unknown * 100), Math.round(s.favoured * 100)]; };
  // a backlogged queue with unknown traffic present: only the unknown tier ramps (5 % per 100 ms)
  for (let i = 0; i < 10; i++) step(true);
  assert.deepEqual(step(true), [55, 0]);
  assert.equal(g.shed(false), true, 'draw 0.5 < 0.55');
  assert.equal(g.shed(true), false, 'favoured untouched while unknown ones can still be refused');
  for (let i = 0; i < 9; i++) step(true);
  assert.deepEqual(step(true), [100, 5], 'every unknown newcomer refused, then favoured ones start');
  assert.deepEqual(step(true), [100, 10]);
  // the queue drains: shedding decays at half the pace, favoured sources readmitted first
  util = 0.05;
  assert.deepEqual(step(true), [100, 8]);
  assert.deepEqual(step(true), [100, 5]);
  step(true);
  assert.deepEqual(step(true), [100, 0]);
  assert.deepEqual(step(true), [98, 0], 'then the unknown tier');
  for (let i = 0; i < 60; i++) step(true);
  assert.equal(g.active, false, 'back to zero once the load is gone');
  assert.deepEqual(changes, [true, false], 'one log line when shedding starts, one when it ends');
});

test('with no unknown traffic (a trunk-only edge), saturation sheds the favoured tier directly, never all of it', () => {
  const g = new OverloadGuard({ enabled: true, retryAfterSeconds: 5 }, () => 1, undefined, () => 0.97);
  g.sample();
  assert.equal(g.state().favoured, 0.05);
  for (let i = 0; i < 50; i++) g.sample();
  assert.ok(g.state().favoured < 1);
  assert.equal(g.shed(true), false, 'a draw above the cap passes');
});

test('without a readable signal the guard sheds nothing and says so once', () => {
  const seen: boolean[] = [];
  let v = 1;
  const g = new OverloadGuard({ enabled: true, retryAfterSeconds: 5 }, () => v, (s) => seen.push(s.blind));
  g.sample(); g.sample();
  assert.equal(g.active, true);
  v = Number.NaN;
  g.sample(); g.sample();
  assert.equal(g.active, false);
  assert.equal(g.shed(true) || g.shed(false), false);
  assert.deepEqual(seen, [false, true]);
});

test('the guard samples on the injected clock: no real time passes, no timer is left behind', () => {
  const clock = new ManualClock();
  let util = 1;
  const g = new OverloadGuard({ enabled: true, retryAfterSeconds: 5 }, () => util).start(100, clock);
  assert.equal(g.active, false);
  clock.advance(99);
  assert.equal(g.active, false, 'no sample before the interval');
  clock.advance(1);
  assert.equal(g.active, true, 'one sample of a full backlog starts shedding');
  util = 0;
  clock.advance(5_000);
  assert.equal(g.active, false, 'the backlog gone, shedding ends');
  g.stop();
  assert.equal(clock.pending, 0, 'stop() leaves no timer');
});

test('Retry-After is jittered around the configured value', () => {
  const seen = new Set<string>();
  const g = new OverloadGuard({ enabled: true, retryAfterSeconds: 10 }, () => 0);
  for (let i = 0; i < 200; i++) seen.add(g.retryAfter());
  for (const v of seen) assert.ok(Number(v) >= 10 && Number(v) <= 15, v);
  assert.ok(seen.size > 1, 'not one fixed value for every client');
});

test('a saturated edge refuses new calls, keeps dialogs and answers flowing, and never answers unknown sources', async () => {
  const pbx = await UdpPeer.bind('127.0.0.2');
  const carrier = await UdpPeer.bind('127.0.0.1');
  const stranger = await UdpPeer.bind('127.0.0.3');
  let util = 0;
  // overload sampling runs on this clock: the test moves it instead of sleeping for samples
  const policy = new ManualClock();
  const edge = await startEdge(testConfig({
    upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }],
    trusted: ['127.0.0.1/32'],
    overload: { enabled: true, retryAfterSeconds: 7, prioritize: true, turnBudgetMs: 10, maxQueuedMB: 32 },
  }), silent, { clock: new ManualClock(), policyClock: policy, watchRules: false, pressure: () => util });
  const port = edge.listeners[0]!.port;
  try {
    // an INVITE accepted before the overload
    const cid = uniq('ov');
    const inv = request(carrier, { callId: cid });
    await carrier.send(inv, port);
    const atPbx = await pbx.wait((m) => m.text.startsWith('INVITE') && header(m.text, 'Call-ID') === cid);

    // the receive queue backlogs: the guard's timer samples every 100 ms
    util = 1;
    policy.advance(1300);

    // the accepted call goes on: the PBX's answer reaches the carrier, the ACK and BYE reach the PBX
    // the PBX echoes Record-Route (RFC 3261 12.1.1)
    const rrs = headers(atPbx.text, 'Record-Route').map((v) => `Record-Route: ${v}`);
    await pbx.send(response(atPbx.text, 200, 'OK', { toTag: 'pbx1', extra: rrs }), atPbx.port, atPbx.address);
    const ok = await carrier.wait((m) => m.text.startsWith('SIP/2.0 200') && header(m.text, 'Call-ID') === cid);
    const rr = header(ok.text, 'Record-Route');
    assert.ok(rr, 'dialog route set');
    const route = rr!.split(',').map((s) => s.trim()).reverse();
    const ack = request(carrier, { method: 'ACK', callId: cid, toTag: 'pbx1', extra: route.map((r) => `Route: ${r}`) });
    await carrier.send(ack, port);
    await pbx.wait((m) => m.text.startsWith('ACK') && header(m.text, 'Call-ID') === cid);
    const bye = request(carrier, { method: 'BYE', callId: cid, toTag: 'pbx1', cseq: 2, extra: route.map((r) => `Route: ${r}`) });
    await carrier.send(bye, port);
    await pbx.wait((m) => m.text.startsWith('BYE') && header(m.text, 'Call-ID') === cid);

    // new calls from the trusted carrier (no unknown traffic: the favoured tier is the one shed):
    // many get 503 with a jittered Retry-After, the rest are forwarded, none vanish
    let refused = 0, forwarded = 0;
    for (let i = 0; i < 20; i++) {
      const c = uniq('ov-new');
      await carrier.send(request(carrier, { callId: c }), port);
      const got = await Promise.race([
        carrier.wait((m) => m.text.startsWith('SIP/2.0 503') && header(m.text, 'Call-ID') === c, 1000).then((m) => ({ m, kind: '503' as const })),
        pbx.wait((m) => m.text.startsWith('INVITE') && header(m.text, 'Call-ID') === c, 1000).then((m) => ({ m, kind: 'fwd' as const })),
      ]);
      if (got.kind === '503') {
        refused++;
        const ra = Number(header(got.m.text, 'Retry-After'));
        assert.ok(ra >= 7 && ra <= 10, `Retry-After ${ra}`);
      } else forwarded++;
    }
    assert.ok(refused >= 5, `new calls refused under overload (refused ${refused}, forwarded ${forwarded})`);

    // unknown newcomers arrive: they become the tier refused first, silently (a 503 per spoofed
    // packet would make the edge a reflector when it can least afford it)
    const strangerIds: string[] = [];
    // 2 s of backlog with unknown traffic take the unknown tier to 100 %: 3.5 s of the guard's
    // clock, a newcomer every 40 ms of it (a few real ms to reach the edge over loopback)
    for (let i = 0; i < 88; i++) {
      const c = uniq('ov-stranger');
      strangerIds.push(c);
      await stranger.send(request(stranger, { callId: c, method: 'OPTIONS' }), port);
      await new Promise((r) => setTimeout(r, 5));
      policy.advance(40);
    }
    const late: string[] = [];
    for (let i = 0; i < 5; i++) {
      const c = uniq('ov-stranger-late');
      late.push(c);
      await stranger.send(request(stranger, { callId: c }), port);
    }
    assert.ok(await pbx.silent((m) => late.includes(header(m.text, 'Call-ID') ?? ''), 300), 'all unknown newcomers refused once the loop stays saturated');
    assert.ok(await stranger.silent((m) => m.text.startsWith('SIP/2.0 503'), 50), 'never a 503 to an unknown source');
    const text = await edge.metrics.metrics();
    assert.equal(sample(text, 'sipedge_verdicts_total', { stage: 'overload', action: 'reply', reason: 'overload', mode: 'enforce' }), refused);
    assert.ok((sample(text, 'sipedge_verdicts_total', { stage: 'overload', action: 'drop', reason: 'overload', mode: 'enforce' }) ?? 0) >= 1);

    // load gone: shedding decays (favoured sources first) until new calls pass again
    util = 0;
    let passed = false;
    for (let i = 0; i < 30 && !passed; i++) {
      // the guard samples on the injected clock: without advancing it, it never sees the backlog
      // gone and only the random share of favoured calls it lets through could pass
      policy.advance(100);
      const c2 = uniq('ov-after');
      await carrier.send(request(carrier, { callId: c2 }), port);
      passed = await pbx.wait((m) => m.text.startsWith('INVITE') && header(m.text, 'Call-ID') === c2, 500).then(() => true, () => false);
    }
    assert.ok(passed, 'new calls forwarded again once the backlog is gone');
  } finally {
    pbx.close(); carrier.close(); stranger.close(); await edge.close(0);
  }
});
