// The userlimit stage (edge/policy/limits/userlimit.ts): per-user and per-AOR budgets spent only by
// established identities (ctx.identity set by auth, or the PBX's acceptance), refused for everyone
// once used up; against the real in-memory store and, for the budget peek, the real Redis. The
// same through a real edge with sipp phones: test/budgets.test.ts.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadYamlText } from '../edge/config/yaml';
import { parseMessage } from '../edge/sip/parser';
import type { SipRequest } from '../edge/sip/types';
import { createMemoryStore } from '../edge/store/memory';
import type { LimiterSpec, SharedStore } from '../edge/store/types';
import { USERLIMIT_REASONS, createUserLimitStage } from '../edge/policy/limits/userlimit';
import { Suspicion } from '../edge/suspicion';
import type { MessageContext, Verdict } from '../edge/verdict';
import { compileLimits, LimitsFileSchema } from '../edge/policy/limits/compile';
import type { RulesSnapshot } from '../edge/policy/snapshot';
import { snapshotWith } from './helpers/snapshot';

function snapshotOf(yaml: string): RulesSnapshot {
  const y = loadYamlText(yaml, 'limits.yaml', LimitsFileSchema);
  assert.ok(y.ok, y.ok ? '' : y.errors.join('\n'));
  const r = compileLimits(y.value, y.at);
  assert.deepEqual(r.errors, []);
  return snapshotWith({ limits: r.limits });
}

let n = 0;
function req(method: 'INVITE' | 'REGISTER' | 'OPTIONS', user: string, o: { toTag?: string } = {}): SipRequest {
  const i = ++n;
  const aor = `<sip:${user}@pbx.example.com>`;
  const text = [
    `${method} ${method === 'REGISTER' ? 'sip:pbx.example.com' : 'sip:200@pbx.example.com'} SIP/2.0`,
    `Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-ul-${i}`, 'Max-Forwards: 70',
    `From: ${aor};tag=f${i}`, `To: ${method === 'REGISTER' ? aor : '<sip:200@pbx.example.com>'}${o.toTag ? `;tag=${o.toTag}` : ''}`,
    `Call-ID: ul-${i}`, `CSeq: 1 ${method}`, 'Content-Length: 0', '', '',
  ].join('\r\n');
  const r = parseMessage(Buffer.from(text, 'latin1'), { framing: 'datagram' });
  assert.ok(r.ok);
  return r.msg as SipRequest;
}

function setup(yaml: string, store: SharedStore = createMemoryStore({ sweepIntervalMs: 0 })) {
  const snap = snapshotOf(yaml);
  const suspicion = new Suspicion({ store, rules: () => snap });
  let active = true;
  const stage = createUserLimitStage({ rules: () => snap, store, suspicion, random: () => 0, active: () => active });
  const run = async (address: string, m: SipRequest, identity?: string): Promise<Verdict> => {
    const ctx: MessageContext = { msg: m, source: { transport: 'udp', address, port: 5060 }, side: 'outside', trust: 'untrusted', receivedAt: 0, ...(identity !== undefined ? { identity } : {}) };
    return stage.check(ctx);
  };
  return { stage, run, suspicion, setActive: (a: boolean) => { active = a; } };
}

const actions = async (vs: Array<Promise<Verdict>>): Promise<string[]> => (await Promise.all(vs)).map((v) => (v.action === 'reply' ? `${v.status} ${v.reason}` : v.action === 'continue' ? 'continue' : `${v.action} ${v.reason}`));

test('stage identity: name userlimit, skippable for trusted sources, closed reason list', () => {
  const { stage } = setup('');
  assert.equal(stage.name, 'userlimit');
  assert.equal(stage.skippableForTrusted, true);
  assert.deepEqual([...stage.reasons], [...USERLIMIT_REASONS]);
  assert.deepEqual([...USERLIMIT_REASONS], ['aor_register_rate', 'user_invite_rate', 'store_down_closed']);
});

test('only an established identity spends a user\'s budget: 100 claims from anywhere spend nothing; the authenticated user going over it is refused (503 to its promoted phone, dropped elsewhere)', async () => {
  const { run, suspicion } = setup('userInvite: { limit: 3, seconds: 60 }\n');
  // claims without an established identity (pbx mode before the PBX answered, or auth off)
  for (let i = 0; i < 100; i++) assert.equal((await run(`198.51.100.${i % 50}`, req('INVITE', 'alice'))).action, 'continue');
  // the real alice, authenticated (auth promoted her phone): her whole budget is there
  suspicion.promote('192.0.2.10');
  assert.deepEqual(await actions([1, 2, 3].map(() => run('192.0.2.10', req('INVITE', 'alice'), 'alice'))), ['continue', 'continue', 'continue']);
  const over = await run('192.0.2.10', req('INVITE', 'alice'), 'alice');
  assert.equal(over.action, 'reply');
  assert.equal(over.action === 'reply' ? over.status : 0, 503);
  assert.equal(over.action === 'reply' ? over.reason : '', 'user_invite_rate');
  assert.deepEqual(over.action === 'reply' ? over.headers : [], [['Retry-After', '30']]);
  // used up: refused for whoever claims alice now, without spending anything more
  assert.deepEqual(await run('198.51.100.99', req('INVITE', 'alice')), { action: 'drop', reason: 'user_invite_rate', rule: 'limits:user_invite' });
  // other users, in-dialog INVITEs and other methods are not affected
  assert.equal((await run('192.0.2.10', req('INVITE', 'bob'), 'bob')).action, 'continue');
  assert.equal((await run('192.0.2.10', req('INVITE', 'alice', { toTag: 'dlg' }), 'alice')).action, 'continue');
  assert.equal((await run('192.0.2.10', req('OPTIONS', 'alice'), 'alice')).action, 'continue');
});

test('REGISTER per AOR the same way; pbx mode: the PBX\'s acceptance spends the budget (accepted()), and nothing when the stage is off', async () => {
  const { stage, run, setActive } = setup('aorRegister: { limit: 2, seconds: 60 }\n');
  for (let i = 0; i < 30; i++) assert.equal((await run('198.51.100.7', req('REGISTER', '2000'))).action, 'continue');
  stage.accepted(req('REGISTER', '2000'));
  stage.accepted(req('REGISTER', '2000'));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(await run('192.0.2.20', req('REGISTER', '2000')), { action: 'drop', reason: 'aor_register_rate', rule: 'limits:aor_register' });
  assert.equal((await run('192.0.2.20', req('REGISTER', '2001'))).action, 'continue');
  setActive(false);
  for (let i = 0; i < 5; i++) stage.accepted(req('REGISTER', '2001'));
  await new Promise((r) => setImmediate(r));
  assert.equal((await run('192.0.2.20', req('REGISTER', '2001'))).action, 'continue', 'an inactive stage counts nothing');
  // in-dialog and non-INVITE/REGISTER acceptances spend nothing
  stage.accepted(req('INVITE', '2002', { toTag: 'x' }));
  stage.accepted(req('OPTIONS', '2002'));
});

test('the budget peek against the real Redis: claims spend nothing, established identities do, shared by two instances', async (t) => {
  const { twoStoresOnSharedRedis } = await import('./helpers/redis-server');
  const stores = await twoStoresOnSharedRedis(t);
  if (stores === null) return;
  const [sa, sb] = stores;
  try {
    const a = setup('userInvite: { limit: 2, seconds: 60 }\n', sa);
    const b = setup('userInvite: { limit: 2, seconds: 60 }\n', sb);
    for (let i = 0; i < 20; i++) assert.equal((await (i % 2 ? a : b).run('198.51.100.5', req('INVITE', 'carol'))).action, 'continue');
    assert.equal((await a.run('192.0.2.30', req('INVITE', 'carol'), 'carol')).action, 'continue');
    assert.equal((await b.run('192.0.2.31', req('INVITE', 'carol'), 'carol')).action, 'continue');
    // used up cluster-wide: the next established request and any claim are refused at both
    assert.equal((await a.run('192.0.2.30', req('INVITE', 'carol'), 'carol')).action, 'drop');
    assert.equal((await b.run('198.51.100.5', req('INVITE', 'carol'))).action, 'drop');
  } finally {
    await sa.close();
    await sb.close();
  }
});

test('onStoreDown closed: a degraded answer refuses with store_down_closed', async () => {
  const store = createMemoryStore({ sweepIntervalMs: 0 });
  // the memory store with limiters that answer as while Redis is down
  const degraded: SharedStore = Object.assign(Object.create(store) as SharedStore, {
    limiter: (spec: LimiterSpec) => ({
      spec,
      consume: async () => ({ allowed: true, remaining: 1, msBeforeNext: 0, degraded: true }),
      peek: async () => ({ allowed: true, remaining: 1, msBeforeNext: 0, degraded: true }),
      reset: async () => {},
    }),
  });
  const closed = setup('userInvite: { limit: 5, seconds: 60, onStoreDown: closed }\n', degraded);
  assert.deepEqual(await closed.run('192.0.2.40', req('INVITE', 'dave'), 'dave'), { action: 'drop', reason: 'store_down_closed', rule: 'limits:user_invite' });
  const open = setup('userInvite: { limit: 5, seconds: 60 }\n', degraded);
  assert.equal((await open.run('192.0.2.40', req('INVITE', 'dave'), 'dave')).action, 'continue');
});
