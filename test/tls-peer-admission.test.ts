// Certificate-trusted peers and the TCP caps (issue 14): a flood of unknown connections fills the
// share of maxConnections unknown sources may hold; a carrier identified by its client
// certificate (tls.peers) is still unknown while its handshake runs, so without a reservation
// it is refused at accept before it can show the certificate. With `addresses` on its tls.peers
// entry, a connection from there takes trusted capacity during the handshake on probation: kept
// with a matching certificate (the real `openssl s_client`, and a node:tls client), closed with
// another one, each counted in sipedge_tcp_admissions_total{class="trusted",result}.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { startEdge, type EdgeHandle } from '../edge/edge';
import { DEFAULT_TLS_SETTINGS } from '../edge/transport/tls-context';
import { haveOpenssl, makeCa, makeLeaf, type Leaf } from './helpers/certs';
import { testConfig } from './helpers/config';
import { metricSum, optionsToEdge, sClient, until } from './helpers/tls-probe';
import { tempDir } from './helpers/tmp';

const silent = pino({ level: 'silent' });
const skip = !haveOpenssl() && process.env.CI !== 'true' ? 'openssl not installed' : false;

/** a raw TCP connection to the TLS port that never starts its handshake (holds a slot) */
function holdRaw(port: number, from: string): Promise<net.Socket> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', localAddress: from }, () => resolve(s));
    s.on('error', () => undefined);
  });
}

/** a TLS client from `from` with `leaf`'s certificate: 'served' when an OPTIONS to the edge is
 *  answered over it, else 'refused' (closed at accept or after the handshake) */
function peerTry(port: number, from: string, leaf: Leaf): Promise<'served' | 'refused'> {
  return new Promise((resolve) => {
    let done = false;
    const end = (r: 'served' | 'refused'): void => { if (!done) { done = true; s.destroy(); resolve(r); } };
    const s = tls.connect({ socket: net.connect({ port, host: '127.0.0.1', localAddress: from }), rejectUnauthorized: false, cert: fs.readFileSync(leaf.cert), key: fs.readFileSync(leaf.key) });
    s.on('error', () => end('refused'));
    s.on('close', () => end('refused'));
    s.once('secureConnect', () => s.write(optionsToEdge(`${from}:5061`)));
    s.on('data', (d: Buffer) => { if (d.toString('latin1').startsWith('SIP/2.0 200')) end('served'); });
    setTimeout(() => end('refused'), 5000);
  });
}

describe('a certificate-trusted peer connects through a TCP connection flood (tls.peers addresses)', { skip }, () => {
  const tmp = tempDir('sipedge-peeradm-');
  let edge: EdgeHandle;
  let port: number;
  let carrier: Leaf;
  let stranger: Leaf;
  const flood: net.Socket[] = [];
  const admissions = async (cls: string, result: string): Promise<number> => metricSum(await edge.metrics.metrics(), 'sipedge_tcp_admissions_total', { class: cls, result });

  before(async () => {
    const ca = makeCa(path.join(tmp.dir, 'pki'));
    const server = makeLeaf(ca, { names: ['edge.example.com'], ips: ['127.0.0.1'] });
    carrier = makeLeaf(ca, { names: ['sbc.carrier.example'] });
    stranger = makeLeaf(ca, { names: ['someone.example'] });
    edge = await startEdge(testConfig({
      listen: [{ transport: 'tls', host: '127.0.0.1', port: 0 }],
      // unknown sources may hold 6 of 10 connections
      tcp: { maxConnections: 10, maxConnectionsPerSource: 10, unknownPercent: 60, promotedPercent: 60, messageTimeoutMs: 5000, idleTimeoutMs: 60000 },
      tls: {
        ...DEFAULT_TLS_SETTINGS,
        certificates: [{ cert: server.cert, key: server.key }],
        clientCa: ca.cert,
        // the flood's half-open handshakes must outlive the test, and not be a cap of their own
        handshakeTimeoutMs: 30_000, maxHandshakesPerSource: 10,
        // the carrier connects from 127.0.0.1 (where openssl s_client comes from) and 127.0.0.21
        peers: [{ name: 'sbc.carrier.example', addresses: ['127.0.0.1/32', '127.0.0.21/32'] }],
      },
    }), silent, { watchRules: false });
    port = edge.listeners[0]!.port;
    // the flood: unknown sources take every slot of their share (6), the 7th is refused
    for (let i = 0; i < 7; i++) flood.push(await holdRaw(port, `127.0.9.${i + 1}`));
    await until(async () => (await admissions('unknown', 'accepted')) === 6 && (await admissions('unknown', 'rejected_class_cap')) === 1, 'the flood fills the unknown share');
  });
  after(async () => {
    for (const s of flood) s.destroy();
    await edge?.close(0);
  });

  test('during the flood an unknown client is refused at accept, the carrier (openssl s_client, its certificate) is served', async () => {
    assert.equal(await peerTry(port, '127.0.0.30', carrier), 'refused', 'from an address not listed for the peer: unknown until its handshake, no room');
    const p = await sClient(port, ['-cert', carrier.cert, '-key', carrier.key], { send: optionsToEdge(), holdMs: 1000 });
    assert.ok(p.ok, `the carrier's handshake completes during the flood:\n${p.out}`);
    assert.match(p.out, /SIP\/2\.0 200/, 'and its OPTIONS is answered');
    assert.ok(await admissions('trusted', 'probation') >= 1, 'admitted on probation');
    assert.ok(await admissions('trusted', 'probation_verified') >= 1, 'verified by its certificate');
  });

  test('from the carrier\'s other address with its certificate: served; with another valid certificate: closed after the handshake (probation_failed)', async () => {
    assert.equal(await peerTry(port, '127.0.0.21', carrier), 'served');
    const failed0 = await admissions('trusted', 'probation_failed');
    assert.equal(await peerTry(port, '127.0.0.21', stranger), 'refused', 'a certificate that matches no peer does not keep the reserved slot');
    await until(async () => (await admissions('trusted', 'probation_failed')) === failed0 + 1, 'probation_failed counted');
    // the flood still holds its share: the reserve did not go to it
    assert.equal(flood.filter((s) => !s.destroyed && s.readyState === 'open').length, 6);
  });
});
