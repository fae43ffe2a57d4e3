// Trunk configuration (edge/config/trunks.ts) and the trunk table's verdicts
// (edge/router/trunks.ts): which destinations the PBX may reach, and with which stable reason a
// request is refused. The end-to-end behaviour with real peers is test/trunks-e2e.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../edge/config/load';
import { Trunks } from '../edge/router/trunks';
import { tempDir } from './helpers/tmp';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const { file: tmp } = tempDir('sipedge-trunks-');
const UP = { upstreams: ['udp:127.0.0.1:5080'] };

const CARRIER = [
  'trunks:',
  '  - name: carrier',
  '    addresses: [192.0.2.0/28, "2001:db8::1"]',
  '    hosts: [SIP.Carrier.Example.]',
  '    transport: tcp',
  '  - name: backup',
  '    addresses: [198.51.100.7]',
  '    inbound: { skipAuth: false }',
  '    outbound: { allowed: false }',
  '    register: { allowed: true }',
  '',
].join('\n');

test('trunks: resolved with defaults; skip-auth trunks join trusted; egress defaults to trunks once a trunk exists', () => {
  const r = loadConfig({ file: tmp(CARRIER), overrides: UP, env: {} });
  assert.ok(r.ok, JSON.stringify(r));
  assert.equal(r.config.egress, 'trunks');
  assert.deepEqual(r.config.trunks, [
    { name: 'carrier', addresses: ['192.0.2.0/28', '2001:db8::1/128'], hosts: ['sip.carrier.example'], transport: 'tcp',
      inbound: { allowed: true, skipAuth: true, callsPerSecond: 0 }, outbound: { allowed: true, callsPerSecond: 0 }, register: { allowed: false } },
    { name: 'backup', addresses: ['198.51.100.7/32'], hosts: [],
      inbound: { allowed: true, skipAuth: false, callsPerSecond: 0 }, outbound: { allowed: false, callsPerSecond: 0 }, register: { allowed: true } },
  ]);
  assert.deepEqual(r.config.trusted, ['192.0.2.0/28', '2001:db8::1/128']);
  // no trunks: the edge routes as before (egress any), so existing configs keep working
  const none = loadConfig({ overrides: UP, env: {} });
  assert.ok(none.ok);
  assert.deepEqual([none.config.trunks, none.config.egress], [[], 'any']);
  const open = loadConfig({ file: tmp(`${CARRIER}egress: any\n`), overrides: UP, env: {} });
  assert.ok(open.ok);
  assert.equal(open.config.egress, 'any');
});

test('trunks: errors at file:line (bad CIDR, IP as host, duplicate name or host, nothing to match, unknown key)', () => {
  const file = tmp([
    'trunks:',
    '  - name: a',
    '    addresses: [192.0.2.300]',
    '    hosts: [192.0.2.1]',
    '  - name: a',
    '    hosts: [x.example]',
    '  - name: b',
    '    hosts: [x.example]',
    '  - name: c',
    '',
  ].join('\n'));
  const r = loadConfig({ file, overrides: UP, env: {} });
  assert.equal(r.ok, false);
  const errs = (r as { errors: string[] }).errors.join('\n');
  assert.match(errs, /:3:\d+: trunks\[a\]\.addresses "192\.0\.2\.300"/);
  assert.match(errs, /:4:\d+: trunks\[a\]\.hosts "192\.0\.2\.1": not a host name/);
  assert.match(errs, /:5:\d+: trunks: the name "a" is used twice/);
  assert.match(errs, /:8:\d+: trunks\[b\]\.hosts "x\.example": already a host of trunk a/);
  assert.match(errs, /trunks\[c\]: needs addresses or hosts/);
  const typo = loadConfig({ file: tmp('trunks:\n  - name: a\n    hosts: [x.example]\n    outbund: { allowed: true }\n'), overrides: UP, env: {} });
  assert.equal(typo.ok, false);
});

test('egress verdicts: only configured trunks, with what each may do; any = anywhere', () => {
  const r = loadConfig({ file: tmp(CARRIER), overrides: UP, env: {} });
  assert.ok(r.ok);
  const t = new Trunks(r.config.trunks!, 'trunks');
  assert.deepEqual(t.egress('INVITE', 'sip.carrier.example', false), { ok: true, trunk: r.config.trunks![0] });
  assert.equal(t.egress('INVITE', 'SIP.CARRIER.EXAMPLE.', false).ok, true, 'names compare case-insensitively, root dot ignored');
  assert.equal(t.egress('INVITE', '192.0.2.9', true).ok, true, 'an address inside the trunk CIDR');
  assert.deepEqual(t.egress('INVITE', '192.0.2.16', true), { ok: false, status: 403, reason: 'egress_denied' });
  assert.deepEqual(t.egress('INVITE', 'relay.elsewhere.example', false), { ok: false, status: 403, reason: 'egress_denied' });
  assert.deepEqual(t.egress('REGISTER', 'sip.carrier.example', false), { ok: false, status: 403, reason: 'trunk_register_denied' });
  assert.deepEqual(t.egress('INVITE', '198.51.100.7', true), { ok: false, status: 403, reason: 'trunk_outbound_denied' });
  assert.equal(t.egress('REGISTER', '198.51.100.7', true).ok, true);
  assert.equal(t.bySource('192.0.2.3')?.name, 'carrier');
  assert.equal(t.bySource('203.0.113.1'), undefined);
  const any = new Trunks(r.config.trunks!, 'any');
  assert.equal(any.egress('INVITE', 'relay.elsewhere.example', false).ok, true);
  assert.equal(any.egress('INVITE', '198.51.100.7', true).ok, false, 'a trunk\'s own limits still apply in any mode');
});

test('inbound: a trunk that may not call in is refused with trunk_inbound_denied', () => {
  const r = loadConfig({ file: tmp('trunks:\n  - name: out-only\n    addresses: [192.0.2.1]\n    inbound: { allowed: false }\n'), overrides: UP, env: {} });
  assert.ok(r.ok, JSON.stringify(r));
  assert.deepEqual(r.config.trusted, [], 'a trunk that may not call in is not trusted');
  const t = new Trunks(r.config.trunks!, 'trunks');
  assert.deepEqual(t.inbound('192.0.2.1', 'INVITE'), { ok: false, status: 403, reason: 'trunk_inbound_denied' });
  assert.equal(t.inbound('192.0.2.2', 'INVITE').ok, true);
});

test('calls-per-second budgets per trunk: new INVITEs past the budget get 503 trunk_rate_limited, other methods pass, the budget refills', () => {
  const r = loadConfig({ file: tmp('trunks:\n  - name: c\n    addresses: [192.0.2.1]\n    inbound: { callsPerSecond: 2 }\n    outbound: { callsPerSecond: 3 }\n'), overrides: UP, env: {} });
  assert.ok(r.ok, JSON.stringify(r));
  let now = 1000;
  const t = new Trunks(r.config.trunks!, 'trunks', undefined, () => now);
  const inb = () => t.inbound('192.0.2.1', 'INVITE');
  assert.deepEqual([inb().ok, inb().ok, inb()], [true, true, { ok: false, status: 503, reason: 'trunk_rate_limited' }]);
  assert.equal(t.inbound('192.0.2.1', 'OPTIONS').ok, true, 'only new calls spend the budget');
  const out = () => t.egress('INVITE', '192.0.2.1', true).ok;
  assert.deepEqual([out(), out(), out(), out()], [true, true, true, false], 'the outbound budget is its own');
  now += 500; // half a second: one inbound call, 1.5 outbound
  assert.deepEqual([inb().ok, inb().ok], [true, false]);
  assert.deepEqual([out(), out()], [true, false]);
});

test('sip-edge check names the trunks and the egress mode; explain names the trunk of a source', () => {
  const file = tmp(`listen: [udp:127.0.0.1:0]\nupstreams: [udp:127.0.0.1:5080]\n${CARRIER}`);
  const cli = path.resolve(__dirname, '../edge/cli.js');
  const r = spawnSync(process.execPath, [cli, 'check', '--config', file], { encoding: 'utf8', timeout: 20000, env: { PATH: process.env.PATH ?? '' } });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /; trunks: carrier \(2 CIDRs, 1 name\), backup \(1 CIDR, 0 names\), egress trunks\n$/);
  const msg = 'OPTIONS sip:pbx.example SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bK1\r\nFrom: <sip:c@192.0.2.5>;tag=1\r\nTo: <sip:pbx.example>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n';
  const sipFile = tmp(msg);
  const e = spawnSync(process.execPath, [cli, 'explain', sipFile, '--config', file, '--source', '192.0.2.5:5060'], { encoding: 'utf8', timeout: 20000, env: { PATH: process.env.PATH ?? '' } });
  assert.match(e.stdout, /source +udp:192\.0\.2\.5:5060 \(outside, trusted, trunk carrier\)/, e.stdout + e.stderr);
});
