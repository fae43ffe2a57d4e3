// The shared-memory ring between the UDP I/O thread and the event loop: records come out whole,
// in order, never overwritten before they are read, across wrap-arounds and between threads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { allocRing, RingReader, RingWriter } from '../edge/transport/ring';

/** deterministic bytes for record number i of length n */
function body(i: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let k = 0; k < n; k++) b[k] = (i * 31 + k * 7) & 0xff;
  return b;
}

function put(w: RingWriter, data: Buffer): boolean {
  const off = w.reserve(data.length);
  if (off < 0) return false;
  data.copy(w.buffer, off);
  w.commit();
  return true;
}

function take(r: RingReader): Buffer | null {
  const off = r.next();
  if (off < 0) return null;
  const out = Buffer.from(r.buffer.subarray(off, off + r.bodyLength()));
  r.release();
  return out;
}

test('ring: records come out whole and in order across many wrap-arounds, none lost while there is room', { timeout: 20000 }, () => {
  const rb = allocRing(1024);
  const w = new RingWriter(rb);
  const r = new RingReader(rb);
  let seed = 7;
  const rand = (m: number): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % m; };
  const pending: Buffer[] = [];
  let written = 0;
  let read = 0;
  let refused = 0;
  for (let step = 0; step < 20000; step++) {
    if (rand(3) !== 0) {
      const b = body(written, rand(300));
      if (put(w, b)) { pending.push(b); written++; } else {
        refused++;
        // refused only when the unread records leave no room for it (plus headers and padding)
        const used = pending.reduce((a, x) => a + 4 + ((x.length + 3) & ~3), 0);
        assert.ok(used + 4 + b.length > 1024 - 2 * (4 + 300 + 3), `refused with ${used} bytes in use`);
      }
    } else {
      const got = take(r);
      if (pending.length === 0) assert.equal(got, null);
      else {
        assert.deepEqual(got, pending.shift(), `record ${read}`);
        read++;
      }
    }
  }
  for (let got = take(r), k = 0; got && k < 10000; got = take(r), k++) assert.deepEqual(got, pending.shift());
  assert.equal(pending.length, 0);
  assert.ok(written > 5000 && refused > 0, `exercised: ${written} written, ${refused} refused`);
});

test('ring: a full ring refuses, reports its fill, and takes records again once read', () => {
  const rb = allocRing(4096);
  const w = new RingWriter(rb);
  const r = new RingReader(rb);
  assert.equal(r.fill(), 0);
  assert.equal(w.reserve(5000), -1, 'a record larger than the ring');
  let n = 0;
  while (n < 1000 && put(w, body(n, 100))) n++;
  assert.ok(n >= 35 && n <= 39, `${n} records of 104 bytes in 4 KiB`);
  assert.ok(r.fill() > 0.9, `fill ${r.fill()}`);
  w.dropped();
  assert.equal(r.droppedTotal(), 1);
  for (let i = 0; i < n; i++) assert.deepEqual(take(r), body(i, 100));
  assert.equal(take(r), null);
  assert.equal(r.fill(), 0);
  assert.equal(put(w, body(99, 100)), true);
  assert.deepEqual(take(r), body(99, 100));
});

test('ring: a sleeping reader wakes on the next commit; an empty ring does not wake it', async () => {
  const rb = allocRing(1024);
  const w = new RingWriter(rb);
  const r = new RingReader(rb);
  const p = r.wait();
  assert.ok(p, 'an empty ring makes the reader wait');
  let woke = false;
  void p!.then(() => { woke = true; });
  await new Promise((res) => setTimeout(res, 30));
  assert.equal(woke, false);
  put(w, body(1, 10));
  await p;
  assert.equal(woke, true);
  assert.equal(r.wait(), null, 'a non-empty ring does not wait');
  assert.deepEqual(take(r), body(1, 10));
});

test('ring: between two threads, 20,000 records through a 4 KiB ring arrive intact and in order', { timeout: 30000 }, async () => {
  const rb = allocRing(4096);
  const N = 20000;
  const ringPath = join(__dirname, '..', 'edge', 'transport', 'ring.js');
  const worker = new Worker(`
    const { workerData } = require('node:worker_threads');
    const { RingWriter } = require(workerData.ringPath);
    const w = new RingWriter(workerData.rb);
    const nap = new Int32Array(new SharedArrayBuffer(4));
    for (let i = 0; i < workerData.n; i++) {
      const n = (i * 13) % 500;
      let off;
      // a full ring: wait for the reader (bounded by the test's timeout)
      while ((off = w.reserve(n)) < 0) Atomics.wait(nap, 0, 0, 1);
      for (let k = 0; k < n; k++) w.buffer[off + k] = (i * 31 + k * 7) & 0xff;
      w.commit();
    }
  `, { eval: true, workerData: { rb, n: N, ringPath } });
  const r = new RingReader(rb);
  let i = 0;
  const deadline = Date.now() + 20000;
  try {
    while (i < N) {
      assert.ok(Date.now() < deadline, `only ${i} of ${N} records in 20 s`);
      const got = take(r);
      if (got) {
        assert.deepEqual(got, body(i, (i * 13) % 500), `record ${i}`);
        i++;
        continue;
      }
      const p = r.wait();
      if (p) await Promise.race([p, new Promise((res) => setTimeout(res, 100))]);
    }
  } finally {
    await worker.terminate();
  }
  assert.equal(take(r), null);
});
