// Mutual TLS (issue 14): a listener that requires client certificates refuses clients without one
// or with one from another CA (openssl s_client), counts why, and spends the source's suspicion
// budget like a failed password; trusted peers identified by their certificate are trusted like a
// `trusted` CIDR (their malformed traffic does not get them banned, a stranger's does).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { startEdge, type EdgeHandle } from '../edge/edge';
import { DEFAULT_TLS_SETTINGS } from '../edge/transport/tls-context';
import { haveOpenssl, makeCa, makeLeaf, type Leaf, type TestCa } from './helpers/certs';
import { testConfig } from './helpers/config';
import { metricSum, optionsToEdge, sClient, until } from './helpers/tls-probe';
import { tempDir } from './helpers/tmp';

const silent = pino({ level: 'silent' });
const skip = !haveOpenssl() && process.env.CI !== 'true' ? 'openssl not installed' : false;

const options = optionsToEdge;

/** a request the parser refuses (RFC 3261 7.1: only SIP/2.0) but the framing accepts: one
 *  `malformed` suspicion event per message, the connection stays open */
const badVersion = (i: number): string => `OPTIONS sip:127.0.0.1 SIP/3.0\r\nVia: SIP/2.0/TLS 127.0.0.1;branch=z9hG4bK${i}\r\nContent-Length: 0\r\n\r\n`;

describe('mutual TLS', { skip }, () => {
  const tmp = tempDir('sipedge-mtls-');
  let ca: TestCa;
  let otherCa: TestCa;
  let server: Leaf;
  let client: Leaf;
  let carrier: Leaf;
  let stranger: Leaf;
  let rogue: Leaf;
  let edge: EdgeHandle;
  let strict: number;
  let open: number;

  before(async () => {
    ca = makeCa(path.join(tmp.dir, 'pki'));
    otherCa = makeCa(path.join(tmp.dir, 'other'), 'another CA');
    server = makeLeaf(ca, { names: ['edge.example.com'], ips: ['127.0.0.1'] });
    client = makeLeaf(ca, { names: ['pbx.partner.example'] });
    carrier = makeLeaf(ca, { names: ['sbc.carrier.example'] });
    stranger = makeLeaf(ca, { names: ['someone.example'] });
    rogue = makeLeaf(otherCa, { names: ['pbx.partner.example'] });
    // the strict listener's port must be known for requireClientCert: bind it on a fixed free port
    const p = await new Promise<number>((r) => { const s = net.createServer().listen(0, '127.0.0.1', () => { const a = (s.address() as net.AddressInfo).port; s.close(() => r(a)); }); });
    edge = await startEdge(testConfig({
      listen: [{ transport: 'tls', host: '127.0.0.1', port: p }, { transport: 'tls', host: '127.0.0.1', port: 0 }],
      tls: {
        ...DEFAULT_TLS_SETTINGS,
        certificates: [{ cert: server.cert, key: server.key }],
        clientCa: ca.cert,
        requireClientCert: [`tls:127.0.0.1:${p}`],
        peers: [{ name: 'sbc.carrier.example' }, { fingerprint: client.fingerprint }],
      },
    }), silent, { watchRules: false });
    strict = p;
    open = edge.listeners.find((l) => l.port !== p)!.port;
  });
  after(async () => { await edge?.close(0); });

  test('a listener requiring client certificates: a valid one is served, none or another CA\'s is refused before any SIP (openssl s_client)', async () => {
    const good = await sClient(strict, ['-cert', client.cert, '-key', client.key], { send: options(), holdMs: 1500 });
    assert.match(good.out, /SIP\/2\.0 200/, `with a valid certificate the OPTIONS is answered:\n${good.out}`);
    const none = await sClient(strict, [], { send: options(), holdMs: 1500 });
    assert.doesNotMatch(none.out, /SIP\/2\.0 200/, `without a certificate: no SIP\n${none.out}`);
    const bad = await sClient(strict, ['-cert', rogue.cert, '-key', rogue.key], { send: options(), holdMs: 1500 });
    assert.doesNotMatch(bad.out, /SIP\/2\.0 200/, `with another CA's certificate: no SIP\n${bad.out}`);
    await until(async () => {
      const m = await edge.metrics.metrics();
      return metricSum(m, 'sipedge_tls_handshakes_total', { reason: 'client_cert_missing' }) >= 1
        && metricSum(m, 'sipedge_tls_handshakes_total', { reason: 'client_cert_invalid' }) >= 1;
    }, 'client_cert_missing and client_cert_invalid counted');
    // the other listener asks but does not require: a phone without a certificate is served
    const phone = await sClient(open, [], { send: options(), holdMs: 1500 });
    assert.match(phone.out, /SIP\/2\.0 200/, `the optional listener serves clients without a certificate:\n${phone.out}`);
  });

  test('failed client certificates spend the source\'s suspicion budget until it is banned at the gate', async () => {
    // 127.0.0.9: its own budget (the shipped limits: 20 suspicion points per 600 s, auth_failure 1)
    const from = '127.0.0.9';
    const attempt = (): Promise<void> => new Promise((resolve) => {
      const s = tls.connect({ socket: net.connect({ port: strict, host: '127.0.0.1', localAddress: from }), rejectUnauthorized: false, cert: fs.readFileSync(rogue.cert), key: fs.readFileSync(rogue.key) });
      s.on('error', () => undefined);
      s.on('close', () => resolve());
      setTimeout(() => s.destroy(), 3000);
    });
    for (let i = 0; i < 25 && edge.bans.check(from, Date.now()) === null; i++) await attempt();
    await until(() => edge.bans.check(from, Date.now()) !== null, 'the source is banned');
    // banned: the next connection is closed at accept, before any handshake
    const before1 = metricSum(await edge.metrics.metrics(), 'sipedge_transport_events_total', { event: 'conn_rejected_banned' });
    await attempt();
    await until(async () => metricSum(await edge.metrics.metrics(), 'sipedge_transport_events_total', { event: 'conn_rejected_banned' }) > before1, 'refused at the gate');
  });

  test('peers identified by certificate are trusted: malformed traffic does not ban them; a stranger with a valid certificate is banned', async () => {
    const send = async (leaf: Leaf, from: string, n: number): Promise<void> => {
      const s = tls.connect({ socket: net.connect({ port: open, host: '127.0.0.1', localAddress: from }), rejectUnauthorized: false, cert: fs.readFileSync(leaf.cert), key: fs.readFileSync(leaf.key) });
      s.on('error', () => undefined);
      await new Promise<void>((r, j) => { s.once('secureConnect', () => r()); s.once('error', j); });
      for (let i = 0; i < n; i++) s.write(badVersion(i));
      await new Promise((r) => setTimeout(r, 300));
      s.destroy();
    };
    await send(carrier, '127.0.0.10', 30); // trusted by name
    await send(client, '127.0.0.11', 30); // trusted by fingerprint
    await send(stranger, '127.0.0.12', 30); // a valid certificate, but no configured peer
    await until(() => edge.bans.check('127.0.0.12', Date.now()) !== null, 'the stranger is banned');
    assert.equal(edge.bans.check('127.0.0.10', Date.now()), null, 'the carrier (by name) is not banned');
    assert.equal(edge.bans.check('127.0.0.11', Date.now()), null, 'the partner PBX (by fingerprint) is not banned');
  });
});
