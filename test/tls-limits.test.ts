// Hostile input on the TLS listener (issue 14): slow and half-open handshakes, garbage before the
// ClientHello, more handshakes than a source or everyone together may hold. Each gets its own
// counter, the edge keeps serving, and a source that keeps at it is banned at the gate (its next
// connection is closed at accept, before a slot or a handshake is spent on it).
import assert from 'node:assert/strict';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { startEdge, type EdgeHandle } from '../edge/edge';
import { DEFAULT_TLS_SETTINGS } from '../edge/transport/tls-context';
import { haveOpenssl, makeCa, makeLeaf } from './helpers/certs';
import { testConfig } from './helpers/config';
import { metricSum, sClient, until } from './helpers/tls-probe';
import { tempDir } from './helpers/tmp';

const silent = pino({ level: 'silent' });
const skip = !haveOpenssl() && process.env.CI !== 'true' ? 'openssl not installed' : false;

/** the first bytes of a TLS 1.2 ClientHello record: handshake record header + the start of it */
const HALF_HELLO = Buffer.from('16030100c8010000c40303', 'hex');

interface Raw {
  readonly sock: net.Socket;
  readonly closed: Promise<void>;
}

function connect(port: number, from: string, first?: Buffer | string): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1', localAddress: from }, () => {
      if (first !== undefined) sock.write(first);
      resolve({ sock, closed });
    });
    const closed = new Promise<void>((r) => sock.once('close', () => r()));
    sock.on('error', () => undefined);
    sock.once('error', reject);
  });
}

describe('TLS handshake limits and hostile input', { skip }, () => {
  const tmp = tempDir('sipedge-tlslim-');
  let edge: EdgeHandle;
  let port: number;
  const count = async (reason: string): Promise<number> => metricSum(await edge.metrics.metrics(), 'sipedge_tls_handshakes_total', { reason });
  const stillServes = async (): Promise<void> => {
    const p = await sClient(port, [], { host: '127.0.0.1' });
    assert.ok(p.ok, `the edge still completes handshakes:\n${p.out}`);
  };

  before(async () => {
    const ca = makeCa(path.join(tmp.dir, 'pki'));
    const leaf = makeLeaf(ca, { names: ['edge.example.com'], ips: ['127.0.0.1'] });
    edge = await startEdge(testConfig({
      listen: [{ transport: 'tls', host: '127.0.0.1', port: 0 }],
      tcp: { maxConnections: 200, maxConnectionsPerSource: 50, unknownPercent: 80, promotedPercent: 90, messageTimeoutMs: 5000, idleTimeoutMs: 60000 },
      tls: { ...DEFAULT_TLS_SETTINGS, certificates: [{ cert: leaf.cert, key: leaf.key }], handshakeTimeoutMs: 400, maxHandshakesPerSource: 3, maxHandshakes: 8 },
    }), silent, { watchRules: false });
    port = edge.listeners[0]!.port;
  });
  after(async () => { await edge?.close(0); });

  test('a connection that never says anything and a half-sent ClientHello are closed at the handshake deadline (timeout)', async () => {
    const t0 = await count('timeout');
    const silentConn = await connect(port, '127.0.0.30');
    const half = await connect(port, '127.0.0.30', HALF_HELLO);
    const started = Date.now();
    await Promise.all([silentConn.closed, half.closed]);
    const took = Date.now() - started;
    // the deadline is 400 ms: closed by it, not by the 60 s idle timeout
    assert.ok(took < 5000, `closed after ${took} ms`);
    await until(async () => (await count('timeout')) >= t0 + 2, 'two timeouts counted');
    await stillServes();
  });

  test('garbage before the ClientHello (plain SIP, HTTP, random bytes) is refused as not_tls', async () => {
    const t0 = await count('not_tls');
    const junk = [
      'OPTIONS sip:edge SIP/2.0\r\nContent-Length: 0\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\n\r\n',
      Buffer.from([0x00, 0xff, 0x13, 0x37, 0x42, 0x99, 0x01, 0x02, 0x03, 0x04, 0x05]),
    ];
    for (const j of junk) {
      const c = await connect(port, '127.0.0.31', j);
      await c.closed;
    }
    await until(async () => (await count('not_tls')) >= t0 + junk.length, 'not_tls counted for each');
    await stillServes();
  });

  test('handshakes in progress are capped per source and in total; the refused ones are counted', async () => {
    const s0 = await count('source_cap');
    const held: Raw[] = [];
    try {
      // 5 from one source (cap 3): 2 refused at once
      for (let i = 0; i < 5; i++) held.push(await connect(port, '127.0.0.32'));
      await until(async () => (await count('source_cap')) >= s0 + 2, 'source_cap counted twice');
      // 3 more sources x 3 = 9 more handshakes against a total of 8: some refused as total_cap
      const t0 = await count('total_cap');
      for (const from of ['127.0.0.33', '127.0.0.34', '127.0.0.35']) for (let i = 0; i < 3; i++) held.push(await connect(port, from));
      await until(async () => (await count('total_cap')) > t0, 'total_cap counted');
    } finally {
      for (const h of held) h.sock.destroy();
    }
    // the held handshakes end (closed by the client or the deadline) and the caps free up
    await new Promise((r) => setTimeout(r, 600));
    await stillServes();
  });

  test('a flood of half-open handshakes from one source spends its suspicion budget and ends in a ban at the gate', async () => {
    const from = '127.0.0.40';
    // bounded: at most 80 connections, 3 at a time (the per-source cap), each timing out in 400 ms
    for (let round = 0; round < 20 && edge.bans.check(from, Date.now()) === null; round++) {
      const batch = await Promise.all([0, 1, 2, 3].map(() => connect(port, from, HALF_HELLO)));
      await Promise.all(batch.map((b) => b.closed));
    }
    await until(() => edge.bans.check(from, Date.now()) !== null, 'the flooding source is banned');
    const r0 = metricSum(await edge.metrics.metrics(), 'sipedge_transport_events_total', { transport: 'tls', event: 'conn_rejected_banned' });
    const c = await connect(port, from, HALF_HELLO);
    await c.closed;
    await until(async () => metricSum(await edge.metrics.metrics(), 'sipedge_transport_events_total', { transport: 'tls', event: 'conn_rejected_banned' }) > r0, 'closed at accept by the gate');
    // another source is not affected
    await stillServes();
  });
});

describe('TLS connections share the stream caps: connections per source and idle time', { skip }, () => {
  const tmp = tempDir('sipedge-tlscaps-');
  test('a third TLS connection from one source is refused at accept (cap 2); a silent one is closed at the idle timeout', async () => {
    const ca = makeCa(path.join(tmp.dir, 'pki'));
    const leaf = makeLeaf(ca, { names: ['edge.example.com'], ips: ['127.0.0.1'] });
    const edge = await startEdge(testConfig({
      listen: [{ transport: 'tls', host: '127.0.0.1', port: 0 }],
      tcp: { maxConnections: 100, maxConnectionsPerSource: 2, unknownPercent: 80, promotedPercent: 90, messageTimeoutMs: 5000, idleTimeoutMs: 1000 },
      tls: { ...DEFAULT_TLS_SETTINGS, certificates: [{ cert: leaf.cert, key: leaf.key }] },
    }), silent, { watchRules: false });
    const port = edge.listeners[0]!.port;
    const events = async (event: string): Promise<number> => metricSum(await edge.metrics.metrics(), 'sipedge_transport_events_total', { transport: 'tls', event });
    const open = (): Promise<{ s: tls.TLSSocket; ok: boolean; closed: Promise<void> }> => new Promise((resolve) => {
      const s = tls.connect({ socket: net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.50' }), rejectUnauthorized: false });
      const closed = new Promise<void>((r) => s.once('close', () => r()));
      s.on('error', () => undefined);
      s.once('secureConnect', () => resolve({ s, ok: true, closed }));
      s.once('close', () => resolve({ s, ok: false, closed }));
    });
    try {
      const a = await open();
      const b = await open();
      assert.ok(a.ok && b.ok, 'two connections from one source are served');
      const r0 = await events('conn_rejected_source_cap');
      const c = await open();
      assert.equal(c.ok, false, 'the third is refused');
      await until(async () => (await events('conn_rejected_source_cap')) > r0, 'counted as conn_rejected_source_cap');
      // a and b say nothing: the idle timeout (1 s here) closes them
      const i0 = await events('conn_idle_timeout');
      await Promise.all([a.closed, b.closed]);
      await until(async () => (await events('conn_idle_timeout')) >= i0 + 2, 'idle timeouts counted for tls');
    } finally {
      await edge.close(0);
    }
  });
});
