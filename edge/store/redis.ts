// SharedStore over Redis (ioredis 5): rate limits and bans shared by every edge of a cluster.
//
// Failure model. Redis is a dependency the edge must survive losing:
// - every command is bounded: no offline queue (a command while disconnected fails at once),
//   `commandTimeout` for a server that accepts but does not answer, at most one retry;
// - the connection reconnects forever in the background with capped backoff, so the edge heals by
//   itself when Redis returns; healthy()/onHealth() report the state (sipedge_redis_up, /readyz);
// - limiters answer from a per-process RateLimiterMemory "insurance" limiter while Redis fails
//   (rate-limiter-flexible's insuranceLimiter, with rejectIfRedisNotReady so a down Redis costs no
//   timeout), flagged `degraded`; with onStoreDown 'closed' a degraded answer refuses;
// - bans requested while Redis is down are applied on this node at once (a local 'added' event,
//   so the scanner in front of us is stopped now) and written to Redis when it returns; unban and
//   listBans need Redis and reject with StoreUnavailableError (an admin action, retried by a human);
// - pub/sub is fire-and-forget: a node that was disconnected (or restarted, or partitioned) has
//   missed announcements, so after every reconnect it re-lists all bans and emits the differences
//   (Kamailio's htable replication (dmq) has no such resync; fail2ban has no cluster at all).
//
// Data layout (prefix default "sipedge:"):
//   <p>rl:<limiter>:<key>  rate-limiter-flexible counter (string, EX = window)
//   <p>ban:<key>           hash reason, rule, since, until, count; PEXPIREAT until
//   <p>banc:<key>          escalation counter (INCR), EXPIRE memorySeconds
//   <p>bans:idx            zset member=key score=until, for listBans (expired members trimmed)
//   <p>bans                pub/sub channel: JSON {"kind":"added","ban":{...}} | {"kind":"removed","key":"..."}
// Ban and unban are one Lua script each (atomic: escalation count, hash, index and announcement
// cannot diverge). Keys of one ban live in different hash slots: single Redis or Sentinel only,
// not Redis Cluster.
import Redis, { type RedisOptions } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import {
  Listeners,
  StoreInputError,
  banSeconds,
  cleanText,
  clampSeconds,
  normaliseEscalation,
  normalisePoints,
  normaliseSpec,
  toConsumeResult,
  validBanKey,
  type BanRequest,
} from './memory';
import type { Ban, BanEvent, ConsumeResult, Limiter, LimiterSpec, SharedStore } from './types';

export interface RedisStoreOptions {
  /** redis://[user:pass@]host:port[/db] */
  readonly url: string;
  /** prefix of every key and of the channel; default 'sipedge:' */
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
  /** clock for bans, epoch ms (default Date.now); Redis expiry uses the server clock, so the
   *  nodes' clocks must agree (NTP) */
  readonly now?: () => number;
  /** cap on bans held locally while Redis is down, awaiting replay (default 10000) */
  readonly maxPendingBans?: number;
}

/** Redis is down (or did not answer in time) and the call cannot be answered locally. */
export class StoreUnavailableError extends Error {
  constructor(readonly code: 'store_unavailable', override readonly cause?: unknown) {
    super('store_unavailable');
    this.name = 'StoreUnavailableError';
  }
}

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

interface ScriptedRedis {
  sipedgeBan(k1: string, k2: string, k3: string, ...args: string[]): Promise<unknown>;
  sipedgeUnban(k1: string, k2: string, k3: string, ...args: string[]): Promise<unknown>;
}

/** Results that the insurance limiter produced, i.e. Redis did not answer. */
const fromInsurance = new WeakSet<object>();

/** RateLimiterMemory that marks its answers, so that a degraded answer can be told apart. */
class InsuranceLimiter extends RateLimiterMemory {
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

  constructor(readonly spec: LimiterSpec, client: Redis, prefix: string, private readonly store: RedisStore) {
    const { points, duration } = normaliseSpec(spec);
    this.insurance = new InsuranceLimiter({ points, duration, keyPrefix: `${prefix}rl:${spec.name}` });
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

class RedisStore implements SharedStore {
  readonly kind = 'redis' as const;
  private errorCount = 0;
  private up = false;
  private started = false;
  private closing = false;
  private readonly events = new Listeners<BanEvent>();
  private readonly health = new Listeners<boolean>();
  /** bans this node has announced to its listeners (key -> ban), to turn a re-list into events */
  private readonly known = new Map<string, Ban>();
  /** bans applied locally while Redis was down, replayed on reconnect */
  private readonly pending = new Map<string, { ban: Ban; req: BanRequest }>();
  private resyncing = false;
  private resyncAgain = false;
  private lastKnownSweep = 0;
  private readonly now: () => number;
  private readonly channel: string;
  private readonly idxKey: string;
  private readonly maxPending: number;

  constructor(readonly main: Redis, readonly sub: Redis, private readonly prefix: string, opts: RedisStoreOptions) {
    this.now = opts.now ?? Date.now;
    this.channel = `${prefix}bans`;
    this.idxKey = `${prefix}bans:idx`;
    this.maxPending = opts.maxPendingBans ?? 10_000;
    main.defineCommand('sipedgeBan', { numberOfKeys: 3, lua: BAN_SCRIPT });
    main.defineCommand('sipedgeUnban', { numberOfKeys: 3, lua: UNBAN_SCRIPT });

    // ioredis emits 'error' for every failed (re)connect; without a listener it prints
    // "Unhandled error event". The state itself is read from the status events below.
    main.on('error', () => undefined);
    sub.on('error', () => undefined);
    main.on('ready', () => {
      this.setUp(true);
      if (this.started) this.scheduleResync();
    });
    for (const ev of ['close', 'end', 'reconnecting'] as const) main.on(ev, () => this.setUp(false));
    sub.on('ready', () => {
      // (re)subscribe ourselves on every ready (autoResubscribe is off: one code path)
      sub.subscribe(this.channel).then(
        () => {
          if (this.started) this.scheduleResync();
        },
        () => this.countError(),
      );
    });
    sub.on('message', (channel: string, message: string) => {
      if (channel === this.channel) this.onMessage(message);
    });
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
    return new RedisLimiter(spec, this.main, this.prefix, this);
  }

  private scripted(): ScriptedRedis {
    return this.main as unknown as ScriptedRedis;
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
        if (this.main.status === 'ready' && !isTimeout(e)) throw new StoreUnavailableError('store_unavailable', e);
        // lost the connection mid-call: fall through to the local ban
      }
    }
    return this.banLocally(req);
  }

  private async banInRedis(req: BanRequest): Promise<Ban> {
    const esc = normaliseEscalation(req.escalate);
    const p = this.prefix;
    const r = await this.scripted().sipedgeBan(
      `${p}ban:${req.key}`,
      `${p}banc:${req.key}`,
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
    return ban;
  }

  private announce(ban: Ban): void {
    const k = this.known.get(ban.key);
    if (k !== undefined && k.until === ban.until && k.count === ban.count && k.reason === ban.reason) return;
    this.known.set(ban.key, ban);
    this.events.emit({ kind: 'added', ban });
  }

  private retract(key: string): void {
    if (!this.known.delete(key)) return;
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
      const p = this.prefix;
      const r = await this.scripted().sipedgeUnban(`${p}ban:${key}`, `${p}banc:${key}`, this.idxKey, key, this.channel, String(Math.floor(this.now())));
      this.retract(key);
      return Number(r) === 1 || wasPending;
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
    try {
      return await this.listFromRedis();
    } catch (e) {
      this.countError();
      throw new StoreUnavailableError('store_unavailable', e);
    }
  }

  private async listFromRedis(): Promise<Ban[]> {
    const now = Math.floor(this.now());
    await this.main.zremrangebyscore(this.idxKey, '-inf', String(now));
    const keys = await this.main.zrangebyscore(this.idxKey, `(${now}`, '+inf');
    const out: Ban[] = [];
    for (let i = 0; i < keys.length; i += LIST_CHUNK) {
      const chunk = keys.slice(i, i + LIST_CHUNK);
      const pipe = this.main.pipeline();
      for (const k of chunk) pipe.hgetall(`${this.prefix}ban:${k}`);
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

  private onMessage(message: string): void {
    if (typeof message !== 'string' || message.length > 4096) return;
    let m: unknown;
    try {
      m = JSON.parse(message);
    } catch {
      this.countError();
      return;
    }
    if (typeof m !== 'object' || m === null) return;
    const o = m as Record<string, unknown>;
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
        const bans = await this.listFromRedis();
        const seen = new Set<string>();
        for (const b of bans) {
          seen.add(b.key);
          this.announce(b);
        }
        for (const k of [...this.known.keys()]) if (!seen.has(k) && !this.pending.has(k)) this.retract(k);
      } catch {
        this.countError();
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

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all([quit(this.main), quit(this.sub)]);
    this.setUp(false);
  }
}

function isTimeout(e: unknown): boolean {
  return e instanceof Error && /timed out/i.test(e.message);
}

/** QUIT when connected (flushes politely), otherwise stop reconnecting at once. Never throws. */
async function quit(c: Redis): Promise<void> {
  if (c.status === 'end') return;
  if (c.status === 'ready') {
    try {
      await c.quit();
      return;
    } catch {
      // fall through
    }
  }
  c.disconnect(false);
}

/** Redis options shared by both connections (see the header for the why of each). */
function redisOptions(opts: RedisStoreOptions): RedisOptions {
  const reconnectMax = opts.reconnectMaxMs ?? 2000;
  return {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: opts.commandTimeoutMs ?? 200,
    connectTimeout: opts.connectTimeoutMs ?? 1000,
    autoResubscribe: false,
    enableReadyCheck: true,
    // forever, capped exponential backoff (a number keeps ioredis reconnecting; null would stop it)
    retryStrategy: (times: number) => Math.min(reconnectMax, 50 * Math.pow(2, Math.min(times, 16))),
  };
}

/**
 * Connect both connections (commands, and a subscriber: a connection in subscriber mode cannot run
 * commands). Resolves once the first attempt has succeeded or failed; on failure the store starts
 * unhealthy and keeps reconnecting, unless `requireReady` (then it rejects with
 * StoreUnavailableError after closing both).
 */
export async function createRedisStore(opts: RedisStoreOptions): Promise<SharedStore> {
  const prefix = opts.keyPrefix ?? 'sipedge:';
  const o = redisOptions(opts);
  const main = new Redis(opts.url, o);
  const sub = new Redis(opts.url, o);
  const store = new RedisStore(main, sub, prefix, opts);
  const results = await Promise.allSettled([main.connect(), sub.connect()]);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed !== undefined && opts.requireReady === true) {
    await store.close();
    throw new StoreUnavailableError('store_unavailable', (failed as PromiseRejectedResult).reason);
  }
  if (failed !== undefined) store.countError();
  store.markStarted();
  return store;
}
