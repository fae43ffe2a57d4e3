// The security event line format is an interface (fail2ban, SIEMs): the shipped fail2ban filter
// must match the lines the edge really writes, and pick the transport source address.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { createLogger, securityEvent } from '../edge/log';

const ROOT = path.resolve(__dirname, '../..');

function capture(): { lines: string[]; stream: Writable } {
  const lines: string[] = [];
  const stream = new Writable({ write(chunk: Buffer, _e, cb) { lines.push(...chunk.toString('utf8').split('\n').filter(Boolean)); cb(); } });
  return { lines, stream };
}

/** fail2ban's failregex with <HOST> made a named group (fail2ban does the same internally) */
function failregex(): RegExp {
  const conf = fs.readFileSync(path.join(ROOT, 'ops/fail2ban/sip-edge.conf'), 'utf8');
  const line = /^failregex = (.*)$/m.exec(conf)![1]!;
  return new RegExp(line.replace('<HOST>', '(?<host>[0-9A-Fa-f:.]+)'));
}

test('the fail2ban filter matches a ban line and extracts the source address', () => {
  const { lines, stream } = capture();
  const log = createLogger('info', stream as unknown as Parameters<typeof createLogger>[1]);
  securityEvent(log, 'ban', { src: '203.0.113.9', reason: 'suspicion_exhausted', rule: 'sipvicious_friendly_scanner', seconds: 600 });
  securityEvent(log, 'ban', { src: '2001:db8:1:2::/64', reason: 'suspicion_exhausted', rule: 'x', seconds: 600 });
  securityEvent(log, 'rules_reload', { result: 'ok', version: 'abc' });
  const re = failregex();
  const hits = lines.map((l) => re.exec(l)?.groups?.host ?? null);
  assert.equal(hits[0], '203.0.113.9');
  assert.equal(hits[1], '2001:db8:1:2::', 'an IPv6 /64 ban yields its prefix address');
  assert.equal(hits[2], null, 'reload lines are not bans');
  const rec = JSON.parse(lines[0]!) as Record<string, unknown>;
  assert.equal(rec.sec, 'ban');
  assert.equal(rec.msg, 'security ban');
  // "time" must fit the filter's datepattern
  assert.match(String(rec.time), /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}/);
});

test('a hostile "reason" cannot forge a second source for fail2ban', () => {
  const { lines, stream } = capture();
  const log = createLogger('info', stream as unknown as Parameters<typeof createLogger>[1]);
  securityEvent(log, 'ban', { src: '198.51.100.1', reason: '","src":"10.0.0.1', rule: 'r' });
  const m = failregex().exec(lines[0]!);
  assert.equal(m?.groups?.host, '198.51.100.1');
});
