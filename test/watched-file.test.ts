// lib/watched-file.ts, the one watch-and-swap holder behind the rules, the users files and the
// GeoIP databases: debounce, keep-old-on-error, editors that save by rename, close(), the
// stat check for a file's directory, one asynchronous load at a time. Real files in a temp dir
// and real fs.watch events; waits are bounded guards, never timing assertions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileStamp, WatchedFile, type Loaded, type Swapped, type WatchedFileOptions } from '../lib/watched-file';
import { tempDir } from './helpers/tmp';

const { dir: TMP } = tempDir('sipedge-watched-');
let n = 0;

/** a fresh directory holding `name` with `text` */
function fresh(text: string, name = 'value.txt'): { dir: string; file: string } {
  const dir = path.join(TMP, `d${n++}`);
  fs.mkdirSync(dir);
  const file = path.join(dir, name);
  fs.writeFileSync(file, text);
  return { dir, file };
}

/** the file's text is the value; a text containing BAD does not load */
function readValue(file: string): Loaded<string> {
  const t = fs.readFileSync(file, 'utf8');
  return t.includes('BAD') ? { ok: false, errors: [`${file}:1: BAD is not a value`] } : { ok: true, value: t };
}

class TextFile extends WatchedFile<string> {
  loads = 0;
  constructor(readonly file: string, opts: Omit<WatchedFileOptions<string>, 'file'> & { oneFile?: boolean } = {}) {
    const stamp = fileStamp(file);
    const first = readValue(file);
    assert.ok(first.ok);
    super(first.value, { ...(opts.oneFile === false ? { dirs: () => [path.dirname(file)] } : { file }), same: (a, b) => a === b, debounceMs: 40, ...opts }, stamp);
  }

  reload(): Swapped<string> {
    return this.load(() => {
      this.loads++;
      return readValue(this.file);
    });
  }
}

type Event = { kind: 'reloaded'; value: string; previous: string } | { kind: 'failed'; errors: readonly string[] };

/** every event in order, and a way to wait for the next one (bounded: a broken watcher fails the
 *  test instead of hanging it) */
function record(h: WatchedFile<string>): { events: Event[]; next: () => Promise<Event> } {
  const events: Event[] = [];
  let seen = 0;
  let wake: (() => void) | undefined;
  h.on('reloaded', (value, previous) => { events.push({ kind: 'reloaded', value, previous }); wake?.(); });
  h.on('failed', (errors) => { events.push({ kind: 'failed', errors }); wake?.(); });
  const next = async (): Promise<Event> => {
    const deadline = Date.now() + 10_000;
    while (events.length <= seen) {
      if (Date.now() > deadline) throw new Error(`no event within 10 s (have ${JSON.stringify(events)})`);
      await new Promise<void>((r) => { wake = r; setTimeout(r, 100); });
    }
    return events[seen++]!;
  };
  return { events, next };
}

const settle = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

test('a burst of writes is one reload (debounce), and the new value is swapped in whole', async () => {
  const { dir, file } = fresh('v0');
  // directory-wide (no stat check, which would hide a missing debounce), and two files written in
  // turn: inotify merges identical consecutive events, so one file alone could arrive as one event
  const h = new TextFile(file, { oneFile: false, debounceMs: 300 });
  const rec = record(h);
  try {
    h.watch();
    for (let i = 1; i <= 20; i++) {
      fs.writeFileSync(file, `v${i}`);
      fs.writeFileSync(path.join(dir, 'neighbour.txt'), `n${i}`);
    }
    assert.deepEqual(await rec.next(), { kind: 'reloaded', value: 'v20', previous: 'v0' });
    assert.equal(h.current(), 'v20');
    await settle(900); // three more debounce periods: a second reload of the burst would show here
    assert.equal(h.loads, 1, 'forty writes, one load');
    assert.equal(rec.events.length, 1);
  } finally {
    h.close();
  }
});

test('a bad edit keeps the old value and says why; the fix is picked up', async () => {
  const { file } = fresh('good-1');
  const h = new TextFile(file);
  const rec = record(h);
  try {
    h.watch();
    fs.writeFileSync(file, 'BAD edit');
    assert.deepEqual(await rec.next(), { kind: 'failed', errors: [`${file}:1: BAD is not a value`] });
    assert.equal(h.current(), 'good-1');
    fs.writeFileSync(file, 'good-2');
    assert.deepEqual(await rec.next(), { kind: 'reloaded', value: 'good-2', previous: 'good-1' });
    // an explicit reload of the same content: no swap, no event
    assert.deepEqual(h.reload(), { ok: true, value: 'good-2', changed: false });
    // the file deleted: a failed load (the loader threw), the old value stays
    fs.unlinkSync(file);
    const r = h.reload();
    assert.equal(r.ok, false);
    assert.match(r.ok ? '' : r.errors[0]!, /ENOENT/);
    assert.equal(h.current(), 'good-2');
    assert.deepEqual(rec.events.map((e) => e.kind), ['failed', 'reloaded', 'failed']);
  } finally {
    h.close();
  }
});

test('editors that save by rename: every replacement is seen, not only the first (the watch is on the directory)', async () => {
  const { dir, file } = fresh('r0');
  const h = new TextFile(file);
  const rec = record(h);
  try {
    h.watch();
    for (const v of ['r1', 'r2', 'r3']) {
      const tmp = path.join(dir, `.value.txt.${v}.swp`);
      fs.writeFileSync(tmp, v);
      fs.renameSync(tmp, file);
      const e = await rec.next();
      assert.deepEqual(e, { kind: 'reloaded', value: v, previous: `r${Number(v[1]) - 1}` });
    }
  } finally {
    h.close();
  }
});

test('another file changing in the directory does not reload a one-file value (stat check)', async () => {
  const { dir, file } = fresh('only');
  const h = new TextFile(file);
  const rec = record(h);
  try {
    h.watch();
    fs.writeFileSync(path.join(dir, 'neighbour.txt'), 'x');
    fs.writeFileSync(path.join(dir, 'neighbour.txt'), 'y');
    await settle(400); // ten debounce periods
    assert.equal(h.loads, 0, 'the value file did not change: no read');
    // the same holder without the one-file stat check reads on any event in the directory
    const dirWide = new TextFile(file, { oneFile: false });
    try {
      dirWide.watch();
      fs.writeFileSync(path.join(dir, 'neighbour.txt'), 'z');
      const deadline = Date.now() + 10_000;
      while (dirWide.loads === 0 && Date.now() < deadline) await settle(20);
      assert.equal(dirWide.loads, 1);
    } finally {
      dirWide.close();
    }
    fs.writeFileSync(file, 'changed');
    assert.deepEqual(await rec.next(), { kind: 'reloaded', value: 'changed', previous: 'only' });
  } finally {
    h.close();
  }
});

test('close() stops watching and cancels a pending reload; the value stays readable', async () => {
  const { file } = fresh('c0');
  const h = new TextFile(file, { debounceMs: 100 });
  const rec = record(h);
  h.watch();
  fs.writeFileSync(file, 'c1'); // an event now, a reload due in 100 ms ...
  await settle(20);
  h.close(); // ... cancelled
  fs.writeFileSync(file, 'c2');
  await settle(500);
  assert.deepEqual(rec.events, []);
  assert.equal(h.loads, 0);
  assert.equal(h.current(), 'c0');
  assert.equal(h.closed, true);
  h.watch(); // no effect after close
  fs.writeFileSync(file, 'c3');
  await settle(300);
  assert.equal(h.loads, 0);
});

test('a directory that cannot be watched is reported, never thrown; reload() still works', () => {
  const { file } = fresh('w0');
  const missing = path.join(TMP, 'not-there');
  const h = new TextFile(file, { dirs: () => [missing] });
  const reported: string[] = [];
  h.on('watchError', (d) => reported.push(d));
  h.watch();
  assert.deepEqual(reported, [missing]);
  fs.writeFileSync(file, 'w1');
  assert.deepEqual(h.reload(), { ok: true, value: 'w1', changed: true });
  h.close();
});

class AsyncValue extends WatchedFile<number> {
  calls = 0;
  readonly gates: Array<(r: Loaded<number>) => void> = [];
  constructor() {
    super(0, {});
  }

  reload(): Promise<Swapped<number>> {
    return this.loadAsync(() => {
      this.calls++;
      return new Promise<Loaded<number>>((resolve) => this.gates.push(resolve));
    });
  }
}

test('asynchronous loads run one at a time; calls made meanwhile fold into one more load', async () => {
  const h = new AsyncValue();
  const swaps: number[] = [];
  h.on('reloaded', (v) => swaps.push(v));
  const a = h.reload();
  const b = h.reload();
  const c = h.reload();
  assert.equal(h.calls, 1, 'one load in flight');
  h.gates.shift()!({ ok: true, value: 1 });
  await new Promise((r) => setImmediate(r));
  assert.equal(h.calls, 2, 'the two calls made meanwhile: one more load');
  h.gates.shift()!({ ok: false, errors: ['broken'] });
  const results = await Promise.all([a, b, c]);
  for (const r of results) assert.deepEqual(r, { ok: false, errors: ['broken'] }, 'every caller gets the last load\'s outcome');
  assert.equal(h.current(), 1, 'the failed second load kept the first one\'s value');
  assert.deepEqual(swaps, [1]);
  assert.equal(h.calls, 2);
  // a load still running when close() is called is discarded
  const d = h.reload();
  h.close();
  h.gates.shift()!({ ok: true, value: 9 });
  assert.deepEqual(await d, { ok: false, errors: ['closed'] });
  assert.equal(h.current(), 1);
});

test('lib/ imports nothing of the project; geoip/ nothing from edge/ or rules/ (leaf libraries)', () => {
  const root = path.resolve(__dirname, '../..');
  const imports = (dir: string): Array<[string, string]> => fs.readdirSync(path.join(root, dir)).filter((f) => f.endsWith('.ts')).flatMap((f) =>
    [...fs.readFileSync(path.join(root, dir, f), 'utf8').matchAll(/^import[^;]*? from '([^']+)'/gm)].map((m): [string, string] => [`${dir}/${f}`, m[1]!]));
  const lib = imports('lib');
  assert.ok(lib.length > 0);
  assert.deepEqual(lib.filter(([, m]) => m.startsWith('.')), []);
  const geo = imports('geoip');
  assert.ok(geo.some(([, m]) => m === '../lib/watched-file'));
  assert.deepEqual(geo.filter(([, m]) => /^\.\.\/(edge|rules)\b/.test(m)), []);
});
