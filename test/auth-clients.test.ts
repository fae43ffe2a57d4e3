// Digest challenge selection (issue 11 defect 10): rules/auth-clients.yaml (schema, compile, the
// shipped profiles against the User-Agents real clients send), the auth stage's choice per client
// with the domain's allow-list and per-source learning, anti-enumeration (the choice never depends
// on the user), answers to several challenges at once, users without the HA1 a client needs, and
// the start/reload warnings (`sip-edge check` as an operator runs it).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { ha1, responseFor, type DigestAlgorithm } from '../edge/auth/digest';
import { OfferSelector, auditOffers } from '../edge/auth/offer';
import { UsersDb, formatUserLine } from '../edge/auth/users';
import type { AuthAlgorithm, AuthConfig, AuthDomainPolicy } from '../edge/config/types';
import { loadYamlText } from '../edge/config/yaml';
import { parseMessage } from '../edge/sip/parser';
import type { Endpoint, SipRequest } from '../edge/sip/types';
import { createAuthStage, type AuthEvent } from '../edge/auth/stage';
import { createMemoryStore } from '../edge/store/memory';
import { Suspicion } from '../edge/suspicion';
import type { MessageContext, Verdict } from '../edge/verdict';
import { AuthClientsFileSchema, compileAuthClients } from '../edge/auth/clients';
import { defaultRulesDir, loadRules } from '../edge/policy/load';
import type { CompiledAuthClients } from '../edge/auth/clients';
import { snapshotWith } from './helpers/snapshot';

const REALM = 'pbx.example.com';
const SECRET = 'a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6';
const PASSWORDS: Record<string, string> = { '1001': 'correct horse battery' };
const ALL: AuthAlgorithm[] = ['SHA-256', 'SHA-512-256', 'MD5'];

// ---------------------------------------------------------------- the rule file

function shipped(): CompiledAuthClients {
  const r = loadRules(defaultRulesDir());
  assert.ok(r.ok, r.ok ? '' : r.errors.join('\n'));
  assert.ok(r.snapshot.authClients, 'the shipped rules have client profiles');
  return r.snapshot.authClients;
}

function compileText(text: string): { errors: string[]; clients?: CompiledAuthClients } {
  const y = loadYamlText(text, 'rules/auth-clients.yaml', AuthClientsFileSchema);
  if (!y.ok) return { errors: y.errors };
  const c = compileAuthClients(y.value, y.at);
  return { errors: c.errors, clients: c.authClients };
}

interface ReqOpts { method?: string; ua?: string | null; fromTag?: string; to?: string; callId?: string; cseq?: number; headers?: string[] }
function request(o: ReqOpts = {}): SipRequest {
  const method = o.method ?? 'REGISTER';
  const lines = [
    `${method} ${method === 'REGISTER' ? `sip:${REALM}` : `sip:1002@${REALM}`} SIP/2.0`,
    `Via: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK-${Math.random().toString(36).slice(2)}`,
    'Max-Forwards: 70',
    `From: <sip:1001@${REALM}>;tag=${o.fromTag ?? 'f1'}`,
    `To: ${o.to ?? (method === 'REGISTER' ? `<sip:1001@${REALM}>` : `<sip:1002@${REALM}>`)}`,
    `Call-ID: ${o.callId ?? `c-${Math.random().toString(36).slice(2)}`}`,
    `CSeq: ${o.cseq ?? 1} ${method}`,
    ...(o.ua === null ? [] : [`User-Agent: ${o.ua ?? 'ExamplePhone/2.0'}`]),
    ...(o.headers ?? []),
    'Content-Length: 0',
  ];
  const r = parseMessage(Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), { framing: 'datagram' });
  assert.ok(r.ok, r.ok ? '' : r.reason);
  return r.msg as SipRequest;
}

test('the shipped profiles know the clients by the User-Agent (or From tag) they really send', () => {
  const c = shipped();
  const cases: Array<[string, ReqOpts, string | null]> = [
    // seen here: Debian bookworm baresip-core 1.0.0 with libre 1.1
    ['baresip 1.0 (Debian)', { ua: 'baresip v1.0.0 (x86_64/linux)' }, 'baresip_md5_only'],
    // baresip/baresip issue 3006 (libre without SHA-256), baresip/re PR 1103 (SHA-256 from 3.12)
    ['baresip 3.10.1', { ua: 'baresip v3.10.1 (x86_64/Linux)' }, 'baresip_md5_only'],
    ['baresip 3.11.0', { ua: 'baresip v3.11.0 (x86_64/Linux)' }, 'baresip_md5_only'],
    ['baresip 3.12.0', { ua: 'baresip v3.12.0 (x86_64/Linux)' }, 'baresip'],
    ['baresip 4.1.0', { ua: 'baresip v4.1.0 (aarch64/Linux)' }, 'baresip'],
    // sipp scenarios: no User-Agent of its own, tag=[pid]SIPpTag<nn>[call_number]
    ['sipp', { ua: null, fromTag: '12345SIPpTag001' }, 'sipp'],
    ['sipp with a test User-Agent', { ua: 'sip-edge-test/auth-uac', fromTag: '4242SIPpTag507' }, 'sipp'],
    // `kamailio -v` / its default user_agent_header, Debian 5.6.3
    ['kamailio 5.6.3', { ua: 'kamailio (5.6.3 (x86_64/linux))' }, 'kamailio_uac_md5_only'],
    ['kamailio 5.8.1', { ua: 'kamailio (5.8.1 (x86_64/linux))' }, null],
    // seen here: Debian bookworm linphone-cli 5.1.65 (SHA-256 capable)
    ['linphone', { ua: 'Linphonec/5.1.65' }, null],
    ['no User-Agent', { ua: null }, null],
    ['a tag that merely mentions sipp', { ua: null, fromTag: 'SIPpTag' }, null],
  ];
  for (const [what, o, want] of cases) assert.equal(c.match(request(o))?.name ?? null, want, what);
  assert.deepEqual(c.default, ['SHA-256', 'MD5']);
  assert.equal(c.learning.enabled, true);
});

test('a bad profile file is refused with file:line:column, like every rule file', () => {
  const bad = (text: string): string => { const r = compileText(text); assert.ok(r.errors.length > 0, text); return r.errors.join('\n'); };
  assert.match(bad('clients:\n  - {name: a, match: {where: User-Agent, pattern: x}, algorithms: [SHA-1]}\n'), /^rules\/auth-clients\.yaml:2:\d+: .*expected one of SHA-256, SHA-512-256, MD5/);
  assert.match(bad('clients:\n  - {name: a, match: {where: User-Agent, pattern: "(a+)+"}, algorithms: [MD5]}\n'), /^rules\/auth-clients\.yaml:2:\d+: pattern "\(a\+\)\+" /);
  assert.match(bad('clients:\n  - {name: a, match: {where: User-Agent, pattern: "(x"}, algorithms: [MD5]}\n'), /not a valid regular expression/);
  assert.match(bad('clients:\n  - {name: a, match: {where: "User Agent", pattern: x}, algorithms: [MD5]}\n'), /"User Agent" is not a header name/);
  assert.match(bad('clients:\n  - {name: a, match: {where: User-Agent, pattern: "x?"}, algorithms: [MD5]}\n'), /matches the empty string/);
  assert.match(bad('clients:\n  - {name: a, match: {where: User-Agent, pattern: x}, algorithms: [MD5]}\n  - {name: a, match: {where: User-Agent, pattern: y}, algorithms: [MD5]}\n'), /:3:\d+: profile name "a" is already used by clients\[0\]/);
  assert.match(bad('clients:\n  - {name: default, match: {where: User-Agent, pattern: x}, algorithms: [MD5]}\n'), /reserved/);
  assert.match(bad('defualt: [MD5]\n'), /:1:1: unknown key "defualt" \(did you mean "default"\?\)/);
  assert.match(bad('default: []\n'), /default/);
  // a loadable one: profile order decides, `offer: first` is kept
  const ok = compileText('default: [SHA-256]\nclients:\n  - {name: one, match: {where: User-Agent, pattern: "^A"}, algorithms: [MD5]}\n  - {name: two, match: {where: User-Agent, pattern: "^AB"}, algorithms: [SHA-256, MD5], offer: first}\n');
  assert.deepEqual(ok.errors, []);
  assert.equal(ok.clients!.match(request({ ua: 'ABC' }))?.name, 'one');
  assert.equal(ok.clients!.clients[1]!.offer, 'first');
});

// ---------------------------------------------------------------- the stage

function policy(over: Partial<AuthDomainPolicy> = {}): AuthDomainPolicy {
  return {
    name: REALM, mode: 'edge', realm: REALM, usersFile: '/users', algorithms: ALL, qop: ['auth'],
    matchFrom: true, forwardCredentials: false, identity: 'strip', pbxRewrite: 'challenge', ...over,
  };
}

function setup(p: AuthDomainPolicy = policy(), clients: CompiledAuthClients | null = shipped(), users?: (u: string, realm: string, alg: DigestAlgorithm) => string | null | undefined) {
  let t = Date.UTC(2026, 10, 21, 12);
  const store = createMemoryStore({ now: () => t, sweepIntervalMs: 0 });
  const snap = snapshotWith();
  const suspicion = new Suspicion({ store, rules: () => snap, now: () => t, softGraceMs: 0 });
  let enforcing = true;
  const events: AuthEvent[] = [];
  const auth: AuthConfig = { secret: SECRET, nonceSeconds: 300, lockout: { failures: 50, seconds: 900 }, enumeration: { users: 50, seconds: 60 }, domains: [p], fallback: { ...p, name: '*' } };
  const stage = createAuthStage({
    auth,
    users: () => users ?? ((u, realm, alg) => (PASSWORDS[u] !== undefined && realm === REALM ? ha1(alg, u, realm, PASSWORDS[u]!) : undefined)),
    store, suspicion,
    serves: (h) => h === REALM,
    hasDialogRoute: () => false,
    isRetransmission: () => false,
    enforcing: () => enforcing,
    clients: () => clients,
    now: () => t,
    onEvent: (e) => events.push(e),
  });
  return { stage, events, advance: (ms: number) => { t += ms; }, setEnforcing: (v: boolean) => { enforcing = v; } };
}

const PHONE: Endpoint = { transport: 'udp', address: '198.51.100.20', port: 5060 };
const ctx = (msg: SipRequest, source: Endpoint = PHONE): MessageContext => ({ msg, source, side: 'outside', trust: 'untrusted', receivedAt: 0 });

async function verdictOf(s: ReturnType<typeof setup>, req: SipRequest, src: Endpoint = PHONE): Promise<Verdict> {
  return s.stage.check(ctx(req, src));
}
/** the algorithms of a challenge verdict, in header order */
function offered(v: Verdict): string[] {
  assert.equal(v.action, 'reply', JSON.stringify(v));
  return ((v as { headers?: ReadonlyArray<readonly [string, string]> }).headers ?? []).map(([, val]) => /algorithm=([A-Z0-9-]+)/.exec(val)?.[1] ?? '?');
}
const ruleOf = (v: Verdict): string | undefined => (v as { rule?: string }).rule;
const nonceOf = (v: Verdict): string => /nonce="([^"]+)"/.exec((v as { headers: ReadonlyArray<readonly [string, string]> }).headers[0]![1])![1]!;

function credentials(method: string, nonce: string, alg: DigestAlgorithm, o: { user?: string; password?: string } = {}): string {
  const user = o.user ?? '1001';
  const uri = method === 'REGISTER' ? `sip:${REALM}` : `sip:1002@${REALM}`;
  const cnonce = `c${Math.random().toString(36).slice(2)}`;
  const resp = responseFor(alg, ha1(alg, user, REALM, o.password ?? PASSWORDS[user] ?? 'whatever-password'), { method, uri, nonce, nc: '00000001', cnonce, qop: 'auth' });
  return `${method === 'REGISTER' ? 'Authorization' : 'Proxy-Authorization'}: Digest username="${user}", realm="${REALM}", nonce="${nonce}", uri="${uri}", response="${resp}", algorithm=${alg}, qop=auth, nc=00000001, cnonce="${cnonce}"`;
}

test('the challenge follows the client: baresip 1.0 gets MD5 alone, baresip 3.12 one SHA-256, sipp MD5, Kamailio 5.6 MD5, anyone else SHA-256 then MD5', async () => {
  const s = setup();
  const cases: Array<[string, ReqOpts, string[], string]> = [
    ['baresip 1.0', { ua: 'baresip v1.0.0 (x86_64/linux)' }, ['MD5'], 'auth-clients:baresip_md5_only'],
    ['baresip 3.12', { ua: 'baresip v3.12.0 (x86_64/Linux)' }, ['SHA-256'], 'auth-clients:baresip'],
    ['sipp', { ua: null, fromTag: '999SIPpTag001' }, ['MD5'], 'auth-clients:sipp'],
    ['kamailio 5.6', { ua: 'kamailio (5.6.3 (x86_64/linux))' }, ['MD5'], 'auth-clients:kamailio_uac_md5_only'],
    ['linphone', { ua: 'Linphonec/5.1.65' }, ['SHA-256', 'MD5'], 'auth-clients:default'],
    ['no User-Agent', { ua: null }, ['SHA-256', 'MD5'], 'auth-clients:default'],
  ];
  for (const [what, o, algs, rule] of cases) {
    for (const method of ['REGISTER', 'INVITE']) {
      const v = await verdictOf(s, request({ ...o, method }), { ...PHONE, port: 6000 + Math.floor(Math.random() * 1000) });
      assert.equal((v as { status: number }).status, method === 'REGISTER' ? 401 : 407, what);
      assert.deepEqual(offered(v), algs, `${what} ${method}`);
      assert.equal(ruleOf(v), rule, what);
    }
  }
  // without a profile file: the domain's allow-list as listed (the behaviour before profiles)
  const bare = setup(policy(), null);
  const v = await verdictOf(bare, request({ ua: 'baresip v1.0.0 (x86_64/linux)' }));
  assert.deepEqual(offered(v), ALL);
  assert.equal(ruleOf(v), undefined);
});

test('the domain\'s algorithms stay the allow-list: a profile is filtered by it, and an answer outside it is refused whatever the profile says', async () => {
  const s = setup(policy({ algorithms: ['SHA-256'] }));
  // the MD5-only profile has nothing the domain allows: the domain's list (these phones then cannot register)
  assert.deepEqual(offered(await verdictOf(s, request({ ua: 'baresip v1.0.0 (x86_64/linux)' }))), ['SHA-256']);
  assert.deepEqual(offered(await verdictOf(s, request({ ua: 'Linphonec/5.1.65' }))), ['SHA-256']);
  const nonce = nonceOf(await verdictOf(s, request({ ua: 'baresip v1.0.0 (x86_64/linux)' })));
  const v = await verdictOf(s, request({ ua: 'baresip v1.0.0 (x86_64/linux)', headers: [credentials('REGISTER', nonce, 'MD5')] }));
  assert.equal((v as { reason: string }).reason, 'algorithm_not_offered');
  // the profile's order wins among what the domain allows
  const t = setup(policy({ algorithms: ['MD5', 'SHA-256'] }));
  assert.deepEqual(offered(await verdictOf(t, request({ ua: 'Linphonec/5.1.65' }))), ['SHA-256', 'MD5']);
});

test('anti-enumeration: an existing and a non-existing user get the same challenge, before and after a failed answer', async () => {
  for (const ua of ['baresip v1.0.0 (x86_64/linux)', 'Linphonec/5.1.65', 'friendly-scanner']) {
    const s = setup();
    const src = (n: number): Endpoint => ({ ...PHONE, port: 7000 + n });
    // first contact: the same challenge lines apart from the nonce
    const a = await verdictOf(s, request({ ua, to: `<sip:1001@${REALM}>` }), src(1));
    const b = await verdictOf(s, request({ ua, to: `<sip:9999@${REALM}>` }), src(1));
    assert.deepEqual(offered(a), offered(b), ua);
    const strip = (v: Verdict): string[] => (v as { headers: ReadonlyArray<readonly [string, string]> }).headers.map(([n, x]) => `${n}: ${x.replace(/nonce="[^"]+"/, 'nonce=N')}`);
    assert.deepEqual(strip(a), strip(b), ua);
    // a wrong password for a user that exists, and any password for one that does not
    const alg = offered(a)[0] as DigestAlgorithm;
    const wrong = await verdictOf(s, request({ ua, headers: [credentials('REGISTER', nonceOf(a), alg, { password: 'nope-nope-nope' })] }), src(1));
    const unknown = await verdictOf(s, request({ ua, to: `<sip:9999@${REALM}>`, headers: [credentials('REGISTER', nonceOf(b), alg, { user: '9999' })] }), src(1));
    assert.equal((wrong as { reason: string }).reason, 'wrong_credentials');
    assert.equal((unknown as { reason: string }).reason, 'unknown_user');
    assert.deepEqual(strip(wrong), strip(unknown), ua);
  }
});

test('an unknown MD5-only client that cannot answer is offered MD5 alone on its retry in the same Call-ID, for its calls too; a retransmission proves nothing', async () => {
  const s = setup();
  const ua = 'OldPhone/1.0';
  const reg = (cseq: number, extra: string[] = []) => request({ ua, callId: 'reg-1', cseq, headers: extra });
  assert.deepEqual(offered(await verdictOf(s, reg(1))), ['SHA-256', 'MD5']);
  // the same request again (our 401 is stateless: a retransmission reaches the stage)
  assert.deepEqual(offered(await verdictOf(s, reg(1))), ['SHA-256', 'MD5'], 'a retransmission');
  // CSeq + 1, still no credentials: it could not answer
  const fb = await verdictOf(s, reg(2));
  assert.deepEqual(offered(fb), ['MD5']);
  assert.equal(ruleOf(fb), 'auth-clients:learned_md5_fallback');
  // it answers MD5 and is in
  const ok = await verdictOf(s, reg(3, [credentials('REGISTER', nonceOf(fb), 'MD5')]));
  assert.equal(ok.action, 'continue');
  // its calls (new Call-IDs) from the same source and User-Agent: MD5 alone from the start
  assert.deepEqual(offered(await verdictOf(s, request({ method: 'INVITE', ua }))), ['MD5']);
  // another User-Agent at that address, or the same one at another address: not learned
  assert.deepEqual(offered(await verdictOf(s, request({ ua: 'OtherPhone/3' }))), ['SHA-256', 'MD5']);
  assert.deepEqual(offered(await verdictOf(s, request({ ua }), { ...PHONE, address: '198.51.100.99' })), ['SHA-256', 'MD5']);
  // learned choices expire (rules/auth-clients.yaml learning.seconds)
  s.advance(86_401_000);
  assert.deepEqual(offered(await verdictOf(s, request({ method: 'INVITE', ua }))), ['SHA-256', 'MD5']);
});

test('no fallback for a client that answered (even wrongly), after retrySeconds, in shadow mode, or once it has shown SHA-256', async () => {
  // answered, wrong password: a later unauthenticated REGISTER is a new attempt, not "could not answer"
  const s = setup();
  const ua = 'Phone/7';
  const first = await verdictOf(s, request({ ua, callId: 'x', cseq: 1 }));
  await verdictOf(s, request({ ua, callId: 'x', cseq: 2, headers: [credentials('REGISTER', nonceOf(first), 'SHA-256', { password: 'wrong-wrong' })] }));
  assert.deepEqual(offered(await verdictOf(s, request({ ua, callId: 'x', cseq: 3 }))), ['SHA-256', 'MD5']);
  // a retry later than learning.retrySeconds (900 s)
  const late = setup();
  await verdictOf(late, request({ ua, callId: 'y', cseq: 1 }));
  late.advance(901_000);
  assert.deepEqual(offered(await verdictOf(late, request({ ua, callId: 'y', cseq: 2 }))), ['SHA-256', 'MD5']);
  // shadow: the client never saw the challenge, so nothing is learned from its next request
  const sh = setup();
  sh.setEnforcing(false);
  await verdictOf(sh, request({ ua, callId: 'z', cseq: 1 }));
  assert.deepEqual(offered(await verdictOf(sh, request({ ua, callId: 'z', cseq: 2 }))), ['SHA-256', 'MD5']);
  // a client that authenticated with SHA-256 keeps it first: a forged "could not answer" (another
  // Call-ID, same address, port and User-Agent) does not move it to MD5
  const pin = setup();
  const c1 = await verdictOf(pin, request({ ua, callId: 'real', cseq: 1 }));
  assert.equal((await verdictOf(pin, request({ ua, callId: 'real', cseq: 2, headers: [credentials('REGISTER', nonceOf(c1), 'SHA-256')] }))).action, 'continue');
  await verdictOf(pin, request({ ua, callId: 'forged', cseq: 1 }));
  assert.deepEqual(offered(await verdictOf(pin, request({ ua, callId: 'forged', cseq: 2 }))), ['SHA-256', 'MD5']);
});

test('a client put on the MD5 fallback that cannot answer MD5 either is put back on its profile', async () => {
  const s = setup();
  const ua = 'ShaOnlyPhone/1';
  await verdictOf(s, request({ ua, callId: 'f', cseq: 1 }));
  assert.deepEqual(offered(await verdictOf(s, request({ ua, callId: 'f', cseq: 2 }))), ['MD5'], 'a forged or mistaken fallback');
  assert.deepEqual(offered(await verdictOf(s, request({ ua, callId: 'f', cseq: 3 }))), ['SHA-256', 'MD5'], 'could not answer MD5 alone: back to its profile');
});

test('a learned stronger algorithm goes first for a client whose profile lists it later', async () => {
  const clients = compileText('default: [MD5, SHA-256]\n').clients!;
  const s = setup(policy(), clients);
  const ua = 'Strongest/1';
  const c = await verdictOf(s, request({ ua }));
  assert.deepEqual(offered(c), ['MD5', 'SHA-256']);
  // this client picks the strongest, not the topmost: it answers SHA-256
  assert.equal((await verdictOf(s, request({ ua, headers: [credentials('REGISTER', nonceOf(c), 'SHA-256')] }))).action, 'continue');
  const next = await verdictOf(s, request({ ua }));
  assert.deepEqual(offered(next), ['SHA-256', 'MD5']);
  assert.equal(ruleOf(next), 'auth-clients:learned_stronger');
  assert.ok(s.events.some((e) => e.kind === 'answer' && e.algorithm === 'SHA-256'));
});

test('a client that answers every challenge at once (libre 3.12+): the strongest allowed answer is checked, the others ignored; the same algorithm twice is malformed', async () => {
  const s = setup(policy({ algorithms: ['SHA-256', 'MD5'] }), null);
  const c = await verdictOf(s, request({ ua: 'baresip v3.12.0 (x86_64/Linux)' }));
  assert.deepEqual(offered(c), ['SHA-256', 'MD5']);
  const both = [credentials('REGISTER', nonceOf(c), 'MD5'), credentials('REGISTER', nonceOf(c), 'SHA-256')];
  assert.equal((await verdictOf(s, request({ headers: both }))).action, 'continue');
  assert.deepEqual(s.events.filter((e) => e.kind === 'answer').map((e) => (e as { algorithm: string }).algorithm), ['SHA-256']);
  // a wrong SHA-256 next to a right MD5: the SHA-256 one is the one checked
  const c2 = await verdictOf(s, request({}));
  const mixed = [credentials('REGISTER', nonceOf(c2), 'MD5'), credentials('REGISTER', nonceOf(c2), 'SHA-256', { password: 'wrong-wrong' })];
  assert.equal((await verdictOf(s, request({ headers: mixed })) as { reason: string }).reason, 'wrong_credentials');
  const c3 = await verdictOf(s, request({}));
  const twice = [credentials('REGISTER', nonceOf(c3), 'MD5'), credentials('REGISTER', nonceOf(c3), 'MD5')];
  const v = await verdictOf(s, request({ headers: twice }));
  assert.deepEqual([(v as { status: number }).status, (v as { reason: string }).reason], [400, 'credentials_malformed']);
});

test('a user without the HA1 its client is challenged with fails exactly like a wrong password (reason ha1_missing in metrics only)', async () => {
  // 1001 has SHA-256 only (written with passwd --algorithms SHA-256)
  const users = (u: string, realm: string, alg: DigestAlgorithm): string | null | undefined => {
    if (u !== '1001' || realm !== REALM) return undefined;
    return alg === 'SHA-256' ? ha1(alg, u, realm, PASSWORDS[u]!) : null;
  };
  const s = setup(policy(), shipped(), users);
  const ua = 'baresip v1.0.0 (x86_64/linux)';
  const c = await verdictOf(s, request({ ua }));
  assert.deepEqual(offered(c), ['MD5']);
  const missing = await verdictOf(s, request({ ua, headers: [credentials('REGISTER', nonceOf(c), 'MD5')] }));
  const c2 = await verdictOf(s, request({ ua }));
  const unknown = await verdictOf(s, request({ ua, to: `<sip:9999@${REALM}>`, headers: [credentials('REGISTER', nonceOf(c2), 'MD5', { user: '9999' })] }));
  assert.equal((missing as { reason: string }).reason, 'ha1_missing');
  assert.equal((unknown as { reason: string }).reason, 'unknown_user');
  const shape = (v: Verdict) => [(v as { status: number }).status, offered(v)];
  assert.deepEqual(shape(missing), shape(unknown));
});

test('learning memory is bounded: a flood of distinct Call-IDs, User-Agents and long headers keeps both tables within learning.maxEntries', () => {
  const clients = compileText('learning: {maxEntries: 100}\n').clients!;
  const sel = new OfferSelector(() => 1_000);
  const p = policy();
  for (let i = 0; i < 1000; i++) {
    const ua = `Flood/${i} ${'x'.repeat(i % 3 === 0 ? 2000 : 10)}`;
    const callId = `${i}-${'c'.repeat(i % 2 === 0 ? 1000 : 5)}`;
    // two unanswered requests in one Call-ID: each one a learned fallback and a pending challenge
    sel.select(request({ ua, callId, cseq: 1 }), PHONE, p, clients, { unanswered: true, learn: true });
    assert.deepEqual(sel.select(request({ ua, callId, cseq: 2 }), PHONE, p, clients, { unanswered: true, learn: true }).algorithms, ['MD5']);
  }
  assert.ok(sel.sizes.learned <= 100 && sel.sizes.pending <= 100, JSON.stringify(sel.sizes));
  assert.ok(sel.sizes.learned > 0 && sel.sizes.pending > 0);
});

// ---------------------------------------------------------------- warnings

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-authclients-'));
after(() => fs.rmSync(TMP, { recursive: true, force: true }));

test('auditOffers: users without an HA1 their clients can be challenged with, and profiles the domain leaves empty', () => {
  const text = [
    '# test',
    formatUserLine('1001', REALM, { 'SHA-256': ha1('SHA-256', '1001', REALM, 'x'), 'MD5': ha1('MD5', '1001', REALM, 'x') }),
    formatUserLine('1002', REALM, { 'SHA-256': ha1('SHA-256', '1002', REALM, 'x') }),
    formatUserLine('1003', 'other.example', { 'SHA-256': ha1('SHA-256', '1003', 'other.example', 'x') }),
    '',
  ].join('\n');
  const db = UsersDb.parse(text, 'users.txt');
  assert.ok(db.ok);
  const auth = (p: AuthDomainPolicy): AuthConfig => ({ secret: SECRET, nonceSeconds: 300, lockout: { failures: 5, seconds: 60 }, enumeration: { users: 5, seconds: 60 }, domains: [], fallback: { ...p, name: '*' } });
  const w = auditOffers(auth(policy({ usersFile: 'users.txt' })), shipped(), () => db.db);
  assert.equal(w.length, 1, JSON.stringify(w));
  assert.equal(w[0]!.kind, 'ha1_missing');
  assert.equal(w[0]!.algorithm, 'MD5');
  assert.deepEqual([w[0]!.missing, w[0]!.users, w[0]!.examples], [1, 2, ['1002']]);
  assert.deepEqual(w[0]!.profiles, ['baresip_md5_only', 'sipp', 'kamailio_uac_md5_only', 'default', 'learned_md5_fallback']);
  assert.match(w[0]!.message, /1 of 2 users of realm pbx\.example\.com in users\.txt have no MD5 HA1 \(e\.g\. 1002\)/);
  // without MD5 in the allow-list: nobody is challenged with MD5, but the MD5-only profiles cannot be served
  const w2 = auditOffers(auth(policy({ usersFile: 'users.txt', algorithms: ['SHA-256'] })), shipped(), () => db.db);
  assert.deepEqual(w2.map((x) => `${x.kind}:${x.profiles.join(',')}`), ['profile_unservable:baresip_md5_only', 'profile_unservable:sipp', 'profile_unservable:kamailio_uac_md5_only']);
  // pbx mode: the edge challenges nobody
  assert.deepEqual(auditOffers(auth(policy({ mode: 'pbx', usersFile: 'users.txt' })), shipped(), () => db.db), []);
});

test('sip-edge check and passwd warn (and still succeed) when users lack the HA1 of an algorithm the shipped profiles offer', () => {
  const dir = fs.mkdtempSync(path.join(TMP, 'check-'));
  const cli = path.resolve(__dirname, '../edge/cli.js');
  const env = { PATH: process.env.PATH ?? '', SIPEDGE_AUTH_SECRET: SECRET };
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { cwd: dir, env, input: 'a-long-enough-password\n', encoding: 'utf8', timeout: 15_000 });
  // passwd with only SHA-256, as an operator who read "MD5 is weak" might
  assert.equal(run('passwd', '1001', '--realm', REALM, '--file', 'users.txt', '--no-config', '--algorithms', 'SHA-256').status, 0);
  fs.writeFileSync(path.join(dir, 'sip-edge.yaml'), `domains: [${REALM}]\nupstreams: [udp:127.0.0.1:5080]\nauth:\n  users: users.txt\n`);
  const r = run('check', '--config', 'sip-edge.yaml');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /^warning: 1 of 1 users of realm pbx\.example\.com in .*users\.txt have no MD5 HA1 \(e\.g\. 1001\), but clients matching baresip_md5_only, sipp, kamailio_uac_md5_only, default, learned_md5_fallback are challenged with MD5/m);
  // passwd itself says so when it leaves out an algorithm the configuration can challenge with
  const p = run('passwd', '1001', '--config', 'sip-edge.yaml', '--realm', REALM, '--file', 'users.txt', '--algorithms', 'SHA-256,SHA-512-256');
  assert.equal(p.status, 0, p.stderr);
  assert.equal(p.stderr, 'sip-edge passwd: warning: 1001 has no MD5 HA1 now, but clients matching baresip_md5_only, sipp, kamailio_uac_md5_only, default, learned_md5_fallback are challenged with MD5 in realm pbx.example.com: those phones cannot authenticate as 1001 (without --algorithms, passwd writes every algorithm)\n');
  // the passwd default (every algorithm) leaves nothing to warn about
  const q = run('passwd', '1001', '--config', 'sip-edge.yaml', '--realm', REALM, '--file', 'users.txt');
  assert.deepEqual([q.status, q.stderr], [0, '']);
  const r2 = run('check', '--config', 'sip-edge.yaml');
  assert.equal(r2.status, 0, r2.stderr);
  assert.equal(r2.stderr, '');
});
