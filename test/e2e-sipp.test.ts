// Real peers through the real edge process: sipp as the phones outside (127.0.0.1) and as the
// PBX inside (127.0.0.2), the edge spawned from its CLI exactly as an operator runs it.
// Under CI=true these never skip: a missing sipp is a failure.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { startEdge, type EdgeProc } from './helpers/edge-proc';
import { sample } from './helpers/prom';
import { killAllSipp, runSipp, sippAvailable, sippSummary, startSipp, type SippResult } from './helpers/sipp';

const inCi = process.env.CI === 'true';
const skip = !sippAvailable() && !inCi ? 'sipp not installed (CI=true makes this a failure)' : false;
process.on('exit', killAllSipp);

// upstream sipp does not answer OPTIONS: run these edges without active health probes
const cfgDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sip-edge-e2e-'));
const cfgFile = path.join(cfgDir, 'edge.yaml');
fs.writeFileSync(cfgFile, 'health:\n  intervalMs: 0\n');
after(() => fs.rmSync(cfgDir, { recursive: true, force: true }));

function ok(r: SippResult, calls: number, who: string): void {
  assert.equal(r.killed, false, `${who}: watchdog killed sipp\n${sippSummary(r)}`);
  assert.equal(r.failed, 0, `${who}: failed calls\n${sippSummary(r)}`);
  assert.equal(r.successful, calls, `${who}: successful calls\n${sippSummary(r)}`);
}

/** sipp places hundreds of calls per second from one address: in these proxy tests it is a
 *  trusted peer (a carrier trunk), which skips the rate limits and scanner signatures, never
 *  sanity; the policy stages have their own tests */
async function edgeFor(listen: string[], upstream: string[]): Promise<EdgeProc> {
  return startEdge({ listen, upstream, extraArgs: ['--config', cfgFile, '--trusted', '127.0.0.1/32'] });
}

async function scrape(edge: EdgeProc): Promise<string> {
  assert.ok(edge.metricsPort, 'metrics port announced');
  const res = await fetch(`http://127.0.0.1:${edge.metricsPort}/metrics`);
  return res.text();
}

describe('sipp through the edge', { skip }, () => {
  test('1,000 calls over UDP, ACK and BYE following Record-Route: 0 failed', async () => {
    const uas = await startSipp({ sn: 'uas', transport: 'u1', localIp: '127.0.0.2', maxTimeMs: 90_000 });
    const edge = await edgeFor(['udp:127.0.0.1:0'], [`udp:127.0.0.2:${uas.port}`]);
    try {
      const calls = 1000;
      const r = await runSipp({ scenario: 'uac-rr.xml', remote: `127.0.0.1:${edge.ports.udp}`, transport: 'u1', calls, rate: 250, limit: 500, maxTimeMs: 60_000 });
      ok(r, calls, 'uac-rr over udp');
      const m = await scrape(edge);
      assert.ok((sample(m, 'sipedge_messages_received_total', { transport: 'udp', side: 'outside', kind: 'request' }) ?? 0) >= calls * 3, 'INVITE, ACK, BYE counted');
    } finally {
      await edge.stop();
      await uas.stop(500);
    }
  });

  test('1,000 calls over TCP (phones and PBX on TCP): 0 failed', async () => {
    const uas = await startSipp({ scenario: 'uas.xml', transport: 't1', localIp: '127.0.0.2', maxTimeMs: 90_000 });
    const edge = await edgeFor(['tcp:127.0.0.1:0'], [`tcp:127.0.0.2:${uas.port}`]);
    try {
      const calls = 1000;
      const r = await runSipp({ scenario: 'uac-rr.xml', remote: `127.0.0.1:${edge.ports.tcp}`, transport: 't1', calls, rate: 250, limit: 500, maxTimeMs: 60_000 });
      ok(r, calls, 'uac-rr over tcp');
    } finally {
      await edge.stop();
      await uas.stop(500);
    }
  });

  test('REGISTER through the edge gets a Path; the PBX then calls the phone through it', async () => {
    for (const t of ['u1', 't1'] as const) {
      const tr = t === 'u1' ? 'udp' : 'tcp';
      const pbx = await startSipp({ scenario: 'registrar-pbx.xml', transport: 'u1', localIp: '127.0.0.2', maxTimeMs: 60_000 });
      const edge = await edgeFor(['udp:127.0.0.1:0', 'tcp:127.0.0.1:0'], [`udp:127.0.0.2:${pbx.port}`]);
      try {
        const calls = 20;
        const phone = await runSipp({ scenario: 'register-then-callee.xml', service: 'alice', remote: `127.0.0.1:${edge.ports[tr]}`, transport: t, calls, rate: 10, maxTimeMs: 40_000 });
        ok(phone, calls, `phone registered over ${tr}`);
        const srv = await pbx.stop(3_000);
        ok(srv, calls, `registrar/PBX (phone over ${tr})`);
      } finally {
        await edge.stop();
        await pbx.stop(500);
      }
    }
  });

  test('CANCEL flow: 200 for the CANCEL, 487 relayed, ACK absorbed hop by hop', async () => {
    const uas = await startSipp({ scenario: 'uas-cancel.xml', transport: 'u1', localIp: '127.0.0.2', maxTimeMs: 60_000 });
    const edge = await edgeFor(['udp:127.0.0.1:0'], [`udp:127.0.0.2:${uas.port}`]);
    try {
      const calls = 50;
      const r = await runSipp({ scenario: 'uac-cancel.xml', remote: `127.0.0.1:${edge.ports.udp}`, transport: 'u1', calls, rate: 25, maxTimeMs: 40_000 });
      ok(r, calls, 'uac-cancel');
      ok(await uas.stop(3_000), calls, 'uas-cancel');
    } finally {
      await edge.stop();
      await uas.stop(500);
    }
  });

  test('a stray 200 OK from a random outside address is delivered nowhere and counted', async () => {
    const pbx = dgram.createSocket('udp4');
    await new Promise<void>((r) => pbx.bind(0, '127.0.0.2', () => r()));
    let upstreamGot = 0;
    pbx.on('message', () => { upstreamGot++; });
    const edge = await edgeFor(['udp:127.0.0.1:0'], [`udp:127.0.0.2:${pbx.address().port}`]);
    const stranger = dgram.createSocket('udp4');
    await new Promise<void>((r) => stranger.bind(0, '127.0.0.77', () => r()));
    try {
      const before = sample(await scrape(edge), 'sipedge_unmatched_total', { kind: 'response' }) ?? 0;
      const forged = [
        'SIP/2.0 200 OK',
        `Via: SIP/2.0/UDP 127.0.0.1:${edge.ports.udp};branch=z9hG4bKforged1, SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKx`,
        'From: <sip:a@example.com>;tag=1', 'To: <sip:b@example.com>;tag=2', 'Call-ID: stray-1', 'CSeq: 1 INVITE',
        'Content-Length: 0', '', '',
      ].join('\r\n');
      for (let i = 0; i < 5; i++) stranger.send(forged, edge.ports.udp!, '127.0.0.1');
      let after = before;
      for (let i = 0; i < 40 && after < before + 5; i++) {
        await new Promise((r) => setTimeout(r, 25));
        after = sample(await scrape(edge), 'sipedge_unmatched_total', { kind: 'response' }) ?? 0;
      }
      assert.equal(after - before, 5);
      assert.equal(upstreamGot, 0);
    } finally {
      stranger.close();
      pbx.close();
      await edge.stop();
    }
  });
});
