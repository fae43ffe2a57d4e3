// Log capture and the shipped fail2ban filter, for tests that check what the edge writes.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import type { Logger } from 'pino';
import { createLogger } from '../../edge/log';

const ROOT = path.resolve(__dirname, '../../..');

/** an info-level edge logger whose JSON lines land in `lines` */
export function captureLog(): { lines: string[]; stream: Writable; log: Logger } {
  const lines: string[] = [];
  const stream = new Writable({ write(chunk: Buffer, _e, cb) { lines.push(...chunk.toString('utf8').split('\n').filter(Boolean)); cb(); } });
  return { lines, stream, log: createLogger('info', stream as unknown as Parameters<typeof createLogger>[1]) };
}

/** fail2ban's failregex from ops/fail2ban/sip-edge.conf with <HOST> made a named group (fail2ban
 *  does the same internally) */
export function failregex(): RegExp {
  const conf = fs.readFileSync(path.join(ROOT, 'ops/fail2ban/sip-edge.conf'), 'utf8');
  const line = /^failregex = (.*)$/m.exec(conf)![1]!;
  return new RegExp(line.replace('<HOST>', '(?<host>[0-9A-Fa-f:.]+)'));
}
