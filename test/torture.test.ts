// Every RFC 4475 / RFC 5118 torture message through parse -> parse-failure verdict or sanity stage,
// one test per message so a failure names the message.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { parseMessage } from '../edge/sip/parser';
import { MessageWriter } from '../edge/sip/writer';
import type { Endpoint } from '../edge/sip/types';
import { createSanityStage } from '../edge/stages/sanity';
import { verdictForParseFailure } from '../edge/stages/parse-verdict';
import type { Verdict } from '../edge/verdict';
import { TORTURE_CASES, loadTorture, repoRoot, type TortureExpect } from './helpers/torture';

const SOURCE: Endpoint = { transport: 'udp', address: '192.0.2.77', port: 5060, listenerId: 'test' };
const sanity = createSanityStage();

function actual(v: Verdict): TortureExpect {
  switch (v.action) {
    case 'continue': return { kind: 'accept' };
    case 'reply': return { kind: 'reply', status: v.status, reason: v.reason };
    case 'drop': return { kind: 'drop', reason: v.reason };
    case 'ban': return { kind: 'drop', reason: `ban:${v.reason}` };
    case 'log': return { kind: 'accept' };
  }
}

for (const c of TORTURE_CASES) {
  // a known parser divergence runs as a todo: reported, not failing, until the parser is fixed
  test(`${c.rfcSection} ${c.name}`, c.knownGap ? { todo: c.knownGap } : {}, () => {
    const bytes = loadTorture(c);
    const r = parseMessage(bytes, { framing: 'datagram' });
    let verdict: Verdict;
    if (!r.ok) {
      verdict = verdictForParseFailure(r, SOURCE);
    } else {
      const out = sanity.check({ msg: r.msg, source: SOURCE, side: 'outside', trust: 'untrusted', receivedAt: 0 });
      assert.ok(!(out instanceof Promise), 'sanity must be synchronous');
      verdict = out as Verdict;
    }
    assert.deepEqual(actual(verdict), c.expect, `${c.name}: ${c.note}`);
    if (c.expect.kind === 'accept') {
      assert.ok(r.ok);
      const m = r.msg;
      // byte-faithful: an unmodified message is rewritten to exactly the bytes received, up to the
      // end of its body (bytes after Content-Length in a datagram are discarded, RFC 3261 18.3)
      const end = m.bodyStart + m.bodyLength;
      assert.ok(end <= bytes.length);
      assert.ok(new MessageWriter(m).toBuffer().equals(bytes.subarray(0, end)), 'writer output differs from input');
    }
  });
}

test('corpus: every fixture file has a table entry and vice versa', () => {
  const root = repoRoot();
  const listed = new Set(TORTURE_CASES.map((c) => c.file));
  for (const dir of ['test/fixtures/rfc4475', 'test/fixtures/rfc5118']) {
    for (const f of readdirSync(path.join(root, dir))) {
      if (f.endsWith('.sip')) assert.ok(listed.has(`${dir}/${f}`), `${dir}/${f} has no table entry`);
    }
  }
  for (const c of TORTURE_CASES) assert.ok(existsSync(path.join(root, c.file)), `${c.file} missing`);
  assert.equal(new Set(TORTURE_CASES.map((c) => c.name)).size, TORTURE_CASES.length, 'duplicate names');
});

test('corpus: CRLF line endings and Content-Length match the body (RFC 4475 2.1)', () => {
  // The archive deliberately breaks these rules in a few messages; everything else must be exact.
  const clMismatch = new Set(['clerr', 'mcl01', 'ncl', 'dblreq', 'inv2543', 'test', 'baddn']);
  for (const c of TORTURE_CASES) {
    const b = loadTorture(c).toString('latin1');
    const headEnd = b.indexOf('\r\n\r\n');
    if (c.name === 'baddn') { assert.equal(headEnd, -1); continue; }
    assert.ok(headEnd > 0, `${c.name}: no header end`);
    const head = b.slice(0, headEnd);
    assert.ok(!/[^\r]\n/.test(head), `${c.name}: bare LF in head`);
    if (clMismatch.has(c.name)) continue;
    const m = /\r\n(?:content-length|l)[ \t]*:[ \t]*(\d+)/i.exec(head);
    assert.ok(m, `${c.name}: no Content-Length`);
    assert.equal(Number(m[1]), b.length - headEnd - 4, `${c.name}: Content-Length`);
  }
});

test('bext01: the 420 lists every Proxy-Require tag as received, in an Unsupported header', () => {
  const c = TORTURE_CASES.find((x) => x.name === 'bext01')!;
  const r = parseMessage(loadTorture(c), { framing: 'datagram' });
  assert.ok(r.ok);
  const v = sanity.check({ msg: r.msg, source: SOURCE, side: 'outside', trust: 'untrusted', receivedAt: 0 }) as Verdict;
  assert.equal(v.action, 'reply');
  if (v.action !== 'reply') return;
  assert.deepEqual(v.headers, [['Unsupported', 'noProxiesSupportThis, norDoAnyProxiesSupportThis']]);
});

test('dblreq: only the first request of the datagram is kept', () => {
  const c = TORTURE_CASES.find((x) => x.name === 'dblreq')!;
  const bytes = loadTorture(c);
  const r = parseMessage(bytes, { framing: 'datagram' });
  assert.ok(r.ok);
  assert.equal(r.msg.kind, 'request');
  if (r.msg.kind === 'request') assert.equal(r.msg.method, 'REGISTER');
  assert.equal(r.msg.bodyLength, 0);
  const out = new MessageWriter(r.msg).toBuffer();
  assert.ok(!out.includes('INVITE sip:joe@example.com'));
});
