// sips: over TLS on every hop the edge controls (issue 14; RFC 3261 26.2.2, RFC 5630), with a
// real Kamailio (tls module) as the PBX, reached once over UDP and once over TLS:
// - a sips: INVITE from a TLS client toward an upstream on UDP is refused: 480 with Warning 380
//   "SIPS Not Allowed" (RFC 5630 5.3), reason sips_next_hop_not_tls, and Kamailio never sees it;
//   the same INVITE with a sip: URI goes through;
// - toward the upstream over TLS it goes through, and Kamailio sees the edge's Record-Route as
//   sips: URIs on both (TLS) sides;
// - a sips: INVITE arriving over UDP from outside: 400 with Warning 381, sips_not_tls_inbound.
// Under CI=true a missing kamailio tls module or openssl is a failure, never a skip.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { startEdge, type EdgeHandle } from '../edge/edge';
import { DEFAULT_TLS_SETTINGS } from '../edge/transport/tls-context';
import { haveOpenssl, makeCa, makeLeaf } from './helpers/certs';
import { testConfig } from './helpers/config';
import { kamailioAvailable, kamailioTlsAvailable, startKamailio, type Kamailio } from './helpers/kamailio';
import { metricSum } from './helpers/tls-probe';
import { tempDir } from './helpers/tmp';
import { header, request, uniq, UdpPeer } from './helpers/udp-peer';

const silent = pino({ level: 'silent' });
const missing = !(kamailioAvailable() && kamailioTlsAvailable() && haveOpenssl());
const skip = missing && process.env.CI !== 'true' ? 'kamailio with its tls module, or openssl, not installed (CI=true makes this a failure)' : false;
const DOMAIN = 'pbx.test';
const PBX_ADDR = '127.0.0.2';

/** send `text` over a new TLS connection to the edge; the first final response (or null) */
function overTls(port: number, build: (local: { address: string; port: number }) => string): Promise<string | null> {
  return new Promise((resolve) => {
    let buf = '';
    let done = false;
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false });
    const end = (r: string | null): void => { if (!done) { done = true; clearTimeout(t); s.destroy(); resolve(r); } };
    const t = setTimeout(() => end(null), 5000);
    s.on('error', () => end(null));
    s.once('secureConnect', () => s.write(build({ address: '127.0.0.1', port: s.localPort ?? 0 })));
    s.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      for (const m of buf.split('\r\n\r\n')) if (/^SIP\/2\.0 [2-6]\d\d/.test(m)) return end(m);
    });
  });
}

const invite = (ruri: string, user: string) => (p: { address: string; port: number }, transport = 'TLS'): string =>
  request(p, { ruri, to: `<${ruri}>`, from: `<sip:alice@${DOMAIN}>`, via: `SIP/2.0/${transport} ${p.address}:${p.port};branch=${uniq('z9hG4bK')}`, contact: `<sip:alice@${p.address}:${p.port};transport=${transport.toLowerCase()}>`, callId: uniq(user) });

describe('sips: only over TLS (RFC 3261 26.2.2, RFC 5630)', { skip }, () => {
  const tmp = tempDir('sipedge-sips-');
  let pbx: Kamailio;
  let viaUdp: EdgeHandle;
  let viaTls: EdgeHandle;
  const port = (e: EdgeHandle, t: string): number => e.listeners.find((l) => l.transport === t)!.port;
  const saw = (user: string): boolean => pbx.events().some((e) => e.kind === 'INITIAL' && e.fields.to === user);

  before(async () => {
    const ca = makeCa(path.join(tmp.dir, 'pki'));
    const pbxLeaf = makeLeaf(ca, { names: [DOMAIN], ips: [PBX_ADDR] });
    const edgeLeaf = makeLeaf(ca, { names: ['edge.pbx.test'], ips: ['127.0.0.1'] });
    pbx = await startKamailio({ domain: DOMAIN, address: PBX_ADDR, tls: { cert: pbxLeaf.cert, key: pbxLeaf.key } });
    const edge = (upstream: 'udp' | 'tls'): Promise<EdgeHandle> => startEdge(testConfig({
      listen: [{ transport: 'udp', host: '127.0.0.1', port: 0 }, { transport: 'tls', host: '127.0.0.1', port: 0 }],
      upstreams: [upstream === 'tls' ? { transport: 'tls', host: PBX_ADDR, port: pbx.tlsPort! } : { transport: 'udp', host: PBX_ADDR, port: pbx.port }],
      domains: [DOMAIN],
      tls: { ...DEFAULT_TLS_SETTINGS, certificates: [{ cert: edgeLeaf.cert, key: edgeLeaf.key }], upstreamCa: ca.cert, upstreamName: DOMAIN },
    }), silent, { watchRules: false });
    viaUdp = await edge('udp');
    viaTls = await edge('tls');
  });
  after(async () => { await viaUdp?.close(0); await viaTls?.close(0); await pbx?.stop(); });

  test('a sips: INVITE over TLS toward an upstream on UDP: 480 + Warning 380, never sent in clear; a sip: one goes through', async () => {
    const r = await overTls(port(viaUdp, 'tls'), invite(`sips:sips1@${DOMAIN}`, 'sips1'));
    assert.ok(r, 'a final response');
    assert.match(r, /^SIP\/2\.0 480 /);
    assert.match(header(r, 'Warning') ?? '', /^380 \S+ "SIPS Not Allowed"$/);
    const m = await viaUdp.metrics.metrics();
    assert.ok(metricSum(m, 'sipedge_verdicts_total', { reason: 'sips_next_hop_not_tls' }) >= 1, 'counted under its reason');
    // the control: the same over sip: reaches Kamailio (nobody is registered: its 404, which the
    // edge's pass-through watcher may answer as a challenge; either way not the edge's 480)
    const c = await overTls(port(viaUdp, 'tls'), invite(`sip:sip1@${DOMAIN}`, 'sip1'));
    assert.match(c ?? '', /^SIP\/2\.0 4(04|07) /, pbx.logTail(30));
    assert.ok(saw('sip1'), 'Kamailio saw the sip: INVITE');
    assert.ok(!saw('sips1'), 'Kamailio never saw the sips: INVITE');
  });

  test('toward the upstream over TLS the sips: INVITE goes through; the edge\'s Record-Route entries are sips: on both TLS sides', async () => {
    const r = await overTls(port(viaTls, 'tls'), invite(`sips:sips2@${DOMAIN}`, 'sips2'));
    assert.match(r ?? '', /^SIP\/2\.0 4(04|07) /, 'Kamailio answered (its 404, or the watcher\'s challenge for it)');
    const ev = pbx.events().find((e) => e.kind === 'INITIAL' && e.fields.to === 'sips2');
    assert.ok(ev, 'Kamailio saw the sips: INVITE');
    const tlsPort = port(viaTls, 'tls');
    // departure (toward Kamailio) then arrival (toward the caller): SIPS implies TLS, no transport param
    assert.match(ev.fields.rr ?? '', new RegExp(`^<sips:up0@127\\.0\\.0\\.1:${tlsPort};lr>, <sips:[^@>]+@127\\.0\\.0\\.1:${tlsPort};lr>$`), `Record-Route: ${ev.fields.rr}`);
  });

  test('a REGISTER to sips: through the edge over TLS: Kamailio stores a sips: Path naming the edge (RFC 3327, RFC 5630)', async () => {
    const tlsPort = port(viaTls, 'tls');
    const r = await overTls(tlsPort, (p) => request(p, {
      method: 'REGISTER', ruri: `sips:${DOMAIN}`, from: `<sips:carol@${DOMAIN}>`, to: `<sips:carol@${DOMAIN}>`,
      via: `SIP/2.0/TLS ${p.address}:${p.port};branch=${uniq('z9hG4bK')}`, contact: `<sips:carol@${p.address}:${p.port}>`, extra: ['Expires: 60'],
    }));
    assert.match(r ?? '', /^SIP\/2\.0 200 /, 'registered');
    const reg = pbx.events().find((e) => e.kind === 'REGISTER' && e.fields.from === 'carol');
    assert.ok(reg, 'Kamailio saw the REGISTER');
    assert.match(reg.fields.path ?? '', new RegExp(`^<sips:sef1\\.[^@>]+@127\\.0\\.0\\.1:${tlsPort};lr>$`), `Path: ${reg.fields.path}`);
  });

  test('a sips: INVITE arriving over UDP from outside: 400 + Warning 381 (sips_not_tls_inbound)', async () => {
    const phone = await UdpPeer.bind('127.0.0.1');
    try {
      await phone.send(invite(`sips:sips3@${DOMAIN}`, 'sips3')(phone, 'UDP'), port(viaTls, 'udp'));
      const r = await phone.wait((x) => /^SIP\/2\.0 [2-6]\d\d/.test(x.text), 3000, 'final response');
      assert.match(r.text, /^SIP\/2\.0 400 /);
      assert.match(header(r.text, 'Warning') ?? '', /^381 \S+ "SIPS Required"$/);
      assert.ok(metricSum(await viaTls.metrics.metrics(), 'sipedge_verdicts_total', { reason: 'sips_not_tls_inbound' }) >= 1);
      assert.ok(!saw('sips3'), 'Kamailio never saw it');
    } finally { phone.close(); }
  });
});
