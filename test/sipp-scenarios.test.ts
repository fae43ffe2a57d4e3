// Peer-to-peer validation of the sipp scenarios under test/sipp/ (no edge in between): each pair must
// complete every call on both sides, and the checking scenarios must reject peers that break the RFC
// rule they check. Once this passes, the same scenarios can be pointed at the edge.
// Skipped only when sipp is missing outside CI; under CI=true a missing sipp fails.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  killAllSipp, resolveScenario, runSipp, sippAvailable, sippSummary, startSipp,
  type SippResult, type SippTransport,
} from './helpers/sipp';
import { startEdge } from './helpers/edge-proc';

const CALLS = 20;
const RATE = 50;
const CLIENT_MAX_MS = 15_000;
const SERVER_MAX_MS = 25_000;

const haveSipp = sippAvailable();
const inCi = process.env.CI === 'true';
const skip = !haveSipp && !inCi ? 'sipp not installed (set CI=true to make this a failure)' : false;

test('sipp is installed (required under CI)', { skip: !inCi && !haveSipp ? skip : false }, () => {
  assert.equal(haveSipp, true, 'sipp binary not found: install the sip-tester/sipp package or set SIPP_BIN');
});

process.on('exit', killAllSipp);

interface PairResult {
  readonly server: SippResult;
  readonly client: SippResult;
}

/** Start `server`, run `client` against it, wait for both. */
async function pair(
  server: { scenario?: string; sn?: 'uas'; extraArgs?: string[] },
  client: { scenario?: string; sn?: 'uac'; extraArgs?: string[]; service?: string },
  transport: SippTransport,
  calls = CALLS,
): Promise<PairResult> {
  // no -m on the server: it must outlive the client's last call (a server exiting on its own would
  // close TCP under a client call still in timewait); it is soft-stopped once the client is done
  const srv = await startSipp({ ...server, transport, maxTimeMs: SERVER_MAX_MS });
  try {
    const cli = await runSipp({
      ...client,
      remote: `127.0.0.1:${srv.port}`,
      transport,
      calls,
      rate: RATE,
      maxTimeMs: CLIENT_MAX_MS,
    });
    // SIGUSR1: no new calls, let the ones in timewait finish, then exit
    return { server: await srv.stop(5_000), client: cli };
  } catch (e) {
    await srv.stop(500);
    throw e;
  }
}

function assertAllOk(r: SippResult, calls: number, who: string): void {
  assert.equal(r.killed, false, `${who}: watchdog killed sipp\n${sippSummary(r)}`);
  assert.equal(r.successful, calls, `${who}: successful calls\n${sippSummary(r)}`);
  assert.equal(r.failed, 0, `${who}: failed calls\n${sippSummary(r)}`);
}

/**
 * Server side over TCP: when the client has finished its last call it exits and closes the
 * connection while the server still keeps that call in timewait, which sipp counts as FailedTcpClosed.
 * Those, and only those, are tolerated, for at most the calls that were still in timewait.
 */
function assertServerOk(r: SippResult, calls: number, transport: SippTransport, who: string): void {
  if (transport === 'u1' || transport === 'un') return assertAllOk(r, calls, who);
  const closed = r.counters['FailedTcpClosed'] ?? 0;
  assert.equal(r.successful + closed, calls, `${who}: successful + tcp-closed-in-timewait\n${sippSummary(r)}`);
  assert.equal(r.failed, closed, `${who}: failures other than tcp close\n${sippSummary(r)}`);
  assert.ok(closed <= Math.ceil(RATE * 1.5), `${who}: too many tcp-closed calls\n${sippSummary(r)}`);
}

for (const transport of ['u1', 't1'] as const) {
  test(`uac-rr completes ${CALLS} calls against sipp -sn uas (${transport})`, { skip }, async () => {
    const { client } = await pair({ sn: 'uas' }, { scenario: 'uac-rr.xml' }, transport);
    assertAllOk(client, CALLS, 'uac-rr');
    assert.equal(client.code, 0, sippSummary(client));
    assert.ok(client.rtt !== undefined && client.rtt.count === CALLS, `rtt samples\n${sippSummary(client)}`);
  });

  test(`uac-rr against uas.xml (${transport})`, { skip }, async () => {
    const { client, server } = await pair({ scenario: 'uas.xml' }, { scenario: 'uac-rr.xml' }, transport);
    assertAllOk(client, CALLS, 'uac-rr');
    assertServerOk(server, CALLS, transport, 'uas');
  });

  test(`uac-rr follows Record-Route: ACK/BYE carry Route in reverse order, R-URI = Contact (${transport})`, { skip }, async () => {
    const { client, server } = await pair({ scenario: 'uas-rr.xml' }, { scenario: 'uac-rr.xml' }, transport);
    assertAllOk(client, CALLS, 'uac-rr');
    assertServerOk(server, CALLS, transport, 'uas-rr');
    assert.equal(server.counters['FailedRegexpDoesntMatch'] ?? 0, 0, sippSummary(server));
  });
}

test('uas-rr fails calls whose ACK/BYE ignore Record-Route (sipp built-in uac)', { skip }, async () => {
  const calls = 5;
  const { server } = await pair({ scenario: 'uas-rr.xml' }, { sn: 'uac' }, 'u1', calls);
  assert.equal(server.successful, 0, sippSummary(server));
  assert.equal(server.failed, calls, sippSummary(server));
  assert.ok((server.counters['FailedRegexpDoesntMatch'] ?? 0) > 0, sippSummary(server));
});

test('uac-cancel / uas-cancel: INVITE, 180, CANCEL, 200, 487, ACK', { skip }, async () => {
  const { client, server } = await pair({ scenario: 'uas-cancel.xml' }, { scenario: 'uac-cancel.xml' }, 'u1');
  assertAllOk(client, CALLS, 'uac-cancel');
  assertAllOk(server, CALLS, 'uas-cancel');
});

test('uas-cancel fails a CANCEL whose branch differs from the INVITE (RFC 3261 9.1)', { skip }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipp-scn-'));
  const bad = path.join(dir, 'uac-cancel-bad-branch.xml');
  const src = fs.readFileSync(resolveScenario('uac-cancel.xml'), 'latin1');
  assert.ok(src.includes('branch=[branch-3]'));
  fs.writeFileSync(bad, src.replace('branch=[branch-3]', 'branch=[branch]'));
  const calls = 3;
  const { server } = await pair({ scenario: 'uas-cancel.xml' }, { scenario: bad }, 'u1', calls);
  assert.equal(server.failed, calls, sippSummary(server));
  assert.ok((server.counters['FailedTestDoesntMatch'] ?? 0) > 0, sippSummary(server));
});

test('uas-ring-forever rings until cancelled: completes with uac-cancel, fails a CANCEL on another branch (RFC 3261 9.1)', { skip }, async () => {
  const ok = await pair({ scenario: 'uas-ring-forever.xml' }, { scenario: 'uac-cancel.xml' }, 'u1');
  assertAllOk(ok.client, CALLS, 'uac-cancel');
  assertAllOk(ok.server, CALLS, 'uas-ring-forever');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipp-scn-'));
  const bad = path.join(dir, 'uac-cancel-bad-branch.xml');
  fs.writeFileSync(bad, fs.readFileSync(resolveScenario('uac-cancel.xml'), 'latin1').replace('branch=[branch-3]', 'branch=[branch]'));
  const calls = 3;
  const { server } = await pair({ scenario: 'uas-ring-forever.xml' }, { scenario: bad }, 'u1', calls);
  assert.equal(server.failed, calls, sippSummary(server));
});

test('uac-refused passes a 503 with Retry-After and fails one without', { skip }, async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipp-scn-'));
  const uas = (retryAfter: string): string => {
    const file = path.join(dir, `uas-503-${retryAfter === '' ? 'bare' : 'ra'}.xml`);
    fs.writeFileSync(file, `<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uas-503">
  <recv request="INVITE"/>
  <send><![CDATA[

      SIP/2.0 503 Service Unavailable
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]x[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      ${retryAfter}
      Content-Length: 0

    ]]></send>
  <recv request="ACK"/>
</scenario>
`);
    return file;
  };
  const calls = 3;
  const good = await pair({ scenario: uas('Retry-After: 7') }, { scenario: 'uac-refused.xml' }, 'u1', calls);
  assertAllOk(good.client, calls, 'uac-refused');
  assertAllOk(good.server, calls, 'uas-503');
  const bare = await pair({ scenario: uas('') }, { scenario: 'uac-refused.xml' }, 'u1', calls);
  assert.equal(bare.client.successful, 0, sippSummary(bare.client));
  assert.equal(bare.client.failed, calls, sippSummary(bare.client));
});

for (const transport of ['u1', 't1'] as const) {
  test(`register-then-callee / registrar-pbx without Path (${transport})`, { skip }, async () => {
    const { client, server } = await pair(
      { scenario: 'registrar-pbx.xml' },
      { scenario: 'register-then-callee.xml', service: 'alice' },
      transport,
    );
    assertAllOk(client, CALLS, 'phone');
    assertServerOk(server, CALLS, transport, 'registrar-pbx');
  });
}

test('registrar-pbx echoes Path in the 200 and routes its INVITE by it (RFC 3327 5.3)', { skip }, async () => {
  // stand-in for the edge: the REGISTER carries a Path pointing at the phone itself, which then
  // requires the Route on the INVITE and the Path in the 200
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipp-scn-'));
  const phone = path.join(dir, 'register-with-path.xml');
  let src = fs.readFileSync(resolveScenario('register-then-callee.xml'), 'latin1');
  const expires = '      Expires: 3600\n';
  assert.ok(src.includes(expires));
  src = src.replace(expires, `      Path: <sip:[local_ip]:[local_port];lr;edgepath=1>\n${expires}`);
  const reg200 = '<recv response="200" rtd="true"/>';
  assert.ok(src.includes(reg200));
  src = src.replace(reg200, `<recv response="200" rtd="true"><action>
      <ereg regexp="edgepath=1" search_in="hdr" header="Path:" check_it="true" assign_to="path_echo"/>
    </action></recv>`);
  const invCheck = '<ereg regexp="^INVITE sips?:[^ ]*@" search_in="msg" check_it="true" assign_to="inv_ruri"/>';
  assert.ok(src.includes(invCheck));
  src = src.replace(invCheck, `${invCheck}
      <ereg regexp="edgepath=1" search_in="hdr" header="Route:" check_it="true" assign_to="inv_route"/>`);
  src = src.replace('<Reference variables="inv_ruri"/>', '<Reference variables="inv_ruri,path_echo,inv_route"/>');
  fs.writeFileSync(phone, src);
  const calls = 5;
  const { client, server } = await pair({ scenario: 'registrar-pbx.xml' }, { scenario: phone, service: 'alice' }, 'u1', calls);
  assertAllOk(client, calls, 'phone-with-path');
  assertAllOk(server, calls, 'registrar-pbx');
});

test('auth-uac registers through a 401 digest challenge with -au/-ap', { skip }, async () => {
  const calls = 5;
  const { client, server } = await pair(
    { scenario: 'auth-uas.xml' },
    { scenario: 'auth-uac.xml', service: 'alice', extraArgs: ['-au', 'alice', '-ap', 'secret'] },
    'u1',
    calls,
  );
  assertAllOk(client, calls, 'auth-uac');
  assertAllOk(server, calls, 'auth-uas');
});

test('auth-uac with a wrong password is refused (403)', { skip }, async () => {
  const calls = 3;
  const { client } = await pair(
    { scenario: 'auth-uas.xml' },
    { scenario: 'auth-uac.xml', service: 'alice', extraArgs: ['-au', 'alice', '-ap', 'wrong'] },
    'u1',
    calls,
  );
  assert.equal(client.successful, 0, sippSummary(client));
  assert.equal(client.failed, calls, sippSummary(client));
  assert.equal(client.code, 1, sippSummary(client));
});

// ---- edge-proc harness, against a stand-in CLI (the real edge is not required for these) ----

function fakeCli(body: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fake-edge-'));
  const file = path.join(dir, 'cli.js');
  fs.writeFileSync(file, body);
  return file;
}

test('startEdge reads the real ports from the "listening" line and stops with SIGTERM', async () => {
  const cli = fakeCli(`
    const dgram = require('node:dgram');
    const s = dgram.createSocket('udp4');
    s.bind(0, '127.0.0.1', () => {
      console.log(JSON.stringify({ level: 30, msg: 'starting', argv: process.argv.slice(2) }));
      console.log(JSON.stringify({ level: 30, msg: 'listening', listeners: [
        { transport: 'udp', address: '127.0.0.1', port: s.address().port },
        { transport: 'tcp', address: '127.0.0.1', port: 1 } ] }));
    });
    process.on('SIGTERM', () => { console.log(JSON.stringify({ msg: 'stopping' })); s.close(); process.exit(0); });
  `);
  const edge = await startEdge({ cli, listen: ['udp:127.0.0.1:0'], upstream: ['udp:127.0.0.1:5999'], domain: ['example.test'] });
  try {
    assert.ok(edge.ports.udp !== undefined && edge.ports.udp > 0);
    assert.equal(edge.ports.tcp, 1);
    const argv = edge.records().find((r) => r.msg === 'starting')?.argv;
    assert.deepEqual(argv, ['run', '--listen', 'udp:127.0.0.1:0', '--upstream', 'udp:127.0.0.1:5999',
      '--domain', 'example.test', '--metrics', '127.0.0.1:0', '--log-level', 'info']);
  } finally {
    assert.equal(await edge.stop(), 0);
  }
  assert.ok(edge.logs().some((l) => l.includes('"stopping"')));
});

test('startEdge fails with the collected stderr when the edge never becomes ready', async () => {
  const cli = fakeCli(`console.error('config error: rules.yaml:3:1 bad'); setTimeout(() => {}, 60000);`);
  await assert.rejects(
    startEdge({ cli, listen: ['udp:127.0.0.1:0'], upstream: ['udp:127.0.0.1:5999'], readyTimeoutMs: 1_000 }),
    /did not become ready[\s\S]*rules\.yaml:3:1 bad/,
  );
});

test('startEdge fails fast when the edge exits before listening', async () => {
  const cli = fakeCli(`console.error('bind EADDRINUSE'); process.exit(2);`);
  await assert.rejects(
    startEdge({ cli, listen: ['udp:127.0.0.1:0'], upstream: ['udp:127.0.0.1:5999'], readyTimeoutMs: 10_000 }),
    /exited early \(code 2[\s\S]*EADDRINUSE/,
  );
});
