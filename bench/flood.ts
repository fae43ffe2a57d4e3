// Flood benchmark: legitimate calls from a trusted source while thousands of distinct loopback
// sources flood the edge with scanner probes and garbage. Reports the legitimate calls' success
// ratio, what the edge did with the flood (bans, gate drops) and the edge's memory.
//
//   node dist/bench/flood.js [--sources 10000] [--pps 20000] [--duration 20] [--cps 100]
//
// Bounded: the flood stops after --duration seconds, sipp after its call count.
import dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startEdge } from '../test/helpers/edge-proc';
import { sample, sumOf } from '../test/helpers/prom';
import { runSipp, startSipp } from '../test/helpers/sipp';

const argv = process.argv.slice(2);
const arg = (name: string, def: number): number => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : def;
};
const SOURCES = arg('sources', 10000);
const PPS = arg('pps', 20000);
const DURATION = arg('duration', 20);
const CPS = arg('cps', 100);

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function probe(i: number, port: number, addr: string, sport: number): Buffer {
  if (i % 2 === 0) return Buffer.from(`\x16\x03\x01garbage-${i}\r\n\r\n`, 'latin1');
  return Buffer.from([
    `OPTIONS sip:${100 + (i % 900)}@127.0.0.1:${port} SIP/2.0`,
    `Via: SIP/2.0/UDP ${addr}:${sport};branch=z9hG4bK-f${i};rport`,
    'Max-Forwards: 70', `From: "sipvicious"<sip:100@1.1.1.1>;tag=${i}`, '<sip:100@1.1.1.1>'.replace(/^/, 'To: '),
    `Call-ID: flood-${i}`, 'CSeq: 1 OPTIONS', 'User-Agent: friendly-scanner', 'Content-Length: 0', '', '',
  ].join('\r\n'), 'latin1');
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-flood-'));
  fs.writeFileSync(path.join(dir, 'edge.yaml'), 'health:\n  intervalMs: 0\n');
  const uas = await startSipp({ scenario: 'uas.xml', transport: 'u1', localIp: '127.0.0.2', maxTimeMs: (DURATION + 60) * 1000, rtt: false });
  const edge = await startEdge({
    listen: ['udp:127.0.0.1:0'], upstream: [`udp:127.0.0.2:${uas.port}`],
    extraArgs: ['--config', path.join(dir, 'edge.yaml'), '--trusted', '127.0.0.1/32'],
  });
  const port = edge.ports.udp!;
  const rss0 = rssMiB(edge.pid);
  const calls = CPS * DURATION;
  // sipp first: its ports must be bound before 10,000 flood sockets take ephemeral ports
  const legit = runSipp({ scenario: 'uac-rr.xml', remote: `127.0.0.1:${port}`, transport: 'u1', calls, rate: CPS, maxTimeMs: (DURATION + 40) * 1000 });
  await new Promise((r) => setTimeout(r, 1000));
  // the flood sources: 127.10.x.y, one socket each
  const socks: dgram.Socket[] = [];
  for (let i = 0; i < SOURCES; i++) {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, `127.10.${(i >> 8) & 255}.${i & 255}`, () => r()));
    s.on('error', () => { /* the flood does not care */ });
    socks.push(s);
  }
  let sent = 0;
  const t0 = Date.now();
  const tick = 10;
  let peakRss = rss0;
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      const elapsed = Date.now() - t0;
      if (elapsed >= DURATION * 1000) { clearInterval(timer); resolve(); return; }
      const due = Math.floor((elapsed / 1000) * PPS) - sent;
      for (let k = 0; k < due; k++, sent++) {
        const i = sent % SOURCES;
        const s = socks[i]!;
        s.send(probe(sent, port, s.address().address, s.address().port), port, '127.0.0.1');
      }
      if (sent % (PPS / 2) < due) peakRss = Math.max(peakRss, rssMiB(edge.pid));
    }, tick);
  });
  const floodSeconds = (Date.now() - t0) / 1000;
  const r = await legit;
  if (r.successful + r.failed === 0) console.error(`sipp placed no calls: code ${r.code}\n${r.stderr.slice(0, 2000)}\n${r.stdout.slice(-1500)}`);
  const m = await (await fetch(`http://127.0.0.1:${edge.metricsPort}/metrics`)).text();
  const rss1 = rssMiB(edge.pid);
  for (const s of socks) s.close();
  await edge.stop();
  await uas.stop(1000);
  const out = {
    sources: SOURCES, floodPackets: sent, floodPps: Math.round(sent / floodSeconds),
    legitCalls: calls, legitOk: r.successful, legitFailed: r.failed,
    legitSuccessPct: Number(((100 * r.successful) / calls).toFixed(3)),
    bansActive: sample(m, 'sipedge_bans_active'), bansAdded: sumOf(m, 'sipedge_bans_added_total'),
    gateDrops: sample(m, 'sipedge_verdicts_total', { stage: 'gate', action: 'drop', reason: 'banned', mode: 'enforce' }) ?? 0,
    scannerDrops: sumOf(m, 'sipedge_verdicts_total', { stage: 'scanner' }),
    parseFailures: sumOf(m, 'sipedge_parse_failures_total'),
    edgeRssMiB: { start: Math.round(rss0), peak: Math.round(Math.max(peakRss, rss1)), end: Math.round(rss1) },
  };
  console.log(JSON.stringify(out, null, 2));
}

void main();
