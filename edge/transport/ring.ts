// A single-producer single-consumer byte ring over a SharedArrayBuffer: how the UDP I/O thread
// (udp-io.ts) and the event-loop thread hand datagrams to each other without a postMessage (a
// structured clone and a wake-up per message) or a syscall per message. The producer copies a
// record in and publishes it with one atomic store; the consumer reads records in place and
// publishes how far it has read. Only a consumer that has gone to sleep costs the producer a
// notify (Atomics.waitAsync on the other side), so under load the threads never wake each other.
//
// Record: u32 length of the body, then the body, padded to 4 bytes. A length of WRAP at the end
// of the buffer means "continue at offset 0". Positions are byte offsets in [0, capacity); the
// producer never fills the last 4 bytes before the consumer's position, so write === read means
// empty.

const W = 0; // producer position
const R = 1; // consumer position
const SLEEPING = 2; // 1 while the consumer waits (or is about to)
const SEQ = 3; // bumped by the producer to wake a sleeping consumer
const DROPPED = 4; // records refused because the ring was full
const CTL_INTS = 8;
const WRAP = 0xffffffff;
const HEADER = 4;

export interface RingBuffers {
  readonly ctl: SharedArrayBuffer;
  readonly data: SharedArrayBuffer;
}

export function allocRing(capacity: number): RingBuffers {
  // a power of two is not needed; a multiple of 4 keeps every record header aligned
  const cap = Math.max(1024, Math.ceil(capacity / 4) * 4);
  return { ctl: new SharedArrayBuffer(CTL_INTS * 4), data: new SharedArrayBuffer(cap) };
}

// ES2024 (Node 16+); TypeScript's lib for our target does not declare it yet
type WaitAsync = (a: Int32Array, index: number, value: number) => { async: false; value: string } | { async: true; value: Promise<string> };
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

const pad = (n: number): number => (n + 3) & ~3;

export class RingWriter {
  private readonly ctl: Int32Array;
  private readonly buf: Buffer;
  private readonly cap: number;
  private w: number;
  private start = 0;
  private len = 0;

  constructor(rb: RingBuffers) {
    this.ctl = new Int32Array(rb.ctl);
    this.buf = Buffer.from(rb.data);
    this.cap = rb.data.byteLength;
    this.w = Atomics.load(this.ctl, W);
  }

  /** Reserve a record of `n` body bytes: returns the buffer offset to write the body at, or -1
   *  when the ring has no room (the caller drops the record, as a full socket queue would). The
   *  record is invisible to the consumer until commit(). */
  reserve(n: number): number {
    const need = HEADER + pad(n);
    if (need + HEADER > this.cap) return -1;
    const r = Atomics.load(this.ctl, R);
    let w = this.w;
    // free bytes between w and r, leaving 4 so that a full ring never looks empty
    if (w + need > this.cap - HEADER) {
      // no room for the record (and a wrap marker after it) at the end: wrap to 0, if the
      // consumer is not still reading the start
      if (r > w || r <= need) return -1;
      this.buf.writeUInt32LE(WRAP, w);
      w = 0;
    } else if (r > w && w + need >= r) {
      return -1;
    }
    this.start = w;
    this.len = n;
    this.w = w;
    return w + HEADER;
  }

  /** Publish the reserved record; wakes the consumer if it sleeps. */
  commit(): void {
    this.buf.writeUInt32LE(this.len, this.start);
    this.w = this.start + HEADER + pad(this.len);
    Atomics.store(this.ctl, W, this.w);
    if (Atomics.load(this.ctl, SLEEPING) === 1) {
      Atomics.store(this.ctl, SLEEPING, 0);
      Atomics.add(this.ctl, SEQ, 1);
      Atomics.notify(this.ctl, SEQ);
    }
  }

  /** count a record the caller dropped for want of room (the consumer side reads the total) */
  dropped(): void {
    Atomics.add(this.ctl, DROPPED, 1);
  }

  get buffer(): Buffer {
    return this.buf;
  }
}

export class RingReader {
  private readonly ctl: Int32Array;
  private readonly buf: Buffer;
  private r: number;

  constructor(rb: RingBuffers) {
    this.ctl = new Int32Array(rb.ctl);
    this.buf = Buffer.from(rb.data);
    this.r = Atomics.load(this.ctl, R);
  }

  get buffer(): Buffer {
    return this.buf;
  }

  /** Offset of the next record's body (its length is bodyLength()), or -1 when empty. The
   *  body stays valid until release(). */
  next(): number {
    const w = Atomics.load(this.ctl, W);
    if (this.r === w) return -1;
    // the producer publishes W only after the record that follows a wrap marker, so a marker
    // always has a record at 0 behind it
    if (this.buf.readUInt32LE(this.r) === WRAP) this.r = 0;
    return this.r + HEADER;
  }

  bodyLength(): number {
    return this.buf.readUInt32LE(this.r);
  }

  /** Done with the current record: the producer may reuse its bytes. */
  release(): void {
    this.r += HEADER + pad(this.buf.readUInt32LE(this.r));
    Atomics.store(this.ctl, R, this.r);
  }

  /** share of the ring holding unread records (0-1) */
  fill(): number {
    const used = Atomics.load(this.ctl, W) - this.r;
    return (used < 0 ? used + this.buf.length : used) / this.buf.length;
  }

  droppedTotal(): number {
    return Atomics.load(this.ctl, DROPPED);
  }

  /** Resolves when the producer may have written something: at once when the ring is not
   *  empty, else after the producer's next commit. */
  wait(): Promise<unknown> | null {
    Atomics.store(this.ctl, SLEEPING, 1);
    const seq = Atomics.load(this.ctl, SEQ);
    if (Atomics.load(this.ctl, W) !== this.r) {
      Atomics.store(this.ctl, SLEEPING, 0);
      return null;
    }
    const res = waitAsync(this.ctl, SEQ, seq);
    return res.async ? res.value : null;
  }

  /** Wake a consumer blocked in wait() without a record (used to tell it to stop). */
  static poke(rb: RingBuffers): void {
    const ctl = new Int32Array(rb.ctl);
    Atomics.add(ctl, SEQ, 1);
    Atomics.notify(ctl, SEQ);
  }
}
