// Trunks and RFC 3263 routing end to end, with real peers only: dnsmasq (test/helpers/dnsmasq.ts)
// serving the carrier's NAPTR/SRV/A records from a file the test writes, the carrier's gateways
// as sipp instances on 127.0.0.3-5, and the PBX behind the edge as sipp on 127.0.0.2. The PBX
// calls sip:+15551234567@sip.carrier.example through the edge; the carrier calls the PBX's
// domain; the PBX's attempts to reach anything that is not a configured trunk are refused.
// Under CI=true a missing sipp or dnsmasq fails these tests; locally they skip with the reason.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { dnsmasqAvailable, startDnsmasq, type Dnsmasq } from './helpers/dnsmasq';
import { startEdge, type EdgeProc } from './helpers/edge-proc';
import { freePorts } from './helpers/ports';
import { sample } from './helpers/prom';
import { killAllSipp, runSipp, sippAvailable, sippSummary, startSipp } from './helpers/sipp';

const inCi = process.env.CI === 'true';
const missing = [!sippAvailable() && 'sipp', !dnsmasqAvailable() && 'dnsmasq'].filter(Boolean);
const skip = missing.length > 0 && !inCi ? `${missing.join(', ')} not installed (CI=true makes this a failure)` : false;
process.on('exit', killAllSipp);

const ZONE = 'carrier.example';
const CARRIER = 'sip.carrier.example';
const PBX_DOMAIN = 'pbx.example';
const NUMBER = '+15551234567';
const PBX = '127.0.0.2';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sip-edge-trunks-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

/** SRV targets gwN.carrier.example at 127.0.0.(N+2) on the given ports, in priority order */
function records(targets: readonly { n: number; port: number; priority: number }[]): string[] {
  return [
    `naptr-record=${CARRIER},10,50,S,SIP+D2U,,_sip._udp.${CARRIER}`,
    ...targets.map((t) => `srv-host=_sip._udp.${CARRIER},gw${t.n}.${ZONE},${t.port},${t.priority},0`),
    ...targets.map((t) => `host-record=gw${t.n}.${ZONE},127.0.0.${t.n + 2}`),
  ];
}

describe('trunks: the PBX reaches the carrier by name through the edge, and only the carrier', { skip }, () => {
  let dns: Dnsmasq;
  let edge: EdgeProc;
  let gwPorts: number[];
  let pbxPort: number;
  let edgeAt: string;

  before(async () => {
    if (missing.length > 0) assert.fail(`${missing.join(', ')} missing`);
    gwPorts = await freePorts(3, 'udp');
    [pbxPort] = await freePorts(1, 'udp');
    dns = await startDnsmasq({ zone: ZONE, ttl: 1, records: records([{ n: 1, port: gwPorts[0]!, priority: 10 }, { n: 2, port: gwPorts[1]!, priority: 20 }]) });
    const cfg = path.join(dir, 'sip-edge.yaml');
    fs.writeFileSync(cfg, [
      `domains: [${PBX_DOMAIN}]`,
      `inside: [${PBX}/32]`, // the PBX host: its calls leave from other ports than the upstream's
      'health: { intervalMs: 0 }',
      'warmUpCalls: 0',
      `dns: { servers: ["${dns.address}:${dns.port}"], timeoutMs: 300, attempts: 1, cache: { errorTtlSeconds: 1 } }`,
      'trunks:',
      '  - name: carrier',
      '    addresses: [127.0.0.3/32, 127.0.0.4/32, 127.0.0.5/32]',
      `    hosts: [${CARRIER}]`,
      '',
    ].join('\n'));
    edge = await startEdge({ listen: ['udp:127.0.0.1:0'], upstream: [`udp:${PBX}:${pbxPort}`], extraArgs: ['--config', cfg] });
    edgeAt = `127.0.0.1:${edge.ports.udp}`;
  });
  after(async () => {
    await edge?.stop();
    dns?.resume();
    await dns?.stop();
  });

  const metrics = async (): Promise<string> => (await fetch(`http://127.0.0.1:${edge.metricsPort}/metrics`)).text();
  const refusals = async (reason: string): Promise<number> =>
    sample(await metrics(), 'sipedge_verdicts_total', { stage: 'proxy', action: 'reply', reason, mode: 'enforce' }) ?? 0;
  /** the PBX places `calls` calls to `domain` through the edge */
  const pbxCalls = (domain: string, calls: number, rate = 10) => runSipp({
    scenario: 'uac-rr-domain.xml', remote: edgeAt, transport: 'u1', localIp: PBX, service: NUMBER, calls, rate, limit: 10,
    extraArgs: ['-key', 'domain', domain], maxTimeMs: 30_000,
  });
  const gateway = (n: number, scenario = 'uas.xml', calls?: number) => startSipp({
    scenario, transport: 'u1', ...(calls !== undefined ? { calls } : {}), localIp: `127.0.0.${n + 2}`, localPort: gwPorts[n - 1]!, maxTimeMs: 60_000, rtt: false,
  });

  test('INVITE to sip:+15551234567@sip.carrier.example: resolved (NAPTR -> SRV -> A), delivered to the first SRV target, ACK and BYE come back', async () => {
    const gw1 = await gateway(1);
    const gw2 = await gateway(2);
    try {
      const r = await pbxCalls(CARRIER, 3);
      if (process.env.DEBUG_TRUNKS) console.log(sippSummary(r), edge.logs().slice(-30).join('\n'));
      assert.equal(r.successful, 3, `PBX calls\n${sippSummary(r)}`);
    } finally {
      const a = await gw1.stop(3000);
      const b = await gw2.stop(3000);
      assert.equal(a.successful, 3, `gw1 (priority 10) took every call, ACK and BYE included\n${sippSummary(a)}`);
      assert.equal(b.successful, 0, 'gw2 (priority 20) took none');
    }
    assert.ok(dns.queries().some((q) => q === `NAPTR ${CARRIER}`), 'the edge asked dnsmasq for the NAPTR');
  });

  test('egress control: a name or an address that is no trunk is refused with 403 egress_denied', async () => {
    const before = await refusals('egress_denied');
    const byName = await pbxCalls('relay.elsewhere.example', 1);
    assert.equal(byName.successful, 0, sippSummary(byName));
    const byAddress = await pbxCalls('127.0.0.9:5060', 1);
    assert.equal(byAddress.successful, 0, sippSummary(byAddress));
    assert.equal(await refusals('egress_denied'), before + 2, 'both refused by the egress check (no DNS asked for a foreign name)');
    assert.ok(!dns.queries().some((q) => q.includes('elsewhere')), 'a name of no trunk is never resolved');
  });

  test('the carrier calls the PBX: its address is the trunk (no challenge), the call reaches the PBX', async () => {
    const pbx = await startSipp({ scenario: 'uas.xml', transport: 'u1', localIp: PBX, localPort: pbxPort, maxTimeMs: 60_000, rtt: false });
    try {
      const r = await runSipp({
        scenario: 'uac-rr-domain.xml', remote: edgeAt, transport: 'u1', localIp: '127.0.0.3', service: '100', calls: 2, rate: 10,
        extraArgs: ['-key', 'domain', PBX_DOMAIN], maxTimeMs: 30_000,
      });
      assert.equal(r.successful, 2, `carrier calls\n${sippSummary(r)}`);
    } finally {
      const p = await pbx.stop(3000);
      assert.equal(p.successful, 2, `the PBX took both calls\n${sippSummary(p)}`);
    }
  });

  test('a 503 from the first SRV target: the next target takes the call (RFC 3263 4.3), and later calls skip the failed one', async () => {
    // gw1 refuses one call and exits (-m 1): a second call reaching it would find nobody there
    const gw1 = await gateway(1, 'uas-503.xml', 1);
    const gw2 = await gateway(2);
    try {
      const r = await pbxCalls(CARRIER, 3, 5);
      assert.equal(r.successful, 3, `PBX calls\n${sippSummary(r)}`);
    } finally {
      const a = await gw1.done;
      const b = await gw2.stop(3000);
      assert.equal(b.successful, 3, `gw2 took every call\n${sippSummary(b)}`);
      assert.equal(a.successful + a.failed, 1, `gw1 refused the first call\n${sippSummary(a)}`);
    }
  });

  test('records change during traffic and then the DNS server stops answering: calls follow the new target, then keep the last good answer', async () => {
    // start from gw2 alone (gw1 is down and its down mark from the test before expires after
    // 30 s): the trunk's watch picks the new records up within the 1 s TTL, without traffic
    await dns.restart(records([{ n: 2, port: gwPorts[1]!, priority: 10 }]), 1);
    await new Promise((r) => setTimeout(r, 2500));
    const gw2 = await gateway(2);
    const gw3 = await gateway(3);
    try {
      const run = pbxCalls(CARRIER, 30, 5); // 6 s of calls
      await new Promise((r) => setTimeout(r, 1500));
      // the carrier moves: only gw3 (127.0.0.5) now
      await dns.restart(records([{ n: 3, port: gwPorts[2]!, priority: 10 }]), 1);
      await new Promise((r) => setTimeout(r, 2500));
      dns.pause(); // the DNS server dies silently; the TTL (1 s) runs out meanwhile
      const r = await run;
      assert.equal(r.successful, 30, `PBX calls\n${sippSummary(r)}`);
      const after = await pbxCalls(CARRIER, 3);
      assert.equal(after.successful, 3, `calls while DNS is silent\n${sippSummary(after)}`);
    } finally {
      dns.resume();
      const b = await gw2.stop(3000);
      const c = await gw3.stop(3000);
      assert.ok(b.successful > 0, `gw2 took the calls before the change\n${sippSummary(b)}`);
      assert.ok(c.successful >= 3 + 3, `gw3 took the calls after the change and all while DNS was silent (${c.successful})\n${sippSummary(c)}`);
      assert.equal(b.successful + c.successful, 33);
    }
  });
});
