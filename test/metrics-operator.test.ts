// The operator view of traffic (issue 15 "Operator view"): what a dashboard reads from /metrics
// after real messages went through the edge (in-memory transport, no sleeps).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startMemoryEdge } from './helpers/memory-edge';
import { sample } from './helpers/prom';
import { request, response } from './helpers/udp-peer';

const PBX = { address: '127.0.0.2', port: 5080 };
const PHONE = { address: '127.0.0.9', port: 5062 };

test('requests by method and responses by class and side; unknown methods count as other; upstream_info names each position', async () => {
  const m = await startMemoryEdge({
    upstreams: [{ transport: 'udp', host: PBX.address, port: PBX.port }, { transport: 'tcp', host: '127.0.0.3', port: 5090 }],
  });
  try {
    m.deliver(request(PHONE, { method: 'INVITE', ruri: 'sip:1000@127.0.0.1' }), PHONE);
    m.deliver(request(PHONE, { method: 'OPTIONS', ruri: 'sip:1000@127.0.0.1' }), PHONE);
    m.deliver(request(PHONE, { method: 'XYZZY', ruri: 'sip:1000@127.0.0.1' }), PHONE);
    await m.settle();
    const fwd = m.sentTo(PBX.address, PBX.port).find((s) => s.text.startsWith('INVITE '));
    assert.ok(fwd, 'the INVITE went to the PBX');
    m.deliver(response(fwd.text, 486, 'Busy Here', { toTag: 'pbx1' }), PBX);
    await m.settle();
    const text = await m.edge.metrics.metrics();
    assert.equal(sample(text, 'sipedge_requests_total', { method: 'INVITE', side: 'outside' }), 1);
    assert.equal(sample(text, 'sipedge_requests_total', { method: 'OPTIONS', side: 'outside' }), 1);
    assert.equal(sample(text, 'sipedge_requests_total', { method: 'other', side: 'outside' }), 1, 'a method name is attacker text: never a label');
    assert.ok(!text.includes('XYZZY'));
    assert.equal(sample(text, 'sipedge_responses_total', { class: '4xx', side: 'inside' }), 1);
    assert.equal(sample(text, 'sipedge_responses_total', { class: '2xx', side: 'inside' }), 0, 'declared at zero');
    assert.equal(sample(text, 'sipedge_upstream_info', { upstream: '1', target: 'udp:127.0.0.2:5080' }), 1);
    assert.equal(sample(text, 'sipedge_upstream_info', { upstream: '2', target: 'tcp:127.0.0.3:5090' }), 1);
    // only the combinations that can occur are declared: no crossed pairs, no "other" rows
    assert.equal(text.split('\n').filter((l) => l.startsWith('sipedge_upstream_info{')).length, 2);
    assert.ok(!/sipedge_(requests|responses)_total\{[^}]*side="other"/.test(text));
  } finally { await m.close(); }
});

test('verdicts_total declares only combinations that can occur', async () => {
  const m = await startMemoryEdge();
  try {
    const text = await m.edge.metrics.metrics();
    const rows = text.split('\n').filter((l) => l.startsWith('sipedge_verdicts_total{'));
    // possible: a scanner signature can ban, in shadow mode too; the gate drops banned sources
    assert.ok(rows.some((r) => r.includes('stage="scanner",action="ban"') && r.includes('mode="shadow"') && r.endsWith(' 0')));
    assert.equal(sample(text, 'sipedge_verdicts_total', { stage: 'gate', action: 'drop', reason: 'banned', mode: 'enforce' }), 0);
    // impossible: the gate in shadow mode or replying, a proxy ban, any "log" row (log verdicts are rule hits)
    assert.ok(!rows.some((r) => r.includes('stage="gate"') && (r.includes('mode="shadow"') || !r.includes('action="drop"'))));
    assert.ok(!rows.some((r) => r.includes('stage="proxy",action="ban"')));
    assert.ok(!rows.some((r) => r.includes('action="log"')));
    assert.ok(!rows.some((r) => r.includes('stage="sanity",action="ban"')));
    assert.ok(rows.length < 400, `${rows.length} verdict series declared (was 776)`);
  } finally { await m.close(); }
});
