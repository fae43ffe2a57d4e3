// Transaction state of the stateful proxy (RFC 3261 section 17, with RFC 6026's Accepted state).
//
// Server transactions face whoever sent us the request; client transactions face the next hop.
// Keys (RFC 3261 17.1.3 / 17.2.3): top-Via branch + sent-by + method, with ACK and CANCEL looked up
// against the INVITE they belong to; server keys also carry the transport source (see serverKey). Branches lacking the z9hG4bK cookie (RFC 2543 peers) are
// made unique with Call-ID, From tag and CSeq number (17.2.3's fallback, simplified).
// The table is bounded: when full, new requests are refused with 503 (never an unbounded Map).
import type { ForwardEdits, Trust } from '../verdict';
import type { TimerHandle } from '../clock';
import type { Endpoint } from '../sip/types';

/**
 * What a transaction may cost at worst, for the memory budget (config transactions.memoryBudgetMB).
 * Live: the forwarded request kept for retransmission with the origin of the received one
 * (together at most the received message plus the lines the edge adds and the origin's markers:
 * maxMessageBytes + 3 KiB), a provisional response stored for retransmitted requests (at most
 * maxMessageBytes), and the objects (measured about 1.2 KB, bench/README.md "memory"): 2 x
 * maxMessageBytes + 4 KiB. Settled: the final response kept for retransmissions and the ACK,
 * counted by their length plus SETTLED_OVERHEAD_BYTES.
 */
export const LIVE_OVERHEAD_BYTES = 4096;
export const SETTLED_OVERHEAD_BYTES = 1024;
/** share of the budget for live transactions; the rest bounds what settled ones keep */
export const LIVE_SHARE = 0.75;

export interface TransactionBudget {
  /** live transactions the budget holds at worst case */
  readonly maxLive: number;
  /** worst-case bytes of one live transaction */
  readonly perLive: number;
  /** bytes settled transactions may keep (stored finals, ACKs, SETTLED_OVERHEAD_BYTES each) */
  readonly settledBytes: number;
}

export function transactionBudget(budgetMB: number, maxMessageBytes: number): TransactionBudget {
  const bytes = budgetMB * 1024 * 1024;
  const perLive = 2 * maxMessageBytes + LIVE_OVERHEAD_BYTES;
  return { maxLive: Math.floor((bytes * LIVE_SHARE) / perLive), perLive, settledBytes: Math.floor(bytes * (1 - LIVE_SHARE)) };
}

const METHODS = new Map(['INVITE', 'ACK', 'CANCEL', 'BYE', 'REGISTER', 'OPTIONS', 'SUBSCRIBE', 'NOTIFY', 'REFER', 'MESSAGE', 'INFO', 'UPDATE', 'PRACK', 'PUBLISH'].map((m) => [m, m]));

export type ServerState = 'proceeding' | 'completed' | 'confirmed' | 'accepted' | 'terminated';
export type ClientState = 'calling' | 'trying' | 'proceeding' | 'completed' | 'accepted' | 'terminated';

export interface ServerTx {
  readonly key: string;
  readonly method: string;
  readonly source: Endpoint;
  /** counted as live (no final response yet) */
  live: boolean;
  state: ServerState;
  /** last response sent back (resent on a retransmitted request) */
  lastResponse?: Buffer;
  /** the last response was our own 100 Trying: not kept (100,000 live INVITEs would hold 100,000
   *  copies), built again from the retransmitted request, which carries the same Via, From, To,
   *  Call-ID and CSeq (RFC 3261 17.2.1: resend the most recent provisional) */
  trying: boolean;
  finalStatus?: number;
  client?: ClientTx;
  /** CANCEL received before any provisional response: send it when one arrives */
  cancelPending: boolean;
  cancelled: boolean;
  timerG?: TimerHandle;
  /** Timer H (waiting for the ACK), then I, J or L (the end): never two at once, so one field
   *  (8 bytes less per transaction) */
  timerEnd?: TimerHandle;
  gInterval: number;
  /** settled: the bytes counted against the table's settled-bytes bound (TransactionTable.settle) */
  held: number;
  /** header edits the stages asked for (auth: strip credentials and untrusted identities); kept
   *  here so that a failover re-forward makes them too */
  edits?: ForwardEdits;
  /** the side and trust the request arrived with (classified once by the message path: sends and
   *  failover use these, never a re-classification) */
  readonly side: 'outside' | 'inside';
  readonly trust: Trust;
}

export interface ClientTx {
  /** our branch + '|' + method */
  readonly key: string;
  readonly method: string;
  readonly server: ServerTx;
  dest: Endpoint;
  /** the bytes we sent (for retransmission, and to build ACK/CANCEL from) as a latin1 string (one
   *  byte per character): a string costs its length plus a 16-byte header in the JS heap, a
   *  Buffer about 300 bytes more in objects and allocator overhead, or a share of an 8 KB pool
   *  chunk it pins (bench/README.md "memory"); emptied once settled */
  sent: string;
  /** how to get the request the server transaction received back from `sent`
   *  (MessageWriter.toBuffer's origin, packOrigin'ed): a live transaction keeps no parsed message and no second
   *  copy of the request; the rare paths that need it (failover, local finals, the pass-through
   *  watcher, shutdown) re-parse it. Absent on CANCELs; dropped once the server side settles. */
  received?: string;
  state: ClientState;
  /** index into the upstream list when the destination is an upstream */
  upstream?: number;
  /** sent to "any healthy upstream": another one may be tried on timeout or 503 */
  failover?: boolean;
  /** upstreams already tried for this request (failover) */
  tried: number[];
  retransmitMs: number;
  /** Timer A / E (retransmission) */
  timerA?: TimerHandle;
  /** Timer B / F (no answer), then C (ringing too long, INVITE), then D / K / M (the end): never
   *  two at once, so one field (16 bytes less per transaction) */
  timer?: TimerHandle;
  /** hop-by-hop ACK we sent for a non-2xx final, resent on retransmitted finals */
  ack?: Buffer;
  cancel?: ClientTx;
  /** a CANCEL's transaction: the INVITE transaction it cancels */
  cancels?: ClientTx;
  /** the side `dest` is on (classified once when the branch is created) */
  readonly side: 'outside' | 'inside';
}


/**
 * Bounded in two ways. `max` caps live transactions (no final response yet): that is what an
 * attacker can pin, and a full table answers 503. Settled transactions linger only to absorb
 * retransmissions (RFC 3261 Timers J, I, D, K, RFC 6026 L and M, up to 64*T1); no transaction
 * holds a parsed message (a live one keeps the forwarded bytes and their origin, see
 * ClientTx.received), and beyond `lingerMax` the oldest are forgotten early, which costs at worst a
 * retransmission forwarded once more, never a lost call.
 */
export class TransactionTable {
  readonly server = new Map<string, ServerTx>();
  readonly client = new Map<string, ClientTx>();
  expired = 0;
  rejected = 0;
  evicted = 0;
  live = 0;
  /** bytes settled transactions keep (see `held`), bounded by settledBytesMax */
  settledBytes = 0;
  readonly lingerMax: number;
  private readonly sources: (Endpoint | undefined)[] = new Array<Endpoint | undefined>(16).fill(undefined);
  constructor(readonly max: number, lingerMax?: number, readonly settledBytesMax = Number.POSITIVE_INFINITY) {
    this.lingerMax = lingerMax ?? max * 4;
  }

  get size(): number { return this.server.size; }
  get full(): boolean { return this.live >= this.max; }

  addServer(st: ServerTx): void {
    this.server.set(st.key, st);
    this.live++;
  }

  /** the server transaction has its final response: release what only a live one needs.
   *  Returns settled transactions to evict when the lingering population is over its cap. */
  settle(st: ServerTx): ServerTx[] {
    const ct = st.client;
    if (st.live) {
      st.live = false;
      this.live--;
      st.held = SETTLED_OVERHEAD_BYTES + (st.lastResponse?.length ?? 0) + (ct?.ack?.length ?? 0);
      this.settledBytes += st.held;
    }
    if (ct) ct.received = undefined;
    if (ct && (ct.state === 'accepted' || ct.state === 'completed' || ct.state === 'terminated')) ct.sent = '';
    const over = this.server.size - this.live - this.lingerMax;
    let bytesOver = this.settledBytes - this.settledBytesMax;
    if (over <= 0 && bytesOver <= 0) return [];
    const out: ServerTx[] = [];
    for (const x of this.server.values()) {
      if (out.length >= over && bytesOver <= 0) break;
      if (!x.live) { out.push(x); bytesOver -= x.held; }
    }
    this.evicted += out.length;
    return out;
  }

  removeServer(st: ServerTx): boolean {
    if (this.server.get(st.key) !== st) return false;
    this.server.delete(st.key);
    if (st.live) { st.live = false; this.live--; }
    else { this.settledBytes -= st.held; st.held = 0; }
    return true;
  }

  /**
   * RFC 3261 17.2.3: top-Via branch + sent-by + method (ACK counts as INVITE), or for a branch
   * without the z9hG4bK cookie (RFC 2543 peers) the request's identifying fields. Beyond the RFC,
   * the transport source is part of the key too (`sourceKey`: address and port over UDP, address
   * over stream transports). Why: a matched request is answered from the stored response and sent
   * to the ORIGINAL sender, so without the source anyone who repeats the identifying fields (all
   * of them visible in the request; for a cookie-less branch even guessable) makes the edge send
   * that response again to someone else: a reflector, one stored 100 Trying per forged copy.
   * With the source in the key a copy from elsewhere is a new transaction, answered (if at all)
   * to whoever sent it, and a CANCEL or ACK from another address cannot end someone else's
   * transaction either. A legitimate retransmission comes from the same socket (a phone keeps one
   * NAT binding for the seconds a transaction lasts); over TCP a client retransmits nothing
   * (17.1.1.2) and may re-send a CANCEL on a new connection, hence no port there.
   */
  static serverKey(branch: string | undefined, sentBy: string, method: string, fallback: () => string, sourceKey: string): string {
    const m = method === 'ACK' ? 'INVITE' : method;
    // the usual case, a UDP request whose sent-by is where it came from: the source is said once
    // ('=', which no sourceKey is), 20-odd bytes less per live transaction
    const src = sourceKey.length === sentBy.length + 4 && sourceKey.startsWith('udp ') && sourceKey.endsWith(sentBy) ? '=' : sourceKey;
    if (branch && branch.startsWith('z9hG4bK') && branch.length > 7) return `${branch}|${sentBy}|${m}|${src}`;
    // RFC 3261 17.2.3: pre-3261 peers: match on the request's identifying fields instead
    return `2543|${fallback()}|${branch ?? ''}|${sentBy}|${m}|${src}`;
  }

  /** the transport-source part of a server key (see serverKey): address:port over UDP (the form
   *  of a sent-by, so serverKey can tell when they are the same), address over stream transports */
  static sourceKey(source: Endpoint): string {
    return source.transport === 'udp' ? `udp ${source.address}:${source.port}` : `${source.transport} ${source.address}`;
  }

  /**
   * Client keys are our own branches (RFC 3261 17.1.3: branch + method, ACK as INVITE), kept
   * without what every one of them repeats: the z9hG4bK cookie and, for INVITE, the method. A
   * branch without the cookie or with a '|' (not a token character, RFC 3261 25.1) is none of
   * ours: its key starts with '|', which no key of ours does (ours start with a base64url
   * character), so it matches nothing.
   */
  static clientKey(branch: string, method: string): string {
    const m = method === 'ACK' ? 'INVITE' : method;
    if (!branch.startsWith('z9hG4bK') || branch.includes('|')) return `|${branch}|${m}`;
    return m === 'INVITE' ? branch.slice(7) : `${branch.slice(7)}|${m}`;
  }

  /** our branch, from a client key (kept once, in the key) */
  static branchOf(clientKey: string): string {
    const bar = clientKey.indexOf('|');
    return `z9hG4bK${bar < 0 ? clientKey : clientKey.slice(0, bar)}`;
  }

  /**
   * The source Endpoint a server transaction keeps, shared with the previous transactions from
   * the same place: each datagram comes with a new Endpoint and a new address string (about 90
   * bytes together), and a trunk, a PBX or a flood sends many transactions from one source. A
   * small direct-mapped cache (16 entries, by port), compared field by field; Endpoints are
   * immutable, so sharing one is safe.
   */
  internSource(ep: Endpoint): Endpoint {
    const i = ep.port & 15;
    const c = this.sources[i];
    if (c !== undefined && c.port === ep.port && c.address === ep.address && c.transport === ep.transport
      && c.listenerId === ep.listenerId && c.connId === ep.connId) return c;
    this.sources[i] = ep;
    return ep;
  }

  /**
   * A string built by concatenation (a key, a Via) is a tree of V8 cons strings; kept for the
   * life of a transaction, the tree (or, once hashed, a 32-byte cons in front of a flat copy)
   * stays with it. A flat copy made here is the string and nothing else. Latin1 only, as every
   * string the parser makes.
   */
  static flat(s: string): string {
    return Buffer.from(s, 'latin1').toString('latin1');
  }

  /** The method names transactions keep, shared: a method from the parser is a slice of its
   *  start line and would keep that line alive. */
  static method(m: string): string {
    return METHODS.get(m) ?? TransactionTable.flat(m);
  }
}
