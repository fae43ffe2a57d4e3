// The auth stage (edge/auth/stage.ts) on parsed requests, against the real in-memory store and
// Suspicion: challenges, every failure answer, replay, stale nonces, lockout, enumeration,
// identity stripping and the pbx pass-through watcher. Each test asserts what a phone or an
// attacker would see (status, challenge headers) and what the edge does (suspicion, edits).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ha1, responseFor, type DigestAlgorithm } from '../edge/auth/digest';
import type { AuthConfig, AuthDomainPolicy } from '../edge/config/types';
import { parseMessage } from '../edge/sip/parser';
import type { Endpoint, SipRequest, SipResponse } from '../edge/sip/types';
import { createAuthStage, type AuthEvent } from '../edge/auth/stage';
import { createMemoryStore } from '../edge/store/memory';
import { Suspicion, type SuspicionEvent } from '../edge/suspicion';
import type { MessageContext, Verdict } from '../edge/verdict';
import { snapshotWith } from './helpers/snapshot';
import { Observer } from '../edge/path/observer';
import { NullMetrics } from '../edge/metrics';

const REALM = 'pbx.example.com';
const SECRET = 'a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6';
const PASSWORDS: Record<string, string> = { '1001': 'correct horse battery', '1002': 'another good one' };

function policy(over: Partial<AuthDomainPolicy> = {}): AuthDomainPolicy {
  return {
    name: REALM, mode: 'edge', realm: REALM, usersFile: '/users', algorithms: ['SHA-256', 'SHA-512-256'], qop: ['auth'],
    matchFrom: true, forwardCredentials: false, identity: 'strip', pbxRewrite: 'challenge', ...over,
  };
}

function authConfig(p: AuthDomainPolicy = policy(), over: Partial<AuthConfig> = {}): AuthConfig {
  return {
    secret: SECRET, nonceSeconds: 300, lockout: { failures: 3, seconds: 900 }, enumeration: { users: 4, seconds: 60 },
    domains: [p], fallback: { ...p, name: '*' }, ...over,
  };
}

function setup(p: AuthDomainPolicy = policy(), over: Partial<AuthConfig> = {}) {
  let t = Date.UTC(2026, 10, 21, 12);
  const store = createMemoryStore({ now: () => t, sweepIntervalMs: 0 });
  const events: AuthEvent[] = [];
  const recorded: Array<{ src: string; event: SuspicionEvent }> = [];
  const snap = snapshotWith();
  const suspicion = new Suspicion({ store, rules: () => snap, now: () => t, softGraceMs: 0 });
  const record = suspicion.record.bind(suspicion);
  suspicion.record = (src, event, rule) => { recorded.push({ src, event }); return record(src, event, rule); };
  let enforcing = true;
  const retrans = new Set<SipRequest>();
  const stage = createAuthStage({
    auth: authConfig(p, over),
    users: () => (user, realm, alg) => (PASSWORDS[user] !== undefined && realm === REALM ? ha1(alg, user, realm, PASSWORDS[user]!) : undefined),
    store,
    suspicion,
    serves: (h) => h === REALM || h === '192.0.2.1',
    hasDialogRoute: (req) => /sip:tok-valid@/.test(req.raw.toString('latin1')),
    isRetransmission: (req) => retrans.has(req),
    enforcing: () => enforcing,
    now: () => t,
    onEvent: (e) => events.push(e),
    report: (src, evs) => observer.late(enforcing ? 'enforce' : 'shadow', src, evs),
  });
  // the stage records and promotes nothing itself: its verdicts carry the events, which the edge's
  // observer applies when the stage enforces (edge/path/observer.ts); run them through it here
  const observer = new Observer({ metrics: new NullMetrics(), store, suspicion, trustOf: () => 'untrusted' });
  const check = stage.check.bind(stage);
  stage.check = (c) => {
    const seen = (v: Verdict): Verdict => { observer.verdict(stage, v, enforcing ? 'enforce' : 'shadow', c); return v; };
    const v = check(c);
    return v instanceof Promise ? v.then(seen) : seen(v);
  };
  return {
    stage, store, suspicion, events, recorded, retrans,
    advance: (ms: number) => { t += ms; },
    setEnforcing: (v: boolean) => { enforcing = v; },
  };
}

const PHONE: Endpoint = { transport: 'udp', address: '198.51.100.20', port: 5060 };

interface ReqOpts { method?: string; ruri?: string; from?: string; to?: string; headers?: string[]; callId?: string; body?: string }
function request(o: ReqOpts = {}): SipRequest {
  const method = o.method ?? 'REGISTER';
  const ruri = o.ruri ?? (method === 'REGISTER' ? `sip:${REALM}` : `sip:1002@${REALM}`);
  const body = o.body ?? '';
  const lines = [
    `${method} ${ruri} SIP/2.0`,
    'Via: SIP/2.0/UDP 198.51.100.20:5060;branch=z9hG4bK-' + Math.random().toString(36).slice(2),
    'Max-Forwards: 70',
    `From: ${o.from ?? `<sip:1001@${REALM}>`};tag=f1`,
    `To: ${o.to ?? (method === 'REGISTER' ? `<sip:1001@${REALM}>` : `<sip:1002@${REALM}>`)}`,
    `Call-ID: ${o.callId ?? 'c-' + Math.random().toString(36).slice(2)}`,
    `CSeq: 1 ${method}`,
    ...(o.headers ?? []),
    `Content-Length: ${Buffer.byteLength(body)}`,
  ];
  const r = parseMessage(Buffer.from(`${lines.join('\r\n')}\r\n\r\n${body}`, 'latin1'), { framing: 'datagram' });
  assert.ok(r.ok, r.ok ? '' : r.reason);
  return r.msg as SipRequest;
}

function ctx(msg: SipRequest, source: Endpoint = PHONE): MessageContext {
  return { msg, source, side: 'outside', trust: 'untrusted', receivedAt: 0 };
}

/** a reply verdict's extra header lines */
function hdrs(v: Verdict): ReadonlyArray<readonly [string, string]> {
  return v.action === 'reply' ? v.headers ?? [] : [];
}

/** the challenge's parameters, from a reply verdict's first header */
function challengeOf(v: Verdict): Map<string, string> {
  assert.equal(v.action, 'reply');
  const h = (v as { headers?: ReadonlyArray<readonly [string, string]> }).headers ?? [];
  assert.ok(h.length > 0, 'a challenge header');
  const m = new Map<string, string>();
  for (const x of h[0]![1].matchAll(/(\w+)=(?:"([^"]*)"|([^,\s]*))/g)) m.set(x[1]!, x[2] ?? x[3]!);
  return m;
}

interface CredOpts { user?: string; password?: string; realm?: string; alg?: DigestAlgorithm | null; qop?: string | null; nc?: string; cnonce?: string; uri?: string; nonce?: string }
function credentials(method: string, uri: string, nonce: string, o: CredOpts = {}): string {
  const user = o.user ?? '1001';
  const realm = o.realm ?? REALM;
  const alg = o.alg === undefined ? 'SHA-256' : o.alg;
  const a = alg ?? 'MD5';
  const nc = o.nc ?? '00000001';
  const cnonce = o.cnonce ?? `c${Math.random().toString(36).slice(2)}`;
  const duri = o.uri ?? uri;
  const h = ha1(a, user, realm, o.password ?? PASSWORDS[user] ?? 'whatever-password');
  const resp = responseFor(a, h, { method, uri: duri, nonce: o.nonce ?? nonce, nc, cnonce, qop: 'auth' });
  const qop = o.qop === undefined ? 'auth' : o.qop;
  return `${method === 'REGISTER' ? 'Authorization' : 'Proxy-Authorization'}: Digest username="${user}", realm="${realm}", nonce="${o.nonce ?? nonce}", uri="${duri}", response="${resp}"${alg ? `, algorithm=${alg}` : ''}${qop ? `, qop=${qop}, nc=${nc}, cnonce="${cnonce}"` : ''}`;
}

/** challenge, then answer: the verdict of the answered request */
async function authenticate(s: ReturnType<typeof setup>, o: ReqOpts & CredOpts = {}, source: Endpoint = PHONE): Promise<{ verdict: Verdict; ctx: MessageContext; nonce: string }> {
  const first = await s.stage.check(ctx(request(o), source));
  const nonce = challengeOf(first).get('nonce')!;
  const method = o.method ?? 'REGISTER';
  const probe = request(o);
  const c = ctx(request({ ...o, headers: [...(o.headers ?? []), credentials(method, probe.uri, nonce, o)] }), source);
  const verdict = await s.stage.check(c);
  return { verdict, ctx: c, nonce };
}

test('no credentials: REGISTER gets 401 with one WWW-Authenticate per algorithm, INVITE 407 with Proxy-Authenticate (RFC 3261 22.1, RFC 8760)', async () => {
  const s = setup();
  const v = await s.stage.check(ctx(request()));
  assert.equal(v.action, 'reply');
  assert.equal((v as { status: number }).status, 401);
  const h = hdrs(v);
  assert.deepEqual(h.map(([n]) => n), ['WWW-Authenticate', 'WWW-Authenticate']);
  assert.match(h[0]![1], /^Digest realm="pbx\.example\.com", nonce="[^"]+", algorithm=SHA-256, qop="auth"$/);
  assert.match(h[1]![1], /algorithm=SHA-512-256/);
  const inv = await s.stage.check(ctx(request({ method: 'INVITE' })));
  assert.equal((inv as { status: number }).status, 407);
  assert.equal(hdrs(inv)[0]![0], 'Proxy-Authenticate');
  assert.deepEqual(s.recorded.map((r) => r.event), ['missing_auth', 'missing_auth']);
});

test('a phone with the right password registers: continue, credentials and identity headers stripped, source promoted', async () => {
  const s = setup();
  const { verdict, ctx: c } = await authenticate(s, { headers: ['P-Asserted-Identity: <sip:911@pbx.example.com>'] });
  assert.deepEqual(verdict, { action: 'continue', events: [{ kind: 'promote' }] });
  assert.deepEqual(c.edits?.remove.sort(), ['authorization', 'p-asserted-identity', 'p-preferred-identity', 'remote-party-id']);
  assert.deepEqual(c.edits?.add, []);
  assert.equal(s.suspicion.isPromoted(PHONE.address), true);
  assert.ok(s.events.some((e) => e.kind === 'success'));
});

test('identity: assert mode replaces a claimed identity by the authenticated one (RFC 3325)', async () => {
  const s = setup(policy({ identity: 'assert' }));
  const { verdict, ctx: c } = await authenticate(s, { method: 'INVITE', headers: ['P-Asserted-Identity: <sip:boss@pbx.example.com>'] });
  assert.deepEqual(verdict, { action: 'continue', events: [{ kind: 'promote' }] });
  assert.deepEqual(c.edits?.add, [['P-Asserted-Identity', '<sip:1001@pbx.example.com>']]);
  assert.ok(c.edits?.remove.includes('proxy-authorization'));
});

test('anti-enumeration: unknown user and wrong password get byte-identical answers but distinct reason codes', async () => {
  const s = setup();
  const wrong = await authenticate(s, { password: 'not the password' });
  const unknown = await authenticate(s, { user: '7777', from: `<sip:7777@${REALM}>`, to: `<sip:7777@${REALM}>` });
  for (const r of [wrong, unknown]) {
    assert.equal(r.verdict.action, 'reply');
    assert.equal((r.verdict as { status: number }).status, 401);
  }
  assert.equal((wrong.verdict as { reason: string }).reason, 'wrong_credentials');
  assert.equal((unknown.verdict as { reason: string }).reason, 'unknown_user');
  // what goes on the wire: the reason code and the suspicion events stay inside the edge
  const shape = (v: Verdict) => JSON.stringify({ ...(v as object), reason: undefined, events: undefined, headers: hdrs(v).map(([n, x]) => [n, x.replace(/nonce="[^"]+"/, 'nonce=X')]) });
  assert.equal(shape(wrong.verdict), shape(unknown.verdict));
  // and both are the same as the very first challenge
  const first = await s.stage.check(ctx(request()));
  assert.equal(shape(first), shape(wrong.verdict));
  assert.deepEqual(s.recorded.filter((r) => r.event !== 'missing_auth').map((r) => r.event), ['auth_failure', 'unknown_user']);
});

test('replayed nonce-count: a nonce+nc is good for one answer, right or wrong (svcrack -n reuses nonce and nc=00000001)', async () => {
  const s = setup();
  const { verdict, nonce } = await authenticate(s);
  assert.equal(verdict.action, 'continue');
  const uri = `sip:${REALM}`;
  const again = await s.stage.check(ctx(request({ headers: [credentials('REGISTER', uri, nonce)] })));
  assert.equal(again.action, 'reply');
  assert.equal((again as { reason: string }).reason, 'nonce_replay', 'a fresh cnonce does not make an old nc new');
  // the next nc of the same nonce is fine (a phone re-using its nonce for a refresh)
  const next = await s.stage.check(ctx(request({ headers: [credentials('REGISTER', uri, nonce, { nc: '00000002' })] })));
  assert.equal(next.action, 'continue');
  // a wrong guess spends its nc too: reusing it with the right password fails
  const n2 = challengeOf(await s.stage.check(ctx(request()))).get('nonce')!;
  const wrong = await s.stage.check(ctx(request({ headers: [credentials('REGISTER', uri, n2, { password: 'bad guess here' })] })));
  assert.equal((wrong as { reason: string }).reason, 'wrong_credentials');
  const right = await s.stage.check(ctx(request({ headers: [credentials('REGISTER', uri, n2)] })));
  assert.equal((right as { reason: string }).reason, 'nonce_replay');
});

test('an expired nonce with the right answer gets stale=true and counts no failure; with a wrong answer it is a failure', async () => {
  const s = setup();
  const first = await s.stage.check(ctx(request()));
  const nonce = challengeOf(first).get('nonce')!;
  s.advance(301_000);
  const v = await s.stage.check(ctx(request({ headers: [credentials('REGISTER', `sip:${REALM}`, nonce)] })));
  assert.equal((v as { reason: string }).reason, 'nonce_stale');
  assert.match(hdrs(v)[0]![1], /, stale=true$/);
  assert.equal(s.recorded.filter((r) => r.event === 'auth_failure').length, 0);
  const bad = await s.stage.check(ctx(request({ headers: [credentials('REGISTER', `sip:${REALM}`, nonce, { password: 'nope-nope-nope' })] })));
  assert.equal((bad as { reason: string }).reason, 'wrong_credentials');
  assert.doesNotMatch(hdrs(bad)[0]![1], /stale/);
});

test('each defect has its answer: wrong realm, foreign nonce, nonce of another source, MD5 not offered, downgraded qop, malformed, other URI', async () => {
  const s = setup();
  const nonce = challengeOf(await s.stage.check(ctx(request()))).get('nonce')!;
  const uri = `sip:${REALM}`;
  const cases: Array<[string, string, number, string]> = [
    ['wrong realm', credentials('REGISTER', uri, nonce, { realm: 'other.example' }), 401, 'realm_mismatch'],
    ['foreign nonce', credentials('REGISTER', uri, nonce, { nonce: 'AAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAA', password: 'nope-nope-nope' }), 401, 'nonce_invalid'],
    // RFC 7616 3.3: a valid digest for a nonce that is not good gets stale=true (not a way in)
    ['foreign nonce, right password', credentials('REGISTER', uri, nonce, { nonce: 'AAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAA' }), 401, 'nonce_stale'],
    ['MD5 when not offered', credentials('REGISTER', uri, nonce, { alg: 'MD5' }), 401, 'algorithm_not_offered'],
    ['no algorithm means MD5', credentials('REGISTER', uri, nonce, { alg: null }), 401, 'algorithm_not_offered'],
    ['qop removed (RFC 2069 downgrade)', credentials('REGISTER', uri, nonce, { qop: null }), 401, 'qop_invalid'],
    ['qop auth-int not offered', credentials('REGISTER', uri, nonce, { qop: 'auth-int' }), 401, 'qop_invalid'],
    ['unterminated quote', 'Authorization: Digest username="1001, realm="pbx.example.com"', 400, 'credentials_malformed'],
    ['no response', `Authorization: Digest username="1001", realm="${REALM}", nonce="${nonce}", uri="${uri}"`, 400, 'credentials_malformed'],
    ['bad nc', credentials('REGISTER', uri, nonce, { nc: 'xyz' }), 400, 'credentials_malformed'],
    ['two credentials for our realm', `${credentials('REGISTER', uri, nonce)}\r\n${credentials('REGISTER', uri, nonce)}`, 400, 'credentials_malformed'],
    ['digest-uri names another resource', credentials('REGISTER', uri, nonce, { uri: 'sip:other.example' }), 400, 'uri_mismatch'],
  ];
  for (const [what, header, status, reason] of cases) {
    const v = await s.stage.check(ctx(request({ headers: header.split('\r\n') })));
    assert.equal(v.action, 'reply', what);
    assert.equal((v as { status: number }).status, status, what);
    assert.equal((v as { reason: string }).reason, reason, what);
  }
  // a nonce issued to another address is useless from here (stateless nonces bind the source):
  // a wrong answer is a failure; the right one (the phone's NAT address changed, or a captured
  // request replayed) only gets a fresh challenge with stale=true (RFC 7616 3.3), no way in
  const moved = { ...PHONE, address: '198.51.100.21' };
  const elsewhere = await s.stage.check(ctx(request({ headers: [credentials('REGISTER', uri, nonce, { password: 'nope-nope-nope' })] }), moved));
  assert.equal((elsewhere as { reason: string }).reason, 'nonce_invalid');
  const movedRight = await s.stage.check(ctx(request({ headers: [credentials('REGISTER', uri, nonce)] }), moved));
  assert.equal((movedRight as { reason: string }).reason, 'nonce_stale');
  assert.match(hdrs(movedRight)[0]![1], /, stale=true$/);
  // a nonce made with another secret (another deployment, or this one before a restart with a
  // per-process secret) is foreign too: the same two answers
  const other = setup(policy(), { secret: 'ffeeddccbbaa99887766554433221100' });
  const foreign = challengeOf(await other.stage.check(ctx(request()))).get('nonce')!;
  const v = await s.stage.check(ctx(request({ headers: [credentials('REGISTER', uri, foreign, { password: 'nope-nope-nope' })] })));
  assert.equal((v as { reason: string }).reason, 'nonce_invalid');
  const before = s.recorded.filter((r) => r.event === 'auth_failure').length;
  const restarted = await s.stage.check(ctx(request({ headers: [credentials('REGISTER', uri, foreign)] })));
  assert.equal((restarted as { reason: string }).reason, 'nonce_stale');
  assert.equal(s.recorded.filter((r) => r.event === 'auth_failure').length, before, 'no suspicion for the right password');
});

test('MD5 works when the domain enables it for old phones', async () => {
  const s = setup(policy({ algorithms: ['SHA-256', 'MD5'] }));
  assert.equal((await authenticate(s, { alg: 'MD5' })).verdict.action, 'continue');
  assert.equal((await authenticate(s, { alg: null })).verdict.action, 'continue', 'no algorithm parameter = MD5 (RFC 7616 3.4)');
});

test('qop=auth-int covers the body when offered (RFC 7616 3.4.3)', async () => {
  const s = setup(policy({ qop: ['auth', 'auth-int'] }));
  const body = 'v=0\r\n';
  const first = await s.stage.check(ctx(request({ method: 'INVITE', body })));
  assert.match(hdrs(first)[0]![1], /qop="auth,auth-int"/);
  const { createHash } = await import('node:crypto');
  const H = (x: string) => createHash('sha256').update(x).digest('hex');
  const uri = `sip:1002@${REALM}`;
  const header = (nonce: string) => {
    const resp = H(`${ha1('SHA-256', '1001', REALM, PASSWORDS['1001']!)}:${nonce}:00000001:abc:auth-int:${H(`INVITE:${uri}:${H(body)}`)}`);
    return `Proxy-Authorization: Digest username="1001", realm="${REALM}", nonce="${nonce}", uri="${uri}", response="${resp}", algorithm=SHA-256, qop=auth-int, nc=00000001, cnonce="abc"`;
  };
  assert.equal((await s.stage.check(ctx(request({ method: 'INVITE', body, headers: [header(challengeOf(first).get('nonce')!)] })))).action, 'continue');
  const second = challengeOf(await s.stage.check(ctx(request({ method: 'INVITE', body })))).get('nonce')!;
  const tampered = await s.stage.check(ctx(request({ method: 'INVITE', body: 'v=1\r\n', headers: [header(second)] })));
  assert.equal((tampered as { reason: string }).reason, 'wrong_credentials', 'the body was changed on the way');
});

test('authenticated as one user, claiming another: From mismatch and REGISTER for a foreign AOR get 403', async () => {
  const s = setup();
  const f = await authenticate(s, { method: 'INVITE', from: `<sip:1002@${REALM}>` });
  assert.equal((f.verdict as { status: number }).status, 403);
  assert.equal((f.verdict as { reason: string }).reason, 'from_mismatch');
  const r = await authenticate(s, { to: `<sip:1002@${REALM}>` });
  assert.equal((r.verdict as { reason: string }).reason, 'aor_mismatch');
  // matchFrom off: the PBX decides
  const loose = setup(policy({ matchFrom: false }));
  assert.equal((await authenticate(loose, { method: 'INVITE', from: `<sip:1002@${REALM}>` })).verdict.action, 'continue');
});

test('lockout: repeated failures lock the user for unknown sources, the owner (promoted source) keeps working', async () => {
  const s = setup();
  const OWNER: Endpoint = { ...PHONE, address: '198.51.100.50' };
  assert.equal((await authenticate(s, {}, OWNER)).verdict.action, 'continue');
  const ATTACKER: Endpoint = { ...PHONE, address: '203.0.113.66' };
  for (let i = 0; i < 4; i++) await authenticate(s, { password: `guess-${i}-guess` }, ATTACKER);
  await new Promise((r) => setImmediate(r));
  const lock = s.events.find((e) => e.kind === 'lockout');
  assert.ok(lock && lock.kind === 'lockout');
  assert.equal(lock.user, '1001');
  assert.equal(lock.source.address, ATTACKER.address);
  // the right password from the attacker's address (or any unknown one) is refused like a wrong one
  const guessed = await authenticate(s, {}, ATTACKER);
  assert.equal((guessed.verdict as { reason: string }).reason, 'user_locked');
  assert.equal((guessed.verdict as { status: number }).status, 401);
  assert.equal((await authenticate(s, {}, OWNER)).verdict.action, 'continue', 'the owner is promoted: not locked out');
  s.advance(901_000);
  assert.equal((await authenticate(s, {}, { ...PHONE, address: '203.0.113.67' })).verdict.action, 'continue', 'the lock ends');
});

test('enumeration: more distinct target users from one source than the threshold each count as suspicion', async () => {
  const s = setup();
  for (let ext = 100; ext < 110; ext++) {
    await s.stage.check(ctx(request({ to: `<sip:${ext}@${REALM}>`, from: `<sip:${ext}@${REALM}>` })));
  }
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(s.recorded.filter((r) => r.event === 'enumeration').length, 6, '10 distinct users, threshold 4');
  // one phone re-registering the same AOR again and again is not enumeration
  const t = setup();
  for (let i = 0; i < 10; i++) await t.stage.check(ctx(request()));
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(t.recorded.filter((r) => r.event === 'enumeration').length, 0);
});

test('not challenged: ACK, CANCEL, retransmissions, in-dialog requests with our signed Route; trusted and inside sources', async () => {
  const s = setup();
  const pass: Array<[string, MessageContext]> = [
    ['ACK', ctx(request({ method: 'ACK' }))],
    ['CANCEL', ctx(request({ method: 'CANCEL' }))],
    ['in-dialog BYE with our Route', ctx(request({ method: 'BYE', to: `<sip:1002@${REALM}>;tag=t9`, headers: ['Route: <sip:tok-valid@192.0.2.1;lr>'] }))],
    ['trusted', { ...ctx(request()), trust: 'trusted' }],
    ['inside', { ...ctx(request()), side: 'inside', trust: 'inside' }],
  ];
  const retx = request();
  s.retrans.add(retx);
  pass.push(['retransmission', ctx(retx)]);
  for (const [what, c] of pass) assert.equal((await s.stage.check(c)).action, 'continue', what);
  // an in-dialog request with a made-up Route (or none) is a new request to the edge: challenged
  const forged = await s.stage.check(ctx(request({ method: 'BYE', to: `<sip:1002@${REALM}>;tag=t9`, headers: ['Route: <sip:up0@192.0.2.1;lr>'] })));
  assert.equal((forged as { status: number }).status, 407);
  // untrusted identity headers are stripped from what passes too
  const ack = ctx(request({ method: 'ACK', headers: ['Remote-Party-ID: <sip:911@x>'] }));
  await s.stage.check(ack);
  assert.ok(ack.edits?.remove.includes('remote-party-id'));
});

test('shadow mode decides but records no suspicion and locks nobody', async () => {
  const s = setup();
  s.setEnforcing(false);
  const v = await s.stage.check(ctx(request()));
  assert.equal((v as { status: number }).status, 401);
  for (let i = 0; i < 5; i++) await authenticate(s, { password: `guess-${i}-guess` });
  await new Promise((r) => setImmediate(r));
  assert.equal(s.recorded.length, 0);
  assert.equal(s.stage.lockedCount, 0);
});

// ---- pbx mode (pass-through): the PBX challenges, the edge watches

function response(req: SipRequest, status: number, headers: string[] = []): SipResponse {
  const lines = [`SIP/2.0 ${status} X`, 'Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx', `From: <sip:1001@${REALM}>;tag=f1`, `To: <sip:1001@${REALM}>;tag=pbx`, 'Call-ID: c', `CSeq: 1 ${req.method}`, ...headers, 'Content-Length: 0'];
  const r = parseMessage(Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), { framing: 'datagram' });
  assert.ok(r.ok);
  return r.msg as SipResponse;
}

test('pbx mode: the PBX challenge is learnt; a 404 to an unauthenticated request becomes that challenge with a fresh nonce', async () => {
  const s = setup(policy({ mode: 'pbx', usersFile: undefined }));
  const reg = request();
  assert.equal((await s.stage.check(ctx(reg))).action, 'continue', 'pbx mode: the PBX challenges');
  const pbxChallenge = 'Digest algorithm=MD5, realm="asterisk", nonce="1a2b3c4d"';
  assert.equal(s.stage.finalToOutside(reg, PHONE, response(reg, 401, [`WWW-Authenticate: ${pbxChallenge}`])), undefined, '401 forwarded');
  const probe = request({ to: `<sip:999@${REALM}>` });
  const sub = s.stage.finalToOutside(probe, PHONE, response(probe, 404));
  assert.ok(sub);
  assert.equal(sub.status, 401);
  assert.equal(sub.headers![0]![0], 'WWW-Authenticate');
  assert.match(sub.headers![0]![1], /^Digest algorithm=MD5, realm="asterisk", nonce="[0-9a-f]{8}"$/);
  assert.notEqual(sub.headers![0]![1], pbxChallenge, 'a fresh nonce');
  assert.ok(s.recorded.some((r) => r.event === 'unknown_user'));
  // an INVITE to an unknown number: 407 in the same words as the PBX's 401 (no 407 seen yet)
  const call = request({ method: 'INVITE', ruri: `sip:999@${REALM}` });
  const sub407 = s.stage.finalToOutside(call, PHONE, response(call, 404));
  assert.equal(sub407?.status, 407);
  assert.equal(sub407?.headers![0]![0], 'Proxy-Authenticate');
  assert.match(sub407!.headers![0]![1], /^Digest algorithm=MD5, realm="asterisk", nonce="[0-9a-f]{8}"$/);
  // forbidden variant
  const f = setup(policy({ mode: 'pbx', usersFile: undefined, pbxRewrite: 'forbidden' }));
  assert.deepEqual(f.stage.finalToOutside(probe, PHONE, response(probe, 404)), { status: 403, reason: 'pbx_not_found', fromResponse: {} });
  // a 404 to an authenticated request (a wrong number dialled by a real user) is left alone
  const authed = request({ method: 'INVITE', headers: ['Proxy-Authorization: Digest username="1001", realm="asterisk", nonce="1", uri="x", response="y"'] });
  assert.equal(s.stage.finalToOutside(authed, PHONE, response(authed, 404)), undefined);
});

test('pbx mode: a rejected answer is a failure per source and per user, a 2xx a success (promotion), stale=true no failure', async () => {
  const s = setup(policy({ mode: 'pbx', usersFile: undefined }), { lockout: { failures: 2, seconds: 900 } });
  const ATT: Endpoint = { ...PHONE, address: '203.0.113.90' };
  const withCreds = () => request({ headers: ['Authorization: Digest username="1001", realm="asterisk", nonce="1", uri="sip:pbx.example.com", response="00"'] });
  for (let i = 0; i < 3; i++) { const r = withCreds(); s.stage.finalToOutside(r, ATT, response(r, 401, ['WWW-Authenticate: Digest realm="asterisk", nonce="2"'])); }
  await new Promise((r) => setImmediate(r));
  assert.equal(s.recorded.filter((r) => r.event === 'auth_failure').length, 3);
  assert.ok(s.events.some((e) => e.kind === 'lockout'));
  // the locked user is answered by the edge (with the PBX's challenge shape) for unknown sources
  const v = await s.stage.check(ctx(withCreds(), ATT));
  assert.equal((v as { reason: string }).reason, 'user_locked');
  assert.match(hdrs(v)[0]![1], /realm="asterisk"/);
  const r2 = withCreds();
  const before = s.recorded.length;
  s.stage.finalToOutside(r2, PHONE, response(r2, 401, ['WWW-Authenticate: Digest realm="asterisk", nonce="3", stale=true']));
  assert.equal(s.recorded.length, before, 'stale: not a failure');
  // a REGISTER the PBX accepted is promoted once, by the message path (ProxyEvents.registered),
  // not a second time by the stage; any other request with credentials the PBX accepted is
  s.stage.finalToOutside(r2, PHONE, response(r2, 200));
  assert.equal(s.suspicion.isPromoted(PHONE.address), false);
  const inv = request({ method: 'INVITE', headers: ['Proxy-Authorization: Digest username="1001", realm="asterisk", nonce="1", uri="sip:1002@pbx.example.com", response="00"'] });
  s.stage.finalToOutside(inv, PHONE, response(inv, 200));
  assert.equal(s.suspicion.isPromoted(PHONE.address), true);
});
