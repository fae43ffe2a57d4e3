// Upstreams over TLS (issue 14): the edge reaches a real Kamailio listening on TLS
// (kamailio-tls-modules), verifies its certificate against the configured CA and name, reuses one
// connection for every request, and the PBX reaches a phone back through the edge. A certificate
// for another name is refused (no request reaches the PBX; the upstream's health counts it), and
// a refused TLS connect is not retried for every request but after a growing back-off.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { startEdge, type EdgeHandle } from '../edge/edge';
import { createListener } from '../edge/transport';
import { DEFAULT_TLS_SETTINGS, TlsHolder } from '../edge/transport/tls-context';
import { createTlsSecurity } from '../edge/transport/tls';
import { haveOpenssl, makeCa, makeLeaf, type Leaf, type TestCa } from './helpers/certs';
import { testConfig } from './helpers/config';
import { kamailioTlsAvailable, startKamailio, type Kamailio } from './helpers/kamailio';
import { metricSum, until } from './helpers/tls-probe';
import { tempDir } from './helpers/tmp';
import { UdpPeer, request, uniq } from './helpers/udp-peer';

const silent = pino({ level: 'silent' });
const inCi = process.env.CI === 'true';
const missing = [kamailioTlsAvailable() ? '' : 'kamailio with its tls module (kamailio-tls-modules)', haveOpenssl() ? '' : 'openssl'].filter((x) => x !== '');
const skip = missing.length > 0 && !inCi ? `${missing.join(' and ')} not installed` : false;
const DOMAIN = 'pbx.test';

function register(p: UdpPeer, user: string): string {
  return request(p, {
    method: 'REGISTER', ruri: `sip:${DOMAIN}`, from: `<sip:${user}@${DOMAIN}>`, to: `<sip:${user}@${DOMAIN}>`,
    contact: `<sip:${user}@${p.address}:${p.port}>`, extra: ['Expires: 60'], fromTag: uniq('t'),
  });
}

describe('an upstream over TLS: Kamailio on TLS behind the edge', { skip }, () => {
  const tmp = tempDir('sipedge-tlsup-');
  let ca: TestCa;
  let pbxLeaf: Leaf;
  let pbx: Kamailio;
  let edge: EdgeHandle | undefined;

  before(async () => {
    ca = makeCa(path.join(tmp.dir, 'pki'));
    pbxLeaf = makeLeaf(ca, { names: [DOMAIN], ips: ['127.0.0.2'] });
    pbx = await startKamailio({ domain: DOMAIN, address: '127.0.0.2', tls: { cert: pbxLeaf.cert, key: pbxLeaf.key } });
  });
  after(async () => { await edge?.close(0); await pbx?.stop(); });

  const start = async (upstreamName: string): Promise<EdgeHandle> => {
    const edgeLeaf = makeLeaf(ca, { names: ['edge.pbx.test'], ips: ['127.0.0.1'] });
    return startEdge(testConfig({
      listen: [{ transport: 'udp', host: '127.0.0.1', port: 0 }, { transport: 'tls', host: '127.0.0.1', port: 0 }],
      upstreams: [{ transport: 'tls', host: '127.0.0.2', port: pbx.tlsPort! }],
      domains: [DOMAIN],
      // short timers: a request whose connection was refused ends by its transaction timeout
      // (64 x T1 = 3.2 s here), not after the default 32 s
      transactions: { max: 1000, memoryBudgetMB: 1024, t1Ms: 50, t2Ms: 400, t4Ms: 500 },
      tls: { ...DEFAULT_TLS_SETTINGS, certificates: [{ cert: edgeLeaf.cert, key: edgeLeaf.key }], upstreamCa: ca.cert, upstreamName },
    }), silent, { watchRules: false });
  };

  test('REGISTERs reach Kamailio over one verified TLS connection; the PBX reaches the phone back through the edge', async () => {
    edge = await start(DOMAIN);
    const udpPort = edge.listeners.find((l) => l.transport === 'udp')!.port;
    const alice = await UdpPeer.bind('127.0.0.1');
    const bob = await UdpPeer.bind('127.0.0.3');
    try {
      for (let i = 0; i < 3; i++) {
        await alice.send(register(alice, 'alice'), udpPort);
        await alice.waitFirstLine('SIP/2.0 200', 5000);
      }
      const reg = pbx.events().filter((e) => e.kind === 'REGISTER' && e.fields.from === 'alice');
      assert.equal(reg.length, 3, 'Kamailio saw the three REGISTERs');
      // the Path names the edge's TLS listener: Kamailio comes back over TLS
      assert.match(reg[0]!.fields.path ?? '', /^<sip:sef1\.[^@>]+@127\.0\.0\.1:\d+;transport=tls;lr>$/);
      // reuse: the three went over one connection toward the upstream
      assert.equal(metricSum(await edge.metrics.metrics(), 'sipedge_connections', { transport: 'tls' }), 1, 'one TLS connection to the upstream');
      // bob (UDP) sends a MESSAGE to alice: edge -> Kamailio (TLS) -> Path -> edge -> alice
      const msg = request(bob, { method: 'MESSAGE', ruri: `sip:alice@${DOMAIN}`, from: `<sip:bob@${DOMAIN}>`, to: `<sip:alice@${DOMAIN}>`, body: 'hello over tls', extra: ['Content-Type: text/plain'] });
      await bob.send(msg, udpPort);
      const got = await alice.waitFirstLine('MESSAGE ', 5000);
      assert.match(got.text, /hello over tls$/);
    } finally {
      alice.close();
      bob.close();
      await edge.close(0);
      edge = undefined;
    }
  });

  test('a certificate that does not name the configured upstream name is refused: nothing reaches Kamailio', async () => {
    edge = await start('somebody-else.test');
    const udpPort = edge.listeners.find((l) => l.transport === 'udp')!.port;
    const carol = await UdpPeer.bind('127.0.0.1');
    try {
      const before1 = pbx.events().filter((e) => e.kind === 'REGISTER' && e.fields.from === 'carol').length;
      await carol.send(register(carol, 'carol'), udpPort);
      const r = await carol.wait((m) => /^SIP\/2\.0 [3-6]\d\d/.test(m.text), 8000, 'a final failure');
      assert.match(r.text, /^SIP\/2\.0 (503|408)/);
      await until(async () => metricSum(await edge!.metrics.metrics(), 'sipedge_upstream_health_failures_total', { cause: 'transport_error' }) >= 1, 'the refused certificate counted against the upstream');
      assert.equal(pbx.events().filter((e) => e.kind === 'REGISTER' && e.fields.from === 'carol').length, before1, 'Kamailio saw nothing');
    } finally {
      carol.close();
      await edge.close(0);
      edge = undefined;
    }
  });
});

describe('TLS connections toward an upstream: back-off after a failed connect', { skip: haveOpenssl() || inCi ? false : 'openssl not installed' }, () => {
  const tmp = tempDir('sipedge-tlsbackoff-');
  test('a refused certificate is not retried for every message, and is retried after the back-off', async () => {
    const ca = makeCa(path.join(tmp.dir, 'pki'));
    const wrong = makeLeaf(ca, { names: ['wrong.example'] });
    const mine = makeLeaf(ca, { names: ['edge.example'], ips: ['127.0.0.1'] });
    // the "upstream": a TLS server with a certificate for another name; count TCP connects
    let attempts = 0;
    const srv = tls.createServer({ cert: fs.readFileSync(wrong.cert), key: fs.readFileSync(wrong.key) }, (s) => s.on('error', () => undefined));
    srv.on('connection', () => { attempts++; });
    srv.on('tlsClientError', () => undefined);
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as net.AddressInfo).port;
    const settings = { ...DEFAULT_TLS_SETTINGS, certificates: [{ cert: mine.cert, key: mine.key }], upstreamCa: ca.cert, upstreamName: 'pbx.example' };
    const h = TlsHolder.open(settings);
    assert.ok(h.ok);
    const failed: string[] = [];
    const l = await createListener({ transport: 'tls', host: '127.0.0.1', port: 0 }, {
      onMessage: () => undefined,
      onConnectFailed: (_d, cause) => failed.push(cause),
    }, { maxMessageBytes: 16384, maxConnections: 10, maxConnectionsPerSource: 10, messageTimeoutMs: 1000, idleTimeoutMs: 10000, tls: () => createTlsSecurity({ holder: h.holder, settings, requireClientCert: false }) });
    try {
      const dest = { transport: 'tls' as const, address: '127.0.0.1', port };
      const msg = Buffer.from('OPTIONS sip:pbx SIP/2.0\r\nContent-Length: 0\r\n\r\n');
      assert.equal(l.send(dest, msg, true), true, 'the first send opens a connection (queued until verified)');
      await until(() => failed.length === 1, 'the verification failure reported');
      assert.deepEqual(failed, ['remote'], 'a certificate for another name is the peer\'s fault');
      // within the back-off every send fails at once, without a new connect
      for (let i = 0; i < 10; i++) assert.equal(l.send(dest, msg, true), false);
      assert.equal(attempts, 1, 'one connect, not eleven');
      await new Promise((r) => setTimeout(r, 300)); // the first back-off is 250 ms
      l.send(dest, msg, true);
      await until(() => attempts === 2 && failed.length === 2, 'retried after the back-off');
      // doubled now (500 ms): at once is still too soon
      assert.equal(l.send(dest, msg, true), false);
    } finally {
      await l.close(0);
      h.holder.close();
      await new Promise<void>((r) => srv.close(() => r()));
    }
  });
});
