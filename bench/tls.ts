// TLS benchmark (issue 14): calls per second over reused TLS connections and new TLS handshakes per
// second, with proxy CPU per call and per handshake, for the edge and Kamailio's tls module side by
// side in one run, driven by the same load generator (sipp 3.6 here has no TLS).
//
//   node dist/bench/tls.js [--calls 20000] [--handshakes 2000] [--conns 4] [--inflight 16]
//                          [--hs-concurrency 4] [--target edge,kamailio,kamailio2] [--out bench/results/tls.md]
//
// Behind each proxy: bench/tls-responder.ts, a stateless UDP responder in its own process (200 to
// everything but ACK). The proxies forward over UDP, so what is compared is TLS in + proxy work.
// - calls: `--conns` TLS connections opened once, `--inflight` calls in flight on each (closed
//   loop); each call is INVITE -> 200 -> ACK -> BYE -> 200, ACK and BYE following the Record-Route
//   set (RFC 3261 12.2.1.1), so each proxy keeps INVITE and BYE transaction state.
// - handshakes: `--handshakes` new connections, `--hs-concurrency` at a time; each does a full TLS
//   handshake (no session resumption), one OPTIONS round trip (so the connection was taken as SIP),
//   and closes.
// Proxy CPU is utime+stime of its process tree from /proc around each measured phase, divided by the
// calls or handshakes completed. The load generator runs in this process on the same CPUs: absolute
// rates are a floor; compare targets within one run, and CPU per unit.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { findRepoRoot } from '../test/helpers/sipp';
import { edgeCliAvailable, startEdge, treeCpuSeconds, waitExit } from '../test/helpers/edge-proc';
import { makeCa, makeLeaf } from '../test/helpers/certs';
import { kamailioTlsAvailable } from '../test/helpers/kamailio';
import { freePort } from '../test/helpers/ports';

type Target = 'edge' | 'kamailio' | 'kamailio2';
const TARGETS: readonly Target[] = ['edge', 'kamailio', 'kamailio2'];
const ROOT = findRepoRoot();
const UAS_IP = '127.0.0.2';
/** the domain the edge serves (the Request-URI and From host: the edge refuses other domains) */
const DOMAIN = 'bench.test';

interface Args { calls: number; handshakes: number; conns: number; inflight: number; hsConc: number; targets: Target[]; out: string; warmup: number }

function parseArgs(argv: string[]): Args {
  const a: Args = { calls: 20000, handshakes: 2000, conns: 4, inflight: 16, hsConc: 4, targets: [...TARGETS], out: path.join(ROOT, 'bench', 'results', 'tls.md'), warmup: 1000 };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1] ?? '';
    switch (argv[i]) {
      case '--calls': a.calls = Number(v); i++; break;
      case '--handshakes': a.handshakes = Number(v); i++; break;
      case '--conns': a.conns = Number(v); i++; break;
      case '--inflight': a.inflight = Number(v); i++; break;
      case '--hs-concurrency': a.hsConc = Number(v); i++; break;
      case '--warmup': a.warmup = Number(v); i++; break;
      case '--target': a.targets = v.split(',').filter((t): t is Target => (TARGETS as readonly string[]).includes(t)); i++; break;
      case '--out': a.out = path.resolve(v); i++; break;
      default: throw new Error(`unknown option ${argv[i]}`);
    }
  }
  return a;
}


const children: ChildProcess[] = [];

async function startResponder(): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn(process.execPath, [path.join(ROOT, 'dist', 'bench', 'tls-responder.js'), UAS_IP], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  const port = await new Promise<number>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('responder not ready')), 10_000);
    child.stdout!.setEncoding('utf8').on('data', (s: string) => { const m = /port (\d+)/.exec(s); if (m) { clearTimeout(t); resolve(Number(m[1])); } });
  });
  return { port, child };
}

interface Proxy { readonly port: number; readonly pid: number; readonly log: () => string; readonly alive: () => boolean; stop(): Promise<void> }

async function startKamailioTls(uasPort: number, dir: string, workers: number, cert: string, key: string): Promise<Proxy> {
  const tlsPort = await freePort('tcp');
  const udpPort = await freePort('udp');
  const tlsCfg = path.join(dir, `kam-tls-${workers}.cfg`);
  // as test/helpers/kamailio.ts's kamailioTlsConfig: TLS 1.2 minimum, no client certificate
  fs.writeFileSync(tlsCfg, ['[server:default]', 'method = TLSv1.2+', 'verify_certificate = no', 'require_certificate = no', `private_key = ${key}`, `certificate = ${cert}`, '',
    '[client:default]', 'method = TLSv1.2+', 'verify_certificate = no', 'require_certificate = no', ''].join('\n'));
  // the sipp-load reference proxy (tm, rr, maxfwd; nothing else), with a TLS listener whose
  // `workers` TCP worker processes do the TLS and SIP work; UDP only toward the responder
  const cfg = fs.readFileSync(path.join(ROOT, 'bench', 'reference', 'kamailio.cfg'), 'utf8')
    .replace(/^#!substdef "!EDGE_LISTEN!.*$/m, `#!substdef "!EDGE_LISTEN!udp:127.0.0.1:${udpPort}!g"`)
    .replace(/^#!substdef "!PBX_URI!.*$/m, `#!substdef "!PBX_URI!sip:${UAS_IP}:${uasPort}!g"`)
    .replace(/^disable_tcp=yes$/m, `tcp_children=${workers}\nenable_tls=yes\nlisten=tls:127.0.0.1:${tlsPort}\ntcp_connection_lifetime=3600`)
    .replace(/^loadmodule "tm.so"$/m, `loadmodule "tls.so"\nmodparam("tls", "config", "${tlsCfg}")\nloadmodule "tm.so"`);
  const cfgFile = path.join(dir, `kamailio-tls-${workers}.cfg`);
  fs.writeFileSync(cfgFile, cfg);
  const runDir = path.join(dir, `run${workers}`);
  fs.mkdirSync(runDir, { recursive: true });
  const child = spawn('kamailio', ['-DD', '-E', '-f', cfgFile, '-Y', runDir, '-m', '2048', '-M', '64'], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(child);
  let log = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { log = (log + s).slice(-20000); });
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`kamailio exited: ${log.slice(-2000)}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port: tlsPort, rejectUnauthorized: false }, () => { s.destroy(); resolve(true); });
      s.once('error', () => { s.destroy(); resolve(false); });
    });
    if (ok) break;
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error(`kamailio not ready: ${log.slice(-2000)}`); }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    port: tlsPort, pid: child.pid!, log: () => log,
    alive: () => child.exitCode === null && child.signalCode === null,
    stop: async () => { child.kill('SIGTERM'); await waitExit(child, 5000); },
  };
}

async function startEdgeTls(uasPort: number, dir: string, cert: string, key: string): Promise<Proxy> {
  const cfg = path.join(dir, 'edge.yaml');
  // the load comes from one address: a trusted peer, and per-source connection and handshake caps
  // raised so that they do not cut the benchmark (they are what tls-limits.test.ts checks)
  fs.writeFileSync(cfg, [
    'health:', '  intervalMs: 0',
    'tcp:', '  maxConnectionsPerSource: 10000',
    'tls:', `  certificates: [{ cert: ${JSON.stringify(cert)}, key: ${JSON.stringify(key)} }]`, '  maxHandshakesPerSource: 1000', '',
  ].join('\n'));
  const edge = await startEdge({
    listen: ['tls:127.0.0.1:0', 'udp:127.0.0.1:0'],
    upstream: [`udp:${UAS_IP}:${uasPort}`],
    domain: [DOMAIN],
    extraArgs: ['--config', cfg, '--trusted', '127.0.0.1/32'],
  });
  let exited = false;
  void edge.exited.then(() => { exited = true; });
  return { port: edge.ports.tls!, pid: edge.pid, log: () => edge.logs().slice(-30).join('\n'), alive: () => !exited, stop: async () => { await edge.stop(); } };
}

// ---- the load generator (node:tls) ----

/** SIP framing on a stream: header block, then Content-Length bytes (RFC 3261 18.3) */
class Framer {
  private buf: Buffer = Buffer.alloc(0);
  constructor(private readonly onMessage: (m: string) => void) {}
  push(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    for (;;) {
      while (this.buf.length >= 2 && this.buf[0] === 13 && this.buf[1] === 10) this.buf = this.buf.subarray(2);
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = this.buf.subarray(0, end).toString('latin1');
      const m = /^(?:content-length|l)[ \t]*:[ \t]*(\d+)/im.exec(head);
      const total = end + 4 + (m ? Number(m[1]) : 0);
      if (this.buf.length < total) return;
      this.buf = this.buf.subarray(total);
      this.onMessage(head);
    }
  }
}

function header(head: string, names: string): string[] {
  const re = new RegExp(`^(?:${names})[ \\t]*:[ \\t]*(.*)$`, 'gim');
  const out: string[] = [];
  for (let m = re.exec(head); m !== null; m = re.exec(head)) out.push(m[1]!.trim());
  return out;
}

let seq = 0;
const TX_TIMEOUT_MS = 8000;

class Client {
  private readonly pending = new Map<string, (head: string) => void>();
  private constructor(readonly sock: tls.TLSSocket) {
    const f = new Framer((h) => this.onMessage(h));
    sock.on('data', (c: Buffer) => f.push(c));
    sock.on('error', () => undefined);
  }
  static open(port: number): Promise<Client> {
    return new Promise((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => resolve(new Client(s)));
      s.once('error', reject);
    });
  }
  private onMessage(head: string): void {
    const status = /^SIP\/2\.0 (\d{3})/.exec(head);
    if (!status || Number(status[1]) < 200) return;
    const key = `${header(head, 'call-id|i')[0]}|${header(head, 'cseq')[0]}`;
    const r = this.pending.get(key);
    if (r) { this.pending.delete(key); r(head); }
  }
  /** send a request; resolves to the final response head, or null after TX_TIMEOUT_MS */
  request(msg: string, callId: string, cseq: string): Promise<string | null> {
    return new Promise((resolve) => {
      const key = `${callId}|${cseq}`;
      const t = setTimeout(() => { this.pending.delete(key); resolve(null); }, TX_TIMEOUT_MS);
      this.pending.set(key, (h) => { clearTimeout(t); resolve(h); });
      this.sock.write(msg);
    });
  }
  get localPort(): number { return this.sock.localPort ?? 0; }
  close(): void { this.sock.destroy(); }
}

function req(method: string, ruri: string, c: Client, callId: string, cseq: number, fromTag: string, to: string, routes: string[]): string {
  return [
    `${method} ${ruri} SIP/2.0`,
    `Via: SIP/2.0/TLS 127.0.0.1:${c.localPort};branch=z9hG4bK${(seq++).toString(36)}x${process.pid};rport`,
    'Max-Forwards: 70',
    ...(routes.length > 0 ? [`Route: ${routes.join(', ')}`] : []),
    `From: <sip:load@${DOMAIN}>;tag=${fromTag}`,
    `To: ${to}`,
    `Call-ID: ${callId}`,
    `CSeq: ${cseq} ${method}`,
    `Contact: <sip:load@127.0.0.1:${c.localPort};transport=tls>`,
    'Content-Length: 0', '', '',
  ].join('\r\n');
}

/** one call; true when INVITE and BYE both got 200 */
async function call(c: Client, uasPort: number): Promise<boolean> {
  const id = `${(seq++).toString(36)}-${process.pid}@bench`;
  const tag = `t${seq.toString(36)}`;
  const ruri = `sip:bench@${DOMAIN}`;
  const ok = await c.request(req('INVITE', ruri, c, id, 1, tag, `<${ruri}>`, []), id, '1 INVITE');
  if (ok === null || !/^SIP\/2\.0 200/.test(ok)) { noteFailure(`INVITE: ${ok?.split('\r\n')[0] ?? 'timeout'} ${header(ok ?? '', 'warning|reason').join(' ')}`); return false; }
  const to = header(ok, 'to|t')[0] ?? '';
  const target = /<([^>]+)>/.exec(header(ok, 'contact|m')[0] ?? '')?.[1] ?? ruri;
  // RFC 3261 12.1.2: the UAC's route set is the Record-Route of the 2xx, reversed
  const routes = header(ok, 'record-route').flatMap((v) => v.split(/,(?=\s*<)/).map((x) => x.trim())).reverse();
  c.sock.write(req('ACK', target, c, id, 1, tag, to, routes));
  const bye = await c.request(req('BYE', target, c, id, 2, tag, to, routes), id, '2 BYE');
  if (bye !== null && /^SIP\/2\.0 200/.test(bye)) return true;
  noteFailure(`BYE: ${bye?.split('\r\n')[0] ?? 'timeout'}`);
  return false;
}

/** the first few distinct failure kinds, reported with the results */
const failures = new Map<string, number>();
function noteFailure(kind: string): void {
  if (failures.size < 8 || failures.has(kind)) failures.set(kind, (failures.get(kind) ?? 0) + 1);
}

async function runCalls(port: number, uasPort: number, total: number, conns: number, inflight: number): Promise<{ ok: number; failed: number; seconds: number }> {
  const clients = await Promise.all(Array.from({ length: conns }, () => Client.open(port)));
  let started = 0;
  let ok = 0;
  let failed = 0;
  const t0 = process.hrtime.bigint();
  const loop = async (c: Client): Promise<void> => {
    while (started < total) {
      started++;
      if (await call(c, uasPort)) ok++; else failed++;
    }
  };
  await Promise.all(clients.flatMap((c) => Array.from({ length: inflight }, () => loop(c))));
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  for (const c of clients) c.close();
  return { ok, failed, seconds };
}

async function runHandshakes(port: number, uasPort: number, total: number, conc: number): Promise<{ ok: number; failed: number; seconds: number }> {
  let started = 0;
  let ok = 0;
  let failed = 0;
  const t0 = process.hrtime.bigint();
  const one = async (): Promise<boolean> => {
    let c: Client;
    try { c = await Client.open(port); } catch { return false; }
    const id = `${(seq++).toString(36)}-${process.pid}@hs`;
    const ruri = `sip:bench@${DOMAIN}`;
    const r = await c.request(req('OPTIONS', ruri, c, id, 1, 'h', `<${ruri}>`, []), id, '1 OPTIONS');
    c.close();
    return r !== null;
  };
  const loop = async (): Promise<void> => {
    while (started < total) {
      started++;
      if (await one()) ok++; else failed++;
    }
  };
  await Promise.all(Array.from({ length: conc }, loop));
  return { ok, failed, seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
}

interface Result { target: Target; cps: number; callsOk: number; callsFailed: number; cpuPerCallMs: number; hps: number; hsOk: number; hsFailed: number; cpuPerHsMs: number; note: string }

async function runTarget(t: Target, a: Args, dir: string, cert: string, key: string): Promise<Result | string> {
  const uas = await startResponder();
  let proxy: Proxy | undefined;
  try {
    if (t === 'edge') {
      if (!edgeCliAvailable()) return 'edge CLI not built';
      proxy = await startEdgeTls(uas.port, dir, cert, key);
    } else {
      if (!kamailioTlsAvailable()) return 'kamailio tls module not installed';
      proxy = await startKamailioTls(uas.port, dir, t === 'kamailio' ? 1 : 2, cert, key);
    }
    // warm-up (JIT, pools), not measured
    await runCalls(proxy.port, uas.port, a.warmup, a.conns, a.inflight);
    await runHandshakes(proxy.port, uas.port, Math.ceil(a.warmup / 10), a.hsConc);
    failures.clear();
    let c0 = treeCpuSeconds(proxy.pid);
    const calls = await runCalls(proxy.port, uas.port, a.calls, a.conns, a.inflight);
    const callCpu = treeCpuSeconds(proxy.pid) - c0;
    c0 = treeCpuSeconds(proxy.pid);
    const hs = await runHandshakes(proxy.port, uas.port, a.handshakes, a.hsConc);
    const hsCpu = treeCpuSeconds(proxy.pid) - c0;
    const failed = [...failures].map(([k, n]) => `${n}x ${k}`).join('; ');
    failures.clear();
    const note = (proxy.alive() ? '' : `EXITED during the run: ${proxy.log().slice(-500)} `) + (failed === '' ? '' : `failures: ${failed}`);
    return {
      target: t, cps: calls.ok / calls.seconds, callsOk: calls.ok, callsFailed: calls.failed, cpuPerCallMs: (callCpu * 1000) / Math.max(1, calls.ok),
      hps: hs.ok / hs.seconds, hsOk: hs.ok, hsFailed: hs.failed, cpuPerHsMs: (hsCpu * 1000) / Math.max(1, hs.ok), note,
    };
  } finally {
    await proxy?.stop();
    uas.child.kill('SIGTERM');
    await waitExit(uas.child, 3000);
  }
}

function machineInfo(): string[] {
  const cpuinfo = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? 'unknown';
  const kam = spawnSync('kamailio', ['-v'], { encoding: 'utf8' });
  const kamV = kam.error === undefined ? (kam.stdout.match(/kamailio [\d.]+/)?.[0] ?? 'unknown') : 'not installed';
  const ossl = spawnSync('openssl', ['version'], { encoding: 'utf8' }).stdout?.trim() ?? '';
  return [`- date: ${new Date().toISOString()}`, `- nproc: ${os.cpus().length}; CPU: ${model}`, `- kernel ${os.release()}; node ${process.version} (OpenSSL ${process.versions.openssl}); ${kamV}; system ${ossl}`];
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-bench-tls-'));
  const ca = makeCa(path.join(dir, 'pki'));
  const leaf = makeLeaf(ca, { names: ['bench.test'], ips: ['127.0.0.1'] });
  const results: Result[] = [];
  const notes: string[] = [];
  try {
    for (const t of a.targets) {
      process.stderr.write(`[tls bench] ${t}...\n`);
      const r = await runTarget(t, a, dir, leaf.cert, leaf.key);
      if (typeof r === 'string') notes.push(`${t}: ${r}`); else { results.push(r); process.stderr.write(`${JSON.stringify(r)}\n`); }
    }
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  const edge = results.find((r) => r.target === 'edge');
  const ratio = (x: number, y: number | undefined): string => (y === undefined || y === 0 ? '-' : (x / y).toFixed(2));
  const lines = [
    '# TLS benchmark (bench/tls.ts)', '', ...machineInfo(),
    `- \`node dist/bench/tls.js ${process.argv.slice(2).join(' ')}\`: ${a.calls} calls on ${a.conns} reused connections x ${a.inflight} in flight; ${a.handshakes} new handshakes, ${a.hsConc} at a time; RSA-2048 certificate; ${a.warmup} warm-up calls first`, '',
    '| target | calls/s | calls ok / failed | CPU ms/call | edge/target CPU per call | handshakes/s | handshakes ok / failed | CPU ms/handshake | edge/target CPU per handshake |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...results.map((r) => `| ${r.target} | ${r.cps.toFixed(0)} | ${r.callsOk} / ${r.callsFailed} | ${r.cpuPerCallMs.toFixed(3)} | ${ratio(edge?.cpuPerCallMs ?? 0, r.cpuPerCallMs)} | ${r.hps.toFixed(0)} | ${r.hsOk} / ${r.hsFailed} | ${r.cpuPerHsMs.toFixed(3)} | ${ratio(edge?.cpuPerHsMs ?? 0, r.cpuPerHsMs)} |`),
    '', ...results.filter((r) => r.note !== '').map((r) => `- ${r.target}: ${r.note}`), ...notes.map((n) => `- ${n}`), '',
  ];
  fs.mkdirSync(path.dirname(a.out), { recursive: true });
  fs.writeFileSync(a.out, lines.join('\n'));
  fs.writeFileSync(a.out.replace(/\.md$/, '.json'), JSON.stringify(results, null, 2));
  process.stdout.write(lines.join('\n'));
}

main().catch((e: unknown) => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  process.stderr.write(`${String(e instanceof Error ? e.stack : e)}\n`);
  process.exit(1);
});
