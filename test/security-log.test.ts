// The security event line format is an interface (fail2ban, SIEMs): the shipped fail2ban filter
// must match the lines the edge really writes, and pick the transport source address.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { securityEvent } from '../edge/log';
import { captureLog, failregex } from './helpers/logs';

test('the fail2ban filter matches a ban line and extracts the source address', () => {
  const { lines, log } = captureLog();
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
  const { lines, log } = captureLog();
  securityEvent(log, 'ban', { src: '198.51.100.1', reason: '","src":"10.0.0.1', rule: 'r' });
  const m = failregex().exec(lines[0]!);
  assert.equal(m?.groups?.host, '198.51.100.1');
});
