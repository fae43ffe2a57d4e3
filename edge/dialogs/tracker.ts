// Dialog tracking for call admission control (issue 16).
//
// A new INVITE admitted by CAC opens an "early" dialog entry keyed by Call-ID and From tag; the
// INVITE's 2xx confirms it (RFC 3261 12.1.1: a 2xx creates the dialog), a final error (>= 300,
// RFC 3261 13.2.2.3: no dialog) or a CANCEL (RFC 3261 9) ends an early one, a BYE (RFC 3261 15)
// ends a confirmed one, and `maxDurationS` ends one whose BYE never came (a lost BYE or a peer
// that died). Every live entry holds leases on its counted keys (edge/dialogs/leases.ts), which
// this tracker refreshes on a timer while the entry lives, so a count shared through Redis heals
// itself when an instance dies.
//
// Memory: at most `maxDialogs` entries per instance; beyond that a new call is refused
// (reason dialogs_full) rather than tracked by nobody.
import type { LeaseBackend, LeaseKey } from './leases';

export type DialogState = 'early' | 'confirmed';

export interface DialogInfo {
  readonly id: string;
  readonly user: string;
  /** destination class (edge/policy/cac/destinations.ts), 'other' when none matched */
  readonly cls: string;
  readonly keys: readonly string[];
  state: DialogState;
  readonly startedAt: number;
  confirmedAt?: number;
}

export interface TrackerOptions {
  readonly backend: LeaseBackend;
  /** wall-clock ms (shared between instances through Redis) */
  readonly now: () => number;
  readonly leaseTtlMs?: number;
  readonly refreshMs?: number;
  readonly maxDurationS?: number;
  readonly maxDialogs?: number;
  /** a confirmed dialog ended: its duration in seconds (fraud minutes/day) */
  readonly onEnd?: (d: DialogInfo, reason: EndReason, seconds: number) => void;
  readonly onError?: (err: unknown) => void;
}

export type EndReason = 'bye' | 'cancel' | 'error' | 'max_duration' | 'admit_failed';

export const dialogId = (callId: string, fromTag: string): string => `${callId};${fromTag}`;

export class DialogTracker {
  private readonly d = new Map<string, DialogInfo>();
  readonly ttl: number;
  readonly refreshMs: number;
  readonly maxDurationMs: number;
  readonly maxDialogs: number;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: TrackerOptions) {
    this.ttl = o.leaseTtlMs ?? 30_000;
    this.refreshMs = o.refreshMs ?? Math.max(1000, Math.floor(this.ttl / 3));
    this.maxDurationMs = (o.maxDurationS ?? 4 * 3600) * 1000;
    this.maxDialogs = o.maxDialogs ?? 100_000;
  }

  get size(): number { return this.d.size; }
  get(id: string): DialogInfo | undefined { return this.d.get(id); }
  *entries(): IterableIterator<DialogInfo> { yield* this.d.values(); }

  /** admit a new call: 'dialogs_full' when this instance tracks too many, or the first full key */
  async admit(id: string, user: string, cls: string, keys: readonly LeaseKey[]): Promise<{ ok: true } | { ok: false; key: string }> {
    if (this.d.has(id)) return { ok: true }; // a retransmitted INVITE (RFC 3261 17.2.1) is the same call
    if (this.d.size >= this.maxDialogs) return { ok: false, key: 'dialogs_full' };
    const info: DialogInfo = { id, user, cls, keys: keys.map((k) => k.key), state: 'early', startedAt: this.o.now() };
    // reserve locally first so a retransmission during the round trip is not admitted twice
    this.d.set(id, info);
    let r;
    try { r = await this.o.backend.admit(id, keys, info.startedAt, this.ttl); } catch (err) { this.d.delete(id); throw err; }
    if (!r.ok) this.d.delete(id);
    return r;
  }

  /** the INVITE got a 2xx: the dialog is up */
  confirm(id: string): void {
    const x = this.d.get(id);
    if (x && x.state === 'early') { x.state = 'confirmed'; x.confirmedAt = this.o.now(); }
  }

  /** a final error to the INVITE (only ends an early dialog: a re-INVITE's error leaves the call up) */
  failed(id: string): void {
    const x = this.d.get(id);
    if (x && x.state === 'early') this.end(id, 'error');
  }

  end(id: string, reason: EndReason): void {
    const x = this.d.get(id);
    if (!x) return;
    this.d.delete(id);
    const secs = x.confirmedAt !== undefined ? Math.max(0, (this.o.now() - x.confirmedAt) / 1000) : 0;
    this.o.onEnd?.(x, reason, secs);
    this.o.backend.release(id, x.keys).catch((e) => this.o.onError?.(e));
  }

  /** one refresh round: end overlong dialogs, extend the leases of the rest */
  async tick(): Promise<void> {
    const now = this.o.now();
    const items: Array<{ id: string; keys: readonly string[] }> = [];
    for (const x of [...this.d.values()]) {
      if (now - x.startedAt >= this.maxDurationMs) { this.end(x.id, 'max_duration'); continue; }
      items.push({ id: x.id, keys: x.keys });
    }
    await this.o.backend.refresh(items, now, this.ttl);
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => { this.tick().catch((e) => this.o.onError?.(e)); }, this.refreshMs);
    this.timer.unref();
  }

  /** stop refreshing; `release` also gives back every lease (clean shutdown) */
  async stop(release = true): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (release) {
      const all = [...this.d.values()];
      this.d.clear();
      await Promise.all(all.map((x) => this.o.backend.release(x.id, x.keys).catch((e) => this.o.onError?.(e))));
    }
  }

  /** per (state, class) for sipedge_dialogs_live */
  census(): Map<string, number> {
    const m = new Map<string, number>();
    for (const x of this.d.values()) { const k = `${x.state}|${x.cls}`; m.set(k, (m.get(k) ?? 0) + 1); }
    return m;
  }
}
