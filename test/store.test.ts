// Memory store (single node), the local ban cache, the bounded once/distinct tables and the Redis
// URL parser (pure: no Redis needed).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import {
  createMemoryStore,
  createRedisStore,
  LocalBanCache,
  StoreInputError,
  banSeconds,
  MAX_BAN_SECONDS,
  openStoreWithCache,
  parseRedisUrl,
  redactRedisUrl,
} from '../edge/store';
import { DistinctTable, ExpiringMap, OnceTable, boundedKey } from '../edge/store/bounded';
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

test('ban cache: each ban whose time ran out is reported once to onExpire (met by a packet or swept); removals are not', () => {
  let now = 0;
  const c = new LocalBanCache({ now: () => now });
  const expired: string[] = [];
  c.onExpire = (b) => expired.push(b.key);
  c.add(ban('198.51.100.7', 1000));
  c.add(ban('2001:db8:1:2::/64', 1000));
  c.add(ban('10.0.0.0/8', 1000));
  c.add(ban('192.0.2.1', 1000));
  c.add(ban('192.0.2.2', 5000));
  c.remove('192.0.2.1');
  assert.equal(c.check('198.51.100.7', 999)?.key, '198.51.100.7');
  assert.deepEqual(expired, []);
  // met by packets after the end
  assert.equal(c.check('198.51.100.7', 1000), null);
  assert.equal(c.check('2001:db8:1:2::9', 1000), null);
  assert.equal(c.check('198.51.100.7', 1001), null, 'gone: not reported twice');
  // the rest by a sweep (what a scrape of sipedge_bans_active does)
  now = 1000;
  c.sweep();
  assert.deepEqual(expired.sort(), ['10.0.0.0/8', '198.51.100.7', '2001:db8:1:2::/64']);
  assert.equal(c.size, 1, 'only the live ban is left');
  c.sweep();
  assert.equal(expired.length, 3);
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

// ---- once() / distinct() / promotions on the memory store ----

test('memory once(): first use true, a replay false, until the TTL passes; keys are independent', async () => {
  let now = 1_000_000;
  const store = createMemoryStore({ now: () => now, sweepIntervalMs: 0 });
  assert.equal(await store.once('nonce-a', 30), true);
  assert.equal(await store.once('nonce-a', 30), false, 'a replay within the TTL');
  assert.equal(await store.once('nonce-b', 30), true, 'another key');
  now += 29_999;
  assert.equal(await store.once('nonce-a', 30), false, 'still within 30 s');
  now += 1;
  assert.equal(await store.once('nonce-a', 30), true, 'the TTL has passed: a first use again');
  // hostile arguments never throw; a broken TTL still protects (clamped to 1 s, not 0)
  assert.equal(await store.once('nonce-c', NaN), true);
  assert.equal(await store.once('nonce-c', NaN), false);
  assert.equal(await store.once('', -5), true);
  await store.close();
});

test('memory once(): long keys are hashed, distinct long keys stay distinct; the table is capped', async () => {
  const store = createMemoryStore({ sweepIntervalMs: 0, onceMaxEntries: 50 });
  const long1 = 'x'.repeat(10_000);
  const long2 = `${'x'.repeat(9_999)}y`;
  assert.equal(await store.once(long1, 60), true);
  assert.equal(await store.once(long2, 60), true, 'different long keys do not collide');
  assert.equal(await store.once(long1, 60), false);
  for (let i = 0; i < 500; i++) await store.once(`k${i}`, 60);
  const held = (store as unknown as { heldEntries: { once: number } }).heldEntries.once;
  assert.equal(held, 50, 'capped: oldest evicted first');
  assert.equal(await store.once('k499', 60), false, 'the newest are kept');
  assert.equal(await store.once('k0', 60), true, 'the oldest were forgotten');
  await store.close();
});

test('memory distinct(): counts distinct members up to cap+1, repeats do not count, the window resets', async () => {
  let now = 5_000_000;
  const store = createMemoryStore({ now: () => now, sweepIntervalMs: 0 });
  const got: number[] = [];
  for (const user of ['100', '101', '100', '102', '103', '104', '105']) got.push(await store.distinct('src:203.0.113.9', user, 60, 4));
  // 100,101 -> 1,2; 100 again -> 2; 102,103 -> 3,4; 104,105 beyond the cap -> 5 (cap+1), not stored
  assert.deepEqual(got, [1, 2, 2, 3, 4, 5, 5]);
  assert.equal(await store.distinct('src:203.0.113.9', '101', 60, 4), 4, 'a stored member counts the stored set');
  assert.equal(await store.distinct('src:198.51.100.1', '100', 60, 4), 1, 'another source has its own set');
  // the window starts at the first member and is not extended by later ones
  now += 59_999;
  assert.equal(await store.distinct('src:203.0.113.9', '106', 60, 4), 5);
  now += 1;
  assert.equal(await store.distinct('src:203.0.113.9', '106', 60, 4), 1, 'a new window');
  assert.equal(await store.distinct('k', 'm', 60, NaN), 1, 'cap clamped to >= 1');
  assert.equal(await store.distinct('k', 'm2', 60, NaN), 2, 'cap 1: the second member is cap+1');
  await store.close();
});

test('memory distinct(): members bounded in total; hostile long members are hashed', async () => {
  const store = createMemoryStore({ sweepIntervalMs: 0, distinctMaxSets: 1000, distinctMaxMembers: 100 });
  for (let s = 0; s < 50; s++) for (let m = 0; m < 10; m++) await store.distinct(`s${s}`, `u${m}`, 600, 20);
  const held = (store as unknown as { heldEntries: { distinctSets: number; distinctMembers: number } }).heldEntries;
  assert.ok(held.distinctMembers <= 100, `total members capped (${held.distinctMembers})`);
  assert.equal(await store.distinct('s49', 'u0', 600, 20), 10, 'the newest set is intact');
  assert.equal(await store.distinct('big', 'a'.repeat(50_000), 600, 5), 1);
  assert.equal(await store.distinct('big', 'a'.repeat(50_000), 600, 5), 1, 'the same long member is the same member');
  assert.equal(await store.distinct('big', 'a'.repeat(49_999), 600, 5), 2);
  await store.close();
});

test('memory promotions: delivered synchronously to every listener; bad-shaped ones ignored; never throws', async () => {
  const now = 1_000_000;
  const store = createMemoryStore({ now: () => now, sweepIntervalMs: 0 });
  const got: Array<[string, number]> = [];
  store.onPromotion((k, u) => got.push([k, u]));
  store.onPromotion(() => {
    throw new Error('a broken listener must not break the store');
  });
  store.announcePromotion('203.0.113.9', now + 3_600_000);
  assert.deepEqual(got, [['203.0.113.9', now + 3_600_000]], 'delivered before announcePromotion returns');
  store.announcePromotion('2001:db8:1:2::/64', now + 1000);
  for (const [k, u] of [
    ['not an address\r\n', now + 1000],
    ['203.0.113.9', now], // already over
    ['203.0.113.9', NaN],
    ['203.0.113.9', now + 400 * 24 * 3600 * 1000], // absurdly far
  ] as Array<[string, number]>) {
    store.announcePromotion(k, u);
  }
  store.announcePromotion(undefined as unknown as string, undefined as unknown as number);
  assert.deepEqual(got.map((g) => g[0]), ['203.0.113.9', '2001:db8:1:2::/64']);
  await store.close();
});

// ---- bounded tables ----

test('ExpiringMap: oldest-first eviction under a flood stays linear; a replaced key moves to the young end', () => {
  const drops: string[] = [];
  const m = new ExpiringMap<number>(3, (k) => drops.push(k));
  m.insert('a', 1, 100, 0);
  m.insert('b', 2, 100, 0);
  m.insert('a', 3, 100, 0); // replaced: now the youngest
  m.insert('c', 4, 100, 0);
  m.insert('d', 5, 100, 0); // evicts the oldest: b
  assert.deepEqual(drops, ['a', 'b'], 'the replaced old entry, then the oldest');
  assert.equal(m.get('a', 0), 3);
  assert.equal(m.get('b', 0), undefined);
  assert.equal(m.get('a', 100), undefined, 'expiry is exclusive');
  // a million inserts through a table of 1000: each eviction costs O(1) (a fresh iterator per
  // eviction would re-skip the deleted front slots and take minutes)
  const big = new ExpiringMap<true>(1000);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < 1_000_000; i++) big.insert(`k${i}`, true, 1e12, 0);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  assert.equal(big.size, 1000);
  assert.equal(big.evicted, 999_000);
  assert.ok(ms < 5000, `1e6 inserts took ${ms.toFixed(0)} ms`);
});

test('OnceTable / DistinctTable: expired entries at the front are swept as new ones arrive', () => {
  const o = new OnceTable(1_000_000);
  for (let i = 0; i < 10_000; i++) o.firstUse(`n${i}`, 1000, i);
  assert.ok(o.size < 1100, `expired nonces do not pile up (${o.size})`);
  assert.equal(o.evicted, 0, 'nothing evicted: they expired');
  const d = new DistinctTable(10, 1_000_000);
  for (let i = 0; i < 100; i++) d.add(`s${i}`, 'u', 1000, 5, 0);
  assert.equal(d.sets, 10);
  assert.equal(d.memberCount, 10, 'evicted sets give their members back');
  assert.equal(boundedKey('short'), 'short');
  assert.match(boundedKey('z'.repeat(129)), /^h:[A-Za-z0-9_-]{32}$/);
});

// ---- Redis URLs ----

test('parseRedisUrl: the three topologies, with credentials, IPv6 and defaults', () => {
  const cases: Array<[string, unknown]> = [
    ['redis://127.0.0.1:6379', { kind: 'standalone', tls: false, host: '127.0.0.1', port: 6379, db: 0 }],
    ['redis://localhost', { kind: 'standalone', tls: false, host: 'localhost', port: 6379, db: 0 }],
    ['redis://127.0.0.1:6379/9', { kind: 'standalone', tls: false, host: '127.0.0.1', port: 6379, db: 9 }],
    ['rediss://:s3cret@redis.example.com:6380/', { kind: 'standalone', tls: true, host: 'redis.example.com', port: 6380, db: 0, password: 's3cret' }],
    ['redis://edge:p%40ss%2Fw@[2001:db8::1]:7000/2', { kind: 'standalone', tls: false, host: '2001:db8::1', port: 7000, db: 2, username: 'edge', password: 'p@ss/w' }],
    ['redis://[::1]', { kind: 'standalone', tls: false, host: '::1', port: 6379, db: 0 }],
    ['REDIS://redis_master.internal:1', { kind: 'standalone', tls: false, host: 'redis_master.internal', port: 1, db: 0 }],
    [
      'redis-sentinel://s1:26379,[2001:db8::7]:26380,s3/mymaster',
      { kind: 'sentinel', tls: false, sentinels: [{ host: 's1', port: 26379 }, { host: '2001:db8::7', port: 26380 }, { host: 's3', port: 26379 }], name: 'mymaster', db: 0 },
    ],
    [
      'redis-sentinel://:masterpw@10.0.0.1:26379/my-master.1/3?sentinelPassword=sent%26pw',
      { kind: 'sentinel', tls: false, sentinels: [{ host: '10.0.0.1', port: 26379 }], name: 'my-master.1', db: 3, password: 'masterpw', sentinelPassword: 'sent&pw' },
    ],
    [
      'rediss-sentinel://u:p@s1/m?sentinelUsername=su&sentinelPassword=sp',
      { kind: 'sentinel', tls: true, sentinels: [{ host: 's1', port: 26379 }], name: 'm', db: 0, username: 'u', password: 'p', sentinelUsername: 'su', sentinelPassword: 'sp' },
    ],
    [
      'redis-cluster://127.0.0.1:7000,127.0.0.1:7001',
      { kind: 'cluster', tls: false, nodes: [{ host: '127.0.0.1', port: 7000 }, { host: '127.0.0.1', port: 7001 }] },
    ],
    ['rediss-cluster://:pw@[fd00::1]:7000/', { kind: 'cluster', tls: true, nodes: [{ host: 'fd00::1', port: 7000 }], password: 'pw' }],
  ];
  for (const [url, want] of cases) assert.deepEqual(parseRedisUrl(url), want, url);
});

test('parseRedisUrl: everything else is an error that says what is wrong and never shows the password', () => {
  const cases: Array<[unknown, RegExp]> = [
    ['', /empty Redis URL/],
    [undefined, /empty Redis URL/],
    ['127.0.0.1:6379', /not a URL/],
    ['http://127.0.0.1:6379', /unsupported scheme "http:\/\/"/],
    ['redis+sentinel://h/m', /unsupported scheme/],
    ['redis://', /no host/],
    ['redis://h1:6379,h2:6379', /several hosts need redis-sentinel/],
    ['redis://2001:db8::1', /must be written in brackets/],
    ['redis://[2001:db8::1', /unterminated IPv6 bracket/],
    ['redis://[not:v6]:6379', /is not an IPv6 address/],
    ['redis://[::1]x', /after IPv6 address/],
    ['redis://host:0', /out of range/],
    ['redis://host:65536', /out of range/],
    ['redis://host:-1', /not a number/],
    ['redis://ho st', /whitespace/],
    ['redis://host\r\n', /whitespace or control/],
    ['redis://bad!host', /not a host name/],
    ['redis://1.2.3', /not a valid IPv4/],
    ['redis://host/abc', /database number/],
    ['redis://host/1/2', /database number/],
    ['redis://host/99999999', /database number/],
    ['redis://host?family=6', /unsupported query parameter "family"/],
    ['redis://host#frag', /no fragment/],
    ['redis://user@host', /credentials must be/],
    ['redis://user:@host', /empty password/],
    ['redis://:%zz@host', /percent-encoding/],
    ['redis-sentinel://s1:26379', /needs the master name/],
    ['redis-sentinel://s1:26379/', /needs the master name/],
    ['redis-sentinel://s1/bad$name', /master name/],
    ['redis-sentinel://s1/m/x', /database after the master name/],
    ['redis-sentinel://s1/m/1/2', /\/MASTERNAME or \/MASTERNAME\/db/],
    ['redis-sentinel://s1/m?password=x', /unsupported query parameter "password" \(only sentinelPassword/],
    ['redis-sentinel://s1/m?sentinelPassword=a&sentinelPassword=b', /given twice/],
    ['redis-sentinel://s1/m?sentinelUsername=u', /needs sentinelPassword/],
    ['redis-sentinel://s1,,s2/m', /empty host/],
    ['redis-cluster://h1:7000/0', /only database 0/],
    ['redis-cluster://h1:7000?x=1', /none are accepted/],
    [`redis-cluster://${Array.from({ length: 40 }, (_, i) => `h${i}:7000`).join(',')}`, /more than 32 hosts/],
    [`redis://${'a'.repeat(5000)}`, /longer than/],
  ];
  for (const [url, want] of cases) {
    const r = parseRedisUrl(url);
    assert.ok('error' in r, `${String(url)} must be refused`);
    assert.match(r.error, want, String(url));
  }
  // a password never appears in an error, wherever a mistyped URL puts it
  for (const url of ['redis://user:TOPSECRET', 'redis://:TOP/SECRET@host', 'redis://u:TOPSECRET@host/x', 'redis://:TOP:SECRET', 'redis-cluster://:TOPSECRET@h/0', 'redis://?TOPSECRET']) {
    const r = parseRedisUrl(url);
    assert.ok('error' in r, url);
    assert.doesNotMatch(r.error, /TOP|SECRET/, `${url} -> ${r.error}`);
  }
});

test('redactRedisUrl masks the passwords; createRedisStore refuses a bad URL with a typed error', async () => {
  assert.equal(redactRedisUrl('redis://edge:pw@h:6379/1'), 'redis://edge:***@h:6379/1');
  assert.equal(redactRedisUrl('redis-sentinel://:pw@s1,s2/m?sentinelPassword=sp'), 'redis-sentinel://:***@s1,s2/m?sentinelPassword=***');
  assert.equal(redactRedisUrl('redis://h:6379'), 'redis://h:6379');
  await assert.rejects(createRedisStore({ url: 'redis://:TOPSECRET@host/notadb' }), (e: unknown) => {
    assert.ok(e instanceof StoreInputError);
    assert.equal(e.code, 'redis_url_invalid');
    assert.doesNotMatch(e.message, /TOPSECRET/);
    return true;
  });
});
