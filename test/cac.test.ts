// Call admission control, destination classes and fraud signals (issue 16): the CAC stage
// (edge/policy/cac/stage.ts) over real parsed messages, its dialog leases in memory and on the
// real Redis (two edges sharing counts; a dead edge's leases expire), and the fraud pattern of a
// cracked account (parallel premium calls) stopped at the threshold while a busy legitimate user
// is never stopped.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Redis from 'ioredis';
import { loadYamlText } from '../edge/config/yaml';
import { parseMessage } from '../edge/sip/parser';
import type { SipRequest, SipResponse } from '../edge/sip/types';
import type { MessageContext, Verdict } from '../edge/verdict';
import { CacRulesSchema, FraudRulesSchema, type CacRules, type FraudRules } from '../edge/policy/cac/rules';
import { compileClassifier } from '../edge/policy/cac/destinations';
import { createCacStage, CAC_REASONS } from '../edge/policy/cac/stage';
import { MemoryLeases, RedisLeases, type LeaseBackend } from '../edge/dialogs/leases';
import { MemoryLocks, RedisLocks, type LockStore } from '../edge/policy/cac/fraud';
import { SHARED_REDIS_URL, randomPrefix, redisRequired, sharedRedisStatus } from './helpers/redis-server';

function cacRules(yaml: string): CacRules {
  const y = loadYamlText(yaml, 'cac.yaml', CacRulesSchema);
  assert.ok(y.ok, y.ok ? '' : y.errors.join('\n'));
  return y.value;
}
function fraudRules(yaml: string): FraudRules {
  const y = loadYamlText(yaml, 'fraud.yaml', FraudRulesSchema);
  assert.ok(y.ok, y.ok ? '' : y.errors.join('\n'));
  return y.value;
}

let n = 0;
function invite(user: string, dest: string, o: { toTag?: string; callId?: string } = {}): SipRequest {
  const i = ++n;
  const text = [
    `INVITE sip:${dest}@pbx.example.com SIP/2.0`,
    `Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-cac-${i}`, 'Max-Forwards: 70',
    `From: <sip:${user}@pbx.example.com>;tag=f${o.callId ?? `cac-${i}`}`, `To: <sip:${dest}@pbx.example.com>${o.toTag ? `;tag=${o.toTag}` : ''}`,
    `Call-ID: ${o.callId ?? `cac-${i}`}`, 'CSeq: 1 INVITE', 'Content-Length: 0', '', '',
  ].join('\r\n');
  const r = parseMessage(Buffer.from(text, 'latin1'), { framing: 'datagram' });
  assert.ok(r.ok);
  return r.msg as SipRequest;
}
function bye(req: SipRequest, fromCallee = false): SipRequest {
  const cid = req.raw.toString('latin1').match(/Call-ID: (\S+)/)![1]!;
  const ftag = `f${cid}`;
  const text = [
    'BYE sip:x@192.0.2.1 SIP/2.0', `Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-bye-${++n}`, 'Max-Forwards: 70',
    fromCallee ? `From: <sip:b@pbx.example.com>;tag=callee` : `From: <sip:a@pbx.example.com>;tag=${ftag}`,
    fromCallee ? `To: <sip:a@pbx.example.com>;tag=${ftag}` : `To: <sip:b@pbx.example.com>;tag=callee`,
    `Call-ID: ${cid}`, 'CSeq: 2 BYE', 'Content-Length: 0', '', '',
  ].join('\r\n');
  const r = parseMessage(Buffer.from(text, 'latin1'), { framing: 'datagram' });
  assert.ok(r.ok);
  return r.msg as SipRequest;
}
function answer(req: SipRequest, status: number): SipResponse {
  const cid = req.raw.toString('latin1').match(/Call-ID: (\S+)/)![1]!;
  const text = [
    `SIP/2.0 ${status} X`, 'Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-x',
    `From: <sip:a@pbx.example.com>;tag=f${cid}`, 'To: <sip:b@pbx.example.com>;tag=callee',
    `Call-ID: ${cid}`, 'CSeq: 1 INVITE', 'Content-Length: 0', '', '',
  ].join('\r\n');
  const r = parseMessage(Buffer.from(text, 'latin1'), { framing: 'datagram' });
  assert.ok(r.ok);
  return r.msg as SipResponse;
}

function setup(cac: string, fraud = 'classes: {}\n', o: { backend?: LeaseBackend; locks?: LockStore; now?: () => number } = {}) {
  const rules = { cac: cacRules(cac), fraud: fraudRules(fraud) };
  const refused: string[] = [];
  const signals: string[] = [];
  const stage = createCacStage({
    rules: () => rules, backend: o.backend ?? new MemoryLeases(), locks: o.locks ?? new MemoryLocks(), now: o.now,
    events: { refused: (r) => refused.push(r), fraud: (s, l) => signals.push(`${s}:${l}`) },
  });
  const ctx = (msg: SipRequest | SipResponse, side: 'outside' | 'inside' = 'outside', identity?: string): MessageContext =>
    ({ msg, source: { transport: 'udp', address: side === 'outside' ? '192.0.2.10' : '10.0.0.2', port: 5060 }, side, trust: side === 'inside' ? 'inside' : 'untrusted', receivedAt: 0, ...(identity ? { identity } : {}) });
  const call = async (user: string, dest: string, extra: { toTag?: string } = {}): Promise<{ v: Verdict; req: SipRequest }> => {
    const req = invite(user, dest, extra);
    return { v: await stage.check(ctx(req, 'outside', user)), req };
  };
  return { stage, ctx, call, refused, signals };
}
const code = (v: Verdict): string => (v.action === 'reply' ? `${v.status} ${v.reason}` : v.action);

test('closed reason list; destination classes from the dial plan (E.164 normalisation, emergency as dialled)', () => {
  const { stage } = setup('');
  assert.deepEqual([...stage.reasons], [...CAC_REASONS]);
  void stage.close();
  const c = compileClassifier(cacRules('dialPlan: {countryCode: "44", nationalPrefix: "0", internationalPrefix: "00", internalMaxDigits: 4}\nclasses: {premium: ["+449", "+4487"]}\n'));
  const t = (u: string): string => { const d = c.classify(u); return `${d.cls} ${d.number}`; };
  assert.equal(t('999'), 'emergency 999');
  assert.equal(t('112'), 'emergency 112');
  assert.equal(t('2001'), 'internal 2001');
  assert.equal(t('09011234567'), 'premium +449011234567');
  assert.equal(t('+44 87 1234 5678'), 'premium +448712345678');
  assert.equal(t('02071234567'), 'national +442071234567');
  assert.equal(t('0049301234567'), 'international +49301234567');
  assert.equal(t('%2B33123456789'), 'international +33123456789');
  assert.equal(t('alice'), 'other ');
});

test('per-user concurrency: the 3rd parallel call is refused with the configured answer; a BYE (either side) or a final error frees a slot; in-dialog requests never refused', async () => {
  const { stage, ctx, call, refused } = setup('limits: {perUser: 2}\nanswer: {status: 486}\n');
  try {
    const a = await call('alice', '2001'); const b = await call('alice', '2002');
    assert.equal(code(a.v), 'continue'); assert.equal(code(b.v), 'continue');
    assert.equal(code((await call('alice', '2003')).v), '486 cac_user');
    assert.equal(code((await call('bob', '2003')).v), 'continue', 'another user is not affected');
    // re-INVITE inside alice's dialog: never refused by CAC
    assert.equal(code((await call('alice', '2001', { toTag: 'callee' })).v), 'continue');
    stage.check(ctx(answer(a.req, 200), 'inside'));
    assert.equal(stage.tracker.get([...stage.tracker.entries()][0]!.id)?.state, 'confirmed');
    stage.check(ctx(bye(a.req, true), 'inside')); // the callee hangs up
    assert.equal(code((await call('alice', '2004')).v), 'continue');
    assert.equal(code((await call('alice', '2005')).v), '486 cac_user');
    stage.check(ctx(answer(b.req, 486), 'inside')); // b was never answered: a final error ends it
    assert.equal(code((await call('alice', '2006')).v), 'continue');
    assert.deepEqual(refused, ['cac_user', 'cac_user']);
  } finally { await stage.close(); }
});

test('503 + Retry-After; total limit; max duration ends a dialog whose BYE never came', async () => {
  let now = 1_000_000;
  const { stage, call } = setup('limits: {total: 1}\nanswer: {status: 503, retryAfter: 17}\nmaxDurationSeconds: 60\n', undefined, { now: () => now });
  try {
    assert.equal(code((await call('a', '2001')).v), 'continue');
    const v = (await call('b', '2002')).v;
    assert.equal(code(v), '503 cac_total');
    assert.deepEqual(v.action === 'reply' ? v.headers : [], [['Retry-After', '17']]);
    now += 61_000;
    await stage.tracker.tick();
    assert.equal(code((await call('b', '2002')).v), 'continue');
  } finally { await stage.close(); }
});

test('group policy: premium not allowed for the default group (403 class_forbidden), allowed for a group naming the user; emergency always passes', async () => {
  const { stage, call } = setup([
    'dialPlan: {countryCode: "44", nationalPrefix: "0", internationalPrefix: "00"}', 'classes: {premium: ["+449"]}',
    'limits: {perUser: 0}',
    'groups:', '  default: {allow: [internal, national]}', '  sales: {allow: [internal, national, international, premium], users: [carol]}', '',
  ].join('\n'));
  try {
    assert.equal(code((await call('alice', '09011234567')).v), '403 class_forbidden');
    assert.equal(code((await call('alice', '0049301234567')).v), '403 class_forbidden');
    // perUser 0 refuses every ordinary call, never an emergency call
    assert.equal(code((await call('alice', '999')).v), 'continue');
    assert.equal(code((await call('carol', '09011234567')).v), '503 cac_user');
  } finally { await stage.close(); }
});

const FRAUD_CAC = 'dialPlan: {countryCode: "44", nationalPrefix: "0", internationalPrefix: "00"}\nclasses: {premium: ["+449"]}\ngroups: {default: {allow: [internal, national, international, premium]}}\n';
const FRAUD = 'classes:\n  premium: {concurrent: {warning: 2, critical: 4}, callsPerMinute: {warning: 20, critical: 40}}\n  national: {concurrent: {warning: 50, critical: 100}, callsPerMinute: {warning: 100, critical: 200}}\n';

test('fraud pattern: parallel premium calls from one account are stopped at the critical threshold and the lock holds (until unlocked) for that class only; a busy legitimate user is never stopped', async () => {
  const { stage, call, signals } = setup(FRAUD_CAC, FRAUD);
  try {
    const got: string[] = [];
    for (let i = 0; i < 10; i++) got.push(code((await call('mallory', `0909000${100 + i}`)).v));
    assert.deepEqual(got, ['continue', 'continue', 'continue', 'continue', '403 fraud_critical', ...Array(5).fill('403 fraud_locked')]);
    assert.deepEqual(signals, ['concurrent:warning', 'concurrent:warning', 'concurrent:critical']);
    assert.equal(code((await call('mallory', '02071234567')).v), 'continue', 'locked for premium only');
    assert.equal(code((await call('mallory', '999')).v), 'continue', 'emergency never blocked');
    assert.deepEqual((await stage.locks.list()).map((l) => `${l.user} ${l.cls} ${l.signal}`), ['mallory premium concurrent']);
    // a busy user: 60 ordinary calls, at most 10 up at a time, never stopped
    const { stage: s2, call: call2, ctx } = setup(FRAUD_CAC, FRAUD);
    try {
      const up: SipRequest[] = [];
      for (let i = 0; i < 60; i++) {
        const r = await call2('alice', `0207${1000000 + i}`);
        assert.equal(code(r.v), 'continue', `call ${i}`);
        up.push(r.req);
        if (up.length >= 10) s2.check(ctx(bye(up.shift()!), 'outside'));
      }
    } finally { await s2.close(); }
    assert.equal(await stage.locks.unlock('mallory', 'premium'), 1);
  } finally { await stage.close(); }
});

async function redisOrSkip(t: import('node:test').TestContext): Promise<boolean> {
  const st = await sharedRedisStatus();
  if (st.up) return true;
  if (redisRequired()) assert.fail(st.reason);
  t.skip(st.reason);
  return false;
}

test('two edges share the counts through Redis; a dead edge\'s leases expire (no phantom calls); a fraud lock set by one holds at the other', async (t) => {
  if (!(await redisOrSkip(t))) return;
  const prefix = randomPrefix();
  const ra = new Redis(SHARED_REDIS_URL); const rb = new Redis(SHARED_REDIS_URL);
  let now = Date.now();
  const clock = (): number => now;
  const yaml = 'limits: {perUser: 3}\nleaseTtlSeconds: 10\n';
  const A = setup(yaml, FRAUD, { backend: new RedisLeases(ra, prefix), locks: new RedisLocks(ra, prefix), now: clock });
  const B = setup(yaml, FRAUD, { backend: new RedisLeases(rb, prefix), locks: new RedisLocks(rb, prefix), now: clock });
  try {
    assert.equal(code((await A.call('dave', '2001')).v), 'continue');
    assert.equal(code((await A.call('dave', '2002')).v), 'continue');
    assert.equal(code((await B.call('dave', '2003')).v), 'continue');
    assert.equal(code((await B.call('dave', '2004')).v), '503 cac_user', 'B sees A\'s two calls');
    // A dies: no BYE, no release, no refresh. B keeps refreshing its own call.
    await A.stage.tracker.stop(false);
    now += 6_000; await B.stage.tracker.tick();
    assert.equal(code((await B.call('dave', '2005')).v), '503 cac_user', 'leases still valid');
    now += 6_000; await B.stage.tracker.tick();
    assert.equal(code((await B.call('dave', '2006')).v), 'continue', 'A\'s leases expired');
    assert.equal(code((await B.call('dave', '2007')).v), 'continue');
    assert.equal(code((await B.call('dave', '2008')).v), '503 cac_user', 'B\'s own refreshed calls still count');
    await A.stage.locks.lock({ user: 'eve', cls: 'premium', signal: 'concurrent', since: now });
    assert.equal(await B.stage.locks.isLocked('eve', 'premium'), true);
    assert.equal(await B.stage.locks.unlock('eve'), 1);
    assert.equal(await A.stage.locks.isLocked('eve', 'premium'), false);
  } finally {
    await A.stage.close(); await B.stage.close();
    const keys = await ra.keys(`${prefix}*`);
    if (keys.length) for (const k of keys) await ra.del(k);
    ra.disconnect(); rb.disconnect();
  }
});
