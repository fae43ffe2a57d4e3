// In-process cost of one call through the edge's JS (parse, sanity, transactions, routing,
// rewriting), with the sockets replaced by counters: what the edge spends per call apart from
// the kernel. Run: node dist/bench/proxy-core.js [--calls 20000]
//
// --topology: topology hiding on (edge/router/topology.ts); the phone then dials back what it was
// sent (the folded Record-Route, the sealed Contact), so both directions of the rewrite are paid.
//
// Reference in the same run: the cost of parsing the same messages alone (the floor any SIP
// element pays), so the result reads as a ratio rather than an absolute that depends on the box.
import { performance } from 'node:perf_hooks';
import pino from 'pino';
import { ManualClock } from '../edge/clock';
import { startEdge } from '../edge/edge';
import { NullMetrics } from '../edge/metrics';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { RulesHolder } from '../edge/policy/reload';
import { parseMessage } from '../edge/sip/parser';
import type { Endpoint } from '../edge/sip/types';
import type { Inbound } from '../edge/transport/types';
import { testConfig } from '../test/helpers/config';

const argv = process.argv.slice(2);
const calls = Number(argv[argv.indexOf('--calls') + 1] ?? 0) || 20000;

function msg(lines: string[]): Buffer {
  return Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1');
}

function policyDir(kind: string): string {
  const root = path.resolve(__dirname, '../..');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-bench-rules-'));
  fs.copyFileSync(path.join(root, 'rules/scanner.yaml'), path.join(dir, 'scanner.yaml'));
  if (kind === 'none') {
    fs.writeFileSync(path.join(dir, 'stages.yaml'), 'stages:\n  - { name: sanity, mode: enforce }\ntrustedSkip: []\n');
    return dir;
  }
  fs.writeFileSync(path.join(dir, 'stages.yaml'), 'stages:\n  - { name: sanity, mode: enforce }\n  - { name: access, mode: enforce }\n  - { name: scanner, mode: enforce }\n  - { name: geoip, mode: enforce }\ntrustedSkip: []\n');
  // 100,000 CIDRs of assorted lengths in 10.0.0.0/8 and 172.16.0.0/12 (never the bench phone)
  const lines: string[] = [];
  for (let i = 0; i < 100_000; i++) {
    const len = 16 + (i % 17);
    const a = i % 2 === 0 ? 10 : 172;
    const b = a === 10 ? (i >> 8) & 255 : 16 + ((i >> 8) & 15);
    lines.push(`${a}.${b}.${i & 255}.${(i * 7) & 255}/${len}`);
  }
  fs.mkdirSync(path.join(dir, 'lists'));
  fs.writeFileSync(path.join(dir, 'lists/feed.txt'), lines.join('\n') + '\n');
  fs.writeFileSync(path.join(dir, 'access.yaml'), 'denyAction: drop\nfiles:\n  - { path: lists/feed.txt, list: deny, name: feed }\n');
  fs.writeFileSync(path.join(dir, 'geoip.yaml'), 'mode: deny\ncountries: [KP, IR]\nunknownCountry: allow\n');
  return dir;
}

async function main(): Promise<void> {
  const sent: Buffer[] = [];
  const policy = argv.includes('--policy') ? argv[argv.indexOf('--policy') + 1]! : undefined;
  const rules = policy ? new RulesHolder(policyDir(policy)) : undefined;
  const edge = await startEdge(testConfig({
    listen: [{ transport: 'udp', host: '127.0.0.1', port: 0 }],
    upstreams: [{ transport: 'udp', host: '127.0.0.2', port: 5080 }],
    // with the shipped rules the one bench phone would hit the per-source rate limit: it is a
    // trusted peer here (--policy runs name their stages explicitly, without ratelimit)
    ...(policy ? {} : { trusted: ['127.0.0.1/32'] }),
    // the proxy core alone, synchronously: without the pre-parse priority queues (they hand
    // messages over on a later event-loop turn; bench/overload-prio.ts measures them)
    overload: { enabled: false, retryAfterSeconds: 5, prioritize: false, turnBudgetMs: 10, maxQueuedMB: 32 },
    ...(argv.includes('--topology') ? { topology: { enabled: true, key: 'b'.repeat(64), headers: { remove: ['server', 'user-agent', 'organization', 'warning'], replace: {} } } } : {}),
  }), pino({ level: process.env.BENCH_LOG ?? 'silent' }), {
    ...(argv.includes('--system-clock') ? {} : { clock: new ManualClock() }),
    ...(argv.includes('--no-metrics') ? { metrics: new NullMetrics() } : {}),
    ...(rules ? { rules } : {}),
  });
  const port = edge.listeners[0]!.port;
  // capture what the edge sends instead of putting it on the wire
  const l = (edge.proxy as unknown as { wire: { listeners: Array<{ send: (d: Endpoint, b: Buffer) => boolean }> } }).wire.listeners[0]!;
  l.send = (_d, b) => { sent.push(b); return true; };
  // a public documentation address when the policy is on, so GeoIP and the CIDR lists do real lookups
  const phoneIp = policy === 'full' ? '8.8.8.8' : '127.0.0.1';
  const phone: Endpoint = { transport: 'udp', address: phoneIp, port: 5099, listenerId: `udp:127.0.0.1:${port}` };
  const pbx: Endpoint = { transport: 'udp', address: '127.0.0.2', port: 5080, listenerId: `udp:127.0.0.1:${port}` };
  const inject = (bytes: Buffer, source: Endpoint): void => edge.inject({ bytes, source, receivedAt: performance.now() } as Inbound);
  const sdp = 'v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6004 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n';
  const viaOf = (b: Buffer): string[] => b.toString('latin1').split('\r\n').filter((x) => x.startsWith('Via: '));
  const rrOf = (b: Buffer): string => /^Record-Route: (.*)$/m.exec(b.toString('latin1'))![1]!;

  let parseOnly = 0;
  const oneCall = (i: number, measureParse: boolean): void => {
    const cid = `${i}-bench@127.0.0.1`;
    const via = `Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-${i}-0;rport`;
    const base = [`From: "sipp" <sip:caller@127.0.0.1:5099>;tag=${i}t`, `Call-ID: ${cid}`];
    const inv = msg([`INVITE sip:service@127.0.0.1:${port} SIP/2.0`, via, ...base, `To: <sip:service@127.0.0.1:${port}>`, 'CSeq: 1 INVITE',
      'Contact: <sip:caller@127.0.0.1:5099>', 'Max-Forwards: 70', 'Content-Type: application/sdp', `Content-Length: ${sdp.length}`]).toString('latin1') + sdp;
    const invB = Buffer.from(inv, 'latin1');
    sent.length = 0;
    inject(invB, phone);
    const fwd = sent[1];
    if (!fwd) throw new Error(`INVITE not forwarded (call ${i}): ${sent.map((b) => b.toString("latin1")).join(" | ")}`);
    const vias = viaOf(fwd);
    const rr = rrOf(fwd);
    const resp = (status: string, cseq: string, extra: string[]): Buffer => msg([`SIP/2.0 ${status}`, ...vias, ...base, `To: <sip:service@127.0.0.1:${port}>;tag=u${i}`, `CSeq: ${cseq}`, ...extra, 'Content-Length: 0']);
    const r180 = resp('180 Ringing', '1 INVITE', ['Contact: <sip:127.0.0.2:5080>', `Record-Route: ${rr}`]);
    const r200 = resp('200 OK', '1 INVITE', ['Contact: <sip:127.0.0.2:5080>', `Record-Route: ${rr}`]);
    inject(r180, pbx);
    inject(r200, pbx);
    // the phone's route set and remote target are what it received (RFC 3261 12.1.2)
    const got = sent.find((b) => b.toString('latin1', 0, 11) === 'SIP/2.0 200');
    if (!got) throw new Error(`200 not forwarded (call ${i}): ${sent.map((b) => b.toString("latin1", 0, 40)).join(" | ")}`);
    const rrSeen = rrOf(got);
    const target = /^Contact: <([^>]*)>/m.exec(got.toString('latin1'))![1]!;
    const route = `Route: ${rrSeen.split(', ').reverse().join(', ')}`;
    const ack = msg([`ACK ${target} SIP/2.0`, `Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-${i}-5;rport`, ...base, `To: <sip:service@127.0.0.1:${port}>;tag=u${i}`, 'CSeq: 1 ACK', route, 'Max-Forwards: 70', 'Content-Length: 0']);
    inject(ack, phone);
    const bye = msg([`BYE ${target} SIP/2.0`, `Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-${i}-7;rport`, ...base, `To: <sip:service@127.0.0.1:${port}>;tag=u${i}`, 'CSeq: 2 BYE', route, 'Max-Forwards: 70', 'Content-Length: 0']);
    sent.length = 0;
    inject(bye, phone);
    const bvias = viaOf(sent[0]!);
    const byeOk = msg(['SIP/2.0 200 OK', ...bvias, ...base, `To: <sip:service@127.0.0.1:${port}>;tag=u${i}`, 'CSeq: 2 BYE', 'Content-Length: 0']);
    inject(byeOk, pbx);
    if (measureParse) {
      const t = performance.now();
      for (const b of [invB, r180, r200, ack, bye, byeOk]) parseMessage(b);
      parseOnly += performance.now() - t;
    }
  };

  for (let i = 0; i < 5000; i++) oneCall(i, false); // warm-up
  // measure: the call flow including building the test messages, then the builder alone
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < calls; i++) oneCall(10_000 + i, false);
  const cpu = process.cpuUsage(cpu0);
  const wall = performance.now() - t0;
  for (let i = 0; i < calls; i++) oneCall(1_000_000 + i, true);
  const usPerCall = ((cpu.user + cpu.system) / calls);
  const parseUs = (parseOnly * 1000) / calls;
  console.log(JSON.stringify({
    calls,
    metrics: !argv.includes('--no-metrics'),
    policy: policy ?? 'shipped rules',
    topology: argv.includes('--topology'),
    cpuUsPerCall: Number(usPerCall.toFixed(1)),
    wallUsPerCall: Number(((wall * 1000) / calls).toFixed(1)),
    parseOnlyUsPerCall: Number(parseUs.toFixed(1)),
    ratioToParseOnly: Number((usPerCall / parseUs).toFixed(2)),
    liveTransactions: edge.proxy.activeTransactions,
    heapMiB: Number((process.memoryUsage().heapUsed / 1048576).toFixed(1)),
    note: 'cpuUsPerCall includes building the 6 test messages per call (harness cost)',
  }));
  await edge.close(0);
}

void main();
