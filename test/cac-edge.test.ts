// The cac stage wired into a running edge (issue 16): listed in rules/stages.yaml it refuses a
// cracked account's premium-rate burst at the fraud threshold (403 on the wire, the refusal and
// the signal in the metrics, the live calls in sipedge_dialogs_live) while a busy user calling
// ordinary numbers is never refused; not listed (the shipped default) it refuses nothing.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import pino from 'pino';
import { ManualClock } from '../edge/clock';
import { startEdge } from '../edge/edge';
import { RulesHolder } from '../edge/policy/reload';
import { testConfig } from './helpers/config';
import { sample } from './helpers/prom';
import { UdpPeer, header, request, uniq } from './helpers/udp-peer';

const silent = pino({ level: 'silent' });
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-cac-'));
after(() => fs.rmSync(TMP, { recursive: true, force: true }));

function rulesDir(withCac: boolean): string {
  const dir = fs.mkdtempSync(path.join(TMP, 'rules-'));
  fs.writeFileSync(path.join(dir, 'stages.yaml'), `stages:\n  - {name: sanity, mode: enforce}\n${withCac ? '  - {name: cac, mode: enforce}\n' : ''}`);
  fs.writeFileSync(path.join(dir, 'cac.yaml'), 'groups:\n  default: {allow: [emergency, internal, national, international, premium]}\n');
  fs.writeFileSync(path.join(dir, 'fraud.yaml'), 'classes:\n  premium:\n    callsPerMinute: {warning: 3, critical: 5}\n');
  return dir;
}

async function run(withCac: boolean): Promise<{ premiumPassed: number; premium403: number; busyPassed: number; busyRefused: number; metrics: string }> {
  const pbx = await UdpPeer.bind('127.0.0.2');
  const phone = await UdpPeer.bind('127.0.0.1');
  const edge = await startEdge(testConfig({ upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }], domains: ['pbx.example.com'] }),
    silent, { clock: new ManualClock(), watchRules: false, rules: new RulesHolder(rulesDir(withCac)) });
  const port = edge.listeners[0]!.port;
  const call = async (user: string, number: string): Promise<'passed' | number> => {
    const cid = uniq('cac');
    await phone.send(request(phone, { ruri: `sip:${number}@pbx.example.com`, from: `<sip:${user}@pbx.example.com>`, to: `<sip:${number}@pbx.example.com>`, callId: cid, fromTag: uniq('t') }), port);
    const r = await Promise.race([
      pbx.wait((m) => header(m.text, 'Call-ID') === cid, 2000, 'INVITE at the PBX').then(() => 'passed' as const),
      phone.wait((m) => header(m.text, 'Call-ID') === cid && /^SIP\/2\.0 [3-6]/.test(m.text), 2000, 'refusal').then((m) => Number(m.text.slice(8, 11))),
    ]);
    return r;
  };
  try {
    let premiumPassed = 0, premium403 = 0, busyPassed = 0, busyRefused = 0;
    for (let i = 0; i < 12; i++) {
      const r = await call('cracked', `1900555${String(1000 + i)}`);
      if (r === 'passed') premiumPassed++; else if (r === 403) premium403++;
    }
    for (let i = 0; i < 30; i++) {
      const r = await call('busy', `212555${String(1000 + i)}`);
      if (r === 'passed') busyPassed++; else busyRefused++;
    }
    return { premiumPassed, premium403, busyPassed, busyRefused, metrics: await edge.metrics.metrics() };
  } finally {
    phone.close(); pbx.close(); await edge.close(0);
  }
}

test('cac listed in stages.yaml: the premium burst is stopped at the threshold, the busy user never', async () => {
  const r = await run(true);
  assert.equal(r.premiumPassed, 5, 'calls up to the critical calls-per-minute threshold (5) pass');
  assert.equal(r.premium403, 7, 'past the threshold every premium call is refused 403');
  assert.equal(r.busyPassed, 30, 'ordinary numbers are never refused');
  assert.equal(r.busyRefused, 0);
  assert.equal(sample(r.metrics, 'sipedge_cac_refused_total', { reason: 'fraud_critical' }), 1);
  assert.equal(sample(r.metrics, 'sipedge_cac_refused_total', { reason: 'fraud_locked' }), 6);
  assert.equal(sample(r.metrics, 'sipedge_fraud_signals_total', { signal: 'calls_per_minute', level: 'critical' }), 1);
  assert.ok((sample(r.metrics, 'sipedge_fraud_signals_total', { signal: 'calls_per_minute', level: 'warning' }) ?? 0) >= 1);
  assert.equal(sample(r.metrics, 'sipedge_dialogs_live', { side: 'outside', state: 'early', class: 'premium' }), 5);
  assert.equal(sample(r.metrics, 'sipedge_dialogs_live', { side: 'outside', state: 'early', class: 'national' }), 30);
});

test('cac not listed (the shipped default): nothing is refused or tracked', async () => {
  const r = await run(false);
  assert.equal(r.premiumPassed, 12);
  assert.equal(r.busyPassed, 30);
  assert.equal(sample(r.metrics, 'sipedge_cac_refused_total', { reason: 'fraud_critical' }), 0);
  assert.equal(sample(r.metrics, 'sipedge_dialogs_live', { side: 'outside', state: 'early', class: 'premium' }), 0);
});
