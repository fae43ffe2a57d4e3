import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { createListener, createTcpListener, createUdpListener, type ListenerOptions } from '../edge/transport';
import { procAddress } from '../edge/transport/udp';
import { addressFamily } from '../edge/net/address';
import type { AdmissionResult, Inbound, Listener, ListenerSpec, SourceClass, TransportEvent, TransportHooks } from '../edge/transport/types';
import type { Endpoint } from '../edge/sip/types';

// ---- helpers (bounded waits only; nothing sleeps for a fixed time) ----

const open: Array<{ close(): unknown }> = [];
after(async () => {
  for (const o of open.splice(0)) await o.close();
});

async function waitFor(cond: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface Recorder {
  hooks: TransportHooks;
  messages: Inbound[];
  events: Array<{ event: TransportEvent; source?: Endpoint }>;
  oversize: Array<{ head: Buffer; source: Endpoint }>;
  count(e: TransportEvent): number;
  /** runs for each message after it is recorded */
  onMessage?: (m: Inbound) => void;
  onOversize?: (head: Buffer, source: Endpoint) => void;
}

function recorder(): Recorder {
  const r: Recorder = {
    messages: [],
    events: [],
    oversize: [],
    count: (e) => r.events.filter((x) => x.event === e).length,
    hooks: {
      onMessage: (m) => { r.messages.push(m); r.onMessage?.(m); },
      onEvent: (event, _l, source) => { r.events.push({ event, source }); },
      onOversize: (head, source) => { r.oversize.push({ head, source }); r.onOversize?.(head, source); },
    },
  };
  return r;
}

/**
 * Send `count` datagrams of `size` bytes to 127.0.0.1:`port` from a thread of their own while
 * this thread is blocked for `blockMs` (it cannot read meanwhile); `atEnd` runs at the end of the
 * block. Resolves when every datagram has been sent.
 */
async function sendWhileBlocked(port: number, count: number, size: number, blockMs: number, atEnd?: () => void): Promise<void> {
  const { Worker } = await import('node:worker_threads');
  const w = new Worker(`
    const dgram = require('node:dgram');
    const { workerData, parentPort } = require('node:worker_threads');
    const s = dgram.createSocket('udp4');
    const b = Buffer.alloc(workerData.size, 0x41);
    let n = 0;
    const next = () => { if (n++ < workerData.count) s.send(b, workerData.port, '127.0.0.1', next); else { s.close(); parentPort.postMessage('done'); } };
    parentPort.once('message', next);
  `, { eval: true, workerData: { port, count, size } });
  try {
    const done = new Promise((res) => w.once('message', res));
    w.postMessage('go');
    const until = Date.now() + blockMs;
    while (Date.now() < until) { /* the event loop cannot take datagrams meanwhile */ }
    atEnd?.();
    await done;
  } finally {
    await w.terminate();
  }
}

function sip(body = '', opts: { cl?: string | null; method?: string; callId?: string } = {}): Buffer {
  const cl = opts.cl === undefined ? `Content-Length: ${Buffer.byteLength(body)}` : opts.cl;
  return Buffer.from(`${opts.method ?? 'OPTIONS'} sip:pbx.example.com SIP/2.0\r\n` +
    'Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n' +
    `From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: ${opts.callId ?? 'c1'}\r\nCSeq: 1 OPTIONS\r\n` +
    (cl === null ? '' : `${cl}\r\n`) + '\r\n' + body, 'latin1');
}

const TCP_OPTS: ListenerOptions = {
  maxMessageBytes: 4096,
  maxConnections: 100,
  maxConnectionsPerSource: 50,
  messageTimeoutMs: 5000,
  idleTimeoutMs: 30000,
};

async function tcpListener(host: string, r: Recorder, opts: Partial<ListenerOptions> = {}): Promise<Listener> {
  const l = await createListener({ transport: 'tcp', host, port: 0 }, r.hooks, { ...TCP_OPTS, ...opts });
  open.push(l);
  return l;
}

interface Client {
  socket: net.Socket;
  data: Buffer[];
  closed: boolean;
  text(): string;
}

async function tcpClient(host: string, port: number, localAddress?: string): Promise<Client> {
  const socket = net.connect({ host, port, noDelay: true, ...(localAddress ? { localAddress } : {}) });
  const c: Client = { socket, data: [], closed: false, text: () => Buffer.concat(c.data).toString('latin1') };
  socket.on('data', (d) => c.data.push(d));
  socket.on('close', () => { c.closed = true; });
  socket.on('error', () => undefined);
  open.push({ close: () => socket.destroy() });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  return c;
}

async function udpSocket(type: 'udp4' | 'udp6', host: string): Promise<{ sock: dgram.Socket; got: Array<{ msg: Buffer; rinfo: dgram.RemoteInfo }> }> {
  const sock = dgram.createSocket(type);
  const got: Array<{ msg: Buffer; rinfo: dgram.RemoteInfo }> = [];
  sock.on('message', (msg, rinfo) => got.push({ msg, rinfo }));
  await new Promise<void>((r) => sock.bind(0, host, () => r()));
  open.push({ close: () => new Promise<void>((r) => sock.close(() => r())) });
  return { sock, got };
}

// ---- UDP ----

// ioThread: the syscalls on the I/O thread (the default) or on the event loop; same behaviour
for (const [family, host, type, ioThread] of [[4, '127.0.0.1', 'udp4', true], [6, '::1', 'udp6', true], [4, '127.0.0.1', 'udp4', false], [6, '::1', 'udp6', false]] as const) {
  test(`UDP over IPv${family}${ioThread ? '' : ' (no I/O thread)'}: receive with canonical source, reply, keepalive ignored, oversize counted`, async () => {
    const r = recorder();
    const l = await createUdpListener({ transport: 'udp', host, port: 0 }, r.hooks, { maxDatagramBytes: 1000, ioThread });
    open.push(l);
    assert.equal(l.family, family);
    assert.ok(l.local.port > 0);
    assert.equal(l.id, family === 4 ? `udp:127.0.0.1:${l.local.port}` : `udp:[::1]:${l.local.port}`);
    const { sock, got } = await udpSocket(type, host);
    const clientPort = sock.address().port;

    sock.send(Buffer.from('\r\n\r\n'), l.local.port, host);
    sock.send(Buffer.from('\r\n'), l.local.port, host);
    const m = sip('', { callId: 'first' });
    sock.send(m, l.local.port, host);
    await waitFor(() => r.messages.length >= 1, 'udp message');
    assert.equal(r.messages.length, 1, 'CRLF keepalives are not handed up');
    const inb = r.messages[0];
    assert.deepEqual(inb.bytes, m);
    assert.deepEqual(inb.source, { transport: 'udp', address: host, port: clientPort, listenerId: l.id });
    assert.equal(typeof inb.receivedAt, 'number');

    assert.equal(l.send(inb.source, Buffer.from('SIP/2.0 200 OK\r\n\r\n')), true);
    await waitFor(() => got.length === 1, 'udp reply');
    assert.equal(got[0].msg.toString(), 'SIP/2.0 200 OK\r\n\r\n');
    assert.equal(got[0].rinfo.port, l.local.port);

    const big = sip('x'.repeat(2000));
    sock.send(big, l.local.port, host);
    await waitFor(() => r.messages.length === 2, 'oversize datagram');
    assert.equal(r.messages[1].bytes.length, big.length, 'handed up: the parser answers 413');
    assert.equal(r.count('datagram_oversize'), 1);
    assert.equal(r.count('send_error'), 0);
    await l.close();
  });
}

for (const ioThread of [true, false]) test(`UDP${ioThread ? '' : ' (no I/O thread)'}: IPv4-mapped sources are canonicalised to IPv4 (dual-stack IPv6 socket)`, async () => {
  const r = recorder();
  // an IPv6 socket bound to the mapped loopback receives IPv4 traffic as ::ffff:127.0.0.1
  const l = await createUdpListener({ transport: 'udp', host: '::ffff:127.0.0.1', port: 0 }, r.hooks, { maxDatagramBytes: 4096, ioThread });
  open.push(l);
  assert.equal(l.family, 6);
  const { sock, got } = await udpSocket('udp4', '127.0.0.1');
  sock.send(sip(), l.local.port, '127.0.0.1');
  await waitFor(() => r.messages.length === 1, 'mapped datagram');
  assert.equal(r.messages[0].source.address, '127.0.0.1');
  assert.equal(r.messages[0].source.port, sock.address().port);
  // and an IPv4 destination is reachable through the mapping
  assert.equal(l.send(r.messages[0].source, Buffer.from('pong')), true);
  await waitFor(() => got.length === 1, 'reply through mapping');
  await l.close();
});

for (const ioThread of [true, false]) test(`UDP${ioThread ? '' : ' (no I/O thread)'}: send never throws; bad destinations and closed sockets return false and count send_error`, async () => {
  const r = recorder();
  const l = await createUdpListener({ transport: 'udp', host: '127.0.0.1', port: 0 }, r.hooks, { maxDatagramBytes: 4096, ioThread });
  assert.equal(l.send({ transport: 'udp', address: 'example.com', port: 5060 }, Buffer.from('x')), false);
  assert.equal(l.send({ transport: 'udp', address: '::1', port: 5060 }, Buffer.from('x')), false, 'family mismatch');
  assert.equal(l.send({ transport: 'udp', address: '127.0.0.1', port: 0 }, Buffer.from('x')), false);
  assert.equal(l.send({ transport: 'udp', address: '127.0.0.1', port: 70000 }, Buffer.from('x')), false);
  assert.equal(r.count('send_error'), 4);
  await l.close();
  assert.equal(l.send({ transport: 'udp', address: '127.0.0.1', port: 5060 }, Buffer.from('x')), false);
  assert.equal(r.count('send_error'), 5);
  await l.close(); // idempotent
});

test('UDP I/O thread: replies queued just before close still go out; close frees the port at once', async () => {
  const r = recorder();
  const l = await createUdpListener({ transport: 'udp', host: '127.0.0.1', port: 0 }, r.hooks, { maxDatagramBytes: 4096 });
  const { sock, got } = await udpSocket('udp4', '127.0.0.1');
  const dest: Endpoint = { transport: 'udp', address: '127.0.0.1', port: sock.address().port };
  for (let i = 0; i < 50; i++) assert.equal(l.send(dest, Buffer.from(`final ${i}`)), true);
  const port = l.local.port;
  await l.close();
  await waitFor(() => got.length === 50, 'the 50 replies sent before close');
  assert.deepEqual(got.map((g) => g.msg.toString()), Array.from({ length: 50 }, (_, i) => `final ${i}`), 'in order');
  // the thread closed the socket: the same port binds again (a restart on a fixed port works)
  const again = await createUdpListener({ transport: 'udp', host: '127.0.0.1', port }, r.hooks, { maxDatagramBytes: 4096 });
  assert.equal(again.local.port, port);
  await again.close();
  const busy = dgram.createSocket('udp4');
  await new Promise<void>((res) => busy.bind(0, '127.0.0.1', () => res()));
  await assert.rejects(createUdpListener({ transport: 'udp', host: '127.0.0.1', port: busy.address().port }, r.hooks, { maxDatagramBytes: 4096 }),
    (e: NodeJS.ErrnoException) => e.code === 'EADDRINUSE', 'a port in use is a start-up error, as without the thread');
  busy.close();
});

test('UDP I/O thread: while the event loop is blocked, datagrams past the hand-over queue are dropped and counted, the rest delivered', async () => {
  const r = recorder();
  // the smallest queue (1 MiB): 2,000 datagrams of 1,000 bytes do not fit
  const l = await createUdpListener({ transport: 'udp', host: '127.0.0.1', port: 0 }, r.hooks, { maxDatagramBytes: 4096, recvBufferBytes: 1 << 20 });
  open.push(l);
  const payload = Buffer.alloc(1000, 0x41);
  await sendWhileBlocked(l.local.port, 2000, payload.length, 800);
  await waitFor(() => r.messages.length + r.count('datagram_queue_full') >= 1500, 'delivered or counted');
  await new Promise((res) => setTimeout(res, 100));
  const delivered = r.messages.length;
  const dropped = r.count('datagram_queue_full');
  assert.ok(dropped > 0, `some dropped (${delivered} delivered)`);
  assert.ok(delivered >= 900, `the queue's worth delivered: ${delivered}`);
  assert.ok(r.messages.every((m) => m.bytes.equals(payload)), 'delivered datagrams intact');
  assert.ok(delivered + dropped <= 2000);
  await l.close();
});

test('createListener dispatches on transport and rejects unsupported ones', async () => {
  const r = recorder();
  const u = await createListener({ transport: 'udp', host: '127.0.0.1', port: 0 }, r.hooks);
  const t = await createListener({ transport: 'tcp', host: '127.0.0.1', port: 0 }, r.hooks);
  assert.ok(u.id.startsWith('udp:127.0.0.1:'));
  assert.ok(t.id.startsWith('tcp:127.0.0.1:'));
  assert.equal(typeof t.isOpen, 'function');
  await u.close();
  await t.close();
  const spec: ListenerSpec = { transport: 'ws', host: '127.0.0.1', port: 0 };
  // ws/wss are stream listeners once they have their upgrade settings (edge/transport/ws.ts)
  await assert.rejects(createListener(spec, r.hooks), /ws_not_configured/);
  await assert.rejects(createListener({ transport: 'sctp' as ListenerSpec['transport'], host: '127.0.0.1', port: 0 }, r.hooks), /transport_unsupported/);
  // tls is a stream listener once it has certificates (edge/transport/tls.ts)
  await assert.rejects(createListener({ transport: 'tls', host: '127.0.0.1', port: 0 }, r.hooks), /tls_not_configured/);
  await assert.rejects(createListener({ transport: 'udp', host: 'example.com', port: 0 }, r.hooks), /listen_host_not_ip/);
});

// ---- TCP ----

test('TCP: several messages in one chunk and a message in 1-byte chunks; reply on the inbound connection', async () => {
  const r = recorder();
  const l = await tcpListener('127.0.0.1', r);
  r.onMessage = (m) => {
    assert.equal(l.send(m.source, Buffer.from(`SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n`), false), true);
  };
  const c = await tcpClient('127.0.0.1', l.local.port);
  const a = sip('body-a', { callId: 'a' });
  const b = sip('', { callId: 'b' });
  const d = sip('ddd', { callId: 'd' });
  c.socket.write(Buffer.concat([a, b, d]));
  await waitFor(() => r.messages.length === 3, 'three messages');
  assert.deepEqual(r.messages.map((m) => m.bytes), [a, b, d]);
  const connId = r.messages[0].source.connId;
  assert.equal(typeof connId, 'number');
  assert.ok(r.messages.every((m) => m.source.connId === connId && m.source.listenerId === l.id && m.source.address === '127.0.0.1'));
  assert.equal(r.messages[0].source.port, c.socket.localPort);

  const e = sip('split-into-bytes', { callId: 'e' });
  for (let i = 0; i < e.length; i++) {
    c.socket.write(e.subarray(i, i + 1));
    await new Promise((res) => setImmediate(res));
  }
  await waitFor(() => r.messages.length === 4, '1-byte message');
  assert.deepEqual(r.messages[3].bytes, e);
  await waitFor(() => (c.text().match(/SIP\/2\.0 200 OK/g) ?? []).length === 4, 'four replies on the same connection');
  assert.equal(l.isOpen!(connId!), true);
  // no connId and mayConnect false: never opens a connection, even to a known peer
  assert.equal(l.send({ transport: 'tcp', address: '127.0.0.1', port: c.socket.localPort! }, Buffer.from('x'), false), false);
  assert.equal(r.count('conn_opened'), 1);
});

test('TCP: CRLFCRLF ping is answered with one CRLF', async () => {
  const r = recorder();
  const l = await tcpListener('127.0.0.1', r);
  const c = await tcpClient('127.0.0.1', l.local.port);
  c.socket.write('\r\n\r\n');
  await waitFor(() => c.text() === '\r\n', 'pong');
  c.socket.write('\r\n'); // a single CRLF is skipped, never answered
  c.socket.write(sip());
  await waitFor(() => r.messages.length === 1, 'message after keepalives');
  assert.equal(c.text(), '\r\n');
  assert.equal(r.count('keepalive_pong'), 1);
  assert.equal(c.closed, false);
});

test('TCP: missing Content-Length and garbage close the connection (framing errors)', async () => {
  const r = recorder();
  const l = await tcpListener('127.0.0.1', r);
  const c1 = await tcpClient('127.0.0.1', l.local.port);
  c1.socket.write(sip('', { cl: null }));
  const c2 = await tcpClient('127.0.0.1', l.local.port);
  c2.socket.write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03]));
  const c3 = await tcpClient('127.0.0.1', l.local.port);
  c3.socket.write('GET / HTTP/1.1\r\nHost: pbx\r\n\r\n');
  await waitFor(() => c1.closed && c2.closed && c3.closed, 'server closes all three');
  assert.equal(r.messages.length, 0);
  assert.equal(r.count('conn_framing_error'), 3);
  await waitFor(() => r.count('conn_closed') === 3, 'conn_closed counted');
});

test('TCP: oversize message -> onOversize with the head (caller answers 413), then close', async () => {
  const r = recorder();
  const l = await tcpListener('127.0.0.1', r, { maxMessageBytes: 512 });
  r.onOversize = (_head, source) => {
    l.send(source, Buffer.from('SIP/2.0 413 Request Entity Too Large\r\nContent-Length: 0\r\n\r\n'));
  };
  const c = await tcpClient('127.0.0.1', l.local.port);
  c.socket.write(sip('y'.repeat(1000)));
  await waitFor(() => c.closed, 'close after 413');
  assert.match(c.text(), /^SIP\/2\.0 413 /);
  assert.equal(r.oversize.length, 1);
  assert.match(r.oversize[0].head.toString('latin1'), /^OPTIONS sip:pbx\.example\.com SIP\/2\.0\r\n[\s\S]*Content-Length: 1000\r\n\r\n$/);
  assert.equal(typeof r.oversize[0].source.connId, 'number');
  assert.equal(r.count('conn_oversize'), 1);
  assert.equal(r.messages.length, 0);
});

async function connectAndSettle(host: string, port: number, n: number): Promise<Client[]> {
  const cs: Client[] = [];
  for (let i = 0; i < n; i++) cs.push(await tcpClient(host, port));
  return cs;
}

test('TCP: per-source connection cap closes the excess connection', async () => {
  const r = recorder();
  const l = await tcpListener('127.0.0.1', r, { maxConnectionsPerSource: 2 });
  const cs = await connectAndSettle('127.0.0.1', l.local.port, 2);
  await waitFor(() => r.count('conn_opened') === 2, 'two accepted');
  const extra = await tcpClient('127.0.0.1', l.local.port);
  await waitFor(() => extra.closed, 'excess closed by the server');
  assert.equal(r.count('conn_rejected_source_cap'), 1);
  assert.ok(cs.every((c) => !c.closed));
  // the accepted ones still work
  cs[1].socket.write(sip());
  await waitFor(() => r.messages.length === 1, 'message on an accepted connection');
  // a slot frees when one closes
  cs[0].socket.destroy();
  await waitFor(() => r.count('conn_closed') === 1, 'close noticed');
  const again = await tcpClient('127.0.0.1', l.local.port);
  await waitFor(() => r.count('conn_opened') === 3, 'slot reused');
  assert.equal(again.closed, false);
});

test('TCP: total connection cap closes the excess connection', async () => {
  const r = recorder();
  const l = await tcpListener('::1', r, { maxConnections: 3, maxConnectionsPerSource: 10 });
  const cs = await connectAndSettle('::1', l.local.port, 3);
  await waitFor(() => r.count('conn_opened') === 3, 'three accepted');
  const extra = await tcpClient('::1', l.local.port);
  await waitFor(() => extra.closed, 'excess closed by the server');
  assert.equal(r.count('conn_rejected_total_cap'), 1);
  assert.equal(r.count('conn_rejected_source_cap'), 0);
  assert.ok(cs.every((c) => !c.closed));
});

// Issue 12 item 2: capacity by source class. The classifier stands in for the edge's (inside,
// trusted, promoted, unknown by source address); loopback has all of 127.0.0.0/8 to connect from.
function classes(map: Record<string, SourceClass>): { classify: (a: string) => SourceClass; set(a: string, c: SourceClass): void } {
  const m = new Map(Object.entries(map));
  return { classify: (a) => m.get(a) ?? 'unknown', set: (a, c) => { m.set(a, c); } };
}

function admissions(r: Recorder): Array<[SourceClass, AdmissionResult]> {
  return (r as Recorder & { admitted: Array<[SourceClass, AdmissionResult]> }).admitted;
}

function withAdmissions(r: Recorder): Recorder {
  const admitted: Array<[SourceClass, AdmissionResult]> = [];
  Object.assign(r, { admitted });
  r.hooks.onAdmission = (cls, result) => { admitted.push([cls, result]); };
  return r;
}

/** connect from `from`, resolving once the server has decided (accepted: still open after the
 *  event; refused: closed) */
async function attempt(r: Recorder, port: number, from: string): Promise<Client> {
  const before = admissions(r).length;
  const c = await tcpClient('127.0.0.1', port, from);
  await waitFor(() => admissions(r).length > before, `admission decided for ${from}`);
  return c;
}

test('TCP: unknown sources hold at most their share; trusted, inside and promoted sources still get in', async () => {
  const r = withAdmissions(recorder());
  const cl = classes({ '127.0.0.9': 'trusted', '127.0.0.8': 'inside', '127.0.0.7': 'promoted' });
  const l = await tcpListener('127.0.0.1', r, { maxConnections: 20, maxConnectionsPerSource: 4, unknownPercent: 50, promotedPercent: 75, classify: cl.classify });
  // the flood: 8 unknown addresses x 4 connections = 32 tries for 20 slots
  const flood: Client[] = [];
  for (let a = 1; a <= 8; a++) for (let i = 0; i < 4; i++) flood.push(await attempt(r, l.local.port, `127.1.0.${a}`));
  await waitFor(() => flood.filter((c) => c.closed).length === 22, 'refused flood connections closed');
  assert.equal(r.count('conn_rejected_class_cap'), 22);
  assert.equal(admissions(r).filter(([c, x]) => c === 'unknown' && x === 'accepted').length, 10, '50 % of 20');
  const known: Client[] = [];
  for (const from of ['127.0.0.9', '127.0.0.8', '127.0.0.7']) for (let i = 0; i < 3; i++) known.push(await attempt(r, l.local.port, from));
  assert.deepEqual(admissions(r).slice(-9).map(([c, x]) => `${c}:${x}`), [
    ...Array(3).fill('trusted:accepted'), ...Array(3).fill('inside:accepted'), ...Array(3).fill('promoted:accepted'),
  ]);
  assert.equal(r.count('conn_evicted'), 0, 'the reserve was free: nobody evicted');
  assert.ok(known.every((c) => !c.closed));
  // the accepted connections carry SIP
  known[0]!.socket.write(sip('', { callId: 'trusted-1' }));
  await waitFor(() => r.messages.some((m) => m.source.address === '127.0.0.9'), 'message from the trusted peer');
});

test('TCP: with the reserve used up, a higher class closes the least recently used unknown connection, never its own', async () => {
  const r = withAdmissions(recorder());
  const cl = classes({ '127.0.0.9': 'trusted' });
  const l = await tcpListener('127.0.0.1', r, { maxConnections: 10, maxConnectionsPerSource: 10, unknownPercent: 80, promotedPercent: 90, classify: cl.classify });
  const unknown: Client[] = [];
  for (let a = 1; a <= 8; a++) unknown.push(await attempt(r, l.local.port, `127.2.0.${a}`));
  // the first unknown peer is in use (a SIP message), the others only hold their slot
  unknown[0]!.socket.write(sip('', { callId: 'in-use' }));
  await waitFor(() => r.messages.length === 1, 'message from an unknown peer');
  const trusted: Client[] = [];
  for (let i = 0; i < 2; i++) trusted.push(await attempt(r, l.local.port, '127.0.0.9'));
  assert.equal(r.count('conn_evicted'), 0, 'room without evicting');
  // the table is full: the next trusted connection takes the slot of the idlest unknown one
  trusted.push(await attempt(r, l.local.port, '127.0.0.9'));
  await waitFor(() => unknown[1]!.closed, 'the least recently used unknown connection closed');
  assert.equal(r.count('conn_evicted'), 1);
  assert.deepEqual(admissions(r).slice(-2).map(([c, x]) => `${c}:${x}`), ['unknown:evicted', 'trusted:accepted']);
  assert.equal(unknown[0]!.closed, false, 'the unknown connection in use stays');
  // a source promoted after it connected is looked up again before it is evicted: not evicted
  cl.set('127.2.0.3', 'promoted');
  trusted.push(await attempt(r, l.local.port, '127.0.0.9'));
  await waitFor(() => unknown[3]!.closed, 'the next unknown one closed instead');
  assert.equal(unknown[2]!.closed, false, 'the promoted source kept its connection');
  // an unknown newcomer cannot take anyone's place
  const late = await attempt(r, l.local.port, '127.2.0.99');
  await waitFor(() => late.closed, 'unknown newcomer refused');
  assert.deepEqual(admissions(r).at(-1), ['unknown', 'rejected_total_cap']);
  assert.ok(trusted.every((c) => !c.closed), 'trusted connections never evicted');
});

test('TCP: message timeout closes a slowloris connection; complete messages reset it', async () => {
  const r = recorder();
  const l = await tcpListener('127.0.0.1', r, { messageTimeoutMs: 200 });
  const ok = await tcpClient('127.0.0.1', l.local.port);
  ok.socket.write(sip());
  const slow = await tcpClient('127.0.0.1', l.local.port);
  const m = sip();
  slow.socket.write(m.subarray(0, 20));
  await waitFor(() => slow.closed, 'slowloris closed');
  assert.equal(r.count('conn_message_timeout'), 1);
  assert.equal(r.messages.length, 1);
  assert.equal(ok.closed, false, 'a connection with no partial message is not subject to the message timeout');
});

test('TCP: idle timeout closes a silent connection', async () => {
  const r = recorder();
  const l = await tcpListener('127.0.0.1', r, { idleTimeoutMs: 200 });
  const c = await tcpClient('127.0.0.1', l.local.port);
  await waitFor(() => c.closed, 'idle close');
  assert.equal(r.count('conn_idle_timeout'), 1);
});

test('TCP over IPv6: outbound connect, reuse, responses come back with the outbound connId', async () => {
  // "edge" listener A sends to "upstream" listener B
  const ra = recorder();
  const rb = recorder();
  const a = await tcpListener('::1', ra);
  const b = await tcpListener('::1', rb);
  rb.onMessage = (m) => {
    b.send(m.source, Buffer.from(`SIP/2.0 200 OK\r\nCall-ID: ${m.bytes.toString().match(/Call-ID: (\S+)/)![1]}\r\nContent-Length: 0\r\n\r\n`));
  };
  const dest: Endpoint = { transport: 'tcp', address: '::1', port: b.local.port };
  assert.equal(a.send(dest, sip('', { callId: 'x1' }), false), false, 'no connection without mayConnect');
  assert.equal(ra.count('conn_opened'), 0);
  assert.equal(a.send(dest, sip('', { callId: 'x1' }), true), true, 'queued until connected');
  assert.equal(a.send(dest, sip('', { callId: 'x2' }), true), true, 'reuses the pending connection');
  await waitFor(() => ra.messages.length === 2, 'responses from upstream');
  assert.equal(rb.count('conn_opened'), 1, 'one connection for both');
  assert.equal(ra.count('conn_opened'), 1);
  const outConn = ra.messages[0].source.connId!;
  assert.deepEqual(ra.messages.map((m) => m.source), [0, 1].map(() => ({ transport: 'tcp', address: '::1', port: b.local.port, connId: outConn, listenerId: a.id })));
  assert.match(ra.messages[1].bytes.toString(), /Call-ID: x2/);
  assert.equal(a.isOpen!(outConn), true);
  // by connId as well
  assert.equal(a.send({ ...dest, connId: outConn }, sip('', { callId: 'x3' })), true);
  await waitFor(() => ra.messages.length === 3, 'third response');
  assert.equal(rb.count('conn_opened'), 1);
  // upstream closes: the connection is gone, a new send with mayConnect opens a fresh one
  await b.close(0);
  await waitFor(() => !a.isOpen!(outConn), 'outbound closed');
  assert.equal(a.send({ ...dest, connId: outConn }, sip(), false), false, 'closed connId -> false');
});

test('TCP: connect failure counts send_error and leaves nothing open', async () => {
  const r = recorder();
  const a = await tcpListener('127.0.0.1', r);
  // a port nobody listens on: bind and close a listener to get one
  const tmp = await createTcpListener({ transport: 'tcp', host: '127.0.0.1', port: 0 }, recorder().hooks, TCP_OPTS);
  const port = tmp.local.port;
  await tmp.close();
  assert.equal(a.send({ transport: 'tcp', address: '127.0.0.1', port }, sip(), true), true);
  await waitFor(() => r.count('conn_closed') === 1, 'failed connection cleaned up');
  assert.equal(r.count('send_error'), 1, 'queued bytes lost once');
  assert.equal(a.send({ transport: 'tcp', address: '::1', port }, sip(), true), false, 'family mismatch');
});

test('TCP: send to a closed connId returns false; close(grace) ends connections', async () => {
  const r = recorder();
  const l = await tcpListener('127.0.0.1', r);
  const c = await tcpClient('127.0.0.1', l.local.port);
  c.socket.write(sip());
  await waitFor(() => r.messages.length === 1, 'message');
  const src = r.messages[0].source;
  c.socket.destroy();
  await waitFor(() => !l.isOpen!(src.connId!), 'closed connection noticed');
  assert.equal(l.send(src, Buffer.from('late reply')), false);
  assert.equal(l.isOpen!(123456789), false);

  const c2 = await tcpClient('127.0.0.1', l.local.port);
  await waitFor(() => r.count('conn_opened') === 2, 'second accepted');
  const closing = l.close(100);
  await closing;
  await waitFor(() => c2.closed, 'client closed after grace');
  await assert.rejects(tcpClient('127.0.0.1', l.local.port), 'no longer accepting');
});

test('UDP send: destination family is decided without a DNS lookup, and only literal addresses pass', () => {
  // agree with net.isIP on what is a literal (a non-literal would make dgram resolve it by DNS)
  for (const a of ['127.0.0.1', '1.2.3.4', '0.0.0.0', '255.255.255.255', '::1', '2001:db8::1', 'fe80::1']) {
    assert.equal(addressFamily(a), net.isIP(a), a);
  }
  for (const a of ['256.1.1.1', '01.2.3.4', '10.0.0.05', '1.2.3', '1.2.3.4.5', '1..2.3', '1.2.3.', 'pbx.example.com', '', ' 1.2.3.4', '1.2.3.4 ']) {
    assert.equal(addressFamily(a), 0, a);
  }
});

// without the I/O thread the kernel's queue backs up, with it the hand-over ring does
for (const ioThread of [false, true]) test(`UDP backlog${ioThread ? ' (I/O thread)' : ''}: the receive queue fill is read for overload control`, async () => {
  assert.equal(procAddress('127.0.0.1', 5060), '0100007F:13C4', '/proc/net/udp prints host byte order (x86: little endian)');
  assert.equal(procAddress('::1', 5060, 6), '00000000000000000000000001000000:13C4');
  const got: Inbound[] = [];
  const l = await createUdpListener({ transport: 'udp', host: '127.0.0.1', port: 0 }, { onMessage: (m) => got.push(m) }, { maxDatagramBytes: 65535, ioThread });
  try {
    assert.equal(l.backlog?.(), 0, 'an idle socket has an empty queue');
    let full = 0;
    await sendWhileBlocked(l.local.port, 2000, 800, 400, () => { full = l.backlog!(); });
    assert.ok(full > 0.04, `queue fill seen while the loop was blocked: ${full}`);
    // once the loop drains it, the queue is empty again
    for (let i = 0; i < 50 && l.backlog!() > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(l.backlog!(), 0);
    assert.ok(got.length > 0);
  } finally {
    await l.close();
  }
});

test('TCP: the gate at accept: a connection from a source the edge refuses (banned) is closed before it is admitted', async () => {
  const r = recorder();
  const l = await tcpListener('127.0.0.1', r, { refuse: (a) => a === '127.0.0.60' });
  const closedFrom = (from: string): Promise<boolean> => new Promise((resolve) => {
    const s = net.connect({ port: l.local.port, host: '127.0.0.1', localAddress: from });
    s.on('error', () => undefined);
    let done = false;
    s.once('close', () => { if (!done) { done = true; resolve(true); } });
    setTimeout(() => { if (!done) { done = true; s.destroy(); resolve(false); } }, 500);
  });
  assert.equal(await closedFrom('127.0.0.60'), true, 'refused source: closed at once');
  assert.equal(r.count('conn_rejected_banned'), 1);
  assert.equal(r.count('conn_opened'), 0, 'never admitted');
  assert.equal(await closedFrom('127.0.0.61'), false, 'another source stays connected');
  await waitFor(() => r.count('conn_opened') === 1, 'the other source admitted');
});
