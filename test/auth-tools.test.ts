// Digest authentication against the real attack tools (Debian package sipvicious 0.3.x: svwar
// enumerates extensions, svcrack guesses passwords), in edge mode and in PBX pass-through mode.
//
// The edge runs in-process (startEdge, production wiring) with a rules directory holding only
// sanity, ratelimit and auth (test/helpers/auth-edge.ts): the scanner stage would drop SIPVicious
// on its User-Agent at once (test/sipvicious.test.ts proves that); here the AUTH defences must hold
// by themselves. Behind it, a PBX stand-in (test/helpers/registrar.ts). Every "the edge stops it"
// run has a control run where the same tool, pointed at the naive PBX directly or at an edge whose
// auth defence is switched off, DOES find the extensions or the password: so each test can fail.
//
// How the tools decide (read from /usr/share/sipvicious/sipvicious):
// - svwar first probes a random extension to learn the "unknown user" answer; a 401/407 there ends
//   the scan ("Set --force to force a scan"); with --force, every answer whose status line equals
//   that first one means "no such user". It reports extensions whose answer differs (401/407/403
//   "reqauth", 200 "noauth").
// - svcrack sends REGISTERs for one user, answers each challenge with the next password (MD5 only,
//   the first `algorithm=` of the answer; qop=auth with nc counting up from 1), reports the
//   password when an answer gets 200, and sends an unauthenticated REGISTER whenever it has no
//   challenge to answer.
// The tools send from 127.0.0.1 (they ignore -b). Under CI=true a missing tool is a failure.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import {
  answerChallenge, authConfig, resultRows, runTool, startAuthEdge, toolAvailable, until, upsertUsers, type AuthEdge, type ToolRun,
} from './helpers/auth-edge';
import { freePort } from './helpers/ports';
import { sample, sumOf } from './helpers/prom';
import { Registrar } from './helpers/registrar';
import { UdpPeer, header, headers, request } from './helpers/udp-peer';

const inCi = process.env.CI === 'true';
const available = toolAvailable('svwar') && toolAvailable('svcrack');
const skip = !available && !inCi ? 'svwar/svcrack not installed (Debian package sipvicious; CI=true makes this a failure)' : false;

const REALM = 'sip-edge.test';
/** the extensions that exist, inside the scanned range 100-140 */
const USERS: Readonly<Record<string, string>> = { '101': 'tr0ub4dor', '120': 'c0rrect-h0rse' };
const KNOWN = [['101', 'reqauth'], ['120', 'reqauth']];
const METHODS = ['REGISTER', 'INVITE', 'OPTIONS'] as const;
const SOFT_BANS = ['suspicion_missing_auth', 'suspicion_enumeration', 'suspicion_unknown_user', 'suspicion_flood'];

/** svwar over 100-140 with `method`, from a free local port (svwar's default 5060 may be taken) */
async function svwar(port: number, method: string, extra: readonly string[] = [], host = '127.0.0.1'): Promise<ToolRun> {
  const local = await freePort('udp');
  return runTool('svwar', ['-e100-140', '-m', method, ...extra, '-P', String(local), host, '-p', String(port)], 45_000);
}

/** svcrack against user 101 with `dict`; --maximumtime 3: stop 3 s after the last answer */
async function svcrack(port: number, dict: string, extra: readonly string[] = []): Promise<ToolRun> {
  const local = await freePort('udp');
  return runTool('svcrack', ['-u101', '-d', dict, '--maximumtime', '3', ...extra, '-P', String(local), '127.0.0.1', '-p', String(port)], 60_000);
}

/** 40 passwords, the right one (USERS['101']) at position 35 */
function dictionary(dir: string): string {
  const words: string[] = [];
  for (let i = 1; i <= 40; i++) words.push(i === 35 ? USERS['101']! : `guess-${i}`);
  const file = path.join(dir, 'passwords.txt');
  fs.writeFileSync(file, `${words.join('\n')}\n`);
  return file;
}

/** sorted result table of a tool run */
function rows(r: ToolRun): string[][] {
  return resultRows(r.out).sort((a, b) => a[0].localeCompare(b[0]));
}

function edgeModeEdge(o: { weights?: Parameters<typeof startAuthEdge>[0]['weights']; lockout?: { failures: number; seconds: number } } = {}): Promise<AuthEdge> {
  return startAuthEdge({
    ...(o.weights !== undefined ? { weights: o.weights } : {}),
    // the per-AOR REGISTER limit (20 per minute, limits.yaml aorRegister) would stop svcrack by
    // itself; off, so that what stops it here is authentication
    aorRegister: false,
    auth: (dir) => {
      const users = path.join(dir, 'users.txt');
      upsertUsers(users, REALM, USERS, ['SHA-256', 'MD5']);
      // MD5 enabled (svcrack computes nothing else) and first: svcrack reads the first algorithm=
      return authConfig({ mode: 'edge', realm: REALM, usersFile: users, algorithms: ['MD5', 'SHA-256'], ...(o.lockout ? { lockout: o.lockout } : {}) });
    },
  });
}

function pbxModeEdge(): Promise<AuthEdge> {
  return startAuthEdge({
    aorRegister: false,
    registrar: { users: USERS },
    auth: () => authConfig({ mode: 'pbx', realm: 'asterisk', pbxRewrite: 'challenge' }),
  });
}

// ------------------------------------------------------------------------------ svwar

test('control: svwar against the naive PBX directly finds extensions 101 and 120 with REGISTER, INVITE and OPTIONS', { skip, timeout: 90_000 }, async () => {
  assert.ok(available, 'svwar/svcrack are not installed (Debian package sipvicious)');
  // 404 for unknown users, a challenge for known ones: what svwar sorts extensions by
  const pbx = await Registrar.start({ address: '127.0.0.3', users: USERS });
  try {
    for (const method of METHODS) {
      const r = await svwar(pbx.port, method, [], '127.0.0.3');
      assert.deepEqual(rows(r), KNOWN, `svwar -m ${method} against the PBX:\n${r.out}`);
    }
  } finally {
    pbx.close();
  }
});

test('svwar against edge auth finds no extension with REGISTER, INVITE or OPTIONS (with and without --force); a scanner that keeps going is banned', { skip, timeout: 120_000 }, async (t) => {
  assert.ok(available, 'svwar/svcrack are not installed (Debian package sipvicious)');
  const ae = await edgeModeEdge();
  try {
    for (const method of METHODS) {
      for (const force of [[], ['--force']]) {
        const r = await svwar(ae.port, method, force);
        assert.deepEqual(rows(r), [], `svwar -m ${method} ${force.join(' ')} found extensions through the edge:\n${r.out}`);
        assert.match(r.out, /found nothing/);
        // without --force it gives up on the first probe: "an authentication request for an
        // unknown extension"; with --force every answer equals that first one
        if (force.length === 0) assert.match(r.out, /authentication request for an unknown extension/);
      }
    }
    let m = await ae.edge.metrics.metrics();
    const challenged = sample(m, 'sipedge_verdicts_total', { stage: 'auth', action: 'reply', reason: 'challenge', mode: 'enforce' }) ?? 0;
    assert.ok(challenged >= 6, `every probe got the challenge (${challenged})`);
    assert.equal(sumOf(m, 'sipedge_verdicts_total', { stage: 'auth' }), challenged, 'and nothing else: no answer told users apart');
    assert.deepEqual(ae.pbx.requests.map((x) => x.text.split('\r\n')[0]), [], 'no probe reached the PBX');

    // a scanner that keeps going (one svwar run after another, as scanning scripts do) spends its
    // budget on missing_auth / enumeration events and is banned once the soft grace has passed
    let runs = 0;
    while (ae.edge.bans.check('127.0.0.1', Date.now()) === null && runs < 80) {
      await svwar(ae.port, 'REGISTER');
      runs++;
    }
    await until(() => ae.edge.bans.check('127.0.0.1', Date.now()) !== null, 10_000, 'the scanning source banned');
    const ban = ae.edge.bans.check('127.0.0.1', Date.now())!;
    assert.ok(SOFT_BANS.includes(ban.reason), ban.reason);
    t.diagnostic(`banned (${ban.reason}) after ${runs} more svwar runs`);
    // banned: the gate drops it before parsing, svwar gets no answer at all
    const after = await svwar(ae.port, 'REGISTER');
    assert.match(after.out, /timed out|No server response/, after.out);
    assert.deepEqual(rows(after), []);
    m = await ae.edge.metrics.metrics();
    assert.ok((sample(m, 'sipedge_verdicts_total', { stage: 'gate', action: 'drop', reason: 'banned', mode: 'enforce' }) ?? 0) >= 1);
    assert.equal(sample(m, 'sipedge_bans_added_total', { reason: ban.reason }), 1);
    assert.deepEqual(ae.pbx.requests.length, 0);
  } finally {
    await ae.close();
  }
});

// ----------------------------------------------------------------------------- svcrack

test('svcrack against edge auth is banned after the suspicion budget and never finds the password (35th of 40); with failures not counted it does', { skip, timeout: 120_000 }, async (t) => {
  assert.ok(available, 'svwar/svcrack are not installed (Debian package sipvicious)');
  // control first: auth_failure weight 0 and a lockout it cannot reach: svcrack finds the password,
  // so the edge answers svcrack's digests correctly and the real run below could fail
  const open = await edgeModeEdge({ weights: { auth_failure: 0 }, lockout: { failures: 1000, seconds: 900 } });
  try {
    const r = await svcrack(open.port, dictionary(open.dir));
    assert.deepEqual(rows(r), [['101', USERS['101']!]], `control: svcrack should crack 101:\n${r.out.slice(-2000)}`);
    assert.equal(open.edge.bans.check('127.0.0.1', Date.now()), null);
    assert.equal(open.pbx.of('REGISTER', '101').length, 1, 'the one right answer reached the PBX');
    const m = await open.edge.metrics.metrics();
    // at least the 34 wrong passwords before it; svcrack may re-send a guess that timed out under
    // load (a fresh challenge, another failure), so not exactly 34
    const wrongBefore = sample(m, 'sipedge_verdicts_total', { stage: 'auth', action: 'reply', reason: 'wrong_credentials', mode: 'enforce' }) ?? 0;
    assert.ok(wrongBefore >= 34 && wrongBefore <= 40, `the 34 wrong passwords before it (${wrongBefore})`);
  } finally {
    await open.close();
  }

  // the shipped weights (auth_failure 1, budget 20 per 600 s) and lockout
  const ae = await edgeModeEdge();
  try {
    const r = await svcrack(ae.port, dictionary(ae.dir));
    assert.deepEqual(rows(r), [], `svcrack cracked a password through the edge:\n${r.out.slice(-2000)}`);
    assert.match(r.out, /found nothing/);
    const ban = ae.edge.bans.check('127.0.0.1', Date.now());
    assert.ok(ban !== null, 'the guessing source is banned');
    assert.equal(ban.reason, 'suspicion_auth_failure');
    const m = await ae.edge.metrics.metrics();
    const wrong = sample(m, 'sipedge_verdicts_total', { stage: 'auth', action: 'reply', reason: 'wrong_credentials', mode: 'enforce' }) ?? 0;
    // the budget: 20 events; the first unauthenticated REGISTER (missing_auth) is one of them
    assert.ok(wrong >= 1 && wrong <= 20, `wrong answers before the ban: ${wrong}`);
    t.diagnostic(`banned after ${wrong} wrong passwords`);
    assert.ok((sample(m, 'sipedge_verdicts_total', { stage: 'gate', action: 'drop', reason: 'banned', mode: 'enforce' }) ?? 0) >= 1, 'svcrack kept sending into the ban');
    assert.equal(ae.pbx.requests.length, 0, 'nothing reached the PBX');
  } finally {
    await ae.close();
  }
});

test('svcrack -n (reuse the nonce) gets nowhere: a nonce-count seen before is a replay, even with the right password', { skip, timeout: 90_000 }, async () => {
  assert.ok(available, 'svwar/svcrack are not installed (Debian package sipvicious)');
  const ae = await edgeModeEdge();
  try {
    // the tool: sipvicious 0.3.3's -n path dies on its own (KeyError 'algorithm') after the first
    // challenge; a fixed svcrack counts nc up with the one nonce, and each wrong answer is then a
    // failure like any other (banned at 20). Either way no password.
    const r = await svcrack(ae.port, dictionary(ae.dir), ['-n']);
    assert.deepEqual(rows(r), [], `svcrack -n cracked a password:\n${r.out.slice(-2000)}`);
    assert.equal(ae.pbx.requests.length, 0);

    // what -n does on the wire, done in-process: one challenge, then answers that reuse its nonce
    // with nc=00000001 each time (RFC 7616 3.4: each nonce-count is good for one attempt)
    const p = await UdpPeer.bind('127.0.0.44');
    try {
      const ruri = 'sip:127.0.0.1';
      let cseq = 1;
      const reg = (extra: string[] = []): string => request(p, { method: 'REGISTER', ruri, from: '<sip:101@127.0.0.1>', to: '<sip:101@127.0.0.1>', callId: 'reuse-nonce', cseq: cseq++, extra });
      await p.send(reg(), ae.port);
      const challenge = header((await p.waitFirstLine('SIP/2.0 401')).text, 'WWW-Authenticate')!;
      assert.match(challenge, /algorithm=MD5/);
      const answer = async (password: string): Promise<string> => {
        await p.send(reg([answerChallenge(401, challenge, { method: 'REGISTER', uri: ruri, user: '101', password, cnonce: 'fixed-cnonce' })]), ae.port);
        return (await p.wait((x) => x.text.startsWith('SIP/2.0'), 2000, 'an answer')).text;
      };
      assert.match(await answer('guess-1'), /^SIP\/2\.0 401 /);
      // the right password, replayed nonce and nc: the same challenge as a wrong one, not forwarded
      const replayed = await answer(USERS['101']!);
      assert.match(replayed, /^SIP\/2\.0 401 /);
      assert.equal(headers(replayed, 'WWW-Authenticate').length, 2, 'a fresh challenge, like any failure');
      const m = await ae.edge.metrics.metrics();
      assert.equal(sample(m, 'sipedge_verdicts_total', { stage: 'auth', action: 'reply', reason: 'nonce_replay', mode: 'enforce' }), 1);
      assert.equal(ae.pbx.requests.length, 0, 'the replayed right answer never reached the PBX');
      // control: the same right password on a fresh challenge is accepted
      const fresh = header(replayed, 'WWW-Authenticate')!;
      await p.send(reg([answerChallenge(401, fresh, { method: 'REGISTER', uri: ruri, user: '101', password: USERS['101']! })]), ae.port);
      await p.waitFirstLine('SIP/2.0 200');
      assert.equal(ae.pbx.of('REGISTER', '101').length, 1);
    } finally {
      p.close();
    }
  } finally {
    await ae.close();
  }
});

// ------------------------------------------------------------------- PBX pass-through mode

test('pbx mode: through the edge svwar finds nobody (the PBX\'s 404s become its own challenge) and svcrack is stopped before the right password', { skip, timeout: 180_000 }, async () => {
  assert.ok(available, 'svwar/svcrack are not installed (Debian package sipvicious)');
  // controls: svwar directly against the same registrar is the first test (it gives away 101 and
  // 120); svcrack directly against it cracks 101 (the registrar checks svcrack's digests right)
  const direct = await Registrar.start({ address: '127.0.0.3', users: USERS });
  const dictDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-dict-'));
  try {
    const local = await freePort('udp');
    const r = await runTool('svcrack', ['-u101', '-d', dictionary(dictDir), '--maximumtime', '3', '-P', String(local), '127.0.0.3', '-p', String(direct.port)], 60_000);
    assert.deepEqual(rows(r), [['101', USERS['101']!]], `control: svcrack against the PBX directly should crack 101:\n${r.out.slice(-2000)}`);
    assert.deepEqual(direct.accepted, ['101']);
  } finally {
    direct.close();
    fs.rmSync(dictDir, { recursive: true, force: true });
  }

  const ae = await pbxModeEdge();
  try {
    for (const method of METHODS) {
      for (const force of [[], ['--force']]) {
        const r = await svwar(ae.port, method, force);
        assert.deepEqual(rows(r), [], `svwar -m ${method} ${force.join(' ')} found extensions through the edge (pbx mode):\n${r.out}`);
        assert.match(r.out, /found nothing/);
      }
      // pass-through: the probes did reach the PBX, its answers were made alike by the edge
      assert.ok(ae.pbx.of(method).length >= 1, `svwar -m ${method} reached the PBX`);
    }
    assert.ok(ae.pbx.of('REGISTER').some((x) => x.target !== '101' && x.target !== '120'), 'the PBX saw probes for unknown users (and answered them 404)');
    const m = await ae.edge.metrics.metrics();
    assert.ok((sample(m, 'sipedge_auth_total', { mode: 'pbx', result: 'challenge' }) ?? 0) >= 6, 'the 404s were rewritten to challenges');
  } finally {
    await ae.close();
  }

  // svcrack on an edge of its own: the svwar runs above spend the source's budget on 404s
  // (unknown_user), by a number of probes that depends on svwar's retries, so on that edge the
  // guesser could already be banned before its first guess reached the PBX
  const ae2 = await pbxModeEdge();
  try {
    assert.equal(ae2.edge.bans.check('127.0.0.1', Date.now()), null, 'the guesser starts unbanned');
    // svcrack: each wrong password is a PBX 401 to a request with credentials (auth_failure);
    // the budget runs out, and the user is locked (lockout.failures 10) so that not even a right
    // guess during a ban grace reaches the PBX
    const r = await svcrack(ae2.port, dictionary(ae2.dir));
    assert.deepEqual(rows(r), [], `svcrack cracked a password through the edge (pbx mode):\n${r.out.slice(-2000)}`);
    assert.deepEqual(ae2.pbx.accepted, [], 'the PBX never accepted a password');
    assert.ok(ae2.pbx.rejected.length >= 1 && ae2.pbx.rejected.length < 34, `wrong passwords that reached the PBX: ${ae2.pbx.rejected.length}`);
    const ban = ae2.edge.bans.check('127.0.0.1', Date.now());
    assert.ok(ban !== null, 'the guessing source is banned');
    assert.ok(['suspicion_auth_failure', ...SOFT_BANS].includes(ban.reason), ban.reason);
    const m = await ae2.edge.metrics.metrics();
    assert.ok((sample(m, 'sipedge_auth_total', { mode: 'pbx', result: 'failure' }) ?? 0) >= 1);
  } finally {
    await ae2.close();
  }
});

// svwar compares status lines only, but a tool that compares header names (sippts does) would
// still tell a rewritten "no such user" from the PBX's genuine challenge if the edge built the
// rewrite itself (its own Server header, its own To tag): it must be built from the PBX's answer.
test('pbx mode: the rewritten 404 carries the same header names as the PBX\'s genuine challenge', { timeout: 30_000 }, async () => {
  const ae = await pbxModeEdge();
  const p = await UdpPeer.bind('127.0.0.45');
  try {
    const answerFor = async (user: string): Promise<string> => {
      await p.send(request(p, { method: 'REGISTER', ruri: 'sip:127.0.0.1', from: `<sip:${user}@127.0.0.1>`, to: `<sip:${user}@127.0.0.1>` }), ae.port);
      return (await p.waitFirstLine('SIP/2.0')).text;
    };
    const names = (text: string): string[] => text.split('\r\n\r\n')[0]!.split('\r\n').slice(1).map((l) => l.slice(0, l.indexOf(':')).toLowerCase());
    const known = await answerFor('101');
    const unknown = await answerFor('999');
    assert.equal(unknown.split('\r\n')[0], known.split('\r\n')[0], 'the same status line (what svwar compares)');
    assert.deepEqual(names(unknown), names(known), `header names differ:\n${known}\n---\n${unknown}`);
  } finally {
    p.close();
    await ae.close();
  }
});
