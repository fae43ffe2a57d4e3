// The shipped Grafana dashboard and Prometheus alerts (ops/) against the /metrics of a RUNNING edge
// that has seen the traffic behind each panel: calls through edge authentication, a retransmission,
// malformed and stray messages, a SIPVicious scan that ends in a ban, a manual ban that expires, a
// rules reload that works and one that fails, a password guesser locked out, an open TCP
// connection, and finally its Redis killed.
// - every series a panel or an alert queries has a sample (not just HELP/TYPE), matching the
//   query's label matchers; counters the traffic moved are non-zero;
// - sipedge_ready follows /readyz (1, then 0 once Redis is gone); sipedge_tcp_connections counts
//   the open connection, sipedge_redis_errors_total the failed Redis calls,
//   sipedge_bans_expired_total the expired ban;
// - promtool check metrics accepts the exposition, promtool check rules the alerts, and
//   promtool test rules fires SipEdgeNotReady and SipEdgeRedisDown on the series this edge exposed.
// Under CI=true a missing promtool or redis-server is a failure, never a skip.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import { bansCli, bruteForceUntilLocked, pbx200, requireTool, run, scanUntilBanned, skipUnless, startOpsEdge, waitFor, REALM, VICTIM, type OpsEdge } from './helpers/ops-edge';
import { parseExposition, sample, sumOf, type PromExposition } from './helpers/prom';
import { matches, selectors, type Selector } from './helpers/promql';
import { redisServerInstalled, startPrivateRedis, type PrivateRedis } from './helpers/redis-server';
import { REPO_ROOT } from './helpers/sipp';
import { answerChallenge } from './helpers/auth-edge';
import { UdpPeer, header, request, response, uniq } from './helpers/udp-peer';

const DASHBOARD = path.join(REPO_ROOT, 'ops/grafana/sip-edge.json');
const ALERTS = path.join(REPO_ROOT, 'ops/prometheus/alerts.yml');
const ALERT_TESTS = path.join(REPO_ROOT, 'ops/prometheus/alerts.test.yml');
const inCi = process.env.CI === 'true';
/** labels Prometheus attaches to every scraped series (the edge never exports them) */
const TARGET_LABELS = new Set(['instance', 'job']);
/** series Prometheus makes itself */
const SYNTHETIC = new Set(['up']);

const skip = skipUnless(['promtool'], 'prometheus') || (!redisServerInstalled() && !inCi ? 'redis-server not installed (CI=true makes this a failure)' : false);

interface Query { readonly where: string; readonly expr: string }

/** wait until pred holds or ms passed; never throws */
async function settle(pred: () => Promise<boolean>, ms: number): Promise<void> {
  await waitFor(pred, ms, '').catch(() => undefined);
}

/** every PromQL expression of the dashboard (panels, nested rows, template variables) */
function dashboardQueries(): Query[] {
  const d = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')) as { panels?: unknown[]; templating?: { list?: { name: string; type: string; query?: unknown }[] } };
  const out: Query[] = [];
  const walk = (panels: unknown[] | undefined): void => {
    for (const p of panels ?? []) {
      const panel = p as { title?: string; targets?: { expr?: string }[]; panels?: unknown[] };
      for (const t of panel.targets ?? []) if (t.expr) out.push({ where: `panel "${panel.title}"`, expr: t.expr });
      walk(panel.panels);
    }
  };
  walk(d.panels);
  for (const v of d.templating?.list ?? []) {
    if (v.type !== 'query') continue; // datasource, custom, interval ... variables hold no PromQL
    const q = typeof v.query === 'string' ? v.query : (v.query as { query?: string } | undefined)?.query;
    if (!q) continue;
    // Grafana's label_values(selector, label): the selector is PromQL, the label is not a metric
    const lv = /^label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$/.exec(q.trim());
    out.push({ where: `variable $${v.name}`, expr: lv ? lv[1]! : q });
  }
  return out;
}

function alertQueries(): Query[] {
  const a = YAML.parse(fs.readFileSync(ALERTS, 'utf8')) as { groups: { rules: { alert?: string; record?: string; expr: string }[] }[] };
  return a.groups.flatMap((g) => g.rules.map((r) => ({ where: `alert ${r.alert ?? r.record}`, expr: String(r.expr) })));
}

/** samples an exposition holds for a selector (target labels ignored: Prometheus adds them) */
function selected(exp: PromExposition, s: Selector): { name: string; value: number }[] {
  const ms = s.matchers.filter((m) => !TARGET_LABELS.has(m.label));
  return exp.samples.filter((x) => x.name === s.name && matches(x.labels, ms));
}

test('the PromQL selector reader: names, not functions, label names, keywords, strings or durations', () => {
  const names = (e: string): string[] => selectors(e).map((s) => s.name);
  assert.deepEqual(names('histogram_quantile(0.99, sum by (le, kind) (rate(a_bucket{instance=~"$instance"}[$__rate_interval])))'), ['a_bucket']);
  assert.deepEqual(names('a == 0 and on (instance) (max by (instance) (b) == 1)'), ['a', 'b']);
  assert.deepEqual(names('sum by (x) (a) / count without(y) (b)'), ['a', 'b']);
  assert.deepEqual(names('sum without (x) (rate(c_total[5m] offset 1h)) / ignoring(y) group_left(z) d'), ['c_total', 'd']);
  assert.deepEqual(names('up{job="sip-edge"} == 0'), ['up']);
  assert.deepEqual(names('topk(10, e{l="by (x) f(g)"}) > bool 1e3'), ['e']);
  assert.deepEqual(names('{__name__="h", k!="v"} # a comment naming i'), ['h']);
  const s = selectors('rate(m_total{a="1", b=~"x|y", c!~"z.*"}[1m])')[0]!;
  assert.deepEqual(s.matchers.map((m) => `${m.label}${m.op}${m.value}`), ['a=1', 'b=~x|y', 'c!~z.*']);
  assert.ok(matches({ a: '1', b: 'y' }, s.matchers));
  assert.ok(!matches({ a: '1', b: 'xy' }, s.matchers), 'regex matchers are anchored');
});

describe('the dashboard and the alerts against a running edge', { skip, timeout: 120_000 }, () => {
  let redis: PrivateRedis | undefined;
  let edge: OpsEdge | undefined;
  const peers: UdpPeer[] = [];
  let tcp: net.Socket | undefined;
  /** exposition while everything is up, and after Redis died */
  let readyText = '';
  let finalText = '';
  let ready: PromExposition;
  let final: PromExposition;

  before(async () => {
    requireTool('promtool', 'prometheus');
    redis = await startPrivateRedis();
    const pbx = await pbx200();
    peers.push(pbx);
    edge = await startOpsEdge({ upstreamPort: pbx.port, redisUrl: redis.url });
    const e = edge;
    await waitFor(async () => (await fetch(`${e.admin}/readyz`)).status === 200, 5000, '/readyz 200 (PBX answering probes, Redis up)');
    // waits on what the tests below assert are bounded but not fatal: a series that never moves
    // fails its own test, with its own message
    await settle(async () => sample(await e.scrape(), 'sipedge_ready') === 1, 3000);

    // a phone registers through edge authentication: 401, right answer, forwarded, PBX 200;
    // then it retransmits the REGISTER and is answered from the stored 200
    const phone = await UdpPeer.bind('127.0.0.31');
    peers.push(phone);
    const reg = { method: 'REGISTER', ruri: `sip:${REALM}`, from: `<sip:${VICTIM}@${REALM}>`, to: `<sip:${VICTIM}@${REALM}>`, callId: uniq('reg') };
    await phone.send(request(phone, reg), e.udp);
    const ch = await phone.wait((m) => m.text.startsWith('SIP/2.0 401') && header(m.text, 'Call-ID') === reg.callId, 5000);
    const second = request(phone, { ...reg, cseq: 2, branch: uniq('z9hG4bK'), extra: [answerChallenge(401, header(ch.text, 'WWW-Authenticate')!, { method: 'REGISTER', uri: `sip:${REALM}`, user: VICTIM, password: 'the real secret' })] });
    await phone.send(second, e.udp);
    await phone.wait((m) => m.text.startsWith('SIP/2.0 200') && header(m.text, 'Call-ID') === reg.callId, 5000);
    await phone.send(second, e.udp);
    await phone.wait((m) => m.text.startsWith('SIP/2.0 200') && header(m.text, 'Call-ID') === reg.callId, 5000);
    // garbage, and a reply to nothing
    await phone.send('INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4\r\n\0\r\n\r\n', e.udp);
    await phone.send(response(request(phone, { callId: uniq('stray') }), 200, 'OK', { toTag: 'x' }), e.udp);
    // a scanner is banned; a password guesser locks a user out
    const scanner = await UdpPeer.bind('127.0.0.21');
    peers.push(scanner);
    await scanUntilBanned(e, scanner, e.udp, '127.0.0.1', '127.0.0.21');
    const cracker = await UdpPeer.bind('127.0.0.41');
    peers.push(cracker);
    await bruteForceUntilLocked(e, cracker);
    // a one-second manual ban, which must be seen to expire
    const add = await bansCli(e, 'add', '198.51.100.9', '--for', '1', '--reason', 'expiry-test');
    assert.equal(add.code, 0, add.err);
    await settle(async () => (sample(await e.scrape(), 'sipedge_bans_expired_total') ?? 0) >= 1, 5000);
    // rules: a reload that works (an edit, then SIGHUP), then one that fails (the previous rules stay)
    fs.appendFileSync(path.join(e.dir, 'rules', 'scanner.yaml'), '# reviewed\n');
    process.kill(e.proc.pid, 'SIGHUP');
    await waitFor(async () => (sample(await e.scrape(), 'sipedge_rules_reloads_total', { result: 'ok' }) ?? 0) >= 1, 5000, 'reload ok');
    const stages = path.join(e.dir, 'rules', 'stages.yaml');
    const good = fs.readFileSync(stages, 'utf8');
    fs.writeFileSync(stages, 'stages: [{name: sanity, mode: sometimes}]\n');
    process.kill(e.proc.pid, 'SIGHUP');
    await waitFor(async () => (sample(await e.scrape(), 'sipedge_rules_reloads_total', { result: 'error' }) ?? 0) >= 1, 5000, 'reload error');
    fs.writeFileSync(stages, good);
    // a phone on TCP keeps its connection open
    tcp = net.connect({ host: '127.0.0.1', port: e.tcp, localAddress: '127.0.0.32' });
    await new Promise<void>((res, rej) => { tcp!.once('connect', res); tcp!.once('error', rej); });
    await settle(async () => (sample(await e.scrape(), 'sipedge_tcp_connections') ?? 0) === 1, 3000);
    // the REGISTER's server transaction ends by Timer J (64*T1, T1 = 50 ms here)
    await waitFor(async () => (sample(await e.scrape(), 'sipedge_transactions_expired_total') ?? 0) >= 1, 8000, 'a transaction expired');
    readyText = await e.scrape();
    ready = parseExposition(readyText);

    // Redis dies: /readyz goes 503, and the next requests meet a store that fails
    await redis.kill();
    await waitFor(async () => (await fetch(`${e.admin}/readyz`)).status === 503, 5000, '/readyz 503 after Redis died');
    const late = await UdpPeer.bind('127.0.0.33');
    peers.push(late);
    for (let i = 0; i < 3; i++) {
      const cid = uniq('late');
      await late.send(request(late, { method: 'REGISTER', ruri: `sip:${REALM}`, from: `<sip:${VICTIM}@${REALM}>`, to: `<sip:${VICTIM}@${REALM}>`, callId: cid }), e.udp);
      await late.wait((m) => m.text.startsWith('SIP/2.0 ') && header(m.text, 'Call-ID') === cid, 5000);
    }
    await settle(async () => (sample(await e.scrape(), 'sipedge_redis_errors_total') ?? 0) > 0, 5000);
    finalText = await e.scrape();
    final = parseExposition(finalText);
  });

  after(async () => {
    tcp?.destroy();
    for (const p of peers) p.close();
    await edge?.stop();
    if (redis?.running) await redis.kill();
  });

  test('every series a dashboard panel or an alert queries has a sample on the live /metrics', () => {
    const queries = [...dashboardQueries(), ...alertQueries()];
    assert.ok(queries.length >= 40, `read ${queries.length} queries`);
    const problems: string[] = [];
    let checked = 0;
    for (const q of queries) {
      const sels = selectors(q.expr);
      if (sels.length === 0) problems.push(`${q.where}: no metric in ${q.expr}`);
      for (const s of sels) {
        if (SYNTHETIC.has(s.name)) continue;
        checked++;
        // Redis-down series are checked after Redis died, the rest while everything was up
        for (const [when, exp] of [['ready', ready], ['Redis down', final]] as const) {
          if (selected(exp, s).length === 0) problems.push(`${q.where}: ${s.name}${JSON.stringify(s.matchers)} has no sample (${when})`);
        }
      }
    }
    assert.ok(checked >= 40);
    assert.deepEqual(problems, []);
  });

  test('the counters behind the panels moved with the traffic', () => {
    // what this traffic did not do: fill the transaction table, run a stage in shadow mode, fill
    // the TCP connection cap so far that a known peer is refused (test/dos.test.ts does that)
    const notProvoked = new Set([
      'sipedge_transactions_rejected_total{}', 'sipedge_transactions_rejected_total{reason=table_full}', 'sipedge_verdicts_total{mode=shadow}',
      'sipedge_tcp_admissions_total{class=inside|trusted|promoted,result=rejected_.*}',
    ]);
    const zero: string[] = [];
    for (const q of [...dashboardQueries(), ...alertQueries()]) {
      for (const s of selectors(q.expr)) {
        const fam = s.name.replace(/_(bucket|sum|count)$/, '');
        if (final.type.get(fam) !== 'counter' && final.type.get(fam) !== 'histogram') continue;
        const key = `${s.name}{${s.matchers.filter((m) => !TARGET_LABELS.has(m.label)).map((m) => `${m.label}=${m.value}`).join(',')}}`;
        if (notProvoked.has(key)) continue;
        if (!selected(final, s).some((x) => x.value > 0)) zero.push(`${q.where}: ${key}`);
      }
    }
    assert.deepEqual([...new Set(zero)], []);
  });

  test('sipedge_ready follows /readyz; TCP connections, Redis errors, bans and expired bans are counted', () => {
    assert.equal(sample(ready, 'sipedge_ready'), 1);
    assert.equal(sample(final, 'sipedge_ready'), 0, 'Redis unreachable: /readyz 503, sipedge_ready 0');
    assert.equal(sample(ready, 'sipedge_redis_up'), 1);
    assert.equal(sample(final, 'sipedge_redis_up'), 0);
    assert.equal(sample(ready, 'sipedge_tcp_connections'), 1, 'the open TCP connection');
    assert.ok(sample(final, 'sipedge_redis_errors_total')! > 0, 'failed Redis calls');
    assert.equal(sample(ready, 'sipedge_redis_errors_total'), 0, 'no error while Redis was up');
    assert.ok(sample(ready, 'sipedge_bans_expired_total')! >= 1, 'the 1-second ban expired');
    // the scanner's ban is active, the expired one is not counted
    assert.equal(sample(ready, 'sipedge_bans_active'), 1);
    assert.equal(sumOf(ready, 'sipedge_bans_added_total'), 2, 'the scanner ban and the manual one');
    assert.equal(sample(ready, 'sipedge_retransmissions_total', { direction: 'answered' }), 1, 'the REGISTER retransmission answered from the stored 200');
    assert.equal(sample(ready, 'sipedge_auth_total', { mode: 'edge', result: 'lockout' }), 1);
  });

  test('promtool check metrics accepts the live exposition', async () => {
    const promtool = requireTool('promtool', 'prometheus');
    for (const text of [readyText, finalText]) {
      const r = await run(promtool, ['check', 'metrics'], { input: text });
      assert.equal(r.code, 0, `promtool check metrics:\n${r.out}${r.err}`);
      assert.equal((r.out + r.err).trim(), '', 'no lint findings');
    }
  });

  test('promtool check rules and the shipped rule unit tests (ops/prometheus/alerts.test.yml)', async () => {
    const promtool = requireTool('promtool', 'prometheus');
    const c = await run(promtool, ['check', 'rules', ALERTS]);
    assert.equal(c.code, 0, c.out + c.err);
    assert.match(c.out, /SUCCESS: \d+ rules found/);
    const u = await run(promtool, ['test', 'rules', ALERT_TESTS]);
    assert.equal(u.code, 0, u.out + u.err);
    assert.match(u.out, /SUCCESS/);
  });

  test('promtool test rules: SipEdgeNotReady and SipEdgeRedisDown fire on the series this edge exposed', async () => {
    const promtool = requireTool('promtool', 'prometheus');
    const rules = (YAML.parse(fs.readFileSync(ALERTS, 'utf8')) as { groups: { rules: { alert?: string; annotations?: Record<string, string> }[] }[] })
      .groups.flatMap((g) => g.rules);
    const instance = 'edge1:9090';
    const annotations = (alert: string): Record<string, string> => Object.fromEntries(Object.entries(rules.find((r) => r.alert === alert)!.annotations ?? {})
      .map(([k, v]) => [k, v.replace(/\{\{ \$labels\.instance \}\}/g, instance)]));
    // one scrape every 15 s: ready for 2 minutes, then as after Redis died, for 5 minutes
    const series = (name: string): { series: string; values: string } => {
      const a = sample(ready, name);
      const b = sample(final, name);
      assert.ok(a !== undefined && b !== undefined, `${name} has no sample`);
      return { series: `${name}{instance="${instance}",job="sip-edge"}`, values: `${a}x8 ${b}x20` };
    };
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-promtest-'));
    try {
      const file = path.join(dir, 'live.test.yml');
      const fires = (alert: string, severity: string) => ({ eval_time: '6m', alertname: alert, exp_alerts: [{ exp_labels: { severity, instance, job: 'sip-edge' }, exp_annotations: annotations(alert) }] });
      fs.writeFileSync(file, YAML.stringify({
        rule_files: [ALERTS],
        evaluation_interval: '15s',
        tests: [{
          interval: '15s',
          input_series: [series('sipedge_ready'), series('sipedge_redis_up')],
          alert_rule_test: [
            { eval_time: '1m', alertname: 'SipEdgeNotReady', exp_alerts: [] },
            { eval_time: '1m', alertname: 'SipEdgeRedisDown', exp_alerts: [] },
            fires('SipEdgeNotReady', 'critical'),
            fires('SipEdgeRedisDown', 'warning'),
          ],
        }],
      }));
      const r = await run(promtool, ['test', 'rules', file]);
      assert.equal(r.code, 0, `${r.out}${r.err}\n${fs.readFileSync(file, 'utf8')}`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
