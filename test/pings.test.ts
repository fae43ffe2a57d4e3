// OPTIONS pings addressed to the edge itself (issue 11, defect 2), through a spawned edge process in
// edge auth mode, as a carrier's or a monitoring system's qualify pings meet it:
//
// - `pings: answer` (the default): 100 pings from an untrusted source each get 200 with the
//   RFC 3261 11.2 headers and no product name, and the source is never banned (before: 407 to
//   every ping, a missing_auth suspicion event each, banned after about 50); the real `sipsak`
//   tool gets 200; a scanner User-Agent still gets nothing, a banned source gets nothing, and a
//   ping flood is still cut by the per-source budget;
// - `pings: forward`: the ping goes to the PBX unchallenged and the PBX's answer comes back;
// - `pings: challenge`: the ping is challenged like any request (407), as before.
//
// The rules are the shipped ones, except that the sipsak scanner signature only logs: an operator
// who monitors the edge with sipsak from outside does that (rules/scanner.yaml's note on it).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { AUTH_SECRET, upsertUsers } from './helpers/auth-edge';
import { startEdge, type EdgeProc } from './helpers/edge-proc';
import { sample, sumOf } from './helpers/prom';
import { REPO_ROOT } from './helpers/sipp';
import { UdpPeer, header, request, response, uniq } from './helpers/udp-peer';

const DOMAIN = 'example.com';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-pings-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** the shipped rules directory, with the sipsak User-Agent signature turned from drop to log */
function rulesDir(): string {
  const out = path.join(dir, 'rules');
  if (fs.existsSync(out)) return out;
  fs.cpSync(path.join(REPO_ROOT, 'rules'), out, { recursive: true, filter: (f) => !f.endsWith('.ts') });
  const file = path.join(out, 'scanner.yaml');
  const text = fs.readFileSync(file, 'utf8');
  const at = text.indexOf('  - name: sipsak\n');
  assert.ok(at >= 0, 'rules/scanner.yaml has a sipsak signature');
  const act = text.indexOf('action: drop', at);
  assert.ok(act > at && act - at < 600, 'the sipsak signature drops');
  fs.writeFileSync(file, `${text.slice(0, act)}action: log${text.slice(act + 'action: drop'.length)}`);
  return out;
}

/** an edge-mode config (a users file for example.com) with `pings` as given (absent: the default) */
function configFile(pings: 'answer' | 'forward' | 'challenge' | undefined, pbxPort: number): string {
  const users = path.join(dir, 'users.txt');
  if (!fs.existsSync(users)) upsertUsers(users, DOMAIN, { 2000: 'the right password' }, ['SHA-256', 'MD5']);
  const file = path.join(dir, `sip-edge-${pings ?? 'default'}.yaml`);
  fs.writeFileSync(file, [
    'listen: [udp:127.0.0.1:0]', `upstreams: [udp:127.0.0.2:${pbxPort}]`, `domains: [${DOMAIN}]`, 'warmUpCalls: 0',
    `rules: ${rulesDir()}`,
    'auth:', `  users: ${users}`, `  secret: "${AUTH_SECRET}"`, `  realm: ${DOMAIN}`,
    ...(pings !== undefined ? [`pings: ${pings}`] : []), '',
  ].join('\n'));
  return file;
}

/** the PBX stand-in: answers every request 200 with its own To tag and records what it got */
async function pbx(): Promise<UdpPeer> {
  const p = await UdpPeer.bind('127.0.0.2');
  p.sock.on('message', (b, rinfo) => {
    const t = b.toString('latin1');
    if (/^(ACK|SIP\/2\.0)/.test(t)) return;
    p.sock.send(response(t, 200, 'OK', { toTag: 'pbx-stand-in' }), rinfo.port, rinfo.address);
  });
  return p;
}

async function spawnEdge(pings: 'answer' | 'forward' | 'challenge' | undefined, pbxPort: number): Promise<EdgeProc> {
  return startEdge({ listen: ['udp:127.0.0.1:0'], upstream: [`udp:127.0.0.2:${pbxPort}`], extraArgs: ['--config', configFile(pings, pbxPort)] });
}

async function metrics(e: EdgeProc): Promise<string> {
  return (await fetch(`http://127.0.0.1:${e.metricsPort}/metrics`)).text();
}

/** a monitoring system's qualify ping: OPTIONS to `ruri` (no user part), no credentials */
function ping(p: UdpPeer, ruri: string, extra: string[] = []): string {
  return request(p, { method: 'OPTIONS', ruri, from: '<sip:monitor@monitoring.example.net>', to: `<${ruri}>`, callId: uniq('ping'), extra: ['Accept: application/sdp', ...extra] });
}

/** sends `text` and returns the first response to its Call-ID, or null after `ms` */
async function ask(p: UdpPeer, text: string, port: number, ms = 2000): Promise<string | null> {
  const callId = header(text, 'Call-ID');
  await p.send(text, port);
  try {
    return (await p.wait((r) => r.text.startsWith('SIP/2.0') && header(r.text, 'Call-ID') === callId, ms, 'a response')).text;
  } catch {
    return null;
  }
}

const statusOf = (res: string | null): number | null => (res === null ? null : Number(res.slice(8, 11)));

function sipsak(args: readonly string[], ms: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn('sipsak', [...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (b: Buffer) => { out += b.toString('latin1'); });
    c.stderr.on('data', (b: Buffer) => { out += b.toString('latin1'); });
    const t = setTimeout(() => c.kill('SIGKILL'), ms);
    c.on('error', (e) => { clearTimeout(t); reject(e); });
    c.on('close', (code) => { clearTimeout(t); resolve({ code, out }); });
  });
}

function sipsakAvailable(): boolean {
  return fs.existsSync('/usr/bin/sipsak') || (process.env.PATH ?? '').split(':').some((d) => d !== '' && fs.existsSync(path.join(d, 'sipsak')));
}

test('pings: answer (default): 100 pings from an untrusted source each get 200 (RFC 3261 11.2 headers, no product name), never challenged or banned; sipsak gets 200; a scanner, a banned source and a ping flood get nothing', { timeout: 90_000 }, async () => {
  if (!sipsakAvailable()) assert.fail('sipsak is not installed (Debian package sipsak)');
  const p = await pbx();
  const e = await spawnEdge(undefined, p.port);
  const monitor = await UdpPeer.bind('127.0.0.81');
  const scanner = await UdpPeer.bind('127.0.0.82');
  const flooder = await UdpPeer.bind('127.0.0.83');
  try {
    const port = e.ports.udp!;
    // 100 pings, to the served domain and to the edge's own address, one after the other
    for (let i = 0; i < 100; i++) {
      const ruri = i % 2 === 0 ? `sip:${DOMAIN}` : `sip:127.0.0.1:${port}`;
      const res = await ask(monitor, ping(monitor, ruri), port);
      assert.equal(statusOf(res), 200, `ping ${i + 1} to ${ruri}: ${res?.split('\r\n')[0] ?? 'no answer'}`);
      if (i === 0) {
        const r = res!;
        // RFC 3261 11.2: what a 200 to OPTIONS should carry; 8.2.6.2: a To tag
        assert.match(header(r, 'Allow') ?? '', /\bINVITE\b.*\bOPTIONS\b/);
        assert.equal(header(r, 'Accept'), 'application/sdp');
        assert.ok(header(r, 'Accept-Encoding') !== undefined && header(r, 'Accept-Language') !== undefined);
        assert.equal(header(r, 'Supported'), 'path');
        assert.match(header(r, 'To') ?? '', /;tag=/);
        assert.equal(header(r, 'Content-Length'), '0');
        assert.equal(header(r, 'Server'), undefined, 'no Server header');
        assert.doesNotMatch(r, /sip-edge/i, 'the answer names no product');
      }
    }
    // a soft ban would land after its grace (3 s): wait it out, then ping again
    await new Promise((r) => setTimeout(r, 3_500));
    assert.equal(statusOf(await ask(monitor, ping(monitor, `sip:${DOMAIN}`), port)), 200, 'still answered after the grace');
    let m = await metrics(e);
    assert.equal(sample(m, 'sipedge_bans_active'), 0, 'the prober is not banned');
    assert.equal(sumOf(m, 'sipedge_bans_added_total'), 0);
    assert.equal(sample(m, 'sipedge_verdicts_total', { stage: 'ping', action: 'reply', reason: 'options_ping', mode: 'enforce' }), 101);
    assert.equal(sumOf(m, 'sipedge_verdicts_total', { stage: 'auth' }), 0, 'no ping was challenged');
    assert.equal(p.inbox.filter((x) => x.text.startsWith('OPTIONS') && /monitoring\.example\.net/.test(x.text)).length, 0, 'no ping reached the PBX');

    // the real tool: `sipsak -s sip:HOST:PORT` sends an OPTIONS ping and exits 0 on a 200
    const s = await sipsak(['-vv', '-s', `sip:127.0.0.1:${port}`], 20_000);
    assert.equal(s.code, 0, `sipsak exit code (0 = a 200 was received)\n${s.out}`);
    assert.match(s.out, /SIP\/2\.0 200/);

    // an OPTIONS to a user is for the PBX: challenged at the edge like any request
    assert.equal(statusOf(await ask(monitor, request(monitor, { method: 'OPTIONS', ruri: `sip:2000@${DOMAIN}`, to: `<sip:2000@${DOMAIN}>`, from: '<sip:monitor@monitoring.example.net>' }), port)), 407);

    // a scanner User-Agent still gets nothing (scanner stage, before ping) and is banned for it
    // (weight 5 of 20: the fifth probe bans); a banned source then gets nothing, pings included
    for (let i = 0; i < 5; i++) assert.equal(await ask(scanner, ping(scanner, `sip:${DOMAIN}`, ['User-Agent: friendly-scanner']), port, 300), null, 'no answer to a scanner');
    const t0 = Date.now();
    while (Date.now() - t0 < 3000 && sample(await metrics(e), 'sipedge_bans_active') !== 1) await new Promise((r) => setTimeout(r, 50));
    assert.equal(sample(await metrics(e), 'sipedge_bans_active'), 1, 'the scanner is banned');
    assert.equal(await ask(scanner, ping(scanner, `sip:${DOMAIN}`), port, 500), null, 'a banned source gets no 200');

    // a ping flood is still a flood: the per-source budget (200 per 10 s) counts pings
    const before = flooder.inbox.length;
    for (let i = 0; i < 260; i++) await flooder.send(ping(flooder, `sip:${DOMAIN}`), port);
    await new Promise((r) => setTimeout(r, 1_000));
    const answered = flooder.inbox.length - before;
    assert.ok(answered <= 200 && answered >= 150, `${answered} of 260 flood pings answered (budget 200)`);
    m = await metrics(e);
    assert.ok((sample(m, 'sipedge_verdicts_total', { stage: 'ratelimit', action: 'drop', reason: 'source_rate', mode: 'enforce' }) ?? 0) >= 60);
  } finally {
    monitor.close(); scanner.close(); flooder.close(); p.close();
    await e.stop();
  }
});

test('pings: forward sends the ping to the PBX unchallenged (its answer comes back); pings: challenge challenges it like any request', { timeout: 60_000 }, async () => {
  const p = await pbx();
  const monitor = await UdpPeer.bind('127.0.0.84');
  try {
    const fwd = await spawnEdge('forward', p.port);
    try {
      const res = await ask(monitor, ping(monitor, `sip:${DOMAIN}`), fwd.ports.udp!);
      assert.equal(statusOf(res), 200, res ?? 'no answer');
      assert.match(header(res!, 'To') ?? '', /tag=pbx-stand-in/, 'the PBX answered');
      assert.equal(p.inbox.filter((x) => x.text.startsWith('OPTIONS') && /monitoring\.example\.net/.test(x.text)).length, 1, 'the ping reached the PBX');
      assert.equal(sumOf(await metrics(fwd), 'sipedge_verdicts_total', { stage: 'auth' }), 0, 'not challenged');
    } finally {
      await fwd.stop();
    }
    const ch = await spawnEdge('challenge', p.port);
    try {
      const res = await ask(monitor, ping(monitor, `sip:${DOMAIN}`), ch.ports.udp!);
      assert.equal(statusOf(res), 407, res ?? 'no answer');
      assert.match(header(res!, 'Proxy-Authenticate') ?? '', /^Digest realm="example\.com"/);
    } finally {
      await ch.stop();
    }
  } finally {
    monitor.close(); p.close();
  }
});

