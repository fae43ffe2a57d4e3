// Topology hiding end to end (issue 15): a real Kamailio as the PBX on its own loopback address
// (127.0.0.77) with a product name in its Server / User-Agent headers, the edge process in front
// of it, and two real baresip phones outside. Each phone reaches the edge through a UDP tap (a
// symmetric relay, what a NAT is): the edge talks to the tap's address, and the tap records every
// datagram the edge sends to the outside before passing it on. Register, calls both ways, a
// re-INVITE (hold and resume) and BYE from either side; then not one recorded byte may name the
// PBX's address, its port or its product. The same scenario with topology.enabled false must show
// them (the test can fail).
import assert from 'node:assert/strict';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { baresipAvailable, startPhone, type Phone } from './helpers/baresip';
import { startEdge, type EdgeProc } from './helpers/edge-proc';
import { kamailioAvailable, startKamailio, type Kamailio } from './helpers/kamailio';

const inCi = process.env.CI === 'true';
const missing = [kamailioAvailable() ? '' : 'kamailio', baresipAvailable() ? '' : 'baresip'].filter((x) => x !== '');
const skip = missing.length > 0 && !inCi ? `${missing.join(' and ')} not installed (CI=true makes this a failure)` : false;

const DOMAIN = 'pbx.test';
const EDGE_ADDR = '127.0.0.1';
const PBX_ADDR = '127.0.0.77';
const PRODUCT = 'AcmePBX/9.1 build-7731';
const A_ADDR = '127.0.0.81';
const B_ADDR = '127.0.0.82';
const TAP_ADDR = '127.0.0.83';

/** A symmetric UDP relay between one phone and the edge, recording what the edge sends. */
interface Tap { front: number; recorded: Buffer[]; close(): void }

async function startTap(edgePort: number): Promise<Tap> {
  const front = dgram.createSocket('udp4');
  const back = dgram.createSocket('udp4');
  await new Promise<void>((r) => front.bind(0, TAP_ADDR, r));
  await new Promise<void>((r) => back.bind(0, TAP_ADDR, r));
  let phone: { address: string; port: number } | undefined;
  const recorded: Buffer[] = [];
  // the phone's outbound proxy is the tap, so its preloaded Route names the tap: point it at the
  // edge (what a SIP-aware NAT would do); nothing else is touched on the way in
  const mine = (): string => `${TAP_ADDR}:${front.address().port}`;
  front.on('message', (m, ri) => {
    phone = { address: ri.address, port: ri.port };
    back.send(Buffer.from(m.toString('latin1').split(mine()).join(`${EDGE_ADDR}:${edgePort}`), 'latin1'), edgePort, EDGE_ADDR);
  });
  back.on('message', (m, ri) => {
    if (ri.address !== EDGE_ADDR || ri.port !== edgePort) return;
    if (recorded.length < 5000) recorded.push(m);
    if (phone) front.send(m, phone.port, phone.address);
  });
  return { front: (front.address()).port, recorded, close() { front.close(); back.close(); } };
}

interface Rig { pbx: Kamailio; edge: EdgeProc; a: Phone; b: Phone; taps: Tap[]; dir: string }

async function startRig(hiding: boolean): Promise<Rig> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-topo-'));
  const cfg = path.join(dir, 'edge.yaml');
  fs.writeFileSync(cfg, ['warmUpCalls: 0', 'topology:', `  enabled: ${hiding}`, ''].join('\n'));
  const pbx = await startKamailio({ domain: DOMAIN, address: PBX_ADDR, product: PRODUCT });
  const edge = await startEdge({
    listen: [`udp:${EDGE_ADDR}:0`], upstream: [`udp:${pbx.address}:${pbx.port}`], domain: [DOMAIN],
    extraArgs: ['--config', cfg], logLevel: process.env.TOPO_LOG ?? 'info',
  });
  const taps = [await startTap(edge.ports.udp!), await startTap(edge.ports.udp!)];
  const a = await startPhone({ name: 'A', user: 'alice', domain: DOMAIN, transport: 'udp', address: A_ADDR, proxy: { host: TAP_ADDR, port: taps[0]!.front }, regint: 60 });
  const b = await startPhone({ name: 'B', user: 'bob', domain: DOMAIN, transport: 'udp', address: B_ADDR, proxy: { host: TAP_ADDR, port: taps[1]!.front }, regint: 60 });
  return { pbx, edge, a, b, taps, dir };
}

async function stopRig(r: Rig | undefined): Promise<void> {
  if (!r) return;
  await Promise.all([r.a.stop(), r.b.stop()]);
  for (const t of r.taps) t.close();
  await r.edge.stop('SIGTERM', 3_000);
  await r.pbx.stop();
  fs.rmSync(r.dir, { recursive: true, force: true });
}

async function call(caller: Phone, callee: Phone): Promise<void> {
  const c0 = caller.cursor();
  const d0 = callee.cursor();
  await caller.dial(callee.aor);
  await callee.waitEvent('CALL_INCOMING', { since: d0 });
  await callee.answer();
  await callee.waitEvent('CALL_ESTABLISHED', { since: d0 });
  await caller.waitEvent('CALL_ESTABLISHED', { since: c0 });
}

async function hangUp(by: Phone, other: Phone): Promise<void> {
  const b0 = by.cursor();
  const o0 = other.cursor();
  await by.hangup();
  await by.waitEvent('CALL_CLOSED', { since: b0 });
  await other.waitEvent('CALL_CLOSED', { since: o0 });
}

/** What the recording gives away about the PBX (empty: nothing). */
function leaks(recorded: readonly Buffer[], pbx: Kamailio): string[] {
  const found: string[] = [];
  const port = new RegExp(`[:= ]${pbx.port}(?![0-9])`);
  for (const m of recorded) {
    const s = m.toString('latin1');
    const first = s.slice(0, s.indexOf('\r\n'));
    if (s.includes(PBX_ADDR)) found.push(`address in ${first}: ${s.split('\r\n').find((l) => l.includes(PBX_ADDR))}`);
    if (port.test(s)) found.push(`port in ${first}: ${s.split('\r\n').find((l) => port.test(l))}`);
    if (/AcmePBX/i.test(s)) found.push(`product in ${first}: ${s.split('\r\n').find((l) => /AcmePBX/i.test(l))}`);
  }
  return found;
}

for (const hiding of [true, false]) {
  describe(`topology hiding ${hiding ? 'on' : 'off'}: real Kamailio on ${PBX_ADDR}, real phones outside`, { skip, timeout: 120_000 }, () => {
    let rig: Rig | undefined;
    before(async () => { rig = await startRig(hiding); });
    after(async () => { await stopRig(rig); });

    test('register, calls both ways, re-INVITE, BYE; then what the outside received', async () => {
      const r = rig!;
      const [ra, rb] = await Promise.all([r.a.register(), r.b.register()]);
      assert.equal(ra.type, 'REGISTER_OK', `A registered: ${ra.param ?? ''}\n${r.edge.logs().filter((l) => /403|verdict|deny|forbid/i.test(l)).slice(-6).join('\n')}\n${r.a.logTail(60)}`);
      assert.equal(rb.type, 'REGISTER_OK', `B registered: ${rb.param ?? ''}`);
      // A calls B; A puts B on hold and back (re-INVITEs from the caller); B hangs up
      await call(r.a, r.b);
      for (const step of [() => r.a.hold(), () => r.a.resume()]) {
        const c0 = r.b.cursor();
        await step();
        await r.b.waitEvent(['CALL_REMOTE_SDP', 'CALL_HOLD', 'CALL_RESUME', 'CALL_MENU_UPDATE'], { since: c0 }).catch(() => undefined);
        await new Promise((res) => setTimeout(res, 300));
      }
      await hangUp(r.b, r.a);
      // B calls A; B re-INVITEs (hold) from the callee's side of the first call; A hangs up
      await call(r.b, r.a);
      await r.a.hold();
      await new Promise((res) => setTimeout(res, 300));
      await hangUp(r.a, r.b);

      const recorded = r.taps.flatMap((t) => t.recorded);
      const methods = new Set(recorded.map((m) => m.toString('latin1', 0, 12).split(' ')[0]));
      for (const m of ['INVITE', 'BYE', 'SIP/2.0']) assert.ok(methods.has(m), `the outside received ${m} (${[...methods].join(',')})`);
      const inviteCount = recorded.filter((m) => m.toString('latin1', 0, 7) === 'INVITE ').length;
      assert.ok(inviteCount >= 3, `initial and re-INVITEs reached the phones (${inviteCount})`);
      const found = leaks(recorded, r.pbx);
      if (hiding) assert.deepEqual(found, [], `the PBX shows through:\n${found.slice(0, 10).join('\n')}`);
      else assert.ok(found.some((f) => f.startsWith('address')) && found.some((f) => f.startsWith('product')), `without hiding the PBX shows through (${found.length})`);
    });
  });
}
