// Memory store (single node) and the local ban cache.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { createMemoryStore, LocalBanCache, StoreInputError, banSeconds, MAX_BAN_SECONDS, openStoreWithCache } from '../edge/store';
import type { Ban, BanEvent } from '../edge/store/types';

const spec = (points: number, onStoreDown: 'open' | 'closed' = 'open') => ({ name: 'source_all', points, durationSec: 60, onStoreDown });

function ban(key: string, until: number, extra: Partial<Ban> = {}): Ban {
  return { key, reason: 'test', rule: 'manual', since: 0, until, count: 1, ...extra };
}

test('memory limiter: 10 points allow 10 consumes, the 11th is refused; keys are independent; reset forgets', async () => {
  const store = createMemoryStore();
  const l = store.limiter(spec(10));
  for (let i = 0; i < 10; i++) {
    const r = await l.consume('198.51.100.7');
    assert.equal(r.allowed, true, `consume ${i + 1}`);
    assert.equal(r.remaining, 9 - i);
    assert.equal(r.degraded, false);
  }
  const over = await l.consume('198.51.100.7');
  assert.equal(over.allowed, false);
  assert.equal(over.remaining, 0);
  assert.ok(over.msBeforeNext > 0 && over.msBeforeNext <= 60_000);
  assert.equal((await l.consume('198.51.100.8')).allowed, true, 'another key has its own budget');
  await l.reset('198.51.100.7');
  assert.equal((await l.consume('198.51.100.7')).allowed, true, 'reset gives the budget back');
  // onStoreDown never matters for a store that cannot be down
  const closed = store.limiter({ ...spec(1, 'closed'), name: 'x' });
  assert.equal((await closed.consume('k')).allowed, true);
  assert.equal((await closed.consume('k')).allowed, false);
  assert.equal(store.healthy(), true);
  assert.equal(store.errors, 0);
  await store.close();
});

test('memory limiter: points > 1 and hostile points values never throw', async () => {
  const store = createMemoryStore();
  const l = store.limiter(spec(5));
  assert.equal((await l.consume('k', 4)).remaining, 1);
  assert.equal((await l.consume('k', 2)).allowed, false);
  for (const p of [NaN, -3, 0.5, Infinity]) {
    const r = await l.consume(`k${p}`, p);
    assert.equal(typeof r.allowed, 'boolean');
  }
  await store.close();
});

test('memory bans: events are synchronous, listBans lists, unban removes and announces', async () => {
  let now = 1_000_000;
  const store = createMemoryStore({ now: () => now, sweepIntervalMs: 0 });
  const events: BanEvent[] = [];
  store.onBanEvent((e) => events.push(e));
  store.onBanEvent(() => {
    throw new Error('a broken listener must not break the store');
  });
  const p = store.ban({ key: '203.0.113.9', reason: 'scanner', rule: 'sipvicious', seconds: 60 });
  // delivered before the promise settles
  assert.equal(events.length, 1);
  const b = await p;
  assert.deepEqual(b, { key: '203.0.113.9', reason: 'scanner', rule: 'sipvicious', since: now, until: now + 60_000, count: 1 });
  assert.deepEqual(events[0], { kind: 'added', ban: b });
  assert.deepEqual(await store.listBans(), [b]);
  assert.equal(await store.unban('203.0.113.9'), true);
  assert.deepEqual(events[1], { kind: 'removed', key: '203.0.113.9' });
  assert.deepEqual(await store.listBans(), []);
  assert.equal(await store.unban('203.0.113.9'), false);
  await assert.rejects(store.ban({ key: 'not a key\r\n', reason: 'x', rule: 'y', seconds: 1 }), StoreInputError);
  now += 1;
  await store.close();
});

test('memory bans: escalation doubles and caps, memory expires, a shorter ban never cuts an active one', async () => {
  let now = 5_000_000;
  const store = createMemoryStore({ now: () => now, sweepIntervalMs: 0 });
  const escalate = { factor: 2, maxSeconds: 35, memorySeconds: 3600 };
  const lens: number[] = [];
  const counts: number[] = [];
  for (let i = 0; i < 4; i++) {
    const b = await store.ban({ key: '2001:db8:1:2::/64', reason: 'flood', rule: 'r', seconds: 10, escalate });
    lens.push((b.until - now) / 1000);
    counts.push(b.count);
    now = b.until + 1; // let it expire before the next one
  }
  assert.deepEqual(lens, [10, 20, 35, 35]);
  assert.deepEqual(counts, [1, 2, 3, 4]);
  // escalation memory forgotten after memorySeconds
  now += 3600_000;
  const fresh = await store.ban({ key: '2001:db8:1:2::/64', reason: 'flood', rule: 'r', seconds: 10, escalate });
  assert.equal(fresh.count, 1);
  assert.equal(fresh.until - now, 10_000);
  // extend: a 1 s ban on an active 10 s ban keeps the 10 s and its start
  const ext = await store.ban({ key: '2001:db8:1:2::/64', reason: 'again', rule: 'r', seconds: 1 });
  assert.equal(ext.until, fresh.until);
  assert.equal(ext.since, fresh.since);
  await store.close();
});

test('memory bans: expired bans leave listBans and the map', async () => {
  let now = 1_000;
  const store = createMemoryStore({ now: () => now, sweepIntervalMs: 0 });
  await store.ban({ key: '192.0.2.1', reason: 'x', rule: 'y', seconds: 5 });
  await store.ban({ key: '192.0.2.2', reason: 'x', rule: 'y', seconds: 50 });
  now += 5_000;
  const list = await store.listBans();
  assert.deepEqual(list.map((b) => b.key), ['192.0.2.2']);
  assert.deepEqual((store as unknown as { heldEntries: { bans: number } }).heldEntries.bans, 1);
  await store.close();
});

test('banSeconds: the formula, clamps, and never a non-finite duration', () => {
  assert.equal(banSeconds(60, 1), 60);
  assert.equal(banSeconds(60, 3, { factor: 2, maxSeconds: 1000, memorySeconds: 1 }), 240);
  assert.equal(banSeconds(60, 10_000, { factor: 2, maxSeconds: 1000, memorySeconds: 1 }), 1000);
  assert.equal(banSeconds(NaN, 1), 1);
  assert.equal(banSeconds(1e12, 1), MAX_BAN_SECONDS);
  assert.equal(banSeconds(10, 2, { factor: NaN, maxSeconds: Infinity, memorySeconds: 1 }), 10);
});

test('ban cache: exact addresses, any spelling of the key; expired entries ignored and purged', () => {
  const c = new LocalBanCache({ now: () => 0 });
  assert.equal(c.add(ban('198.51.100.7', 1000)), true);
  assert.equal(c.add(ban('2001:DB8::0001', 1000)), true, 'key spelled non-canonically');
  assert.equal(c.check('198.51.100.7', 10)?.key, '198.51.100.7');
  assert.equal(c.check('2001:db8::1', 10)?.key, '2001:DB8::0001');
  assert.equal(c.check('198.51.100.8', 10), null);
  assert.equal(c.size, 2);
  assert.equal(c.check('198.51.100.7', 1000), null, 'until is exclusive');
  assert.equal(c.size, 1, 'the expired entry was purged when met');
  assert.equal(c.add(ban('not-an-address', 1000)), false);
  assert.equal(c.invalid, 1);
});

test('ban cache: an IPv6 /64 ban covers the whole /64 and nothing else', () => {
  const c = new LocalBanCache({ now: () => 0 });
  c.add(ban('2001:db8:1:2::/64', 1000));
  assert.equal(c.check('2001:db8:1:2::1', 1)?.key, '2001:db8:1:2::/64');
  assert.equal(c.check('2001:db8:1:2:ffff:ffff:ffff:ffff', 1)?.key, '2001:db8:1:2::/64');
  assert.equal(c.check('2001:db8:1:3::1', 1), null);
  assert.equal(c.check('198.51.100.7', 1), null);
  // a /56 aggregate when configured
  const c56 = new LocalBanCache({ now: () => 0, ipv6PrefixBits: [64, 56] });
  c56.add(ban('2001:db8:1:200::/56', 1000));
  assert.equal(c56.check('2001:db8:1:2ff::9', 1)?.key, '2001:db8:1:200::/56');
  assert.equal(c56.check('2001:db8:1:300::9', 1), null);
});

test('ban cache: CIDR bans, longest prefix, removal, and an expired CIDR does not hide a live one', () => {
  const c = new LocalBanCache({ now: () => 0 });
  c.add(ban('10.0.0.0/8', 1000, { reason: 'wide' }));
  c.add(ban('10.1.0.0/16', 500, { reason: 'narrow' }));
  c.add(ban('2001:db8::/32', 1000));
  assert.equal(c.check('10.1.2.3', 1)?.reason, 'narrow');
  assert.equal(c.check('10.2.0.1', 1)?.reason, 'wide');
  assert.equal(c.check('2001:db8:ffff::1', 1)?.key, '2001:db8::/32');
  assert.equal(c.check('11.0.0.1', 1), null);
  assert.equal(c.check('10.1.2.3', 600)?.reason, 'wide', 'narrow expired: the wider live ban still applies');
  assert.equal(c.remove('10.0.0.0/8'), true);
  assert.equal(c.check('10.2.0.1', 601), null);
  assert.equal(c.check('2001:db8:ffff::1', 601)?.key, '2001:db8::/32');
});

test('ban cache: bounded; beyond the cap new keys are refused and counted, updates still apply', () => {
  let now = 0;
  const c = new LocalBanCache({ now: () => now, maxEntries: 100 });
  for (let i = 0; i < 100; i++) assert.equal(c.add(ban(`192.0.2.${i}`, 1000)), true);
  assert.equal(c.add(ban('198.51.100.1', 1000)), false);
  assert.equal(c.add(ban('2001:db8::/64', 1000)), false);
  assert.equal(c.refused, 2);
  assert.equal(c.size, 100);
  assert.equal(c.add(ban('192.0.2.5', 5000)), true, 'an update of a held key is not a new entry');
  assert.equal(c.check('192.0.2.5', 2000)?.until, 5000);
  // once entries expire, a full cache sweeps them and takes new ones again
  now = 1000;
  assert.equal(c.add(ban('198.51.100.1', 9000)), true);
  assert.equal(c.size, 2);
});

test('ban cache fed by a store: initial list, then added/removed events', async () => {
  const store = createMemoryStore({ sweepIntervalMs: 0 });
  await store.ban({ key: '203.0.113.1', reason: 'x', rule: 'y', seconds: 60 });
  const cache = await LocalBanCache.create(store);
  const now = Date.now();
  assert.equal(cache.check('203.0.113.1', now)?.key, '203.0.113.1', 'loaded by listBans');
  await store.ban({ key: '2001:db8:5:6::/64', reason: 'x', rule: 'y', seconds: 60 });
  assert.equal(cache.check('2001:db8:5:6::42', now)?.key, '2001:db8:5:6::/64', 'added by event');
  await store.unban('203.0.113.1');
  assert.equal(cache.check('203.0.113.1', now), null, 'removed by event');
  await store.close();
  const both = await openStoreWithCache({ kind: 'memory' });
  assert.equal(both.store.kind, 'memory');
  assert.equal(both.cache.size, 0);
  await both.store.close();
});

test('ban cache: a ban removed while the initial list is in flight does not come back', async () => {
  const b = ban('192.0.2.77', Date.now() + 60_000);
  let emit: ((e: BanEvent) => void) | null = null;
  const fake = {
    kind: 'memory' as const,
    errors: 0,
    onBanEvent(fn: (e: BanEvent) => void) { emit = fn; },
    async listBans() {
      emit?.({ kind: 'removed', key: b.key }); // removal races the list
      return [b];
    },
  };
  const cache = await LocalBanCache.create(fake as unknown as Parameters<typeof LocalBanCache.create>[0]);
  assert.equal(cache.check(b.key, Date.now()), null);
  // a store that fails to list: the cache starts empty, never throws
  const down = { ...fake, async listBans(): Promise<Ban[]> { throw new Error('down'); } };
  const empty = await LocalBanCache.create(down as unknown as Parameters<typeof LocalBanCache.create>[0]);
  assert.equal(empty.size, 0);
});
