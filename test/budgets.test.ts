// Per-user budgets are spent only by established identities (issue 11, defect 3), through the real
// edge (startEdge, production wiring, in-process) with sipp as the user's phone:
//
// - edge auth mode: 1,000 unauthenticated INVITEs "From: 2000" and REGISTERs for AOR 2000 from
//   200 other addresses (UDP sockets bound to 127.1.0.1 .. 127.1.0.200) are challenged and spend
//   only their senders' budgets; then 2000's phone (sipp, digest auth) registers and calls. Before,
//   the spray used up 2000's budgets (userInvite, aorRegister) and the phone was refused. The other
//   direction: 2000 authenticated from a second device going over its own budget is still refused
//   (503 user_invite_rate from the userlimit stage).
// - pbx mode: the PBX's acceptance spends the budget: the same spray leaves it whole, the phone
//   calls, and once the PBX has accepted the budget's worth of calls the edge refuses the next.
// Under CI=true a missing sipp is a failure, never a skip.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { authConfig, startAuthEdge, upsertUsers, type AuthEdge } from './helpers/auth-edge';
import { sample, sumOf } from './helpers/prom';
import { killAllSipp, runSipp, sippAvailable, sippSummary, type SippResult } from './helpers/sipp';
import { UdpPeer, header, request, uniq } from './helpers/udp-peer';

const inCi = process.env.CI === 'true';
const skip = !sippAvailable() && !inCi ? 'sipp not installed (Debian package sip-tester; CI=true makes this a failure)' : false;
process.on('exit', killAllSipp);

const PASSWORD = 'the owner knows this one';
/** userInvite for these tests: small, so that going over it takes a few calls */
const USER_INVITES = 3;

/**
 * 200 sources, 5 requests each (3 INVITEs from user 2000, 2 REGISTERs for AOR 2000), none with
 * credentials; each source waits for its answers (bounded). Returns the statuses seen.
 */
async function spray(edgePort: number): Promise<{ statuses: Map<number, number>; unanswered: number }> {
  const statuses = new Map<number, number>();
  let unanswered = 0;
  const host = '127.0.0.1';
  const one = async (k: number): Promise<void> => {
    const p = await UdpPeer.bind(`127.1.0.${k}`);
    try {
      const msgs = [
        ...[0, 1, 2].map(() => request(p, { method: 'INVITE', ruri: `sip:bob@${host}:${edgePort}`, from: `<sip:2000@${host}>`, to: `<sip:bob@${host}>`, callId: uniq('spray') })),
        ...[0, 1].map(() => request(p, { method: 'REGISTER', ruri: `sip:${host}:${edgePort}`, from: `<sip:2000@${host}>`, to: `<sip:2000@${host}>`, callId: uniq('spray'), extra: ['Expires: 3600'] })),
      ];
      for (const m of msgs) {
        await p.send(m, edgePort);
        const id = header(m, 'Call-ID');
        try {
          const r = await p.wait((x) => /^SIP\/2\.0 [1-6]\d\d/.test(x.text) && !x.text.startsWith('SIP/2.0 100') && header(x.text, 'Call-ID') === id, 1500, 'an answer');
          const st = Number(r.text.slice(8, 11));
          statuses.set(st, (statuses.get(st) ?? 0) + 1);
        } catch {
          unanswered++;
        }
      }
    } finally {
      p.close();
    }
  };
  for (let k = 1; k <= 200; k += 20) await Promise.all(Array.from({ length: 20 }, (_, i) => one(k + i)));
  return { statuses, unanswered };
}

function cleanup(...runs: SippResult[]): void {
  for (const r of runs) fs.rmSync(r.dir, { recursive: true, force: true });
}

async function budgetsEdge(mode: 'edge' | 'pbx'): Promise<AuthEdge> {
  return startAuthEdge({
    limits: { userInvite: USER_INVITES },
    ...(mode === 'pbx' ? { registrar: { users: { 2000: PASSWORD }, unknown: 'challenge' } } : {}),
    auth: (dir) => {
      if (mode === 'pbx') return authConfig({ mode: 'pbx', realm: 'asterisk' });
      const users = path.join(dir, 'users.txt');
      upsertUsers(users, 'sip-edge.test', { 2000: PASSWORD }, ['SHA-256', 'MD5']);
      // sipp 3.6 answers the first challenge only, and only MD5
      return authConfig({ mode: 'edge', realm: 'sip-edge.test', usersFile: users, algorithms: ['MD5', 'SHA-256'] });
    },
  });
}

const phone = (remote: string, localIp = '127.0.0.1') => ({
  register: () => runSipp({ scenario: 'auth-uac.xml', remote, localIp, service: '2000', calls: 1, maxTimeMs: 15_000, extraArgs: ['-au', '2000', '-ap', PASSWORD] }),
  call: (calls: number) => runSipp({
    scenario: 'auth-invite-uac.xml', remote, localIp, service: 'bob', calls, limit: 1, maxTimeMs: 30_000,
    extraArgs: ['-set', 'caller', '2000', '-au', '2000', '-ap', PASSWORD, '-auth_uri', `bob@${remote}`],
  }),
});

test('edge mode: 1,000 unauthenticated requests in user 2000\'s name from 200 addresses spend none of its budget: its phone registers and calls; 2000 itself over its budget is refused', { skip, timeout: 120_000 }, async () => {
  assert.ok(sippAvailable(), 'sipp is not installed (Debian package sip-tester)');
  const ae = await budgetsEdge('edge');
  try {
    const remote = `127.0.0.1:${ae.port}`;
    const s = await spray(ae.port);

    // the owner's phone afterwards: REGISTER through a 401, a call through a 407
    const a = phone(remote);
    const reg = await a.register();
    assert.equal(reg.successful, 1, `2000's phone registers after the spray\n${sippSummary(reg)}`);
    const call = await a.call(1);
    assert.equal(call.successful, 1, `2000's phone calls after the spray\n${sippSummary(call)}`);
    assert.equal(ae.pbx.of('INVITE', 'bob').length, 1, 'only the authenticated INVITE reached the PBX');

    // the spray was challenged, every request of it, and dropped nowhere: it spent per source
    assert.equal(s.unanswered, 0, `statuses ${JSON.stringify([...s.statuses])}`);
    assert.equal(s.statuses.get(407), 600);
    assert.equal(s.statuses.get(401), 400);
    let m = await ae.edge.metrics.metrics();
    assert.equal(sumOf(m, 'sipedge_verdicts_total', { stage: 'ratelimit' }), 0);
    assert.equal(sumOf(m, 'sipedge_verdicts_total', { stage: 'userlimit' }), 0);

    // the other direction: 2000 on a second device (another address, so that its own per-source
    // count stays within bounds) goes over its budget of USER_INVITES new calls per minute: one
    // call is already counted, two more fit, the third is refused by the user's budget
    const b = phone(remote, '127.0.0.3');
    const over = await b.call(USER_INVITES);
    assert.equal(over.successful, USER_INVITES - 1, sippSummary(over));
    assert.equal(over.failed, 1, sippSummary(over));
    m = await ae.edge.metrics.metrics();
    assert.equal(sample(m, 'sipedge_verdicts_total', { stage: 'userlimit', action: 'reply', reason: 'user_invite_rate', mode: 'enforce' }), 1, 'refused with 503 by the per-user budget');
    assert.equal(sumOf(m, 'sipedge_verdicts_total', { stage: 'ratelimit' }), 0, 'not by a per-source limit');
    assert.equal(ae.pbx.of('INVITE', 'bob').length, USER_INVITES, 'the refused call never reached the PBX');
    cleanup(reg, call, over);
  } finally {
    await ae.close();
  }
});

test('pbx mode: the PBX\'s acceptance spends the budget: a spray in 2000\'s name leaves it whole; once the PBX has accepted the budget\'s worth of calls the edge refuses the next', { skip, timeout: 120_000 }, async () => {
  assert.ok(sippAvailable(), 'sipp is not installed (Debian package sip-tester)');
  const ae = await budgetsEdge('pbx');
  try {
    const remote = `127.0.0.1:${ae.port}`;
    const s = await spray(ae.port);
    assert.equal(s.unanswered, 0, `statuses ${JSON.stringify([...s.statuses])}`);
    const a = phone(remote);
    const reg = await a.register();
    assert.equal(reg.successful, 1, `2000's phone registers after the spray\n${sippSummary(reg)}`);
    // calls accepted by the PBX (each a 2xx to an INVITE with credentials) spend the budget:
    // two from the desk phone, then the second device (registered: the PBX accepted it, so it
    // is promoted) makes the third, and its next new call is refused at the edge with 503
    const calls = await a.call(USER_INVITES - 1);
    assert.equal(calls.successful, USER_INVITES - 1, sippSummary(calls));
    const b = phone(remote, '127.0.0.3');
    const regB = await b.register();
    assert.equal(regB.successful, 1, sippSummary(regB));
    const over = await b.call(2);
    assert.equal(over.successful, 1, sippSummary(over));
    assert.equal(over.failed, 1, sippSummary(over));
    const m = await ae.edge.metrics.metrics();
    assert.equal(sample(m, 'sipedge_verdicts_total', { stage: 'userlimit', action: 'reply', reason: 'user_invite_rate', mode: 'enforce' }), 1, 'refused by the per-user budget');
    assert.equal(sumOf(m, 'sipedge_verdicts_total', { stage: 'ratelimit' }), 0, 'not by a per-source limit');
    assert.equal(ae.pbx.accepted.filter((u) => u === '2000').length, 2 + USER_INVITES, 'two REGISTERs and the budget\'s worth of calls accepted, the refused call never reached the PBX');
    cleanup(reg, calls, regB, over);
  } finally {
    await ae.close();
  }
});
