// sipp load through a proxy-type PBX: the edge in front of a real Kamailio registrar that
// record-routes (Debian `kamailio`, test/helpers/kamailio.ts), with the caller and the callee both
// outside. Every call spirals: caller -> edge -> Kamailio -> edge -> callee, and so does every ACK
// and BYE along the route set [edge, edge, Kamailio, edge, edge] (RFC 3261 16.3 item 4: a spiral
// is not a loop). sipp's built-in uas never echoes Record-Route, so the load tests against it
// never saw an in-dialog request come back to the edge; uas.xml here echoes it like a phone.
// Under CI=true a missing sipp or kamailio is a failure, not a skip.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { startEdge } from './helpers/edge-proc';
import { kamailioAvailable, startKamailio } from './helpers/kamailio';
import { sample } from './helpers/prom';
import { killAllSipp, runSipp, sippAvailable, sippSummary, startSipp } from './helpers/sipp';

const inCi = process.env.CI === 'true';
const missing = [!sippAvailable() && 'sipp', !kamailioAvailable() && 'kamailio'].filter(Boolean);
const skip = missing.length > 0 && !inCi ? `${missing.join(', ')} not installed (CI=true makes this a failure)` : false;
process.on('exit', killAllSipp);

const DOMAIN = 'pbx.test';
const CALLS = 300;

const cfgDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sip-edge-pbxsipp-'));
after(() => fs.rmSync(cfgDir, { recursive: true, force: true }));

describe('sipp calls spiralling through a record-routing Kamailio behind the edge', { skip }, () => {
  // over UDP only: a sipp callee cannot keep the TCP connection it registered on (the REGISTER is
  // sent by a separate sipp run); the TCP phone case is test/phones.test.ts (baresip over TCP)
  {
    const transport = 'u1';
    const tr = 'udp';
    test(`${CALLS} calls: every ACK and BYE passes the edge twice, 0 failed, no 482`, async () => {
      if (missing.length > 0) assert.fail(`${missing.join(', ')} missing`);
      const pbx = await startKamailio({ domain: DOMAIN, address: '127.0.0.2' });
      // the caller places calls at a rate one address would not get past the per-source limits:
      // it is a trusted peer here (a carrier); the callee (127.0.0.3) is an ordinary phone
      const edge = await startEdge({
        listen: ['udp:127.0.0.1:0', 'tcp:127.0.0.1:0'], upstream: [`udp:127.0.0.2:${pbx.port}`], domain: [DOMAIN],
        extraArgs: ['--trusted', '127.0.0.1/32'],
      });
      let callee: Awaited<ReturnType<typeof startSipp>> | undefined;
      try {
        const edgeAt = `127.0.0.1:${edge.ports[tr]}`;
        const regRun = await startSipp({
          scenario: 'register-once.xml', remote: edgeAt, transport, localIp: '127.0.0.3', service: 'bob', calls: 1,
          extraArgs: ['-key', 'domain', DOMAIN], maxTimeMs: 15_000, rtt: false,
        });
        const reg = await regRun.done;
        assert.equal(reg.successful, 1, `callee registered through the edge\n${sippSummary(reg)}`);
        const saved = pbx.events().filter((e) => e.kind === 'REGISTER');
        assert.equal(saved.length, 1);
        assert.match(saved[0]!.fields.path ?? '', /^<sip:[^@]+@127\.0\.0\.1:\d+/, 'Kamailio stored the edge\'s Path');
        // the callee answers on the port it registered from
        callee = await startSipp({ scenario: 'uas.xml', transport, localIp: '127.0.0.3', localPort: regRun.port, maxTimeMs: 120_000 });
        const r = await runSipp({
          scenario: 'uac-rr-domain.xml', remote: edgeAt, transport, service: 'bob', calls: CALLS, rate: 50, limit: 100,
          extraArgs: ['-key', 'domain', DOMAIN], maxTimeMs: 90_000,
        });
        assert.equal(r.failed, 0, `failed calls\n${sippSummary(r)}`);
        assert.equal(r.successful, CALLS, `successful calls\n${sippSummary(r)}`);
        // Kamailio routed each call's ACK and BYE as in-dialog requests: they went edge -> Kamailio
        // -> edge, and the edge forwarded them on instead of answering 482
        const inDialog = pbx.events().filter((e) => e.kind === 'INDIALOG');
        assert.equal(inDialog.filter((e) => e.fields.method === 'BYE').length, CALLS, 'every BYE reached Kamailio once');
        const m = await (await fetch(`http://127.0.0.1:${edge.metricsPort}/metrics`)).text();
        assert.equal(sample(m, 'sipedge_verdicts_total', { stage: 'proxy', action: 'reply', reason: 'loop_detected', mode: 'enforce' }) ?? 0, 0, 'no 482 from the edge');
      } finally {
        await callee?.stop(500);
        await edge.stop();
        await pbx.stop();
      }
    });
  }
});
