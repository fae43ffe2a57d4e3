// Digest authentication through the whole edge (startEdge, real loopback UDP sockets, the real
// proxy): what the PBX receives after an edge-mode success, that a challenged INVITE's ACK is
// absorbed (not a forged-reply suspicion), the auth_lockout security line the fail2ban filter
// matches, the metrics, and the pbx-mode 404 rewrite done on the real response path.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { ManualClock } from '../edge/clock';
import type { AuthConfig } from '../edge/config/types';
import { startEdge } from '../edge/edge';
import { answerChallenge, authConfig, upsertUsers } from './helpers/auth-edge';
import { testConfig } from './helpers/config';
import { captureLog } from './helpers/logs';
import { parseExposition, sample } from './helpers/prom';
import { UdpPeer, header, headers, request, response, uniq } from './helpers/udp-peer';

const REALM = 'example.com';

function usersFile(): string {
  const f = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-authedge-')), 'users.txt');
  upsertUsers(f, REALM, { '1001': 'first secret pw', '1002': 'second secret pw' }, ['SHA-256', 'MD5']);
  return f;
}

/** edge mode, SHA-256 only, a lockout after 3 failures; `mode: 'pbx'` for pass-through */
const auth = (mode: 'edge' | 'pbx' = 'edge'): AuthConfig =>
  authConfig({ mode, realm: REALM, ...(mode === 'edge' ? { usersFile: usersFile() } : {}), algorithms: ['SHA-256'], lockout: { failures: 3, seconds: 900 } });


/** the PBX stand-in: answers every request 200 and records what it received */
async function pbx200(edgePort: () => number, status = 200): Promise<UdpPeer> {
  const pbx = await UdpPeer.bind('127.0.0.2');
  pbx.sock.on('message', (b) => {
    const t = b.toString('latin1');
    if (/^(ACK|SIP\/2\.0)/.test(t)) return;
    pbx.sock.send(response(t, status, status === 200 ? 'OK' : 'Not Found', { toTag: 'pbx' }), edgePort(), '127.0.0.1');
  });
  return pbx;
}


test('edge mode end to end: INVITE challenged 407, its ACK absorbed, the answered INVITE reaches the PBX without credentials or spoofed identity', async () => {
  let port = 0;
  const pbx = await pbx200(() => port);
  const phone = await UdpPeer.bind('127.0.0.40');
  const edge = await startEdge(testConfig({ upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }], auth: auth() }), captureLog().log, { clock: new ManualClock(), watchRules: false });
  port = edge.listeners[0]!.port;
  try {
    const callId = uniq('call');
    const base = { method: 'INVITE', ruri: 'sip:1002@example.com', from: '<sip:1001@example.com>', to: '<sip:1002@example.com>', callId };
    const inv1 = request(phone, { ...base, branch: uniq('z9hG4bK'), extra: ['P-Asserted-Identity: <sip:911@example.com>'] });
    await phone.send(inv1, port);
    const ch = await phone.waitFirstLine('SIP/2.0 407');
    const challenge = header(ch.text, 'Proxy-Authenticate')!;
    assert.match(challenge, /^Digest realm="example.com", nonce="[^"]+", algorithm=SHA-256, qop="auth"$/);
    // RFC 3261 17.1.1.3: the ACK for the 407 (To tag of the edge's reply)
    const toTag = /tag=([^;>\s]+)/.exec(header(ch.text, 'To')!)![1]!;
    const via1 = header(inv1, 'Via')!;
    await phone.send(request(phone, { ...base, method: 'ACK', via: via1, toTag }), port);
    const inv2 = request(phone, { ...base, cseq: 2, extra: ['P-Asserted-Identity: <sip:911@example.com>', answerChallenge(407, challenge, { method: 'INVITE', uri: 'sip:1002@example.com', user: '1001', password: 'first secret pw' })] });
    await phone.send(inv2, port);
    const atPbx = await pbx.wait((m) => m.text.startsWith('INVITE'));
    assert.equal(header(atPbx.text, 'Proxy-Authorization'), undefined, 'credentials stripped');
    assert.equal(header(atPbx.text, 'P-Asserted-Identity'), undefined, 'spoofed identity stripped');
    assert.equal(header(atPbx.text, 'Call-ID'), callId);
    await phone.waitFirstLine('SIP/2.0 200');
    assert.equal(pbx.inbox.filter((m) => m.text.startsWith('ACK')).length, 0, 'the hop-by-hop ACK of the 407 did not go to the PBX');
    const exp = parseExposition(await edge.metrics.metrics());
    assert.equal(sample(exp, 'sipedge_unmatched_total', { kind: 'ack' }), 0, 'the ACK was not a stray');
    assert.equal(sample(exp, 'sipedge_auth_total', { mode: 'edge', result: 'challenge' }), 1);
    assert.equal(sample(exp, 'sipedge_auth_total', { mode: 'edge', result: 'success' }), 1);
    assert.equal(edge.suspicion.isPromoted('127.0.0.40'), true);
  } finally {
    phone.close(); pbx.close(); await edge.close(0);
  }
});

test('a brute-forced user is locked out: one auth_lockout security line naming the source (fail2ban: test/ops-fail2ban.test.ts)', async () => {
  let port = 0;
  const pbx = await pbx200(() => port);
  const attacker = await UdpPeer.bind('127.0.0.41');
  const { lines, log } = captureLog();
  const edge = await startEdge(testConfig({ upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }], auth: auth() }), log, { clock: new ManualClock(), watchRules: false });
  port = edge.listeners[0]!.port;
  try {
    for (let i = 0; i < 4; i++) {
      const reg = { method: 'REGISTER', ruri: 'sip:example.com', from: '<sip:1001@example.com>', to: '<sip:1001@example.com>', callId: uniq('bf') };
      await attacker.send(request(attacker, reg), port);
      const ch = await attacker.wait((m) => m.text.startsWith('SIP/2.0 401') && header(m.text, 'Call-ID') === reg.callId && !header(m.text, 'CSeq')!.startsWith('2'));
      await attacker.send(request(attacker, { ...reg, cseq: 2, extra: [answerChallenge(401, header(ch.text, 'WWW-Authenticate')!, { method: 'REGISTER', uri: 'sip:example.com', user: '1001', password: `guess number ${i}` })] }), port);
      await attacker.wait((m) => m.text.startsWith('SIP/2.0 401') && header(m.text, 'CSeq')!.startsWith('2') && header(m.text, 'Call-ID') === reg.callId);
    }
    const lockLines = () => lines.filter((l) => l.includes('"sec":"auth_lockout"'));
    for (let i = 0; i < 50 && lockLines().length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(lockLines().length, 1, 'one line per lockout');
    const rec = JSON.parse(lockLines()[0]!) as Record<string, unknown>;
    assert.equal(rec.src, '127.0.0.41');
    assert.deepEqual([rec.reason, rec.rule, rec.user], ['auth_failures', 'auth.lockout', '1001']);
    assert.equal(pbx.inbox.length, 0, 'nothing reached the PBX');
    const exp = parseExposition(await edge.metrics.metrics());
    assert.equal(sample(exp, 'sipedge_auth_total', { mode: 'edge', result: 'lockout' }), 1);
    assert.equal(sample(exp, 'sipedge_verdicts_total', { stage: 'auth', action: 'reply', reason: 'wrong_credentials', mode: 'enforce' }), 4);
  } finally {
    attacker.close(); pbx.close(); await edge.close(0);
  }
});

test('pbx mode on the real response path: the PBX 404 for an unknown extension becomes its own challenge shape; a known user\'s 401 passes', async () => {
  let port = 0;
  const pbx = await UdpPeer.bind('127.0.0.2');
  // a naive PBX: 401 for 1001, 404 for anyone else
  pbx.sock.on('message', (b) => {
    const t = b.toString('latin1');
    if (!t.startsWith('REGISTER')) return;
    const known = /^To:.*sip:1001@/m.test(t);
    pbx.sock.send(response(t, known ? 401 : 404, known ? 'Unauthorized' : 'Not Found', { toTag: 'p', extra: known ? ['WWW-Authenticate: Digest realm="asterisk", nonce="4f1e2d3c4b5a6978", algorithm=MD5, qop="auth"'] : [] }), port, '127.0.0.1');
  });
  const scanner = await UdpPeer.bind('127.0.0.42');
  const edge = await startEdge(testConfig({ upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }], auth: auth('pbx') }), captureLog().log, { clock: new ManualClock(), watchRules: false });
  port = edge.listeners[0]!.port;
  try {
    const ask = async (ext: string) => {
      const callId = uniq('svwar');
      await scanner.send(request(scanner, { method: 'REGISTER', ruri: 'sip:example.com', from: `<sip:${ext}@example.com>`, to: `<sip:${ext}@example.com>`, callId }), port);
      return scanner.wait((m) => m.text.startsWith('SIP/2.0') && !m.text.startsWith('SIP/2.0 100') && header(m.text, 'Call-ID') === callId);
    };
    const known = await ask('1001');
    const unknown = await ask('1999');
    const statusLine = (t: string) => t.split('\r\n')[0];
    assert.equal(statusLine(unknown.text), statusLine(known.text));
    assert.deepEqual(headers(unknown.text, 'WWW-Authenticate').map((h) => h.replace(/nonce="[^"]*"/, '')), headers(known.text, 'WWW-Authenticate').map((h) => h.replace(/nonce="[^"]*"/, '')));
    assert.notEqual(header(unknown.text, 'WWW-Authenticate'), header(known.text, 'WWW-Authenticate'), 'a fresh nonce, not a copy');
    const exp = parseExposition(await edge.metrics.metrics());
    assert.equal(sample(exp, 'sipedge_auth_total', { mode: 'pbx', result: 'challenge' }), 2);
  } finally {
    scanner.close(); pbx.close(); await edge.close(0);
  }
});
