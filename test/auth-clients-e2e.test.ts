// Issue 11 defect 10: edge authentication must not lock out real phones that only speak MD5, and
// must not downgrade the ones that can do better. Real clients against the spawned edge
// (dist/edge/cli.js run) on the SHIPPED auth defaults (sip-edge.yaml auth.algorithms and
// rules/auth-clients.yaml as shipped), a users file written by `sip-edge passwd` with its
// defaults, and a sipp registrar (test/sipp/registrar.xml) as the PBX:
//
// - baresip 1.0 (Debian baresip-core, libre 1.1): MD5 only, and it refuses the whole 401 when any
//   challenge names another algorithm ("Register: Function not implemented"). Registers through
//   its profile, challenged with MD5 alone.
// - the same baresip when no profile names it: refused once, then, on its own retry in the same
//   Call-ID, the edge offers MD5 alone (learned fallback) and it registers.
// - Linphone (Debian linphone-cli 5.1, belle-sip): answers SHA-256; registers with SHA-256, never
//   MD5 (not downgraded).
// Under CI=true a missing baresip, linphone-daemon or sipp is a failure, never a skip.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { baresipAvailable, startPhone, type Phone } from './helpers/baresip';
import { startEdge, type EdgeProc } from './helpers/edge-proc';
import { linphoneAvailable, startLinphone } from './helpers/linphone-daemon';
import { sample, sumOf } from './helpers/prom';
import { REPO_ROOT, killAllSipp, sippAvailable, sippSummary, startSipp, type SippHandle } from './helpers/sipp';

const inCi = process.env.CI === 'true';
process.on('exit', killAllSipp);
const CLI = path.resolve(__dirname, '../edge/cli.js');
const REALM = 'sip-edge.test';
const PASSWORD = 'Correct-Horse-Battery-9';
const SECRET = '5d1f9a3c7e2b8d4f6a0c1e3b5d7f9a2c';
/** how the edge announces the shipped auth policy: edge mode, the allow-list */
const SHIPPED = { '*': 'edge (SHA-256, SHA-512-256, MD5)' };
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-authclients-'));
after(() => fs.rmSync(TMP, { recursive: true, force: true }));

function skipUnless(ok: boolean, what: string): string | false {
  return !ok && !inCi ? `${what} not installed (CI=true makes this a failure)` : false;
}

/** `sip-edge passwd USER` as an operator runs it: password on stdin, the command's defaults */
function passwd(dir: string, user: string): Promise<{ code: number | null; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [CLI, 'passwd', user, '--realm', REALM, '--file', 'users.txt', '--no-config'], { cwd: dir, stdio: ['pipe', 'ignore', 'pipe'] });
    let err = '';
    c.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    c.stdin.end(`${PASSWORD}\n`);
    const t = setTimeout(() => c.kill('SIGKILL'), 15_000);
    c.on('close', (code) => { clearTimeout(t); resolve({ code, err }); });
  });
}

interface Setup {
  dir: string; pbx: SippHandle; edge: EdgeProc;
  /** the auth policies the edge announced when it started listening */
  auth: unknown;
  metrics(): Promise<string>;
  close(): Promise<void>;
}

/** PBX (sipp registrar for `registrations` REGISTERs) + spawned edge with the shipped auth defaults;
 *  `rulesDir`: the edge's rules (default: the shipped rules/) */
async function setup(name: string, registrations: number, rulesDir?: string): Promise<Setup> {
  const dir = fs.mkdtempSync(path.join(TMP, `${name}-`));
  const pw = await passwd(dir, 'alice');
  assert.equal(pw.code, 0, pw.err);
  // only what a test harness must change: no OPTIONS probes (sipp's registrar would take one for
  // a REGISTER), no warm-up; the auth section is the shipped default
  fs.writeFileSync(path.join(dir, 'sip-edge.yaml'), `health:\n  intervalMs: 0\nwarmUpCalls: 0\n${rulesDir !== undefined ? `rules: ${JSON.stringify(rulesDir)}\n` : ''}`);
  const pbx = await startSipp({ scenario: 'registrar.xml', calls: registrations, maxTimeMs: 120_000 });
  let edge: EdgeProc;
  try {
    edge = await startEdge({
      listen: ['udp:127.0.0.1:0'], upstream: [`udp:127.0.0.1:${pbx.port}`], domain: [REALM],
      extraArgs: ['--config', path.join(dir, 'sip-edge.yaml'), '--users', path.join(dir, 'users.txt')],
      env: { ...process.env, SIPEDGE_AUTH_SECRET: SECRET },
    });
  } catch (e) {
    await pbx.stop(500);
    throw e;
  }
  const listening = edge.records().find((r) => r.msg === 'listening') as { auth?: Record<string, string> } | undefined;
  return {
    dir, pbx, edge, auth: listening?.auth,
    metrics: async () => (await fetch(`http://127.0.0.1:${edge.metricsPort}/metrics`)).text(),
    async close() {
      await edge.stop();
      await pbx.stop(500);
    },
  };
}

/** alice over UDP with the edge as outbound proxy; -s: the SIP trace in its log, for the assertions */
const alice = (edgePort: number): Promise<Phone> => startPhone({
  name: 'alice', user: 'alice', domain: REALM, password: PASSWORD, transport: 'udp',
  proxy: { host: '127.0.0.1', port: edgePort }, regint: 600, trace: true,
});

// the three run side by side: the learned-fallback one waits 30-60 s for baresip's own retry
describe('real phones through the edge on the shipped auth defaults', { concurrency: true }, () => {

  test('baresip 1.0 (MD5 only, refuses any other challenge) registers through an edge on the shipped auth defaults, challenged with MD5 alone', {
    skip: skipUnless(baresipAvailable() && sippAvailable(), 'baresip (baresip-core) or sipp'), timeout: 60_000,
  }, async () => {
    assert.ok(baresipAvailable(), 'baresip is not installed (Debian package baresip-core)');
    const s = await setup('baresip', 1);
    const phone = await alice(s.edge.ports.udp!);
    try {
      const ev = await phone.register(20_000);
      assert.equal(ev.type, 'REGISTER_OK', `the phone registered (event ${JSON.stringify(ev)})\n${phone.logTail(150)}`);
      const trace = phone.logTail(Infinity);
      assert.match(trace, /WWW-Authenticate: Digest realm="sip-edge\.test", nonce="[^"]+", algorithm=MD5, qop="auth"/);
      assert.doesNotMatch(trace, /algorithm=SHA-/, 'it was never offered an algorithm it refuses');
      const m = await s.metrics();
      assert.ok((sample(m, 'sipedge_rule_hits_total', { rule: 'auth-clients:baresip_md5_only' }) ?? 0) >= 1, 'the profile chose the challenge');
      assert.ok((sample(m, 'sipedge_auth_algorithm_total', { algorithm: 'MD5' }) ?? 0) >= 1);
      assert.equal(sumOf(m, 'sipedge_verdicts_total', { stage: 'auth', reason: 'wrong_credentials' }), 0);
      const pbx = await s.pbx.done;
      assert.equal(pbx.successful, 1, `the PBX registered the phone, through the edge (Path)\n${sippSummary(pbx)}`);
      assert.deepEqual(s.auth, SHIPPED, 'the shipped allow-list');
    } finally {
      await phone.stop();
      await s.close();
    }
  });

  test('a baresip no profile names: refused once ("Function not implemented"), then on its own retry in the same Call-ID the edge offers MD5 alone and it registers', {
    skip: skipUnless(baresipAvailable() && sippAvailable(), 'baresip (baresip-core) or sipp'), timeout: 120_000,
  }, async () => {
    assert.ok(baresipAvailable(), 'baresip is not installed (Debian package baresip-core)');
    // the shipped rules with the baresip profiles taken out: this phone is now an unknown client
    const rules = fs.mkdtempSync(path.join(TMP, 'rules-'));
    for (const f of fs.readdirSync(path.join(REPO_ROOT, 'rules'))) {
      if (f.endsWith('.yaml')) fs.copyFileSync(path.join(REPO_ROOT, 'rules', f), path.join(rules, f));
    }
    if (fs.existsSync(path.join(REPO_ROOT, 'rules', 'lists'))) fs.cpSync(path.join(REPO_ROOT, 'rules', 'lists'), path.join(rules, 'lists'), { recursive: true });
    const clients = fs.readFileSync(path.join(rules, 'auth-clients.yaml'), 'utf8');
    const without = clients.replace(/\n  - name: baresip_md5_only\n[\s\S]*?(?=\n  - name: sipp\n)/, '');
    assert.notEqual(without, clients, 'rules/auth-clients.yaml holds the baresip profiles');
    assert.doesNotMatch(without, /baresip v/);
    fs.writeFileSync(path.join(rules, 'auth-clients.yaml'), without);

    const s = await setup('unknown', 1, rules);
    const phone = await alice(s.edge.ports.udp!);
    try {
      const first = await phone.register(20_000);
      assert.equal(first.type, 'REGISTER_FAIL', `offered SHA-256 and MD5, baresip 1.0 refuses the whole response\n${phone.logTail(100)}`);
      assert.match(phone.logTail(Infinity), /Function not implemented/);
      // libre 1.1 sipreg retries after 30-60 s (failwait), same Call-ID, CSeq + 1, no credentials;
      // waitEvent rejects (with the events and the log tail) when it does not come
      await phone.waitEvent('REGISTER_OK', { since: first.seq, timeoutMs: 75_000 });
      const m = await s.metrics();
      assert.ok((sample(m, 'sipedge_rule_hits_total', { rule: 'auth-clients:default' }) ?? 0) >= 1);
      assert.ok((sample(m, 'sipedge_rule_hits_total', { rule: 'auth-clients:learned_md5_fallback' }) ?? 0) >= 1, 'the fallback chose the second challenge');
      assert.ok((sample(m, 'sipedge_auth_algorithm_total', { algorithm: 'MD5' }) ?? 0) >= 1);
      const pbx = await s.pbx.done;
      assert.equal(pbx.successful, 1, sippSummary(pbx));
      assert.deepEqual(s.auth, SHIPPED);
    } finally {
      await phone.stop();
      await s.close();
    }
  });

  test('Linphone 5.1 (SHA-256 capable) registers with SHA-256 on the shipped defaults: not downgraded to MD5', {
    skip: skipUnless(linphoneAvailable() && sippAvailable(), 'linphone-daemon (linphone-cli) or sipp'), timeout: 60_000,
  }, async () => {
    assert.ok(linphoneAvailable(), 'linphone-daemon is not installed (Debian package linphone-cli)');
    const s = await setup('linphone', 1);
    const phone = await startLinphone();
    try {
      const r = await phone.command(`register sip:alice@${REALM} sip:127.0.0.1:${s.edge.ports.udp} ${PASSWORD}`);
      const id = Number(/Id: (\d+)/.exec(r)?.[1]);
      assert.ok(id > 0, r);
      const state = await phone.registrationState(id, 20_000);
      const log = phone.log();
      const sipLines = log.split('\n').filter((l) => /^(REGISTER|SIP\/2\.0|WWW-Authenticate|Authorization)/.test(l)).join('\n');
      assert.equal(state, 'LinphoneRegistrationOk', sipLines);
      assert.deepEqual(s.auth, SHIPPED);
      assert.match(log, /WWW-Authenticate: Digest realm="sip-edge\.test", nonce="[^"]+", algorithm=SHA-256, qop="auth"/, 'SHA-256 offered first');
      assert.match(log, /Authorization: +Digest [^\n]*algorithm=SHA-256/, `it answered with SHA-256\n${sipLines}`);
      assert.doesNotMatch(log, /Authorization: +Digest [^\n]*algorithm=MD5/, 'never with MD5');
      const m = await s.metrics();
      assert.ok((sample(m, 'sipedge_auth_algorithm_total', { algorithm: 'SHA-256' }) ?? 0) >= 1);
      assert.equal(sample(m, 'sipedge_auth_algorithm_total', { algorithm: 'MD5' }), 0);
      assert.ok((sample(m, 'sipedge_rule_hits_total', { rule: 'auth-clients:default' }) ?? 0) >= 1);
      const pbx = await s.pbx.done;
      assert.equal(pbx.successful, 1, sippSummary(pbx));
    } finally {
      await phone.stop();
      await s.close();
    }
  });
});
