// Child processes a test starts (sipp, the edge, a private redis-server) must never outlive the
// test process: each harness keeps its own set, killed on exit or on demand. eachLine reads what
// they write, line by line.
import type { ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';

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

/** Calls onLine with each complete line (without its \n) a child writes to `stream`, read as
 *  UTF-8; the returned function gives the unterminated rest (what a dying process left). */
export function eachLine(stream: Readable | null | undefined, onLine: (line: string) => void): () => string {
  let buf = '';
  stream?.setEncoding('utf8').on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      onLine(line);
    }
  });
  return () => buf;
}
