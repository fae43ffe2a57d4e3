// Suspicion budget, ban escalation and trust promotion (edge/suspicion.ts), against the real
// in-memory SharedStore (edge/store/memory.ts) with a controlled clock for bans and promotions.
// Includes the NAT-office scenario in miniature and the bounded promotion table.
import { test } from 'node:test';
import { snapshotWith } from './helpers/snapshot';
import assert from 'node:assert/strict';
import { ManualClock } from '../edge/clock';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { loadYamlText } from '../edge/config/yaml';
import { parseMessage } from '../edge/sip/parser';
import type { SipMessage } from '../edge/sip/types';
import { createMemoryStore } from '../edge/store/memory';
import type { Ban, SharedStore } from '../edge/store/types';
import { createRateLimitStage } from '../edge/policy/limits/ratelimit';
import { LimiterCache, SUSPICION_BAN_REASONS, SUSPICION_EVENTS, Suspicion } from '../edge/suspicion';
import type { Verdict } from '../edge/verdict';
import { compileLimits, LimitsFileSchema } from '../edge/policy/limits/compile';
import type { RulesSnapshot } from '../edge/policy/snapshot';
import type { CompiledLimits } from '../edge/policy/limits/compile';

function limitsOf(yaml: string): CompiledLimits {
  const y = loadYamlText(yaml, 'limits.yaml', LimitsFileSchema);
  assert.ok(y.ok, y.ok ? '' : y.errors.join('\n'));
  const r = compileLimits(y.value, y.at);
  assert.deepEqual(r.errors, []);
  return r.limits;
}

function snapshotOf(limits: CompiledLimits): RulesSnapshot {
  return snapshotWith({ stages: [{ name: 'sanity', mode: 'enforce' }, { name: 'ratelimit', mode: 'enforce' }], trustedSkip: new Set(['ratelimit']), limits });
}

/** a clock the test moves (epoch ms) */
function clock(start = Date.UTC(2026, 0, 1)) {
  let t = start;
  return { now: () => t, advance: (ms: number) => { t += ms; } };
}

function setup(yaml = '', o: { maxPromoted?: number } = {}) {
  const c = clock();
  const store = createMemoryStore({ now: c.now, sweepIntervalMs: 0 });
  const snap = snapshotOf(limitsOf(yaml));
  const bans: Ban[] = [];
  const suspicion = new Suspicion({ store, rules: () => snap, now: c.now, onBan: (b) => bans.push(b), softGraceMs: 0, ...o });
  return { clock: c, store, snap, suspicion, bans };
}

/** records `event` until a ban comes back (at most `max` times); returns the ban and the count */
async function untilBan(s: Suspicion, addr: string, event: Parameters<Suspicion['record']>[1], max: number, rule?: string): Promise<{ ban: Ban | null; events: number }> {
  for (let i = 1; i <= max; i++) {
    const b = await s.record(addr, event, rule);
    if (b !== null) return { ban: b, events: i };
  }
  return { ban: null, events: max };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('the closed list of events and ban reasons', () => {
  assert.deepEqual([...SUSPICION_EVENTS], ['malformed', 'scanner', 'unmatched_reply', 'auth_failure', 'missing_auth', 'unknown_user', 'enumeration', 'flood']);
  assert.deepEqual([...SUSPICION_BAN_REASONS], SUSPICION_EVENTS.map((e) => `suspicion_${e}`));
});

test('an exhausted budget bans the source with the reason and rule, for bans.seconds, once', async () => {
  const { suspicion, store, bans, clock: c } = setup();
  // 20 points: 20 weight-1 events are within budget, the 21st bans
  const r = await untilBan(suspicion, '198.51.100.1', 'auth_failure', 50, 'auth:digest');
  assert.equal(r.events, 21);
  assert.ok(r.ban);
  assert.equal(r.ban.key, '198.51.100.1');
  assert.equal(r.ban.reason, 'suspicion_auth_failure');
  assert.equal(r.ban.rule, 'auth:digest');
  assert.equal(r.ban.count, 1);
  assert.equal(r.ban.until - r.ban.since, 600_000);
  assert.equal(r.ban.since, c.now());
  assert.deepEqual(bans, [r.ban]);
  assert.deepEqual((await store.listBans()).map((b) => b.key), ['198.51.100.1']);
  // scanner weighs 5: the 5th hit (25 > 20) bans; without a rule the ban names the budget
  const s = await untilBan(suspicion, '198.51.100.2', 'scanner', 50);
  assert.equal(s.events, 5);
  assert.equal(s.ban?.reason, 'suspicion_scanner');
  assert.equal(s.ban?.rule, 'limits:suspicion');
  // other sources were not touched
  assert.equal(bans.length, 2);
});

test('weights are configurable; weight 0 never counts', async () => {
  const { suspicion } = setup('weights: { malformed: 0, enumeration: 10 }\n');
  assert.equal((await untilBan(suspicion, '198.51.100.3', 'malformed', 200)).ban, null);
  assert.equal((await untilBan(suspicion, '198.51.100.3', 'enumeration', 10)).events, 3);
});

test('concurrent over-budget events make one ban, not several escalations', async () => {
  const { suspicion, bans } = setup('source: { suspicion: { limit: 2 } }\n');
  const results = await Promise.all(Array.from({ length: 20 }, () => suspicion.record('198.51.100.4', 'malformed')));
  assert.equal(results.filter((b) => b !== null).length, 1);
  assert.equal(bans.length, 1);
  assert.equal(bans[0]?.count, 1);
});

test('escalation: 600 -> 1200 -> 2400 s, capped at maxSeconds; forgotten after memorySeconds', async () => {
  const { suspicion, clock: c } = setup('bans: { seconds: 600, escalation: 2, maxSeconds: 2000, memorySeconds: 86400 }\n');
  const lengths: number[] = [];
  for (let round = 0; round < 4; round++) {
    const r = await untilBan(suspicion, '2001:db8:aa:1::5', 'unknown_user', 50);
    assert.ok(r.ban, `ban ${round + 1}`);
    // the budget restarts after a ban: each round needs the full 21 events again
    assert.equal(r.events, 21);
    assert.equal(r.ban.key, '2001:db8:aa:1::/64');
    lengths.push((r.ban.until - r.ban.since) / 1000);
    c.advance(r.ban.until - r.ban.since + 1000); // the ban runs out, the source comes back
  }
  assert.deepEqual(lengths, [600, 1200, 2000, 2000]);

  const u = setup('bans: { seconds: 600, escalation: 2, maxSeconds: 86400, memorySeconds: 3600 }\n');
  const first = await untilBan(u.suspicion, '198.51.100.5', 'malformed', 50);
  assert.equal(first.ban?.count, 1);
  u.clock.advance(2 * 3600 * 1000); // past the escalation memory
  const again = await untilBan(u.suspicion, '198.51.100.5', 'malformed', 50);
  assert.equal(again.ban?.count, 1);
  assert.equal(((again.ban?.until ?? 0) - (again.ban?.since ?? 0)) / 1000, 600);
});

test('promotion resets the suspicion budget, expires after promotion.seconds, covers the IPv6 /64, and a ban withdraws it', async () => {
  const { suspicion, clock: c } = setup('promotion: { seconds: 60 }\n');
  const addr = '203.0.113.9';
  for (let i = 0; i < 19; i++) assert.equal(await suspicion.record(addr, 'missing_auth'), null);
  suspicion.promote(addr);
  await tick();
  // a full budget again: 20 more events without a ban, the 21st bans
  const r = await untilBan(suspicion, addr, 'missing_auth', 50);
  assert.equal(r.events, 21);
  assert.equal(suspicion.isPromoted(addr), false, 'a banned source is no longer promoted');

  suspicion.promote('2001:db8:77:1::10');
  assert.equal(suspicion.isPromoted('2001:db8:77:1:abcd::1'), true);
  assert.equal(suspicion.isPromoted('2001:db8:77:2::10'), false);
  c.advance(59_000);
  assert.equal(suspicion.isPromoted('2001:db8:77:1::10'), true);
  c.advance(2_000);
  assert.equal(suspicion.isPromoted('2001:db8:77:1::10'), false);
  assert.equal(suspicion.promotedCount, 0, 'an expired entry is removed when seen');
  assert.equal(suspicion.isPromoted('not an address'), false);
});

test('record() never rejects when the store fails', async () => {
  const c = clock();
  const real = createMemoryStore({ now: c.now, sweepIntervalMs: 0 });
  const failing: SharedStore = Object.assign(Object.create(real) as SharedStore, {
    limiter: real.limiter.bind(real),
    ban: () => Promise.reject(new Error('redis down')),
  });
  const snap = snapshotOf(limitsOf('source: { suspicion: { limit: 1 } }\n'));
  const s = new Suspicion({ store: failing, rules: () => snap, now: c.now });
  for (let i = 0; i < 5; i++) assert.equal(await s.record('198.51.100.6', 'malformed'), null);
  const throwing: SharedStore = Object.assign(Object.create(real) as SharedStore, {
    limiter: () => ({ spec: snap.limits.suspicion, consume: () => Promise.reject(new Error('x')), reset: () => Promise.reject(new Error('y')) }),
  });
  const t = new Suspicion({ store: throwing, rules: () => snap, now: c.now });
  assert.equal(await t.record('198.51.100.6', 'malformed'), null);
  t.promote('198.51.100.6'); // a failing reset is not an unhandled rejection
  await tick();
  assert.equal(t.isPromoted('198.51.100.6'), true);
});

// ---- the NAT office in miniature: 500 phones behind one address re-register after an outage

let seq = 0;
function register(ext: number, withAuth: boolean): SipMessage {
  const n = ++seq;
  const lines = [
    'REGISTER sip:pbx.example.com SIP/2.0',
    `Via: SIP/2.0/UDP 192.168.1.${(ext % 250) + 2}:5060;branch=z9hG4bK-nat-${n};rport`,
    'Max-Forwards: 70',
    `To: <sip:${ext}@pbx.example.com>`,
    `From: <sip:${ext}@pbx.example.com>;tag=nat${n}`,
    `Call-ID: nat-${ext}@192.168.1.2`,
    `CSeq: ${withAuth ? 2 : 1} REGISTER`,
    `Contact: <sip:${ext}@192.168.1.${(ext % 250) + 2}:5060>`,
    ...(withAuth ? [`Authorization: Digest username="${ext}", realm="pbx.example.com", nonce="abc", uri="sip:pbx.example.com", response="0123456789abcdef0123456789abcdef"`] : []),
    'Expires: 3600',
    'Content-Length: 0',
  ];
  const r = parseMessage(Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), { framing: 'datagram' });
  assert.ok(r.ok);
  return r.msg;
}

test('NAT office: 500 phones from one address, 1000 REGISTERs within a minute: an authenticated (promoted) source is neither limited nor banned; an unknown one is', async () => {
  // shipped defaults: 200 requests / 10 s per source, x10 once promoted; 20 suspicion points
  const office = setup();
  const stage = createRateLimitStage({ rules: () => office.snap, store: office.store, suspicion: office.suspicion });
  const NAT = '203.0.113.80';
  let refused = 0;
  let banned = 0;
  for (let ext = 1000; ext < 1500; ext++) {
    // REGISTER without credentials -> the PBX/auth stage challenges (401): a missing_auth event
    if ((await stage.check({ msg: register(ext, false), source: { transport: 'udp', address: NAT, port: 5060 }, side: 'outside', trust: 'untrusted', receivedAt: 0 })).action !== 'continue') refused++;
    if ((await office.suspicion.record(NAT, 'missing_auth')) !== null) banned++;
    // the phone answers the challenge and authenticates: promotion
    if ((await stage.check({ msg: register(ext, true), source: { transport: 'udp', address: NAT, port: 5060 }, side: 'outside', trust: 'untrusted', receivedAt: 0 })).action !== 'continue') refused++;
    office.suspicion.promote(NAT);
  }
  assert.equal(refused, 0, 'no REGISTER of the office was limited');
  assert.equal(banned, 0, 'the office was not banned');
  assert.deepEqual(office.bans, []);
  assert.equal(office.suspicion.isPromoted(NAT), true);

  // the same traffic from a source that never authenticates
  const other = setup();
  const stage2 = createRateLimitStage({ rules: () => other.snap, store: other.store, suspicion: other.suspicion });
  const SCAN = '198.51.100.99';
  const verdicts: Verdict[] = [];
  let ban: Ban | null = null;
  for (let ext = 1000; ext < 1500; ext++) {
    verdicts.push(await stage2.check({ msg: register(ext, false), source: { transport: 'udp', address: SCAN, port: 5060 }, side: 'outside', trust: 'untrusted', receivedAt: 0 }));
    verdicts.push(await stage2.check({ msg: register(ext, true), source: { transport: 'udp', address: SCAN, port: 5060 }, side: 'outside', trust: 'untrusted', receivedAt: 0 }));
    ban ??= await other.suspicion.record(SCAN, 'auth_failure');
  }
  const passed = verdicts.filter((v) => v.action === 'continue').length;
  // 200 first requests and 200 answers (requests with credentials have a budget of their own)
  assert.equal(passed, 400, 'the unknown source gets its 200 requests and 200 answers per window');
  const drops = verdicts.filter((v) => v.action === 'drop');
  assert.equal(drops.length, 600);
  for (const v of drops) assert.deepEqual(v, { action: 'drop', reason: 'source_rate', rule: 'limits:source_all' });
  assert.ok(ban, 'and its failures ban it');
  assert.equal(ban.reason, 'suspicion_auth_failure');
  assert.equal(ban.key, SCAN);
});

// ---- bounded memory

function gcFn(): (() => void) | null {
  v8.setFlagsFromString('--expose-gc');
  const g = vm.runInNewContext('gc') as unknown;
  return typeof g === 'function' ? (g as () => void) : null;
}

test('the promotion table stays within its cap under 1,000,000 distinct sources (oldest evicted); heap per entry measured', async () => {
  const CAP = 100_000;
  // a store whose limiters do nothing: this test measures the promotion table alone
  const base = createMemoryStore({ sweepIntervalMs: 0 });
  const store: SharedStore = Object.assign(Object.create(base) as SharedStore, {
    limiter: (spec: CompiledLimits['suspicion']) => ({ spec, consume: async () => ({ allowed: true, remaining: 1, msBeforeNext: 0, degraded: false }), reset: async () => {} }),
  });
  const snap = snapshotOf(limitsOf(`promotion: { maxEntries: ${CAP} }\n`));
  const s = new Suspicion({ store, rules: () => snap });
  const gc = gcFn();
  const addr = (i: number): string => `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`;
  const v6 = (i: number): string => `2001:db8:${(i >>> 16).toString(16)}:${(i & 0xffff).toString(16)}::1`;

  gc?.();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < CAP; i++) {
    s.promote(addr(i));
    if (i % 10_000 === 0) await tick();
  }
  await tick();
  gc?.();
  const perV4 = (process.memoryUsage().heapUsed - before) / CAP;
  assert.equal(s.promotedCount, CAP);

  for (let i = CAP; i < 1_000_000; i++) {
    s.promote(i % 2 === 0 ? addr(i) : v6(i));
    if (i % 10_000 === 0) {
      assert.ok(s.promotedCount <= CAP);
      await tick(); // let the fire-and-forget limiter resets settle, as they do between packets
    }
  }
  await tick();
  assert.equal(s.promotedCount, CAP, 'the cap holds');
  assert.equal(s.isPromoted(addr(0)), false, 'the oldest were evicted');
  assert.equal(s.isPromoted(v6(999_999)), true, 'the newest are kept');
  assert.equal(s.isPromoted(addr(999_998)), true);
  gc?.();
  const perMixed = (process.memoryUsage().heapUsed - before) / CAP;
  // report figure (bytes per entry, Node 20, x64): printed for the record, bounded loosely
  console.log(`promotion table: ${CAP} entries, ~${Math.round(perV4)} B/entry (IPv4 keys), ~${Math.round(perMixed)} B/entry (half IPv6 /64 keys)${gc ? '' : ' (no gc: rough)'}`);
  if (gc) assert.ok(perMixed < 400, `bytes per entry ${perMixed}`);
  // a renewal moves an entry to the young end: it survives CAP-1 newer promotions
  s.promote(addr(999_998));
  for (let i = 0; i < CAP - 1; i++) s.promote(addr(2_000_000 + i));
  assert.equal(s.isPromoted(addr(999_998)), true);
  assert.equal(s.isPromoted(v6(999_999)), false);
});

// ---- soft events: a crowd that has not authenticated yet gets a grace period

test('a soft event (missing_auth, enumeration, flood) that exhausts the budget bans only after the grace, and not if the source authenticates meanwhile', async (t) => {
  // the grace timer is unref'd (it must not hold a stopping edge up): keep this test's loop alive
  const alive = setInterval(() => undefined, 1000);
  t.after(() => clearInterval(alive));
  for (const event of ['missing_auth', 'enumeration', 'flood'] as const) {
    const s = setup('', {});
    const graced = new Suspicion({ store: s.store, rules: () => s.snap, now: s.clock.now, softGraceMs: 80 });
    // 20 points of budget: the 21st event exhausts it; the ban waits for the grace
    for (let i = 0; i < 20; i++) assert.equal(await graced.record('198.51.100.70', event), null);
    const t0 = Date.now();
    const pending = graced.record('198.51.100.70', event);
    // a phone of that address answers its challenge within the grace: promoted
    setTimeout(() => graced.promote('198.51.100.70'), 20);
    assert.equal(await pending, null, `${event}: promoted during the grace, no ban`);
    assert.ok(Date.now() - t0 >= 70, 'the decision waited for the grace');
    // a source that never authenticates is banned once the grace is over
    for (let i = 0; i < 20; i++) await graced.record('198.51.100.71', event);
    const ban = await graced.record('198.51.100.71', event);
    assert.equal(ban?.reason, `suspicion_${event}`, `${event}: banned after the grace`);
  }
  // hard events are not graced: a scanner signature bans at once
  const s = setup();
  const graced = new Suspicion({ store: s.store, rules: () => s.snap, now: s.clock.now, softGraceMs: 10_000 });
  const t0 = Date.now();
  const r = await untilBan(graced, '198.51.100.72', 'scanner', 10);
  assert.equal(r.ban?.reason, 'suspicion_scanner');
  assert.ok(Date.now() - t0 < 5_000);
});

test('the soft-event grace runs on the injected clock: the ban waits for the clock, not for real time', async () => {
  const s = setup();
  const clock = new ManualClock();
  const graced = new Suspicion({ store: s.store, rules: () => s.snap, now: s.clock.now, softGraceMs: 60_000, clock });
  for (let i = 0; i < 20; i++) assert.equal(await graced.record('198.51.100.75', 'missing_auth'), null);
  let settled = false;
  const pending = graced.record('198.51.100.75', 'missing_auth').finally(() => { settled = true; });
  // let the store round trip finish: the waiter is now on the clock
  for (let i = 0; i < 10 && clock.pending === 0; i++) await new Promise((r) => setImmediate(r));
  assert.equal(clock.pending, 1, 'the grace is a timer of the injected clock');
  clock.advance(59_999);
  await new Promise((r) => setImmediate(r));
  assert.equal(settled, false, 'still within the grace');
  clock.advance(1);
  const ban = await Promise.race([pending, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 2_000))]);
  assert.notEqual(ban, 'timeout', 'the ban came when the clock said so');
  assert.equal((ban as Ban | null)?.reason, 'suspicion_missing_auth');
});

// ---- an unban sticks; one offence, one ban (issue 11, defect 4)

test('lifting a ban forgives the source: its pending grace ban is cancelled and its budget starts from full; a CIDR unban covers the sources inside', async (t) => {
  const alive = setInterval(() => undefined, 1000);
  t.after(() => clearInterval(alive));
  const s = setup();
  const graced = new Suspicion({ store: s.store, rules: () => s.snap, now: s.clock.now, softGraceMs: 80 });
  // a soft ban waiting its grace, and a hard ban of the same source meanwhile (another stage)
  for (let i = 0; i < 20; i++) await graced.record('198.51.100.80', 'missing_auth');
  const pending = graced.record('198.51.100.80', 'missing_auth');
  await s.store.ban({ key: '198.51.100.80', reason: 'manual', rule: 'manual', seconds: 600 });
  assert.equal(await s.store.unban('198.51.100.80'), true);
  assert.equal(await pending, null, 'the waiting ban of the old offence does not come back after the unban');
  assert.deepEqual((await s.store.listBans()).map((b) => b.key), []);
  // a spent budget: 19 of 20 points, a ban by hand, lifted: the source starts from 20 again
  for (let i = 0; i < 19; i++) assert.equal(await graced.record('198.51.100.81', 'auth_failure'), null);
  await s.store.ban({ key: '198.51.100.81', reason: 'manual', rule: 'manual', seconds: 600 });
  await s.store.unban('198.51.100.81');
  await tick();
  assert.equal((await untilBan(graced, '198.51.100.81', 'auth_failure', 30)).events, 21, 'a full budget after the unban');
  // a CIDR unban: the waiting soft bans of the sources inside it stand down
  for (let i = 0; i < 20; i++) await graced.record('198.51.100.90', 'flood');
  const inside = graced.record('198.51.100.90', 'flood');
  for (let i = 0; i < 20; i++) await graced.record('203.0.113.90', 'flood');
  const outside = graced.record('203.0.113.90', 'flood');
  await s.store.ban({ key: '198.51.100.0/24', reason: 'manual', rule: 'manual', seconds: 600 });
  await s.store.unban('198.51.100.0/24');
  assert.equal(await inside, null);
  assert.equal((await outside)?.reason, 'suspicion_flood', 'a source outside the CIDR is still banned after its grace');
  // an IPv6 source is forgiven by the ban of its /64, as the edge bans it
  for (let i = 0; i < 20; i++) await graced.record('2001:db8:5:6::1', 'missing_auth');
  const v6 = graced.record('2001:db8:5:6::2', 'missing_auth');
  await s.store.ban({ key: '2001:db8:5:6::/64', reason: 'manual', rule: 'manual', seconds: 600 });
  await s.store.unban('2001:db8:5:6::/64');
  assert.equal(await v6, null);
});

test('two instances sharing a store: a ban made by one stands down the other\'s waiting soft ban (one offence, one ban, no escalation)', async (t) => {
  const alive = setInterval(() => undefined, 1000);
  t.after(() => clearInterval(alive));
  const s = setup();
  const bans: Ban[] = [];
  // one budget for both, as Redis gives a cluster (a memory store hands each caller its own)
  const limiters = new LimiterCache(s.store);
  const a = new Suspicion({ store: s.store, rules: () => s.snap, now: s.clock.now, softGraceMs: 50, limiters, onBan: (b) => bans.push(b) });
  const b = new Suspicion({ store: s.store, rules: () => s.snap, now: s.clock.now, softGraceMs: 150, limiters, onBan: (x) => bans.push(x) });
  for (let i = 0; i < 20; i++) await (i % 2 === 0 ? a : b).record('198.51.100.82', 'missing_auth');
  // both instances see the shared budget run out; each starts its grace
  const [ra, rb] = await Promise.all([a.record('198.51.100.82', 'missing_auth'), b.record('198.51.100.82', 'missing_auth')]);
  assert.equal(ra?.reason, 'suspicion_missing_auth');
  assert.equal(rb, null, 'the second instance does not ban the same offence again');
  assert.deepEqual(bans.map((x) => x.count), [1]);
});

// ---- promotion shared by every instance (real Redis)

test('a source promoted on one instance is promoted on every instance sharing the Redis (pub/sub), IPv4 and IPv6 prefix', async (t) => {
  const { twoStoresOnSharedRedis } = await import('./helpers/redis-server');
  const stores = await twoStoresOnSharedRedis(t);
  if (stores === null) return;
  const [a, b] = stores;
  try {
    const snap = snapshotOf(limitsOf(''));
    const sa = new Suspicion({ store: a, rules: () => snap, softGraceMs: 0 });
    const sb = new Suspicion({ store: b, rules: () => snap, softGraceMs: 0 });
    sa.promote('203.0.113.77');
    sa.promote('2001:db8:77:1::9');
    const t0 = Date.now();
    while (Date.now() - t0 < 2000 && !(sb.isPromoted('203.0.113.77') && sb.isPromoted('2001:db8:77:1::ffff'))) await new Promise((r) => setTimeout(r, 10));
    assert.equal(sb.isPromoted('203.0.113.77'), true, 'IPv4 promotion reached the other instance');
    assert.equal(sb.isPromoted('2001:db8:77:1::ffff'), true, 'the IPv6 /64 promotion reached the other instance');
    t.diagnostic(`promotion visible on the second instance after ${Date.now() - t0} ms`);
    assert.ok(Date.now() - t0 < 1000);
    assert.equal(sb.isPromoted('203.0.113.78'), false);
  } finally {
    await a.close();
    await b.close();
  }
});
