// A real SIPVicious run (Debian package sipvicious: svmap, svwar) against the edge in-process,
// wired as in production (rules loaded by edge/policy/load.ts, stages built by edge/policy/index.ts) with
// the shipped rules/scanner.yaml. The upstream would answer anything with 200, so whatever
// reaches it would make svmap report a device: the control run with the scanner stage off proves
// that, the real run proves the stage stops it.
// Under CI=true a missing svmap/svwar is a failure, never a skip.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import { startEdge, type EdgeHandle } from '../edge/edge';
import { RulesHolder } from '../edge/policy/reload';
import { testConfig } from './helpers/config';
import { parseExposition, sample, sumOf } from './helpers/prom';
import { UdpPeer, response } from './helpers/udp-peer';

const ROOT = path.resolve(__dirname, '../..');
const silent = pino({ level: 'silent' });
const inCi = process.env.CI === 'true';

function toolAvailable(bin: string): boolean {
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  return r.error === undefined && r.status === 0;
}
const available = toolAvailable('svmap') && toolAvailable('svwar');
const skip = !available && !inCi ? 'svmap/svwar not installed (Debian package sipvicious; CI=true makes this a failure)' : false;

/**
 * A rules directory holding the shipped rules/scanner.yaml and a stages.yaml with only sanity and
 * the scanner stage (in `scannerMode`): the production loader and wiring, without the access and
 * geoip rules of the checkout deciding about loopback traffic first.
 */
function rulesDir(scannerMode: 'enforce' | 'off'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-sipvicious-'));
  fs.writeFileSync(path.join(dir, 'stages.yaml'),
    `stages:\n  - {name: sanity, mode: enforce}\n  - {name: scanner, mode: ${scannerMode}}\ntrustedSkip: [scanner]\n`);
  fs.copyFileSync(path.join(ROOT, 'rules/scanner.yaml'), path.join(dir, 'scanner.yaml'));
  return dir;
}

interface Run { code: number | null; out: string }

/** runs a SIPVicious tool, bounded: killed (its own process only) after ms */
function run(bin: string, args: string[], ms: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (b: Buffer) => { if (out.length < 1_000_000) out += b.toString('utf8'); });
    child.stderr.on('data', (b: Buffer) => { if (out.length < 1_000_000) out += b.toString('utf8'); });
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, out }); });
  });
}

/** an upstream PBX stand-in on 127.0.0.2 that answers every request with 200 OK */
async function answeringPbx(): Promise<UdpPeer> {
  const pbx = await UdpPeer.bind('127.0.0.2');
  pbx.sock.on('message', (b, rinfo) => {
    const text = b.toString('latin1');
    if (text.startsWith('SIP/2.0') || text.startsWith('ACK ')) return;
    const reply = response(text, 200, 'OK', { toTag: 'pbx1' });
    pbx.sock.send(Buffer.from(reply, 'latin1'), rinfo.port, rinfo.address);
  });
  return pbx;
}

async function withEdge<T>(scannerMode: 'enforce' | 'off', fn: (edge: EdgeHandle, port: number, pbx: UdpPeer) => Promise<T>): Promise<T> {
  const dir = rulesDir(scannerMode);
  const pbx = await answeringPbx();
  let edge: EdgeHandle | undefined;
  try {
    const rules = new RulesHolder(dir);
    assert.equal(rules.current().scanner.signatures.length > 10, true, 'the shipped signatures are loaded');
    edge = await startEdge(testConfig({ upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }] }), silent, { rules, watchRules: false });
    return await fn(edge, edge.listeners[0]!.port, pbx);
  } finally {
    await edge?.close(0);
    pbx.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('control: without the scanner stage svmap does find the edge (the PBX behind it answers)', { skip, timeout: 60_000 }, async () => {
  assert.ok(available, 'svmap/svwar are not installed (Debian package sipvicious)');
  await withEdge('off', async (_edge, port, pbx) => {
    const r = await run('svmap', ['127.0.0.1', '-p', String(port)], 30_000);
    assert.ok(pbx.inbox.length >= 1, 'the OPTIONS reached the PBX');
    assert.match(r.out, new RegExp(`127\\.0\\.0\\.1:${port}`), `svmap should list the device:\n${r.out}`);
    assert.doesNotMatch(r.out, /found nothing/);
  });
});

test('svmap and svwar against the edge with the shipped scanner signatures find nothing', { skip, timeout: 120_000 }, async () => {
  assert.ok(available, 'svmap/svwar are not installed (Debian package sipvicious)');
  await withEdge('enforce', async (edge, port, pbx) => {
    const scrape = async () => parseExposition(await edge.metrics.metrics());

    // svmap: one OPTIONS per target (svmap.py); no answer means no device
    const map = await run('svmap', ['127.0.0.1', '-p', String(port)], 30_000);
    assert.match(map.out, /found nothing/, `svmap output:\n${map.out}`);
    assert.doesNotMatch(map.out, new RegExp(`127\\.0\\.0\\.1:${port}`));
    let exp = await scrape();
    const mapRequests = sample(exp, 'sipedge_messages_received_total', { transport: 'udp', side: 'outside', kind: 'request' }) ?? 0;
    assert.ok(mapRequests >= 1, 'svmap sent at least one request');
    // every request svmap sent got a scanner verdict (its User-Agent), none reached the PBX
    assert.equal(sample(exp, 'sipedge_verdicts_total', { stage: 'scanner', action: 'drop', reason: 'scanner_user_agent', mode: 'enforce' }), mapRequests);

    // svwar: REGISTER probes for extensions 100-110; it first probes a random extension to learn
    // how the server answers an unknown one (svwar.py), and gives up when nothing answers
    const war = await run('svwar', ['-e100-110', '-m', 'REGISTER', '127.0.0.1', '-p', String(port)], 60_000);
    assert.match(war.out, /found nothing/, `svwar output:\n${war.out}`);
    assert.doesNotMatch(war.out, /\|\s*1(?:0\d|10)\s*\|/, 'no extension in the result table');
    exp = await scrape();
    const total = sample(exp, 'sipedge_messages_received_total', { transport: 'udp', side: 'outside', kind: 'request' }) ?? 0;
    assert.ok(total > mapRequests, 'svwar sent requests');
    assert.equal(sumOf(exp, 'sipedge_verdicts_total', { stage: 'scanner' }), total, 'a scanner verdict for every attempt');
    assert.equal(sample(exp, 'sipedge_verdicts_total', { stage: 'scanner', action: 'drop', reason: 'scanner_user_agent', mode: 'enforce' }), total);
    assert.equal(sumOf(exp, 'sipedge_verdicts_total', { stage: 'sanity' }), 0, 'the probes are well-formed: the scanner stage, not sanity, stopped them');
    assert.equal(sample(exp, 'sipedge_messages_sent_total', { transport: 'udp', side: 'outside', kind: 'response' }) ?? 0, 0, 'the scanners got no answer at all');

    // the upstream received nothing from the scanners
    assert.deepEqual(pbx.inbox.map((m) => m.text.split('\r\n')[0]), []);
  });
});

test('svcrack against an extension behind the edge gets no answer and finds no password', { skip: skip !== false ? skip : !toolAvailable('svcrack') && !inCi ? 'svcrack not installed' : false, timeout: 60_000 }, async () => {
  assert.ok(toolAvailable('svcrack'), 'svcrack is not installed (Debian package sipvicious)');
  await withEdge('enforce', async (edge, port, pbx) => {
    // svcrack first sends a REGISTER to learn the challenge; with no answer it gives up
    const r = await run('svcrack', ['-u100', '-r1-30', '127.0.0.1', '-p', String(port)], 45_000);
    assert.match(r.out, /found nothing|no server response/i, `svcrack output:\n${r.out}`);
    assert.doesNotMatch(r.out, /\|\s*100\s*\|/, 'no cracked password in the result table');
    const exp = await edge.metrics.metrics();
    const total = sample(exp, 'sipedge_messages_received_total', { transport: 'udp', side: 'outside', kind: 'request' }) ?? 0;
    assert.ok(total >= 1, 'svcrack sent requests');
    assert.equal(sumOf(exp, 'sipedge_verdicts_total', { stage: 'scanner' }), total, 'a scanner verdict for every attempt');
    assert.deepEqual(pbx.inbox.map((m) => m.text.split('\r\n')[0]), []);
  });
});
