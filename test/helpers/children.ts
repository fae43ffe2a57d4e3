// Child processes a test starts (sipp, the edge, a private redis-server) must never outlive the
// test process: each harness keeps its own set, killed on exit or on demand.
import type { ChildProcess } from 'node:child_process';

export interface ChildSet {
  track(c: ChildProcess): void;
  /** SIGKILL every tracked child still running */
  killAll(): void;
}

export function childSet(): ChildSet {
  const live = new Set<ChildProcess>();
  let hooked = false;
  const killAll = (): void => {
    for (const c of live) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    live.clear();
  };
  return {
    killAll,
    track(c) {
      live.add(c);
      c.once('exit', () => live.delete(c));
      if (!hooked) {
        hooked = true;
        process.once('exit', killAll);
      }
    },
  };
}
