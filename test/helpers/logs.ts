// Log capture, for tests that check what the edge writes (the fail2ban filter is tested with
// fail2ban itself: test/ops-fail2ban.test.ts).
import { Writable } from 'node:stream';
import type { Logger } from 'pino';
import { createLogger } from '../../edge/log';

/** an info-level edge logger whose JSON lines land in `lines` */
export function captureLog(): { lines: string[]; stream: Writable; log: Logger } {
  const lines: string[] = [];
  const stream = new Writable({ write(chunk: Buffer, _e, cb) { lines.push(...chunk.toString('utf8').split('\n').filter(Boolean)); cb(); } });
  return { lines, stream, log: createLogger('info', stream as unknown as Parameters<typeof createLogger>[1]) };
}
