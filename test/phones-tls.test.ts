// A real phone over TLS (issue 14): baresip (Debian baresip-core) registers and calls over TLS
// through the spawned edge to a real Kamailio PBX on UDP, and the PBX reaches the TLS phone back
// through the edge over the same TLS connection (the Path flow token of RFC 5626 5.3, as for TCP).
// Phone A is on TLS, phone B on UDP: every call bridges the two transports at the edge, and the
// double Record-Route carries each side's transport (RFC 3261 16.6 step 4; RFC 5630 4.1).
// When A's TLS connection is gone, a call to A ends with 430 Flow Failed (RFC 5626 5.3).
//
// The edge's certificate comes from a test CA made with the real openssl (test/helpers/certs.ts).
// Under CI=true a missing kamailio, baresip or openssl is a failure, never a skip.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { baresipAvailable, startPhone, type Phone, type PhoneEvent } from './helpers/baresip';
import { haveOpenssl, makeCa, makeLeaf } from './helpers/certs';
import { startEdge, type EdgeProc } from './helpers/edge-proc';
import { kamailioAvailable, kamailioTlsAvailable, startKamailio, type Kamailio } from './helpers/kamailio';

const inCi = process.env.CI === 'true';
const missing = [kamailioAvailable() && kamailioTlsAvailable() ? '' : 'kamailio with its tls module (kamailio-tls-modules)', baresipAvailable() ? '' : 'baresip (baresip-core)', haveOpenssl() ? '' : 'openssl'].filter((x) => x !== '');
const skip = missing.length > 0 && !inCi ? `${missing.join(' and ')} not installed (CI=true makes this a failure)` : false;

const DOMAIN = 'pbx.test';
const EDGE_ADDR = '127.0.0.1';
const PBX_ADDR = '127.0.0.2';
const A_ADDR = '127.0.0.1';
const B_ADDR = '127.0.0.3';

// Two rigs: Kamailio reached over UDP, and the same Kamailio reached over TLS as the upstream
// (verified against the test CA and its name; Kamailio then comes back to the edge's TLS listener,
// the hop the Path names).
for (const upstream of ['udp', 'tls'] as const)
describe(`a baresip phone over TLS through the edge to Kamailio (upstream over ${upstream})`, { skip }, () => {
  let dir = '';
  let pbx: Kamailio | undefined;
  let edge: EdgeProc | undefined;
  let a: Phone | undefined;
  let b: Phone | undefined;
  let tlsPort = 0;

  const diagnostics = (): string => {
    const edgeTail = edge?.logs().slice(-15).join('\n') ?? '';
    const kam = pbx?.events().slice(-15).map((e) => `${e.kind} ${JSON.stringify(e.fields)}`).join('\n') ?? '';
    return `\n--- edge log ---\n${edgeTail}\n--- kamailio events ---\n${kam}\n--- phone A ---\n${a?.logTail(20) ?? ''}`;
  };
  const saw = async (p: Phone, type: string | readonly string[], since: number, where?: (e: PhoneEvent) => boolean, timeoutMs = 6_000): Promise<PhoneEvent> => {
    try {
      return await p.waitEvent(type, { since, timeoutMs, ...(where === undefined ? {} : { where }) });
    } catch (e) {
      throw new Error(`${(e as Error).message}${diagnostics()}`);
    }
  };
  const establish = async (caller: Phone, callee: Phone): Promise<string> => {
    const c0 = caller.cursor();
    const d0 = callee.cursor();
    await caller.dial(callee.aor);
    const inc = await saw(callee, 'CALL_INCOMING', d0);
    await saw(caller, 'CALL_RINGING', c0);
    await callee.answer();
    await saw(callee, 'CALL_ESTABLISHED', d0);
    await saw(caller, 'CALL_ESTABLISHED', c0);
    return inc.id!;
  };
  const hangUp = async (by: Phone, other: Phone, id: string): Promise<void> => {
    const b0 = by.cursor();
    const o0 = other.cursor();
    await by.hangup();
    await saw(by, 'CALL_CLOSED', b0, (e) => e.id === id);
    await saw(other, 'CALL_CLOSED', o0, (e) => e.id === id);
  };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-phones-tls-'));
    const ca = makeCa(path.join(dir, 'pki'));
    const leaf = makeLeaf(ca, { names: ['edge.pbx.test'], ips: [EDGE_ADDR] });
    const pbxLeaf = makeLeaf(ca, { names: [DOMAIN], ips: [PBX_ADDR] });
    const cfg = path.join(dir, 'edge.yaml');
    fs.writeFileSync(cfg, [
      'warmUpCalls: 0',
      'tls:',
      `  certificates: [{ cert: ${JSON.stringify(leaf.cert)}, key: ${JSON.stringify(leaf.key)} }]`,
      `  upstreamCa: ${JSON.stringify(ca.cert)}`,
      `  upstreamName: ${DOMAIN}`,
      '',
    ].join('\n'));
    pbx = await startKamailio({ domain: DOMAIN, address: PBX_ADDR, ...(upstream === 'tls' ? { tls: { cert: pbxLeaf.cert, key: pbxLeaf.key } } : {}) });
    edge = await startEdge({
      listen: [`udp:${EDGE_ADDR}:0`, `tls:${EDGE_ADDR}:0`],
      upstream: [upstream === 'tls' ? `tls:${pbx.address}:${pbx.tlsPort!}` : `udp:${pbx.address}:${pbx.port}`],
      domain: [DOMAIN],
      extraArgs: ['--config', cfg],
    });
    tlsPort = edge.ports.tls!;
    assert.ok(tlsPort > 0 && edge.ports.udp !== undefined, 'the edge announced its TLS and UDP ports');
    a = await startPhone({ name: 'A', user: 'alice', domain: DOMAIN, transport: 'tls', cafile: ca.cert, address: A_ADDR, proxy: { host: EDGE_ADDR, port: tlsPort }, regint: 60 });
    b = await startPhone({ name: 'B', user: 'bob', domain: DOMAIN, transport: 'udp', address: B_ADDR, proxy: { host: EDGE_ADDR, port: edge.ports.udp! }, regint: 60 });
  });

  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await edge?.stop('SIGTERM', 3_000);
    await pbx?.stop();
    if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
  });

  test('A registers over TLS, B over UDP; Kamailio stores a Path through the edge for each', async () => {
    const [ra, rb] = await Promise.all([a!.register(), b!.register()]);
    assert.equal(ra.type, 'REGISTER_OK', `A (TLS): ${ra.type} ${ra.param ?? ''}${diagnostics()}`);
    assert.equal(rb.type, 'REGISTER_OK', `B (UDP): ${rb.type} ${rb.param ?? ''}${diagnostics()}`);
    const reg = pbx!.events().find((e) => e.kind === 'REGISTER' && e.fields.from === 'alice');
    assert.ok(reg, 'Kamailio saw A\'s REGISTER');
    // the inside-facing Path: the edge's address on the hop Kamailio uses (UDP, or TLS with
    // transport=tls), a flow token naming A's TLS connection
    assert.match(reg.fields.path ?? '', upstream === 'tls' ? new RegExp(`^<sip:sef1\\.[^@>]+@127\\.0\\.0\\.1:${tlsPort};transport=tls;lr>$`) : /^<sip:sef1\.[^@>]+@127\.0\.0\.1:\d+;lr>$/);
    assert.match(reg.fields.contact ?? '', /transport=tls/i, 'A\'s Contact says TLS');
    // the edge counted a successful handshake and a TLS connection
    const m = await metrics();
    assert.ok(sum(m, 'sipedge_tls_handshakes_total', 'reason="ok"') >= 1, 'a TLS handshake counted ok');
    assert.ok(sum(m, 'sipedge_connections', 'transport="tls"') >= 1, 'a TLS connection open');
  });

  test('B (UDP) calls A (TLS): the PBX reaches A through the edge on A\'s TLS connection; Record-Route carries each side\'s transport', async () => {
    const id = await establish(b!, a!);
    const inv = pbx!.events().filter((e) => e.kind === 'INITIAL' && e.fields.method === 'INVITE' && e.fields.from === 'bob').at(-1);
    assert.ok(inv, 'Kamailio saw B\'s INVITE');
    // B's INVITE arrived at the edge over UDP: the outside entry has no transport parameter; the
    // inside one names the hop toward Kamailio
    const [dep, arr] = (inv.fields.rr ?? '').split(', ');
    assert.doesNotMatch(arr ?? '', /transport=/, `arrival entry ${arr}`);
    if (upstream === 'tls') assert.match(dep ?? '', /;transport=tls;lr>$/, `departure entry ${dep}`);
    else assert.doesNotMatch(dep ?? '', /transport=/, `departure entry ${dep}`);
    await hangUp(a!, b!, id);
  });

  test('A (TLS) calls B (UDP): the outside Record-Route entry says transport=tls; B hangs up and the BYE reaches A over TLS', async () => {
    const id = await establish(a!, b!);
    const inv = pbx!.events().filter((e) => e.kind === 'INITIAL' && e.fields.method === 'INVITE' && e.fields.from === 'alice').at(-1);
    assert.ok(inv, 'Kamailio saw A\'s INVITE');
    // "<sip:up0@127.0.0.1:UDP;lr>, <sip:TOKEN@127.0.0.1:TLS;transport=tls;lr>": departure, arrival
    const toPbx = upstream === 'tls' ? `${tlsPort};transport=tls` : '\\d+';
    assert.match(inv.fields.rr ?? '', new RegExp(`^<sip:up0@127\\.0\\.0\\.1:${toPbx};lr>, <sip:sef1\\.[^@>]+@127\\.0\\.0\\.1:${tlsPort};transport=tls;lr>$`), `Record-Route: ${inv.fields.rr}`);
    await hangUp(b!, a!, id);
  });

  test('A\'s TLS connection gone: a call to A ends with 430 Flow Failed (RFC 5626 5.3)', async () => {
    // kill A without unregistering: its binding stays at Kamailio, its connection is gone
    const pid = a!.pid;
    // (with the upstream over TLS, the connections to and from Kamailio stay open)
    const open0 = sum(await metrics(), 'sipedge_connections', 'transport="tls"');
    process.kill(pid, 'SIGKILL');
    await waitUntil(async () => sum(await metrics(), 'sipedge_connections', 'transport="tls"') === open0 - 1, 'the edge saw A\'s connection close');
    const c0 = b!.cursor();
    await b!.dial(`sip:alice@${DOMAIN}`);
    const closed = await saw(b!, 'CALL_CLOSED', c0, undefined, 8_000);
    assert.match(closed.param ?? '', /430/, `B's call ended with 430: ${closed.param}`);
    a = undefined;
  });

  async function metrics(): Promise<string> {
    const port = edge!.metricsPort!;
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    return res.text();
  }
  function sum(text: string, name: string, label: string): number {
    let s = 0;
    for (const line of text.split('\n')) if (line.startsWith(`${name}{`) && line.includes(label)) s += Number(line.slice(line.lastIndexOf(' ') + 1));
    return s;
  }
  async function waitUntil(cond: () => Promise<boolean>, what: string, ms = 5_000): Promise<void> {
    const end = Date.now() + ms;
    while (!(await cond())) {
      if (Date.now() > end) throw new Error(`timed out: ${what}${diagnostics()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
});
