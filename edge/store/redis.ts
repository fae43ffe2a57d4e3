// SharedStore over Redis (ioredis 5): rate limits, bans, replay and enumeration counters and trust
// promotions shared by every edge of a cluster.
//
// Topologies (the URL's scheme picks one; redis-url.ts parses it):
// - standalone  redis://, rediss://: one server;
// - Sentinel    redis-sentinel://h1,h2/MASTER: both connections (commands and subscriber) are
//   sentinel-managed: every (re)connect asks a sentinel for the current master (and checks the
//   server's role); a failover announced by a sentinel (+switch-master) or a READONLY reply from
//   a demoted master drops the connection, which then reconnects to the new master;
// - Cluster     redis-cluster://h1,h2: ioredis Cluster for commands (routes by hash slot, follows
//   MOVED/ASK) and a second Cluster for the subscriber (ioredis keeps one subscriber connection to
//   one node and moves it when that node goes; Redis Cluster broadcasts PUBLISH to every node, so
//   any node will do). Multi-key Lua scripts need all their keys in one hash slot: every ban key
//   carries the hash tag {bans} (below).
//
// Failure model. Redis is a dependency the edge must survive losing, in every topology:
// - every command is bounded: no offline queue (a command while disconnected fails at once),
//   `commandTimeout` for a server that accepts but does not answer, no retry per request; a
//   cluster tries a command on a moved slot or a failed node at most 3 times (maxRedirections),
//   100 ms apart, so the worst case is about 3 command timeouts + 200 ms;
// - the connection reconnects forever in the background with capped backoff (a Sentinel client
//   also retries the sentinels forever; a Cluster client re-discovers the slots), so the edge heals
//   by itself when Redis returns; healthy()/onHealth() report the state (sipedge_redis_up,
//   /readyz). Creating the store waits for the first connection at most a bounded time;
// - limiters answer from a per-process RateLimiterMemory "insurance" limiter while Redis fails
//   (rate-limiter-flexible's insuranceLimiter, with rejectIfRedisNotReady so a down Redis costs no
//   timeout), flagged `degraded`; with onStoreDown 'closed' a degraded answer refuses;
//   Its windows live in the compact WindowCounters of window-counters.ts (no object and timer
//   per key), swept with the once()/distinct() tables on one unref'd timer (sweepIntervalMs);
// - once() and distinct() answer from bounded per-process tables (bounded.ts) while Redis fails.
//   once() also records every key in its local table when Redis answers, and a key is "first
//   use" only if both agree: a nonce seen here during an outage is still a replay after Redis
//   returns (Redis never saw it), and one seen before the outage is still a replay during it;
// - bans requested while Redis is down (or while the slot holding the bans is unreachable) are
//   applied on this node at once (a local 'added' event, so the scanner in front of us is stopped
//   now) and written to Redis when it returns; unban and listBans need Redis and reject with
//   StoreUnavailableError (an admin action, retried by a human);
// - pub/sub is fire-and-forget: a node that was disconnected (or restarted, or partitioned, or
//   whose cluster subscriber moved to another node) has missed announcements, so after every
//   (re)subscription it re-lists all bans and emits the differences (Kamailio's htable
//   replication (dmq) has no such resync; fail2ban has no cluster at all). Promotion
//   announcements missed while disconnected are NOT recovered: promotion is an optimisation
//   (a phone re-authenticates and is announced again), bans are the safety mechanism.
//
// Data layout (prefix default "sipedge:"; {bans} is a Redis Cluster hash tag: only the text
// between the braces is hashed, so every ban key lives in one slot and the ban and unban scripts
// may touch them together):
//   <p>rl:<limiter>:<key>     rate-limiter-flexible counter (string, EX = window)
//   <p>{bans}ban:<key>        hash reason, rule, since, until, count; PEXPIREAT until
//   <p>{bans}banc:<key>       escalation counter (INCR), EXPIRE memorySeconds
//   <p>{bans}idx              zset member=key score=until, for listBans (expired members trimmed)
//   <p>once:<key>             "1", SET NX PX ttl (replay protection)
//   <p>dist:<key>             set of members, PEXPIRE window from the first member (enumeration)
//   <p>bans                   channel: JSON {"kind":"added","ban":{...}} | {"kind":"removed","key":"..."}
//   <p>promotions             channel: JSON {"kind":"promoted","key":"...","until":ms,"from":"<instance id>"}
// Keys and members of once/dist come from attackers: longer than 128 characters they are hashed
// (bounded.ts boundedKey). Ban and unban are one Lua script each (atomic: escalation count, hash,
// index and announcement cannot diverge). The ban keys were "<p>ban:<key>" / "<p>bans:idx"
// before Cluster support: bans written by an older version are not listed by this one (they
// still expire by their TTL; instances running at the upgrade keep them in their caches).
// Promotion announcements are rate-limited per key on the announcing node (at most one per key
// per 10 s), so a phone that registers every few seconds does not make a pub/sub storm.
import { randomBytes } from 'node:crypto';
import Redis, { Cluster, type ClusterOptions, type RedisOptions } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { DistinctTable, IntervalGate, OnceTable, boundedKey, distinctCap, windowMs } from './bounded';
import { CounterTables, WINDOW_MAX_KEYS, useWindowCounters, type WindowCounters } from './window-counters';
import {
  Listeners,
  StoreInputError,
  banSeconds,
  cleanText,
  clampSeconds,
  normaliseEscalation,
  normalisePoints,
  normaliseSpec,
  peekResult,
  toConsumeResult,
  validBanKey,
  validPromotion,
  type BanRequest,
} from './memory';
import { parseRedisUrl, type ParsedRedisUrl } from './redis-url';
import type { Ban, BanEvent, ConsumeResult, Limiter, LimiterSpec, SharedStore } from './types';

export { parseRedisUrl, redactRedisUrl, type ParsedRedisUrl, type RedisEndpoint } from './redis-url';

export interface RedisStoreOptions {
  /** redis://[user:pass@]host:port[/db], rediss://..., redis-sentinel://[user:pass@]h1:26379,h2:26379/MASTER[/db]
   *  [?sentinelPassword=...], redis-cluster://[user:pass@]h1:7000,h2:7001 (see redis-url.ts) */
  readonly url: string;
  /** prefix of every key and of the channels; default 'sipedge:' */
  readonly keyPrefix?: string;
  /** bound on one command, ms (default 200): a hung Redis costs at most this per call */
  readonly commandTimeoutMs?: number;
  /** bound on one connection attempt, ms (default 1000) */
  readonly connectTimeoutMs?: number;
  /** reconnect backoff cap, ms (default 2000): 50, 100, 200 ... capped, forever */
  readonly reconnectMaxMs?: number;
  /** reject createRedisStore (and close) when Redis is not reachable at start; default false:
   *  start degraded and heal in the background */
  readonly requireReady?: boolean;
  /** clock for bans, once/distinct fallbacks and promotions, epoch ms (default Date.now); Redis
   *  expiry uses the server clock, so the nodes' clocks must agree (NTP) */
  readonly now?: () => number;
  /** cap on bans held locally while Redis is down, awaiting replay (default 10000) */
  readonly maxPendingBans?: number;
  /** caps of the per-process once()/distinct() tables (defaults in bounded.ts) */
  readonly onceMaxEntries?: number;
  readonly distinctMaxSets?: number;
  readonly distinctMaxMembers?: number;
  /** cap on keys per insurance limiter (default WINDOW_MAX_KEYS) */
  readonly limiterMaxKeys?: number;
  /** how often the per-process tables (insurance windows, once/distinct, the promotion gate)
   *  drop expired entries and shrink after a flood (default 10 s; 0 = only lazily) */
  readonly sweepIntervalMs?: number;
}

/** Redis is down (or did not answer in time) and the call cannot be answered locally. */
export class StoreUnavailableError extends Error {
  constructor(readonly code: 'store_unavailable', override readonly cause?: unknown) {
    super('store_unavailable');
    this.name = 'StoreUnavailableError';
  }
}

/** At most one promotion announcement per key per this interval leaves this node. */
export const PROMOTION_ANNOUNCE_INTERVAL_MS = 10_000;

const BAN_SCRIPT = `
local now = tonumber(ARGV[4])
local seconds = tonumber(ARGV[5])
local factor = tonumber(ARGV[6])
local maxs = tonumber(ARGV[7])
local mem = tonumber(ARGV[8])
local count = 1
if mem > 0 then
  count = redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], mem)
  local s = math.floor(seconds * (factor ^ (count - 1)))
  if s < seconds then s = seconds end
  if s > maxs then s = maxs end
  seconds = s
end
local untilv = now + seconds * 1000
local since = now
local prev = redis.call('HMGET', KEYS[1], 'until', 'since')
local pu = tonumber(prev[1])
if pu and pu > now then
  if pu > untilv then untilv = pu end
  local ps = tonumber(prev[2])
  if ps then since = ps end
end
redis.call('HSET', KEYS[1], 'reason', ARGV[2], 'rule', ARGV[3], 'since', string.format('%d', since), 'until', string.format('%d', untilv), 'count', count)
redis.call('PEXPIREAT', KEYS[1], string.format('%d', untilv))
redis.call('ZADD', KEYS[3], string.format('%d', untilv), ARGV[1])
redis.call('PUBLISH', ARGV[9], cjson.encode({kind = 'added', ban = {key = ARGV[1], reason = ARGV[2], rule = ARGV[3], since = since, ['until'] = untilv, count = count}}))
return {since, untilv, count}
`;

const UNBAN_SCRIPT = `
local u = tonumber(redis.call('HGET', KEYS[1], 'until'))
redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
if u and u > tonumber(ARGV[3]) then
  redis.call('PUBLISH', ARGV[2], cjson.encode({kind = 'removed', key = ARGV[1]}))
  return 1
end
return 0
`;

// distinct(): one round trip, atomic (two edges adding members at once cannot both see room
// under the cap); the window starts with the first member and is never extended (a slow
// enumeration is still counted within one window, not forever)
const DISTINCT_SCRIPT = `
local n = redis.call('SCARD', KEYS[1])
if n > 0 and redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return n end
local cap = tonumber(ARGV[3])
if n >= cap then return cap + 1 end
redis.call('SADD', KEYS[1], ARGV[1])
if n == 0 or redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return n + 1
`;

/** Either client: both run the same commands; a Cluster routes each by its key's hash slot. */
type Conn = Redis | Cluster;

interface ScriptedRedis {
  sipedgeBan(k1: string, k2: string, k3: string, ...args: string[]): Promise<unknown>;
  sipedgeUnban(k1: string, k2: string, k3: string, ...args: string[]): Promise<unknown>;
  sipedgeDistinct(k1: string, ...args: string[]): Promise<unknown>;
}

/** Results that the insurance limiter produced, i.e. Redis did not answer. */
const fromInsurance = new WeakSet<object>();

/** RateLimiterMemory that marks its answers, so that a degraded answer can be told apart. */
class InsuranceLimiter extends RateLimiterMemory {
  override get(key: string | number, options?: { [key: string]: unknown }): Promise<RateLimiterRes | null> {
    return super.get(key, options).then((r) => {
      if (r !== null) fromInsurance.add(r);
      return r;
    });
  }

  override consume(key: string | number, points?: number, options?: { [key: string]: unknown }): Promise<RateLimiterRes> {
    return super.consume(key, points, options).then(
      (r) => {
        fromInsurance.add(r);
        return r;
      },
      (e: unknown) => {
        if (e instanceof RateLimiterRes) fromInsurance.add(e);
        throw e;
      },
    );
  }
}

class RedisLimiter implements Limiter {
  private readonly rl: RateLimiterRedis;
  private readonly insurance: InsuranceLimiter;

  constructor(readonly spec: LimiterSpec, client: Conn, prefix: string, private readonly store: RedisStore, counters: WindowCounters, now: () => number) {
    const { points, duration } = normaliseSpec(spec);
    // a table of its own: no key prefix needed
    this.insurance = new InsuranceLimiter({ points, duration, keyPrefix: '' });
    useWindowCounters(this.insurance, counters, now);
    // rate-limiter-flexible takes an ioredis Cluster as storeClient as well: its counter is one
    // key per limiter and source (one slot), and it reads `status` for rejectIfRedisNotReady
    this.rl = new RateLimiterRedis({
      storeClient: client,
      points,
      duration,
      keyPrefix: `${prefix}rl:${spec.name}`,
      rejectIfRedisNotReady: true,
      insuranceLimiter: this.insurance,
    });
  }

  private answer(res: RateLimiterRes, withinBudget: boolean): ConsumeResult {
    const degraded = fromInsurance.has(res);
    if (degraded) this.store.countError();
    // 'closed': without the shared count this node cannot know the cluster-wide budget; refuse
    const allowed = withinBudget && !(degraded && this.spec.onStoreDown === 'closed');
    return toConsumeResult(res, allowed, degraded);
  }

  async consume(key: string, points?: number): Promise<ConsumeResult> {
    try {
      return this.answer(await this.rl.consume(String(key), normalisePoints(points)), true);
    } catch (e) {
      if (e instanceof RateLimiterRes) return this.answer(e, false);
      // both Redis and the insurance failed: cannot happen with valid input; follow the spec
      this.store.countError();
      return { allowed: this.spec.onStoreDown === 'open', remaining: 0, msBeforeNext: 0, degraded: true };
    }
  }

  async peek(key: string): Promise<ConsumeResult> {
    try {
      const res = await this.rl.get(String(key));
      // an empty answer while Redis is down came from the (empty) insurance limiter
      const degraded = res !== null ? fromInsurance.has(res) : !this.store.healthy();
      if (degraded) this.store.countError();
      const r = peekResult(res, this.rl.points, degraded);
      return degraded && this.spec.onStoreDown === 'closed' ? { ...r, allowed: false } : r;
    } catch {
      this.store.countError();
      return { allowed: this.spec.onStoreDown === 'open', remaining: 0, msBeforeNext: 0, degraded: true };
    }
  }

  async reset(key: string): Promise<void> {
    // both counters: the insurance one may hold counts from an outage
    try {
      await this.insurance.delete(String(key));
    } catch {
      // nothing held
    }
    try {
      await this.rl.delete(String(key));
    } catch {
      this.store.countError();
    }
  }
}

/** A ban from untrusted-shaped data (a pub/sub message, a hash read back): validated, or null. */
function parseBan(key: unknown, o: Record<string, unknown> | null | undefined): Ban | null {
  if (o === null || o === undefined || typeof o !== 'object' || !validBanKey(key)) return null;
  const since = Number(o.since);
  const until = Number(o.until);
  const count = Number(o.count);
  if (!Number.isFinite(since) || !Number.isFinite(until) || !Number.isFinite(count) || count < 1) return null;
  return { key, reason: cleanText(o.reason, 'unspecified'), rule: cleanText(o.rule, 'manual'), since, until, count: Math.floor(count) };
}

const LIST_CHUNK = 500;
/** Longest pub/sub message looked at (a ban with 128-character reason and rule is ~400 bytes). */
const MAX_MESSAGE_CHARS = 4096;
/** Retry of a ban replay that failed while the connection stayed up (a cluster whose bans slot is
 *  unreachable): first after this, doubling, capped at 30 s. */
const REPLAY_RETRY_MS = 1000;

type Topology = ParsedRedisUrl['kind'];

class RedisStore implements SharedStore {
  readonly kind = 'redis' as const;
  private errorCount = 0;
  private up = false;
  private started = false;
  private closing = false;
  /** this instance, in promotion announcements (its own echo is not delivered twice) */
  private readonly instanceId = randomBytes(8).toString('hex');
  private readonly events = new Listeners<BanEvent>();
  private readonly health = new Listeners<boolean>();
  private readonly promotions = new Listeners<{ key: string; until: number }>();
  /** bans this node has announced to its listeners (key -> ban), to turn a re-list into events */
  private readonly known = new Map<string, Ban>();
  /** bans applied locally while Redis was down, replayed on reconnect */
  private readonly pending = new Map<string, { ban: Ban; req: BanRequest }>();
  private readonly onceTable: OnceTable;
  private readonly distinctTable: DistinctTable;
  private readonly promotionGate = new IntervalGate(PROMOTION_ANNOUNCE_INTERVAL_MS);
  private readonly counters: CounterTables;
  private sweepTimer: NodeJS.Timeout | null = null;
  private resyncing = false;
  private resyncAgain = false;
  private lastKnownSweep = 0;
  /** keys added or removed while resync() has a ban list in flight (null when none is): the
   *  list, read before, holds an older state of them (LocalBanCache.create does the same) */
  private touchedWhileListing: Set<string> | null = null;
  private replayTimer: NodeJS.Timeout | null = null;
  private replayDelay = REPLAY_RETRY_MS;
  private subWatch: NodeJS.Timeout | null = null;
  private lastSubInstance: unknown = null;
  private readonly now: () => number;
  private readonly channel: string;
  private readonly promoChannel: string;
  private readonly banTag: string;
  private readonly idxKey: string;
  private readonly maxPending: number;

  constructor(
    readonly main: Conn,
    readonly sub: Conn,
    private readonly prefix: string,
    readonly topology: Topology,
    opts: RedisStoreOptions,
  ) {
    this.now = opts.now ?? Date.now;
    this.channel = `${prefix}bans`;
    this.promoChannel = `${prefix}promotions`;
    this.banTag = `${prefix}{bans}`;
    this.idxKey = `${this.banTag}idx`;
    this.maxPending = opts.maxPendingBans ?? 10_000;
    this.onceTable = new OnceTable(opts.onceMaxEntries);
    this.distinctTable = new DistinctTable(opts.distinctMaxSets, opts.distinctMaxMembers);
    this.counters = new CounterTables(opts.limiterMaxKeys ?? WINDOW_MAX_KEYS);
    const every = opts.sweepIntervalMs ?? 10_000;
    if (every > 0) {
      this.sweepTimer = setInterval(() => this.sweep(), every);
      this.sweepTimer.unref();
    }
    main.defineCommand('sipedgeBan', { numberOfKeys: 3, lua: BAN_SCRIPT });
    main.defineCommand('sipedgeUnban', { numberOfKeys: 3, lua: UNBAN_SCRIPT });
    main.defineCommand('sipedgeDistinct', { numberOfKeys: 1, lua: DISTINCT_SCRIPT });

    // ioredis emits 'error' for every failed (re)connect; without a listener it prints
    // "Unhandled error event". The state itself is read from the status events below.
    main.on('error', () => undefined);
    sub.on('error', () => undefined);
    main.on('ready', () => {
      quietSentinelHelpers(main);
      this.setUp(true);
      if (this.started) this.scheduleResync();
    });
    for (const ev of ['close', 'end', 'reconnecting'] as const) main.on(ev, () => this.setUp(false));
    // (re)subscribe ourselves on every ready (autoResubscribe is off: one code path)
    sub.on('ready', () => {
      quietSentinelHelpers(sub);
      this.subscribe();
    });
    sub.on('message', (channel: string, message: string) => {
      if (channel === this.channel) this.onBanMessage(message);
      else if (channel === this.promoChannel) this.onPromotionMessage(message);
    });
    if (topology === 'cluster') this.watchClusterSubscriber();
  }

  /** Subscribe both channels; once the subscription stands, re-list what may have been missed.
   *  A SUBSCRIBE that fails on a connection still up (timed out) is retried a second later: no
   *  'ready' would come to try again, and this node would hear no announcement meanwhile. */
  private subscribe(): void {
    if (this.closing) return;
    this.sub.subscribe(this.channel, this.promoChannel).then(
      () => {
        if (this.started) this.scheduleResync();
      },
      () => {
        this.countError();
        if (this.closing || this.sub.status !== 'ready') return; // the next 'ready' subscribes
        setTimeout(() => {
          if (this.sub.status === 'ready') this.subscribe();
        }, 1000).unref();
      },
    );
  }

  /**
   * A Cluster keeps its subscriber connection to one node and, when that node goes away, moves it
   * to another and re-subscribes by itself, without any event on the Cluster object: messages
   * published meanwhile are lost to us. Watch the subscriber connection (ioredis' ClusterSubscriber,
   * not public API, hence the defensive reading) and treat a new one like a reconnect. Without
   * that handle (another ioredis), fall back to a periodic resync.
   */
  private watchClusterSubscriber(): void {
    const cs = (this.sub as unknown as { subscriber?: { getInstance?: () => unknown } }).subscriber;
    const getInstance = typeof cs?.getInstance === 'function' ? () => cs.getInstance!() : null;
    this.subWatch = setInterval(() => {
      if (this.closing || this.sub.status !== 'ready') return;
      if (getInstance === null) {
        if (this.started) this.scheduleResync();
        return;
      }
      let inst: unknown;
      try {
        inst = getInstance();
      } catch {
        return;
      }
      if (inst === this.lastSubInstance || inst === null || inst === undefined) return;
      const first = this.lastSubInstance === null;
      this.lastSubInstance = inst;
      if (first) return; // the one subscribed through the Cluster's own 'ready'
      const conn = inst as { status?: string; once?: (ev: string, fn: () => void) => void };
      if (conn.status === 'ready') this.subscribe();
      else conn.once?.('ready', () => this.subscribe());
    }, getInstance === null ? 30_000 : 1000);
    this.subWatch.unref();
  }

  /** a failed or timed-out command (also: a limiter answer from the insurance limiter) */
  countError(): void {
    this.errorCount++;
  }

  get errors(): number {
    return this.errorCount;
  }

  markStarted(): void {
    this.started = true;
  }

  private setUp(up: boolean): void {
    const now = up && this.main.status === 'ready';
    if (now === this.up) return;
    this.up = now;
    this.health.emit(now);
  }

  limiter(spec: LimiterSpec): Limiter {
    return new RedisLimiter(spec, this.main, this.prefix, this, this.counters.create(), this.now);
  }

  private scripted(): ScriptedRedis {
    return this.main as unknown as ScriptedRedis;
  }

  private banKey(key: string): string {
    return `${this.banTag}ban:${key}`;
  }

  private escalationKey(key: string): string {
    return `${this.banTag}banc:${key}`;
  }

  async ban(b: BanRequest): Promise<Ban> {
    if (!validBanKey(b.key)) throw new StoreInputError('ban_key_invalid');
    const req: BanRequest = { ...b, reason: cleanText(b.reason, 'unspecified'), rule: cleanText(b.rule, 'manual'), seconds: clampSeconds(b.seconds) };
    if (this.main.status === 'ready') {
      try {
        const ban = await this.banInRedis(req);
        this.pending.delete(ban.key);
        this.announce(ban);
        return ban;
      } catch (e) {
        this.countError();
        if (this.main.status === 'ready' && !isConnectionError(e)) throw new StoreUnavailableError('store_unavailable', e);
        // lost the connection mid-call, or the cluster node holding the bans is unreachable:
        // fall through to the local ban
      }
    }
    return this.banLocally(req);
  }

  private async banInRedis(req: BanRequest): Promise<Ban> {
    const esc = normaliseEscalation(req.escalate);
    const r = await this.scripted().sipedgeBan(
      this.banKey(req.key),
      this.escalationKey(req.key),
      this.idxKey,
      req.key,
      req.reason,
      req.rule,
      String(Math.floor(this.now())),
      String(req.seconds),
      String(esc?.factor ?? 1),
      String(esc?.maxSeconds ?? req.seconds),
      String(esc?.memorySeconds ?? 0),
      this.channel,
    );
    if (!Array.isArray(r) || r.length !== 3) throw new Error('unexpected ban script reply');
    const ban = parseBan(req.key, { reason: req.reason, rule: req.rule, since: r[0], until: r[1], count: r[2] });
    if (ban === null) throw new Error('unexpected ban script reply');
    return ban;
  }

  /** Redis down: enforce on this node now, write to Redis when it returns. The escalation count
   *  is unknown here (it lives in Redis): the first step (count 1) applies until the replay. */
  private banLocally(req: BanRequest): Ban {
    const existing = this.pending.get(req.key);
    if (existing === undefined && this.pending.size >= this.maxPending) throw new StoreUnavailableError('store_unavailable');
    const now = this.now();
    const seconds = banSeconds(req.seconds, 1, normaliseEscalation(req.escalate));
    const old = this.known.get(req.key);
    const active = old !== undefined && old.until > now;
    const ban: Ban = {
      key: req.key,
      reason: req.reason,
      rule: req.rule,
      since: active ? old.since : now,
      until: Math.max(now + seconds * 1000, active ? old.until : 0),
      count: active ? old.count : 1,
    };
    this.pending.set(req.key, { ban, req });
    this.announce(ban);
    // the connection is up but the write failed (a cluster slot, a timeout): no 'ready' will come
    // to trigger the replay, so retry it on a timer
    if (this.main.status === 'ready') this.scheduleReplay();
    return ban;
  }

  private scheduleReplay(): void {
    if (this.replayTimer !== null || this.closing) return;
    const delay = this.replayDelay;
    this.replayDelay = Math.min(30_000, this.replayDelay * 2);
    this.replayTimer = setTimeout(() => {
      this.replayTimer = null;
      if (this.pending.size > 0) this.scheduleResync();
    }, delay);
    this.replayTimer.unref();
  }

  private announce(ban: Ban): void {
    this.touchedWhileListing?.add(ban.key);
    const k = this.known.get(ban.key);
    if (k !== undefined && k.until === ban.until && k.count === ban.count && k.reason === ban.reason) return;
    this.known.set(ban.key, ban);
    this.events.emit({ kind: 'added', ban });
  }

  /** Tell the listeners a ban is gone. `force`: also when this node never announced it (it may
   *  know it only through listBans(), e.g. a ban cache loaded at start: an unban made here must
   *  reach that cache). */
  private retract(key: string, force = false): void {
    this.touchedWhileListing?.add(key);
    if (!this.known.delete(key) && !force) return;
    this.events.emit({ kind: 'removed', key });
  }

  async unban(key: string): Promise<boolean> {
    if (!validBanKey(key)) return false;
    const wasPending = this.pending.delete(key);
    if (this.main.status !== 'ready') {
      if (wasPending) {
        this.retract(key);
        return true;
      }
      this.countError();
      throw new StoreUnavailableError('store_unavailable');
    }
    try {
      const r = await this.scripted().sipedgeUnban(this.banKey(key), this.escalationKey(key), this.idxKey, key, this.channel, String(Math.floor(this.now())));
      const removed = Number(r) === 1 || wasPending;
      this.retract(key, removed);
      return removed;
    } catch (e) {
      this.countError();
      throw new StoreUnavailableError('store_unavailable', e);
    }
  }

  async listBans(): Promise<Ban[]> {
    if (this.main.status !== 'ready') {
      this.countError();
      throw new StoreUnavailableError('store_unavailable');
    }
    let bans: Ban[];
    try {
      bans = await this.listFromRedis();
    } catch (e) {
      this.countError();
      throw new StoreUnavailableError('store_unavailable', e);
    }
    // the caller (a ban cache loading at start) now holds these: remember them, so that a resync
    // after a missed announcement (a subscription that came up after this list, an unban
    // published meanwhile) retracts them too
    for (const b of bans) if (!this.known.has(b.key)) this.known.set(b.key, b);
    return bans;
  }

  private async listFromRedis(): Promise<Ban[]> {
    const now = Math.floor(this.now());
    await this.main.zremrangebyscore(this.idxKey, '-inf', String(now));
    const keys = await this.main.zrangebyscore(this.idxKey, `(${now}`, '+inf');
    const out: Ban[] = [];
    for (let i = 0; i < keys.length; i += LIST_CHUNK) {
      const chunk = keys.slice(i, i + LIST_CHUNK);
      // one pipeline per chunk: every key carries the {bans} tag, so on a cluster the whole
      // pipeline goes to the one node holding that slot
      const pipe = this.main.pipeline();
      for (const k of chunk) pipe.hgetall(this.banKey(k));
      const res = (await pipe.exec()) ?? [];
      res.forEach(([err, val], j) => {
        if (err !== null) return;
        const ban = parseBan(chunk[j], val as Record<string, unknown>);
        if (ban !== null && ban.until > now) out.push(ban);
      });
    }
    // bans still waiting for replay are in force here too
    for (const { ban } of this.pending.values()) if (ban.until > now && !out.some((b) => b.key === ban.key)) out.push(ban);
    return out;
  }

  async once(key: string, ttlSec: number): Promise<boolean> {
    const k = boundedKey(key);
    const ttl = windowMs(ttlSec);
    const local = this.onceTable.firstUse(k, ttl, this.now());
    if (this.main.status !== 'ready') {
      this.countError();
      return local;
    }
    try {
      const r = await this.main.set(`${this.prefix}once:${k}`, '1', 'PX', ttl, 'NX');
      // first use only if neither Redis nor this node has seen it (see the header)
      return r === 'OK' && local;
    } catch {
      this.countError();
      return local;
    }
  }

  async distinct(key: string, member: string, windowSec: number, cap: number): Promise<number> {
    const k = boundedKey(key);
    const m = boundedKey(member);
    const win = windowMs(windowSec);
    const c = distinctCap(cap);
    if (this.main.status === 'ready') {
      try {
        const r = Number(await this.scripted().sipedgeDistinct(`${this.prefix}dist:${k}`, m, String(win), String(c)));
        if (Number.isInteger(r) && r >= 1) return Math.min(r, c + 1);
        this.countError();
      } catch {
        this.countError();
      }
    } else {
      this.countError();
    }
    // Redis unreachable: this node's own count (it starts empty: an outage undercounts)
    return this.distinctTable.add(k, m, win, c, this.now());
  }

  announcePromotion(key: string, untilMs: number): void {
    try {
      const now = this.now();
      if (!validPromotion(key, untilMs, now)) return;
      // this instance first, synchronously, whatever Redis does
      this.promotions.emit({ key, until: untilMs });
      if (this.main.status !== 'ready') return; // missed by the others: acceptable (header)
      if (!this.promotionGate.pass(key, now)) return;
      const msg = JSON.stringify({ kind: 'promoted', key, until: Math.floor(untilMs), from: this.instanceId });
      this.main.publish(this.promoChannel, msg).catch(() => this.countError());
    } catch {
      this.countError();
    }
  }

  onPromotion(fn: (key: string, untilMs: number) => void): void {
    if (typeof fn === 'function') this.promotions.add((p) => fn(p.key, p.until));
  }

  private parseMessage(message: unknown): Record<string, unknown> | null {
    if (typeof message !== 'string' || message.length > MAX_MESSAGE_CHARS) return null;
    let m: unknown;
    try {
      m = JSON.parse(message);
    } catch {
      this.countError();
      return null;
    }
    return typeof m === 'object' && m !== null && !Array.isArray(m) ? (m as Record<string, unknown>) : null;
  }

  private onBanMessage(message: string): void {
    const o = this.parseMessage(message);
    if (o === null) return;
    if (o.kind === 'added' && typeof o.ban === 'object' && o.ban !== null) {
      const raw = o.ban as Record<string, unknown>;
      const ban = parseBan(raw.key, raw);
      if (ban !== null && ban.until > this.now()) {
        this.pending.delete(ban.key);
        this.announce(ban);
      }
    } else if (o.kind === 'removed' && validBanKey(o.key)) {
      this.pending.delete(o.key);
      this.retract(o.key);
    }
    this.sweepKnown();
  }

  /** Another instance's announcement: delivered when it has the shape we publish, else ignored
   *  (anyone who can PUBLISH on the Redis could send anything). */
  private onPromotionMessage(message: string): void {
    const o = this.parseMessage(message);
    if (o === null || o.kind !== 'promoted') return;
    if (typeof o.from !== 'string' || o.from.length > 64 || o.from === this.instanceId) return;
    if (!validPromotion(o.key, o.until, this.now())) return;
    this.promotions.emit({ key: o.key as string, until: o.until as number });
  }

  /** expired bans need no event (every cache checks `until`); just forget them, once a minute */
  private sweepKnown(): void {
    const now = this.now();
    if (now - this.lastKnownSweep < 60_000) return;
    this.lastKnownSweep = now;
    for (const [k, b] of this.known) if (b.until <= now && !this.pending.has(k)) this.known.delete(k);
  }

  private scheduleResync(): void {
    if (this.closing) return;
    if (this.resyncing) {
      this.resyncAgain = true;
      return;
    }
    this.resyncing = true;
    void this.resync().finally(() => {
      this.resyncing = false;
    });
  }

  /** After a reconnect: replay local bans, re-list everything, emit what changed meanwhile. */
  private async resync(): Promise<void> {
    let rounds = 0;
    do {
      this.resyncAgain = false;
      if (this.main.status !== 'ready' || this.closing) return; // the next 'ready' starts over
      try {
        for (const [key, { ban, req }] of [...this.pending]) {
          if (ban.until <= this.now()) {
            this.pending.delete(key);
            continue;
          }
          const stored = await this.banInRedis(req);
          this.pending.delete(key);
          this.announce(stored);
        }
        const touched = new Set<string>();
        this.touchedWhileListing = touched;
        let bans: Ban[];
        try {
          bans = await this.listFromRedis();
        } finally {
          this.touchedWhileListing = null;
        }
        const seen = new Set<string>(touched); // what happened meanwhile is newer than the list
        for (const b of bans) {
          if (touched.has(b.key)) continue; // (an unban then must not be undone by the list)
          seen.add(b.key);
          this.announce(b);
        }
        for (const k of [...this.known.keys()]) if (!seen.has(k) && !this.pending.has(k)) this.retract(k);
        this.replayDelay = REPLAY_RETRY_MS;
      } catch {
        this.countError();
        if (this.pending.size > 0) this.scheduleReplay();
        return;
      }
    } while (this.resyncAgain && ++rounds < 5);
  }

  onBanEvent(fn: (e: BanEvent) => void): void {
    this.events.add(fn);
  }

  healthy(): boolean {
    return this.main.status === 'ready';
  }

  onHealth(fn: (up: boolean) => void): void {
    this.health.add(fn);
  }

  /** bans applied locally while Redis was down and not yet written (diagnostics) */
  get pendingBans(): number {
    return this.pending.size;
  }

  /** expired per-process entries go; tables emptied after a flood are rebuilt small */
  sweep(): void {
    const now = this.now();
    this.counters.sweep(now);
    this.onceTable.sweep(now);
    this.distinctTable.sweep(now);
    this.promotionGate.sweep(now);
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.sweepTimer !== null) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    if (this.replayTimer !== null) clearTimeout(this.replayTimer);
    if (this.subWatch !== null) clearInterval(this.subWatch);
    this.replayTimer = null;
    this.subWatch = null;
    await Promise.all([quit(this.main), quit(this.sub)]);
    this.setUp(false);
  }
}

/**
 * Errors that mean "Redis did not take the write" rather than "Redis refused it": a timeout, a
 * closed or not-ready connection, a cluster slot without a reachable node, a failover in progress.
 * A ban that meets one is applied locally and replayed; any other error is a real refusal.
 */
function isConnectionError(e: unknown): boolean {
  if (!(e instanceof Error)) return false;
  return /timed out|Connection is closed|isn't ready|not ready|enableOfflineQueue|Too many Cluster redirections|None of startup nodes|Cluster is ended|^CLUSTERDOWN|^TRYAGAIN|^READONLY|^MASTERDOWN|^LOADING|ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|EHOSTUNREACH/.test(e.message);
}

/**
 * ioredis' Sentinel failover detector keeps its own connections to the sentinels and gives them no
 * 'error' listener, so a sentinel that is down makes ioredis print "Unhandled error event" to
 * stderr on every retry, outside our logs. Attach a listener to each (not public API: read
 * defensively; without it the only cost is that noise). Called on every 'ready' (a new detector
 * is made per connection).
 */
const quieted = new WeakSet<object>();
function quietSentinelHelpers(c: Conn): void {
  try {
    const detector = (c as unknown as { connector?: { failoverDetector?: { sentinels?: unknown } } }).connector?.failoverDetector;
    const list = detector?.sentinels;
    if (!Array.isArray(list)) return;
    for (const s of list) {
      const client = (s as { client?: { on?: unknown } } | null)?.client;
      if (client === undefined || client === null || typeof client.on !== 'function' || quieted.has(client)) continue;
      quieted.add(client);
      (client as { on(ev: string, fn: () => void): void }).on('error', () => undefined);
    }
  } catch {
    // internals changed: nothing to quiet
  }
}

/** QUIT when connected (flushes politely), then stop reconnecting and release what the
 *  connector holds (a Sentinel connector's helper connections are not released by QUIT alone).
 *  Never throws. */
async function quit(c: Conn): Promise<void> {
  if (c.status === 'end' && c instanceof Cluster) return;
  if (c.status === 'ready') {
    try {
      await c.quit();
      if (c instanceof Cluster) return;
    } catch {
      // fall through
    }
  }
  try {
    c.disconnect(false);
  } catch {
    // already gone
  }
}

interface Tuning {
  readonly commandTimeout: number;
  readonly connectTimeout: number;
  readonly retry: (times: number) => number;
}

function tuning(opts: RedisStoreOptions): Tuning {
  const reconnectMax = opts.reconnectMaxMs ?? 2000;
  return {
    commandTimeout: opts.commandTimeoutMs ?? 200,
    connectTimeout: opts.connectTimeoutMs ?? 1000,
    // forever, capped exponential backoff (a number keeps ioredis reconnecting; null would stop it)
    retry: (times: number) => Math.min(reconnectMax, 50 * Math.pow(2, Math.min(times, 16))),
  };
}

/** Options of one standalone or Sentinel connection (see the header for the why of each). */
function redisOptions(p: Extract<ParsedRedisUrl, { kind: 'standalone' | 'sentinel' }>, t: Tuning): RedisOptions {
  const common: RedisOptions = {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: t.commandTimeout,
    connectTimeout: t.connectTimeout,
    autoResubscribe: false,
    enableReadyCheck: true,
    retryStrategy: t.retry,
    db: p.db,
    ...(p.username !== undefined ? { username: p.username } : {}),
    ...(p.password !== undefined ? { password: p.password } : {}),
  };
  if (p.kind === 'standalone') {
    return { ...common, host: p.host, port: p.port, ...(p.tls ? { tls: {} } : {}) };
  }
  return {
    ...common,
    sentinels: p.sentinels.map((s) => ({ host: s.host, port: s.port })),
    name: p.name,
    role: 'master',
    ...(p.sentinelUsername !== undefined ? { sentinelUsername: p.sentinelUsername } : {}),
    ...(p.sentinelPassword !== undefined ? { sentinelPassword: p.sentinelPassword } : {}),
    ...(p.tls ? { tls: {}, sentinelTLS: {}, enableTLSForSentinelMode: true } : {}),
    // all sentinels unreachable: ask them again, forever, with the same capped backoff
    sentinelRetryStrategy: t.retry,
    sentinelCommandTimeout: t.commandTimeout,
    // Follow a failover at once: ioredis subscribes to +switch-master on the sentinels and drops
    // the connection when it is announced (the reconnect asks the sentinels for the new master).
    // Without it, after a failover with the old master still alive (a maintenance switch) both
    // connections would keep using the old master until the sentinels demote it, 10 s or more.
    failoverDetector: true,
    // Belt and braces: a write answered READONLY went to a demoted master; reconnect. That command
    // itself fails (no retry per request) and is answered like any failed command.
    reconnectOnError: (err: Error) => (/^READONLY/.test(err.message) ? 1 : false),
  };
}

/** Options of a Cluster client. */
function clusterOptions(p: Extract<ParsedRedisUrl, { kind: 'cluster' }>, t: Tuning): ClusterOptions {
  return {
    lazyConnect: true,
    enableOfflineQueue: false,
    enableReadyCheck: true,
    clusterRetryStrategy: t.retry,
    // bounded retries of a command on MOVED / a failed node / CLUSTERDOWN (see the header)
    maxRedirections: 3,
    retryDelayOnFailover: 100,
    retryDelayOnClusterDown: 100,
    retryDelayOnTryAgain: 100,
    slotsRefreshTimeout: t.connectTimeout,
    // TLS: keep host names (not resolved IPs) so the certificate is checked against the name
    ...(p.tls ? { dnsLookup: (address: string, cb: (err: null, address: string) => void) => cb(null, address) } : {}),
    redisOptions: {
      maxRetriesPerRequest: 0,
      commandTimeout: t.commandTimeout,
      connectTimeout: t.connectTimeout,
      autoResubscribe: false,
      enableReadyCheck: true,
      ...(p.username !== undefined ? { username: p.username } : {}),
      ...(p.password !== undefined ? { password: p.password } : {}),
      ...(p.tls ? { tls: {} } : {}),
    },
  };
}

function connection(p: ParsedRedisUrl, t: Tuning): Conn {
  if (p.kind === 'cluster') return new Cluster(p.nodes.map((n) => ({ host: n.host, port: n.port })), clusterOptions(p, t));
  return new Redis(redisOptions(p, t));
}

/** Settle within `ms`: true when `p` settled, false when the bound passed first. */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([p.then(() => true), bound]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Connect both connections (commands, and a subscriber: a connection in subscriber mode cannot run
 * commands) in the topology the URL names. Resolves once the first attempt has succeeded or failed,
 * or after a bounded wait (a Sentinel client keeps asking unreachable sentinels forever); on
 * failure the store starts unhealthy and keeps reconnecting, unless `requireReady` (then it rejects
 * with StoreUnavailableError after closing both). A URL parseRedisUrl refuses throws
 * StoreInputError('redis_url_invalid') at once.
 */
export async function createRedisStore(opts: RedisStoreOptions): Promise<SharedStore & { readonly topology: Topology }> {
  const parsed = parseRedisUrl(opts.url);
  if ('error' in parsed) throw new StoreInputError('redis_url_invalid', parsed.error);
  const prefix = opts.keyPrefix ?? 'sipedge:';
  const t = tuning(opts);
  const main = connection(parsed, t);
  const sub = connection(parsed, t);
  const store = new RedisStore(main, sub, prefix, parsed.kind, opts);
  const hosts = parsed.kind === 'standalone' ? 1 : parsed.kind === 'sentinel' ? parsed.sentinels.length : parsed.nodes.length;
  // every host tried once (connect + one command), then the master / the slots: generous bound
  const boundMs = (hosts + 2) * (t.connectTimeout + t.commandTimeout);
  const attempts = Promise.allSettled([main.connect(), sub.connect()]);
  const settled = await settlesWithin(attempts, boundMs);
  const results = settled ? await attempts : null;
  const failed = results === null ? { reason: new Error(`not connected within ${boundMs} ms`) } : results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed !== undefined && opts.requireReady === true) {
    await store.close();
    throw new StoreUnavailableError('store_unavailable', failed.reason);
  }
  if (failed !== undefined) store.countError();
  store.markStarted();
  return store;
}

/** One more command connection in the topology the URL names, with the store's tuning (the call
 *  admission leases and fraud locks, edge/dialogs/leases.ts, edge/policy/cac/fraud.ts); lazily
 *  connected on its first command. */
export function createRedisConnection(url: string): Conn {
  const parsed = parseRedisUrl(url);
  if ('error' in parsed) throw new StoreInputError('redis_url_invalid', parsed.error);
  return connection(parsed, tuning({ url }));
}
