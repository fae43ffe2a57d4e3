// Scanner signatures: the shipped rules/scanner.yaml against real captured scanner packets
// (svmap, svwar, svcrack, sipsak, sipp captured on loopback from the Debian packages) and
// packets built the way sippts / sipcli build them, benign phones that must not match,
// compile errors with file:line:column, unsafe regexes refused, and linear-time matching.
import { test } from 'node:test';
import { snapshotWith } from './helpers/snapshot';
import assert from 'node:assert/strict';
import { answerable } from '../edge/path/respond';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadYamlFile, loadYamlText } from '../edge/config/yaml';
import { parseMessage } from '../edge/sip/parser';
import type { Endpoint, SipMessage } from '../edge/sip/types';
import { SCANNER_REASONS, createScannerStage } from '../edge/policy/scanner/stage';
import type { Verdict } from '../edge/verdict';
import {
  ScannerFileSchema, compileScanner, isSipviciousTag, runFingerprint, vetPattern, type ScannerFile,
} from '../edge/policy/scanner/compile';
import type { RulesSnapshot } from '../edge/policy/snapshot';
import type { CompiledScanner } from '../edge/policy/scanner/compile';

const ROOT = path.resolve(__dirname, '../..');
const FIX = path.join(ROOT, 'test/fixtures/scanners');
const SOURCE: Endpoint = { transport: 'udp', address: '198.51.100.7', port: 5060, listenerId: 'test' };

function parse(b: Buffer, maxBytes?: number, maxLine?: number): SipMessage {
  const limits = maxBytes ? { maxMessageBytes: maxBytes, maxRequestUriBytes: 512, maxHeaderLineBytes: maxLine ?? 4096, maxHeaders: 100 } : undefined;
  const r = parseMessage(b, { framing: 'datagram', ...(limits ? { limits } : {}) });
  assert.ok(r.ok, `fixture must parse: ${r.ok ? '' : r.reason}`);
  return r.msg;
}
const fixture = (name: string): SipMessage => parse(fs.readFileSync(path.join(FIX, name)));

function shipped(): CompiledScanner {
  const r = loadYamlFile(path.join(ROOT, 'rules/scanner.yaml'), ScannerFileSchema);
  assert.ok(r.ok, r.ok ? '' : r.errors.join('\n'));
  const c = compileScanner(r.value, r.at);
  assert.deepEqual(c.errors, []);
  return c.scanner;
}

function compileText(text: string): { errors: string[]; scanner?: CompiledScanner; loadErrors?: string[] } {
  const r = loadYamlText(text, 'scanner.yaml', ScannerFileSchema);
  if (!r.ok) return { errors: [], loadErrors: r.errors };
  const c = compileScanner(r.value, r.at);
  return { errors: c.errors, scanner: c.scanner };
}

export function snapshotOf(scanner: CompiledScanner): RulesSnapshot {
  return snapshotWith({
    stages: [{ name: 'sanity', mode: 'enforce' }, { name: 'scanner', mode: 'enforce' }],
    trustedSkip: new Set(['scanner']), scanner, ruleNames: scanner.signatures.map((s) => s.name),
  });
}

const SCANNER = shipped();
const STAGE = createScannerStage(() => snapshotOf(SCANNER));
function verdict(msg: SipMessage, side: 'outside' | 'inside' = 'outside'): Verdict {
  const v = STAGE.check({ msg, source: SOURCE, side, trust: side === 'inside' ? 'inside' : 'untrusted', receivedAt: 0 });
  assert.ok(!(v instanceof Promise));
  return v as Verdict;
}

// ---- the shipped set against real scanner packets ---------------------------------------------

const SCANNERS: ReadonlyArray<{ file: string; rule: string; action: Verdict['action']; reason: string }> = [
  { file: 'svmap-options.sip', rule: 'sipvicious_friendly_scanner', action: 'drop', reason: 'scanner_user_agent' },
  { file: 'svmap-invite.sip', rule: 'sipvicious_friendly_scanner', action: 'drop', reason: 'scanner_user_agent' },
  { file: 'svwar-register.sip', rule: 'sipvicious_friendly_scanner', action: 'drop', reason: 'scanner_user_agent' },
  { file: 'svwar-invite.sip', rule: 'sipvicious_friendly_scanner', action: 'drop', reason: 'scanner_user_agent' },
  { file: 'svcrack-register.sip', rule: 'sipvicious_friendly_scanner', action: 'drop', reason: 'scanner_user_agent' },
  { file: 'svwar-register-renamed-ua.sip', rule: 'sipvicious_from_tag', action: 'drop', reason: 'scanner_fingerprint' },
  { file: 'sippts-options.sip', rule: 'sippts', action: 'drop', reason: 'scanner_user_agent' },
  { file: 'sippts-invite-sdp.sip', rule: 'sippts_sdp', action: 'drop', reason: 'scanner_body' },
  { file: 'sipcli-invite.sip', rule: 'sipcli', action: 'drop', reason: 'scanner_user_agent' },
  { file: 'sipsak-options.sip', rule: 'sipsak', action: 'drop', reason: 'scanner_user_agent' },
  { file: 'sipsak-flood-options.sip', rule: 'sipsak', action: 'drop', reason: 'scanner_user_agent' },
  // sipp is logged, never dropped: it is a legitimate test tool and this project's test peer
  { file: 'sipp-uac-invite.sip', rule: 'sipp_default_tag', action: 'log', reason: 'scanner_fingerprint' },
  // a forged response is only ever dropped
  { file: 'forged-200-friendly-scanner.sip', rule: 'sipvicious_friendly_scanner', action: 'drop', reason: 'scanner_user_agent' },
];

for (const c of SCANNERS) {
  test(`scanner packet ${c.file} -> ${c.action} ${c.reason} rule=${c.rule}`, () => {
    const v = verdict(fixture(c.file));
    assert.equal(v.action, c.action);
    assert.ok(v.action !== 'continue');
    assert.equal(v.reason, c.reason);
    assert.equal((v as { rule?: string }).rule, c.rule);
    assert.ok((SCANNER_REASONS as readonly string[]).includes(v.reason));
  });
}

const BENIGN = fs.readdirSync(FIX).filter((f) => f.startsWith('benign-'));

test('there are benign fixtures for every phone/PBX family named in the issue', () => {
  for (const fam of ['yealink', 'zoiper', 'linphone', 'grandstream', 'polycom', 'microsip', 'asterisk', 'freeswitch']) {
    assert.ok(BENIGN.some((f) => f.includes(fam)), `missing benign fixture for ${fam}`);
  }
});

for (const file of BENIGN) {
  test(`benign ${file} matches no signature at all`, () => {
    const m = fixture(file);
    assert.equal(SCANNER.match(m), null);
    assert.deepEqual(verdict(m), { action: 'continue' });
  });
}

test('inside traffic (the PBX) is never checked', () => {
  assert.deepEqual(verdict(fixture('svmap-options.sip'), 'inside'), { action: 'continue' });
});

test('stage declares itself: name, trusted-skippable, closed reasons', () => {
  assert.equal(STAGE.name, 'scanner');
  assert.equal(STAGE.skippableForTrusted, true);
  assert.deepEqual([...STAGE.reasons], [...SCANNER_REASONS]);
});

// ---- fingerprints, each on its own ------------------------------------------------------------

test('sipvicious_from_tag decodes the real tags of svmap, svwar and svcrack', () => {
  for (const f of ['svmap-options.sip', 'svmap-invite.sip', 'svwar-register.sip', 'svwar-invite.sip', 'svcrack-register.sip', 'svwar-register-renamed-ua.sip']) {
    assert.equal(runFingerprint('sipvicious_from_tag', fixture(f)), true, f);
  }
  // svmap: hex of "7f0000013ad4" (127.0.0.1, port 15060) + \x01 + random digits
  assert.equal(Buffer.from('3766303030303031336164340132323234323034313137', 'hex').toString('latin1'), '7f0000013ad4\x012224204117');
  assert.equal(isSipviciousTag('3206210844'), true); // svcrack's fixed tag
  // real phones' tags: random hex / digits / base64-ish
  for (const t of ['2093861546', '8b2e4c1a', 'wJ8Fq2s~H', 'C1E3A5B7-9D0F2468', '3f2d1c0b9a8e4f6d8c7b5a4e3d2c1b0a', 'e1y6QS0Umj8Sp', '01', '0101', '31013', '310141']) {
    assert.equal(isSipviciousTag(t), false, t);
  }
  for (const f of BENIGN) assert.equal(runFingerprint('sipvicious_from_tag', fixture(f)), false, f);
});

test('sipsak_port9 finds the flood mode, not the normal mode or phones', () => {
  assert.equal(runFingerprint('sipsak_port9', fixture('sipsak-flood-options.sip')), true);
  assert.equal(runFingerprint('sipsak_port9', fixture('sipsak-options.sip')), false);
  for (const f of BENIGN) assert.equal(runFingerprint('sipsak_port9', fixture(f)), false, f);
});

test('sipp_default_tag: sipp uac From tag; uas To tag on a response', () => {
  assert.equal(runFingerprint('sipp_default_tag', fixture('sipp-uac-invite.sip')), true);
  const resp = parse(Buffer.from([
    'SIP/2.0 200 OK', 'Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1-1-0',
    'From: <sip:alice@127.0.0.1>;tag=abc', 'To: <sip:svc@127.0.0.1>;tag=4242SIPpTag0117',
    'Call-ID: 1-4242@127.0.0.1', 'CSeq: 1 INVITE', 'Content-Length: 0', '', ''].join('\r\n'), 'latin1'));
  assert.equal(runFingerprint('sipp_default_tag', resp), true);
  for (const f of BENIGN) assert.equal(runFingerprint('sipp_default_tag', fixture(f)), false, f);
});

test('to_equals_from_scan: svmap/svwar/svcrack probes yes; phones registering (with an expiry) no', () => {
  for (const f of ['svmap-options.sip', 'svwar-register.sip', 'svcrack-register.sip']) {
    assert.equal(runFingerprint('to_equals_from_scan', fixture(f)), true, f);
  }
  for (const f of BENIGN) assert.equal(runFingerprint('to_equals_from_scan', fixture(f)), false, f);
  // INVITE is out of scope for this fingerprint
  assert.equal(runFingerprint('to_equals_from_scan', fixture('svwar-invite.sip')), false);
});

// ---- actions and order ------------------------------------------------------------------------

const RULES = `signatures:
  - name: ua_reject
    confidence: high
    action: {kind: reject, status: 403, phrase: Go Away}
    match: {where: user-agent, pattern: '^friendly'}
  - name: ua_ban
    confidence: high
    action: {kind: ban, seconds: 600}
    match: {where: user-agent, pattern: 'scanner'}
  - name: tag_log
    confidence: low
    action: log
    fingerprint: sipvicious_from_tag
`;

test('actions map to verdicts; file order decides; responses and ACKs are only dropped', () => {
  const { errors, scanner } = compileText(RULES);
  assert.deepEqual(errors, []);
  const st = createScannerStage(() => snapshotOf(scanner!));
  // the verdict as carried out: a reply aimed at a response or an ACK is a drop (decided where
  // replies are sent, edge/path/respond.ts, no longer by the stage)
  const run = (m: SipMessage): Verdict => answerable(st.check({ msg: m, source: SOURCE, side: 'outside', trust: 'untrusted', receivedAt: 0 }) as Verdict, m);
  // svmap matches all three; the first in file order wins
  assert.deepEqual(run(fixture('svmap-options.sip')), { action: 'reply', status: 403, reason: 'scanner_user_agent', rule: 'ua_reject', phrase: 'Go Away' });
  const renamed = (ua: string): SipMessage => parse(Buffer.from(fs.readFileSync(path.join(FIX, 'svmap-options.sip'), 'latin1').replace('friendly-scanner', ua), 'latin1'));
  assert.deepEqual(run(renamed('my-scanner')), { action: 'ban', reason: 'scanner_user_agent', seconds: 600, rule: 'ua_ban' });
  assert.deepEqual(run(renamed('Yealink')), { action: 'log', reason: 'scanner_fingerprint', rule: 'tag_log' });
  // a forged response matching a reject rule is dropped, never answered
  assert.deepEqual(run(fixture('forged-200-friendly-scanner.sip')), { action: 'drop', reason: 'scanner_user_agent', rule: 'ua_reject' });
  const ack = parse(Buffer.from(fs.readFileSync(path.join(FIX, 'svmap-options.sip'), 'latin1').replace(/OPTIONS/g, 'ACK'), 'latin1'));
  assert.deepEqual(run(ack), { action: 'drop', reason: 'scanner_user_agent', rule: 'ua_reject' });
});

test('where: compact header names, any header, request-uri, case sensitivity', () => {
  const { errors, scanner } = compileText(`signatures:
  - {name: f_hdr, confidence: high, match: {where: f, pattern: '"sipvicious"'}}
  - {name: any_hdr, confidence: high, match: {where: '*', pattern: '^application/sdp$', caseInsensitive: false}}
  - {name: ruri, confidence: high, match: {where: request-uri, pattern: '^sip:9009', caseInsensitive: false}}
`);
  assert.deepEqual(errors, []);
  assert.equal(scanner!.match(fixture('svmap-options.sip'))?.name, 'f_hdr'); // From written "From", rule says "f"
  assert.equal(scanner!.match(fixture('svwar-invite.sip'))?.name, 'any_hdr'); // Accept: application/sdp
  assert.equal(scanner!.match(fixture('sipcli-invite.sip'))?.name, 'ruri');
  assert.equal(scanner!.match(fixture('benign-yealink-register.sip')), null);
  assert.equal(scanner!.signatures[0]!.where, 'from');
});

// ---- compile errors with positions ------------------------------------------------------------

test('compile errors carry file:line:column of the offending node', () => {
  const text = `signatures:
  - name: ok_one
    confidence: high
    match: {where: user-agent, pattern: 'abc'}
  - name: ok_one
    confidence: high
    match: {where: user-agent, pattern: 'def'}
  - name: bad_regex
    confidence: high
    match: {where: user-agent, pattern: '((' }
  - name: both
    confidence: low
    fingerprint: sipsak_port9
    match: {where: user-agent, pattern: 'x'}
  - name: nested
    confidence: medium
    match: {where: user-agent, pattern: '(a+)+$'}
  - name: bad_where
    confidence: medium
    match: {where: 'user agent', pattern: 'x'}
  - name: empty_match
    confidence: medium
    match: {where: user-agent, pattern: 'x*'}
`;
  const { errors, scanner } = compileText(text);
  assert.deepEqual(errors, [
    'scanner.yaml:5:11: signature name "ok_one" is already used by signatures[0]',
    'scanner.yaml:10:41: pattern "((" is not a valid regular expression (Unterminated group)',
    'scanner.yaml:11:5: signature "both" needs exactly one of match or fingerprint',
    'scanner.yaml:17:41: pattern "(a+)+$" has a nested quantifier like (a+)+, which can backtrack exponentially',
    'scanner.yaml:20:20: "user agent" is not a header name, *, body or request-uri',
    'scanner.yaml:23:41: pattern "x*" matches the empty string, so it would match every message',
  ]);
  assert.deepEqual(scanner!.signatures.map((s) => s.name), ['ok_one']);
});

test('schema errors (unknown keys, bad action, unknown fingerprint) come from the loader with positions', () => {
  const r = compileText(`signatures:
  - name: a
    confidence: sure
    fingerprint: sipvicious_from_tag
  - name: b
    confidence: high
    fingerprint: nmap_probe
  - name: c
    confidence: high
    action: {kind: reject, status: 200}
    fingerprint: sipsak_port9
  - name: d
    confidence: high
    fingerprnt: sipsak_port9
`);
  assert.ok(r.loadErrors, 'schema must refuse the file');
  const all = r.loadErrors!.join('\n');
  assert.match(all, /^scanner\.yaml:3:17: signatures\[0\]\.confidence: expected high, medium or low/m);
  assert.match(all, /^scanner\.yaml:7:18: signatures\[1\]\.fingerprint: expected one of sipvicious_from_tag/m);
  assert.match(all, /^scanner\.yaml:10:13: signatures\[2\]\.action: expected drop, log/m);
  assert.match(all, /^scanner\.yaml:14:5: unknown key "fingerprnt" in signatures\[3\] \(did you mean "fingerprint"\?\)/m);
});

test('pathological regexes are refused with a reason', () => {
  const cases: Array<[string, RegExp]> = [
    ['(a+)+', /nested quantifier/],
    ['(a*b?)*c', /nested quantifier/],
    ['(x+x)+y', /nested quantifier/],
    ['(a|a)*', /alternatives/],
    ['(a|ab){2,}', /alternatives/],
    ['(a)\\1', /backreference/],
    ['a\\k<n>', /named backreference/],
    ['(?<=a)b', /lookbehind/],
    ['(?<!a)b', /lookbehind/],
    ['a(?=b)', /lookahead/],
    ['(?<name>a)', /named group/],
    ['\\d+\\.\\d+', /open-ended repetitions/],
    ['.*a.*b', /open-ended repetitions/],
    ['a{1,100000}', /more than 64/],
    ['a'.repeat(300), /longer than 256/],
    ['\\d{1,9}\\.\\d{1,9}\\.\\d{1,9}', /open-ended repetitions/],
  ];
  for (const [p, why] of cases) {
    const v = vetPattern(p);
    assert.equal(v.ok, false, p);
    assert.match((v as { error: string }).error, why, p);
  }
  // and what stays allowed: one open-ended repetition, bounded ones, optional groups
  for (const p of ['friendly-scanner', '^sip-?cli\\b', 'sipcli/v\\d{1,3}\\.\\d{1,3}', '^(?:pplsip|sipptk)', '.*scanner', '(ab)?c', '[a-z]+x', '\\x41\\u0042+']) {
    assert.equal(vetPattern(p).ok, true, p);
  }
  const star = vetPattern('a.*b');
  assert.deepEqual(star, { ok: true, source: 'a.{0,64}b' });
});

// ---- linear time ------------------------------------------------------------------------------

/** median nanoseconds per byte of scanner.match over a message with a User-Agent of `ua` */
function nsPerByte(sc: CompiledScanner, ua: string, reps: number): number {
  const head = ['OPTIONS sip:100@203.0.113.5 SIP/2.0', 'Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1;rport',
    'From: <sip:1@203.0.113.5>;tag=1', 'To: <sip:1@203.0.113.5>', 'Call-ID: x', 'CSeq: 1 OPTIONS', `User-Agent: ${ua}`, 'Content-Length: 0', '', ''];
  const raw = Buffer.from(head.join('\r\n'), 'latin1');
  const samples: number[] = [];
  for (let s = 0; s < 7; s++) {
    const msgs = Array.from({ length: reps }, () => parse(raw, 64 * 1024, 32 * 1024));
    const t0 = process.hrtime.bigint();
    for (const m of msgs) sc.match(m);
    samples.push(Number(process.hrtime.bigint() - t0) / reps / raw.length);
  }
  samples.sort((a, b) => a - b);
  return samples[3]!;
}

test('matching a 16 KiB pattern-hostile User-Agent stays linear (per-byte cost flat from 1 KiB to 16 KiB)', () => {
  // patterns written to be as bad as the vetting allows: an open-ended repetition early, then a
  // literal that never comes; inputs made of the repeated characters
  const { errors, scanner } = compileText(`signatures:
  - {name: p1, confidence: high, match: {where: user-agent, pattern: 'a.*friendly-scannerZ'}}
  - {name: p2, confidence: high, match: {where: user-agent, pattern: '[a-z]+\\d{1,4}x'}}
  - {name: p3, confidence: high, match: {where: '*', pattern: '\\s{0,4}sipvicious\\s*Q'}}
  - {name: p4, confidence: high, match: {where: user-agent, pattern: '(?:ab)+c'}}
`);
  assert.deepEqual(errors, []);
  const sc = { signatures: [...scanner!.signatures, ...SCANNER.signatures], match: (m: SipMessage) => scanner!.match(m) ?? SCANNER.match(m) };
  const hostile: Array<(n: number) => string> = [
    (n) => 'a'.repeat(n),
    (n) => 'friendly-scanne'.repeat(Math.ceil(n / 15)).slice(0, n),
    (n) => 'a1'.repeat(n / 2),
    (n) => ' '.repeat(n - 10) + 'sipviciou',
    (n) => 'ab'.repeat(n / 2),
  ];
  let worst = 0;
  for (const gen of hostile) {
    const small = nsPerByte(sc, gen(1024), 32);
    const big = nsPerByte(sc, gen(16 * 1024), 2);
    worst = Math.max(worst, big / small);
    if (process.env.SCANNER_BENCH) console.log(small.toFixed(2), big.toFixed(2));
  }
  // quadratic matching would show as ~16x per byte; allow generous noise headroom
  assert.ok(worst < 8, `time per byte grew ${worst.toFixed(1)}x from 1 KiB to 16 KiB`);
  // and the hostile value is not mistaken for a signature
  const m = parse(Buffer.from(`OPTIONS sip:1@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:1@h>;tag=1\r\nTo: <sip:2@h>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nUser-Agent: ${'a'.repeat(16 * 1024)}\r\nContent-Length: 0\r\n\r\n`, 'latin1'), 64 * 1024, 32 * 1024);
  assert.equal(SCANNER.match(m), null);
});

test('the shipped file compiles and every signature has a note, a source and a known confidence', () => {
  const r = loadYamlFile(path.join(ROOT, 'rules/scanner.yaml'), ScannerFileSchema);
  assert.ok(r.ok);
  const doc = r.value as ScannerFile;
  for (const s of doc.signatures) {
    assert.ok(s.note && s.note.length > 10, `${s.name} needs a note`);
    assert.ok(s.source && s.source.length > 5, `${s.name} needs a source`);
  }
  // policy of the issue: high/medium drop, sipp never dropped by default
  for (const s of SCANNER.signatures) {
    if (s.confidence !== 'low') assert.equal(s.action.kind, 'drop', s.name);
    else assert.equal(s.action.kind, 'log', s.name);
  }
  assert.equal(SCANNER.signatures.find((s) => s.fingerprint === 'sipp_default_tag')?.action.kind, 'log');
  for (const fp of ['sipvicious_from_tag', 'sipsak_port9', 'sipp_default_tag', 'to_equals_from_scan']) {
    assert.ok(SCANNER.signatures.some((s) => s.fingerprint === fp), fp);
  }
});
