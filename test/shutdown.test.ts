// Shutdown as an operator and the callers see it: the real edge process (spawned from its CLI),
// sipp as 200 callers outside and as a PBX inside that rings forever, SIGTERM while every call is
// pending. What must hold (README "Command line"):
// - /readyz answers 503 from the first signal on (a load balancer stops sending new calls);
// - a new call during the drain gets 503 + Retry-After (RFC 3261 21.5.4), not silence;
// - when the grace period ends, every caller still waiting gets a final 503 + Retry-After, and
//   the PBX gets a CANCEL for each INVITE it was ringing for (RFC 3261 9.1 / 16.10), whose 487
//   the edge acknowledges (RFC 3261 17.1.1.3) before it closes its sockets;
// - the process exits 0 within the grace period plus a bound; a second signal exits at once
//   with 128 + the signal number.
// Under CI=true a missing sipp is a failure, never a skip.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { startEdge, type EdgeProc } from './helpers/edge-proc';
import { sample } from './helpers/prom';
import { killAllSipp, runSipp, sippAvailable, sippSummary, startSipp } from './helpers/sipp';
import { UdpPeer, header, request, response, uniq } from './helpers/udp-peer';

const inCi = process.env.CI === 'true';
const skip = !sippAvailable() && !inCi ? 'sipp not installed (CI=true makes this a failure)' : false;
process.on('exit', killAllSipp);

const cfgDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sip-edge-shutdown-'));
after(() => fs.rmSync(cfgDir, { recursive: true, force: true }));

/** the PBX stand-ins answer no OPTIONS: no health probes */
function config(graceMs: number): string {
  const file = path.join(cfgDir, `edge-${graceMs}.yaml`);
  fs.writeFileSync(file, `health:\n  intervalMs: 0\nshutdownGraceMs: ${graceMs}\nwarmUpCalls: 0\n`);
  return file;
}

/** sipp calls from one address at 100/s: a trusted peer here (no rate limit in the way) */
function edgeFor(upstream: string, graceMs: number): Promise<EdgeProc> {
  return startEdge({ listen: ['udp:127.0.0.1:0', 'tcp:127.0.0.1:0'], upstream: [upstream], domain: ['example.com'], extraArgs: ['--config', config(graceMs), '--trusted', '127.0.0.1/32'] });
}

async function readyz(edge: EdgeProc): Promise<number | 'down'> {
  try {
    const res = await fetch(`http://127.0.0.1:${edge.metricsPort}/readyz`, { signal: AbortSignal.timeout(1000) });
    await res.text();
    return res.status;
  } catch {
    return 'down';
  }
}

async function metric(edge: EdgeProc, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const res = await fetch(`http://127.0.0.1:${edge.metricsPort}/metrics`, { signal: AbortSignal.timeout(2000) });
  return sample(await res.text(), name, labels);
}

/** poll (bounded) until cond holds */
async function until(what: string, cond: () => Promise<boolean> | boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail(`not within ${ms} ms: ${what}`);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function invite(peer: UdpPeer, edgePort: number, n: number): string {
  return [
    `INVITE sip:callee@127.0.0.1:${edgePort} SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${peer.port};branch=z9hG4bK-late-${n};rport`,
    `From: <sip:late@127.0.0.1:${peer.port}>;tag=late${n}`,
    `To: <sip:callee@127.0.0.1:${edgePort}>`,
    `Call-ID: late-${n}-${process.pid}@127.0.0.1`,
    'CSeq: 1 INVITE',
    `Contact: <sip:late@127.0.0.1:${peer.port}>`,
    'Max-Forwards: 70',
    'Content-Length: 0', '', '',
  ].join('\r\n');
}

describe('shutdown of the real edge process', { skip }, () => {
  for (const [transport, CALLS] of [['u1', 200], ['t1', 50]] as const) test(`SIGTERM with ${CALLS} calls (callers over ${transport === 'u1' ? 'UDP' : 'TCP'}) ringing at a PBX that never answers: /readyz 503 at once, new calls 503 + Retry-After, every caller a final 503 + Retry-After, a CANCEL to the PBX for each, exit 0 within grace + 4 s`, { timeout: 90_000 }, async () => {
    const GRACE_MS = 1500;
    const pbx = await startSipp({ scenario: 'uas-ring-forever.xml', transport: 'u1', localIp: '127.0.0.2', calls: CALLS, maxTimeMs: 60_000 });
    const edge = await edgeFor(`udp:127.0.0.2:${pbx.port}`, GRACE_MS);
    const late = await UdpPeer.bind('127.0.0.1');
    try {
      const callers = runSipp({ scenario: 'uac-refused.xml', remote: `127.0.0.1:${transport === 'u1' ? edge.ports.udp : edge.ports.tcp}`, transport, calls: CALLS, rate: 100, limit: CALLS, maxTimeMs: 40_000 });
      // every call is ringing at the PBX (an INVITE transaction live at the edge) before the signal
      await until(`${CALLS} live transactions`, async () => (await metric(edge, 'sipedge_transactions_active')) === CALLS, 20_000);
      assert.equal(await readyz(edge), 200, 'ready before the signal');

      const signalled = Date.now();
      process.kill(edge.pid, 'SIGTERM');
      // a load balancer polling /readyz must see 503 right away, for the whole drain
      const seen: Array<number | 'down'> = [];
      await until('/readyz 503 after SIGTERM', async () => { const s = await readyz(edge); seen.push(s); return s === 503; }, 500);
      for (let i = 0; i < 10; i++) { seen.push(await readyz(edge)); await sleep(50); }
      assert.ok(!seen.slice(seen.indexOf(503)).includes(200), `/readyz after the signal: ${seen.join(' ')}`);

      // a new call during the drain: refused with 503 + Retry-After, not forwarded
      await late.send(invite(late, edge.ports.udp!, 1), edge.ports.udp!);
      const refused = await late.wait((r) => / 503 /.test(r.text.split('\r\n')[0]!), 2000, '503 for a new call during the drain');
      assert.match(header(refused.text, 'Retry-After') ?? '', /^\d+$/, refused.text);
      assert.ok(Date.now() - signalled < GRACE_MS, 'refused during the grace period, not at its end');

      const code = await edge.exited;
      const took = Date.now() - signalled;
      assert.equal(code, 0, edge.logs().slice(-20).join('\n'));
      assert.ok(took < GRACE_MS + 4000, `exited ${took} ms after SIGTERM (grace ${GRACE_MS} ms)`);

      const c = await callers;
      assert.equal(c.successful, CALLS, `every caller got 503 + Retry-After and sent its ACK\n${sippSummary(c)}`);
      assert.equal(c.failed, 0, sippSummary(c));
      const p = await pbx.stop(3_000);
      assert.equal(p.successful, CALLS, `the PBX got a CANCEL for each INVITE and an ACK for each 487\n${sippSummary(p)}`);
      const drained = edge.records().find((r) => r.event === 'drained');
      assert.deepEqual([drained?.answered, drained?.cancelled], [CALLS, CALLS], 'the drain says what it did');
      console.log(`# shutdown (${transport}): ${CALLS} pending calls, grace ${GRACE_MS} ms, exit ${took} ms after SIGTERM; drain took ${String(drained?.ms)} ms`);
    } finally {
      late.close();
      await edge.stop('SIGKILL', 0);
      await pbx.stop(500);
    }
  });

  test('a PBX that sends nothing at all: the callers (INVITE and a non-INVITE) still get 503 + Retry-After; no CANCEL goes out before a provisional (RFC 3261 9.1)', { timeout: 30_000 }, async () => {
    const pbx = await UdpPeer.bind('127.0.0.2');
    const edge = await edgeFor(`udp:127.0.0.2:${pbx.port}`, 300);
    const phone = await UdpPeer.bind('127.0.0.1');
    try {
      for (let i = 0; i < 5; i++) await phone.send(invite(phone, edge.ports.udp!, 100 + i), edge.ports.udp!);
      // and a non-INVITE: it cannot be cancelled (RFC 3261 9.1), but its caller gets 503 too
      const message = uniq('msg');
      await phone.send(request(phone, { method: 'MESSAGE', callId: message, ruri: `sip:callee@127.0.0.1:${edge.ports.udp!}`, body: 'hello' }), edge.ports.udp!);
      await until('5 INVITEs and the MESSAGE at the PBX', () => new Set(pbx.inbox.filter((r) => /^(INVITE|MESSAGE) /.test(r.text)).map((r) => header(r.text, 'Call-ID'))).size === 6, 5000);
      process.kill(edge.pid, 'SIGTERM');
      const finals = new Set<string>();
      await until('a 503 for each of the 5 calls and the MESSAGE', () => {
        for (const r of phone.inbox) {
          if (/^SIP\/2\.0 503 /.test(r.text) && /^\d+$/.test(header(r.text, 'Retry-After') ?? '')) finals.add(header(r.text, 'Call-ID') ?? '');
        }
        return finals.size === 6;
      }, 5000);
      assert.ok(finals.has(message), 'the MESSAGE got 503 + Retry-After');
      assert.equal(await edge.exited, 0);
      assert.equal(pbx.inbox.filter((r) => r.text.startsWith('CANCEL')).length, 0, 'no CANCEL without a provisional response');
    } finally {
      phone.close();
      pbx.close();
      await edge.stop('SIGKILL', 0);
    }
  });

  test('calls in progress end cleanly through the drain: a BYE still goes through; a 2xx that crosses the CANCEL is forwarded and the caller\'s ACK and BYE reach the PBX', { timeout: 30_000 }, async () => {
    const pbx = await UdpPeer.bind('127.0.0.2');
    const edge = await edgeFor(`udp:127.0.0.2:${pbx.port}`, 1000);
    const phone = await UdpPeer.bind('127.0.0.1');
    const port = edge.ports.udp!;
    const contact = `Contact: <sip:1000@127.0.0.2:${pbx.port}>`;
    /** the phone's ACK or BYE inside the dialog the 2xx `ok` set up (RFC 3261 12.1.2: Route = Record-Route reversed) */
    const inDialog = (method: 'ACK' | 'BYE', ok: string, callId: string, cseq: number): string => request(phone, {
      method, callId, toTag: 'pbx-' + callId.slice(-6), cseq, ruri: `sip:1000@127.0.0.2:${pbx.port}`,
      extra: [`Route: ${header(ok, 'Record-Route')!.split(/,\s*/).reverse().join(', ')}`],
    });
    try {
      // call A is up before the signal
      const a = uniq('callA');
      await phone.send(request(phone, { callId: a }), port);
      const invA = await pbx.wait((m) => m.text.startsWith('INVITE') && header(m.text, 'Call-ID') === a);
      await pbx.send(response(invA.text, 200, 'OK', { toTag: 'pbx-' + a.slice(-6), extra: [`Record-Route: ${header(invA.text, 'Record-Route')!}`, contact] }), port, '127.0.0.1');
      const okA = await phone.wait((m) => m.text.startsWith('SIP/2.0 200') && header(m.text, 'Call-ID') === a);
      await phone.send(inDialog('ACK', okA.text, a, 1), port);
      await pbx.wait((m) => m.text.startsWith('ACK') && header(m.text, 'Call-ID') === a);
      // call B rings
      const b = uniq('callB');
      await phone.send(request(phone, { callId: b }), port);
      const invB = await pbx.wait((m) => m.text.startsWith('INVITE') && header(m.text, 'Call-ID') === b);
      await pbx.send(response(invB.text, 180, 'Ringing', { toTag: 'pbx-' + b.slice(-6) }), port, '127.0.0.1');
      await phone.wait((m) => m.text.startsWith('SIP/2.0 180') && header(m.text, 'Call-ID') === b);

      process.kill(edge.pid, 'SIGTERM');
      await until('/readyz 503', async () => (await readyz(edge)) === 503, 2000);
      // A hangs up during the drain: in a dialog, so it goes through (not 503)
      await phone.send(inDialog('BYE', okA.text, a, 2), port);
      const byeA = await pbx.wait((m) => m.text.startsWith('BYE') && header(m.text, 'Call-ID') === a, 2000, 'BYE of call A at the PBX');
      await pbx.send(response(byeA.text, 200, 'OK'), port, '127.0.0.1');
      await phone.wait((m) => m.text.startsWith('SIP/2.0 200') && header(m.text, 'CSeq') === '2 BYE', 2000, '200 for the BYE');

      // the grace ends: the edge CANCELs B; the PBX had just answered: its 200 crosses the CANCEL
      const cancel = await pbx.wait((m) => m.text.startsWith('CANCEL') && header(m.text, 'Call-ID') === b, 3000, 'CANCEL of call B');
      await pbx.send(response(cancel.text, 200, 'OK'), port, '127.0.0.1');
      await pbx.send(response(invB.text, 200, 'OK', { toTag: 'pbx-' + b.slice(-6), extra: [`Record-Route: ${header(invB.text, 'Record-Route')!}`, contact] }), port, '127.0.0.1');
      await phone.wait((m) => m.text.startsWith('SIP/2.0 503') && header(m.text, 'Call-ID') === b, 2000, '503 for call B');
      // RFC 3261 16.7 item 5: a 2xx is forwarded even after a final; the caller ACKs and hangs up
      const okB = await phone.wait((m) => m.text.startsWith('SIP/2.0 200') && header(m.text, 'Call-ID') === b && /INVITE/.test(header(m.text, 'CSeq') ?? ''), 2000, 'the crossing 200 for call B');
      await phone.send(inDialog('ACK', okB.text, b, 1), port);
      await phone.send(inDialog('BYE', okB.text, b, 2), port);
      await pbx.wait((m) => m.text.startsWith('ACK') && header(m.text, 'Call-ID') === b, 2000, 'ACK of call B at the PBX');
      const byeB = await pbx.wait((m) => m.text.startsWith('BYE') && header(m.text, 'Call-ID') === b, 2000, 'BYE of call B at the PBX');
      await pbx.send(response(byeB.text, 200, 'OK'), port, '127.0.0.1');
      assert.equal(await edge.exited, 0);
    } finally {
      phone.close();
      pbx.close();
      await edge.stop('SIGKILL', 0);
    }
  });

  test('a second SIGTERM during the drain exits at once with 143 (128 + SIGTERM)', { timeout: 30_000 }, async () => {
    const pbx = await UdpPeer.bind('127.0.0.2');
    const edge = await edgeFor(`udp:127.0.0.2:${pbx.port}`, 60_000);
    const phone = await UdpPeer.bind('127.0.0.1');
    try {
      // a call pending at a silent PBX keeps the drain going for the whole (long) grace period
      await phone.send(invite(phone, edge.ports.udp!, 200), edge.ports.udp!);
      await until('the INVITE at the PBX', () => pbx.inbox.some((r) => r.text.startsWith('INVITE')), 5000);
      process.kill(edge.pid, 'SIGTERM');
      await until('/readyz 503 (the first signal was handled)', async () => (await readyz(edge)) === 503, 2000);
      const t0 = Date.now();
      process.kill(edge.pid, 'SIGTERM');
      assert.equal(await edge.exited, 143);
      assert.ok(Date.now() - t0 < 2000, `exited ${Date.now() - t0} ms after the second signal`);
    } finally {
      phone.close();
      pbx.close();
      await edge.stop('SIGKILL', 0);
    }
  });
});
