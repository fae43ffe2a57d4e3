// A RulesSnapshot for stage tests: the empty pieces the loader uses for missing files, with the
// parts a test cares about replaced.
import { EMPTY_ACCESS, EMPTY_GEO, EMPTY_SCANNER } from '../../edge/policy/load';
import { defaultLimits } from '../../edge/policy/limits/compile';
import { defaultCacRules, defaultFraudRules } from '../../edge/policy/cac/rules';
import type { RulesSnapshot } from '../../edge/policy/snapshot';

export function snapshotWith(over: Partial<RulesSnapshot> = {}): RulesSnapshot {
  return {
    version: 'test', loadedAt: new Date(0).toISOString(), files: [],
    stages: [{ name: 'sanity', mode: 'enforce' }],
    trustedSkip: new Set(),
    scanner: EMPTY_SCANNER,
    access: EMPTY_ACCESS,
    geoip: EMPTY_GEO,
    limits: defaultLimits(),
    authClients: null,
    cac: defaultCacRules(),
    fraud: defaultFraudRules(),
    ruleNames: [],
    ...over,
  };
}
