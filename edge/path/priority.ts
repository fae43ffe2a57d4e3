// Trusted-first prioritization under overload: between the transports and the message path,
// three bounded queues, one per class, served in strict priority order with a time budget per
// turn of the event loop.
//
//   dialog          responses and in-dialog requests (To tag present) from the PBX side, trusted
//                   peers and promoted sources: work of calls already accepted. Serving them
//                   keeps established calls alive and stops the retransmissions that turn an
//                   overload into a collapse (a late 200 OK or BYE is sent again every T1..T2).
//   favoured        new work from the PBX side, trusted peers and promoted (authenticated) sources
//   unknown_dialog  responses and in-dialog requests from unknown sources: below the favoured
//                   ones because a To tag costs an attacker nothing to forge (a flood of tagged
//                   requests must not starve trusted peers' new calls), above unknown new work
//                   (a phone that never authenticated still gets its BYE through first)
//   unknown         everything else: shed first, and silently (a reply per spoofed packet would
//                   make the edge a reflector when it can least afford it)
//
// The class is decided before any parse, from what the gate sees cheaply: the source address
// against the inside, trusted, promoted and ban sets (all local, O(1) or a trie walk), and a scan
// of the raw bytes for a status line or a To header with a tag (RFC 3261 7.2, 8.2.6.2, 12.2).
// The expensive work (parse, stages, routing) is spent only on what is dequeued.
//
// Below capacity nothing waits: while the queues are empty and the turn's handling budget lasts,
// a message is handled at once, synchronously and in arrival order, as without queues. Once a
// turn of the event loop has spent its budget (overload.turnBudgetMs), what arrives is queued by
// class and served at the next turn (setImmediate), best class first, so that timers, TCP,
// /healthz and the UDP hand-over ring keep running and the transports keep filling the queues:
// cheap classification of everything, expensive handling of the best first.
//
// Shedding, lowest class first: a full queue (count or bytes) evicts the oldest message of the
// lowest non-empty class below the newcomer's, else drops the newcomer's own oldest (fresh
// requests are worth more than stale ones: the stale one's retransmission is already queued); and
// a message that waited longer than its class's delay bound is dropped when dequeued (CoDel's
// sojourn idea): a UDP client has retransmitted it after T1 = 500 ms (RFC 3261 17.1.1.2), so
// handling the stale copy doubles the work for nothing.
//
// Known limit: the To-tag scan cannot tell a real dialog from a forged tag; that is why only
// known sources reach the top class with one. A forged tag from an unknown source buys a place
// above other unknown traffic, no more; the parse and the stages still judge it (suspicion, bans).
import { performance } from 'node:perf_hooks';
import type { Inbound } from '../transport/types';

/** highest first */
export const PRIORITY_CLASSES = ['dialog', 'favoured', 'unknown_dialog', 'unknown'] as const;
export type PriorityClass = (typeof PRIORITY_CLASSES)[number];
export const PRIORITY_SHED_REASONS = ['queue_full', 'queue_delay'] as const;
export type PriorityShedReason = (typeof PRIORITY_SHED_REASONS)[number];

/** how long a message may wait in its class's queue before it is dropped as stale, ms. Dialog
 *  work is kept longest: a late response or BYE still ends a transaction, and a retransmission
 *  of it is absorbed; new work is worth handling only before the client's retransmission
 *  (T1 = 500 ms) arrives; unknown newcomers less than that. */
export const MAX_DELAY_MS: Readonly<Record<PriorityClass, number>> = { dialog: 2000, favoured: 500, unknown_dialog: 500, unknown: 200 };
/** per class message cap (the bytes cap below usually binds first for large datagrams) */
const MAX_COUNT: Readonly<Record<PriorityClass, number>> = { dialog: 16384, favoured: 16384, unknown_dialog: 4096, unknown: 4096 };

export interface PriorityOptions {
  /** most milliseconds of handling per event-loop turn before yielding */
  readonly turnBudgetMs: number;
  /** most bytes of queued messages in all classes together */
  readonly maxQueuedBytes: number;
  /** the class of a message, from the cheap view (priorityClass below), or null to drop it
   *  here (a banned source: counted by the caller) */
  readonly classify: (inb: Inbound) => PriorityClass | null;
  /** the expensive path: parse, classify, stages, route */
  readonly handle: (inb: Inbound) => void;
  readonly onShed?: (cls: PriorityClass, reason: PriorityShedReason) => void;
  /** seconds a message waited in its queue, observed when it is handled */
  readonly onDelay?: (cls: PriorityClass, seconds: number) => void;
  /** per-class delay bounds, ms (tests; default MAX_DELAY_MS) */
  readonly maxDelayMs?: Readonly<Record<PriorityClass, number>>;
}

/** a FIFO of fixed capacity (no shifting, no growth past the cap) */
class Ring {
  private readonly items: (Inbound | undefined)[];
  private head = 0;
  length = 0;
  constructor(private readonly cap: number) { this.items = new Array<Inbound | undefined>(cap); }
  get full(): boolean { return this.length >= this.cap; }
  push(x: Inbound): void { this.items[(this.head + this.length) % this.cap] = x; this.length++; }
  peek(): Inbound | undefined { return this.length > 0 ? this.items[this.head] : undefined; }
  shift(): Inbound | undefined {
    if (this.length === 0) return undefined;
    const x = this.items[this.head];
    this.items[this.head] = undefined;
    this.head = (this.head + 1) % this.cap;
    this.length--;
    return x;
  }
}

export class PriorityQueues {
  private readonly q: Record<PriorityClass, Ring> = {
    dialog: new Ring(MAX_COUNT.dialog), favoured: new Ring(MAX_COUNT.favoured),
    unknown_dialog: new Ring(MAX_COUNT.unknown_dialog), unknown: new Ring(MAX_COUNT.unknown),
  };
  private bytes = 0;
  private turnPending = false;
  /** ms of handling spent in the current turn of the event loop */
  private spent = 0;
  private pumping = false;
  private closed = false;

  private readonly maxDelay: Readonly<Record<PriorityClass, number>>;

  constructor(private readonly o: PriorityOptions) {
    this.maxDelay = o.maxDelayMs ?? MAX_DELAY_MS;
  }

  /** messages waiting, per class (tests, the bench) */
  get depth(): Record<PriorityClass, number> {
    return { dialog: this.q.dialog.length, favoured: this.q.favoured.length, unknown_dialog: this.q.unknown_dialog.length, unknown: this.q.unknown.length };
  }

  /** one message from a transport: classified; handled at once while nothing waits and the
   *  turn's budget lasts (below capacity the path is exactly as without queues, synchronous and
   *  in arrival order), else queued by class */
  readonly push = (inb: Inbound): void => {
    if (this.closed) return;
    const cls = this.o.classify(inb);
    if (cls === null) return;
    if (!this.pumping && this.spent < this.o.turnBudgetMs && this.highestNonEmpty() === null) {
      const t0 = performance.now();
      this.serve(cls, inb, t0);
      this.spent += performance.now() - t0;
      this.nextTurn();
      return;
    }
    const size = inb.bytes.length;
    const own = this.q[cls];
    if (own.full) this.drop(cls, 'queue_full');
    while (this.bytes + size > this.o.maxQueuedBytes) {
      const victim = this.lowestNonEmpty();
      // the newcomer is the lowest class present and its own queue is empty: it is the one to go
      if (victim === null || rank(victim) < rank(cls)) { this.o.onShed?.(cls, 'queue_full'); return; }
      this.drop(victim, 'queue_full');
    }
    own.push(inb);
    this.bytes += size;
    this.queued++;
    this.nextTurn();
  };

  /** stop serving (the edge is closing); what waits is dropped */
  close(): void {
    this.closed = true;
    for (const c of PRIORITY_CLASSES) while (this.q[c].shift() !== undefined) { /* drop */ }
    this.bytes = 0;
  }

  /** messages that had to wait for a later turn so far (tests, the bench) */
  queued = 0;

  private serve(cls: PriorityClass, inb: Inbound, now: number): void {
    const waited = now - inb.receivedAt;
    if (waited > this.maxDelay[cls]) { this.o.onShed?.(cls, 'queue_delay'); return; }
    this.o.onDelay?.(cls, waited > 0 ? waited / 1000 : 0);
    try {
      this.o.handle(inb);
    } catch {
      // the handler keeps its own errors; a throw here must not stop the queue
    }
  }

  /** serve the queues in class order until they are empty or the turn's budget is spent */
  private pump(): void {
    if (this.pumping || this.closed) return;
    this.pumping = true;
    const start = performance.now();
    let now = start;
    try {
      for (;;) {
        if (this.spent + (now - start) >= this.o.turnBudgetMs) break;
        const cls = this.highestNonEmpty();
        if (cls === null) break;
        const inb = this.q[cls].shift()!;
        this.bytes -= inb.bytes.length;
        this.serve(cls, inb, now);
        now = performance.now();
      }
    } finally {
      this.spent += performance.now() - start;
      this.pumping = false;
      if (this.highestNonEmpty() !== null) this.nextTurn();
    }
  }

  /** the budget is per turn: it is given back in the check phase, after I/O had its chance */
  private nextTurn(): void {
    if (this.turnPending || this.closed) return;
    this.turnPending = true;
    setImmediate(() => {
      this.turnPending = false;
      this.spent = 0;
      if (this.highestNonEmpty() !== null) this.pump();
    });
  }

  private drop(cls: PriorityClass, reason: PriorityShedReason): void {
    const x = this.q[cls].shift();
    if (x === undefined) return;
    this.bytes -= x.bytes.length;
    this.o.onShed?.(cls, reason);
  }

  private highestNonEmpty(): PriorityClass | null {
    for (let i = 0; i < PRIORITY_CLASSES.length; i++) if (this.q[PRIORITY_CLASSES[i]!].length > 0) return PRIORITY_CLASSES[i]!;
    return null;
  }

  private lowestNonEmpty(): PriorityClass | null {
    for (let i = PRIORITY_CLASSES.length - 1; i >= 0; i--) if (this.q[PRIORITY_CLASSES[i]!].length > 0) return PRIORITY_CLASSES[i]!;
    return null;
  }
}

/** 0 = highest */
function rank(c: PriorityClass): number {
  return PRIORITY_CLASSES.indexOf(c);
}

/** how far into a message the cheap scan looks for the To header: headers come first and a
 *  real To header sits in the first few hundred bytes; a message that buries it deeper only
 *  loses its place in the dialog class, never its handling */
const SCAN_LIMIT = 4096;

const lower = (c: number): number => (c >= 0x41 && c <= 0x5a ? c | 0x20 : c);

/** the header section of a message starts with a status line: a response (RFC 3261 7.2) */
function isResponse(b: Buffer): boolean {
  // "SIP/2.0 " (case-sensitive in practice; RFC 3261 7.1 the version is upper case)
  return b.length > 8 && b[0] === 0x53 && b[1] === 0x49 && b[2] === 0x50 && b[3] === 0x2f && b[4] === 0x32 && b[5] === 0x2e && b[6] === 0x30 && b[7] === 0x20;
}

/**
 * Does the To header (or its compact form "t", RFC 3261 7.3.3) carry a tag parameter? A request
 * with a To tag is inside a dialog (RFC 3261 12.2; 8.2.6.2: the UAS adds the tag). Header names
 * are case-insensitive (RFC 3261 7.3.1); the scan stops at the end of the header section. Not a
 * parse: a To header folded over several lines (7.3.1) is read only up to its first line break,
 * which can only cost the message its place in the dialog class.
 */
export function hasToTag(b: Buffer): boolean {
  const end = Math.min(b.length, SCAN_LIMIT);
  let i = b.indexOf(0x0a); // skip the request line
  while (i >= 0 && i + 1 < end) {
    let p = i + 1;
    const c0 = b[p];
    if (c0 === 0x0d || c0 === 0x0a) return false; // empty line: end of the headers
    let nameEnd = -1;
    if (lower(c0!) === 0x74) { // 't'
      let q = p + 1;
      if (lower(b[q]!) === 0x6f) q++; // "to"
      while (b[q] === 0x20 || b[q] === 0x09) q++;
      if (b[q] === 0x3a) nameEnd = q;
    }
    const eol = b.indexOf(0x0a, p);
    const lineEnd = eol < 0 || eol > end ? end : eol;
    if (nameEnd >= 0) {
      // the tag is a header parameter: after the name-addr's closing '>' when there is one, so a
      // ";tag=" inside the URI does not count (RFC 3261 20.39, 25.1 to-param)
      p = nameEnd + 1;
      const lt = b.indexOf(0x3c, p);
      if (lt >= 0 && lt < lineEnd) {
        const gt = b.indexOf(0x3e, lt);
        if (gt < 0 || gt >= lineEnd) return false;
        p = gt + 1;
      }
      for (let s = b.indexOf(0x3b, p); s >= 0 && s < lineEnd; s = b.indexOf(0x3b, s + 1)) {
        let q = s + 1;
        while (b[q] === 0x20 || b[q] === 0x09) q++;
        if (lower(b[q]!) === 0x74 && lower(b[q + 1]!) === 0x61 && lower(b[q + 2]!) === 0x67) {
          q += 3;
          while (b[q] === 0x20 || b[q] === 0x09) q++;
          if (b[q] === 0x3d) return true; // EQUAL = SWS "=" SWS (RFC 3261 25.1)
        }
      }
      return false;
    }
    i = eol;
  }
  return false;
}

/** responses and in-dialog requests above new work, each by the source's standing */
export function priorityClass(bytes: Buffer, favouredSource: boolean): PriorityClass {
  const dialog = isResponse(bytes) || hasToTag(bytes);
  if (favouredSource) return dialog ? 'dialog' : 'favoured';
  return dialog ? 'unknown_dialog' : 'unknown';
}
