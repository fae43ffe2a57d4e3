// The Redis store against the two other topologies, for real: a Sentinel setup (a master, a
// replica and one `redis-server --sentinel`) and a 3-master Redis Cluster (`redis-cli --cluster
// create`), all private, on random loopback ports, killed at exit. Against each, two stores (two
// edges) must share limiter counts, see each other's bans through pub/sub and listBans, propagate
// unbans, and share once/distinct/promotions; Sentinel must also follow a failover, the
// subscriber included; Cluster must keep every ban key in one hash slot.
// Under CI=true these run (the redis-server Debian package brings redis-server and redis-cli);
// locally they skip, with the reason, only when a binary is missing.
import { test, type TestContext } from 'node:test';
import * as assert from 'node:assert/strict';
import { createRedisStore, LocalBanCache } from '../edge/store';
import type { BanEvent, SharedStore } from '../edge/store/types';
import { freePorts } from './helpers/ports';
import {
  randomPrefix,
  redisCliInstalled,
  redisCommand,
  redisRequired,
  redisServerInstalled,
  startRedisCluster,
  startSentinelSetup,
  waitFor,
  within,
} from './helpers/redis-server';

function needBinaries(t: TestContext): boolean {
  const missing = [redisServerInstalled() ? null : 'redis-server', redisCliInstalled() ? null : 'redis-cli'].filter((x) => x !== null);
  if (missing.length === 0) return true;
  const why = `${missing.join(' and ')} not installed (apt-get install redis-server)`;
  if (redisRequired()) assert.fail(why);
  console.log(`# skipping: ${why}`);
  t.skip(why);
  return false;
}

/** Resolves with the first matching event, or null after `boundMs`. */
function nextEvent(store: SharedStore, pred: (e: BanEvent) => boolean, boundMs: number): Promise<BanEvent | null> {
  return new Promise((resolve) => {
    let done = false;
    const t = setTimeout(() => {
      done = true;
      resolve(null);
    }, boundMs);
    store.onBanEvent((e) => {
      if (!done && pred(e)) {
        done = true;
        clearTimeout(t);
        resolve(e);
      }
    });
  });
}

const storeOpts = { commandTimeoutMs: 500, connectTimeoutMs: 1000, reconnectMaxMs: 200, requireReady: true } as const;

/** What two edges on one Redis (any topology) must agree on. `tag` keeps keys apart per run. */
async function sharedBehaviour(a: SharedStore, b: SharedStore, tag: string): Promise<void> {
  // limiter: one count across both edges
  const spec = { name: `all_${tag}`, points: 6, durationSec: 60, onStoreDown: 'open' as const };
  const la = a.limiter(spec);
  const lb = b.limiter(spec);
  const rs = [];
  for (let i = 0; i < 6; i++) rs.push(await (i % 2 === 0 ? la : lb).consume('198.51.100.7'));
  assert.deepEqual(rs.map((r) => [r.allowed, r.remaining, r.degraded]), [5, 4, 3, 2, 1, 0].map((n) => [true, n, false]));
  const over = await lb.consume('198.51.100.7');
  assert.deepEqual([over.allowed, over.degraded], [false, false], 'the 7th, at the other edge, is refused');

  // bans: pub/sub to the other edge, listBans there, its cache enforces
  const cacheB = await LocalBanCache.create(b);
  const key = '2001:db8:77:1::/64';
  const arrived = nextEvent(b, (e) => e.kind === 'added' && e.ban.key === key, 2000);
  const ban = await a.ban({ key, reason: 'scanner', rule: `r_${tag}`, seconds: 600, escalate: { factor: 2, maxSeconds: 3600, memorySeconds: 3600 } });
  const got = await arrived;
  assert.ok(got !== null && got.kind === 'added', 'the ban reached the other edge through pub/sub');
  assert.deepEqual(got.ban, ban);
  assert.deepEqual(await b.listBans(), [ban], 'and its listBans');
  assert.equal(cacheB.check('2001:db8:77:1::9', Date.now())?.key, key);
  const again = await b.ban({ key, reason: 'scanner', rule: `r_${tag}`, seconds: 600, escalate: { factor: 2, maxSeconds: 3600, memorySeconds: 3600 } });
  assert.equal(again.count, 2, 'escalation memory is shared (the ban script ran with all its keys)');

  // unban propagates
  const removed = nextEvent(b, (e) => e.kind === 'removed' && e.key === key, 2000);
  assert.equal(await a.unban(key), true);
  assert.ok((await removed) !== null, 'the unban reached the other edge');
  assert.equal(cacheB.check('2001:db8:77:1::9', Date.now()), null);
  assert.deepEqual(await b.listBans(), []);

  // once / distinct / promotions
  assert.equal(await a.once(`nonce-${tag}`, 60), true);
  assert.equal(await b.once(`nonce-${tag}`, 60), false, 'a replay at the other edge');
  assert.equal(await a.distinct(`enum-${tag}`, '100', 60, 2), 1);
  assert.equal(await b.distinct(`enum-${tag}`, '101', 60, 2), 2);
  assert.equal(await a.distinct(`enum-${tag}`, '102', 60, 2), 3, 'cap+1 across edges');
  const promos: string[] = [];
  b.onPromotion((k) => promos.push(k));
  a.announcePromotion(`203.0.113.${tag.length}`, Date.now() + 60_000);
  assert.ok(await waitFor(() => promos.length === 1, 2000), 'the promotion reached the other edge');
}

test('Sentinel: two edges share limits, bans, unbans, once/distinct/promotions, and follow a failover (subscriber too)', { timeout: 30_000 }, async (t) => {
  if (!needBinaries(t)) return;
  const setup = await startSentinelSetup({ replica: true });
  const keyPrefix = randomPrefix();
  const stores: SharedStore[] = [];
  try {
    const a = await createRedisStore({ url: setup.url, keyPrefix, ...storeOpts });
    const b = await createRedisStore({ url: setup.url, keyPrefix, ...storeOpts });
    stores.push(a, b);
    assert.equal(a.topology, 'sentinel');
    await sharedBehaviour(a, b, 'sentinel');

    // a ban made before the failover, replicated to the replica
    const before = await a.ban({ key: '192.0.2.10', reason: 'before', rule: 'r', seconds: 600 });
    const replica = setup.replica!;
    assert.ok(await waitFor(async () => (await redisCommand(replica.port, ['EXISTS', `${keyPrefix}{bans}ban:192.0.2.10`])) === 1, 3000, 20), 'replicated');

    // maintenance failover, the old master stays up: the sentinel announces +switch-master and
    // both edges move to the new master (not only after the old one is demoted, 10 s later)
    await setup.failover();
    assert.ok(
      await waitFor(async () => {
        const r = await a.limiter({ name: 'after', points: 100, durationSec: 60, onStoreDown: 'open' }).consume('k');
        return !r.degraded && (await redisCommand(replica.port, ['EXISTS', `${keyPrefix}rl:after:k`])) === 1;
      }, 8000, 50),
      'edge A writes to the new master',
    );
    const afterKey = '192.0.2.11';
    const seen = nextEvent(b, (e) => e.kind === 'added' && e.ban.key === afterKey, 8000);
    await a.ban({ key: afterKey, reason: 'after', rule: 'r', seconds: 600 });
    assert.ok((await seen) !== null, 'a ban after the failover reaches edge B');
    assert.ok(await waitFor(async () => (await redisCommand(replica.port, ['EXISTS', `${keyPrefix}{bans}ban:${afterKey}`])) === 1, 8000, 50), 'stored on the new master');

    // the old master dies: B's subscriber must find the new master through the sentinel
    await setup.master.kill();
    const removed = nextEvent(b, (e) => e.kind === 'removed' && e.key === afterKey, 8000);
    assert.ok(await waitFor(async () => {
      try {
        return await a.unban(afterKey);
      } catch {
        return false; // a reconnect in progress: try again
      }
    }, 8000, 100), 'unban on the new master');
    assert.ok((await removed) !== null, "the unban reached B's subscriber on the new master");
    assert.ok(await waitFor(() => a.healthy() && b.healthy(), 5000));
    const listed = await b.listBans();
    assert.deepEqual(listed.map((x) => x.key), [before.key], 'the ban from before the failover survived it');
  } finally {
    for (const s of stores) await s.close();
    await setup.stop();
  }
});

test('Cluster (3 masters): two edges share limits, bans, unbans, once/distinct/promotions; ban keys share one slot', { timeout: 30_000 }, async (t) => {
  if (!needBinaries(t)) return;
  const cluster = await startRedisCluster(3);
  const keyPrefix = randomPrefix();
  const stores: SharedStore[] = [];
  try {
    const a = await createRedisStore({ url: cluster.url, keyPrefix, ...storeOpts });
    const b = await createRedisStore({ url: cluster.url, keyPrefix, ...storeOpts });
    stores.push(a, b);
    assert.equal(b.topology, 'cluster');
    // the subscriber of B and the node running A's ban script are, most of the time, different
    // nodes: the announcement crosses the cluster bus
    await sharedBehaviour(a, b, 'cluster');

    const port = cluster.ports[0]!;
    const slots = await Promise.all(
      [`${keyPrefix}{bans}ban:192.0.2.1`, `${keyPrefix}{bans}banc:2001:db8::/64`, `${keyPrefix}{bans}idx`].map((k) => redisCommand(port, ['CLUSTER', 'KEYSLOT', k])),
    );
    assert.equal(new Set(slots).size, 1, `one slot for every ban key (${slots.join(',')})`);
    // and the limiter keys spread: two sources land on (most likely) different slots
    const rl = await Promise.all(['198.51.100.1', '198.51.100.2', '198.51.100.3'].map((s) => redisCommand(port, ['CLUSTER', 'KEYSLOT', `${keyPrefix}rl:x:${s}`])));
    assert.ok(new Set(rl).size > 1, 'rate-limit keys are not pinned to the bans slot');

    // many bans: listBans reads them back in one pipeline to the one node holding the slot
    const keys = Array.from({ length: 50 }, (_, i) => `198.51.100.${i + 1}`);
    for (const k of keys) await a.ban({ key: k, reason: 'bulk', rule: 'r', seconds: 600 });
    assert.deepEqual((await b.listBans()).map((x) => x.key).sort(), [...keys].sort());
  } finally {
    for (const s of stores) await s.close();
    await cluster.stop();
  }
});


/** A store started while nothing answers: bounded creation, degraded answers, then it heals. */
async function startsDegradedAndHeals(url: string, bringUp: () => Promise<void>, healMs: number): Promise<void> {
  const opts = { url, keyPrefix: randomPrefix(), commandTimeoutMs: 200, connectTimeoutMs: 300, reconnectMaxMs: 200 };
  await assert.rejects(within(createRedisStore({ ...opts, requireReady: true }), 5000, 'createRedisStore(requireReady)'), (e: unknown) => (e as Error).name === 'StoreUnavailableError');
  const s = await within(createRedisStore(opts), 5000, 'createRedisStore');
  try {
    assert.equal(s.healthy(), false);
    const lim = s.limiter({ name: 'l', points: 5, durationSec: 60, onStoreDown: 'closed' });
    const r = await within(lim.consume('k'), 1000, 'consume while down');
    assert.deepEqual([r.allowed, r.degraded], [false, true], "degraded; 'closed' refuses");
    assert.equal(await within(s.once('n', 60), 1000, 'once while down'), true);
    assert.equal(await within(s.once('n', 60), 1000, 'once while down'), false);
    const local = await within(s.ban({ key: '192.0.2.99', reason: 'down', rule: 'r', seconds: 600 }), 1000, 'ban while down');
    assert.equal(local.count, 1);
    await bringUp();
    assert.ok(await waitFor(() => s.healthy(), healMs, 50), 'healed by itself');
    assert.ok(await waitFor(async () => (await lim.consume('k2')).degraded === false, 3000, 50), 'limiter answers from Redis again');
    assert.ok(await waitFor(async () => (await s.listBans()).some((b) => b.key === '192.0.2.99'), 3000, 50), 'the ban made while down was replayed');
  } finally {
    await within(s.close(), 3000, 'close');
  }
}

test('Sentinel unreachable at start: bounded creation, degraded answers, heals when the sentinel comes', { timeout: 30_000 }, async (t) => {
  if (!needBinaries(t)) return;
  const [sentinelPort] = await freePorts(1, 'tcp');
  let setup: Awaited<ReturnType<typeof startSentinelSetup>> | null = null;
  try {
    await startsDegradedAndHeals(`redis-sentinel://127.0.0.1:${sentinelPort}/sipedge`, async () => {
      setup = await startSentinelSetup({ sentinelPort });
    }, 5000);
  } finally {
    if (setup !== null) await (setup as Awaited<ReturnType<typeof startSentinelSetup>>).stop();
  }
});

test('Cluster unreachable at start: bounded creation, degraded answers, heals when the cluster comes', { timeout: 30_000 }, async (t) => {
  if (!needBinaries(t)) return;
  const ports = await freePorts(3, 'tcp');
  let cluster: Awaited<ReturnType<typeof startRedisCluster>> | null = null;
  try {
    await startsDegradedAndHeals(`redis-cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}`, async () => {
      cluster = await startRedisCluster(3, 10_000, ports);
    }, 8000);
  } finally {
    if (cluster !== null) await (cluster as Awaited<ReturnType<typeof startRedisCluster>>).stop();
  }
});
