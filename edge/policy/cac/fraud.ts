// Fraud signals per user, modelled on OpenSIPS fraud_detection (issue 16): calls per minute,
// concurrent calls, sequential calls to the same class, distinct destinations per hour and call
// minutes per day, each with a warning (a security log event) and a critical threshold (the
// user is locked for the class until an operator unlocks it). Locks are shared across instances
// (Redis hash); the per-user windows are per instance (bounded: at most `maxUsers` users, the
// least recently seen dropped first), and concurrency comes from the shared dialog leases.
// Emergency calls are never evaluated and never locked.
import type { Redis, Cluster } from 'ioredis';
import type { DestClass, FraudProfile, FraudRules, FraudSignal } from './rules';

export interface FraudLock { readonly user: string; readonly cls: DestClass; readonly signal: FraudSignal; readonly since: number }

export interface LockStore {
  isLocked(user: string, cls: DestClass): Promise<boolean>;
  lock(l: FraudLock): Promise<void>;
  /** cls undefined: every class of the user. Returns how many locks were removed */
  unlock(user: string, cls?: DestClass): Promise<number>;
  list(): Promise<FraudLock[]>;
}

export class MemoryLocks implements LockStore {
  private readonly m = new Map<string, FraudLock>();
  async isLocked(user: string, cls: DestClass): Promise<boolean> { return this.m.has(`${user}|${cls}`); }
  async lock(l: FraudLock): Promise<void> { if (!this.m.has(`${l.user}|${l.cls}`)) this.m.set(`${l.user}|${l.cls}`, l); }
  async unlock(user: string, cls?: DestClass): Promise<number> {
    let n = 0;
    for (const [k, l] of this.m) if (l.user === user && (cls === undefined || l.cls === cls)) { this.m.delete(k); n++; }
    return n;
  }
  async list(): Promise<FraudLock[]> { return [...this.m.values()]; }
}

export class RedisLocks implements LockStore {
  private readonly LOCKS: string;
  constructor(private readonly redis: Redis | Cluster, prefix = 'sipedge:') { this.LOCKS = `${prefix}fraud:{cac}:locks`; }
  async isLocked(user: string, cls: DestClass): Promise<boolean> { return (await this.redis.hexists(this.LOCKS, `${user}|${cls}`)) === 1; }
  async lock(l: FraudLock): Promise<void> { await this.redis.hsetnx(this.LOCKS, `${l.user}|${l.cls}`, JSON.stringify(l)); }
  async unlock(user: string, cls?: DestClass): Promise<number> {
    const fields = cls !== undefined ? [`${user}|${cls}`] : (await this.list()).filter((l) => l.user === user).map((l) => `${l.user}|${l.cls}`);
    return fields.length === 0 ? 0 : this.redis.hdel(this.LOCKS, ...fields);
  }
  async list(): Promise<FraudLock[]> {
    const all = await this.redis.hgetall(this.LOCKS);
    const out: FraudLock[] = [];
    for (const v of Object.values(all)) { try { out.push(JSON.parse(v) as FraudLock); } catch { /* a foreign value: skip */ } }
    return out;
  }
}

interface UserState {
  starts: number[];           // call start times, last minute
  lastClass?: DestClass;
  sequential: number;
  distinct: Map<string, number>; // destination -> last seen (last hour)
  dayStart: number;
  minutes: number;
}

export interface FraudFinding { readonly signal: FraudSignal; readonly level: 'warning' | 'critical'; readonly value: number; readonly threshold: number }

const MIN = 60_000, HOUR = 3_600_000, DAY = 86_400_000;
const MAX_DISTINCT = 1024;

export class FraudSignals {
  private readonly users = new Map<string, UserState>();
  constructor(private readonly rules: () => FraudRules, private readonly now: () => number, private readonly maxUsers = 50_000) {}

  private state(user: string, now: number): UserState {
    let s = this.users.get(user);
    if (s) { this.users.delete(user); this.users.set(user, s); } // LRU order
    else {
      s = { starts: [], sequential: 0, distinct: new Map(), dayStart: now, minutes: 0 };
      this.users.set(user, s);
      if (this.users.size > this.maxUsers) this.users.delete(this.users.keys().next().value!);
    }
    if (now - s.dayStart >= DAY) { s.dayStart = now; s.minutes = 0; }
    return s;
  }

  /** an operator unlocked the user: its windows start afresh (on this instance), else the next
   *  call within the minute would cross the same threshold again */
  reset(user: string): void { this.users.delete(user); }

  /**
   * A new call attempt of `user` to `number` of class `cls`, with `concurrent` calls of that user
   * and class already up. Records it and returns the thresholds crossed (the worst first).
   */
  attempt(user: string, cls: DestClass, number: string, concurrent: number): FraudFinding[] {
    if (cls === 'emergency') return [];
    const now = this.now();
    const s = this.state(user, now);
    s.starts = s.starts.filter((t) => now - t < MIN);
    s.starts.push(now);
    s.sequential = s.lastClass === cls ? s.sequential + 1 : 1;
    s.lastClass = cls;
    for (const [n, t] of s.distinct) if (now - t >= HOUR) s.distinct.delete(n);
    if (number !== '' && (s.distinct.has(number) || s.distinct.size < MAX_DISTINCT)) s.distinct.set(number, now);
    const p = (this.rules().classes as Partial<Record<DestClass, FraudProfile>>)[cls];
    if (!p) return [];
    const out: FraudFinding[] = [];
    check(out, 'calls_per_minute', s.starts.length, p.callsPerMinute);
    check(out, 'concurrent', concurrent + 1, p.concurrent);
    check(out, 'sequential', s.sequential, p.sequential);
    check(out, 'distinct_per_hour', s.distinct.size, p.distinctPerHour);
    check(out, 'minutes_per_day', s.minutes, p.minutesPerDay);
    return out.sort((a, b) => (a.level === b.level ? 0 : a.level === 'critical' ? -1 : 1));
  }

  /** a confirmed call of the user ended after `seconds` */
  ended(user: string, seconds: number): void {
    const s = this.users.get(user);
    if (s) s.minutes += seconds / 60;
  }
}

function check(out: FraudFinding[], signal: FraudSignal, value: number, t: FraudProfile['callsPerMinute']): void {
  if (!t) return;
  if (value > t.critical) out.push({ signal, level: 'critical', value, threshold: t.critical });
  else if (value > t.warning) out.push({ signal, level: 'warning', value, threshold: t.warning });
}
