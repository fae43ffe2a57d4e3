// The message path's ownership rules, on an in-memory transport (test/helpers/memory-edge.ts):
// nothing is delivered before the path is complete, one place turns verdicts into bytes (and a
// reply aimed at an ACK is counted as the drop it is), one observer applies bans, suspicion and
// promotion (shadow mode changes nothing, a REGISTER is promoted once), and stages run only where
// they declare they apply.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import type { AuthConfig, AuthDomainPolicy } from '../edge/config/types';
import { RulesHolder } from '../edge/policy/reload';
import { Pipeline } from '../edge/pipeline';
import { createSanityStage } from '../edge/stages/sanity';
import { createAccessStage } from '../edge/policy/access/stage';
import { createScannerStage } from '../edge/policy/scanner/stage';
import { createGeoStage } from '../edge/policy/geo/stage';
import { createRateLimitStage } from '../edge/policy/limits/ratelimit';
import { createUserLimitStage } from '../edge/policy/limits/userlimit';
import { createPingStage } from '../edge/stages/ping';
import { createAuthStage } from '../edge/auth/stage';
import { createMemoryStore } from '../edge/store/memory';
import { Suspicion } from '../edge/suspicion';
import { parseMessage } from '../edge/sip/parser';
import type { SipMessage } from '../edge/sip/types';
import type { Inbound } from '../edge/transport/types';
import { EDGE_IP, endpoint, startMemoryEdge } from './helpers/memory-edge';
import { sample } from './helpers/prom';
import { snapshotWith } from './helpers/snapshot';
import { header, request, response } from './helpers/udp-peer';

const ROOT = path.resolve(__dirname, '../..');
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-path-'));
after(() => fs.rmSync(TMP, { recursive: true, force: true }));

const PHONE = { address: '203.0.113.10', port: 5062 };
const PBX = { address: '127.0.0.2', port: 5070 };
const DOMAIN = 'pbx.example.com';

/** a rules directory: the shipped files, with the given ones replaced */
function rules(files: Record<string, string>): RulesHolder {
  const dir = fs.mkdtempSync(path.join(TMP, 'rules-'));
  for (const f of ['stages.yaml', 'scanner.yaml', 'access.yaml', 'geoip.yaml', 'limits.yaml']) fs.copyFileSync(path.join(ROOT, 'rules', f), path.join(dir, f));
  for (const [f, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, f), text);
  return new RulesHolder(dir);
}

function pbxAuth(): AuthConfig {
  const p: AuthDomainPolicy = {
    name: DOMAIN, mode: 'pbx', realm: DOMAIN, algorithms: ['MD5'], qop: ['auth'], matchFrom: true,
    forwardCredentials: true, identity: 'strip', pbxRewrite: 'challenge',
  };
  return { secret: '7f3a9c1e5b2d8f4a6c0e9b7d3f1a5c8e', nonceSeconds: 300, lockout: { failures: 5, seconds: 900 }, enumeration: { users: 10, seconds: 60 }, domains: [p], fallback: { ...p, name: '*' } };
}

const pbxConfig = { upstreams: [{ transport: 'udp' as const, host: PBX.address, port: PBX.port }], domains: [DOMAIN], auth: pbxAuth() };
const CREDS = `Digest username="1001", realm="${DOMAIN}", nonce="abc", uri="sip:${DOMAIN}", response="0123456789abcdef0123456789abcdef"`;

test('a message that arrives while the edge is still binding is handled once the path is complete, not lost', async () => {
  // decided synchronously by sanity (RFC 3261 8.1.1.7 CSeq method mismatch: 400), so the verdict
  // is ready while the listeners are still binding: before, it fell through silently
  const bad = request(PHONE, { ruri: `sip:1000@${EDGE_IP}`, cseqMethod: 'OPTIONS' });
  const m = await startMemoryEdge({}, {
    onBound: (hooks) => hooks.onMessage({ bytes: Buffer.from(bad, 'latin1'), source: endpoint(PHONE.address, PHONE.port), receivedAt: performance.now() } as Inbound),
  });
  try {
    await m.settle();
    const got = m.sentTo(PHONE.address, PHONE.port);
    assert.equal(got.length, 1, 'the request that came in during the start is answered');
    assert.match(got[0]!.text, /^SIP\/2\.0 400 /);
    assert.equal(header(got[0]!.text, 'Call-ID'), header(bad, 'Call-ID'));
  } finally {
    await m.close();
  }
});

test('a reject aimed at an ACK is counted as the drop it is, never as a reply that is not sent', async () => {
  const m = await startMemoryEdge({}, {
    rules: rules({ 'stages.yaml': 'stages:\n  - {name: sanity, mode: enforce}\n  - {name: access, mode: enforce}\n', 'access.yaml': 'denyAction: reject\ndeny: [203.0.113.0/24]\n' }),
  });
  try {
    const verdicts = async (action: string): Promise<number> =>
      sample(await m.edge.metrics.metrics(), 'sipedge_verdicts_total', { stage: 'access', action, reason: 'ip_denied', mode: 'enforce' }) ?? 0;
    const invite = request(PHONE, { ruri: `sip:1000@${EDGE_IP}` });
    m.deliver(invite, PHONE);
    assert.equal(m.sentTo(PHONE.address).length, 1, 'the INVITE is refused with a reply');
    assert.match(m.sentTo(PHONE.address)[0]!.text, /^SIP\/2\.0 403 /);
    assert.equal(await verdicts('reply'), 1);
    m.deliver(request(PHONE, { method: 'ACK', ruri: `sip:1000@${EDGE_IP}`, cseqMethod: 'ACK' }), PHONE);
    assert.equal(m.sentTo(PHONE.address).length, 1, 'nothing answers an ACK (RFC 3261 17)');
    assert.equal(await verdicts('reply'), 1, 'the ACK is not counted as a reply');
    assert.equal(await verdicts('drop'), 1, 'it is counted as the drop it is');
  } finally {
    await m.close();
  }
});

/** phone -> edge -> PBX, PBX answers `status`: what the edge forwarded and what it sent back */
async function throughPbx(m: Awaited<ReturnType<typeof startMemoryEdge>>, req: string, status: number): Promise<void> {
  m.deliver(req, PHONE);
  await m.settle();
  const fwd = m.sentTo(PBX.address, PBX.port).find((s) => header(s.text, 'Call-ID') === header(req, 'Call-ID'));
  assert.ok(fwd, 'forwarded to the PBX');
  m.deliver(response(fwd.text, status, status < 300 ? 'OK' : 'Unauthorized', { toTag: 'pbx1' }), PBX);
  await m.settle();
  assert.ok(m.sentTo(PHONE.address, PHONE.port).some((s) => s.text.startsWith(`SIP/2.0 ${status} `) && header(s.text, 'Call-ID') === header(req, 'Call-ID')), 'the answer reaches the phone');
}

test('a pass-through REGISTER the PBX accepts promotes its source once, not twice', async () => {
  const m = await startMemoryEdge(pbxConfig);
  try {
    let promotions = 0;
    const promote = m.edge.suspicion.promote.bind(m.edge.suspicion);
    m.edge.suspicion.promote = (a: string) => { promotions++; promote(a); };
    await throughPbx(m, request(PHONE, { method: 'REGISTER', ruri: `sip:${DOMAIN}`, from: `<sip:1001@${DOMAIN}>`, to: `<sip:1001@${DOMAIN}>`, extra: [`Authorization: ${CREDS}`] }), 200);
    assert.equal(promotions, 1);
    assert.equal(m.edge.suspicion.isPromoted(PHONE.address), true);
  } finally {
    await m.close();
  }
});

test('shadow mode changes nothing: a shadowed auth stage promotes nobody and records no suspicion', async () => {
  const m = await startMemoryEdge(pbxConfig, {
    rules: rules({ 'stages.yaml': 'stages:\n  - {name: sanity, mode: enforce}\n  - {name: auth, mode: shadow}\n' }),
  });
  try {
    const recorded: string[] = [];
    const record = m.edge.suspicion.record.bind(m.edge.suspicion);
    m.edge.suspicion.record = (a, e, r) => { recorded.push(e); return record(a, e, r); };
    // an INVITE with credentials the PBX accepts: in pbx mode an enforcing auth stage promotes
    const invite = (): string => request(PHONE, { ruri: `sip:1002@${DOMAIN}`, from: `<sip:1001@${DOMAIN}>`, to: `<sip:1002@${DOMAIN}>`, extra: [`Proxy-Authorization: ${CREDS.replace(`uri="sip:${DOMAIN}"`, `uri="sip:1002@${DOMAIN}"`)}`] });
    await throughPbx(m, invite(), 200);
    assert.equal(m.edge.suspicion.isPromoted(PHONE.address), false, 'a shadowed stage does not promote');
    // a rejected answer: an enforcing stage records auth_failure
    await throughPbx(m, invite(), 401);
    assert.deepEqual(recorded, [], 'a shadowed stage records no suspicion');
    // ... and both are counted for the shadow: the stage decided
    assert.ok((sample(await m.edge.metrics.metrics(), 'sipedge_auth_total', { result: 'success', mode: 'pbx' }) ?? 0) >= 1);
  } finally {
    await m.close();
  }
});

test('a shadowed scanner stage counts its verdict and spends no suspicion budget; enforcing, it does', async () => {
  const svmap = (): string => request(PHONE, { method: 'OPTIONS', ruri: `sip:100@${EDGE_IP}`, extra: ['User-Agent: friendly-scanner'] });
  for (const mode of ['shadow', 'enforce'] as const) {
    const m = await startMemoryEdge({}, { rules: rules({ 'stages.yaml': `stages:\n  - {name: sanity, mode: enforce}\n  - {name: scanner, mode: ${mode}}\n` }) });
    try {
      const recorded: string[] = [];
      const record = m.edge.suspicion.record.bind(m.edge.suspicion);
      m.edge.suspicion.record = (a, e, r) => { recorded.push(e); return record(a, e, r); };
      m.deliver(svmap(), PHONE);
      await m.settle();
      const metrics = await m.edge.metrics.metrics();
      assert.equal(sample(metrics, 'sipedge_verdicts_total', { stage: 'scanner', action: 'drop', reason: 'scanner_user_agent', mode }), 1, mode);
      assert.deepEqual(recorded, mode === 'shadow' ? [] : ['scanner'], mode);
    } finally {
      await m.close();
    }
  }
});

test('stages run only where they declare they apply: a response from the PBX runs sanity alone', async () => {
  const store = createMemoryStore({ sweepIntervalMs: 0 });
  const snap = snapshotWith();
  const suspicion = new Suspicion({ store, rules: () => snap, softGraceMs: 0 });
  const target = { serves: () => true, isOwnRoute: () => false };
  const stages = [
    createSanityStage(), createAccessStage(() => snap), createScannerStage(() => snap), createGeoStage(() => snap, { lookup: () => ({}) }),
    createRateLimitStage({ rules: () => snap, store, suspicion }), createPingStage({ mode: 'answer', target }),
    createAuthStage({ auth: pbxAuth(), users: () => undefined, store, suspicion, serves: () => true, hasDialogRoute: () => false, isRetransmission: () => false, enforcing: () => true }),
    createUserLimitStage({ rules: () => snap, store, suspicion }),
  ];
  const p = new Pipeline(stages.map((stage) => ({ stage, mode: 'enforce' as const })));
  const names = (side: 'outside' | 'inside', msg: SipMessage): string[] => p.stagesFor(side, msg).map((e) => e.stage.name);
  const parse = (t: string): SipMessage => { const r = parseMessage(Buffer.from(t, 'latin1')); assert.ok(r.ok); return r.msg; };
  const inv = request(PHONE);
  assert.deepEqual(names('inside', parse(response(inv, 200, 'OK'))), ['sanity']);
  assert.deepEqual(names('inside', parse(request(PBX, { method: 'BYE' }))), ['sanity']);
  assert.deepEqual(names('outside', parse(response(inv, 200, 'OK'))), ['sanity', 'access', 'scanner', 'geoip']);
  assert.deepEqual(names('outside', parse(inv)), ['sanity', 'access', 'scanner', 'geoip', 'ratelimit', 'auth', 'userlimit']);
  assert.deepEqual(names('outside', parse(request(PHONE, { method: 'OPTIONS' }))), ['sanity', 'access', 'scanner', 'geoip', 'ratelimit', 'ping', 'auth']);
  assert.deepEqual(names('outside', parse(request(PHONE, { method: 'FOO' }))), ['sanity', 'access', 'scanner', 'geoip', 'ratelimit', 'auth']);
  await store.close();
});
