// `sip-edge bans` as an operator runs it: against the shared Redis, and against a single-node
// edge's admin listener; the running edge enforces what the command adds.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { test } from 'node:test';
import pino from 'pino';
import { ManualClock } from '../edge/clock';
import { startEdge } from '../edge/edge';
import { testConfig } from './helpers/config';
import { UdpPeer } from './helpers/udp-peer';
import { CIDR_CASES, firstAddress } from './helpers/cidr-cases';

const CLI = path.resolve(__dirname, '../edge/cli.js');
const inCi = process.env.CI === 'true';

function cli(...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    c.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    const t = setTimeout(() => c.kill('SIGKILL'), 15_000);
    c.on('close', (code) => { clearTimeout(t); resolve({ code, out, err }); });
  });
}

const base = ['--no-config', '--upstream', 'udp:127.0.0.2:5999'];

test('bans through the admin listener of a single-node edge (no Redis)', async () => {
  const edge = await startEdge(testConfig({ upstreams: [{ transport: 'udp', host: '127.0.0.2', port: 5999 }], metrics: { listen: '127.0.0.1:0' } }), pino({ level: 'silent' }), { clock: new ManualClock(), watchRules: false });
  try {
    const m = ['--metrics', `127.0.0.1:${edge.admin!.port}`];
    const add = await cli('bans', 'add', '192.0.2.0/24', '--for', '10m', '--reason', 'abuse-desk', '--json', ...base, ...m);
    assert.equal(add.code, 0, add.err);
    assert.equal(JSON.parse(add.out).reason, 'abuse-desk');
    assert.notEqual(edge.bans.check('192.0.2.77', Date.now()), null, 'the running edge enforces it');
    // --json: machine-readable, times in epoch milliseconds, as the store keeps them
    const list = await cli('bans', 'list', '--json', ...base, ...m);
    const bans = JSON.parse(list.out) as { key: string; since: number; until: number }[];
    assert.deepEqual(bans.map((b) => b.key), ['192.0.2.0/24']);
    assert.equal(typeof bans[0]!.until, 'number');
    // for people: one line per ban with ISO-8601 times (UTC), not epoch milliseconds
    const human = await cli('bans', 'list', ...base, ...m);
    assert.equal(human.code, 0, human.err);
    const iso = (ms: number): string => new Date(ms).toISOString();
    assert.match(human.out, new RegExp(`^192\\.0\\.2\\.0/24 +${iso(bans[0]!.until)} +${iso(bans[0]!.since)} +1 +manual +abuse-desk$`, 'm'), human.out);
    assert.doesNotMatch(human.out, /\b\d{13}\b/, 'no epoch milliseconds');
    const rm = await cli('bans', 'remove', '192.0.2.0/24', ...base, ...m);
    assert.equal(rm.code, 0, rm.err);
    assert.equal(edge.bans.check('192.0.2.77', Date.now()), null);
  } finally {
    await edge.close(0);
  }
});

test('the admin listener gives each ban target the answer the CLI and the config give; a ban added in one spelling is removed in another', async () => {
  const edge = await startEdge(testConfig({ upstreams: [{ transport: 'udp', host: '127.0.0.2', port: 5999 }], metrics: { listen: '127.0.0.1:0' } }), pino({ level: 'silent' }), { clock: new ManualClock(), watchRules: false });
  try {
    const url = (key: string, extra = ''): string => `http://127.0.0.1:${edge.admin!.port}/bans?${new URLSearchParams({ key })}${extra}`;
    for (const c of CIDR_CASES) {
      const label = JSON.stringify(c.text);
      const add = await fetch(url(c.text, '&seconds=600&reason=t'), { method: 'POST' });
      const body = await add.text();
      if ('error' in c) {
        assert.deepEqual([add.status, body], [400, `${label}: ${c.error}\n`], label);
        assert.deepEqual(await edge.store.listBans(), [], `${label}: nothing stored`);
        continue;
      }
      assert.equal(add.status, 200, `${label}: ${body}`);
      assert.equal((JSON.parse(body) as { key: string }).key, c.key, label);
      assert.notEqual(edge.bans.check(firstAddress(c.cidr), Date.now()), null, `${label}: enforced`);
      // removed by its canonical spelling (what `bans list` shows), not the one it was added with
      const rm = await fetch(url(c.key), { method: 'DELETE' });
      assert.deepEqual([rm.status, await rm.text()], [200, '{"removed":true}\n'], label);
      assert.equal(edge.bans.check(firstAddress(c.cidr), Date.now()), null, `${label}: lifted`);
    }
  } finally {
    await edge.close(0);
  }
});

test('an unban through the admin listener forgives the source: its spent suspicion budget starts from full (no re-ban for the old offence)', async () => {
  const edge = await startEdge(testConfig({ upstreams: [{ transport: 'udp', host: '127.0.0.2', port: 5999 }], metrics: { listen: '127.0.0.1:0' } }), pino({ level: 'silent' }), { clock: new ManualClock(), watchRules: false });
  const src = await UdpPeer.bind('127.0.0.73');
  try {
    const m = ['--metrics', `127.0.0.1:${edge.admin!.port}`];
    /** one malformed datagram: a hard suspicion event of weight 1 (the budget is 20) */
    const junk = async (n: number): Promise<void> => {
      for (let i = 0; i < n; i++) await src.send('HELLO\r\n\r\n', edge.listeners[0]!.port);
      await new Promise((r) => setTimeout(r, 100));
    };
    await junk(19);
    assert.equal(edge.bans.check('127.0.0.73', Date.now()), null, '19 of 20 points spent: not banned yet');
    assert.equal((await cli('bans', 'add', '127.0.0.73', '--for', '10m', ...base, ...m)).code, 0);
    assert.notEqual(edge.bans.check('127.0.0.73', Date.now()), null);
    assert.equal((await cli('bans', 'remove', '127.0.0.73', ...base, ...m)).code, 0);
    assert.equal(edge.bans.check('127.0.0.73', Date.now()), null);
    await junk(2);
    assert.equal(edge.bans.check('127.0.0.73', Date.now()), null, 'two new events after the unban do not finish the old budget');
    await junk(19);
    assert.notEqual(edge.bans.check('127.0.0.73', Date.now()), null, 'a new offence (21 points) bans again');
  } finally {
    src.close();
    await edge.close(0);
  }
});

test('bans on the shared Redis', async (t) => {
  const r = ['--redis', 'redis://127.0.0.1:6379'];
  const key = `198.18.${Math.floor(Math.random() * 250)}.${Math.floor(Math.random() * 250)}`;
  const add = await cli('bans', 'add', key, '--for', '2m', ...base, ...r);
  if (add.code !== 0 && /unreachable/.test(add.err)) {
    if (inCi) assert.fail(`Redis is required under CI=true: ${add.err}`);
    t.skip('no Redis on 127.0.0.1:6379');
    return;
  }
  assert.equal(add.code, 0, add.err);
  assert.match(add.out, new RegExp(`^banned ${key.replace(/\./g, '\\.')} until \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z`, 'm'), add.out);
  const list = await cli('bans', 'list', '--json', ...base, ...r);
  assert.ok((JSON.parse(list.out) as { key: string }[]).some((b) => b.key === key));
  const human = await cli('bans', 'list', ...base, ...r);
  assert.match(human.out, new RegExp(`^${key.replace(/\./g, '\\.')} +\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z `, 'm'), human.out);
  const rm = await cli('bans', 'remove', key, ...base, ...r);
  assert.equal(rm.code, 0, rm.err);
  const again = await cli('bans', 'list', '--json', ...base, ...r);
  assert.ok(!(JSON.parse(again.out) as { key: string }[]).some((b) => b.key === key));
});

test('bans: invalid targets and durations are usage errors', async () => {
  const bad = await cli('bans', 'add', 'not-an-ip', '--for', '10m', ...base);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /not an IP address or CIDR/);
  const dur = await cli('bans', 'add', '192.0.2.1', '--for', 'forever', ...base);
  assert.equal(dur.code, 2);
  assert.match(dur.err, /--for DURATION/);
});
