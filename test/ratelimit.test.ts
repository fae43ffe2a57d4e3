// limits.yaml compilation and the ratelimit stage: each limit, IPv6 aggregation, promotion,
// Retry-After jitter, onStoreDown closed, and what passes untouched (inside, responses).
// Budgets live in the real in-memory SharedStore (edge/store/memory.ts); a small fake store
// stands in where the store must answer "degraded" (Redis down).
import { test } from 'node:test';
import { snapshotWith } from './helpers/snapshot';
import assert from 'node:assert/strict';
import { answerable } from '../edge/path/respond';
import { loadYamlText } from '../edge/config/yaml';
import { parseMessage } from '../edge/sip/parser';
import type { SipMessage } from '../edge/sip/types';
import { createMemoryStore } from '../edge/store/memory';
import type { Ban, ConsumeResult, Limiter, LimiterSpec, SharedStore } from '../edge/store/types';
import { createRateLimitStage, jitteredRetryAfter, RATELIMIT_REASONS } from '../edge/policy/limits/ratelimit';
import { Suspicion } from '../edge/suspicion';
import type { MessageContext, Verdict } from '../edge/verdict';
import { compileLimits, defaultLimits, LimitsFileSchema, normalizeDialString } from '../edge/policy/limits/compile';
import type { RulesSnapshot } from '../edge/policy/snapshot';
import type { CompiledLimits } from '../edge/policy/limits/compile';

// ---- helpers

function compileText(yaml: string): { limits?: CompiledLimits; errors: readonly string[] } {
  const y = loadYamlText(yaml, 'limits.yaml', LimitsFileSchema);
  if (!y.ok) return { errors: y.errors };
  const r = compileLimits(y.value, y.at);
  return { limits: r.limits, errors: r.errors };
}

function limitsOf(yaml: string): CompiledLimits {
  const r = compileText(yaml);
  assert.deepEqual(r.errors, []);
  assert.ok(r.limits);
  return r.limits;
}

function snapshotOf(limits: CompiledLimits): RulesSnapshot {
  return snapshotWith({ stages: [{ name: 'sanity', mode: 'enforce' }, { name: 'ratelimit', mode: 'enforce' }], trustedSkip: new Set(['ratelimit']), limits });
}

let seq = 0;
function msg(lines: readonly string[]): SipMessage {
  const r = parseMessage(Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), { framing: 'datagram' });
  assert.ok(r.ok, 'test message must parse');
  return r.msg;
}

function req(method: string, o: { ruri?: string; to?: string; from?: string } = {}): SipMessage {
  const n = ++seq;
  return msg([
    `${method} ${o.ruri ?? 'sip:pbx.example.com'} SIP/2.0`,
    `Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-rl-${n}`,
    'Max-Forwards: 70',
    `To: ${o.to ?? '<sip:100@pbx.example.com>'}`,
    `From: ${o.from ?? '<sip:100@pbx.example.com>'};tag=f${n}`,
    `Call-ID: rl-${n}`,
    `CSeq: 1 ${method}`,
    'Content-Length: 0',
  ]);
}

const register = (ext: string | number): SipMessage => req('REGISTER', { to: `<sip:${ext}@pbx.example.com>`, from: `<sip:${ext}@pbx.example.com>` });
const invite = (ruri: string, from = '<sip:100@pbx.example.com>', to?: string): SipMessage => req('INVITE', { ruri, from, to: to ?? `<${ruri}>` });

function ctx(address: string, m: SipMessage, side: 'outside' | 'inside' = 'outside'): MessageContext {
  return { msg: m, source: { transport: 'udp', address, port: 5060 }, side, trust: side === 'inside' ? 'inside' : 'untrusted', receivedAt: 0 };
}

function setup(yaml: string, store: SharedStore = createMemoryStore({ sweepIntervalMs: 0 }), random?: () => number) {
  const snap = snapshotOf(limitsOf(yaml));
  const suspicion = new Suspicion({ store, rules: () => snap });
  const stage = createRateLimitStage({ rules: () => snap, store, suspicion, ...(random ? { random } : {}) });
  const run = async (address: string, m: SipMessage, side: 'outside' | 'inside' = 'outside'): Promise<Verdict> => stage.check(ctx(address, m, side));
  return { snap, suspicion, stage, run, store };
}

/** sends `n` messages made by `make`, returns how many continued and the first refusal */
async function burst(run: (a: string, m: SipMessage) => Promise<Verdict>, address: string, n: number, make: (i: number) => SipMessage): Promise<{ passed: number; refusals: Verdict[] }> {
  let passed = 0;
  const refusals: Verdict[] = [];
  for (let i = 0; i < n; i++) {
    const v = await run(address, make(i));
    if (v.action === 'continue') passed++;
    else refusals.push(v);
  }
  return { passed, refusals };
}

function retryAfter(v: Verdict): number {
  assert.equal(v.action, 'reply');
  const h = v.action === 'reply' ? v.headers?.find(([k]) => k === 'Retry-After') : undefined;
  assert.ok(h, 'Retry-After header');
  assert.match(h[1], /^\d+$/);
  return Number(h[1]);
}

// ---- compilation

test('defaults: 200/10 s per source, suspicion 20/600 s, AOR 20/60 s, user INVITE 30/60 s, /64, bans 600 x2 to 86400, promotion x10 for 3600 s', () => {
  const l = limitsOf('');
  assert.deepEqual(JSON.parse(JSON.stringify(l)), JSON.parse(JSON.stringify(defaultLimits())));
  assert.equal(l.ipv6Prefix, 64);
  assert.deepEqual(l.sourceAll, { name: 'source_all', points: 200, durationSec: 10, onStoreDown: 'open' });
  assert.deepEqual(l.sourceAllPromoted, { name: 'source_all_promoted', points: 2000, durationSec: 10, onStoreDown: 'open' });
  assert.deepEqual(l.suspicion, { name: 'source_suspicion', points: 20, durationSec: 600, onStoreDown: 'open' });
  assert.deepEqual(l.aorRegister, { name: 'aor_register', points: 20, durationSec: 60, onStoreDown: 'open' });
  assert.deepEqual(l.userInvite, { name: 'user_invite', points: 30, durationSec: 60, onStoreDown: 'open' });
  // the unauthenticated attempts: the same numbers, per (source, user), in limiters of their own
  assert.deepEqual(l.aorRegisterSource, { name: 'aor_register_source', points: 20, durationSec: 60, onStoreDown: 'open' });
  assert.deepEqual(l.userInviteSource, { name: 'user_invite_source', points: 30, durationSec: 60, onStoreDown: 'open' });
  assert.deepEqual(l.prefixes, []);
  assert.deepEqual(l.bans, { seconds: 600, factor: 2, maxSeconds: 86400, memorySeconds: 86400 });
  assert.deepEqual(l.promotion, { factor: 10, seconds: 3600, maxEntries: 100000 });
  assert.deepEqual(l.retryAfter, { base: 30, jitterMin: 0, jitterMax: 30 });
  assert.deepEqual(l.weights, { malformed: 1, scanner: 5, unmatched_reply: 1, auth_failure: 1, missing_auth: 1, unknown_user: 1, enumeration: 1, flood: 1 });
  assert.ok(Object.isFrozen(l));
});

test('semantic errors carry file:line:column: jitter range, ban cap, duplicate and unusable prefixes; unknown keys suggest', () => {
  assert.deepEqual(compileText('overLimit: { retryAfter: 5, jitterMin: 10, jitterMax: 2 }\n').errors, [
    'limits.yaml:1:40: jitterMin (10) is larger than jitterMax (2)',
  ]);
  assert.deepEqual(compileText('bans:\n  seconds: 600\n  maxSeconds: 60\n').errors, [
    'limits.yaml:3:15: maxSeconds (60) is shorter than the first ban (seconds: 600)',
  ]);
  assert.deepEqual(compileText('prefixes:\n  - { prefix: "+882" }\n  - { prefix: "+88-2" }\n  - { prefix: "00;x" }\n').errors, [
    'limits.yaml:3:15: prefix "+882" is listed twice',
    'limits.yaml:4:15: prefix "00;x" is not a dial prefix (digits, "+", "*", "#"; no ";", "%" or "@")',
  ]);
  assert.deepEqual(compileText('source:\n  all: { limit: 10, secnds: 5 }\n').errors, [
    'limits.yaml:2:21: unknown key "secnds" in source.all (did you mean "seconds"?)',
  ]);
  assert.deepEqual(compileText('source:\n  all: { limit: 0 }\n').errors, [
    'limits.yaml:2:17: source.all.limit: expected an integer from 1 to 10000000 (got 0)',
  ]);
});

test('dial strings are normalized (escapes, visual separators, user parameters) and the longest prefix wins', () => {
  assert.equal(normalizeDialString('%2B882-16 (123).45'), '+8821612345');
  assert.equal(normalizeDialString('00882;phone-context=example.com'), '00882');
  assert.equal(normalizeDialString('%zz1'), '%zz1');
  const l = limitsOf('prefixes:\n  - { prefix: "+88" }\n  - { prefix: "+882", per: source }\n  - { prefix: "00" }\n');
  assert.equal(l.matchPrefix('+88216')?.rule, 'limits:prefix:+882');
  assert.equal(l.matchPrefix('+88116')?.rule, 'limits:prefix:+88');
  assert.equal(l.matchPrefix('0049'), l.prefixes[2]);
  assert.equal(l.matchPrefix('4930'), null);
  assert.equal(l.matchPrefix(''), null);
  assert.equal(l.prefixes[1]?.per, 'source');
  assert.equal(l.prefixes[0]?.per, 'global');
});

// ---- the stage

test('stage identity: name ratelimit, skippable for trusted sources, closed reason list', () => {
  const { stage } = setup('');
  assert.equal(stage.name, 'ratelimit');
  assert.equal(stage.skippableForTrusted, true);
  assert.deepEqual([...stage.reasons], ['source_rate', 'aor_register_source_rate', 'user_invite_source_rate', 'prefix_rate', 'store_down_closed']);
  assert.equal(stage.reasons, RATELIMIT_REASONS);
});

test('source.all: an unknown source over its budget is dropped silently; other sources keep theirs', async () => {
  const { run } = setup('source: { all: { limit: 5, seconds: 60 } }\n');
  const a = await burst(run, '198.51.100.7', 8, () => req('OPTIONS'));
  assert.equal(a.passed, 5);
  assert.equal(a.refusals.length, 3);
  for (const v of a.refusals) assert.deepEqual(v, { action: 'drop', reason: 'source_rate', rule: 'limits:source_all' });
  const b = await burst(run, '198.51.100.8', 5, () => req('OPTIONS'));
  assert.equal(b.passed, 5);
  // IPv4-mapped spelling of the same source is the same budget
  assert.equal((await run('::ffff:198.51.100.7', req('OPTIONS'))).action, 'drop');
});

test('IPv6 sources share one budget per /64 (never per address); another /64 has its own; ipv6Prefix is configurable', async () => {
  const { run } = setup('source: { all: { limit: 4, seconds: 60 } }\n');
  const a = await burst(run, '2001:db8:1:2::1', 2, () => req('OPTIONS'));
  const b = await burst(run, '2001:db8:1:2:ffff:ffff:ffff:fffe', 4, () => req('OPTIONS'));
  assert.equal(a.passed + b.passed, 4);
  assert.equal(b.refusals[0]?.action, 'drop');
  assert.equal((await burst(run, '2001:db8:1:3::1', 4, () => req('OPTIONS'))).passed, 4);

  const s48 = setup('ipv6Prefix: 48\nsource: { all: { limit: 2, seconds: 60 } }\n');
  await s48.run('2001:db8:1:2::1', req('OPTIONS'));
  await s48.run('2001:db8:1:3::1', req('OPTIONS'));
  assert.equal((await s48.run('2001:db8:1:ffff::9', req('OPTIONS'))).action, 'drop');
  assert.equal(s48.suspicion.sourceKey('2001:db8:1:ffff::9'), '2001:db8:1::/48');
});

test('promotion lifts the source budget by its factor; over the lifted budget a promoted source gets 503 with Retry-After', async () => {
  const { run, suspicion } = setup('source: { all: { limit: 3, seconds: 60 } }\npromotion: { factor: 4 }\noverLimit: { retryAfter: 20, jitterMin: 1, jitterMax: 9 }\n');
  const addr = '203.0.113.50';
  assert.equal((await burst(run, addr, 3, () => req('OPTIONS'))).passed, 3);
  assert.equal((await run(addr, req('OPTIONS'))).action, 'drop');
  suspicion.promote(addr);
  assert.equal(suspicion.isPromoted(addr), true);
  const p = await burst(run, addr, 14, () => req('OPTIONS'));
  assert.equal(p.passed, 12); // 3 x 4 in the promoted budget
  assert.equal(p.refusals.length, 2);
  const v = p.refusals[0]!;
  assert.equal(v.action, 'reply');
  if (v.action === 'reply') {
    assert.equal(v.status, 503);
    assert.equal(v.reason, 'source_rate');
    assert.equal(v.rule, 'limits:source_all');
  }
  const ra = retryAfter(v);
  assert.ok(ra >= 21 && ra <= 29, `Retry-After ${ra}`);
  // nothing answers an ACK (RFC 3261 17): even a promoted source's ACK is dropped (where replies
  // are sent, edge/path/respond.ts, no longer by the stage)
  const ack = req('ACK');
  assert.deepEqual(answerable(await run(addr, ack), ack), { action: 'drop', reason: 'source_rate', rule: 'limits:source_all' });
});

test('Retry-After jitter stays within base + [jitterMin, jitterMax] and reaches both ends', async () => {
  const r = { base: 30, jitterMin: 5, jitterMax: 15 };
  assert.equal(jitteredRetryAfter(r, () => 0), 35);
  assert.equal(jitteredRetryAfter(r, () => 0.999999999), 45);
  assert.equal(jitteredRetryAfter(r, () => 0.5), 40);
  assert.equal(jitteredRetryAfter(r, () => Number.NaN), 35); // a broken random source is not a crash
  assert.equal(jitteredRetryAfter({ base: 7, jitterMin: 0, jitterMax: 0 }, Math.random), 7);
  // through the stage with the real Math.random: 400 refusals, all in range, and not all equal
  const { run, suspicion } = setup('source: { all: { limit: 1, seconds: 60 } }\npromotion: { factor: 1 }\noverLimit: { retryAfter: 30, jitterMin: 5, jitterMax: 15 }\n');
  suspicion.promote('192.0.2.77');
  await run('192.0.2.77', req('OPTIONS'));
  const seen = new Set<number>();
  for (let i = 0; i < 400; i++) {
    const ra = retryAfter(await run('192.0.2.77', req('OPTIONS')));
    assert.ok(ra >= 35 && ra <= 45, `Retry-After ${ra}`);
    seen.add(ra);
  }
  assert.ok(seen.size > 1, 'the jitter varies');
});

test('aor_register_source: REGISTERs without credentials per (source, AOR); other sources, other AORs and answers to challenges are not affected', async () => {
  const { run } = setup('aorRegister: { limit: 3, seconds: 60 }\n');
  const a = await burst(run, '198.51.100.20', 5, () => register(100));
  assert.equal(a.passed, 3);
  assert.deepEqual(a.refusals[0], { action: 'drop', reason: 'aor_register_source_rate', rule: 'limits:aor_register' });
  // the same AOR spelled with escapes is the same budget (RFC 3261 10.3) ...
  assert.equal((await run('198.51.100.20', register('%31%30%30'))).action, 'drop');
  // ... but only this source's: another source has its own, so no source spends the AOR's
  // (that budget is spent after authentication, by the userlimit stage)
  assert.equal((await burst(run, '198.51.100.21', 3, () => register(100))).passed, 3);
  assert.equal((await run('198.51.100.20', register(101))).action, 'continue');
  // an answer to a challenge is judged by auth, not counted here
  const answer = req('REGISTER', { to: '<sip:100@pbx.example.com>', from: '<sip:100@pbx.example.com>' });
  const withCredentials = msg([...answer.raw.toString('latin1').trimEnd().split('\r\n').filter((l) => l !== 'Content-Length: 0'), 'Authorization: Digest username="100", realm="pbx.example.com", nonce="n", uri="sip:pbx.example.com", response="r"', 'Content-Length: 0']);
  assert.equal((await run('198.51.100.20', withCredentials)).action, 'continue');
  // OPTIONS do not spend the REGISTER budget
  assert.equal((await run('198.51.100.22', req('OPTIONS', { to: '<sip:101@pbx.example.com>' }))).action, 'continue');
  // disabled
  const off = setup('aorRegister: { enabled: false, limit: 1 }\n');
  assert.equal((await burst(off.run, '198.51.100.22', 5, () => register(100))).passed, 5);
});

test('user_invite_source: new calls without credentials per (source, From user@host); other sources and in-dialog INVITEs are not counted', async () => {
  const { run } = setup('userInvite: { limit: 2, seconds: 60 }\n');
  const a = await burst(run, '198.51.100.30', 3, () => invite('sip:200@pbx.example.com', '<sip:alice@pbx.example.com>'));
  assert.equal(a.passed, 2);
  assert.deepEqual(a.refusals[0], { action: 'drop', reason: 'user_invite_source_rate', rule: 'limits:user_invite' });
  assert.equal((await run('198.51.100.30', invite('sip:200@pbx.example.com', '<sip:bob@pbx.example.com>'))).action, 'continue');
  assert.equal((await run('198.51.100.31', invite('sip:200@pbx.example.com', '<sip:alice@pbx.example.com>'))).action, 'continue', 'another source claiming alice has its own budget');
  const reinvite = invite('sip:alice@192.0.2.1:5060', '<sip:alice@pbx.example.com>', '<sip:200@pbx.example.com>;tag=dlg1');
  assert.equal((await run('198.51.100.30', reinvite)).action, 'continue');
});

test('prefix_rate: new calls to a toll-fraud prefix share one global budget, whatever the spelling; per: source keeps budgets apart', async () => {
  const { run } = setup('prefixes:\n  - { prefix: "+882", limit: 2, seconds: 3600 }\n  - { prefix: "00", limit: 1, seconds: 3600, per: source }\n');
  assert.equal((await run('198.51.100.40', invite('sip:+88216000001@pbx.example.com;user=phone', '<sip:a@pbx.example.com>'))).action, 'continue');
  assert.equal((await run('198.51.100.41', invite('sip:%2B882-16-000002@pbx.example.com', '<sip:b@pbx.example.com>'))).action, 'continue');
  assert.deepEqual(await run('198.51.100.42', invite('tel:+882.16.000003', '<sip:c@pbx.example.com>')), { action: 'drop', reason: 'prefix_rate', rule: 'limits:prefix:+882' });
  // other destinations are not limited by it
  assert.equal((await run('198.51.100.42', invite('sip:+4930123@pbx.example.com', '<sip:c@pbx.example.com>'))).action, 'continue');
  // per source
  assert.equal((await run('198.51.100.43', invite('sip:0049301@pbx.example.com', '<sip:d@pbx.example.com>'))).action, 'continue');
  assert.equal((await run('198.51.100.43', invite('sip:0049302@pbx.example.com', '<sip:e@pbx.example.com>'))).action, 'drop');
  assert.equal((await run('198.51.100.44', invite('sip:0049303@pbx.example.com', '<sip:f@pbx.example.com>'))).action, 'continue');
});

test('inside traffic and responses are never limited', async () => {
  const { run } = setup('source: { all: { limit: 1, seconds: 60 } }\n');
  assert.equal((await burst((a, m) => run(a, m, 'inside'), '10.0.0.5', 10, () => req('OPTIONS'))).passed, 10);
  const resp = msg([
    'SIP/2.0 200 OK', 'Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-resp', 'To: <sip:100@pbx.example.com>;tag=t',
    'From: <sip:100@pbx.example.com>;tag=f', 'Call-ID: resp-1', 'CSeq: 1 OPTIONS', 'Content-Length: 0',
  ]);
  assert.equal((await burst(run, '198.51.100.50', 10, () => resp)).passed, 10);
});

/** a store whose every consume answers from the "insurance limiter" (Redis down) */
function degradedStore(allowed: boolean): SharedStore & { consumed: string[] } {
  const consumed: string[] = [];
  return {
    kind: 'redis',
    consumed,
    limiter(spec: LimiterSpec): Limiter {
      return {
        spec,
        async consume(key: string): Promise<ConsumeResult> {
          consumed.push(`${spec.name}:${key}`);
          return { allowed, remaining: 0, msBeforeNext: 1000, degraded: true };
        },
        async peek(key: string): Promise<ConsumeResult> {
          consumed.push(`peek:${spec.name}:${key}`);
          return { allowed, remaining: 0, msBeforeNext: 1000, degraded: true };
        },
        async reset(): Promise<void> {},
      };
    },
    async ban(): Promise<Ban> { throw new Error('unreachable'); },
    async unban() { return false; },
    async listBans() { return []; },
    onBanEvent() {},
    async once() { return true; },
    async distinct() { return 1; },
    announcePromotion() {},
    onPromotion() {},
    healthy: () => false,
    onHealth() {},
    errors: 1,
    async close() {},
  };
}

test('onStoreDown closed: a degraded answer refuses with store_down_closed; open lets the insurance limiter decide', async () => {
  const closed = setup('source: { all: { limit: 100, seconds: 10, onStoreDown: closed } }\n', degradedStore(true));
  assert.deepEqual(await closed.run('198.51.100.60', req('OPTIONS')), { action: 'drop', reason: 'store_down_closed', rule: 'limits:source_all' });
  closed.suspicion.promote('198.51.100.61');
  const v = await closed.run('198.51.100.61', req('OPTIONS'));
  assert.equal(v.action === 'reply' ? `${v.status} ${v.reason}` : v.action, '503 store_down_closed');

  const open = setup('', degradedStore(true));
  assert.equal((await open.run('198.51.100.62', register(100))).action, 'continue');
  const openOver = setup('', degradedStore(false));
  assert.deepEqual(await openOver.run('198.51.100.63', req('OPTIONS')), { action: 'drop', reason: 'source_rate', rule: 'limits:source_all' });

  // only the prefix limit is closed: everything else passes on the insurance limiter
  const mixed = setup('prefixes:\n  - { prefix: "+882", limit: 100, seconds: 60, onStoreDown: closed }\n', degradedStore(true));
  assert.equal((await mixed.run('198.51.100.64', invite('sip:+4930@pbx.example.com'))).action, 'continue');
  assert.deepEqual(await mixed.run('198.51.100.64', invite('sip:+88216@pbx.example.com')), { action: 'drop', reason: 'store_down_closed', rule: 'limits:prefix:+882' });
});

test('a store whose consume throws is a store outage, not a crash', async () => {
  const store = degradedStore(true);
  const broken: SharedStore = { ...store, limiter: (spec) => ({ spec, consume: () => Promise.reject(new Error('boom')), peek: () => Promise.reject(new Error('boom')), reset: async () => {} }) };
  const open = setup('', broken);
  assert.equal((await open.run('198.51.100.70', req('OPTIONS'))).action, 'continue');
  const closed = setup('source: { all: { onStoreDown: closed } }\n', broken);
  assert.deepEqual(await closed.run('198.51.100.70', req('OPTIONS')), { action: 'drop', reason: 'store_down_closed', rule: 'limits:source_all' });
});

test('a refused request spends no budget of the later limits', async () => {
  const store = degradedStore(false);
  const { run } = setup('', store);
  await run('198.51.100.80', register(100));
  assert.deepEqual(store.consumed, ['source_all:198.51.100.80']);
});

test('a rules reload that keeps a limit keeps its budget; a changed limit starts a new one', async () => {
  const store = createMemoryStore({ sweepIntervalMs: 0 });
  let snap = snapshotOf(limitsOf('source: { all: { limit: 2, seconds: 60 } }\n'));
  const suspicion = new Suspicion({ store, rules: () => snap });
  const stage = createRateLimitStage({ rules: () => snap, store, suspicion });
  const run = (m: SipMessage) => stage.check(ctx('198.51.100.90', m));
  await run(req('OPTIONS'));
  await run(req('OPTIONS'));
  snap = snapshotOf(limitsOf('source: { all: { limit: 2, seconds: 60 } }\nweights: { scanner: 3 }\n'));
  assert.equal((await run(req('OPTIONS'))).action, 'drop');
  snap = snapshotOf(limitsOf('source: { all: { limit: 3, seconds: 60 } }\n'));
  assert.equal((await run(req('OPTIONS'))).action, 'continue');
});
