// TLS listeners (issue 14): protocol policy, cipher policy, SNI, certificate reload from disk,
// renegotiation, SIP over TLS on IPv4 and IPv6, config. Probed with the real `openssl s_client`
// against a real edge; each refusal is paired with a control that shows the same probe succeeds
// where the policy allows it, so a test cannot pass because the probe itself is broken.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { startEdge, type EdgeHandle } from '../edge/edge';
import { loadConfig } from '../edge/config/load';
import { DEFAULT_TLS_SETTINGS, loadTlsMaterial, type TlsSettings } from '../edge/transport/tls-context';
import { haveOpenssl, makeCa, makeLeaf, type Leaf, type TestCa } from './helpers/certs';
import { testConfig } from './helpers/config';
import { TcpPeer } from './helpers/tcp-peer';
import { UdpPeer, header, request, response, uniq } from './helpers/udp-peer';
import { tempDir } from './helpers/tmp';
import { metricSum, optionsToEdge, sClient as probe, until } from './helpers/tls-probe';

const silent = pino({ level: 'silent' });
const CI = process.env.CI === 'true';
const skip = !haveOpenssl() && !CI ? 'openssl not installed' : false;

/** a plain node TLS server with node's own defaults (+ `extra`): the control for the probes */
async function controlServer(leaf: Leaf, extra: tls.TlsOptions, hold = false): Promise<{ port: number; close: () => Promise<void> }> {
  const open = new Set<tls.TLSSocket>();
  const srv = tls.createServer({ cert: fs.readFileSync(leaf.cert), key: fs.readFileSync(leaf.key), ...extra }, (s) => {
    s.on('error', () => undefined);
    if (!hold) { s.end(); return; }
    open.add(s);
    s.on('close', () => open.delete(s));
  });
  const close0 = (): void => { for (const s of open) s.destroy(); };
  srv.on('tlsClientError', () => undefined);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { port: (srv.address() as { port: number }).port, close: () => { close0(); return new Promise((r) => srv.close(() => r())); } };
}

const metric = metricSum;
const sClient = (port: number, args: readonly string[], host = '127.0.0.1', brief = true) => probe(port, args, { host, brief });

const options = optionsToEdge;

describe('tls material', { skip }, () => {
  const tmp = tempDir('sipedge-tlsmat-');
  let ca: TestCa;
  before(() => { ca = makeCa(path.join(tmp.dir, 'pki')); });
  const settings = (certificates: TlsSettings['certificates']): TlsSettings => ({ ...DEFAULT_TLS_SETTINGS, certificates });

  test('a good certificate loads, with its names; the first is the default for unknown SNI', () => {
    const a = makeLeaf(ca, { names: ['a.example'], ips: ['127.0.0.1'] });
    const b = makeLeaf(ca, { names: ['b.example', '*.b.example'] });
    const r = loadTlsMaterial(settings([a, b]));
    assert.ok(r.ok, JSON.stringify(!r.ok && r.errors));
    assert.deepEqual(r.value.certs[0]!.names, ['a.example', '127.0.0.1']);
    assert.equal(r.value.contextFor('b.example'), r.value.contextFor('x.b.example'), 'wildcard covers one label');
    assert.notEqual(r.value.contextFor('b.example'), r.value.defaultContext);
    assert.equal(r.value.contextFor('y.x.b.example'), r.value.defaultContext, 'a wildcard covers one label only (RFC 6125 6.4.3)');
    assert.equal(r.value.contextFor('unknown.example'), r.value.defaultContext);
  });

  test('errors name the file: key of another certificate, expired, unreadable, not PEM', () => {
    const a = makeLeaf(ca, { names: ['a.example'] });
    const b = makeLeaf(ca, { names: ['b.example'] });
    const old = makeLeaf(ca, { names: ['old.example'], expired: true });
    const junk = tmp.file('not a certificate', '.pem');
    const r = loadTlsMaterial(settings([
      { cert: a.cert, key: b.key },
      old,
      { cert: path.join(tmp.dir, 'missing.pem'), key: a.key },
      { cert: junk, key: a.key },
    ]));
    assert.equal(r.ok, false);
    const errors = !r.ok ? r.errors.join('\n') : '';
    assert.match(errors, new RegExp(`${b.key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: does not match the certificate`));
    assert.ok(errors.includes(`${old.cert}: certificate expired on 2002-01-01`), errors);
    assert.match(errors, /missing\.pem: cannot read certificate \(ENOENT\)/);
    assert.match(errors, /no PEM certificate in the file/);
  });
});

describe('tls listener', { skip }, () => {
  const tmp = tempDir('sipedge-tls-');
  let ca: TestCa;
  let a: Leaf;
  let b: Leaf;
  let edge: EdgeHandle;
  let port4: number;
  let port6: number;

  before(async () => {
    ca = makeCa(path.join(tmp.dir, 'pki'));
    const certDir = path.join(tmp.dir, 'live');
    fs.mkdirSync(certDir);
    a = makeLeaf(ca, { names: ['a.example'], ips: ['127.0.0.1', '::1'], certPath: path.join(certDir, 'a.pem'), keyPath: path.join(certDir, 'a.key') });
    b = makeLeaf(ca, { names: ['b.example'], certPath: path.join(certDir, 'b.pem'), keyPath: path.join(certDir, 'b.key') });
    edge = await startEdge(testConfig({
      listen: [{ transport: 'tls', host: '127.0.0.1', port: 0 }, { transport: 'tls', host: '::1', port: 0 }],
      tls: { ...DEFAULT_TLS_SETTINGS, certificates: [{ cert: a.cert, key: a.key }, { cert: b.cert, key: b.key }] },
    }), silent, { watchRules: true });
    port4 = edge.listeners.find((l) => l.address === '127.0.0.1')!.port;
    port6 = edge.listeners.find((l) => l.address === '::1')!.port;
  });
  after(async () => { await edge?.close(0); });

  test('TLS 1.2 and 1.3 are accepted, 1.3 preferred', async () => {
    const p13 = await sClient(port4, []);
    assert.ok(p13.ok, p13.out);
    assert.equal(p13.protocol, 'TLSv1.3');
    const p12 = await sClient(port4, ['-tls1_2']);
    assert.ok(p12.ok, p12.out);
    assert.equal(p12.protocol, 'TLSv1.2');
    assert.match(p12.cipher ?? '', /^ECDHE-RSA-(AES(128|256)-GCM|CHACHA20-POLY1305)/);
  });

  test('TLS 1.0 and 1.1 are refused (control: the same probe gets TLS 1.0 from a server that allows it)', async () => {
    // SECLEVEL=0: OpenSSL 3's client would not even offer 1.0/1.1 otherwise
    const legacy = ['-cipher', 'DEFAULT@SECLEVEL=0'];
    const ctl = await controlServer(a, { minVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' });
    try {
      const c = await sClient(ctl.port, ['-tls1', ...legacy]);
      assert.ok(c.ok && c.protocol === 'TLSv1', `control: ${c.out}`);
    } finally { await ctl.close(); }
    for (const v of ['-tls1', '-tls1_1']) {
      const p = await sClient(port4, [v, ...legacy]);
      assert.equal(p.ok, false, `${v} must be refused:\n${p.out}`);
    }
    await until(async () => metric(await edge.metrics.metrics(), 'sipedge_tls_handshakes_total', { reason: 'protocol_version' }) >= 2, 'protocol_version counted');
  });

  test('weak TLS 1.2 ciphers are refused (control: node\'s default list would take them)', async () => {
    const weak = ['AES128-SHA', 'AES256-SHA256', 'ECDHE-RSA-AES128-SHA', 'ECDHE-RSA-AES128-SHA256'];
    const ctl = await controlServer(a, {});
    try {
      for (const c of weak) {
        const p = await sClient(ctl.port, ['-tls1_2', '-cipher', c]);
        assert.ok(p.ok, `control ${c}: ${p.out}`);
      }
    } finally { await ctl.close(); }
    for (const c of weak) {
      const p = await sClient(port4, ['-tls1_2', '-cipher', c]);
      assert.equal(p.ok, false, `${c} must be refused:\n${p.out}`);
    }
    await until(async () => metric(await edge.metrics.metrics(), 'sipedge_tls_handshakes_total', { reason: 'no_shared_cipher' }) >= weak.length, 'no_shared_cipher counted');
  });

  test('SNI selects the certificate; no SNI or an unknown name gets the first', async () => {
    assert.equal((await sClient(port4, ['-servername', 'b.example'])).peer, 'CN = b.example');
    assert.equal((await sClient(port4, ['-servername', 'a.example'])).peer, 'CN = a.example');
    assert.equal((await sClient(port4, ['-noservername'])).peer, 'CN = a.example');
    assert.equal((await sClient(port4, ['-servername', 'nobody.example'])).peer, 'CN = a.example');
    assert.equal((await sClient(port6, ['-servername', 'b.example'], '::1')).peer, 'CN = b.example', 'IPv6 listener');
  });

  test('SIP over TLS on IPv4 and IPv6: an OPTIONS to the edge is answered on the connection', async () => {
    for (const [port, host] of [[port4, '127.0.0.1'], [port6, '::1']] as const) {
      const peer = await TcpPeer.connectTls(port, { ca: fs.readFileSync(ca.cert), rejectUnauthorized: true, servername: 'a.example' }, host);
      try {
        peer.send(options(host.includes(':') ? `[${host}]:5061` : `${host}:5061`));
        const r = await peer.waitFirstLine('SIP/2.0 200', 3000);
        assert.match(r.text, /^Via: SIP\/2.0\/TLS /m);
      } finally { peer.close(); }
    }
    const text = await edge.metrics.metrics();
    assert.ok(metric(text, 'sipedge_messages_received_total', { transport: 'tls', kind: 'request' }) >= 2);
  });

  test('renegotiation is refused (control: node\'s defaults allow it)', async () => {
    const renegotiate = async (port: number): Promise<Error | null> => {
      const s = tls.connect({ port, host: '127.0.0.1', maxVersion: 'TLSv1.2', rejectUnauthorized: false });
      s.on('error', () => undefined);
      await new Promise<void>((r, j) => { s.once('secureConnect', () => r()); s.once('error', j); });
      const err = await new Promise<Error | null>((r) => {
        const t = setTimeout(() => r(new Error('no answer')), 3000);
        const ok = s.renegotiate({ rejectUnauthorized: false }, (e) => { clearTimeout(t); r(e ?? null); });
        if (!ok) { clearTimeout(t); r(new Error('renegotiate() refused locally')); }
        s.once('close', () => { clearTimeout(t); r(new Error('closed')); });
      });
      s.destroy();
      return err;
    };
    const ctl = await controlServer(a, { maxVersion: 'TLSv1.2' }, true);
    try {
      assert.equal(await renegotiate(ctl.port), null, 'control: renegotiation works against node defaults');
    } finally { await ctl.close(); }
    assert.notEqual(await renegotiate(port4), null);
  });

  test('a certificate replaced on disk is served at the next handshake; invalid files keep the old one', async () => {
    const before1 = await sClient(port4, ['-servername', 'a.example'], '127.0.0.1', false);
    const fp = (out: string): string => /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec(out)?.[0] ?? '';
    const old = fp(before1.out);
    assert.ok(old.length > 0);
    const fresh = makeLeaf(ca, { names: ['a.example'], ips: ['127.0.0.1'], certPath: a.cert, keyPath: a.key });
    let now = '';
    await until(async () => { now = fp((await sClient(port4, ['-servername', 'a.example'], '127.0.0.1', false)).out); return now !== old; }, 'new certificate served');
    assert.equal(now.replace(/\s/g, ''), fs.readFileSync(fresh.cert, 'latin1').replace(/\s/g, ''));
    await until(async () => metric(await edge.metrics.metrics(), 'sipedge_tls_reloads_total', { result: 'ok' }) >= 1, 'reload counted');
    // now a key that does not belong to the certificate: refused, the fresh one stays in service
    const errorsBefore = metric(await edge.metrics.metrics(), 'sipedge_tls_reloads_total', { result: 'error' });
    const other = makeLeaf(ca, { names: ['other.example'] });
    fs.copyFileSync(other.key, `${a.key}.tmp`);
    fs.renameSync(`${a.key}.tmp`, a.key);
    await until(async () => metric(await edge.metrics.metrics(), 'sipedge_tls_reloads_total', { result: 'error' }) > errorsBefore, 'failed reload counted');
    const still = fp((await sClient(port4, ['-servername', 'a.example'], '127.0.0.1', false)).out);
    assert.equal(still, now, 'the previous certificate stays in service');
  });
});

describe('tls config', () => {
  const tmp = tempDir('sipedge-tlscfg-');
  test('tls:HOST defaults to port 5061 and needs a certificate; requireClientCert must name a tls listener', () => {
    const f = tmp.file([
      'listen: ["tls:127.0.0.1", "tls:[::1]:5071"]',
      'upstreams: ["udp:127.0.0.2:5060"]',
      'tls:',
      '  certificates: [{ cert: a.pem, key: a.key }]',
      '  clientCa: ca.pem',
      '  requireClientCert: ["tls:[::1]:5071"]',
    ].join('\n'));
    const r = loadConfig({ file: f, env: {} });
    assert.ok(r.ok, JSON.stringify(!r.ok && r.errors));
    assert.deepEqual(r.config.listen.map((l) => `${l.transport}|${l.host}|${l.port}`), ['tls|127.0.0.1|5061', 'tls|::1|5071']);
    assert.equal(r.config.tls!.certificates[0]!.cert, path.join(tmp.dir, 'a.pem'));
    assert.deepEqual(r.config.tls!.requireClientCert, ['tls:[::1]:5071']);
    assert.equal(r.config.tls!.minVersion, 'TLSv1.2');

    const bad = loadConfig({ file: tmp.file('listen: ["tls:127.0.0.1"]\nupstreams: ["udp:127.0.0.2:5060"]\ntls:\n  requireClientCert: ["tls:127.0.0.1:9999"]\n  minVersion: TLSv1.1\n'), env: {} });
    assert.equal(bad.ok, false);
    const errs = !bad.ok ? bad.errors.join('\n') : '';
    assert.match(errs, /listen "tls:127.0.0.1": a tls listener needs at least one certificate/);
    assert.match(errs, /minVersion/);
  });
});

describe('sip-edge check on TLS files', { skip }, () => {
  const tmp = tempDir('sipedge-tlscheck-');
  const CLI = path.resolve(__dirname, '../edge/cli.js');
  const check = (file: string): Promise<{ code: number | null; stdout: string; stderr: string }> => new Promise((resolve) => {
    execFile(process.execPath, [CLI, 'check', '--config', file], { encoding: 'utf8', timeout: 20_000, env: { PATH: process.env.PATH ?? '' } },
      (err, stdout, stderr) => resolve({ code: err === null ? 0 : (err as { code?: number }).code ?? 1, stdout, stderr }));
  });
  const config = (cert: string, key: string, domains = '[a.example]'): string => tmp.file([
    'listen: ["tls:127.0.0.1:0"]',
    'upstreams: ["udp:127.0.0.2:5060"]',
    `domains: ${domains}`,
    'metrics: { listen: null }',
    'tls:',
    `  certificates: [{ cert: ${JSON.stringify(cert)}, key: ${JSON.stringify(key)} }]`,
  ].join('\n'));

  test('valid files pass (with a warning for a served domain no certificate names, and one for near expiry)', async () => {
    const ca = makeCa(path.join(tmp.dir, 'pki'));
    const a = makeLeaf(ca, { names: ['a.example'], days: 10 });
    const r = await check(config(a.cert, a.key, '[a.example, b.example]'));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /; tls .*a\.pem|; tls .*\(a\.example; until /);
    assert.match(r.stderr, /warning: served domain b\.example: no TLS certificate names it/);
    assert.match(r.stderr, /warning: .*certificate expires in 9 day/);
  });

  test('a key of another certificate and an expired certificate fail the check', async () => {
    const ca = makeCa(path.join(tmp.dir, 'pki2'));
    const a = makeLeaf(ca, { names: ['a.example'] });
    const b = makeLeaf(ca, { names: ['b.example'] });
    const r1 = await check(config(a.cert, b.key));
    assert.equal(r1.code, 1);
    assert.match(r1.stderr, /does not match the certificate in/);
    const old = makeLeaf(ca, { names: ['a.example'], expired: true });
    const r2 = await check(config(old.cert, old.key));
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, /certificate expired on 2002-01-01/);
  });
});

describe('SIP over TLS through the proxy (raw TLS client, UDP PBX)', { skip }, () => {
  const tmp = tempDir('sipedge-tlsproxy-');
  let edge: EdgeHandle;
  let pbx: UdpPeer;
  let tlsPort: number;
  let ca: TestCa;

  before(async () => {
    ca = makeCa(path.join(tmp.dir, 'pki'));
    const leaf = makeLeaf(ca, { names: ['edge.example.com'], ips: ['127.0.0.1'] });
    pbx = await UdpPeer.bind('127.0.0.2');
    edge = await startEdge(testConfig({
      listen: [{ transport: 'udp', host: '127.0.0.1', port: 0 }, { transport: 'tls', host: '127.0.0.1', port: 0 }],
      upstreams: [{ transport: 'udp', host: '127.0.0.2', port: pbx.port }],
      tls: { ...DEFAULT_TLS_SETTINGS, certificates: [{ cert: leaf.cert, key: leaf.key }] },
    }), silent, { watchRules: false });
    tlsPort = edge.listeners.find((l) => l.transport === 'tls')!.port;
  });
  after(async () => { await edge?.close(0); pbx?.close(); });

  test('INVITE over TLS to a sip: URI: Record-Route names TLS on the phone\'s side, UDP toward the PBX; the PBX\'s BYE reaches the phone on its TLS connection with Via SIP/2.0/TLS', async () => {
    // A sips: Request-URI toward this UDP PBX is refused since RFC 5630 5.3 (test/sips.test.ts); a phone
    // on TLS that dials sip: (what baresip and most phones do) must still get its dialog routed back over TLS.
    const phone = await TcpPeer.connectTls(tlsPort, { ca: fs.readFileSync(ca.cert), rejectUnauthorized: true, servername: 'edge.example.com' });
    try {
      const me = { address: phone.address, port: phone.port };
      const invite = request(me, { ruri: 'sip:1000@example.com', to: '<sip:1000@example.com>', via: `SIP/2.0/TLS ${me.address}:${me.port};branch=${uniq('z9hG4bK')}`, contact: `<sip:alice@${me.address}:${me.port};transport=tls>` });
      phone.send(invite);
      const fwd = await pbx.waitFirstLine('INVITE sip:1000@example.com');
      const rr = header(fwd.text, 'Record-Route') ?? '';
      assert.match(rr, new RegExp(`^<sip:up0@127\\.0\\.0\\.1:\\d+;lr>, <sip:sef1\\.[^@>]+@127\\.0\\.0\\.1:${tlsPort};transport=tls;lr>$`), rr);
      assert.match(fwd.text, /^Via: SIP\/2.0\/UDP 127\.0\.0\.1:\d+;branch=z9hG4bK/m, 'the edge\'s own Via toward the PBX names UDP');
      // the PBX answers and later hangs up: its route set is the Record-Route as received
      pbx.send(response(fwd.text, 200, 'OK', { toTag: 'pbx1', extra: ['Contact: <sip:1000@127.0.0.2>', `Record-Route: ${rr}`] }), fwd.port, fwd.address);
      await phone.waitFirstLine('SIP/2.0 200', 3000);
      const [dep, arr] = rr.split(', ');
      const bye = [
        'BYE sip:alice@' + me.address + ':' + me.port + ';transport=tls SIP/2.0',
        `Via: SIP/2.0/UDP 127.0.0.2:${pbx.port};branch=${uniq('z9hG4bK')};rport`,
        'Max-Forwards: 70',
        `From: ${header(fwd.text, 'To')};tag=pbx1`,
        `To: ${header(fwd.text, 'From')}`,
        `Call-ID: ${header(fwd.text, 'Call-ID')}`,
        'CSeq: 1 BYE',
        `Route: ${dep}`,
        `Route: ${arr}`,
        'Content-Length: 0', '', '',
      ].join('\r\n');
      pbx.send(bye, fwd.port, fwd.address);
      const got = await phone.waitFirstLine('BYE ', 3000);
      assert.match(got.text, new RegExp(`^Via: SIP/2.0/TLS 127\\.0\\.0\\.1:${tlsPort};branch=z9hG4bK`, 'm'), 'the edge\'s Via toward the phone names TLS and its TLS port');
    } finally { phone.close(); }
  });
});

describe('tls reload on SIGHUP (no file watching)', { skip }, () => {
  const tmp = tempDir('sipedge-tlshup-');
  test('reloadRules() (what SIGHUP calls) re-reads the certificates: the next handshake gets the new one', async () => {
    const ca = makeCa(path.join(tmp.dir, 'pki'));
    const live = path.join(tmp.dir, 'live');
    fs.mkdirSync(live);
    const first = makeLeaf(ca, { names: ['hup.example'], certPath: path.join(live, 'c.pem'), keyPath: path.join(live, 'c.key') });
    const edge = await startEdge(testConfig({
      listen: [{ transport: 'tls', host: '127.0.0.1', port: 0 }],
      tls: { ...DEFAULT_TLS_SETTINGS, certificates: [{ cert: first.cert, key: first.key }] },
    }), silent, { watchRules: false });
    try {
      const port = edge.listeners[0]!.port;
      const pem = async (): Promise<string> => /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec((await sClient(port, [], '127.0.0.1', false)).out)?.[0]?.replace(/\s/g, '') ?? '';
      const old = await pem();
      assert.equal(old, fs.readFileSync(first.cert, 'latin1').replace(/\s/g, ''));
      const second = makeLeaf(ca, { names: ['hup.example'], certPath: first.cert, keyPath: first.key });
      // nothing watches the files: the old certificate is still served
      await new Promise((r) => setTimeout(r, 400));
      assert.equal(await pem(), old, 'no watcher: unchanged until SIGHUP');
      edge.reloadRules();
      assert.equal(await pem(), fs.readFileSync(second.cert, 'latin1').replace(/\s/g, ''), 'the next handshake after SIGHUP gets the new certificate');
      assert.equal(metric(await edge.metrics.metrics(), 'sipedge_tls_reloads_total', { result: 'ok' }), 1);
    } finally {
      await edge.close(0);
    }
  });
});
