// The policy stages built from the rule files: one instance of each stage for the life of the
// process (they read the current snapshot per message), arranged in the order and modes the
// snapshot says, and the GeoIP databases the geoip rules name.
import { openGeoDatabases, type OpenedGeo, type ReloadEvent } from '../../geoip/db';
import type { RulesSnapshot } from './snapshot';
import type { StageEntry } from '../pipeline';
import { createAccessStage } from './access/stage';
import { createGeoStage } from './geo/stage';
import { createSanityStage } from '../stages/sanity';
import { createScannerStage } from './scanner/stage';
import { createRateLimitStage } from './limits/ratelimit';
import type { SharedStore } from '../store/types';
import type { Suspicion } from '../suspicion';
import type { Stage } from '../verdict';
import type { KnownStage } from './schema';

export interface Policy {
  /** every stage the rules can name, by name (a closed set: the rules schema's KNOWN_STAGES) */
  readonly stages: ReadonlyMap<KnownStage, Stage>;
  /** pipeline entries for a snapshot (order, modes, trusted skips), then `extra` */
  entries(s: RulesSnapshot, extra?: readonly StageEntry[]): StageEntry[];
  /** reopen the GeoIP databases when a reload changed their paths; errors are returned */
  reopenGeo(s: RulesSnapshot): Promise<readonly string[]>;
  /** errors from opening the GeoIP databases at start (the stage then sees unknown countries) */
  readonly geoErrors: readonly string[];
  close(): void;
}

export async function createPolicy(
  current: () => RulesSnapshot,
  deps?: { store: SharedStore; suspicion: Suspicion; auth?: Stage; ping?: Stage; userlimit?: Stage; cac?: Stage },
  /** a GeoIP database file changed on disk and was reopened (or kept, when the new file is bad) */
  onGeoReload?: (e: ReloadEvent) => void,
): Promise<Policy> {
  const first = current();
  const geoOpts = { watch: true, ...(onGeoReload ? { onReload: onGeoReload } : {}) };
  let geo: OpenedGeo = await openGeoDatabases({ countryDb: first.geoip.countryDb, asnDb: first.geoip.asnDb }, geoOpts);
  let geoPaths = `${first.geoip.countryDb}|${first.geoip.asnDb}`;
  const stages = new Map<KnownStage, Stage>([
    ['sanity', createSanityStage()],
    ['access', createAccessStage(current)],
    ['scanner', createScannerStage(current)],
    ['geoip', createGeoStage(current, { lookup: (a) => geo.lookup(a) })],
  ]);
  // explain runs without shared state: the ratelimit stage exists only in a running edge
  if (deps) stages.set('ratelimit', createRateLimitStage({ rules: current, store: deps.store, suspicion: deps.suspicion }));
  // the auth and ping stages need the proxy (served names, own addresses) and the users files:
  // the edge builds them and hands them in
  if (deps?.ping) stages.set('ping', deps.ping);
  if (deps?.auth) stages.set('auth', deps.auth);
  // the per-user budgets: the edge also feeds it the PBX's acceptances (pbx auth mode)
  if (deps?.userlimit) stages.set('userlimit', deps.userlimit);
  // call admission control and fraud signals (issue 16): the edge owns its dialog leases and locks
  if (deps?.cac) stages.set('cac', deps.cac);
  return {
    stages,
    geoErrors: geo.errors,
    entries(s, extra = []) {
      const out: StageEntry[] = [];
      for (const st of s.stages) {
        const stage = stages.get(st.name);
        if (!stage) continue;
        out.push({ stage, mode: st.mode, ...(s.trustedSkip.has(st.name) && st.name !== 'sanity' ? { skipTrusted: true } : {}) });
      }
      return [...out, ...extra];
    },
    async reopenGeo(s) {
      const paths = `${s.geoip.countryDb}|${s.geoip.asnDb}`;
      if (paths === geoPaths) return [];
      const next = await openGeoDatabases({ countryDb: s.geoip.countryDb, asnDb: s.geoip.asnDb }, geoOpts);
      const old = geo;
      geo = next;
      geoPaths = paths;
      old.close();
      return next.errors;
    },
    close() { geo.close(); },
  };
}
