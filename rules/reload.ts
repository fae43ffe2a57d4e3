// Holds the active RulesSnapshot and replaces it on reload. A reload builds a whole new snapshot
// off to the side and swaps it in with one reference assignment: a message sees either the old
// rules or the new ones, never a mix (stages read `current()` once per message). A rule set that
// does not load leaves the old snapshot active and reports its errors; the caller logs them and
// counts metrics.rulesReload(false). Live transactions are untouched by design: the proxy does
// not read rules.
//
// watch(): fs.watch on the rules directory and on the directories of every list file, debounced,
// so that an editor's write-to-temp-then-rename save (a new inode the old watch would miss) and
// a burst of writes both end in one reload.
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadRules } from './load';
import type { LoadRulesOptions } from './load';
import type { RulesSnapshot } from './types';

export type ReloadResult =
  | { readonly ok: true; readonly version: string; /** false when the files hashed the same: the old snapshot stays */ readonly changed: boolean }
  | { readonly ok: false; readonly errors: readonly string[] };

export interface RulesHolderOptions extends LoadRulesOptions {
  /** quiet time after the last file event before reloading (default 200 ms) */
  readonly debounceMs?: number;
}

export class RulesLoadError extends Error {
  constructor(readonly errors: readonly string[]) {
    super(`rules did not load:\n${errors.join('\n')}`);
    this.name = 'RulesLoadError';
  }
}

export interface RulesHolder {
  on(event: 'reloaded', listener: (snapshot: RulesSnapshot, previous: RulesSnapshot) => void): this;
  on(event: 'failed', listener: (errors: readonly string[]) => void): this;
  once(event: 'reloaded', listener: (snapshot: RulesSnapshot, previous: RulesSnapshot) => void): this;
  once(event: 'failed', listener: (errors: readonly string[]) => void): this;
}

export class RulesHolder extends EventEmitter {
  private snapshot: RulesSnapshot;
  private readonly watchers = new Map<string, fs.FSWatcher>();
  private timer: NodeJS.Timeout | undefined;
  private watching = false;
  private closed = false;
  private readonly debounceMs: number;

  /** Loads the rules once; throws RulesLoadError (with every file:line:col error) when they do
   *  not load: at startup there is no old snapshot to keep. Use RulesHolder.create() for a value. */
  constructor(readonly dir: string, private readonly opts: RulesHolderOptions = {}) {
    super();
    const r = loadRules(dir, opts);
    if (!r.ok) throw new RulesLoadError(r.errors);
    this.snapshot = r.snapshot;
    this.debounceMs = opts.debounceMs ?? 200;
  }

  /** Non-throwing constructor for startup code that wants to print the errors itself. */
  static create(dir: string, opts: RulesHolderOptions = {}): { ok: true; holder: RulesHolder } | { ok: false; errors: readonly string[] } {
    try {
      return { ok: true, holder: new RulesHolder(dir, opts) };
    } catch (e) {
      if (e instanceof RulesLoadError) return { ok: false, errors: e.errors };
      return { ok: false, errors: [`${dir}: ${e instanceof Error ? e.message : String(e)}`] };
    }
  }

  /** the active snapshot; read it once per message */
  current(): RulesSnapshot {
    return this.snapshot;
  }

  /** Reload now. Emits 'reloaded' (new snapshot, previous) when the rules changed, 'failed' on errors. */
  reload(): ReloadResult {
    const r = loadRules(this.dir, this.opts);
    if (!r.ok) {
      this.emit('failed', r.errors);
      return { ok: false, errors: r.errors };
    }
    const previous = this.snapshot;
    if (r.snapshot.version === previous.version) {
      // same bytes: keep the old snapshot (its loadedAt stays meaningful); nothing to announce
      if (this.watching) this.rewatch(r.snapshot);
      return { ok: true, version: previous.version, changed: false };
    }
    this.snapshot = r.snapshot; // the atomic swap
    if (this.watching) this.rewatch(r.snapshot);
    this.emit('reloaded', r.snapshot, previous);
    return { ok: true, version: r.snapshot.version, changed: true };
  }

  /** Watch the rules directory and the list files; reload after ~debounceMs of quiet. */
  watch(): void {
    if (this.closed || this.watching) return;
    this.watching = true;
    this.rewatch(this.snapshot);
  }

  /** stop watching; pending debounced reloads are cancelled */
  close(): void {
    this.closed = true;
    this.watching = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
  }

  /** the directories to watch: the rules dir (files may appear there) and every file's dir */
  private rewatch(s: RulesSnapshot): void {
    const dirs = new Set<string>([path.resolve(this.dir)]);
    for (const f of s.files) dirs.add(path.dirname(f));
    const lists = path.join(path.resolve(this.dir), 'lists');
    if (fs.existsSync(lists)) dirs.add(lists);
    for (const [d, w] of this.watchers) {
      if (!dirs.has(d)) { w.close(); this.watchers.delete(d); }
    }
    for (const d of dirs) {
      if (this.watchers.has(d)) continue;
      try {
        const w = fs.watch(d, { persistent: false }, () => this.schedule());
        // a watched directory that goes away (or a watch error) must not crash the process;
        // the next successful reload watches again
        w.on('error', () => { w.close(); this.watchers.delete(d); });
        this.watchers.set(d, w);
      } catch {
        // directory vanished between listing and watching: the next reload retries
      }
    }
  }

  private schedule(): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (!this.closed) this.reload();
    }, this.debounceMs);
    this.timer.unref?.();
  }
}
