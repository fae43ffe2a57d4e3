// Transaction state of the stateful proxy (RFC 3261 section 17, with RFC 6026's Accepted state).
//
// Server transactions face whoever sent us the request; client transactions face the next hop.
// Keys (RFC 3261 17.1.3 / 17.2.3): top-Via branch + sent-by + method, with ACK and CANCEL looked up
// against the INVITE they belong to; server keys also carry the transport source (see serverKey). Branches lacking the z9hG4bK cookie (RFC 2543 peers) are
// made unique with Call-ID, From tag and CSeq number (17.2.3's fallback, simplified).
// The table is bounded: when full, new requests are refused with 503 (never an unbounded Map).
import type { ForwardEdits } from '../verdict';
import type { TimerHandle } from '../clock';
import type { Endpoint, SipRequest } from '../sip/types';

export type ServerState = 'proceeding' | 'completed' | 'confirmed' | 'accepted' | 'terminated';
export type ClientState = 'calling' | 'trying' | 'proceeding' | 'completed' | 'accepted' | 'terminated';

export interface ServerTx {
  readonly key: string;
  readonly method: string;
  /** the request as received; released once a final response is sent (a settled transaction
   *  only absorbs retransmissions, so it must not pin the parsed message in memory) */
  request?: SipRequest;
  readonly source: Endpoint;
  /** counted as live (no final response yet) */
  live: boolean;
  state: ServerState;
  /** last response sent back (resent on a retransmitted request) */
  lastResponse?: Buffer;
  finalStatus?: number;
  client?: ClientTx;
  /** CANCEL received before any provisional response: send it when one arrives */
  cancelPending: boolean;
  cancelled: boolean;
  timerG?: TimerHandle;
  timerH?: TimerHandle;
  timerEnd?: TimerHandle;
  gInterval: number;
  readonly createdAt: number;
  /** header edits the stages asked for (auth: strip credentials and untrusted identities); kept
   *  here so that a failover re-forward makes them too */
  edits?: ForwardEdits;
}

export interface ClientTx {
  /** our branch + '|' + method */
  readonly key: string;
  readonly branch: string;
  readonly method: string;
  readonly server: ServerTx;
  dest: Endpoint;
  /** the bytes we sent (for retransmission, and to build ACK/CANCEL from); emptied once settled */
  bytes: Buffer;
  /** our Via value (ACK and CANCEL reuse it) */
  via: string;
  state: ClientState;
  /** index into the upstream list when the destination is an upstream */
  upstream?: number;
  /** sent to "any healthy upstream": another one may be tried on timeout or 503 */
  failover?: boolean;
  /** upstreams already tried for this request (failover) */
  tried: number[];
  retransmitMs: number;
  timerA?: TimerHandle;
  timerB?: TimerHandle;
  timerC?: TimerHandle;
  timerEnd?: TimerHandle;
  /** hop-by-hop ACK we sent for a non-2xx final, resent on retransmitted finals */
  ack?: Buffer;
  cancel?: ClientTx;
  /** a CANCEL's transaction: the INVITE transaction it cancels */
  cancels?: ClientTx;
}

const EMPTY = Buffer.alloc(0);

/**
 * Bounded in two ways. `max` caps live transactions (no final response yet): that is what an
 * attacker can pin, and a full table answers 503. Settled transactions linger only to absorb
 * retransmissions (RFC 3261 Timers J, I, D, K, RFC 6026 L and M, up to 64*T1); they hold no
 * parsed message, and beyond `lingerMax` the oldest are forgotten early, which costs at worst a
 * retransmission forwarded once more, never a lost call.
 */
export class TransactionTable {
  readonly server = new Map<string, ServerTx>();
  readonly client = new Map<string, ClientTx>();
  expired = 0;
  rejected = 0;
  evicted = 0;
  live = 0;
  readonly lingerMax: number;
  constructor(readonly max: number, lingerMax?: number) {
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
    if (st.live) { st.live = false; this.live--; }
    st.request = undefined;
    const ct = st.client;
    if (ct && (ct.state === 'accepted' || ct.state === 'completed' || ct.state === 'terminated')) ct.bytes = EMPTY;
    const over = this.server.size - this.live - this.lingerMax;
    if (over <= 0) return [];
    const out: ServerTx[] = [];
    for (const x of this.server.values()) {
      if (out.length >= over) break;
      if (!x.live) out.push(x);
    }
    this.evicted += out.length;
    return out;
  }

  removeServer(st: ServerTx): boolean {
    if (this.server.get(st.key) !== st) return false;
    this.server.delete(st.key);
    if (st.live) { st.live = false; this.live--; }
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
    if (branch && branch.startsWith('z9hG4bK') && branch.length > 7) return `${branch}|${sentBy}|${m}|${sourceKey}`;
    // RFC 3261 17.2.3: pre-3261 peers: match on the request's identifying fields instead
    return `2543|${fallback()}|${branch ?? ''}|${sentBy}|${m}|${sourceKey}`;
  }

  /** the transport-source part of a server key (see serverKey) */
  static sourceKey(source: Endpoint): string {
    return source.transport === 'udp' ? `udp ${source.address} ${source.port}` : `${source.transport} ${source.address}`;
  }

  static clientKey(branch: string, method: string): string {
    return `${branch}|${method === 'ACK' ? 'INVITE' : method}`;
  }
}
