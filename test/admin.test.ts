import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import * as net from 'node:net';
import { AdminError, parseListen, startAdmin } from '../edge/admin';
import type { AdminServer, ReadinessReport } from '../edge/admin';
import { Metrics, NullMetrics } from '../edge/metrics';
import { parseExposition, sample } from './helpers/prom';

interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function request(srv: AdminServer, path: string, opts: { method?: string; headers?: Record<string, string> } = {}): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: srv.address.address, port: srv.address.port, path, method: opts.method ?? 'GET', headers: opts.headers, agent: false, timeout: 5000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end();
  });
}

const ALL_OK: ReadinessReport = {
  ready: true,
  checks: [
    { name: 'listeners_bound', ok: true },
    { name: 'rules_loaded', ok: true },
    { name: 'upstream_healthy', ok: true, detail: '1 of 1 upstreams healthy' },
  ],
};

async function withAdmin(
  opts: { token?: string; readiness?: () => ReadinessReport | Promise<ReadinessReport>; metrics?: Metrics | NullMetrics; listen?: string },
  fn: (srv: AdminServer, m: Metrics | NullMetrics) => Promise<void>,
): Promise<void> {
  const m = opts.metrics ?? new Metrics({ defaultMetrics: false, version: 'test', stages: [{ name: 'scanner', reasons: ['ua_signature'] }] });
  const srv = await startAdmin({ listen: opts.listen ?? '127.0.0.1:0', token: opts.token, metrics: m, readiness: opts.readiness ?? (() => ALL_OK) });
  try {
    await fn(srv, m);
  } finally {
    await srv.close();
  }
}

test('/metrics serves the Prometheus text format with live counts', async () => {
  await withAdmin({}, async (srv, m) => {
    assert.equal(srv.address.address, '127.0.0.1');
    assert.ok(srv.address.port > 0);
    m.received('udp', 'outside', 'request');
    m.verdict('scanner', 'ban', 'ua_signature', 'enforce');
    const r = await request(srv, '/metrics');
    assert.equal(r.status, 200);
    assert.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    assert.equal(r.headers['cache-control'], 'no-store');
    const exp = parseExposition(r.body);
    assert.equal(sample(exp, 'sipedge_messages_received_total', { transport: 'udp', side: 'outside', kind: 'request' }), 1);
    assert.equal(sample(exp, 'sipedge_verdicts_total', { stage: 'scanner', action: 'ban', reason: 'ua_signature', mode: 'enforce' }), 1);
    assert.equal(exp.type.get('sipedge_verdicts_total'), 'counter');
    // a query string does not change the route
    assert.equal((await request(srv, '/metrics?x=1')).status, 200);
    // HEAD: same headers, no body
    const h = await request(srv, '/metrics', { method: 'HEAD' });
    assert.equal(h.status, 200);
    assert.equal(h.body, '');
  });
});

test('/metrics with a token: 401 without or with a wrong token, 200 with the right one', async () => {
  const token = 's3cr3t-Token_value';
  await withAdmin({ token }, async (srv) => {
    const none = await request(srv, '/metrics');
    assert.equal(none.status, 401);
    assert.match(String(none.headers['www-authenticate']), /^Bearer/);
    assert.doesNotMatch(none.body, /sipedge_/);
    for (const bad of [`Bearer ${token}x`, `Bearer ${token.slice(0, -1)}`, 'Bearer ', `Basic ${Buffer.from(`u:${token}`).toString('base64')}`, token, `Bearer ${token} extra`, 'Bearer s3cr3t-token_value']) {
      const r = await request(srv, '/metrics', { headers: { Authorization: bad } });
      assert.equal(r.status, 401, `accepted: ${bad}`);
    }
    const ok = await request(srv, '/metrics', { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(ok.status, 200);
    assert.match(ok.body, /sipedge_messages_received_total/);
    const lower = await request(srv, '/metrics', { headers: { Authorization: `bearer ${token}` } });
    assert.equal(lower.status, 200, 'auth scheme is case-insensitive');
    // probes need no token
    assert.equal((await request(srv, '/healthz')).status, 200);
    assert.equal((await request(srv, '/readyz')).status, 200);
  });
});

test('/healthz answers 200 {"status":"ok"}', async () => {
  await withAdmin({}, async (srv) => {
    const r = await request(srv, '/healthz');
    assert.equal(r.status, 200);
    assert.match(String(r.headers['content-type']), /^application\/json/);
    assert.deepEqual(JSON.parse(r.body), { status: 'ok' });
  });
});

test('/readyz: 200 while every check passes, 503 naming the failing check when one flips', async () => {
  let upstreamOk = true;
  let redisOk = true;
  const readiness = (): ReadinessReport => {
    const checks = [
      { name: 'listeners_bound', ok: true },
      { name: 'rules_loaded', ok: true },
      { name: 'upstream_healthy', ok: upstreamOk, detail: `${upstreamOk ? 1 : 0} of 1 upstreams healthy` },
      { name: 'redis_reachable', ok: redisOk },
    ];
    return { ready: checks.every((c) => c.ok), checks };
  };
  await withAdmin({ readiness }, async (srv) => {
    let r = await request(srv, '/readyz');
    assert.equal(r.status, 200);
    let body = JSON.parse(r.body) as { status: string; checks: { name: string; ok: boolean; detail?: string }[]; failing: string[] };
    assert.equal(body.status, 'ready');
    assert.equal(body.checks.length, 4);
    assert.deepEqual(body.failing, []);

    upstreamOk = false;
    r = await request(srv, '/readyz');
    assert.equal(r.status, 503);
    body = JSON.parse(r.body) as typeof body;
    assert.equal(body.status, 'not_ready');
    assert.deepEqual(body.failing, ['upstream_healthy']);
    assert.deepEqual(body.checks.find((c) => c.name === 'upstream_healthy'), { name: 'upstream_healthy', ok: false, detail: '0 of 1 upstreams healthy' });

    redisOk = false;
    body = JSON.parse((await request(srv, '/readyz')).body) as typeof body;
    assert.deepEqual(body.failing, ['upstream_healthy', 'redis_reachable']);

    upstreamOk = true;
    redisOk = true;
    assert.equal((await request(srv, '/readyz')).status, 200);
  });
});

test('/readyz: a failing check wins over ready:true; async and throwing callbacks', async () => {
  await withAdmin({ readiness: () => ({ ready: true, checks: [{ name: 'rules_loaded', ok: false }] }) }, async (srv) => {
    assert.equal((await request(srv, '/readyz')).status, 503);
  });
  await withAdmin({ readiness: async () => ALL_OK }, async (srv) => {
    assert.equal((await request(srv, '/readyz')).status, 200);
  });
  await withAdmin({ readiness: () => { throw new Error('bug'); } }, async (srv) => {
    const r = await request(srv, '/readyz');
    assert.equal(r.status, 503);
    assert.deepEqual((JSON.parse(r.body) as { failing: string[] }).failing, ['readiness_error']);
    assert.doesNotMatch(r.body, /bug/, 'internal error text is not exposed');
    // and the server is still alive
    assert.equal((await request(srv, '/healthz')).status, 200);
  });
  await withAdmin({ readiness: () => Promise.reject(new Error('async bug')) }, async (srv) => {
    assert.equal((await request(srv, '/readyz')).status, 503);
  });
});

test('404 for unknown paths, 405 with Allow for other methods', async () => {
  await withAdmin({}, async (srv) => {
    for (const p of ['/', '/metrics/', '/metric', '/healthz/x', '/../metrics', '/favicon.ico']) {
      assert.equal((await request(srv, p)).status, 404, p);
    }
    for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH']) {
      for (const p of ['/metrics', '/healthz', '/readyz']) {
        const r = await request(srv, p, { method });
        assert.equal(r.status, 405, `${method} ${p}`);
        assert.equal(r.headers.allow, 'GET, HEAD');
      }
    }
  });
});

test('a metrics source that fails yields 500, not a crash; NullMetrics serves an empty body', async () => {
  const broken = { contentType: 'text/plain', metrics: () => Promise.reject(new Error('collect failed')) };
  const srv = await startAdmin({ listen: '127.0.0.1:0', metrics: broken, readiness: () => ALL_OK });
  try {
    assert.equal((await request(srv, '/metrics')).status, 500);
    assert.equal((await request(srv, '/healthz')).status, 200);
  } finally {
    await srv.close();
  }
  await withAdmin({ metrics: new NullMetrics() }, async (s) => {
    const r = await request(s, '/metrics');
    assert.equal(r.status, 200);
    assert.equal(r.body, '');
  });
});

test('garbage on the socket gets 400 and the listener keeps serving', async () => {
  await withAdmin({}, async (srv) => {
    const reply = await new Promise<string>((resolve, reject) => {
      const s = net.connect(srv.address.port, srv.address.address);
      let got = '';
      s.setTimeout(5000, () => s.destroy(new Error('timeout')));
      s.on('data', (d: Buffer) => { got += d.toString('latin1'); });
      s.on('end', () => resolve(got));
      s.on('close', () => resolve(got));
      s.on('error', reject);
      s.write('INVITE sip:bob@example.com SIP/2.0\r\nVia: \x00\x01\r\n\r\n');
    });
    assert.match(reply, /^HTTP\/1\.1 400/);
    assert.equal((await request(srv, '/healthz')).status, 200);
  });
});

test('IPv6 loopback listen and listen-string validation', async (t) => {
  let v6: AdminServer | undefined;
  try {
    v6 = await startAdmin({ listen: '[::1]:0', metrics: new NullMetrics(), readiness: () => ALL_OK });
  } catch (e) {
    t.skip(`no IPv6 loopback here: ${(e as Error).message}`);
  }
  if (v6) {
    try {
      assert.equal(v6.address.address, '::1');
      assert.equal((await request({ address: { address: '::1', port: v6.address.port }, close: v6.close }, '/healthz')).status, 200);
    } finally {
      await v6.close();
    }
  }
  assert.deepEqual(parseListen('127.0.0.1:9090'), { host: '127.0.0.1', port: 9090 });
  assert.deepEqual(parseListen('[::1]:0'), { host: '::1', port: 0 });
  assert.deepEqual(parseListen('localhost:80'), { host: 'localhost', port: 80 });
  for (const bad of ['', '9090', '127.0.0.1', '::1:9090', '127.0.0.1:70000', '127.0.0.1:-1', 'a b:1', '[::1]']) {
    assert.equal(parseListen(bad), undefined, bad);
    await assert.rejects(startAdmin({ listen: bad, metrics: new NullMetrics(), readiness: () => ALL_OK }), (e: unknown) => e instanceof AdminError && e.code === 'admin_listen_invalid');
  }
});

test('a port already in use rejects with admin_listen_failed; close() is idempotent', async () => {
  const first = await startAdmin({ listen: '127.0.0.1:0', metrics: new NullMetrics(), readiness: () => ALL_OK });
  try {
    await assert.rejects(
      startAdmin({ listen: `127.0.0.1:${first.address.port}`, metrics: new NullMetrics(), readiness: () => ALL_OK }),
      (e: unknown) => e instanceof AdminError && e.code === 'admin_listen_failed',
    );
  } finally {
    await first.close();
    await first.close();
  }
  // closed means closed
  await assert.rejects(request(first, '/healthz'));
});
