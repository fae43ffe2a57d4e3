// Per-source state under a spoofed-source flood (issue 12): every table an unknown source can
// make the edge fill is bounded by its cap, empties once its window is over and the store has
// swept, and is then rebuilt small (a V8 Map keeps the backing store of its largest size while it
// holds entries); the caps evict the oldest unknown entries, never a ban, a promotion or the
// counts of a promoted source. On an injected clock: no sleeping, no RSS, no timing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseMessage } from '../edge/sip/parser';
import type { SipMessage } from '../edge/sip/types';
import { createMemoryStore } from '../edge/store/memory';
import type { SharedStore } from '../edge/store/types';
import { DistinctTable, OnceTable } from '../edge/store/bounded';
import { CounterStorage, WindowCounters } from '../edge/store/window-counters';
import { createRateLimitStage } from '../edge/policy/limits/ratelimit';
import { Suspicion } from '../edge/suspicion';
import { defaultLimits } from '../edge/policy/limits/compile';
import { snapshotWith } from './helpers/snapshot';

interface Held { bans: number; escalation: number; once: number; distinctSets: number; distinctMembers: number; limiterKeys: number }
const held = (s: SharedStore): Held => (s as unknown as { heldEntries: Held }).heldEntries;
const sweep = (s: SharedStore): void => (s as unknown as { sweep(): void }).sweep();
const tables = (s: SharedStore): WindowCounters[] => (s as unknown as { counters: { tables(): WindowCounters[] } }).counters.tables();

let seq = 0;
function request(method: string, from: string, ext: number): SipMessage {
  const n = ++seq;
  const r = parseMessage(Buffer.from([
    `${method} sip:${ext}@pbx.example.com SIP/2.0`,
    `Via: SIP/2.0/UDP ${from}:5060;branch=z9hG4bK-ms-${n}`,
    'Max-Forwards: 70',
    `To: <sip:${ext}@pbx.example.com>`,
    `From: <sip:${ext}@pbx.example.com>;tag=f${n}`,
    `Call-ID: ms-${n}`,
    `CSeq: 1 ${method}`,
    'Content-Length: 0', '', '',
  ].join('\r\n'), 'latin1'), { framing: 'datagram' });
  assert.ok(r.ok);
  return r.msg;
}

/** the i-th spoofed source: 10.x.y.z, distinct for i < 2^24 */
const spoofed = (i: number): string => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;

function edgeOf(store: SharedStore) {
  const snap = snapshotWith({ stages: [{ name: 'ratelimit', mode: 'enforce' }], trustedSkip: new Set(['ratelimit']), limits: defaultLimits() });
  const suspicion = new Suspicion({ store, rules: () => snap, now: () => clock.t, softGraceMs: 0 });
  const stage = createRateLimitStage({ rules: () => snap, store, suspicion });
  /** one request from an unknown source, as the edge sees it: the budgets, a suspicion event
   *  (missing_auth, as edge auth would record), the enumeration set, a nonce */
  const hit = async (address: string, i: number): Promise<void> => {
    const method = ['REGISTER', 'INVITE', 'OPTIONS'][i % 3]!;
    await stage.check({ msg: request(method, address, 1000 + (i % 9000)), source: { transport: 'udp', address, port: 5060 }, side: 'outside', trust: 'untrusted', receivedAt: 0 });
    await suspicion.record(address, 'missing_auth');
    await store.distinct(`enum:${address}`, `pbx.example.com\0${1000 + (i % 9000)}`, 600, 20);
    await store.once(`nonce:${address}:${i}`, 300);
  };
  return { snap, suspicion, stage, hit };
}

const clock = { t: Date.UTC(2026, 11, 3) };

test('a flood of distinct unknown sources: every per-source table stays within its cap, empties after its window and a sweep, and is rebuilt small', async () => {
  // over 4096 at its peak: smaller tables are not worth rebuilding (window-counters.ts)
  const CAP = 5000;
  const N = 12_000;
  const store = createMemoryStore({ now: () => clock.t, sweepIntervalMs: 0, limiterMaxKeys: CAP, onceMaxEntries: CAP, distinctMaxSets: CAP, distinctMaxMembers: 4 * CAP });
  const { hit } = edgeOf(store);
  for (let i = 0; i < N; i++) {
    await hit(spoofed(i), i);
    if (i % 100 === 99) clock.t += 25; // 4,000 sources/s
  }
  const h = held(store);
  assert.equal(typeof h.limiterKeys, 'number', 'the store reports the keys its limiters hold');
  const ts = tables(store);
  // source_all, aor_register_source, user_invite_source, suspicion
  assert.equal(ts.length, 4);
  for (const c of ts) assert.ok(c.size <= CAP, `a limiter holds ${c.size} keys, over its cap ${CAP}`);
  assert.ok(ts.some((c) => c.evicted > 0), 'the flood was larger than the caps: something was evicted');
  assert.ok(h.once <= CAP && h.distinctSets <= CAP, JSON.stringify(h));
  assert.equal(h.bans, 0, 'one missing_auth per source bans nobody');

  // the longest window here is the suspicion budget's 600 s (limits.yaml source.suspicion)
  const grown = ts.filter((c) => c.capacity > 4096);
  assert.ok(grown.length >= 2, 'source_all and suspicion held a key per source');
  clock.t += 601_000;
  sweep(store);
  assert.deepEqual(held(store), { bans: 0, escalation: 0, once: 0, distinctSets: 0, distinctMembers: 0, limiterKeys: 0 });
  for (const c of grown) {
    assert.equal(c.shrinks, 1, 'the emptied table was replaced');
    assert.ok(c.capacity <= 16, `capacity back to the minimum, not ${c.capacity}`);
  }
  await store.close();
});

test('eviction pressure from unknown sources never takes a ban, a promotion or a promoted source\'s budget', async () => {
  const CAP = 500;
  const store = createMemoryStore({ now: () => clock.t, sweepIntervalMs: 0, limiterMaxKeys: CAP, onceMaxEntries: CAP, distinctMaxSets: CAP, distinctMaxMembers: CAP });
  const { hit, suspicion, snap, stage } = edgeOf(store);
  const banned = Array.from({ length: 20 }, (_, i) => `192.0.2.${i + 1}`);
  for (const k of banned) await store.ban({ key: k, reason: 'suspicion_scanner', rule: 'test', seconds: 3600 });
  const phones = Array.from({ length: 20 }, (_, i) => `198.51.100.${i + 1}`);
  for (const p of phones) {
    suspicion.promote(p);
    for (let j = 0; j < 5; j++) {
      const v = await stage.check({ msg: request('OPTIONS', p, 1000), source: { transport: 'udp', address: p, port: 5060 }, side: 'outside', trust: 'untrusted', receivedAt: 0 });
      assert.equal(v.action, 'continue');
    }
  }
  for (let i = 0; i < 10 * CAP; i++) await hit(spoofed(i), i);

  assert.deepEqual((await store.listBans()).map((b) => b.key).sort(), [...banned].sort());
  const promotedBudget = suspicion.limiters.get(snap.limits.sourceAllPromoted);
  for (const p of phones) {
    assert.ok(suspicion.isPromoted(p), `${p} still promoted`);
    const r = await promotedBudget.peek(p);
    assert.equal(r.remaining, snap.limits.sourceAllPromoted.points - 5, `${p}'s promoted budget kept its count`);
  }
  const unknown = suspicion.limiters.get(snap.limits.sourceAll);
  assert.equal((await unknown.peek(spoofed(0))).remaining, snap.limits.sourceAll.points, 'the oldest unknown source was evicted');
  assert.equal((await unknown.peek(spoofed(10 * CAP - 1))).remaining, snap.limits.sourceAll.points - 1, 'the newest is still counted');
  await store.close();
});

test('memory store limiters count on the injected clock: a window ends when the clock says so', async () => {
  let t = 1_000_000;
  const store = createMemoryStore({ now: () => t, sweepIntervalMs: 0 });
  const l = store.limiter({ name: 'w', points: 3, durationSec: 10, onStoreDown: 'open' });
  const got: Array<[boolean, number, number]> = [];
  for (let i = 0; i < 4; i++) {
    const r = await l.consume('k');
    got.push([r.allowed, r.remaining, r.msBeforeNext]);
    t += 1000;
  }
  assert.deepEqual(got, [[true, 2, 10_000], [true, 1, 9000], [true, 0, 8000], [false, 0, 7000]]);
  t += 6000; // 10 s after the first point
  assert.deepEqual(await l.peek('k'), { allowed: true, remaining: 3, msBeforeNext: 0, degraded: false });
  const r = await l.consume('k', 2);
  assert.deepEqual([r.allowed, r.remaining, r.msBeforeNext], [true, 1, 10_000]);
  await l.reset('k');
  assert.equal(held(store).limiterKeys, 0);
  await store.close();
});

test('WindowCounters: MemoryStorage semantics, oldest evicted first, the rebuilt table keeps order and counts', () => {
  const c = new WindowCounters(3);
  let now = 0;
  const s = new CounterStorage(c, () => now);
  const a = s.incrby('a', 1, 10);
  assert.deepEqual([a.consumedPoints, a.msBeforeNext, a.isFirstInDuration], [1, 10_000, true]);
  now = 4000;
  const a2 = s.incrby('a', 2, 10);
  assert.deepEqual([a2.consumedPoints, a2.msBeforeNext, a2.isFirstInDuration], [3, 6000, false]);
  s.incrby('b', 1, 10);
  s.incrby('c', 1, 10);
  s.incrby('d', 1, 10); // full: 'a' (oldest window) goes
  assert.equal(s.get('a'), null);
  assert.equal(c.evicted, 1);
  now = 10_000; // 'a' would have ended anyway; 'b' restarts its window: it becomes the youngest
  now = 14_001;
  assert.equal(s.incrby('b', 5, 10).isFirstInDuration, true);
  s.incrby('e', 1, 10); // evicts 'c', the oldest now, not 'b'
  assert.equal(s.get('c'), null);
  assert.equal(s.get('b')?.consumedPoints, 5);
  // blocked key: set() with no duration has no end (MemoryStorage answers -1)
  assert.equal(s.set('z', 9, 0).msBeforeNext, -1);
  assert.equal(s.delete('z'), true);
  assert.equal(s.delete('z'), false);

  const big = new WindowCounters(100_000);
  for (let i = 0; i < 10_000; i++) big.add(`k${i}`, 1, i < 9990 ? 1000 : 60_000, 0);
  for (let i = 9990; i < 10_000; i++) big.add(`k${i}`, i, 60_000, 500);
  assert.ok(big.capacity >= 10_000);
  assert.equal(big.sweep(1000), 9990);
  assert.equal(big.size, 10);
  assert.equal(big.shrinks, 1);
  assert.ok(big.capacity <= 16, `rebuilt at ${big.capacity}`);
  for (let i = 9990; i < 10_000; i++) {
    const slot = big.find(`k${i}`, 1000);
    assert.ok(slot !== undefined);
    assert.equal(big.usedAt(slot), 1 + i);
    assert.equal(big.endAt(slot), 60_000);
  }
});

test('once() and distinct() tables: expired entries swept, the table rebuilt after a flood, one-member sets held without a Set', () => {
  const once = new OnceTable(100_000);
  for (let i = 0; i < 20_000; i++) assert.equal(once.firstUse(`n${i}`, 30_000, 0), true);
  assert.equal(once.firstUse('n5', 30_000, 1), false, 'a replay within the TTL');
  assert.equal(once.sweep(30_000), 20_000);
  assert.equal(once.size, 0);
  assert.equal(once.shrinks, 1);

  const d = new DistinctTable(100_000, 100_000);
  for (let i = 0; i < 20_000; i++) assert.equal(d.add(`enum:${i}`, 'u1', 60_000, 3, 0), 1);
  assert.equal(d.add('enum:7', 'u1', 60_000, 3, 1), 1, 'the same member again');
  assert.equal(d.add('enum:7', 'u2', 60_000, 3, 1), 2, 'a second member');
  assert.equal(d.add('enum:7', 'u2', 60_000, 3, 1), 2);
  assert.equal(d.add('enum:7', 'u3', 60_000, 3, 1), 3);
  assert.equal(d.add('enum:7', 'u4', 60_000, 3, 1), 4, 'over the cap: cap + 1, not stored');
  assert.equal(d.memberCount, 20_002);
  assert.equal(d.sweep(60_000), 20_000);
  assert.deepEqual([d.sets, d.memberCount, d.shrinks], [0, 0, 1]);

  // the member cap evicts the oldest sets, the one-member ones and the upgraded one alike
  const small = new DistinctTable(100, 4);
  small.add('a', 'x', 60_000, 10, 0);
  small.add('a', 'y', 60_000, 10, 0);
  small.add('b', 'x', 60_000, 10, 0);
  small.add('c', 'x', 60_000, 10, 0);
  assert.equal(small.add('d', 'x', 60_000, 10, 0), 1);
  assert.deepEqual([small.sets, small.memberCount], [3, 3], "'a' (two members) went first");
  assert.equal(small.add('b', 'y', 60_000, 10, 0), 2);
  assert.equal(small.memberCount, 4);
});
