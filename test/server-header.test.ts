// What the edge's own replies say about it. A `Server: sip-edge` line tells a scanner which product
// it found (and which exploits to try); by default the edge names nothing (like Kamailio's
// server_signature=no), and `serverHeader` in the config sets a line of the operator's choosing.
// Checked on the real process (spawned CLI) for every kind of reply it generates itself: 100
// Trying, 400 (sanity), 401 / 407 (edge digest challenges), 403 (relay refused), 481 (stray
// CANCEL), 482 (a loop, answered to the PBX), 503 (new call during shutdown).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { writeUsersFile } from './helpers/auth-edge';
import { startEdge } from './helpers/edge-proc';
import { UdpPeer, header, headers, request, uniq } from './helpers/udp-peer';

const CLI = path.resolve(__dirname, '../edge/cli.js');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sip-edge-server-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const users = path.join(dir, 'users.txt');
writeUsersFile(users, 'example.com', { alice: 'correct horse battery' }, ['SHA-256', 'MD5']);

function config(name: string, extra: string): string {
  const file = path.join(dir, `${name}.yaml`);
  fs.writeFileSync(file, [
    'health:', '  intervalMs: 0', 'warmUpCalls: 0', 'shutdownGraceMs: 300', 'domains: [example.com]',
    // edge authentication for the served domain: untrusted phones are challenged
    'auth:', `  users: ${users}`, '  realm: example.com',
    extra, '',
  ].join('\n'));
  return file;
}

/** every reply the edge generated in one run, by status */
async function repliesOfOneRun(extraConfig: string): Promise<Map<number, string>> {
  const pbx = await UdpPeer.bind('127.0.0.2');
  const edge = await startEdge({
    listen: ['udp:127.0.0.1:0'], upstream: [`udp:127.0.0.2:${pbx.port}`],
    extraArgs: ['--config', config(uniq('c'), extraConfig), '--trusted', '127.0.0.3/32'],
    env: { ...process.env, SIPEDGE_AUTH_SECRET: '4d1c8a0f3b7e29d65f0a1c3e8b7d2f46' },
  });
  const phone = await UdpPeer.bind('127.0.0.1');   // untrusted: challenged
  const carrier = await UdpPeer.bind('127.0.0.3'); // trusted: forwarded without a challenge
  const port = edge.ports.udp!;
  const got = new Map<number, string>();
  const expect = async (peer: UdpPeer, status: number, callId: string): Promise<void> => {
    const r = await peer.wait((m) => m.text.startsWith(`SIP/2.0 ${status} `) && header(m.text, 'Call-ID') === callId, 3000, `${status} for ${callId}`);
    got.set(status, r.text);
  };
  try {
    let c = uniq('reg');
    await phone.send(request(phone, { method: 'REGISTER', ruri: 'sip:example.com', callId: c, from: '<sip:alice@example.com>', to: '<sip:alice@example.com>' }), port);
    await expect(phone, 401, c);
    c = uniq('inv');
    await phone.send(request(phone, { callId: c, from: '<sip:alice@example.com>' }), port);
    await expect(phone, 407, c);
    c = uniq('bad');
    // RFC 3261 8.1.1.5: the CSeq method must match the request method (sanity -> 400)
    await phone.send(request(phone, { callId: c, cseqMethod: 'REGISTER' }), port);
    await expect(phone, 400, c);
    c = uniq('stray');
    await phone.send(request(phone, { method: 'CANCEL', callId: c }), port);
    await expect(phone, 481, c);
    c = uniq('relay');
    await carrier.send(request(carrier, { callId: c, ruri: 'sip:1000@elsewhere.example' }), port);
    await expect(carrier, 403, c);
    c = uniq('fwd');
    await carrier.send(request(carrier, { callId: c }), port);
    await expect(carrier, 100, c);
    // the PBX, proxying, routes the INVITE straight back: otherwise unchanged, it is a loop
    // (RFC 3261 16.3 item 4)
    const fwd = await pbx.wait((m) => m.text.startsWith('INVITE') && header(m.text, 'Call-ID') === c, 3000, 'forwarded INVITE');
    const [line, ...rest] = fwd.text.split('\r\n');
    await pbx.send([line, `Via: SIP/2.0/UDP 127.0.0.2:${pbx.port};branch=z9hG4bK${uniq('pbx')}`, ...rest].join('\r\n'), port, '127.0.0.1');
    await expect(pbx, 482, c);
    process.kill(edge.pid, 'SIGTERM');
    c = uniq('late');
    await carrier.send(request(carrier, { callId: c }), port);
    await expect(carrier, 503, c);
    assert.equal(await edge.exited, 0);
    return got;
  } finally {
    phone.close();
    carrier.close();
    pbx.close();
    await edge.stop('SIGKILL', 0);
  }
}

const STATUSES = [100, 400, 401, 403, 407, 481, 482, 503];

test('by default no reply the edge generates carries a Server header (or anything else naming the product)', { timeout: 30_000 }, async () => {
  const got = await repliesOfOneRun('');
  assert.deepEqual([...got.keys()].sort((a, b) => a - b), STATUSES);
  for (const [status, text] of got) {
    assert.deepEqual(headers(text, 'Server'), [], `${status} carries no Server header:\n${text}`);
    assert.doesNotMatch(text, /sip-?edge/i, `${status} names the product nowhere:\n${text}`);
  }
});

test('serverHeader in the config sets the Server line of every generated reply', { timeout: 30_000 }, async () => {
  const got = await repliesOfOneRun('serverHeader: "Acme SBC/2.1 (edge)"');
  assert.deepEqual([...got.keys()].sort((a, b) => a - b), STATUSES);
  for (const [status, text] of got) assert.deepEqual(headers(text, 'Server'), ['Acme SBC/2.1 (edge)'], `${status}:\n${text}`);
});

test('a challenge without a configured realm or domain name names the edge\'s address, not the product', { timeout: 30_000 }, async () => {
  const file = path.join(dir, 'norealm.yaml');
  fs.writeFileSync(file, `health:\n  intervalMs: 0\nwarmUpCalls: 0\nauth:\n  users: ${users}\n`);
  const edge = await startEdge({
    listen: ['udp:127.0.0.1:0'], upstream: ['udp:127.0.0.2:5999'], extraArgs: ['--config', file],
    env: { ...process.env, SIPEDGE_AUTH_SECRET: '4d1c8a0f3b7e29d65f0a1c3e8b7d2f46' },
  });
  const phone = await UdpPeer.bind('127.0.0.1');
  try {
    const c = uniq('reg');
    await phone.send(request(phone, { method: 'REGISTER', ruri: 'sip:127.0.0.1', callId: c, from: '<sip:alice@127.0.0.1>', to: '<sip:alice@127.0.0.1>' }), edge.ports.udp!);
    const r = await phone.wait((m) => m.text.startsWith('SIP/2.0 401 ') && header(m.text, 'Call-ID') === c, 3000, '401');
    assert.match(header(r.text, 'WWW-Authenticate') ?? '', /realm="127\.0\.0\.1"/, r.text);
    assert.doesNotMatch(r.text, /sip-?edge/i, r.text);
  } finally {
    phone.close();
    await edge.stop('SIGKILL', 0);
  }
});

test('sip-edge check refuses a serverHeader that is not a header value', () => {
  for (const [value, want] of [['""', /serverHeader/], ['"evil\\r\\nX-Injected: 1"', /serverHeader/], ['42', /serverHeader/], [`"${'x'.repeat(300)}"`, /serverHeader/]] as const) {
    const file = path.join(dir, `check-${uniq('s')}.yaml`);
    fs.writeFileSync(file, `upstreams: [udp:127.0.0.1:5080]\nserverHeader: ${value}\n`);
    const r = spawnSync(process.execPath, [CLI, 'check', '--config', file], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 1, `${value}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2:\\d+: .*${want.source}`, 'm'), value);
  }
  const ok = path.join(dir, 'check-ok.yaml');
  fs.writeFileSync(ok, 'upstreams: [udp:127.0.0.1:5080]\nserverHeader: null\n');
  const r = spawnSync(process.execPath, [CLI, 'check', '--config', ok], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(r.status, 0, r.stderr);
});
