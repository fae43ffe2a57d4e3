import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import YAML from 'yaml';
import { AggregatorRegistry, register as globalRegistry } from 'prom-client';
import {
  METRICS, Metrics, NullMetrics, OTHER, PARSE_REASONS, PROCESSING_BUCKETS, TRANSPORT_EVENTS,
} from '../edge/metrics';
import type { EdgeMetrics, MessageKind } from '../edge/metrics';
import type { TransportName } from '../edge/sip/types';
import type { TransportEvent } from '../edge/transport/types';
import type { Side } from '../edge/verdict';
import { drop, ban, reply, CONTINUE } from '../edge/verdict';
import { familyOf, parseExposition, sample, samples, sumOf } from './helpers/prom';

// what edge.ts labels upstreams with: their position in the failover order, never an address
const UP_A = '1';
const UP_B = '2';

function make(extra: ConstructorParameters<typeof Metrics>[0] = {}): Metrics {
  return new Metrics({
    defaultMetrics: false,
    version: '9.9.9-test',
    stages: [
      { name: 'sanity', reasons: ['via_missing', 'cseq_invalid'] },
      { name: 'scanner', reasons: ['ua_signature', 'tag_fingerprint'] },
    ],
    upstreams: [UP_A, UP_B],
    rules: ['friendly-scanner', 'sipvicious-ua'],
    banReasons: ['suspicion_exhausted'],
    ...extra,
  });
}

const IPV4 = /\b\d{1,3}(\.\d{1,3}){3}\b/;
const IPV6 = /\b[0-9a-f]{1,4}(:[0-9a-f]{0,4}){2,7}\b/i;

test('exposition: every family has HELP and TYPE, sipedge_ prefix, counters end in _total', async () => {
  const m = new Metrics({ version: '1.0.0' }); // with default process metrics
  const exp = parseExposition(await m.metrics());
  assert.ok(exp.samples.length > 50, 'expected zero series and process metrics');
  assert.ok(exp.type.size >= Object.keys(METRICS).length);
  for (const [name, type] of exp.type) {
    assert.match(name, /^sipedge_[a-z0-9_]+$/, name);
    assert.ok(exp.help.get(name), `HELP missing for ${name}`);
    if (type === 'counter') assert.match(name, /_total$/, `counter ${name} must end in _total`);
    // prom-client's defaults too: promtool check metrics rejects a gauge named *_total
    else assert.doesNotMatch(name, /_total$/, `${type} ${name} must not end in _total`);
    // base units only (seconds, bytes), never ms
    assert.doesNotMatch(name, /_(ms|milliseconds|us|microseconds|kb|mb)(_|$)/, name);
  }
  for (const s of exp.samples) {
    const fam = familyOf(exp, s.name);
    assert.ok(exp.type.has(fam), `sample ${s.name} has no TYPE line`);
  }
  for (const d of Object.values(METRICS)) {
    assert.ok(exp.type.has(d.name), `${d.name} not exported`);
    assert.equal(exp.type.get(d.name), d.type);
    // ours, stricter than prom-client's own nodejs_active_resources_total gauge
    if (d.type !== 'counter') assert.doesNotMatch(d.name, /_total$/, `${d.type} ${d.name} must not end in _total`);
  }
  assert.ok(exp.type.has('sipedge_process_cpu_seconds_total'), 'process metrics carry the prefix');
  assert.equal(sample(exp, 'sipedge_build_info', { version: '1.0.0', node: process.version }), 1);
});

test('METRICS table: unique names, declared labels never identify a person or a peer', () => {
  const names = Object.values(METRICS).map((d) => d.name);
  assert.equal(new Set(names).size, names.length);
  for (const d of Object.values(METRICS)) {
    for (const l of d.labels) {
      assert.doesNotMatch(l, /^(ip|addr|address|source|src|user|username|call_id|callid|user_agent|ua|from|to|host)$/i, `${d.name}{${l}}`);
    }
  }
});

test('declared series start at zero: stages x actions x modes, parse reasons, transports', async () => {
  const text = await make().metrics();
  for (const stage of ['sanity', 'scanner']) {
    for (const action of ['reply', 'drop', 'ban']) {
      for (const mode of ['enforce', 'shadow']) {
        const reasons = stage === 'sanity' ? ['via_missing', 'cseq_invalid'] : ['ua_signature', 'tag_fingerprint'];
        for (const reason of reasons) {
          assert.equal(sample(text, 'sipedge_verdicts_total', { stage, action, reason, mode }), 0, `${stage}/${action}/${reason}/${mode}`);
        }
      }
    }
  }
  for (const r of PARSE_REASONS) assert.equal(sample(text, 'sipedge_parse_failures_total', { reason: r }), 0, r);
  for (const e of TRANSPORT_EVENTS) assert.equal(sample(text, 'sipedge_transport_events_total', { transport: 'tcp', event: e }), 0, e);
  assert.equal(sample(text, 'sipedge_messages_received_total', { transport: 'udp', side: 'outside', kind: 'request' }), 0);
  assert.equal(sample(text, 'sipedge_upstream_up', { upstream: UP_A }), 0);
  assert.equal(sample(text, 'sipedge_bans_added_total', { reason: 'suspicion_exhausted' }), 0);
  assert.equal(sample(text, 'sipedge_bans_added_total', { reason: 'ua_signature' }), 0, 'stage reasons are ban reasons');
  assert.equal(sample(text, 'sipedge_rule_hits_total', { rule: 'friendly-scanner' }), 0);
  // "other" only shows once something lands there
  assert.equal(samples(text, 'sipedge_verdicts_total', { reason: OTHER }).length, 0);
  // no Redis configured: redis_up absent rather than 0, so "Redis down" cannot fire
  assert.equal(samples(text, 'sipedge_redis_up').length, 0);
});

test('restricting transports: only configured transports get zero series', async () => {
  const text = await make({ transports: ['udp'] }).metrics();
  assert.equal(sample(text, 'sipedge_messages_received_total', { transport: 'udp', side: 'inside', kind: 'response' }), 0);
  assert.equal(samples(text, 'sipedge_messages_received_total', { transport: 'tcp' }).length, 0);
});

interface Case {
  readonly what: string;
  readonly call: (m: Metrics) => void;
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly delta: number;
}

const CASES: readonly Case[] = [
  { what: 'received', call: (m) => m.received('udp', 'outside', 'request'), name: 'sipedge_messages_received_total', labels: { transport: 'udp', side: 'outside', kind: 'request' }, delta: 1 },
  { what: 'received keepalive tcp', call: (m) => m.received('tcp', 'outside', 'keepalive'), name: 'sipedge_messages_received_total', labels: { transport: 'tcp', side: 'outside', kind: 'keepalive' }, delta: 1 },
  { what: 'sent', call: (m) => m.sent('tcp', 'inside', 'response'), name: 'sipedge_messages_sent_total', labels: { transport: 'tcp', side: 'inside', kind: 'response' }, delta: 1 },
  { what: 'verdict', call: (m) => m.verdict('scanner', 'drop', 'ua_signature', 'enforce'), name: 'sipedge_verdicts_total', labels: { stage: 'scanner', action: 'drop', reason: 'ua_signature', mode: 'enforce' }, delta: 1 },
  { what: 'verdict shadow', call: (m) => m.verdict('sanity', 'reply', 'via_missing', 'shadow'), name: 'sipedge_verdicts_total', labels: { stage: 'sanity', action: 'reply', reason: 'via_missing', mode: 'shadow' }, delta: 1 },
  { what: 'verdictOf reply', call: (m) => m.verdictOf('sanity', reply(400, 'cseq_invalid'), 'enforce'), name: 'sipedge_verdicts_total', labels: { stage: 'sanity', action: 'reply', reason: 'cseq_invalid', mode: 'enforce' }, delta: 1 },
  { what: 'verdictOf ban', call: (m) => m.verdictOf('scanner', ban('ua_signature', 3600, 'friendly-scanner'), 'enforce'), name: 'sipedge_verdicts_total', labels: { stage: 'scanner', action: 'ban', reason: 'ua_signature', mode: 'enforce' }, delta: 1 },
  { what: 'verdictOf rule hit', call: (m) => m.verdictOf('scanner', drop('ua_signature', 'sipvicious-ua'), 'shadow'), name: 'sipedge_rule_hits_total', labels: { rule: 'sipvicious-ua' }, delta: 1 },
  { what: 'ruleHit', call: (m) => m.ruleHit('friendly-scanner'), name: 'sipedge_rule_hits_total', labels: { rule: 'friendly-scanner' }, delta: 1 },
  { what: 'parseFailure', call: (m) => m.parseFailure('control_char'), name: 'sipedge_parse_failures_total', labels: { reason: 'control_char' }, delta: 1 },
  { what: 'unmatched', call: (m) => m.unmatched('cancel'), name: 'sipedge_unmatched_total', labels: { kind: 'cancel' }, delta: 1 },
  { what: 'transactionExpired', call: (m) => m.transactionExpired(), name: 'sipedge_transactions_expired_total', labels: {}, delta: 1 },
  { what: 'transactionRejected', call: (m) => m.transactionRejected('table_full'), name: 'sipedge_transactions_rejected_total', labels: { reason: 'table_full' }, delta: 1 },
  { what: 'retransmission', call: (m) => m.retransmission('absorbed'), name: 'sipedge_retransmissions_total', labels: { direction: 'absorbed' }, delta: 1 },
  { what: 'upstreamResponse 486', call: (m) => m.upstreamResponse(UP_A, 486), name: 'sipedge_upstream_responses_total', labels: { upstream: UP_A, class: '4xx' }, delta: 1 },
  { what: 'upstreamResponse 100', call: (m) => m.upstreamResponse(UP_B, 100), name: 'sipedge_upstream_responses_total', labels: { upstream: UP_B, class: '1xx' }, delta: 1 },
  { what: 'upstreamResponse 699', call: (m) => m.upstreamResponse(UP_A, 699), name: 'sipedge_upstream_responses_total', labels: { upstream: UP_A, class: '6xx' }, delta: 1 },
  { what: 'upstreamResponse timeout', call: (m) => m.upstreamResponse(UP_A, 'timeout'), name: 'sipedge_upstream_responses_total', labels: { upstream: UP_A, class: 'timeout' }, delta: 1 },
  { what: 'transportEvent', call: (m) => m.transportEvent('tls', 'conn_rejected_source_cap'), name: 'sipedge_transport_events_total', labels: { transport: 'tls', event: 'conn_rejected_source_cap' }, delta: 1 },
  { what: 'banAdded', call: (m) => m.banAdded('suspicion_exhausted'), name: 'sipedge_bans_added_total', labels: { reason: 'suspicion_exhausted' }, delta: 1 },
  { what: 'banExpired', call: (m) => m.banExpired(), name: 'sipedge_bans_expired_total', labels: {}, delta: 1 },
  { what: 'auth', call: (m) => m.auth('stale', 'pbx'), name: 'sipedge_auth_total', labels: { mode: 'pbx', result: 'stale' }, delta: 1 },
  { what: 'redisError', call: (m) => m.redisError(), name: 'sipedge_redis_errors_total', labels: {}, delta: 1 },
  { what: 'rulesReload ok', call: (m) => m.rulesReload(true), name: 'sipedge_rules_reloads_total', labels: { result: 'ok' }, delta: 1 },
  { what: 'rulesReload error', call: (m) => m.rulesReload(false), name: 'sipedge_rules_reloads_total', labels: { result: 'error' }, delta: 1 },
  { what: 'processing count', call: (m) => m.observeProcessing('response', 0.0002), name: 'sipedge_processing_seconds_count', labels: { kind: 'response' }, delta: 1 },
];

test('each API call moves exactly its own series by one', async () => {
  for (const c of CASES) {
    const m = make();
    const before = parseExposition(await m.metrics());
    c.call(m);
    c.call(m);
    const after = parseExposition(await m.metrics());
    assert.equal(sample(after, c.name, c.labels), (sample(before, c.name, c.labels) ?? 0) + 2 * c.delta, c.what);
    // nothing else among the sipedge_ families moved (apart from the histogram's own buckets/sum)
    const changed = after.samples.filter((s) => {
      if (s.name === c.name && Object.entries(c.labels).every(([k, v]) => s.labels[k] === v) && Object.keys(s.labels).length === Object.keys(c.labels).length) return false;
      if (c.name.startsWith('sipedge_processing_seconds') && s.name.startsWith('sipedge_processing_seconds')) return false;
      if (c.what.startsWith('verdictOf') && (s.name === 'sipedge_rule_hits_total' || s.name === 'sipedge_verdicts_total')) return false;
      const b = before.samples.find((x) => x.name === s.name && JSON.stringify(x.labels) === JSON.stringify(s.labels));
      return (b?.value ?? 0) !== s.value;
    });
    assert.deepEqual(changed.map((s) => `${s.name}${JSON.stringify(s.labels)}`), [], c.what);
  }
});

test('continue verdicts are not counted; verdicts by undeclared stages go to stage="other"', async () => {
  const m = make();
  m.verdictOf('scanner', CONTINUE, 'enforce');
  m.verdict('geoip', 'reply', 'country_blocked', 'enforce');
  const text = await m.metrics();
  assert.equal(sumOf(text, 'sipedge_verdicts_total'), 1);
  assert.equal(sample(text, 'sipedge_verdicts_total', { stage: OTHER, action: 'reply', reason: OTHER, mode: 'enforce' }), 1);
  assert.equal(samples(text, 'sipedge_verdicts_total', { stage: 'geoip' }).length, 0);
});

test('unknown reasons count under reason="other" and never create series', async () => {
  const m = make();
  const seriesBefore = parseExposition(await m.metrics()).samples.length;
  m.verdict('scanner', 'drop', 'not_declared', 'enforce');
  m.verdict('scanner', 'drop', 'also_not_declared', 'enforce');
  m.banAdded('nope');
  m.ruleHit('rule-from-nowhere');
  m.transactionRejected('whatever');
  m.upstreamResponse('udp:192.0.2.9:5060', 200);
  const text = await m.metrics();
  assert.equal(sample(text, 'sipedge_verdicts_total', { stage: 'scanner', action: 'drop', reason: OTHER, mode: 'enforce' }), 2);
  assert.equal(sample(text, 'sipedge_bans_added_total', { reason: OTHER }), 1);
  assert.equal(sample(text, 'sipedge_rule_hits_total', { rule: OTHER }), 1);
  assert.equal(sample(text, 'sipedge_transactions_rejected_total', { reason: OTHER }), 1);
  assert.equal(sample(text, 'sipedge_upstream_responses_total', { upstream: OTHER, class: '2xx' }), 1);
  // one new "other" series per family touched, however many distinct unknown values
  assert.equal(parseExposition(text).samples.length, seriesBefore + 5);
});

test('attacker-controlled values (addresses, UAs, Call-IDs) are never exported', async () => {
  const m = make();
  const hostile = [
    '203.0.113.7', '2001:db8::bad:1', '::ffff:198.51.100.3', 'friendly-scanner', 'sipvicious',
    'a84b4c76e66710@pc33.atlanta.com', '"}\nsipedge_fake_total 1\n#', 'x'.repeat(5000), 'ünïcödé', '',
  ];
  for (const h of hostile) {
    m.verdict(h, 'ban', h, 'enforce');
    m.verdict('scanner', 'drop', h, 'shadow');
    m.verdictOf('sanity', drop(h, h), 'enforce');
    m.ruleHit(h);
    m.banAdded(h);
    m.transactionRejected(h);
    m.upstreamUp(h, true);
    m.upstreamResponse(h, 503);
    // typed parameters given hostile values anyway (a JS caller, a cast): no throw, no series
    m.received(h as TransportName, h as Side, h as MessageKind);
    m.sent(h as TransportName, 'outside', 'request');
    m.transportEvent('udp', h as TransportEvent);
    m.parseFailure(h as (typeof PARSE_REASONS)[number]);
    m.unmatched(h as 'ack');
    m.auth(h as 'success');
    m.retransmission(h as 'sent');
    m.observeProcessing(h as MessageKind, 0.001);
  }
  const text = await m.metrics();
  const exp = parseExposition(text);
  assert.doesNotMatch(text, /203\.0\.113\.7|2001:db8::bad|198\.51\.100\.3|atlanta|sipedge_fake|ünï|xxxxxxxx/);
  for (const s of exp.samples) {
    for (const [k, v] of Object.entries(s.labels)) {
      if (k === 'rule' && (v === 'friendly-scanner' || v === 'sipvicious-ua')) continue; // declared rule names
      if (k === 'version' || k === 'node' || k === 'le') continue;
      assert.doesNotMatch(v, IPV4, `${s.name}{${k}="${v}"}`);
      assert.doesNotMatch(v, IPV6, `${s.name}{${k}="${v}"}`);
    }
  }
  // 'friendly-scanner' is a declared rule, so counting it there is right
  assert.equal(sample(text, 'sipedge_rule_hits_total', { rule: 'friendly-scanner' }), 2);
  assert.equal(sample(text, 'sipedge_upstream_up', { upstream: OTHER }), undefined, 'an unknown upstream has no up state');
});

test('property: arbitrary label strings never throw and never grow the series count', async () => {
  const m = make();
  m.verdict('scanner', 'drop', 'warmup', 'enforce');
  m.ruleHit('warmup');
  m.banAdded('warmup');
  m.upstreamResponse('warmup', 200);
  const base = parseExposition(await m.metrics()).samples.length;
  fc.assert(
    fc.property(fc.string({ maxLength: 64 }), fc.string({ maxLength: 64 }), (a, b) => {
      m.verdict(a, 'drop', b, 'enforce');
      m.verdict('scanner', 'drop', b, 'enforce');
      m.ruleHit(a);
      m.banAdded(b);
      m.upstreamResponse(a, 200);
    }),
    { numRuns: 300 },
  );
  const after = parseExposition(await m.metrics()).samples.length;
  // at most the stage="other" block's reply/drop/ban x mode cells that became non-zero
  assert.ok(after <= base + 1, `series grew from ${base} to ${after}`);
});

test('histogram: cumulative buckets, +Inf = count, sum; bad observations ignored', async () => {
  const m = make();
  const obs = [0.000005, 0.00001, 0.00003, 0.0007, 0.0007, 0.04, 0.5];
  for (const v of obs) m.observeProcessing('request', v);
  m.observeProcessing('request', NaN);
  m.observeProcessing('request', -1);
  m.observeProcessing('request', Infinity);
  const text = await m.metrics();
  const b = (le: string): number | undefined => sample(text, 'sipedge_processing_seconds_bucket', { kind: 'request', le });
  assert.equal(b('1e-5') ?? b('0.00001'), 2, 'le is inclusive');
  assert.equal(b('0.000025'), 2);
  assert.equal(b('0.00005'), 3);
  assert.equal(b('0.001'), 5);
  assert.equal(b('0.05'), 6);
  assert.equal(b('0.1'), 6);
  assert.equal(b('+Inf'), 7);
  assert.equal(sample(text, 'sipedge_processing_seconds_count', { kind: 'request' }), 7);
  const sum = sample(text, 'sipedge_processing_seconds_sum', { kind: 'request' }) ?? NaN;
  assert.ok(Math.abs(sum - obs.reduce((a, v) => a + v, 0)) < 1e-12);
  // monotone across the declared buckets
  let prev = 0;
  for (const le of PROCESSING_BUCKETS) {
    const v = b(String(le)) ?? NaN;
    assert.ok(v >= prev, `bucket ${le}`);
    prev = v;
  }
  assert.equal(PROCESSING_BUCKETS[0], 0.00001);
  assert.equal(PROCESSING_BUCKETS[PROCESSING_BUCKETS.length - 1], 0.1);
});

test('gauges are read at scrape time; a throwing source reads 0 and the scrape survives', async () => {
  const m = make();
  let tx = 3;
  assert.equal(samples(await m.metrics(), 'sipedge_ready').length, 0, 'absent until bound');
  let ready = true;
  m.bindGauges({ transactionsActive: () => tx, tcpConnections: () => { throw new Error('boom'); }, bansActive: () => 12, ready: () => ready });
  let text = await m.metrics();
  assert.equal(sample(text, 'sipedge_ready'), 1);
  assert.equal(sample(text, 'sipedge_transactions_active'), 3);
  assert.equal(sample(text, 'sipedge_tcp_connections'), 0);
  assert.equal(sample(text, 'sipedge_bans_active'), 12);
  tx = 41;
  ready = false;
  text = await m.metrics();
  assert.equal(sample(text, 'sipedge_transactions_active'), 41);
  assert.equal(sample(text, 'sipedge_ready'), 0);
});

test('upstream up/down, redis up/down', async () => {
  const m = make();
  m.upstreamUp(UP_A, true);
  let text = await m.metrics();
  assert.equal(sample(text, 'sipedge_upstream_up', { upstream: UP_A }), 1);
  assert.equal(sample(text, 'sipedge_upstream_up', { upstream: UP_B }), 0);
  m.upstreamUp(UP_A, false);
  m.redisUp(true);
  text = await m.metrics();
  assert.equal(sample(text, 'sipedge_upstream_up', { upstream: UP_A }), 0);
  assert.equal(sample(text, 'sipedge_redis_up'), 1);
  m.redisUp(false);
  assert.equal(sample(await m.metrics(), 'sipedge_redis_up'), 0);
});

test('upstreamResponse ignores statuses outside 100..699', async () => {
  const m = make();
  for (const s of [0, 42, 99, 700, 1000, -200, NaN]) m.upstreamResponse(UP_A, s);
  assert.equal(sumOf(await m.metrics(), 'sipedge_upstream_responses_total'), 0);
});

test('rules reload: one rules_info series, rule hits keep counts for surviving rules', async () => {
  const m = make();
  m.ruleHit('friendly-scanner');
  m.ruleHit('sipvicious-ua');
  m.rulesLoaded('2024-06-01.1', ['friendly-scanner', 'new-rule']);
  m.ruleHit('new-rule');
  m.ruleHit('sipvicious-ua'); // gone after the reload
  m.rulesLoaded('2024-06-02.1', ['friendly-scanner', 'new-rule']);
  const text = await m.metrics();
  assert.deepEqual(samples(text, 'sipedge_rules_info').map((s) => [s.labels.version, s.value]), [['2024-06-02.1', 1]]);
  assert.equal(sample(text, 'sipedge_rule_hits_total', { rule: 'friendly-scanner' }), 1);
  assert.equal(sample(text, 'sipedge_rule_hits_total', { rule: 'new-rule' }), 1);
  assert.equal(sample(text, 'sipedge_rule_hits_total', { rule: 'sipvicious-ua' }), undefined);
  assert.equal(sample(text, 'sipedge_rule_hits_total', { rule: OTHER }), 2, 'the removed rule and the hit after removal');
});

test('declareStage later keeps existing counts', async () => {
  const m = make();
  m.verdict('scanner', 'drop', 'ua_signature', 'enforce');
  m.declareStage('scanner', ['ua_signature', 'tag_fingerprint', 'method_probe']);
  m.declareStage('ipgeo', ['country_blocked']);
  const text = await m.metrics();
  assert.equal(sample(text, 'sipedge_verdicts_total', { stage: 'scanner', action: 'drop', reason: 'ua_signature', mode: 'enforce' }), 1);
  assert.equal(sample(text, 'sipedge_verdicts_total', { stage: 'scanner', action: 'drop', reason: 'method_probe', mode: 'enforce' }), 0);
  assert.equal(sample(text, 'sipedge_verdicts_total', { stage: 'ipgeo', action: 'reply', reason: 'country_blocked', mode: 'shadow' }), 0);
  assert.equal(sample(text, 'sipedge_bans_added_total', { reason: 'country_blocked' }), 0);
});

test('registries are per instance; the global registry is never touched', async () => {
  const a = make();
  const b = new Metrics({ version: 'x' }); // default metrics on its own registry
  a.received('udp', 'outside', 'request');
  assert.equal(sample(await a.metrics(), 'sipedge_messages_received_total', { transport: 'udp', side: 'outside', kind: 'request' }), 1);
  assert.equal(sample(await b.metrics(), 'sipedge_messages_received_total', { transport: 'udp', side: 'outside', kind: 'request' }), 0);
  assert.equal(globalRegistry.getMetricsAsArray().length, 0);
  assert.notEqual(a.registry, b.registry);
});

test('cluster aggregation: AggregatorRegistry.aggregate sums worker counters, max for _up', async () => {
  const w1 = make();
  const w2 = make();
  w1.received('udp', 'outside', 'request');
  w2.received('udp', 'outside', 'request');
  w2.received('udp', 'outside', 'request');
  w1.upstreamUp(UP_A, true);
  w1.observeProcessing('request', 0.0003);
  w2.observeProcessing('request', 0.0003);
  const agg = AggregatorRegistry.aggregate([await w1.registry.getMetricsAsJSON(), await w2.registry.getMetricsAsJSON()]);
  const text = await agg.metrics();
  assert.equal(sample(text, 'sipedge_messages_received_total', { transport: 'udp', side: 'outside', kind: 'request' }), 3);
  assert.equal(sample(text, 'sipedge_upstream_up', { upstream: UP_A }), 1);
  assert.equal(sample(text, 'sipedge_processing_seconds_count', { kind: 'request' }), 2);
  assert.equal(sample(text, 'sipedge_build_info', { version: '9.9.9-test', node: process.version }), 1);
});

test('NullMetrics has the whole API and exports nothing', async () => {
  const real = make();
  const nul: EdgeMetrics = new NullMetrics();
  const methods = Object.getOwnPropertyNames(Metrics.prototype).filter((k) => k !== 'constructor' && k !== 'collectors' && k !== 'contentType');
  assert.ok(methods.length >= 25);
  for (const k of methods) assert.equal(typeof (nul as unknown as Record<string, unknown>)[k], 'function', k);
  nul.received('udp', 'outside', 'request');
  nul.verdict('x', 'drop', 'y', 'enforce');
  assert.equal(await nul.metrics(), '');
  assert.equal(nul.enabled, false);
  assert.equal(real.enabled, true);
  assert.equal(nul.contentType, real.contentType);
});

test('ops: the dashboard and the alert rules only use metrics the edge exports', async () => {
  const root = path.resolve(__dirname, '../..');
  const dashboard = fs.readFileSync(path.join(root, 'ops/grafana/sip-edge.json'), 'utf8');
  const alertsText = fs.readFileSync(path.join(root, 'ops/prometheus/alerts.yml'), 'utf8');
  const exp = parseExposition(await new Metrics({ version: 'x' }).metrics());
  const known = new Set<string>();
  for (const name of exp.type.keys()) {
    known.add(name);
    if (exp.type.get(name) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) known.add(name + s);
  }
  const used = new Set([...dashboard.matchAll(/sipedge_[a-z0-9_]+/g), ...alertsText.matchAll(/sipedge_[a-z0-9_]+/g)].map((m) => m[0]));
  assert.ok(used.size >= 15, 'the ops files should cover the metrics');
  for (const u of used) assert.ok(known.has(u), `ops files use unknown metric ${u}`);

  const d = JSON.parse(dashboard) as { panels: { type: string; targets?: { expr: string }[] }[] };
  const exprs = d.panels.flatMap((p) => p.targets ?? []).map((t) => t.expr);
  for (const family of ['sipedge_messages_received_total', 'sipedge_verdicts_total', 'sipedge_unmatched_total', 'sipedge_bans_added_total',
    'sipedge_auth_total', 'sipedge_upstream_up', 'sipedge_upstream_responses_total', 'sipedge_transactions_active', 'sipedge_processing_seconds_bucket', 'sipedge_tcp_connections',
    'sipedge_requests_total', 'sipedge_responses_total', 'sipedge_upstream_info']) {
    assert.ok(exprs.some((e) => e.includes(family)), `dashboard lacks ${family}`);
  }
  assert.ok(exprs.some((e) => e.startsWith('histogram_quantile(0.99')), 'p99 panel');

  const alerts = YAML.parse(alertsText) as { groups: { name: string; rules: { alert: string; expr: string; labels: { severity: string }; annotations: { summary: string } }[] }[] };
  const rules = alerts.groups.flatMap((g) => g.rules);
  for (const r of rules) {
    assert.match(r.alert, /^SipEdge[A-Za-z]+$/);
    assert.ok(r.expr.trim().length > 0, r.alert);
    assert.match(r.labels.severity, /^(warning|critical)$/, r.alert);
    assert.ok(r.annotations.summary, r.alert);
  }
  for (const a of ['SipEdgeBanStorm', 'SipEdgeUpstreamDown', 'SipEdgeAllUpstreamsDown', 'SipEdgeRedisDown', 'SipEdgeParseFailureSpike', 'SipEdgeNotReady']) {
    assert.ok(rules.some((r) => r.alert === a), `missing alert ${a}`);
  }
});
