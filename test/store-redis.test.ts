// Redis store against a real Redis: the machine's on 127.0.0.1:6379 (never stopped; each test has
// its own random key prefix and deletes its keys) and, for outages, a private redis-server on a
// random port that the test kills and restarts. Under CI=true a missing Redis fails the test;
// locally it skips with the reason.
import { test, type TestContext } from 'node:test';
import * as assert from 'node:assert/strict';
import Redis from 'ioredis';
import { boundedKey, createRedisStore, LocalBanCache, StoreUnavailableError } from '../edge/store';
import type { BanEvent, SharedStore } from '../edge/store/types';
import { freePort } from './helpers/ports';
import {
  SHARED_REDIS_URL,
  randomPrefix,
  redisRequired,
  redisServerInstalled,
  sharedRedisStatus,
  startPrivateRedis,
  waitFor,
  within,
} from './helpers/redis-server';

/** Skip locally, fail under CI, when the shared Redis is not there. */
async function needSharedRedis(t: TestContext): Promise<boolean> {
  const s = await sharedRedisStatus();
  if (s.up) return true;
  if (redisRequired()) assert.fail(s.reason);
  t.skip(s.reason);
  return false;
}

function needRedisServer(t: TestContext): boolean {
  if (redisServerInstalled()) return true;
  const why = 'redis-server binary not installed (apt-get install redis-server)';
  if (redisRequired()) assert.fail(why);
  t.skip(why);
  return false;
}

/** Delete every key under `prefix` (SCAN, bounded by the number of keys a test creates). */
async function cleanup(url: string, prefix: string): Promise<void> {
  const c = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: 1000, retryStrategy: () => null });
  c.on('error', () => undefined);
  try {
    await c.connect();
    let cursor = '0';
    for (let i = 0; i < 1000; i++) {
      const [next, keys] = await c.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      if (keys.length > 0) await c.del(...keys);
      cursor = next;
      if (cursor === '0') break;
    }
  } catch {
    // best effort: the prefix is random and every ban key has a TTL
  } finally {
    c.disconnect();
  }
}

/** Two stores on the shared Redis under one fresh prefix, and a raw client to look at the keys;
 *  done() closes them and deletes the prefix's keys. */
async function pairOnSharedRedis(): Promise<{ a: Awaited<ReturnType<typeof createRedisStore>>; b: Awaited<ReturnType<typeof createRedisStore>>; raw: Redis; keyPrefix: string; done: () => Promise<void> }> {
  const keyPrefix = randomPrefix();
  const a = await createRedisStore({ url: SHARED_REDIS_URL, keyPrefix, requireReady: true });
  const b = await createRedisStore({ url: SHARED_REDIS_URL, keyPrefix, requireReady: true });
  const raw = new Redis(SHARED_REDIS_URL);
  raw.on('error', () => undefined);
  return {
    a, b, raw, keyPrefix,
    async done() {
      raw.disconnect();
      await a.close();
      await b.close();
      await cleanup(SHARED_REDIS_URL, keyPrefix);
    },
  };
}


function nextEvent(store: SharedStore, pred: (e: BanEvent) => boolean, boundMs: number): Promise<BanEvent | null> {
  return new Promise((resolve) => {
    let done = false;
    const t = setTimeout(() => { done = true; resolve(null); }, boundMs);
    store.onBanEvent((e) => {
      if (!done && pred(e)) { done = true; clearTimeout(t); resolve(e); }
    });
  });
}

test('redis limiter: two stores (two edges) share one count exactly', async (t) => {
  if (!(await needSharedRedis(t))) return;
  const keyPrefix = randomPrefix();
  const a = await createRedisStore({ url: SHARED_REDIS_URL, keyPrefix, requireReady: true });
  const b = await createRedisStore({ url: SHARED_REDIS_URL, keyPrefix, requireReady: true });
  try {
    const spec = { name: 'source_all', points: 10, durationSec: 60, onStoreDown: 'open' as const };
    const la = a.limiter(spec);
    const lb = b.limiter(spec);
    const results = [];
    for (let i = 0; i < 10; i++) results.push(await (i % 2 === 0 ? la : lb).consume('198.51.100.7'));
    assert.ok(results.every((r) => r.allowed && !r.degraded), 'the first 10 across both are allowed');
    assert.deepEqual(results.map((r) => r.remaining), [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
    const eleventh = await lb.consume('198.51.100.7');
    assert.equal(eleventh.allowed, false);
    assert.equal(eleventh.degraded, false);
    assert.ok(eleventh.msBeforeNext > 0 && eleventh.msBeforeNext <= 60_000);
    assert.equal((await la.consume('198.51.100.7')).allowed, false, 'the other edge sees it too');
    await la.reset('198.51.100.7');
    assert.equal((await lb.consume('198.51.100.7')).allowed, true, 'reset on one edge frees the key on all');
    assert.equal(a.errors + b.errors, 0);
    assert.equal(a.healthy() && b.healthy(), true);
  } finally {
    await a.close();
    await b.close();
    await cleanup(SHARED_REDIS_URL, keyPrefix);
  }
});

test('redis bans: pub/sub to another store within 200 ms, unban propagates, a later store lists it', async (t) => {
  if (!(await needSharedRedis(t))) return;
  const keyPrefix = randomPrefix();
  const a = await createRedisStore({ url: SHARED_REDIS_URL, keyPrefix, requireReady: true });
  const b = await createRedisStore({ url: SHARED_REDIS_URL, keyPrefix, requireReady: true });
  const c2: SharedStore[] = [];
  try {
    const cacheB = await LocalBanCache.create(b);
    const seenOnA: BanEvent[] = [];
    a.onBanEvent((e) => seenOnA.push(e));
    const arrived = nextEvent(b, (e) => e.kind === 'added' && e.ban.key === '2001:db8:1:2::/64', 200);
    const ban = await a.ban({ key: '2001:db8:1:2::/64', reason: 'scanner', rule: 'sipvicious', seconds: 600 });
    assert.equal(seenOnA.length, 1, 'the banning store announces to its own listeners before ban() resolves');
    const got = await arrived;
    assert.ok(got !== null && got.kind === 'added', 'ban reached the other store within 200 ms');
    assert.deepEqual(got.ban, ban);
    assert.equal(cacheB.check('2001:db8:1:2::99', Date.now())?.key, '2001:db8:1:2::/64');

    const c = await createRedisStore({ url: SHARED_REDIS_URL, keyPrefix, requireReady: true });
    c2.push(c);
    const listed = await c.listBans();
    assert.deepEqual(listed, [ban]);
    const cacheC = await LocalBanCache.create(c);
    assert.equal(cacheC.check('2001:db8:1:2::1', Date.now())?.key, '2001:db8:1:2::/64');

    const removed = nextEvent(b, (e) => e.kind === 'removed' && e.key === '2001:db8:1:2::/64', 200);
    const removedOnA = nextEvent(a, (e) => e.kind === 'removed', 200);
    assert.equal(await c.unban('2001:db8:1:2::/64'), true);
    assert.ok((await removed) !== null, 'unban reached the other store within 200 ms');
    assert.ok((await removedOnA) !== null);
    // pub/sub is ordered per connection: A's own 'added' echo arrived before this removal and
    // was recognised as already announced
    assert.deepEqual(seenOnA.map((e) => e.kind), ['added', 'removed'], 'no duplicate events from the echo');
    assert.equal(cacheB.check('2001:db8:1:2::99', Date.now()), null);
    assert.ok(await waitFor(() => cacheC.check('2001:db8:1:2::1', Date.now()) === null, 200));
    assert.deepEqual(await a.listBans(), []);
    assert.equal(await a.unban('2001:db8:1:2::/64'), false, 'nothing left to unban');
  } finally {
    for (const s of [a, b, ...c2]) await s.close();
    await cleanup(SHARED_REDIS_URL, keyPrefix);
  }
});

test('redis bans: escalation doubles and caps across stores; Redis TTL matches until; unban forgives', async (t) => {
  if (!(await needSharedRedis(t))) return;
  const { a, b, raw, keyPrefix, done } = await pairOnSharedRedis();
  try {
    const escalate = { factor: 2, maxSeconds: 300, memorySeconds: 3600 };
    const got = [];
    for (let i = 0; i < 5; i++) {
      const s = i % 2 === 0 ? a : b; // escalation memory is shared
      const before = Date.now();
      const bn = await s.ban({ key: '203.0.113.50', reason: 'flood', rule: 'flood', seconds: 60, escalate });
      got.push({ count: bn.count, secs: Math.round((bn.until - before) / 1000) });
    }
    assert.deepEqual(got.map((g) => g.count), [1, 2, 3, 4, 5]);
    assert.deepEqual(got.map((g) => g.secs), [60, 120, 240, 300, 300]);
    const pttl = await raw.pttl(`${keyPrefix}{bans}ban:203.0.113.50`);
    assert.ok(pttl > 290_000 && pttl <= 300_000, `PEXPIREAT follows until (pttl ${pttl})`);
    const memTtl = await raw.ttl(`${keyPrefix}{bans}banc:203.0.113.50`);
    assert.ok(memTtl > 3500 && memTtl <= 3600, `escalation memory TTL ${memTtl}`);
    assert.equal(await a.unban('203.0.113.50'), true);
    const again = await b.ban({ key: '203.0.113.50', reason: 'flood', rule: 'flood', seconds: 60, escalate });
    assert.equal(again.count, 1, 'a manual unban resets the escalation');
  } finally {
    await done();
  }
});

test('redis bans: expire in Redis by TTL and leave listBans and the cache', async (t) => {
  if (!(await needSharedRedis(t))) return;
  const keyPrefix = randomPrefix();
  const a = await createRedisStore({ url: SHARED_REDIS_URL, keyPrefix, requireReady: true });
  const raw = new Redis(SHARED_REDIS_URL);
  raw.on('error', () => undefined);
  try {
    const cache = await LocalBanCache.create(a);
    const bn = await a.ban({ key: '192.0.2.44', reason: 'x', rule: 'y', seconds: 1 });
    assert.equal(cache.check('192.0.2.44', Date.now())?.key, '192.0.2.44');
    assert.equal(await raw.exists(`${keyPrefix}{bans}ban:192.0.2.44`), 1);
    const gone = await waitFor(async () => (await raw.exists(`${keyPrefix}{bans}ban:192.0.2.44`)) === 0, 3000, 50);
    assert.ok(gone, 'Redis expired the ban hash');
    assert.deepEqual(await a.listBans(), []);
    assert.equal(await raw.zcard(`${keyPrefix}{bans}idx`), 0, 'the index is trimmed when listed');
    assert.equal(cache.check('192.0.2.44', bn.until), null);
    assert.equal(cache.size, 0, 'purged when met');
  } finally {
    raw.disconnect();
    await a.close();
    await cleanup(SHARED_REDIS_URL, keyPrefix);
  }
});

test('redis unreachable (dead port): fast degraded answers, onStoreDown honoured, local bans, typed errors', async () => {
  const port = await freePort('tcp'); // nothing listens there
  const url = `redis://127.0.0.1:${port}`;
  await assert.rejects(createRedisStore({ url, requireReady: true, connectTimeoutMs: 300 }), StoreUnavailableError);
  const s = await within(createRedisStore({ url, connectTimeoutMs: 300, commandTimeoutMs: 200 }), 3000, 'createRedisStore');
  try {
    assert.equal(s.healthy(), false);
    const open = s.limiter({ name: 'o', points: 2, durationSec: 60, onStoreDown: 'open' });
    const closed = s.limiter({ name: 'c', points: 2, durationSec: 60, onStoreDown: 'closed' });
    const r1 = await within(open.consume('k'), 1000, 'consume');
    assert.deepEqual([r1.allowed, r1.degraded], [true, true]);
    const r2 = await within(closed.consume('k'), 1000, 'consume');
    assert.deepEqual([r2.allowed, r2.degraded], [false, true], "'closed' refuses without Redis");
    // the insurance limiter still counts per process
    await open.consume('k');
    const r3 = await open.consume('k');
    assert.deepEqual([r3.allowed, r3.degraded], [false, true], 'insurance budget exhausted');
    await open.reset('k');
    assert.equal((await open.consume('k')).allowed, true);

    await assert.rejects(within(s.listBans(), 1000, 'listBans'), StoreUnavailableError);
    await assert.rejects(within(s.unban('192.0.2.1'), 1000, 'unban'), StoreUnavailableError);
    const events: BanEvent[] = [];
    s.onBanEvent((e) => events.push(e));
    const local = await within(s.ban({ key: '192.0.2.1', reason: 'scanner', rule: 'r', seconds: 60 }), 1000, 'ban');
    assert.equal(local.count, 1);
    assert.deepEqual(events, [{ kind: 'added', ban: local }], 'a ban while down is enforced on this node at once');
    assert.equal(await s.unban('192.0.2.1'), true, 'a local pending ban can be lifted locally');
    assert.ok(s.errors > 0);
  } finally {
    await within(s.close(), 2000, 'close');
  }
});

test('redis outage and return (private redis-server killed and restarted): health flips, bans replay and resync', async (t) => {
  if (!needRedisServer(t)) return;
  const srv = await startPrivateRedis();
  const opts = { url: srv.url, keyPrefix: 'sipedge:', commandTimeoutMs: 200, connectTimeoutMs: 300, reconnectMaxMs: 100 };
  const a = await createRedisStore({ ...opts, requireReady: true });
  let b: SharedStore | null = null;
  try {
    const health: boolean[] = [];
    a.onHealth((up) => health.push(up));
    const cache = await LocalBanCache.create(a);
    await a.ban({ key: '198.51.100.1', reason: 'before', rule: 'r', seconds: 600 });
    assert.ok(cache.check('198.51.100.1', Date.now()));

    // a hung server (accepts, never answers): commands end at the command timeout
    srv.pause();
    const lim = a.limiter({ name: 'l', points: 5, durationSec: 60, onStoreDown: 'closed' });
    const hung = await within(lim.consume('k'), 2000, 'consume against a hung Redis');
    assert.deepEqual([hung.allowed, hung.degraded], [false, true]);
    srv.resume();

    await srv.kill();
    assert.ok(await waitFor(() => !a.healthy(), 3000), 'health flag goes down');
    assert.equal(health.at(-1), false);
    const down = await within(lim.consume('k'), 1000, 'consume while down');
    assert.equal(down.degraded, true);
    const whileDown = await a.ban({ key: '2001:db8:9:9::/64', reason: 'during', rule: 'r', seconds: 600 });
    assert.ok(cache.check('2001:db8:9:9::1', Date.now()), 'enforced locally while Redis is down');

    // the restarted server is empty (no persistence): the ban made before is gone from the cluster
    const removed = nextEvent(a, (e) => e.kind === 'removed' && e.key === '198.51.100.1', 5000);
    await srv.start();
    assert.ok(await waitFor(() => a.healthy(), 5000), 'health flag comes back by itself');
    assert.equal(health.at(-1), true);
    assert.ok((await removed) !== null, 'resync after reconnect emits what changed meanwhile');
    assert.equal(cache.check('198.51.100.1', Date.now()), null);
    const up = await lim.consume('k2');
    assert.deepEqual([up.allowed, up.degraded], [true, false]);

    // the ban made while down was replayed into Redis: a new edge sees it
    b = await createRedisStore({ ...opts, requireReady: true });
    const bStore = b;
    assert.ok(await waitFor(async () => (await bStore.listBans()).some((x) => x.key === whileDown.key), 3000));
    assert.ok(cache.check('2001:db8:9:9::1', Date.now()), 'still enforced after the replay');
  } finally {
    srv.resume();
    await a.close();
    if (b !== null) await b.close();
    await srv.kill();
  }
});

test('redis once(): one answer across stores (SET NX PX under <p>once:), expires with the TTL; long keys bounded', async (t) => {
  if (!(await needSharedRedis(t))) return;
  const { a, b, raw, keyPrefix, done } = await pairOnSharedRedis();
  try {
    assert.equal(await a.once('nonce-1', 1), true, 'first use');
    assert.equal(await b.once('nonce-1', 1), false, 'replayed at another edge');
    assert.equal(await a.once('nonce-1', 1), false, 'replayed at the same edge');
    assert.equal(await b.once('nonce-2', 1), true);
    const pttl = await raw.pttl(`${keyPrefix}once:nonce-1`);
    assert.ok(pttl > 0 && pttl <= 1000, `PX follows the TTL (pttl ${pttl})`);
    // after the TTL (Redis and every edge's own table): a first use again
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal(await b.once('nonce-1', 1), true);

    assert.equal(await a.once('n'.repeat(20_000), 60), true);
    assert.equal(await b.once('n'.repeat(20_000), 60), false);
    const keys = await raw.keys(`${keyPrefix}once:*`);
    assert.ok(keys.includes(`${keyPrefix}once:${boundedKey('n'.repeat(20_000))}`), 'the long key is stored hashed');
    assert.ok(keys.every((k) => k.length <= keyPrefix.length + 'once:'.length + 128), 'no attacker-sized key reaches Redis');
    assert.equal(a.errors + b.errors, 0);
  } finally {
    await done();
  }
});

test('redis distinct(): one count across stores, at most cap+1 stored cap, the window from the first member', async (t) => {
  if (!(await needSharedRedis(t))) return;
  const { a, b, raw, keyPrefix, done } = await pairOnSharedRedis();
  try {
    const src = 'enum:203.0.113.9';
    const got: number[] = [];
    const calls: Array<[SharedStore, string]> = [[a, '100'], [b, '101'], [a, '100'], [b, '102'], [a, '103'], [b, '104']];
    for (const [s, user] of calls) got.push(await s.distinct(src, user, 1, 3));
    assert.deepEqual(got, [1, 2, 2, 3, 4, 4], 'shared count; beyond cap 3 the answer is cap+1');
    assert.equal(await raw.scard(`${keyPrefix}dist:${src}`), 3, 'members beyond the cap are not stored');
    const pttl = await raw.pttl(`${keyPrefix}dist:${src}`);
    assert.ok(pttl > 0 && pttl <= 1000, `window set on creation (pttl ${pttl})`);
    assert.equal(await b.distinct(src, '100', 1, 3), 3, 'a stored member is no new member');
    assert.ok(await waitFor(async () => (await raw.exists(`${keyPrefix}dist:${src}`)) === 0, 3000, 50), 'the window ends');
    assert.equal(await a.distinct(src, '105', 1, 3), 1, 'a new window');
    assert.equal(await a.distinct('other', 'x'.repeat(10_000), 60, 3), 1);
    assert.equal(await b.distinct('other', 'x'.repeat(10_000), 60, 3), 1, 'a long member is hashed the same everywhere');
    assert.equal(a.errors + b.errors, 0);
  } finally {
    await done();
  }
});

test('redis promotions: reach the other store, own echo not delivered twice, one per key per 10 s, bad-shaped ignored', async (t) => {
  if (!(await needSharedRedis(t))) return;
  const { a, b, raw, keyPrefix, done } = await pairOnSharedRedis();
  try {
    const gotA: Array<[string, number]> = [];
    const gotB: Array<[string, number]> = [];
    a.onPromotion((k, u) => gotA.push([k, u]));
    b.onPromotion((k, u) => gotB.push([k, u]));
    const until = Date.now() + 3_600_000;
    a.announcePromotion('203.0.113.9', until);
    assert.deepEqual(gotA, [['203.0.113.9', until]], 'this instance at once');
    assert.ok(await waitFor(() => gotB.length === 1, 1000), 'the other instance through pub/sub');
    assert.deepEqual(gotB[0], ['203.0.113.9', until]);

    // the same phone again within 10 s: local renewal only, nothing published; a marker published
    // after it arrives alone (one publishing connection: pub/sub keeps its order)
    a.announcePromotion('203.0.113.9', until + 5000);
    a.announcePromotion('2001:db8:1:2::/64', until);
    assert.ok(await waitFor(() => gotB.length === 2, 1000));
    assert.deepEqual(gotB.map((g) => g[0]), ['203.0.113.9', '2001:db8:1:2::/64'], 'the repeat was not published');
    assert.deepEqual(gotA.map((g) => g[0]), ['203.0.113.9', '203.0.113.9', '2001:db8:1:2::/64'], 'no echo of its own announcements');

    // anyone can PUBLISH on the Redis: only the shape we publish is delivered
    const ch = `${keyPrefix}promotions`;
    const bad = [
      'not json',
      '[1,2]',
      JSON.stringify({ kind: 'promoted', key: 'x y\r\n', until, from: 'other' }),
      JSON.stringify({ kind: 'promoted', key: '192.0.2.1', until: 'soon', from: 'other' }),
      JSON.stringify({ kind: 'promoted', key: '192.0.2.1', until: Date.now() - 1, from: 'other' }),
      JSON.stringify({ kind: 'promoted', key: '192.0.2.1', until: Date.now() + 400 * 86_400_000, from: 'other' }),
      JSON.stringify({ kind: 'promoted', key: '192.0.2.1', until }),
      JSON.stringify({ kind: 'banned', key: '192.0.2.1', until, from: 'other' }),
      JSON.stringify({ kind: 'promoted', key: '192.0.2.1', until, from: 'other', pad: 'p'.repeat(5000) }),
    ];
    for (const m of bad) await raw.publish(ch, m);
    await raw.publish(ch, JSON.stringify({ kind: 'promoted', key: '192.0.2.2', until, from: 'other' }));
    assert.ok(await waitFor(() => gotB.length === 3, 1000));
    assert.deepEqual(gotB[2], ['192.0.2.2', until], 'only the well-formed one');
    // each store has its own subscriber connection: A's copy may arrive a moment after B's
    assert.ok(await waitFor(() => gotA.at(-1)?.[0] === '192.0.2.2', 1000), 'A got the well-formed one too');

    b.announcePromotion('198.51.100.20', until);
    assert.ok(await waitFor(() => gotA.some((g) => g[0] === '198.51.100.20'), 1000), 'and the other way');
  } finally {
    await done();
  }
});

test('redis down (private redis-server killed, then hung): once/distinct answer locally at once, replays stay replays', async (t) => {
  if (!needRedisServer(t)) return;
  const srv = await startPrivateRedis();
  const a = await createRedisStore({ url: srv.url, commandTimeoutMs: 200, connectTimeoutMs: 300, reconnectMaxMs: 100, requireReady: true });
  try {
    assert.equal(await a.once('before', 60), true);
    assert.equal(await a.distinct('src', 'u1', 60, 2), 1);

    await srv.kill();
    assert.ok(await waitFor(() => !a.healthy(), 3000), 'down');
    const errorsBefore = a.errors;
    assert.equal(await within(a.once('before', 60), 500, 'once while down'), false, 'a nonce used before the outage is still a replay');
    assert.equal(await within(a.once('during', 60), 500, 'once while down'), true);
    assert.equal(await within(a.once('during', 60), 500, 'once while down'), false, 'the local table answers');
    // distinct: this node's own count, from empty (an outage undercounts)
    const counts = [];
    for (const u of ['u1', 'u2', 'u3', 'u2']) counts.push(await within(a.distinct('src', u, 60, 2), 500, 'distinct while down'));
    assert.deepEqual(counts, [1, 2, 3, 2]);
    const promos: string[] = [];
    a.onPromotion((k) => promos.push(k));
    a.announcePromotion('203.0.113.7', Date.now() + 60_000);
    assert.deepEqual(promos, ['203.0.113.7'], 'delivered here even with Redis down');
    assert.ok(a.errors > errorsBefore, 'fallback answers are counted as store errors');

    await srv.start();
    assert.ok(await waitFor(() => a.healthy(), 5000), 'back');
    // the restarted Redis is empty and never saw "during": this node's table still knows it
    assert.equal(await a.once('during', 60), false, 'a nonce used during the outage is a replay after it');
    assert.equal(await a.once('after', 60), true);

    // a server that accepts but never answers: bounded by the command timeout, local answer
    srv.pause();
    const t0 = Date.now();
    assert.equal(await within(a.once('hung', 60), 1500, 'once against a hung Redis'), true);
    assert.equal(await within(a.distinct('hung', 'u', 60, 5), 1500, 'distinct against a hung Redis'), 1);
    assert.ok(Date.now() - t0 < 1500, `bounded (${Date.now() - t0} ms)`);
    srv.resume();
  } finally {
    srv.resume();
    await a.close();
    await srv.kill();
  }
});

test('a ban removed behind a node\'s back (a missed announcement) is retracted by the resync after its subscriber reconnects', async (t) => {
  if (!needRedisServer(t)) return;
  const srv = await startPrivateRedis();
  const a = await createRedisStore({ url: srv.url, commandTimeoutMs: 500, connectTimeoutMs: 300, reconnectMaxMs: 100, requireReady: true });
  const raw = new Redis(srv.url);
  raw.on('error', () => undefined);
  try {
    await a.ban({ key: '198.51.100.66', reason: 'scanner', rule: 'r', seconds: 600 });
    // a starting instance lists the bans for its cache
    const c = await createRedisStore({ url: srv.url, commandTimeoutMs: 500, connectTimeoutMs: 300, reconnectMaxMs: 100, requireReady: true });
    try {
      const events: BanEvent[] = [];
      c.onBanEvent((e) => events.push(e));
      assert.deepEqual((await c.listBans()).map((b) => b.key), ['198.51.100.66']);
      // the unban happens where c cannot hear it: its keys vanish without an announcement
      // (what a subscription that came up after the list, or a partition, looks like)
      const keys = await raw.keys('*bans*');
      assert.ok(keys.length > 0);
      await raw.del(...keys);
      // c's subscriber reconnects (the server drops pub/sub clients): it re-lists and tells its cache
      await raw.client('KILL', 'TYPE', 'pubsub');
      assert.ok(await waitFor(() => events.some((e) => e.kind === 'removed' && e.key === '198.51.100.66'), 5000), `events: ${JSON.stringify(events)}`);
    } finally {
      await c.close();
    }
  } finally {
    raw.disconnect();
    await a.close();
    await srv.kill();
  }
});
