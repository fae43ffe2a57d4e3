// The deployable package as an operator gets it (issue: trunks, DNS, topology hiding, deployable
// package). No container runtime can be reached here, so each piece is checked with the real tool
// that can check it on this machine:
//   - the image's production build, laid out as the Dockerfile's runtime stage copies it, run as a
//     plain process with the image's own ENTRYPOINT, CMD and ENV (read from the Dockerfile), and
//     the image's HEALTHCHECK command run against it (live: 0, stopped: 1);
//   - deploy/compose.yaml through Docker's compose implementation (`docker-compose config`,
//     Debian docker-compose) with and without the variables it requires;
//   - deploy/prometheus/prometheus.yml and the shipped alerts through `promtool check config`;
//   - the systemd unit through `systemd-analyze verify` (which only warns, so the test asserts it
//     prints nothing, and that it does print for a broken copy).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { childSet, eachLine } from './helpers/children';
import { requireTool, skipUnless } from './helpers/ops-edge';
import { freePort } from './helpers/ports';
import { tempDir } from './helpers/tmp';
import { UdpPeer, request } from './helpers/udp-peer';

const ROOT = path.resolve(__dirname, '../..');
const children = childSet();
const { dir: TMP } = tempDir('sipedge-deploy-');

// ---- the Dockerfile, read as docker reads the parts this test needs

interface RuntimeStage {
  env: Record<string, string>;
  entrypoint: string[];
  cmd: string[];
  healthcheck: string[];
  /** COPY sources from the build context (not --from) */
  contextCopies: string[];
  /** COPY --from=build sources */
  buildCopies: string[];
}

function runtimeStage(): RuntimeStage {
  // join continuation lines, drop comments, keep the last FROM's instructions
  const text = fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  const last = lines.map((l, i) => (/^FROM\s/i.test(l) ? i : -1)).filter((i) => i >= 0).pop()!;
  const st: RuntimeStage = { env: {}, entrypoint: [], cmd: [], healthcheck: [], contextCopies: [], buildCopies: [] };
  for (const l of lines.slice(last + 1)) {
    const [kw, ...rest] = l.split(/\s+/);
    const arg = rest.join(' ');
    switch (kw!.toUpperCase()) {
      case 'ENV':
        for (const m of arg.matchAll(/([A-Z_][A-Z0-9_]*)=("([^"]*)"|\S+)/g)) st.env[m[1]!] = m[3] ?? m[2]!;
        break;
      case 'ENTRYPOINT': st.entrypoint = JSON.parse(arg) as string[]; break;
      case 'CMD': st.cmd = JSON.parse(arg) as string[]; break;
      case 'HEALTHCHECK': st.healthcheck = JSON.parse(arg.slice(arg.indexOf('CMD') + 3).trim()) as string[]; break;
      case 'COPY': {
        const parts = rest.filter((p) => !p.startsWith('--'));
        (rest.some((p) => p.startsWith('--from=')) ? st.buildCopies : st.contextCopies).push(...parts.slice(0, -1));
        break;
      }
      default:
    }
  }
  return st;
}

/** the production build (tsconfig.build.json) laid out as the runtime stage has it */
function productionLayout(st: RuntimeStage): string {
  const app = path.join(TMP, 'app');
  fs.rmSync(app, { recursive: true, force: true });
  fs.mkdirSync(app, { recursive: true });
  const tsc = spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.build.json'), '--outDir', path.join(app, 'dist')], { encoding: 'utf8', timeout: 240_000 });
  assert.equal(tsc.status, 0, tsc.stdout + tsc.stderr);
  for (const src of st.buildCopies) {
    if (src === '/app/node_modules') fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(app, 'node_modules'));
    else assert.equal(src, '/app/dist', `the runtime stage copies ${src} from the build: teach this test where it comes from`);
  }
  for (const src of st.contextCopies) {
    if (src.endsWith('/*.yaml')) {
      const d = path.dirname(src);
      fs.mkdirSync(path.join(app, d), { recursive: true });
      for (const f of fs.readdirSync(path.join(ROOT, d)).filter((f) => f.endsWith('.yaml'))) fs.copyFileSync(path.join(ROOT, d, f), path.join(app, d, f));
    } else {
      fs.cpSync(path.join(ROOT, src), path.join(app, src), { recursive: true });
    }
  }
  return app;
}

function runIn(cwd: string, argv: string[], env: NodeJS.ProcessEnv, timeoutMs = 10_000): { code: number | null; out: string } {
  const [cmd, ...args] = argv;
  const r = spawnSync(cmd === 'node' ? process.execPath : cmd!, args, { cwd, env, encoding: 'utf8', timeout: timeoutMs });
  return { code: r.status, out: r.stdout + r.stderr };
}

test('image: the production build holds the edge only, and runs with the image\'s command line, environment and health check', async () => {
  const st = runtimeStage();
  assert.deepEqual(st.entrypoint, ['node', 'dist/edge/cli.js']);
  assert.ok(st.env.SIPEDGE_LISTEN?.includes('0.0.0.0'), 'the image listens on every container address by default');
  assert.ok(st.healthcheck.length > 0, 'the image has a HEALTHCHECK');
  const app = productionLayout(st);
  assert.deepEqual(fs.readdirSync(path.join(app, 'dist')).sort(), ['edge', 'geoip', 'lib'], 'no tests or benchmarks in the production build');

  const pbx = await UdpPeer.bind('127.0.0.1');
  const adminPort = await freePort('tcp');
  // the image's environment; only the sockets move to loopback and free ports (tests never bind
  // fixed or wildcard ports), and the PBX is named as an operator must name it
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '',
    ...st.env,
    SIPEDGE_LISTEN: 'udp:127.0.0.1:0',
    SIPEDGE_METRICS: `127.0.0.1:${adminPort}`,
    SIPEDGE_UPSTREAMS: `udp:127.0.0.1:${pbx.port}`,
    SIPEDGE_SECRET: 'deploy-test-secret-0123456789',
  };
  const [cmd, ...args] = [...st.entrypoint, ...st.cmd];
  const child = spawn(cmd === 'node' ? process.execPath : cmd!, args, { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.track(child);
  const exited = new Promise<number | null>((r) => child.once('close', (c) => r(c)));
  let udpPort = 0;
  const listening = new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no "listening" line within 20 s')), 20_000);
    eachLine(child.stdout!, (l) => {
      try {
        const rec = JSON.parse(l) as { msg?: string; listeners?: { transport: string; port: number }[] };
        if (rec.msg === 'listening') {
          udpPort = rec.listeners!.find((x) => x.transport === 'udp')!.port;
          clearTimeout(t);
          resolve();
        }
      } catch { /* not JSON */ }
    });
  });
  const phone = await UdpPeer.bind('127.0.0.1');
  try {
    await listening;
    assert.equal(runIn(app, st.healthcheck, env).code, 0, 'health check on a live edge');
    // a keepalive OPTIONS to the edge itself is answered by the edge (pings: answer)
    await phone.send(request(phone, { method: 'OPTIONS', ruri: `sip:127.0.0.1:${udpPort}`, to: `<sip:127.0.0.1:${udpPort}>` }), udpPort);
    const r = await phone.waitFirstLine('SIP/2.0 ', 5000);
    assert.match(r.text, /^SIP\/2\.0 200 /);
  } finally {
    child.kill('SIGTERM');
    phone.close();
    pbx.close();
  }
  assert.equal(await exited, 0, 'SIGTERM drains and exits 0');
  const dead = runIn(app, st.healthcheck, env);
  assert.equal(dead.code, 1, 'health check on a stopped edge');
  assert.match(dead.out, /health check failed: http:\/\/127\.0\.0\.1:\d+\/healthz/);
});

test('image: .dockerignore keeps every path the Dockerfile copies in the build context, and the tests out', () => {
  const ignore = fs.readFileSync(path.join(ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  assert.equal(ignore[0], '*', 'an allow-list: nothing enters the context unless named');
  const allowed = ignore.filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/$/, ''));
  const text = fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  const sources = [...text.matchAll(/^COPY\s+(?!--from)(.+)$/gm)].flatMap((m) => m[1]!.trim().split(/\s+/).slice(0, -1));
  for (const s of sources) {
    const top = s.split('/')[0]!;
    assert.ok(allowed.includes(s) || allowed.includes(top), `${s} is copied but excluded by .dockerignore`);
    assert.ok(fs.existsSync(path.join(ROOT, top)), `${s} does not exist`);
  }
  assert.ok(!allowed.includes('test') && !allowed.includes('bench') && !allowed.includes('node_modules'));
});

const COMPOSE_ENV = {
  SIPEDGE_UPSTREAMS: 'udp:10.0.0.5:5060',
  SIPEDGE_ADVERTISE: '203.0.113.10',
  SIPEDGE_METRICS_TOKEN: 'compose-metrics-token-0123456789',
  SIPEDGE_SECRET: 'compose-secret-0123456789abcdef',
  GRAFANA_ADMIN_PASSWORD: 'not-a-real-password',
};

test('compose: deploy/compose.yaml is valid for Docker\'s compose, refuses to start without the settings it needs, and mounts files that exist', { skip: skipUnless(['docker-compose'], 'docker-compose') }, () => {
  const dc = requireTool('docker-compose', 'docker-compose');
  const file = path.join(ROOT, 'deploy', 'compose.yaml');
  const ok = spawnSync(dc, ['-f', file, 'config'], { encoding: 'utf8', env: { PATH: process.env.PATH ?? '', ...COMPOSE_ENV }, timeout: 60_000 });
  assert.equal(ok.status, 0, ok.stderr);
  const cfg = parseYaml(ok.stdout) as { services: Record<string, { environment?: Record<string, string>; volumes?: (string | { source: string; type: string })[] }> };
  assert.deepEqual(Object.keys(cfg.services).sort(), ['grafana', 'prometheus', 'redis', 'sip-edge']);
  assert.equal(cfg.services['sip-edge']!.environment!.SIPEDGE_UPSTREAMS, COMPOSE_ENV.SIPEDGE_UPSTREAMS);
  assert.equal(cfg.services['sip-edge']!.environment!.SIPEDGE_REDIS, 'redis://redis:6379');
  // every bind mount's host side exists (a typo would mount an empty directory in its place)
  for (const [name, svc] of Object.entries(cfg.services)) {
    for (const v of svc.volumes ?? []) {
      const source = typeof v === 'string' ? v.split(':')[0]! : v.type === 'bind' ? v.source : undefined;
      if (source === undefined || !source.startsWith('/')) continue;
      assert.ok(fs.existsSync(source), `${name} mounts ${source}, which does not exist`);
    }
  }
  for (const missing of ['SIPEDGE_UPSTREAMS', 'SIPEDGE_METRICS_TOKEN']) {
    const env: Record<string, string> = { PATH: process.env.PATH ?? '', ...COMPOSE_ENV };
    delete env[missing];
    const r = spawnSync(dc, ['-f', file, 'config', '-q'], { encoding: 'utf8', env, timeout: 60_000 });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, new RegExp(`set ${missing}`));
  }
});

test('compose: the Prometheus it runs loads its scrape job and the shipped alerts (promtool check config)', { skip: skipUnless(['promtool'], 'prometheus') }, () => {
  const promtool = requireTool('promtool', 'prometheus');
  const dir = path.join(TMP, 'prom');
  fs.mkdirSync(dir, { recursive: true });
  // as mounted in the container: prometheus.yml and alerts.yml side by side; the token file the
  // container writes at start is moved into this directory (promtool checks that it exists)
  const text = fs.readFileSync(path.join(ROOT, 'deploy/prometheus/prometheus.yml'), 'utf8');
  assert.match(text, /credentials_file: \/prometheus\/sipedge-token/);
  fs.writeFileSync(path.join(dir, 'prometheus.yml'), text.replace('/prometheus/sipedge-token', path.join(dir, 'token')));
  fs.writeFileSync(path.join(dir, 'token'), COMPOSE_ENV.SIPEDGE_METRICS_TOKEN);
  fs.copyFileSync(path.join(ROOT, 'ops/prometheus/alerts.yml'), path.join(dir, 'alerts.yml'));
  const r = spawnSync(promtool, ['check', 'config', path.join(dir, 'prometheus.yml')], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /SUCCESS: \d+ rules found/);
  // the compose file mounts the same alert file and this config
  const compose = fs.readFileSync(path.join(ROOT, 'deploy/compose.yaml'), 'utf8');
  assert.match(compose, /\.\.\/ops\/prometheus\/alerts\.yml:\/etc\/prometheus\/alerts\.yml:ro/);
  assert.match(compose, /\.\/prometheus\/prometheus\.yml:\/etc\/prometheus\/prometheus\.yml:ro/);
});

test('systemd: the unit verifies cleanly (systemd-analyze verify), a broken copy does not, and it runs the production layout', { skip: skipUnless(['systemd-analyze'], 'systemd') }, () => {
  const sa = requireTool('systemd-analyze', 'systemd');
  const unit = path.join(ROOT, 'deploy/systemd/sip-edge.service');
  const good = spawnSync(sa, ['verify', unit], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(good.status, 0, good.stderr);
  assert.equal(good.stderr.trim(), '', 'systemd-analyze has no complaint');
  // the verifier warns (exit 0) on a bad value: a copy with one proves the check above can fail
  const bad = path.join(TMP, 'sip-edge.service');
  fs.writeFileSync(bad, fs.readFileSync(unit, 'utf8').replace('ProtectSystem=strict', 'ProtectSystem=bogus'));
  const b = spawnSync(sa, ['verify', bad], { encoding: 'utf8', timeout: 60_000 });
  assert.match(b.stderr, /ProtectSystem|protect system/i);
  const text = fs.readFileSync(unit, 'utf8');
  for (const k of ['NoNewPrivileges=yes', 'ProtectSystem=strict', 'CapabilityBoundingSet=', 'User=sip-edge']) assert.ok(text.includes(k), k);
  assert.match(text, /^ExecStart=\/usr\/bin\/node \/opt\/sip-edge\/dist\/edge\/cli\.js run$/m);
});
