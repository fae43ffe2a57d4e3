// The RFC 3261 section 17 transaction layer of the proxy: client and server transaction state,
// Timers A-M, retransmissions, the hop-by-hop ACK to a non-2xx final (17.1.1.3) and CANCEL
// (9.1), and the end of each transaction. It decides nothing about routing: a branch that failed
// (timeout, send failure) and Timer C are reported upward (TxUpcalls), and the proxy answers or
// fails over. Every send goes through the wire, on the side the transaction remembers.
import type { Clock } from '../clock';
import type { ResolvedConfig } from '../config/types';
import * as H from '../sip/headers';
import { parseMessage } from '../sip/parser';
import { buildHopRequest, buildReply } from '../sip/reply';
import type { SipRequest, SipResponse } from '../sip/types';
import type { Wire } from '../router/wire';
import type { Listener } from '../transport/types';
import { type ClientTx, type ServerTx, TransactionTable } from './table';

export const TIMER_C_MS = 180_000; // RFC 3261 16.6 item 11: greater than 3 minutes

/** What the layer reports (metrics), closed label sets. */
export interface TxEvents {
  /** absorbed: swallowed; answered: the stored last response was sent again; sent: ours, on a timer */
  retransmission?(direction: 'absorbed' | 'answered' | 'sent'): void;
  txExpired?(): void;
}

/** What the layer hands up to the proxy. */
export interface TxUpcalls {
  /** a branch got no answer in time or could not be sent (already terminated here; not for CANCELs) */
  branchFailed(ct: ClientTx, reason: 'request_timeout' | 'send_failed'): void;
  /** Timer C fired on a ringing INVITE branch (its CANCEL is already sent) */
  timerC(ct: ClientTx): void;
}

export class TransactionLayer {
  readonly t1: number;
  readonly t2: number;
  readonly t4: number;

  constructor(private readonly cfg: ResolvedConfig, private readonly clock: Clock, private readonly wire: Wire,
    readonly table: TransactionTable, private readonly ev: TxEvents, private readonly up: TxUpcalls) {
    this.t1 = cfg.transactions.t1Ms;
    this.t2 = cfg.transactions.t2Ms;
    this.t4 = cfg.transactions.t4Ms;
  }

  // ---------------------------------------------------------------- server side

  /** RFC 3261 17.2.1 / 17.2.2: a retransmitted request: resend the last response, never forward again */
  retransmitted(st: ServerTx, req: SipRequest): void {
    const last = st.lastResponse
      ?? (st.trying && st.finalStatus === undefined ? buildReply(req, 100, { source: st.source, server: this.cfg.serverHeader }) ?? undefined : undefined);
    this.ev.retransmission?.(last ? 'answered' : 'absorbed');
    if (last) this.wire.send(st.source, last, false, st.side, 'response');
  }

  /** RFC 3261 17.2.1: the ACK for a non-2xx final is hop-by-hop: absorb it, stop Timer G. False
   *  when st is not waiting for one (then the ACK is end to end, for a 2xx). */
  absorbAck(st: ServerTx | undefined): boolean {
    if (!st || st.method !== 'INVITE' || st.finalStatus === undefined || st.finalStatus < 300) return false;
    this.clock.clearTimer(st.timerG);
    if (st.state === 'completed') {
      st.state = 'confirmed';
      this.clock.clearTimer(st.timerEnd); // Timer H
      // Timer I: T4 over UDP, 0 otherwise
      st.timerEnd = this.clock.setTimerWith(st.source.transport === 'udp' ? this.t4 : 0, this.onEndServer, st);
    }
    return true;
  }

  /** a provisional response toward st's client */
  sendProvisional(st: ServerTx, bytes: Buffer): void {
    st.lastResponse = bytes;
    this.wire.send(st.source, bytes, false, st.side, 'response');
  }

  /** send a final response upstream-to-client and run the server transaction's end timers */
  sendFinal(st: ServerTx, status: number, bytes: Buffer): void {
    if (st.finalStatus !== undefined) return;
    st.finalStatus = status;
    st.lastResponse = bytes;
    this.wire.send(st.source, bytes, false, st.side, 'response');
    const udp = st.source.transport === 'udp';
    this.clock.clearTimer(st.timerEnd);
    if (st.method === 'INVITE') {
      if (status >= 300) {
        st.state = 'completed';
        // Timer G: retransmit the final (st.lastResponse) until the ACK comes (RFC 3261 17.2.1)
        if (udp) st.timerG = this.clock.setTimerWith(this.t1, this.onTimerG, st);
        // Timer H: give up waiting for the ACK (endServer stops Timer G)
        st.timerEnd = this.clock.setTimerWith(64 * this.t1, this.onEndServer, st);
      } else {
        st.state = 'accepted';
        st.timerEnd = this.clock.setTimerWith(64 * this.t1, this.onEndServer, st);
      }
    } else {
      st.state = 'completed';
      // Timer J: absorb retransmissions for 64*T1 over UDP
      st.timerEnd = this.clock.setTimerWith(udp ? 64 * this.t1 : 0, this.onEndServer, st);
    }
    this.settle(st);
  }

  /** A 2xx to an INVITE passes st (RFC 6026 7.1: Accepted for Timer L). Forwarding it (and its
   *  retransmissions) is the caller's: sendAccepted. */
  accept(st: ServerTx, status: number): void {
    if (st.finalStatus !== undefined) return;
    st.finalStatus = status;
    st.state = 'accepted';
    this.clock.clearTimer(st.timerEnd);
    st.timerEnd = this.clock.setTimerWith(64 * this.t1, this.onEndServer, st);
    // RFC 6026: an Accepted server transaction absorbs INVITE retransmissions, it never
    // resends the 2xx itself (the UAS does): keep no copy
    st.lastResponse = undefined;
    this.settle(st);
  }

  sendAccepted(st: ServerTx, bytes: Buffer): void {
    this.wire.send(st.source, bytes, false, st.side, 'response');
  }

  private settle(st: ServerTx): void {
    for (const old of this.table.settle(st)) this.endServer(old);
  }

  endServer(st: ServerTx): void {
    if (st.state === 'terminated') return;
    st.state = 'terminated';
    this.clock.clearTimer(st.timerG);
    this.clock.clearTimer(st.timerEnd);
    if (this.table.removeServer(st)) {
      this.table.expired++;
      this.ev.txExpired?.();
    }
    const ct = st.client;
    if (ct && ct.state !== 'terminated' && ct.state !== 'completed' && ct.state !== 'accepted') {
      // server side is done but the branch is still pending (no final ever came): stop it
      this.endClient(ct);
    }
  }

  // ---------------------------------------------------------------- client side

  /** Register a new branch, send it on `l` (chosen once by the caller) and start Timers A/E and
   *  B/F. A branch whose bytes cannot be handed to the socket fails at once (branchFailed). */
  startClient(ct: ClientTx, l: Listener, bytes: Buffer, mayConnect: boolean): void {
    this.table.client.set(ct.key, ct);
    if (!this.wire.sendOn(l, ct.dest, bytes, mayConnect, ct.side, 'request')) {
      this.clientFailed(ct, 'send_failed');
      return;
    }
    this.startClientTimers(ct);
  }

  private startClientTimers(ct: ClientTx): void {
    if (ct.dest.transport === 'udp') ct.timerA = this.clock.setTimerWith(this.t1, this.onTimerA, ct);
    ct.timer = this.clock.setTimerWith(64 * this.t1, this.onTimerB, ct);
  }

  /** A provisional response on ct: Calling/Trying -> Proceeding (Timer C for INVITE, RFC 3261
   *  16.6 item 11; non-INVITE keeps Timer F, 17.1.2.2) */
  provisional(ct: ClientTx): void {
    this.clock.clearTimer(ct.timerA);
    if (ct.state !== 'calling' && ct.state !== 'trying') return;
    ct.state = 'proceeding';
    this.clock.clearTimer(ct.timer); // Timer B / F
    if (ct.method === 'INVITE') ct.timer = this.clock.setTimerWith(TIMER_C_MS, this.onTimerC, ct);
    else ct.timer = this.clock.setTimerWith(64 * this.t1, this.onTimerB, ct);
  }

  /** A 2xx on an INVITE branch: Accepted (RFC 6026 7.2), forwarding retransmissions for 64*T1.
   *  False when it was accepted already (a retransmitted 2xx). */
  acceptClient(ct: ClientTx): boolean {
    if (ct.state === 'accepted') return false;
    this.clock.clearTimer(ct.timerA);
    this.clock.clearTimer(ct.timer);
    ct.state = 'accepted';
    ct.timer = this.clock.setTimerWith(64 * this.t1, this.onEndClient, ct);
    return true;
  }

  /** resend the hop-by-hop ACK on a retransmitted non-2xx final (RFC 3261 17.1.1.2) */
  resendAck(ct: ClientTx): void {
    this.ev.retransmission?.('absorbed');
    if (ct.ack) this.wire.send(ct.dest, ct.ack, true, ct.side, 'request');
  }

  /** The INVITE we sent on ct, parsed again for its ACK or CANCEL (rare: failed calls and
   *  cancels): the stored bytes are the template, nothing else is kept per transaction. */
  private sentRequest(ct: ClientTx): SipRequest | undefined {
    const sent = parseMessage(Buffer.from(ct.sent, 'latin1'), { framing: 'datagram' });
    return sent.ok && sent.msg.kind === 'request' ? sent.msg : undefined;
  }

  ackNon2xx(ct: ClientTx, res: SipResponse): void {
    this.clock.clearTimer(ct.timerA);
    this.clock.clearTimer(ct.timer);
    const sent = this.sentRequest(ct);
    if (sent) {
      // RFC 3261 17.1.1.3: one Via, equal to the top Via of the INVITE we sent
      ct.ack = buildHopRequest('ACK', sent, H.first(sent, 'via') ?? '', H.first(res, 'to'));
      this.wire.send(ct.dest, ct.ack, true, ct.side, 'request');
    }
    ct.state = 'completed';
    // Timer D: 32 s over UDP to absorb retransmitted finals, 0 over reliable transports
    ct.timer = this.clock.setTimerWith(ct.dest.transport === 'udp' ? Math.max(32_000, 64 * this.t1) : 0, this.onEndClient, ct);
  }

  sendCancel(ct: ClientTx): void {
    if (ct.cancel) return;
    const sent = this.sentRequest(ct);
    if (!sent) return;
    // RFC 3261 9.1: the CANCEL's Via is the INVITE's top Via (ours: the first line we wrote)
    const bytes = buildHopRequest('CANCEL', sent, H.first(sent, 'via') ?? '');
    const cancel: ClientTx = {
      key: TransactionTable.clientKey(TransactionTable.branchOf(ct.key), 'CANCEL'), method: 'CANCEL', server: ct.server,
      dest: ct.dest, sent: bytes.toString('latin1'), received: undefined, state: 'trying', upstream: undefined, failover: undefined,
      tried: [], retransmitMs: this.t1,
      timerA: undefined, timer: undefined, ack: undefined, cancel: undefined, cancels: ct,
      side: ct.side,
    };
    ct.cancel = cancel;
    this.table.client.set(cancel.key, cancel);
    this.wire.send(ct.dest, bytes, true, ct.side, 'request');
    this.startClientTimers(cancel);
  }

  completeClient(ct: ClientTx): void {
    this.clock.clearTimer(ct.timerA);
    this.clock.clearTimer(ct.timer);
    ct.state = 'completed';
    // Timer K: T4 over UDP, 0 otherwise (RFC 3261 17.1.2.2)
    ct.timer = this.clock.setTimerWith(ct.dest.transport === 'udp' ? this.t4 : 0, this.onEndClient, ct);
  }

  endClient(ct: ClientTx): void {
    ct.state = 'terminated';
    this.clock.clearTimer(ct.timerA);
    this.clock.clearTimer(ct.timer);
    this.table.client.delete(ct.key);
  }

  /** No answer (timeout) or the bytes could not be sent: end the branch, tell the proxy. */
  private clientFailed(ct: ClientTx, reason: 'request_timeout' | 'send_failed'): void {
    this.clock.clearTimer(ct.timerA);
    this.clock.clearTimer(ct.timer);
    ct.state = 'terminated';
    this.table.client.delete(ct.key);
    if (ct.cancels) return; // a CANCEL that timed out: the INVITE's own timers decide
    this.up.branchFailed(ct, reason);
  }

  // ---------------------------------------------------------------- timers

  // The timer handlers: one function each per layer, the transaction as argument (no closure per
  // transaction and timer: with 100,000 live transactions those were a tenth of their memory).

  /** Timer A (INVITE) / E (non-INVITE): retransmit, doubling, non-INVITE capped at T2 */
  private readonly onTimerA = (ct: ClientTx): void => {
    const invite = ct.method === 'INVITE';
    if (ct.state === 'calling' || ct.state === 'trying' || (!invite && ct.state === 'proceeding')) {
      this.ev.retransmission?.('sent');
      this.wire.send(ct.dest, Buffer.from(ct.sent, 'latin1'), true, ct.side, 'request');
      ct.retransmitMs = invite ? ct.retransmitMs * 2 : Math.min(ct.retransmitMs * 2, this.t2);
      if (!invite && ct.state === 'proceeding') ct.retransmitMs = this.t2;
      ct.timerA = this.clock.setTimerWith(ct.retransmitMs, this.onTimerA, ct);
    }
  };

  /** Timer B / F: 64*T1 without a final (INVITE: without any response; non-INVITE: Timer F keeps
   *  running in Proceeding, RFC 3261 17.1.2.2) */
  private readonly onTimerB = (ct: ClientTx): void => {
    if (ct.state === 'calling' || ct.state === 'trying' || (ct.method !== 'INVITE' && ct.state === 'proceeding')) this.clientFailed(ct, 'request_timeout');
  };

  /** Timer C (RFC 3261 16.8): cancel the ringing branch; the proxy answers 408 */
  private readonly onTimerC = (ct: ClientTx): void => {
    if (ct.state !== 'proceeding') return;
    this.sendCancel(ct);
    this.up.timerC(ct);
  };

  private readonly onEndClient = (ct: ClientTx): void => this.endClient(ct);
  private readonly onEndServer = (st: ServerTx): void => this.endServer(st);

  /** Timer G: retransmit a non-2xx final to an INVITE until the ACK comes (RFC 3261 17.2.1) */
  private readonly onTimerG = (st: ServerTx): void => {
    if (st.state !== 'completed' || !st.lastResponse) return;
    this.ev.retransmission?.('sent');
    this.wire.send(st.source, st.lastResponse, false, st.side, 'response');
    st.gInterval = Math.min(st.gInterval * 2, this.t2);
    st.timerG = this.clock.setTimerWith(st.gInterval, this.onTimerG, st);
  };
}
