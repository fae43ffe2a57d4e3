// A value loaded from files on disk and swapped whole when they change: the one watch-and-reload
// holder behind the rules (edge/policy/reload.ts), the users files (edge/auth/users.ts) and the GeoIP
// databases (geoip/db.ts). A leaf module: it imports nothing from the project, so geoip/ (which
// imports nothing from edge/) uses the same one.
//
// What it owns, once for all three:
// - Watching directories, not files: editors, `sip-edge passwd`, geoipupdate and npm replace a
//   file by rename (a new inode that a watch on the old one never reports), and Kubernetes
//   ConfigMaps swap a `..data` symlink beside it.
// - Debounce: the reload runs after `debounceMs` without a new event, so a burst of writes (an
//   editor's save, an updater writing in chunks) is one reload, never a parse of half a file.
// - When the value comes from one file (users, a GeoIP database), an event reloads only if that
//   file's stat changed: another file changing in the same directory costs a stat, not a parse.
// - The atomic swap: readers call current() once per message and see the old value or the new
//   one, never a mix.
// - Keep-old-on-error: a load that fails leaves the old value in service and emits 'failed' with
//   every error; a load of the same content (`same`) keeps the old value and says nothing.
// - Events: 'reloaded' (value, previous) after a swap, 'failed' (errors) after a failed load,
//   'watchError' (directory, message) when a directory cannot be watched (removed, or never
//   there); the watch is dropped without throwing, reload() still works, and the next load that
//   succeeds watches again.
//
// Subclasses load; this class decides what a load means. A synchronous loader goes through
// load(), an asynchronous one (a GeoIP database is read without blocking the event loop) through
// loadAsync(), which runs one load at a time and folds calls made meanwhile into one more load.
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';

export type Loaded<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly errors: readonly string[] };

export type Swapped<T> =
  /** changed: false when the load gave the same content (`same`) and the old value stayed */
  | { readonly ok: true; readonly value: T; readonly changed: boolean }
  | { readonly ok: false; readonly errors: readonly string[] };

export interface WatchedFileOptions<T> {
  /** the one file the value is read from: its directory is watched, and an event reloads only
   *  when the file's stat (device, inode, size, mtime, ctime) changed */
  readonly file?: string;
  /** the directories to watch for the value in service (asked again after every successful
   *  load, so a new list file's directory is watched too); default: the directory of `file` */
  readonly dirs?: (value: T) => readonly string[];
  /** true when `next` holds the same content as `previous`: the previous value stays */
  readonly same?: (next: T, previous: T) => boolean;
  /** quiet time after the last file event before reloading (default 200 ms) */
  readonly debounceMs?: number;
}

/** What stat says about a file's content, followed through symlinks; undefined when it is gone. */
export function fileStamp(file: string): string | undefined {
  try {
    const s = fs.statSync(file, { bigint: true });
    return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
  } catch {
    return undefined;
  }
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export interface WatchedFile<T> {
  on(event: 'reloaded', listener: (value: T, previous: T) => void): this;
  on(event: 'failed', listener: (errors: readonly string[]) => void): this;
  on(event: 'watchError', listener: (dir: string, message: string) => void): this;
  once(event: 'reloaded', listener: (value: T, previous: T) => void): this;
  once(event: 'failed', listener: (errors: readonly string[]) => void): this;
  once(event: 'watchError', listener: (dir: string, message: string) => void): this;
}

export abstract class WatchedFile<T> extends EventEmitter {
  private value: T;
  private readonly watchers = new Map<string, fs.FSWatcher>();
  private timer: NodeJS.Timeout | undefined;
  private watching = false;
  private isClosed = false;
  /** stamp of `file` when the value in service was loaded; undefined after a failed load, so
   *  the next event reloads whatever stat says */
  private stamp: string | undefined;
  private inflight: Promise<Swapped<T>> | undefined;
  private again = false;
  private readonly debounceMs: number;

  /** `stamp`: fileStamp(file) taken before the initial value was read (a change between that
   *  stat and the read then reloads on the next event instead of being missed) */
  protected constructor(initial: T, private readonly wopts: WatchedFileOptions<T> = {}, stamp?: string) {
    super();
    this.value = initial;
    this.stamp = stamp;
    this.debounceMs = wopts.debounceMs ?? 200;
  }

  /** the value in service; read it once per message */
  current(): T {
    return this.value;
  }

  /** true after close() */
  get closed(): boolean {
    return this.isClosed;
  }

  /** Load now and swap: an explicit request (SIGHUP), and what the watcher calls after the
   *  debounce. Subclasses implement it with load() or loadAsync(). */
  abstract reload(): unknown;

  /** Start watching (idempotent; nothing after close()). */
  watch(): void {
    if (this.isClosed || this.watching) return;
    this.watching = true;
    this.rewatch();
  }

  /** Stop watching and cancel a pending debounced reload. The value stays readable; an
   *  asynchronous load still running when close() is called is discarded. */
  close(): void {
    this.isClosed = true;
    this.watching = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
  }

  /** Run a synchronous load and apply it. A loader that throws counts as a failed load. */
  protected load(loader: () => Loaded<T>): Swapped<T> {
    const stamp = this.wopts.file !== undefined ? fileStamp(this.wopts.file) : undefined;
    let r: Loaded<T>;
    try {
      r = loader();
    } catch (e) {
      r = { ok: false, errors: [message(e)] };
    }
    return this.settle(r, stamp);
  }

  /** Run an asynchronous load and apply it, one at a time: a call while a load runs returns that
   *  load's promise and asks for one more load after it, which the promise then resolves to. */
  protected loadAsync(loader: () => Promise<Loaded<T>>): Promise<Swapped<T>> {
    if (this.inflight !== undefined) {
      this.again = true;
      return this.inflight;
    }
    const run = async (): Promise<Swapped<T>> => {
      let out: Swapped<T>;
      try {
        const stamp = this.wopts.file !== undefined ? fileStamp(this.wopts.file) : undefined;
        let r: Loaded<T>;
        try {
          r = await loader();
        } catch (e) {
          r = { ok: false, errors: [message(e)] };
        }
        out = this.isClosed ? { ok: false, errors: ['closed'] } : this.settle(r, stamp);
      } finally {
        this.inflight = undefined;
      }
      if (this.again && !this.isClosed) {
        this.again = false;
        return this.loadAsync(loader);
      }
      this.again = false;
      return out;
    };
    this.inflight = run();
    return this.inflight;
  }

  /** keep-old-on-error, same-content check, the swap, the events, the watch list */
  private settle(r: Loaded<T>, stamp: string | undefined): Swapped<T> {
    if (!r.ok) {
      this.stamp = undefined;
      this.emit('failed', r.errors);
      return { ok: false, errors: r.errors };
    }
    this.stamp = stamp;
    const previous = this.value;
    const changed = !(this.wopts.same?.(r.value, previous) ?? false);
    if (changed) this.value = r.value; // the atomic swap
    if (this.watching) this.rewatch();
    if (changed) this.emit('reloaded', r.value, previous);
    return { ok: true, value: this.value, changed };
  }

  private rewatch(): void {
    const wanted = this.wopts.dirs !== undefined
      ? this.wopts.dirs(this.value)
      : this.wopts.file !== undefined ? [path.dirname(this.wopts.file)] : [];
    const dirs = new Set(wanted.map((d) => path.resolve(d)));
    for (const [d, w] of this.watchers) {
      if (!dirs.has(d)) {
        w.close();
        this.watchers.delete(d);
      }
    }
    for (const d of dirs) {
      if (this.watchers.has(d)) continue;
      try {
        // persistent: false, so a watch never keeps a process alive that is shutting down
        const w = fs.watch(d, { persistent: false }, () => this.schedule());
        // a watched directory that goes away must not crash the process
        w.on('error', (e) => {
          w.close();
          if (this.watchers.get(d) === w) this.watchers.delete(d);
          this.emit('watchError', d, message(e));
        });
        this.watchers.set(d, w);
      } catch (e) {
        // the directory is not there (yet): the next successful load tries again
        this.emit('watchError', d, message(e));
      }
    }
  }

  private schedule(): void {
    if (this.isClosed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.isClosed) return;
      if (this.wopts.file !== undefined) {
        const s = fileStamp(this.wopts.file);
        if (s !== undefined && s === this.stamp) return; // another file in the directory
      }
      // an asynchronous reload reports through its events; its promise never rejects
      void this.reload();
    }, this.debounceMs);
    this.timer.unref?.();
  }
}
