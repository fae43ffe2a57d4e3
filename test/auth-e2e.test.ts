// Edge digest authentication end to end: an in-process edge (startEdge, production wiring, rules
// with sanity + ratelimit + auth) in edge mode in front of a PBX stand-in on 127.0.0.2 that trusts
// the edge and answers 200 (test/helpers/registrar.ts).
//
// - sipp as a real phone: REGISTER through a 401, then a call through a 407; what the PBX receives
//   carries no credentials and no identity the phone made up; a wrong password never reaches it.
// - a NAT office: 500 phones behind one address register at once, all get through, the address is
//   not banned; the same burst from an address that never answers its challenges is banned.
// Under CI=true a missing sipp is a failure, never a skip.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { ha1 } from '../edge/auth/digest';
import { DIGEST_ALGORITHMS, UsersDb } from '../edge/auth/users';
import { defaultAuthConfig } from '../edge/config/load';
import { answerChallenge, authConfig, startAuthEdge, until, upsertUsers, writeUsersFile } from './helpers/auth-edge';
import { sample, sumOf } from './helpers/prom';
import { killAllSipp, runSipp, sippAvailable, sippSummary } from './helpers/sipp';
import { UdpPeer, header, headers, request } from './helpers/udp-peer';

const inCi = process.env.CI === 'true';
const skip = !sippAvailable() && !inCi ? 'sipp not installed (Debian package sip-tester; CI=true makes this a failure)' : false;
process.on('exit', killAllSipp);

const REALM = 'sip-edge.test';

test('a sipp phone registers and calls through edge digest auth on the shipped auth defaults; the PBX sees no credentials and no forged identity; a wrong password never reaches it', { skip, timeout: 60_000 }, async () => {
  assert.ok(sippAvailable(), 'sipp is not installed (Debian package sip-tester)');
  const ae = await startAuthEdge({
    // sipp 3.6 answers only the FIRST challenge header and only MD5 ("createAuthHeader:
    // authentication must use MD5 or AKAv1-MD5" otherwise); the shipped rules/auth-clients.yaml
    // knows it by its From tag and offers it MD5 alone, within the shipped allow-list
    shippedClients: true,
    auth: (dir) => {
      const users = path.join(dir, 'users.txt');
      // the `sip-edge passwd` code path with its default algorithms
      upsertUsers(users, REALM, { alice: 'correct horse', bob: 'battery staple' }, DIGEST_ALGORITHMS);
      return authConfig({ mode: 'edge', realm: REALM, usersFile: users, algorithms: defaultAuthConfig([]).fallback.algorithms, identity: 'assert' });
    },
  });
  try {
    const remote = `127.0.0.1:${ae.port}`;

    // REGISTER -> 401 -> REGISTER with Authorization (and a forged P-Asserted-Identity) -> 200
    const reg = await runSipp({ scenario: 'auth-uac.xml', remote, service: 'alice', calls: 1, maxTimeMs: 15_000, extraArgs: ['-au', 'alice', '-ap', 'correct horse'] });
    assert.equal(reg.successful, 1, `REGISTER with digest auth\n${sippSummary(reg)}`);
    assert.equal(reg.failed, 0, sippSummary(reg));
    const registers = ae.pbx.of('REGISTER');
    assert.equal(registers.length, 1, 'only the authenticated REGISTER reached the PBX, the unauthenticated one was challenged at the edge');
    const fwd = registers[0]!.text;
    assert.match(fwd, /^CSeq:\s*2 REGISTER/m, 'the retried REGISTER (RFC 3261 22.2: CSeq + 1)');
    assert.deepEqual(headers(fwd, 'Authorization'), [], 'credentials are stripped (forwardCredentials: false)');
    assert.doesNotMatch(fwd, /ceo@bank\.example/, 'the identity the phone made up is not forwarded');
    assert.deepEqual(headers(fwd, 'P-Asserted-Identity'), [`<sip:alice@${REALM}>`], 'identity: assert names the authenticated user');

    // INVITE -> 407 -> ACK -> INVITE with Proxy-Authorization -> 200 -> ACK -> BYE (through the
    // edge's Record-Route, not challenged again)
    const call = await runSipp({
      scenario: 'auth-invite-uac.xml', remote, service: 'bob', calls: 1, maxTimeMs: 15_000,
      extraArgs: ['-set', 'caller', 'alice', '-au', 'alice', '-ap', 'correct horse', '-auth_uri', `bob@${remote}`],
    });
    assert.equal(call.successful, 1, `call with proxy auth\n${sippSummary(call)}`);
    const invites = ae.pbx.of('INVITE', 'bob');
    assert.equal(invites.length, 1, 'only the authenticated INVITE reached the PBX');
    const inv = invites[0]!.text;
    assert.match(inv, /^CSeq:\s*2 INVITE/m);
    assert.deepEqual(headers(inv, 'Proxy-Authorization'), [], 'proxy credentials are stripped');
    assert.doesNotMatch(inv, /ceo@bank\.example/);
    assert.deepEqual(headers(inv, 'P-Asserted-Identity'), [`<sip:alice@${REALM}>`]);
    assert.equal(ae.pbx.of('ACK').length, 1, 'the 2xx ACK went through the edge (the 407 ACK stayed at the edge)');
    assert.equal(ae.pbx.of('BYE').length, 1, 'the in-dialog BYE went through without a challenge');

    let m = await ae.edge.metrics.metrics();
    assert.equal(sample(m, 'sipedge_auth_total', { mode: 'edge', result: 'success' }), 2, 'REGISTER and INVITE authenticated');
    assert.ok((sample(m, 'sipedge_rule_hits_total', { rule: 'auth-clients:sipp' }) ?? 0) >= 2, 'the sipp profile chose the challenges');
    assert.equal(sample(m, 'sipedge_auth_algorithm_total', { algorithm: 'MD5' }), 2);
    assert.equal(sumOf(m, 'sipedge_verdicts_total', { stage: 'auth', reason: 'wrong_credentials' }), 0);

    // a wrong password: the edge challenges again, sipp sees a second 401 where it wants a 200
    const before = ae.pbx.requests.length;
    const bad = await runSipp({ scenario: 'auth-uac.xml', remote, service: 'alice', calls: 1, maxTimeMs: 10_000, extraArgs: ['-au', 'alice', '-ap', 'wrong'] });
    assert.equal(bad.successful, 0, `a wrong password must not register\n${sippSummary(bad)}`);
    assert.equal(bad.failed, 1, sippSummary(bad));
    assert.equal(ae.pbx.requests.length, before, 'the PBX never saw the REGISTER with the wrong password');
    m = await ae.edge.metrics.metrics();
    assert.equal(sample(m, 'sipedge_verdicts_total', { stage: 'auth', action: 'reply', reason: 'wrong_credentials', mode: 'enforce' }), 1);
    for (const r of [reg, call, bad]) fs.rmSync(r.dir, { recursive: true, force: true });
  } finally {
    await ae.close();
  }
});

// ------------------------------------------------------------------------- a NAT office

/** the non-zero verdict, auth and ban counters of an exposition, for assertion messages */
function verdictLines(exposition: string): string {
  return exposition.split('\n').filter((l) => /^sipedge_(verdicts_total|auth_total|bans_added_total)\{/.test(l) && !/ 0$/.test(l)).join('\n');
}

interface Phone {
  readonly user: string;
  readonly password: string;
  readonly callId: string;
  state: 'unauthenticated' | 'authenticating' | 'registered';
  text: string;
  nextSendAt: number;
  interval: number;
  challenges: number;
}

const T1 = 500;
const T2 = 4000;
const OFFICE_DOMAIN = 'example.com';

/**
 * Drives `phones` behind one UDP socket (one NAT address) until every phone registered or
 * `deadlineMs` passed: each sends REGISTER, retransmits it on RFC 3261 17.1.2.2 Timer E (T1
 * doubling up to T2) until an answer, answers a 401 with digest credentials computed in-process
 * (edge/auth/digest.ts, the first challenge = the preferred algorithm) when `answer` is true.
 * Returns the number of phones registered and the statuses seen.
 */
async function runOffice(peer: UdpPeer, edgePort: number, phones: Phone[], o: { answer: boolean; deadlineMs: number }): Promise<{ registered: number; statuses: Map<number, number>; ms: number }> {
  const byCallId = new Map(phones.map((p) => [p.callId, p]));
  const statuses = new Map<number, number>();
  const t0 = Date.now();
  const send = (p: Phone): void => {
    peer.sock.send(Buffer.from(p.text, 'latin1'), edgePort, '127.0.0.1');
    p.nextSendAt = Date.now() + p.interval;
    p.interval = Math.min(p.interval * 2, T2);
  };
  const reg = (p: Phone, cseq: number, extra: string[] = []): string => request(peer, {
    method: 'REGISTER', ruri: `sip:${OFFICE_DOMAIN}`, from: `<sip:${p.user}@${OFFICE_DOMAIN}>`, to: `<sip:${p.user}@${OFFICE_DOMAIN}>`,
    callId: p.callId, cseq, extra,
  });
  const onMessage = (b: Buffer): void => {
    const text = b.toString('latin1');
    const status = Number(/^SIP\/2\.0 (\d{3})/.exec(text)?.[1] ?? 0);
    const p = byCallId.get(header(text, 'Call-ID') ?? '');
    if (status === 0 || p === undefined) return;
    statuses.set(status, (statuses.get(status) ?? 0) + 1);
    if (status === 401 && p.state === 'unauthenticated' && o.answer) {
      p.challenges++;
      const challenge = headers(text, 'WWW-Authenticate')[0] ?? '';
      p.state = 'authenticating';
      p.text = reg(p, 2, [answerChallenge(401, challenge, { method: 'REGISTER', uri: `sip:${OFFICE_DOMAIN}`, user: p.user, password: p.password })]);
      p.interval = T1;
      send(p);
    } else if (status === 401) {
      p.challenges++;
      if (p.state === 'unauthenticated') p.nextSendAt = Infinity; // a scanner: it got its answer
    } else if (status === 200 && p.state === 'authenticating') {
      p.state = 'registered';
    }
  };
  peer.sock.on('message', onMessage);
  try {
    // all at once, as after a power cut: 500 datagrams back to back
    for (const p of phones) {
      p.text = reg(p, 1);
      send(p);
    }
    while (Date.now() - t0 < o.deadlineMs && phones.some((p) => p.state !== 'registered' && p.nextSendAt !== Infinity)) {
      await new Promise((r) => setTimeout(r, 20));
      const now = Date.now();
      for (const p of phones) if (p.state !== 'registered' && p.nextSendAt <= now) send(p);
    }
  } finally {
    peer.sock.off('message', onMessage);
  }
  return { registered: phones.filter((p) => p.state === 'registered').length, statuses, ms: Date.now() - t0 };
}

function office(n: number, tag: string): Phone[] {
  const phones: Phone[] = [];
  for (let i = 0; i < n; i++) {
    phones.push({ user: `${2000 + i}`, password: `pw-${i}-${tag}`, callId: `office-${tag}-${i}-${process.pid}`, state: 'unauthenticated', text: '', nextSendAt: 0, interval: T1, challenges: 0 });
  }
  return phones;
}

/** an edge-mode edge (shipped limits) whose users file holds `phones` (SHA-256 and MD5 HA1s) */
async function officeEdge(phones: readonly Phone[]) {
  return startAuthEdge({
    cfg: { domains: [OFFICE_DOMAIN] },
    auth: (dir) => {
      const users = path.join(dir, 'users.txt');
      writeUsersFile(users, OFFICE_DOMAIN, Object.fromEntries(phones.map((p) => [p.user, p.password])), ['SHA-256', 'MD5']);
      return authConfig({ mode: 'edge', realm: OFFICE_DOMAIN, usersFile: users });
    },
  });
}

/** 500 phones behind 127.0.0.31 register at once; all must get 200 and the address must stay unbanned */
async function officeRegistersUnbanned(ae: Awaited<ReturnType<typeof officeEdge>>, phones: Phone[], nat: UdpPeer, deadlineMs: number): Promise<number> {
  // the users file holds what the phones will answer with (a typo here would fail every phone)
  const db = UsersDb.load(path.join(ae.dir, 'users.txt'));
  assert.ok(db.ok);
  assert.equal(db.db.size, phones.length);
  assert.equal(db.db.ha1('2499', OFFICE_DOMAIN, 'SHA-256'), ha1('SHA-256', '2499', OFFICE_DOMAIN, phones[499]!.password));

  const r = await runOffice(nat, ae.port, phones, { answer: true, deadlineMs });
  assert.equal(r.registered, 500, `all phones registered (statuses seen: ${JSON.stringify([...r.statuses])}, ${r.ms} ms)\n`
    + `ban: ${JSON.stringify(ae.edge.bans.check('127.0.0.31', Date.now()))}\n${verdictLines(await ae.edge.metrics.metrics())}`);
  assert.equal(new Set(ae.pbx.of('REGISTER').map((x) => x.target)).size, 500, 'the PBX saw all 500 AORs');
  assert.equal(r.statuses.get(503) ?? 0, 0, 'no phone was throttled with 503 once the office authenticated');
  // 500 first REGISTERs without credentials (missing_auth) and 500 distinct users (enumeration)
  // spend the budget of 20 many times over: those soft events are forgiven because the address
  // authenticated. Wait out the grace (edge/suspicion.ts: 3 s) before asserting no ban came.
  await new Promise((res) => setTimeout(res, 3_500));
  assert.equal(ae.edge.bans.check('127.0.0.31', Date.now()), null, 'the office address is not banned');
  assert.equal(ae.edge.suspicion.isPromoted('127.0.0.31'), true);
  const m = await ae.edge.metrics.metrics();
  assert.equal(sample(m, 'sipedge_auth_total', { mode: 'edge', result: 'success' }), 500);
  assert.ok((sample(m, 'sipedge_auth_total', { mode: 'edge', result: 'challenge' }) ?? 0) >= 500, 'every phone was challenged first');
  assert.equal(sumOf(m, 'sipedge_verdicts_total', { stage: 'auth', reason: 'wrong_credentials' }), 0);
  assert.equal(sumOf(m, 'sipedge_bans_added_total'), 0);
  return r.ms;
}

test('a NAT office: 500 phones behind one address register at once through edge auth (shipped limits), all get 200 and the address is not banned; the same burst that never answers is banned', { timeout: 90_000 }, async (t) => {
  const phones = office(500, 'ok');
  const ae = await officeEdge(phones);
  const nat = await UdpPeer.bind('127.0.0.31');
  const scanner = await UdpPeer.bind('127.0.0.32');
  try {
    // source.all is 200 per 10 s: the burst alone is 2.5 times that. The answers to the challenges
    // must still get through (they have a budget of their own, edge/policy/limits/ratelimit.ts), or no
    // phone authenticates and the soft ban lands after the grace (seen before that budget existed:
    // 200 challenges, 1,500 source_rate drops, ban suspicion_missing_auth, 0 phones registered)
    const ms = await officeRegistersUnbanned(ae, phones, nat, 20_000);
    t.diagnostic(`500 phones registered in ${ms} ms`);

    // contrast: the same burst from an address that never answers its challenges (what a
    // scanner looks like): banned once the grace has passed
    const t0 = Date.now();
    const s = await runOffice(scanner, ae.port, office(500, 'silent'), { answer: false, deadlineMs: 2_000 });
    assert.equal(s.registered, 0);
    assert.ok((s.statuses.get(401) ?? 0) >= 21, 'the silent burst was challenged (more than the budget of 20)');
    if (Date.now() - t0 < 2_500) assert.equal(ae.edge.bans.check('127.0.0.32', Date.now()), null, 'soft events wait for the grace before banning');
    await until(() => ae.edge.bans.check('127.0.0.32', Date.now()) !== null, 10_000, 'the silent burst banned');
    const ban = ae.edge.bans.check('127.0.0.32', Date.now())!;
    assert.ok(['suspicion_missing_auth', 'suspicion_enumeration', 'suspicion_flood'].includes(ban.reason), ban.reason);
    assert.equal(ae.edge.bans.check('127.0.0.31', Date.now()), null, 'the office is still not banned');
    const m = await ae.edge.metrics.metrics();
    assert.equal(sample(m, 'sipedge_bans_added_total', { reason: ban.reason }), 1);
  } finally {
    nat.close();
    scanner.close();
    await ae.close();
  }
});

// When a SOFT event (missing_auth) is the one that exhausts a source's budget, the ban waits the
// grace (3 s) for the source to authenticate. A password guesser must not get that grace as free
// guessing time (send one unauthenticated request at the right moment, then guess on, and a right
// guess would promote the source and cancel the ban): a hard event during the grace bans at once.
test('a wrong password during the soft-ban grace bans at once (guessing must not continue for the grace)', { timeout: 30_000 }, async () => {
  const ae = await startAuthEdge({
    aorRegister: false,
    auth: (dir) => {
      const users = path.join(dir, 'users.txt');
      upsertUsers(users, REALM, { '101': 'the-right-one' }, ['SHA-256', 'MD5']);
      return authConfig({ mode: 'edge', realm: REALM, usersFile: users, lockout: { failures: 1000, seconds: 900 } });
    },
  });
  const p = await UdpPeer.bind('127.0.0.33');
  try {
    const ruri = 'sip:127.0.0.1';
    let cseq = 1;
    const reg = (extra: string[] = []): string => request(p, { method: 'REGISTER', ruri, from: '<sip:101@127.0.0.1>', to: '<sip:101@127.0.0.1>', callId: 'grace-guesser', cseq: cseq++, extra });
    await p.send(reg(), ae.port); // missing_auth: 1 of 20
    let last = await p.waitFirstLine('SIP/2.0 401');
    const guess = async (password: string): Promise<string> => {
      const ch = header(last.text, 'WWW-Authenticate') ?? '';
      await p.send(reg([answerChallenge(401, ch, { method: 'REGISTER', uri: ruri, user: '101', password })]), ae.port);
      last = await p.wait((x) => x.text.startsWith('SIP/2.0'), 2000, 'an answer');
      return last.text.split('\r\n')[0]!;
    };
    for (let i = 0; i < 19; i++) assert.match(await guess(`wrong-${i}`), /^SIP\/2\.0 401/); // 20 of 20
    await p.send(reg(), ae.port); // missing_auth (soft) exhausts the budget: the grace starts
    last = await p.waitFirstLine('SIP/2.0 401');
    // within the grace: a wrong guess (a hard event) bans now ...
    const t0 = Date.now();
    assert.match(await guess('wrong-during-grace'), /^SIP\/2\.0 401/);
    await until(() => ae.edge.bans.check('127.0.0.33', Date.now()) !== null, 1_000, 'a ban right after a wrong password');
    assert.ok(Date.now() - t0 < 2_500, 'banned before the soft grace would have ended');
    assert.equal(ae.edge.bans.check('127.0.0.33', Date.now())!.reason, 'suspicion_auth_failure');
    // ... and the right password after it goes nowhere: dropped at the gate, never at the PBX
    const ch = header(last.text, 'WWW-Authenticate') ?? '';
    await p.send(reg([answerChallenge(401, ch, { method: 'REGISTER', uri: ruri, user: '101', password: 'the-right-one' })]), ae.port);
    assert.ok(await p.silent((x) => x.text.startsWith('SIP/2.0'), 500), 'no answer to a banned source');
    await new Promise((res) => setTimeout(res, 3_200)); // past the grace: no late promotion either
    assert.equal(ae.edge.suspicion.isPromoted('127.0.0.33'), false);
    assert.deepEqual(ae.pbx.of('REGISTER'), [], 'the PBX never saw a REGISTER');
  } finally {
    p.close();
    await ae.close();
  }
});
