// The edge's call admission control stage (issue 16): its dialog leases and fraud locks in Redis
// when the edge has one (every instance counts the same calls and sees the same locks), else in
// memory; its refusals and fraud signals reported as metrics (closed labels) and security events.
// The stage exists in every edge; it runs only when rules/stages.yaml lists `cac` (off by default:
// the limits depend on the deployment).
import type { Logger } from 'pino';
import type { ResolvedConfig } from '../../config/types';
import { securityEvent } from '../../log';
import type { EdgeMetrics } from '../../metrics';
import { MemoryLeases, RedisLeases } from '../../dialogs/leases';
import { createRedisConnection } from '../../store/redis';
import type { RulesSnapshot } from '../snapshot';
import { MemoryLocks, RedisLocks } from './fraud';
import { createCacStage, type CacStage } from './stage';

export function buildCac(cfg: ResolvedConfig, current: () => RulesSnapshot, log: Logger, metrics: () => EdgeMetrics | undefined): CacStage {
  const redis = cfg.redis ? createRedisConnection(cfg.redis.url) : undefined;
  const stage = createCacStage({
    rules: () => { const s = current(); return { cac: s.cac, fraud: s.fraud }; },
    backend: redis ? new RedisLeases(redis) : new MemoryLeases(),
    locks: redis ? new RedisLocks(redis) : new MemoryLocks(),
    events: {
      refused: (reason) => metrics()?.cacRefused?.(reason),
      fraud: (signal, level, user, cls, f) => {
        metrics()?.fraudSignal?.(signal, level);
        // the user is named: a fraud signal is about an account the operator must look at
        securityEvent(log, 'fraud_signal', { signal, level, user, class: cls, value: f.value, threshold: f.threshold, ...(level === 'critical' ? { locked: true } : {}) });
      },
      log: (level, obj, msg) => log[level](obj, msg),
    },
  });
  return {
    ...stage,
    async close() { await stage.close(); redis?.disconnect(); },
  };
}
