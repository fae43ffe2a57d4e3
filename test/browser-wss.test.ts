// A real browser over WSS (issue 14, RFC 7118): headless Chromium (Debian chromium) driven by
// puppeteer-core loads a page served on loopback with JsSIP (npm, bundled for the page by
// test/helpers/cjs-bundle.ts), registers over WSS through the spawned edge to a real Kamailio
// registrar on UDP, calls a baresip phone on UDP and is called by it. The browser's .invalid
// Via and Contact hosts (RFC 7118 5.2) never need resolving: the PBX reaches the browser through
// the Path flow token over the browser's own WebSocket (RFC 5626 5.3), and the double
// Record-Route says wss on the browser's side, udp on the PBX's. A page from an origin the
// listener does not allow cannot open the WebSocket; once the browser's connection is gone, a
// call to it ends with 430 Flow Failed.
//
// Signalling only: the page replaces nothing of JsSIP, but rewrites the SDP at JsSIP's 'sdp'
// hook so that WebRTC's DTLS-SRTP offer is plain RTP/AVP for baresip (and back), since media
// is not what this test is about. Chromium trusts the edge's test certificate by its SPKI pin
// (--ignore-certificate-errors-spki-list), nothing else. Under CI=true a missing chromium,
// kamailio, baresip or openssl is a failure, never a skip.
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { baresipAvailable, startPhone, type Phone, type PhoneEvent } from './helpers/baresip';
import { haveOpenssl, makeCa, makeLeaf } from './helpers/certs';
import { bundleCommonJs } from './helpers/cjs-bundle';
import { startEdge, type EdgeProc } from './helpers/edge-proc';
import { kamailioAvailable, startKamailio, type Kamailio } from './helpers/kamailio';

const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const inCi = process.env.CI === 'true';
const missing = [
  fs.existsSync(CHROMIUM) ? '' : 'chromium',
  kamailioAvailable() ? '' : 'kamailio',
  baresipAvailable() ? '' : 'baresip (baresip-core)',
  haveOpenssl() ? '' : 'openssl',
].filter((x) => x !== '');
const skip = missing.length > 0 && !inCi ? `${missing.join(' and ')} not installed (CI=true makes this a failure)` : false;

const DOMAIN = 'pbx.test';
const EDGE_ADDR = '127.0.0.1';
const PBX_ADDR = '127.0.0.2';
const B_ADDR = '127.0.0.3';

// The page: JsSIP's UA, an event log the test reads, and the SDP rewrite described above.
const PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>sip-edge wss test</title></head><body>
<script src="/jssip.js"></script>
<script>
window.events = [];
const log = (e) => { window.events.push(e); };
const DROP = /^a=(fingerprint|setup|ice-|candidate|end-of-candidates)/;
function toPlain(sdp) {
  return sdp.split('\\r\\n').filter((l) => !DROP.test(l)).join('\\r\\n').replace(/UDP\\/TLS\\/RTP\\/SAVPF/g, 'RTP/AVP');
}
function toWebrtc(sdp, type) {
  const out = [];
  let mid = 0;
  for (const l of sdp.split('\\r\\n')) {
    if (l.startsWith('a=mid:') || l === 'a=rtcp-mux') continue;
    out.push(l.replace(/RTP\\/AVP/, 'UDP/TLS/RTP/SAVPF'));
    if (l.startsWith('m=')) {
      out.push('a=mid:' + (mid++), 'a=rtcp-mux', 'a=ice-ufrag:edgetest', 'a=ice-pwd:edgetestedgetestedgetest',
        'a=fingerprint:sha-256 ' + Array.from({ length: 32 }, () => 'AB').join(':'), 'a=setup:' + (type === 'offer' ? 'actpass' : 'active'));
    }
  }
  return out.join('\\r\\n');
}
function hook(s) {
  s.on('sdp', (e) => { e.sdp = e.originator === 'local' ? toPlain(e.sdp) : toWebrtc(e.sdp, e.type); });
  s.on('icecandidate', (e) => e.ready());
  s.on('progress', () => log('progress'));
  s.on('accepted', () => log('accepted'));
  s.on('confirmed', () => log('confirmed'));
  s.on('ended', (e) => log('ended:' + e.cause));
  s.on('failed', (e) => log('failed:' + e.cause + ':' + (e.message && e.message.status_code)));
}
function stream() {
  const ctx = new AudioContext();
  const osc = ctx.createOscillator();
  const dst = ctx.createMediaStreamDestination();
  osc.connect(dst);
  osc.start();
  return dst.stream;
}
window.startUa = (url, user, domain) => new Promise((resolve) => {
  const ua = new JsSIP.UA({ sockets: [new JsSIP.WebSocketInterface(url)], uri: 'sip:' + user + '@' + domain, register: true,
    register_expires: 60, session_timers: false, connection_recovery_min_interval: 30, connection_recovery_max_interval: 60 });
  window.ua = ua;
  ua.on('connected', () => log('connected'));
  ua.on('disconnected', () => log('disconnected'));
  ua.on('registered', () => { log('registered'); resolve('registered'); });
  ua.on('registrationFailed', (e) => { log('registrationFailed:' + e.cause); resolve('registrationFailed:' + e.cause); });
  ua.on('newRTCSession', (e) => {
    hook(e.session);
    if (e.originator === 'remote') { window.current = e.session; log('incoming'); }
  });
  ua.start();
});
window.call = (target) => { window.current = window.ua.call(target, { mediaStream: stream(), pcConfig: { iceServers: [] } }); hook(window.current); };
window.answer = () => window.current.answer({ mediaStream: stream(), pcConfig: { iceServers: [] } });
window.hangup = () => window.current.terminate();
// a bare WebSocket with the sip subprotocol: 'open' or 'error' (the Origin test)
window.probe = (url) => new Promise((resolve) => {
  const ws = new WebSocket(url, 'sip');
  ws.onopen = () => { resolve('open:' + ws.protocol); ws.close(); };
  ws.onerror = () => resolve('error');
});
</script></body></html>`;

/** an HTTP server on loopback serving the page and the JsSIP bundle */
async function pageServer(bundle: string): Promise<{ origin: string; close: () => Promise<void> }> {
  const srv = http.createServer((req, res) => {
    if (req.url === '/jssip.js') { res.writeHead(200, { 'content-type': 'text/javascript' }); res.end(bundle); return; }
    if (req.url === '/' || req.url === '/index.html') { res.writeHead(200, { 'content-type': 'text/html' }); res.end(PAGE); return; }
    res.writeHead(404); res.end();
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  return { origin: `http://127.0.0.1:${port}`, close: () => { srv.closeAllConnections(); return new Promise((r) => srv.close(() => r())); } };
}

/** base64 SHA-256 of the certificate's SubjectPublicKeyInfo (Chromium's SPKI pin format) */
function spkiPin(certFile: string): string {
  const der = new crypto.X509Certificate(fs.readFileSync(certFile)).publicKey.export({ type: 'spki', format: 'der' });
  return crypto.createHash('sha256').update(der).digest('base64');
}

describe('a browser (Chromium + JsSIP) over WSS through the edge to Kamailio, calling and called by baresip', { skip }, () => {
  let dir = '';
  let pbx: Kamailio | undefined;
  let edge: EdgeProc | undefined;
  let b: Phone | undefined;
  let browser: Browser | undefined;
  let page: Page | undefined;
  let allowed: Awaited<ReturnType<typeof pageServer>> | undefined;
  let foreign: Awaited<ReturnType<typeof pageServer>> | undefined;
  let wssUrl = '';

  const diagnostics = async (): Promise<string> => {
    const edgeTail = edge?.logs().slice(-15).join('\n') ?? '';
    const kam = pbx?.events().slice(-15).map((e) => `${e.kind} ${JSON.stringify(e.fields)}`).join('\n') ?? '';
    const ev = page !== undefined ? JSON.stringify(await page.evaluate(() => (globalThis as unknown as { events: string[] }).events).catch(() => [])) : '';
    return `\n--- edge log ---\n${edgeTail}\n--- kamailio events ---\n${kam}\n--- browser events ---\n${ev}\n--- phone B ---\n${b?.logTail(20) ?? ''}`;
  };
  const events = async (): Promise<string[]> => page!.evaluate(() => (globalThis as unknown as { events: string[] }).events.slice());
  const browserSaw = async (what: string | RegExp, since: number, ms = 8_000): Promise<string> => {
    const end = Date.now() + ms;
    for (;;) {
      const ev = (await events()).slice(since);
      const hit = ev.find((e) => (typeof what === 'string' ? e === what : what.test(e)));
      if (hit !== undefined) return hit;
      if (Date.now() > end) throw new Error(`browser: no ${String(what)} after #${since}${await diagnostics()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const phoneSaw = async (type: string, since: number, where?: (e: PhoneEvent) => boolean, timeoutMs = 8_000): Promise<PhoneEvent> => {
    try {
      return await b!.waitEvent(type, { since, timeoutMs, ...(where === undefined ? {} : { where }) });
    } catch (e) {
      throw new Error(`${(e as Error).message}${await diagnostics()}`);
    }
  };
  async function metrics(): Promise<string> {
    const res = await fetch(`http://127.0.0.1:${edge!.metricsPort!}/metrics`);
    return res.text();
  }
  function sum(text: string, name: string, label: string): number {
    let s = 0;
    for (const line of text.split('\n')) if (line.startsWith(`${name}{`) && line.includes(label)) s += Number(line.slice(line.lastIndexOf(' ') + 1));
    return s;
  }

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-browser-'));
    const ca = makeCa(path.join(dir, 'pki'));
    const leaf = makeLeaf(ca, { names: ['edge.pbx.test'], ips: [EDGE_ADDR] });
    const bundle = bundleCommonJs(require.resolve('jssip/lib/JsSIP.js'), 'JsSIP');
    allowed = await pageServer(bundle);
    foreign = await pageServer(bundle);
    const cfg = path.join(dir, 'edge.yaml');
    fs.writeFileSync(cfg, [
      'warmUpCalls: 0',
      'tls:',
      `  certificates: [{ cert: ${JSON.stringify(leaf.cert)}, key: ${JSON.stringify(leaf.key)} }]`,
      'websocket:',
      `  origins: [{ listener: "wss:${EDGE_ADDR}:0", allow: [${JSON.stringify(allowed.origin)}] }]`,
      '',
    ].join('\n'));
    pbx = await startKamailio({ domain: DOMAIN, address: PBX_ADDR });
    edge = await startEdge({
      listen: [`udp:${EDGE_ADDR}:0`, `wss:${EDGE_ADDR}:0`],
      upstream: [`udp:${pbx.address}:${pbx.port}`],
      domain: [DOMAIN],
      extraArgs: ['--config', cfg],
    });
    assert.ok(edge.ports.wss !== undefined && edge.ports.udp !== undefined, 'the edge announced its WSS and UDP ports');
    wssUrl = `wss://${EDGE_ADDR}:${edge.ports.wss}`;
    b = await startPhone({ name: 'B', user: 'bob', domain: DOMAIN, transport: 'udp', address: B_ADDR, proxy: { host: EDGE_ADDR, port: edge.ports.udp }, regint: 60 });
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', `--user-data-dir=${path.join(dir, 'chromium')}`,
        `--ignore-certificate-errors-spki-list=${spkiPin(leaf.cert)}`, '--autoplay-policy=no-user-gesture-required'],
    });
    page = await browser.newPage();
    await page.goto(`${allowed.origin}/`);
  });

  after(async () => {
    await browser?.close().catch(() => undefined);
    await b?.stop();
    await edge?.stop('SIGTERM', 3_000);
    await pbx?.stop();
    await allowed?.close();
    await foreign?.close();
    if (dir !== '') fs.rmSync(dir, { recursive: true, force: true });
  });

  test('the browser registers over WSS; Kamailio stores a Path with the flow token and the browser\'s .invalid Contact', async () => {
    const r = await page!.evaluate((u, d) => (globalThis as unknown as { startUa: (a: string, b: string, c: string) => Promise<string> }).startUa(u, 'carol', d), wssUrl, DOMAIN);
    assert.equal(r, 'registered', `JsSIP: ${r}${await diagnostics()}`);
    const rb = await b!.register();
    assert.equal(rb.type, 'REGISTER_OK', `B: ${rb.type}${await diagnostics()}`);
    const reg = pbx!.events().find((e) => e.kind === 'REGISTER' && e.fields.from === 'carol');
    assert.ok(reg, 'Kamailio saw the browser\'s REGISTER');
    assert.match(reg.fields.path ?? '', /^<sip:sef1\.[^@>]+@127\.0\.0\.1:\d+;lr>$/);
    assert.match(reg.fields.contact ?? '', /\.invalid;transport=ws/i, 'RFC 7118 5.2: the browser\'s Contact host is .invalid');
    const m = await metrics();
    assert.ok(sum(m, 'sipedge_ws_upgrades_total', 'reason="ok"') >= 1, 'an upgrade counted ok');
    assert.ok(sum(m, 'sipedge_connections', 'transport="wss"') >= 1, 'a wss connection open');
  });

  test('the browser calls B: B rings and answers; the outside Record-Route entry says transport=wss; the browser hangs up', async () => {
    const e0 = (await events()).length;
    const b0 = b!.cursor();
    await page!.evaluate((t) => (globalThis as unknown as { call: (x: string) => void }).call(t), `sip:bob@${DOMAIN}`);
    await phoneSaw('CALL_INCOMING', b0);
    await b!.answer();
    await browserSaw('confirmed', e0);
    await phoneSaw('CALL_ESTABLISHED', b0);
    const inv = pbx!.events().filter((e) => e.kind === 'INITIAL' && e.fields.method === 'INVITE' && e.fields.from === 'carol').at(-1);
    assert.ok(inv, 'Kamailio saw the browser\'s INVITE');
    // departure (toward Kamailio, UDP: no transport parameter), arrival (the browser's side)
    assert.match(inv.fields.rr ?? '', new RegExp(`^<sip:up0@127\\.0\\.0\\.1:\\d+;lr>, <sip:sef1\\.[^@>]+@127\\.0\\.0\\.1:${edge!.ports.wss};transport=wss;lr>$`), `Record-Route: ${inv.fields.rr}`);
    const b1 = b!.cursor();
    await page!.evaluate(() => (globalThis as unknown as { hangup: () => void }).hangup());
    await phoneSaw('CALL_CLOSED', b1);
    await browserSaw(/^ended:/, e0);
  });

  test('B calls the browser: the PBX reaches it through the edge over its WebSocket; B hangs up', async () => {
    const e0 = (await events()).length;
    const b0 = b!.cursor();
    await b!.dial(`sip:carol@${DOMAIN}`);
    await browserSaw('incoming', e0);
    await phoneSaw('CALL_RINGING', b0);
    await page!.evaluate(() => (globalThis as unknown as { answer: () => void }).answer());
    await phoneSaw('CALL_ESTABLISHED', b0);
    await browserSaw('confirmed', e0);
    const b1 = b!.cursor();
    await b!.hangup();
    await browserSaw(/^ended:/, e0);
    await phoneSaw('CALL_CLOSED', b1);
  });

  test('a page from a foreign origin cannot open the WebSocket (403, counted); the allowed page can', async () => {
    const refused0 = sum(await metrics(), 'sipedge_ws_upgrades_total', 'reason="origin_refused"');
    const other = await browser!.newPage();
    try {
      await other.goto(`${foreign!.origin}/`);
      const r = await other.evaluate((u) => (globalThis as unknown as { probe: (x: string) => Promise<string> }).probe(u), wssUrl);
      assert.equal(r, 'error');
    } finally { await other.close(); }
    assert.equal(sum(await metrics(), 'sipedge_ws_upgrades_total', 'reason="origin_refused"'), refused0 + 1);
    const ok = await page!.evaluate((u) => (globalThis as unknown as { probe: (x: string) => Promise<string> }).probe(u), wssUrl);
    assert.equal(ok, 'open:sip', 'control: the allowed origin opens it, with the sip subprotocol');
  });

  test('the browser\'s connection gone: a call to it ends with 430 Flow Failed (RFC 5626 5.3)', async () => {
    const open0 = sum(await metrics(), 'sipedge_connections', 'transport="wss"');
    // closing the page drops the WebSocket without unregistering: the binding stays at Kamailio
    await page!.close();
    page = undefined;
    const end = Date.now() + 5_000;
    while (sum(await metrics(), 'sipedge_connections', 'transport="wss"') !== open0 - 1) {
      if (Date.now() > end) throw new Error(`the edge did not see the browser's connection close${await diagnostics()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const b0 = b!.cursor();
    await b!.dial(`sip:carol@${DOMAIN}`);
    const closed = await phoneSaw('CALL_CLOSED', b0);
    assert.match(closed.param ?? '', /430/, `B's call ended with 430: ${closed.param}`);
  });
});
