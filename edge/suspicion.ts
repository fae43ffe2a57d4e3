// Suspicion budget, ban escalation and trust promotion.
//
// Every stage that sees something hostile (a malformed message, a scanner signature, a forged
// reply, a failed or missing authentication, an unknown user, extension probing) records a
// weighted event against the SOURCE (the transport address, never a header: Via, Contact and
// friends are written by the sender). The weights are spent from the source's suspicion limiter
// in the shared store, so a cluster sees one budget per source; when it is exhausted the source
// is banned through store.ban(), which escalates repeat offenders (600 -> 1200 -> 2400 s ... capped,
// rules/limits.yaml `bans`). This is the fail2ban model (maxretry / findtime / bantime with
// bantime.increment) done in-line instead of by tailing logs.
//
// Promotion is the other direction: a source that authenticated successfully is a real phone or
// PBX. Its `all` budget is multiplied (the ratelimit stage asks isPromoted()) and its suspicion
// budget starts from full, so that an office whose 500 phones re-register at once after an outage
// (one NAT address, a burst of 401 challenges = missing_auth events) is not banned once they
// authenticate. A promotion is announced to every instance through the store (pub/sub; an
// instance that was disconnected misses it and the phone is promoted there at its next success:
// promotion is an optimisation, bans are the safety mechanism). The table is in memory, bounded: a Map used as an LRU
// (insertion order; a renewal moves the entry to the end), capped at `promotion.maxEntries`,
// oldest evicted first, entries expire after `promotion.seconds`. Eviction walks ONE persistent
// iterator over the Map instead of asking `keys().next()` each time: a fresh iterator has to skip
// every deleted slot at the front of V8's table again, which made a full table quadratic (50 s
// for a million promotions); the persistent one passes each slot once (ECMAScript 24.1.5.1:
// Map iterators are live, skip deleted entries and see entries added before they finish).
// IPv4 sources are keyed by their 32-bit number (no string per entry), IPv6 by the prefix text.
//
// Bans made or lifted anywhere in the cluster reach every instance (store.onBanEvent, pub/sub):
// - a ban stands: a grace waiter this instance holds for the same source stands down. The offence
//   it waits on is the one just punished; without this every instance whose waiter saw the shared
//   budget run out banned again (escalating the count: 600 s became 1200 s);
// - a ban is lifted (`sip-edge bans remove`, the admin listener's DELETE /bans): the operator
//   forgives the source. Its pending grace ban is cancelled and its suspicion budget starts from
//   full (the shared counter and this instance's insurance counter), so it is banned again only
//   for new offences. Seen before: the waiter of the other instance banned again a second after
//   the unban, for the old offence. A CIDR unban cancels the waiters inside it and resets their
//   budgets (other addresses inside it cannot be listed cheaply; their counters run out by
//   themselves within `source.suspicion.seconds`).
//
// IPv6 sources are keyed by their prefix (limits.yaml ipv6Prefix, default /64; RFC 6177): one
// subscriber holds a whole /64 and would otherwise dodge budgets and bans by switching addresses.
//
// Total: record() never throws or rejects (a store failure means "no ban this time", counted by
// the store's error counter); promote() and isPromoted() are synchronous and O(1).
import type { Clock } from './clock';
import { bytesToIp, canonicalAddress, ipToBytes, maskBytes } from './net/address';
import { CidrSet } from './net/cidr';
import type { Ban, BanEvent, Limiter, LimiterSpec, SharedStore } from './store/types';
import type { RulesSnapshot, SuspicionEvent } from './policy/snapshot';
import { LIMIT_RULES, SUSPICION_EVENTS } from './policy/limits/compile';

export type { SuspicionEvent } from './policy/snapshot';
export { SUSPICION_EVENTS } from './policy/limits/compile';

/** Closed list of ban reasons this module writes: "suspicion_<event that exhausted the budget>". */
export const SUSPICION_BAN_REASONS: readonly string[] = Object.freeze(SUSPICION_EVENTS.map((e) => `suspicion_${e}`));

/** Sources whose last ban event is remembered (edge/suspicion.ts lastBanEvent). */
const MAX_BAN_EVENT_KEYS = 10_000;

/** Hard ceiling on the promotion table whatever limits.yaml says (about 100 bytes an entry). */
export const MAX_PROMOTED_CAP = 10_000_000;

/**
 * One Limiter per distinct spec, shared by the ratelimit stage and Suspicion. Keyed by the spec's
 * content, not its object, so that a rules reload that leaves a limit unchanged keeps counting
 * in the same limiter (a reload must not hand every source a fresh budget). Bounded: a long run
 * of reloads with ever-changing prefix limits cannot grow it past MAX_LIMITERS.
 */
export class LimiterCache {
  static readonly MAX_LIMITERS = 4096;
  private readonly map = new Map<string, Limiter>();
  /** fast path: the very spec object seen before (specs are frozen per snapshot) */
  private readonly bySpec = new WeakMap<LimiterSpec, Limiter>();
  constructor(readonly store: SharedStore) {}

  get(spec: LimiterSpec): Limiter {
    const known = this.bySpec.get(spec);
    if (known !== undefined) return known;
    const id = `${spec.name}\0${spec.points}\0${spec.durationSec}\0${spec.onStoreDown}`;
    let l = this.map.get(id);
    if (l === undefined) {
      l = this.store.limiter(spec);
      if (this.map.size >= LimiterCache.MAX_LIMITERS) {
        const oldest = this.map.keys().next().value;
        if (oldest !== undefined) this.map.delete(oldest);
      }
      this.map.set(id, l);
    }
    this.bySpec.set(spec, l);
    return l;
  }
}

export interface SuspicionOptions {
  readonly store: SharedStore;
  readonly rules: () => RulesSnapshot;
  /** epoch milliseconds (default Date.now): promotion expiry */
  readonly now?: () => number;
  /** called once for every ban this instance creates (log, metrics) */
  readonly onBan?: (ban: Ban) => void;
  /** overrides limits.yaml promotion.maxEntries (tests) */
  readonly maxPromoted?: number;
  /** share limiters with the ratelimit stage (optional; one is made otherwise) */
  readonly limiters?: LimiterCache;
  /** how long a ban caused by a soft event waits for the source to authenticate (default 3000) */
  readonly softGraceMs?: number;
  /** runs the grace timer (tests inject a ManualClock, edge/clock.ts); default a plain unref'd
   *  timeout: exact to the millisecond, where the system clock's wheel may fire a slot late */
  readonly clock?: Pick<Clock, 'setTimer'>;
}

/**
 * Events a legitimate crowd produces before any of it has authenticated: the first request of
 * every phone is unauthenticated (missing_auth), 500 phones behind one NAT are 500 distinct users
 * (enumeration) and their re-registration burst goes over the source budget (flood). When one of
 * these exhausts the budget, the ban waits `softGraceMs` and is dropped if the source has been
 * promoted meanwhile: the office's first phone answers its challenge within a round trip, a
 * scanner never does. Malformed messages, scanner signatures, forged replies and wrong passwords
 * are never soft.
 */
export const SOFT_EVENTS: ReadonlySet<SuspicionEvent> = new Set<SuspicionEvent>(['missing_auth', 'enumeration', 'flood']);

export class Suspicion {
  private readonly store: SharedStore;
  private readonly rules: () => RulesSnapshot;
  private readonly now: () => number;
  private readonly onBan: ((ban: Ban) => void) | undefined;
  private readonly maxPromotedOverride: number | undefined;
  readonly limiters: LimiterCache;
  /** source (IPv4 as a 32-bit number, IPv6 prefix as text) -> expiry in whole epoch seconds
   *  (a small integer: no boxed double per entry) */
  private readonly promoted = new Map<number | string, number>();
  /** the eviction cursor: see the header comment */
  private evictor: Iterator<number | string> | null = null;
  /** sources with a ban in flight: concurrent over-budget events make one ban, not several */
  private readonly banning = new Set<string>();
  /** sources whose soft ban waits its grace; a hard event meanwhile bans at once (cancel) */
  private readonly graced = new Map<string, { cancelled: boolean }>();
  private readonly softGraceMs: number;
  private readonly clock: Pick<Clock, 'setTimer'> | undefined;
  /** ban events seen, numbered; and per source key the number of the last one that named it.
   *  An event whose spend() started before a ban or unban of its source belongs to the offence
   *  that ban punished or that unban forgave: it stands down (its store round trip or grace may
   *  outlast the ban event). Bounded: the oldest entries go first, long after any spend ended. */
  private banEvents = 0;
  private readonly lastBanEvent = new Map<string, number>();

  constructor(opts: SuspicionOptions) {
    this.softGraceMs = Math.max(0, opts.softGraceMs ?? 3000);
    this.clock = opts.clock;
    this.store = opts.store;
    this.rules = opts.rules;
    this.now = opts.now ?? Date.now;
    this.onBan = opts.onBan;
    this.maxPromotedOverride = opts.maxPromoted;
    this.limiters = opts.limiters ?? new LimiterCache(opts.store);
    // promotions made by any instance of the cluster (and by this one, looped back)
    opts.store.onPromotion((key, untilMs) => this.applyPromotion(key, untilMs));
    // bans made and lifted by any instance (and by this one, and by the CLI): see the header
    opts.store.onBanEvent((e) => this.onBanEvent(e));
  }

  private onBanEvent(e: BanEvent): void {
    try {
      const key = e.kind === 'added' ? e.ban.key : e.key;
      this.noteBanEvent(key);
      if (e.kind === 'added') {
        for (const k of this.gracedWithin(key)) this.graced.get(k)!.cancelled = true;
      } else if (e.kind === 'removed') {
        this.forgive(key);
      }
    } catch {
      // a malformed event (the store validates them): nothing to do
    }
  }

  /**
   * The operator lifted the ban on `banKey` (an address, an IPv6 prefix or a CIDR): cancel the
   * pending grace bans of the sources it covers and reset their suspicion budgets. Called for
   * every unban seen anywhere in the cluster; idempotent. Returns the source keys reset.
   */
  forgive(banKey: string): string[] {
    const keys = new Set(this.gracedWithin(banKey));
    for (const k of keys) this.graced.get(k)!.cancelled = true;
    // an address or the ban of one source's prefix: exactly that source's budget
    const exact = this.exactSourceKey(banKey);
    if (exact !== null) keys.add(exact);
    const limiter = this.limiters.get(this.rules().limits.suspicion);
    for (const k of keys) limiter.reset(k).catch(() => undefined);
    return [...keys];
  }

  private noteBanEvent(banKey: string): void {
    const k = this.exactSourceKey(banKey);
    if (k === null) return;
    this.lastBanEvent.delete(k);
    this.lastBanEvent.set(k, ++this.banEvents);
    if (this.lastBanEvent.size > MAX_BAN_EVENT_KEYS) {
      const oldest = this.lastBanEvent.keys().next().value;
      if (oldest !== undefined) this.lastBanEvent.delete(oldest);
    }
  }

  /** has a ban or unban named this source since event number `since`? */
  private banEventSince(key: string, since: number): boolean {
    return (this.lastBanEvent.get(key) ?? 0) > since;
  }

  /** the source key a ban key names when it names one source (an address, or exactly the
   *  configured IPv6 prefix); null for a wider CIDR or no address at all */
  private exactSourceKey(banKey: string): string | null {
    if (typeof banKey !== 'string') return null;
    const slash = banKey.indexOf('/');
    if (slash < 0) return ipToBytes(banKey) === null ? null : this.sourceKey(banKey);
    const bits = Number(banKey.slice(slash + 1));
    const b = ipToBytes(banKey.slice(0, slash));
    if (b === null || !Number.isInteger(bits)) return null;
    if (b.length === 4) return bits === 32 ? bytesToIp(b) : null;
    return bits === this.rules().limits.ipv6Prefix || bits === 128 ? this.sourceKey(bytesToIp(b)) : null;
  }

  /** the keys of this instance's grace waiters that a ban key covers (few: one per source whose
   *  soft ban is pending) */
  private gracedWithin(banKey: string): string[] {
    if (this.graced.size === 0 || typeof banKey !== 'string') return [];
    if (this.graced.has(banKey)) return [banKey];
    const set = new CidrSet();
    if (set.add(banKey) !== null) return [];
    const out: string[] = [];
    for (const k of this.graced.keys()) {
      const slash = k.indexOf('/');
      if (set.has(slash < 0 ? k : k.slice(0, slash))) out.push(k);
    }
    return out;
  }

  /** The key budgets, bans and promotions use for a source: canonical IPv4, IPv6 by prefix. */
  sourceKey(address: string): string {
    const k = this.keysOf(address, this.rules().limits.ipv6Prefix);
    return k !== null ? k.skey : canonicalAddress(address);
  }

  /**
   * Spends the event's weight from the source's suspicion budget. When the budget is exhausted
   * the source is banned (escalating, limits.yaml `bans`), its budget starts again from full
   * (the ban now does the work; after it the source gets a fresh budget and a longer next ban)
   * and any promotion is withdrawn. Returns the ban, or null. Never rejects.
   */
  async record(sourceAddress: string, event: SuspicionEvent, rule?: string): Promise<Ban | null> {
    try {
      return await this.spend(sourceAddress, event, rule);
    } catch {
      return null; // a bug or a throwing store: no ban, never a rejection into a stage
    }
  }

  private async spend(sourceAddress: string, event: SuspicionEvent, rule: string | undefined): Promise<Ban | null> {
    const limits = this.rules().limits;
    const weight = limits.weights[event];
    if (typeof weight !== 'number' || weight <= 0) return null; // unknown event or weight 0
    const key = this.sourceKey(sourceAddress);
    if (this.banning.has(key)) return null;
    const started = this.banEvents;
    const limiter = this.limiters.get(limits.suspicion);
    let allowed: boolean;
    try {
      // A degraded answer (Redis down) comes from the per-process insurance limiter: still a
      // budget, only per instance. onStoreDown does not apply here: a store outage must never
      // turn into bans, and closing would mean banning on every event.
      allowed = (await limiter.consume(key, weight)).allowed;
    } catch {
      return null;
    }
    if (allowed || this.banning.has(key) || this.banEventSince(key, started)) return null;
    if (SOFT_EVENTS.has(event) && this.softGraceMs > 0) {
      if (this.graced.has(key)) return null; // one waiter per source
      const wait = { cancelled: false };
      this.graced.set(key, wait);
      try {
        // unref'd: a grace never holds a stopping process up
        const clock = this.clock;
        await new Promise<void>((r) => { if (clock) clock.setTimer(this.softGraceMs, r); else setTimeout(r, this.softGraceMs).unref(); });
      } finally {
        this.graced.delete(key);
      }
      // it authenticated (a crowd, not a scanner), or a hard event banned it meanwhile
      if (wait.cancelled || this.isPromoted(sourceAddress) || this.banning.has(key) || this.banEventSince(key, started)) return null;
    } else {
      // a wrong password (or any hard event) during the grace is not forgiven by a later success:
      // ban now; the waiting soft ban stands down
      const w = this.graced.get(key);
      if (w !== undefined) w.cancelled = true;
    }
    this.banning.add(key);
    try {
      const b = limits.bans;
      const ban = await this.store.ban({
        key,
        reason: `suspicion_${event}`,
        rule: rule ?? LIMIT_RULES.suspicion,
        seconds: b.seconds,
        escalate: { factor: b.factor, maxSeconds: b.maxSeconds, memorySeconds: b.memorySeconds },
      });
      this.demote(sourceAddress);
      await limiter.reset(key).catch(() => undefined);
      try { this.onBan?.(ban); } catch { /* a logging hook must not undo a ban */ }
      return ban;
    } catch {
      return null; // store unreachable: no ban now; the budget stays exhausted, the next event retries
    } finally {
      this.banning.delete(key);
    }
  }

  /**
   * After a successful authentication: the source's `all` budget is multiplied for
   * promotion.seconds (renewed by each call) and its suspicion budget starts from full.
   */
  promote(sourceAddress: string): void {
    const limits = this.rules().limits;
    const k = this.keysOf(sourceAddress, limits.ipv6Prefix);
    if (k === null) return; // not an IP address: nothing to promote
    const pkey = k.pkey;
    const until = Math.ceil((this.now() + limits.promotion.seconds * 1000) / 1000);
    this.setPromoted(pkey, until);
    // every other instance learns it too (pub/sub; the store rate-limits repeats per key)
    try { this.store.announcePromotion(k.skey, until * 1000); } catch { /* best effort */ }
    // fire and forget: promotion must not wait for the store; a failure only means the old
    // suspicion count lingers until its window ends
    try {
      this.limiters.get(limits.suspicion).reset(k.skey).catch(() => undefined);
    } catch { /* store without a limiter: nothing to reset */ }
  }

  private setPromoted(pkey: number | string, until: number): void {
    this.promoted.delete(pkey); // re-insert at the end: Map order is the LRU order
    this.promoted.set(pkey, until);
    const cap = this.cap();
    while (this.promoted.size > cap) this.evictOldest();
  }

  /** a promotion announced by an instance (store key: canonical IPv4 or "prefix/bits") */
  private applyPromotion(key: string, untilMs: number): void {
    if (typeof key !== 'string' || !Number.isFinite(untilMs)) return;
    const until = Math.ceil(untilMs / 1000);
    if (until * 1000 <= this.now()) return;
    // an address (IPv4, or IPv6 kept whole) maps to its table key as promote() makes it; an IPv6
    // "prefix/bits" key is already the table key
    const slash = key.indexOf('/');
    const pkey = slash < 0
      ? this.keysOf(key, 128)?.pkey
      : /^\d{1,3}$/.test(key.slice(slash + 1)) && ipToBytes(key.slice(0, slash))?.length === 16 ? key : undefined;
    if (pkey === undefined) return; // not a source key (the store validates messages; be total anyway)
    const have = this.promoted.get(pkey);
    if (have !== undefined && have >= until) return;
    this.setPromoted(pkey, until);
  }

  /** True while a promotion of this source (or its IPv6 prefix) is unexpired. O(1). */
  isPromoted(address: string): boolean {
    const pkey = this.keysOf(address, this.rules().limits.ipv6Prefix)?.pkey;
    if (pkey === undefined) return false;
    const until = this.promoted.get(pkey);
    if (until === undefined) return false;
    if (until * 1000 <= this.now()) {
      this.promoted.delete(pkey);
      return false;
    }
    return true;
  }

  /** Withdraw a promotion (an admin action, or a ban from elsewhere in the cluster). */
  demote(address: string): boolean {
    const pkey = this.keysOf(address, this.rules().limits.ipv6Prefix)?.pkey;
    return pkey !== undefined && this.promoted.delete(pkey);
  }

  /** Entries in the promotion table (expired ones are removed lazily). */
  get promotedCount(): number {
    return this.promoted.size;
  }

  /** the oldest entry goes; amortised O(1) through the persistent cursor */
  private evictOldest(): void {
    let r = this.evictor?.next();
    if (r === undefined || r.done === true) {
      // the cursor ran past the end (everything it saw is gone): start over from the front
      this.evictor = this.promoted.keys();
      r = this.evictor.next();
    }
    if (r.done !== true) this.promoted.delete(r.value);
  }

  /** One parse of the address: the promotion-table key (IPv4 as its unsigned 32-bit value, no
   *  string per entry; IPv6 as "prefix/bits") and the store key (canonical IPv4, IPv6 prefix text,
   *  exactly ipv6Prefix() of net/address.ts). null when the text is not an IP address. */
  private keysOf(address: string, bits: number): { pkey: number | string; skey: string } | null {
    const b = ipToBytes(address);
    if (b === null) return null;
    if (b.length === 4) return { pkey: ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0, skey: bytesToIp(b) };
    const n = Math.max(0, Math.min(128, Math.floor(bits)));
    const skey = n === 128 ? bytesToIp(b) : `${bytesToIp(maskBytes(b, n))}/${n}`;
    return { pkey: skey, skey };
  }

  private cap(): number {
    const n = this.maxPromotedOverride ?? this.rules().limits.promotion.maxEntries;
    return Math.max(1, Math.min(MAX_PROMOTED_CAP, Math.floor(n)));
  }
}
