// Edge authentication on a single instance without a configured nonce secret, through the spawned
// CLI as an operator runs it: the edge starts with a random per-process secret and warns that a
// cluster needs a shared one (SIPEDGE_AUTH_SECRET); a weak or well-known secret, when one IS given,
// is still refused. Nonces then do not survive a restart: a phone that answers with a nonce from
// before the restart, correctly, is asked again with stale=true (RFC 7616 3.3) and gets in with
// the fresh nonce; it spends no suspicion (one auth failure would ban it here) and counts as no
// failure.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { ha1, responseFor, type DigestAlgorithm } from '../edge/auth/digest';
import { authRulesDir, challengeParams, writeUsersFile } from './helpers/auth-edge';
import { startEdge, type EdgeProc } from './helpers/edge-proc';
import { sample } from './helpers/prom';
import { Registrar } from './helpers/registrar';
import { UdpPeer, header, headers, request, uniq } from './helpers/udp-peer';

const CLI = path.resolve(__dirname, '../edge/cli.js');
const REALM = 'example.com';
const PASSWORD = 'correct horse battery';
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sip-edge-authsecret-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const usersFile = path.join(dir, 'users.txt');
writeUsersFile(usersFile, REALM, { alice: PASSWORD }, ['SHA-256']);
const configFile = path.join(dir, 'edge.yaml');
fs.writeFileSync(configFile, `health:\n  intervalMs: 0\nwarmUpCalls: 0\ndomains: [${REALM}]\nauth:\n  users: ${usersFile}\n  realm: ${REALM}\n  algorithms: [SHA-256]\n`);
// one auth failure spends the whole suspicion budget: a phone treated as failing is banned at once;
// a REGISTER without credentials is not suspicious here
const rulesDir = authRulesDir({ weights: { auth_failure: 20, missing_auth: 0 } });
after(() => fs.rmSync(rulesDir, { recursive: true, force: true }));

/** the environment without any secret */
function envWithout(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.SIPEDGE_AUTH_SECRET;
  delete env.SIPEDGE_SECRET;
  return env;
}

function authorization(challenge: string, nc: string, cnonce: string, cseqUri = `sip:${REALM}`): string {
  const p = challengeParams(challenge);
  const alg = (p.get('algorithm') ?? 'MD5') as DigestAlgorithm;
  const nonce = p.get('nonce')!;
  const response = responseFor(alg, ha1(alg, 'alice', REALM, PASSWORD), { method: 'REGISTER', uri: cseqUri, nonce, nc, cnonce, qop: 'auth' });
  return `Authorization: Digest username="alice", realm="${REALM}", nonce="${nonce}", uri="${cseqUri}", response="${response}", algorithm=${alg}, qop=auth, nc=${nc}, cnonce="${cnonce}"`;
}

async function authMetric(edge: EdgeProc, result: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${edge.metricsPort}/metrics`);
  return sample(await res.text(), 'sipedge_auth_total', { mode: 'edge', result }) ?? 0;
}

test('edge authentication without SIPEDGE_AUTH_SECRET: starts with a random secret and warns; after a restart an old nonce gets stale=true, no suspicion, and the phone gets in', { timeout: 60_000 }, async () => {
  const pbx = await Registrar.start();
  const phone = await UdpPeer.bind('127.0.0.1');
  const args = (listen: string) => ({ listen: [listen], upstream: [`udp:127.0.0.2:${pbx.port}`], extraArgs: ['--config', configFile, '--rules', rulesDir], env: envWithout() });
  let edge = await startEdge(args('udp:127.0.0.1:0'));
  const port = edge.ports.udp!;
  const callId = uniq('reg');
  let cseq = 0;
  const register = (extra: string[] = []): string => request(phone, {
    method: 'REGISTER', ruri: `sip:${REALM}`, callId, cseq: ++cseq, from: `<sip:alice@${REALM}>`, to: `<sip:alice@${REALM}>`, extra: ['Expires: 600', ...extra],
  });
  const answer = async (): Promise<string> => {
    const r = await phone.wait((m) => m.text.startsWith('SIP/2.0 ') && header(m.text, 'CSeq') === `${cseq} REGISTER`, 3000, `answer to REGISTER ${cseq}`);
    return r.text;
  };
  try {
    const warn = edge.records().find((r) => r.event === 'random_secret' && r.secret === 'auth');
    assert.ok(warn, `a warning about the per-process nonce secret:\n${edge.logs().join('\n')}`);
    assert.equal(warn.level, 'warn');
    assert.match(String(warn.msg), /SIPEDGE_AUTH_SECRET/);

    // first registration: 401, answered, through to the PBX
    await phone.send(register(), port);
    const c1 = await answer();
    assert.match(c1, /^SIP\/2\.0 401 /);
    const challenge1 = headers(c1, 'WWW-Authenticate')[0]!;
    await phone.send(register([authorization(challenge1, '00000001', 'c1')]), port);
    assert.match(await answer(), /^SIP\/2\.0 200 /, 'registered');

    // restart on the same port: a new random secret
    assert.equal(await edge.stop(), 0);
    edge = await startEdge(args(`udp:127.0.0.1:${port}`));
    // the phone re-registers with the nonce it has (RFC 7616 3.4: the next nonce-count)
    await phone.send(register([authorization(challenge1, '00000002', 'c2')]), port);
    const c2 = await answer();
    assert.match(c2, /^SIP\/2\.0 401 /, c2);
    const challenge2 = headers(c2, 'WWW-Authenticate')[0]!;
    assert.equal(challengeParams(challenge2).get('stale'), 'true', `RFC 7616 3.3: the right password with an unknown nonce is stale, not wrong:\n${c2}`);
    await phone.send(register([authorization(challenge2, '00000001', 'c3')]), port);
    assert.match(await answer(), /^SIP\/2\.0 200 /, 'registered again with the fresh nonce: not banned');
    assert.equal(pbx.of('REGISTER').length, 2, 'the PBX saw only the two authenticated REGISTERs');
    assert.deepEqual([await authMetric(edge, 'failure'), await authMetric(edge, 'stale'), await authMetric(edge, 'success')], [0, 1, 1]);
  } finally {
    phone.close();
    pbx.close();
    await edge.stop('SIGKILL', 0);
  }
});

test('a secret that IS given must still be strong: weak or well-known values are refused', () => {
  for (const secret of ['change-me-to-32-random-characters', 'aaaaaaaaaaaaaaaaaaaaaaaa', 'short']) {
    const r = spawnSync(process.execPath, [CLI, 'check', '--config', configFile, '--upstream', 'udp:127.0.0.2:5999'], {
      encoding: 'utf8', timeout: 20_000, env: { ...envWithout(), SIPEDGE_AUTH_SECRET: secret },
    });
    assert.equal(r.status, 1, `${secret}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /^env SIPEDGE_AUTH_SECRET: /m, secret);
  }
  const ok = spawnSync(process.execPath, [CLI, 'check', '--config', configFile, '--upstream', 'udp:127.0.0.2:5999'], { encoding: 'utf8', timeout: 20_000, env: envWithout() });
  assert.equal(ok.status, 0, `no secret at all is fine for one instance: ${ok.stderr}`);
});
