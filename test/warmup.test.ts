// The JIT warm-up (edge/warmup.ts): synthetic calls through a throwaway edge that leaves nothing
// behind: no socket, no shared state, no timer keeping the process alive.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../edge/config/load';
import { warmUp } from '../edge/warmup';

test('warm-up: every synthetic call goes through the full path, with the shipped config and rules', async () => {
  // the shipped defaults, plus a Redis URL nobody listens on: the throwaway edge must not use it
  const r = loadConfig({ overrides: { upstreams: ['udp:127.0.0.1:5080'], redis: 'redis://127.0.0.1:1' }, env: {} });
  assert.ok(r.ok, JSON.stringify(r));
  const count = (): Map<string, number> => {
    const m = new Map<string, number>();
    for (const x of process.getActiveResourcesInfo()) m.set(x, (m.get(x) ?? 0) + 1);
    return m;
  };
  const before = count();
  const w = await warmUp(r.config, 300);
  assert.equal(w.calls, 300);
  assert.equal(w.forwarded, 300, 'each INVITE forwarded: parser, stages, proxy and transactions all ran');
  // nothing left running: the same kinds of handles as before (the throwaway edge closed; a file
  // read it started may still be completing, so allow that a moment)
  const extra = (): string[] => [...count()].filter(([k, n]) => n > (before.get(k) ?? 0)).map(([k, n]) => `${k} x${n - (before.get(k) ?? 0)}`);
  for (let i = 0; i < 100 && extra().length > 0; i++) await new Promise((res) => setTimeout(res, 20));
  assert.deepEqual(extra(), []);
});

test('warm-up: with served domains configured the synthetic calls (to the edge\'s own address) still go through', async () => {
  const r = loadConfig({ overrides: { upstreams: ['udp:127.0.0.1:5080'], domains: ['pbx.example.com'] }, env: {} });
  assert.ok(r.ok);
  const w = await warmUp(r.config, 50);
  assert.deepEqual([w.calls, w.forwarded], [50, 50]);
});
