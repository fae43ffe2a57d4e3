// Holds the active RulesSnapshot and replaces it on reload. A reload builds a whole new snapshot
// off to the side and swaps it in with one reference assignment: a message sees either the old
// rules or the new ones, never a mix (stages read `current()` once per message). A rule set that
// does not load leaves the old snapshot active and reports its errors; the caller logs them and
// counts metrics.rulesReload(false). Live transactions are untouched by design: the proxy does
// not read rules.
//
// watch(): the rules directory, lists/ and the directory of every file the rules name, through
// lib/watched-file.ts (debounce, swap, keep-old-on-error and the 'reloaded' / 'failed' events,
// the same holder as the users files and the GeoIP databases).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { WatchedFile } from '../../lib/watched-file';
import { loadRules } from './load';
import type { LoadRulesOptions } from './load';
import type { RulesSnapshot } from './snapshot';

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

export class RulesHolder extends WatchedFile<RulesSnapshot> {
  /** Loads the rules once; throws RulesLoadError (with every file:line:col error) when they do
   *  not load: at startup there is no old snapshot to keep. Use RulesHolder.create() for a value. */
  constructor(readonly dir: string, private readonly opts: RulesHolderOptions = {}) {
    const r = loadRules(dir, opts);
    if (!r.ok) throw new RulesLoadError(r.errors);
    super(r.snapshot, {
      dirs: (s) => watchedDirs(dir, s),
      // same bytes: keep the old snapshot (its loadedAt stays meaningful); nothing to announce
      same: (next, previous) => next.version === previous.version,
      ...(opts.debounceMs !== undefined ? { debounceMs: opts.debounceMs } : {}),
    });
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

  /** Reload now. Emits 'reloaded' (new snapshot, previous) when the rules changed, 'failed' on errors. */
  reload(): ReloadResult {
    const r = this.load(() => {
      const l = loadRules(this.dir, this.opts);
      return l.ok ? { ok: true, value: l.snapshot } : l;
    });
    return r.ok ? { ok: true, version: r.value.version, changed: r.changed } : r;
  }
}

/** the rules directory (files may appear there), lists/ and the directory of every file */
function watchedDirs(dir: string, s: RulesSnapshot): string[] {
  const dirs = new Set<string>([path.resolve(dir)]);
  for (const f of s.files) dirs.add(path.dirname(f));
  const lists = path.join(path.resolve(dir), 'lists');
  if (fs.existsSync(lists)) dirs.add(lists);
  return [...dirs];
}
