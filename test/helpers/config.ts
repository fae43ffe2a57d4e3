// A complete ResolvedConfig for tests, with the documented defaults and short timers.
import type { ResolvedConfig } from '../../edge/config/types';
import { DEFAULT_LIMITS } from '../../edge/sip/parser';

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

export function testConfig(over: Partial<Mutable<ResolvedConfig>> = {}): ResolvedConfig {
  return {
    listen: [{ transport: 'udp', host: '127.0.0.1', port: 0 }],
    upstreams: [],
    domains: ['example.com'],
    inside: [],
    trusted: [],
    secret: 'test-secret-test-secret-test-secret',
    limits: { ...DEFAULT_LIMITS },
    tcp: { maxConnections: 100, maxConnectionsPerSource: 10, unknownPercent: 80, promotedPercent: 90, messageTimeoutMs: 5000, idleTimeoutMs: 60000 },
    udp: { ioThread: true, recvBufferBytes: 4194304 },
    transactions: { max: 1000, memoryBudgetMB: 1024, t1Ms: 500, t2Ms: 4000, t4Ms: 5000 },
    health: { intervalMs: 0, timeoutMs: 1000, failuresBeforeDown: 1, retryAfterSeconds: 30 },
    // off by default in tests: a busy test machine must not turn test calls away, and in-process
    // tests read what the edge sent right after delivering (a cold first message can spend the
    // turn's budget and queue the next); test/priority.test.ts and the spawned edges (the
    // shipped default) run with prioritization
    overload: { enabled: false, retryAfterSeconds: 5, prioritize: false, turnBudgetMs: 10, maxQueuedMB: 32 },
    proxy: { recordRoute: true, path: true, maxForwards: 70 },
    shutdownGraceMs: 100,
    warmUpCalls: 0,
    log: { level: 'silent' },
    metrics: { listen: null },
    pings: 'answer',
    ...over,
  };
}
