// `sip-edge explain` core: every stage's decision for one message, with the real parser, the
// real stages and rules loaded from test/fixtures/rules/explain (deny list, trusted carrier, a
// User-Agent signature, a log-only signature, geoip in shadow mode).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { explainMessage, formatExplain, classifySource, type ExplainReport } from '../edge/explain';
import type { StageEntry } from '../edge/pipeline';
import type { Endpoint } from '../edge/sip/types';
import { createAccessStage } from '../edge/policy/access/stage';
import { createGeoStage } from '../edge/policy/geo/stage';
import { createSanityStage } from '../edge/stages/sanity';
import { createScannerStage } from '../edge/policy/scanner/stage';
import type { Stage } from '../edge/verdict';
import { loadRules } from '../edge/policy/load';
import type { RulesSnapshot } from '../edge/policy/snapshot';
import { testConfig } from './helpers/config';
import { sip } from './helpers/messages';

const ROOT = path.resolve(__dirname, '../..');
const FIXTURE = path.join(ROOT, 'test', 'fixtures', 'rules', 'explain');

function rules(): RulesSnapshot {
  const r = loadRules(FIXTURE, { displayDir: 'fixture' });
  assert.ok(r.ok, r.ok ? '' : r.errors.join('\n'));
  return r.snapshot;
}

/** the stages as the lead builds them: one per snapshot entry, in order, with its mode */
function stagesFor(s: RulesSnapshot): StageEntry[] {
  const byName: Record<string, Stage> = {
    sanity: createSanityStage(),
    access: createAccessStage(() => s),
    scanner: createScannerStage(() => s),
    geoip: createGeoStage(() => s, { lookup: () => ({ country: 'DE' }) }),
  };
  return s.stages.map((x) => ({ stage: byName[x.name]!, mode: x.mode, skipTrusted: s.trustedSkip.has(x.name) }));
}

const cfg = testConfig({ upstreams: [{ transport: 'udp', host: '10.0.0.5', port: 5060 }] });

function register(extra: string[] = [], from = '198.51.100.23'): Buffer {
  return sip([
    'REGISTER sip:example.com SIP/2.0',
    `Via: SIP/2.0/UDP ${from}:5060;branch=z9hG4bK-524287-1---7d3f1c2a;rport`,
    'Max-Forwards: 70',
    `Contact: <sip:1001@${from}:5060;rinstance=8d2c1a>`,
    'To: <sip:1001@example.com>',
    'From: <sip:1001@example.com>;tag=5c8a1b2e',
    'Call-ID: 8f3a2b1c9d0e4f5a6b7c8d9e0f1a2b3c',
    'CSeq: 1 REGISTER',
    'Expires: 3600',
    'User-Agent: Zoiper rv2.10.18.2',
    ...extra,
    'Content-Length: 0',
  ]);
}

const src = (address: string, port = 5060): Endpoint => ({ transport: 'udp', address, port, listenerId: 'udp:127.0.0.1:5060' });

async function explain(bytes: Buffer, source: Endpoint): Promise<{ rep: ExplainReport; text: string }> {
  const s = rules();
  const rep = await explainMessage({ bytes, source, rules: s, cfg, stages: stagesFor(s) });
  return { rep, text: formatExplain(rep) };
}

test('a benign REGISTER passes every stage and would be forwarded', async () => {
  const { rep, text } = await explain(register(), src('198.51.100.23'));
  assert.deepEqual(rep.parse, { ok: true, kind: 'request', startLine: 'REGISTER sip:example.com SIP/2.0', headers: 10, bodyBytes: 0 });
  assert.equal(rep.side, 'outside');
  assert.equal(rep.trust, 'untrusted');
  assert.deepEqual(rep.steps.map((s) => `${s.stage}:${s.mode}:${s.decision}:${s.effect}`), [
    'sanity:enforce:continue:none', 'access:enforce:continue:none', 'scanner:enforce:continue:none', 'geoip:shadow:continue:none',
  ]);
  assert.equal(rep.final.verdict.action, 'continue');
  assert.equal(rep.forwarded, true);
  assert.equal(rep.rulesVersion, rules().version);
  assert.match(text, /^parse {4}ok: request "REGISTER sip:example\.com SIP\/2\.0", 10 header lines, 0 body bytes$/m);
  assert.match(text, /^ {2}3\. scanner {2}enforce {2}continue$/m);
  assert.match(text, /^forward {2}yes: the message would be forwarded/m);
  assert.match(text, new RegExp(`^rules version ${rep.rulesVersion}$`, 'm'));
});

test('a malformed message stops at parse: no stage runs, the parse reason is the verdict', async () => {
  // no empty line ends the header section (RFC 3261 7: the header section ends with CRLF CRLF)
  const garbage = Buffer.from('OPTIONS sip:100@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK1\r\nFrom: <sip:a@b>', 'latin1');
  const { rep, text } = await explain(garbage, src('198.51.100.23'));
  assert.equal(rep.parse.ok, false);
  assert.equal(rep.parse.ok === false && rep.parse.reason, 'headers_unterminated');
  assert.deepEqual(rep.steps, []);
  assert.equal(rep.final.stage, 'parse');
  assert.equal(rep.final.verdict.action, 'drop');
  assert.equal(rep.forwarded, false);
  assert.match(text, /^parse {4}FAILED: headers_unterminated .*no stage runs$/m);
  assert.match(text, /^verdict {2}drop, reason headers_unterminated .*\[stage parse\]$/m);
  assert.match(text, /^forward {2}no$/m);
  assert.doesNotMatch(text, /sanity|scanner/);
});

test('a request the parser refuses but can answer gets the parse reply (505 for SIP/3.0)', async () => {
  const b = Buffer.from(register().toString('latin1').replace('REGISTER sip:example.com SIP/2.0', 'REGISTER sip:example.com SIP/3.0'), 'latin1');
  const { rep, text } = await explain(b, src('198.51.100.23'));
  assert.equal(rep.final.verdict.action, 'reply');
  assert.equal(rep.final.verdict.action === 'reply' && rep.final.verdict.status, 505);
  assert.match(text, /^verdict {2}reply 505, reason version_unsupported \[stage parse\]$/m);
});

test('a scanner User-Agent: the output names the scanner stage and the rule, later stages are marked not reached', async () => {
  const b = register().toString('latin1').replace('User-Agent: Zoiper rv2.10.18.2', 'User-Agent: friendly-scanner');
  const { rep, text } = await explain(Buffer.from(b, 'latin1'), src('198.51.100.23'));
  const scanner = rep.steps.find((s) => s.stage === 'scanner')!;
  assert.equal(scanner.decision, 'drop');
  assert.equal(scanner.reason, 'scanner_user_agent');
  assert.equal(scanner.rule, 'friendly_scanner_ua');
  assert.equal(scanner.effect, 'decides');
  assert.equal(rep.steps.find((s) => s.stage === 'geoip')!.effect, 'not_reached');
  assert.deepEqual(rep.final, { verdict: { action: 'drop', reason: 'scanner_user_agent', rule: 'friendly_scanner_ua' }, stage: 'scanner' });
  assert.equal(rep.forwarded, false);
  assert.match(text, /^ {2}3\. scanner {2}enforce {2}drop, reason scanner_user_agent, rule friendly_scanner_ua {2}<- decides$/m);
  assert.match(text, /^ {2}4\. geoip {4}shadow {3}continue {2}\(not reached live: an earlier stage decided\)$/m);
  assert.match(text, /^verdict {2}drop, reason scanner_user_agent, rule friendly_scanner_ua \[stage scanner\]$/m);
  assert.match(text, /^forward {2}no$/m);
});

test('a deny-listed source: access decides with the list file rule; the scanner hit after it is shown but not reached', async () => {
  const b = register([], '203.0.113.77').toString('latin1').replace('User-Agent: Zoiper rv2.10.18.2', 'User-Agent: sipvicious');
  const { rep, text } = await explain(Buffer.from(b, 'latin1'), src('203.0.113.77'));
  assert.deepEqual(rep.final, {
    verdict: { action: 'reply', status: 403, reason: 'ip_denied', rule: 'abuse-203', phrase: 'Forbidden' },
    stage: 'access',
  });
  assert.equal(rep.steps[2]!.decision, 'drop');
  assert.equal(rep.steps[2]!.effect, 'not_reached');
  assert.match(text, /^ {2}2\. access {3}enforce {2}reply 403 "Forbidden", reason ip_denied, rule abuse-203 {2}<- decides$/m);
  assert.match(text, /^verdict {2}reply 403 "Forbidden", reason ip_denied, rule abuse-203 \[stage access\]$/m);
});

test('a trusted carrier skips scanner and geoip (trustedSkip) and is forwarded despite its User-Agent', async () => {
  const b = register([], '192.0.2.10').toString('latin1').replace('User-Agent: Zoiper rv2.10.18.2', 'User-Agent: friendly-scanner');
  const { rep, text } = await explain(Buffer.from(b, 'latin1'), src('192.0.2.10'));
  assert.equal(rep.trust, 'trusted');
  assert.deepEqual(rep.steps.map((s) => `${s.stage}:${s.decision}:${s.skippedBecause ?? ''}`), [
    'sanity:continue:', 'access:continue:', 'scanner:skipped:trusted_source', 'geoip:skipped:trusted_source',
  ]);
  assert.equal(rep.forwarded, true);
  assert.match(text, /^source {3}udp:192\.0\.2\.10:5060 \(outside, trusted\)$/m);
  assert.match(text, /^ {2}3\. scanner {2}enforce {2}skipped \(trusted source skips this stage\)$/m);
});

test('a log-only rule is reported and the message still goes on', async () => {
  const { rep, text } = await explain(register(['Subject: log me']), src('198.51.100.23'));
  const scanner = rep.steps.find((s) => s.stage === 'scanner')!;
  assert.equal(scanner.decision, 'log');
  assert.equal(scanner.rule, 'test_log_only');
  assert.equal(scanner.effect, 'log');
  assert.equal(rep.forwarded, true);
  assert.match(text, /scanner {2}enforce {2}log, reason scanner_header, rule test_log_only {2}\(log only: counted, message goes on\)/);
});

test('a sanity failure decides at sanity with its reason', async () => {
  const b = register().toString('latin1').replace('Max-Forwards: 70', 'Max-Forwards: 0');
  const { rep, text } = await explain(Buffer.from(b, 'latin1'), src('198.51.100.23'));
  assert.equal(rep.final.stage, 'sanity');
  assert.equal(rep.final.verdict.action, 'reply');
  assert.equal(rep.final.verdict.action === 'reply' && rep.final.verdict.reason, 'max_forwards_exceeded');
  assert.match(text, /^ {2}1\. sanity {3}enforce {2}reply 483, reason max_forwards_exceeded {2}<- decides$/m);
});

test('a stage in off mode is skipped and named as off', async () => {
  const s = rules();
  const stages = stagesFor(s).map((e) => (e.stage.name === 'scanner' ? { ...e, mode: 'off' as const } : e));
  const b = register().toString('latin1').replace('User-Agent: Zoiper rv2.10.18.2', 'User-Agent: friendly-scanner');
  const rep = await explainMessage({ bytes: Buffer.from(b, 'latin1'), source: src('198.51.100.23'), rules: s, cfg, stages });
  assert.equal(rep.steps[2]!.decision, 'skipped');
  assert.equal(rep.steps[2]!.skippedBecause, 'off');
  assert.equal(rep.forwarded, true);
  assert.match(formatExplain(rep), /^ {2}3\. scanner {2}off {6}skipped \(stage is off\)$/m);
});

test('source classification follows the edge: upstream by address and port over UDP, inside CIDRs, trusted by config or list', () => {
  const s = rules();
  assert.deepEqual(classifySource(src('10.0.0.5', 5060), cfg, s), { side: 'inside', trust: 'inside' });
  // same host, other port over UDP: a phone on the PBX host is outside
  assert.deepEqual(classifySource(src('10.0.0.5', 5062), cfg, s), { side: 'outside', trust: 'untrusted' });
  // over streams an upstream is recognised by address, but only a stream upstream (as edge.ts)
  assert.deepEqual(classifySource({ transport: 'tcp', address: '10.0.0.5', port: 40000 }, cfg, s), { side: 'outside', trust: 'untrusted' });
  const tcpUp = testConfig({ upstreams: [{ transport: 'tcp', host: '10.0.0.6', port: 5060 }] });
  assert.deepEqual(classifySource({ transport: 'tcp', address: '10.0.0.6', port: 40000 }, tcpUp, s), { side: 'inside', trust: 'inside' });
  assert.deepEqual(classifySource(src('192.0.2.10'), cfg, s), { side: 'outside', trust: 'trusted' });
  const c2 = testConfig({ inside: ['172.16.0.0/12'], trusted: ['198.51.100.0/24'] });
  assert.deepEqual(classifySource(src('172.16.1.1'), c2, s), { side: 'inside', trust: 'inside' });
  assert.deepEqual(classifySource(src('198.51.100.23'), c2, s), { side: 'outside', trust: 'trusted' });
  // IPv4-mapped IPv6 spelling is canonicalised like the transports do
  assert.deepEqual(classifySource(src('::ffff:192.0.2.10'), cfg, s), { side: 'outside', trust: 'trusted' });
});
