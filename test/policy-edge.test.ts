// The policy stages inside a running edge: benign phones pass untouched, scanners do not, and a
// rules reload in the middle of a call neither drops the call nor half-applies a bad file.
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
import { sample, sumOf } from './helpers/prom';
import { UdpPeer, header, headers, request, response, uniq } from './helpers/udp-peer';

const ROOT = path.resolve(__dirname, '../..');
const silent = pino({ level: 'silent' });
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-policy-'));
after(() => fs.rmSync(TMP, { recursive: true, force: true }));

function rulesDir(): string {
  const dir = fs.mkdtempSync(path.join(TMP, 'rules-'));
  for (const f of ['stages.yaml', 'scanner.yaml', 'access.yaml', 'geoip.yaml']) fs.copyFileSync(path.join(ROOT, 'rules', f), path.join(dir, f));
  return dir;
}

/** a fixture message re-addressed to come from `peer` (its Via sent-by) */
function fixture(name: string, peer: UdpPeer): string {
  const text = fs.readFileSync(path.join(ROOT, 'test/fixtures/scanners', name), 'latin1').replace(/\r?\n/g, '\r\n');
  return text.replace(/^(Via: SIP\/2\.0\/UDP )[^;]+/m, `$1${peer.address}:${peer.port}`);
}

test('benign phones pass every stage and reach the PBX byte-faithful; scanner packets do not', async () => {
  const pbx = await UdpPeer.bind('127.0.0.2');
  const phone = await UdpPeer.bind('127.0.0.1');
  const edge = await startEdge(testConfig({
    upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }], domains: ['pbx.example.com'],
  }), silent, { clock: new ManualClock(), watchRules: false });
  try {
    const port = edge.listeners[0]!.port;
    for (const f of ['benign-zoiper-register.sip', 'benign-yealink-register.sip', 'benign-linphone-invite.sip', 'benign-microsip-register.sip']) {
      const sent = fixture(f, phone);
      await phone.send(sent, port);
      const got = await pbx.wait((m) => header(m.text, 'Call-ID') === header(sent, 'Call-ID'), 2000, f);
      // untouched but for what a proxy must change: our Via on top, received/rport on theirs,
      // Max-Forwards, and Path (REGISTER) or Record-Route (INVITE)
      const strip = (t: string): string => t.split('\r\n')
        .filter((l) => !/^(Via|Max-Forwards|Path|Record-Route):/i.test(l)).join('\r\n');
      assert.equal(strip(got.text), strip(sent), `${f} arrives intact`);
      assert.equal(headers(got.text, 'Via').length, 2);
    }
    // each scanner packet is dropped by the scanner signature it carries (the rule's hit count
    // says which), not by whatever else might stop it
    const scanners: Array<[string, string]> = [
      ['svmap-options.sip', 'sipvicious_friendly_scanner'], ['svwar-register.sip', 'sipvicious_friendly_scanner'],
      ['svcrack-register.sip', 'sipvicious_friendly_scanner'], ['sipsak-options.sip', 'sipsak'], ['sipcli-invite.sip', 'sipcli'],
    ];
    const hits = new Map<string, number>();
    for (const [f, rule] of scanners) {
      const sent = fixture(f, phone);
      await phone.send(sent, port);
      assert.ok(await pbx.silent((m) => header(m.text, 'Call-ID') === header(sent, 'Call-ID'), 150), `${f} must not reach the PBX`);
      assert.ok(await phone.silent((m) => header(m.text, 'Call-ID') === header(sent, 'Call-ID'), 20), `${f}: silent drop, no answer`);
      hits.set(rule, (hits.get(rule) ?? 0) + 1);
      assert.equal(sample(await edge.metrics.metrics(), 'sipedge_rule_hits_total', { rule }), hits.get(rule), `${f}: dropped by scanner rule ${rule}`);
    }
    const m = await edge.metrics.metrics();
    assert.equal(sample(m, 'sipedge_verdicts_total', { stage: 'scanner', action: 'drop', reason: 'scanner_user_agent', mode: 'enforce' }), scanners.length);
    assert.equal(sumOf(m, 'sipedge_verdicts_total', { action: 'drop' }), scanners.length, 'nothing else dropped anything');
  } finally {
    phone.close(); pbx.close(); await edge.close(0);
  }
});

test('a reload mid-call swaps the rules without losing the call; an invalid file keeps the old rules', async () => {
  const dir = rulesDir();
  const holder = new RulesHolder(dir);
  const pbx = await UdpPeer.bind('127.0.0.2');
  const phone = await UdpPeer.bind('127.0.0.1');
  const edge = await startEdge(testConfig({ upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }] }), silent, { clock: new ManualClock(), rules: holder });
  try {
    const port = edge.listeners[0]!.port;
    const v1 = holder.current().version;
    const cid = uniq('reload');
    await phone.send(request(phone, { callId: cid }), port);
    const inv = await pbx.wait((m) => m.text.startsWith('INVITE') && header(m.text, 'Call-ID') === cid);

    // deny the phone's address: new requests from it are dropped from now on
    fs.writeFileSync(path.join(dir, 'access.yaml'), 'denyAction: drop\ndeny:\n  - { cidr: 127.0.0.1/32, name: lab-deny }\n');
    const r = edge.reloadRules();
    assert.equal(r.ok, true);
    assert.notEqual(holder.current().version, v1);
    // the call set up before the reload completes: the PBX's answer still reaches the phone
    await pbx.send(response(inv.text, 200, 'OK', { toTag: 'rl' }), port, '127.0.0.1');
    const ok = await phone.waitFirstLine('SIP/2.0 200');
    assert.equal(header(ok.text, 'Call-ID'), cid);
    // a new request from the now-denied source is dropped by the access stage
    const cid2 = uniq('after');
    await phone.send(request(phone, { callId: cid2 }), port);
    assert.ok(await pbx.silent((m) => header(m.text, 'Call-ID') === cid2));

    // an invalid file: the previous (deny) rules stay in force and the failure is counted
    const v2 = holder.current().version;
    fs.writeFileSync(path.join(dir, 'access.yaml'), 'deny:\n  - 999.1.2.3/8\n');
    const bad = edge.reloadRules();
    assert.equal(bad.ok, false);
    assert.match(bad.errors!.join('\n'), /access\.yaml:2:\d+: .*999\.1\.2\.3/);
    assert.equal(holder.current().version, v2);
    const cid3 = uniq('still');
    await phone.send(request(phone, { callId: cid3 }), port);
    assert.ok(await pbx.silent((m) => header(m.text, 'Call-ID') === cid3));
    const m = await edge.metrics.metrics();
    assert.equal(sample(m, 'sipedge_rules_reloads_total', { result: 'ok' }), 1);
    assert.equal(sample(m, 'sipedge_rules_reloads_total', { result: 'error' }), 1);
    assert.equal(sample(m, 'sipedge_rules_info', { version: v2 }), 1);
    assert.equal(sample(m, 'sipedge_verdicts_total', { stage: 'access', action: 'drop', reason: 'ip_denied', mode: 'enforce' }), 2);
  } finally {
    phone.close(); pbx.close(); await edge.close(0); holder.close();
  }
});

test('shadow mode: the scanner decides and counts, but the message goes through', async () => {
  const dir = rulesDir();
  fs.writeFileSync(path.join(dir, 'stages.yaml'), 'stages:\n  - { name: sanity, mode: enforce }\n  - { name: scanner, mode: shadow }\ntrustedSkip: []\n');
  const holder = new RulesHolder(dir);
  const pbx = await UdpPeer.bind('127.0.0.2');
  const phone = await UdpPeer.bind('127.0.0.1');
  const edge = await startEdge(testConfig({ upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }], domains: ['127.0.0.1'] }), silent, { clock: new ManualClock(), rules: holder });
  try {
    const sent = fixture('svmap-options.sip', phone);
    await phone.send(sent, edge.listeners[0]!.port);
    await pbx.wait((m) => header(m.text, 'Call-ID') === header(sent, 'Call-ID'));
    const m = await edge.metrics.metrics();
    assert.ok((sample(m, 'sipedge_verdicts_total', { stage: 'scanner', action: 'drop', reason: 'scanner_user_agent', mode: 'shadow' }) ?? 0) >= 1);
  } finally {
    phone.close(); pbx.close(); await edge.close(0); holder.close();
  }
});

test('a source on the trusted list skips the scanner (trustedSkip) but never sanity', async () => {
  const dir = rulesDir();
  fs.writeFileSync(path.join(dir, 'access.yaml'), 'trusted:\n  - { cidr: 127.0.0.1/32, name: lab-carrier }\n');
  const holder = new RulesHolder(dir);
  const pbx = await UdpPeer.bind('127.0.0.2');
  const phone = await UdpPeer.bind('127.0.0.1');
  const edge = await startEdge(testConfig({ upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }], domains: ['127.0.0.1'] }), silent, { clock: new ManualClock(), rules: holder });
  try {
    const port = edge.listeners[0]!.port;
    const sent = fixture('svmap-options.sip', phone);
    await phone.send(sent, port);
    await pbx.wait((m) => header(m.text, 'Call-ID') === header(sent, 'Call-ID'));
    // sanity still applies to trusted peers
    await phone.send(request(phone, { cseqMethod: 'BYE' }), port);
    await phone.waitFirstLine('SIP/2.0 400');
  } finally {
    phone.close(); pbx.close(); await edge.close(0); holder.close();
  }
});
