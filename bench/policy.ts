// Cost per message of the policy stages, next to the cost of what every message pays anyway
// (parse + sanity) and of forwarding (the writer): run `node dist/bench/policy.js`.
// Rules: the shipped scanner signature set, an access deny list file of 100,000 CIDRs (and the
// same with 10 CIDRs, to show the lookup cost does not grow), GeoIP country deny-list on the
// embedded database. Median of 7 rounds; sources are public addresses so every lookup is real.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createPolicy } from '../edge/policy';
import { parseMessage } from '../edge/sip/parser';
import { MessageWriter } from '../edge/sip/writer';
import type { MessageContext } from '../edge/verdict';
import { loadRules } from '../edge/policy/load';
import type { KnownStage } from '../edge/policy/schema';

const ROOT = path.resolve(__dirname, '../..');

function rulesWith(cidrs: number): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-policy-bench-'));
  fs.copyFileSync(path.join(ROOT, 'rules/scanner.yaml'), path.join(dir, 'scanner.yaml'));
  fs.writeFileSync(path.join(dir, 'stages.yaml'), 'stages:\n  - { name: sanity, mode: enforce }\n  - { name: access, mode: enforce }\n  - { name: scanner, mode: enforce }\n  - { name: geoip, mode: enforce }\ntrustedSkip: []\n');
  const lines: string[] = [];
  for (let i = 0; i < cidrs; i++) lines.push(`${i % 2 === 0 ? 10 : 100}.${(i >> 8) & 255}.${i & 255}.0/${16 + (i % 9)}`);
  fs.mkdirSync(path.join(dir, 'lists'));
  fs.writeFileSync(path.join(dir, 'lists/feed.txt'), lines.join('\n') + '\n');
  fs.writeFileSync(path.join(dir, 'access.yaml'), 'files:\n  - { path: lists/feed.txt, list: deny, name: feed }\n');
  fs.writeFileSync(path.join(dir, 'geoip.yaml'), 'mode: deny\ncountries: [KP, IR]\n');
  return dir;
}

const SDP = 'v=0\r\no=1003 1 1 IN IP4 192.168.1.40\r\ns=Talk\r\nc=IN IP4 192.168.1.40\r\nt=0 0\r\nm=audio 7078 RTP/AVP 0 8 101\r\na=sendrecv\r\n';
const INVITE = Buffer.from([
  'INVITE sip:1004@pbx.example.com SIP/2.0',
  'Via: SIP/2.0/UDP 192.168.1.40:5060;branch=z9hG4bK.Xq3bC9aQ;rport',
  'From: "Alice" <sip:1003@pbx.example.com>;tag=wJ8Fq2sH',
  'To: <sip:1004@pbx.example.com>',
  'Call-ID: 7d2c1e0f-9a8b@192.168.1.40',
  'CSeq: 20 INVITE',
  'Contact: <sip:1003@192.168.1.40:5060;transport=udp>',
  'Max-Forwards: 70',
  'User-Agent: Linphone Desktop/5.2.0 (belle-sip/5.2.0)',
  'Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO, UPDATE',
  'Supported: replaces, outbound, gruu',
  'Content-Type: application/sdp',
  `Content-Length: ${SDP.length}`,
  '',
  SDP,
].join('\r\n'), 'latin1');

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function measure(label: string, n: number, fn: (i: number) => void): Promise<number> {
  for (let i = 0; i < 2000; i++) fn(i);
  const rounds: number[] = [];
  for (let r = 0; r < 7; r++) {
    const t = performance.now();
    for (let i = 0; i < n; i++) fn(i);
    rounds.push(((performance.now() - t) * 1e6) / n);
  }
  const ns = median(rounds);
  console.log(`${label.padEnd(52)} ${ns.toFixed(0).padStart(7)} ns/message`);
  return ns;
}

async function main(): Promise<void> {
  const n = 20000;
  const sources = Array.from({ length: 256 }, (_, i) => `${[8, 31, 45, 77, 151, 185, 203, 212][i % 8]}.${(i * 37) & 255}.${(i * 11) & 255}.${i & 255}`);
  const ctxOf = (i: number): MessageContext => {
    const r = parseMessage(INVITE);
    if (!r.ok) throw new Error('bench message does not parse');
    return { msg: r.msg, source: { transport: 'udp', address: sources[i & 255]!, port: 5060 }, side: 'outside', trust: 'untrusted', receivedAt: 0 };
  };
  const results: Record<string, number> = {};
  results.parse = await measure('parse (every message pays this)', n, () => { parseMessage(INVITE); });
  for (const cidrs of [10, 100_000]) {
    const loaded = loadRules(rulesWith(cidrs));
    if (!loaded.ok) throw new Error(loaded.errors.join('\n'));
    const snap = loaded.snapshot;
    const policy = await createPolicy(() => snap);
    const stage = (name: KnownStage) => policy.stages.get(name)!;
    results[`sanity`] = await measure('parse + sanity', n, (i) => { stage('sanity').check(ctxOf(i)); });
    results[`forward${cidrs}`] = await measure('parse + sanity + writer (forwarding floor)', n, (i) => {
      const c = ctxOf(i);
      stage('sanity').check(c);
      new MessageWriter(c.msg).prependTop('Via', 'SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bKbench').replaceFirst('max-forwards', '69').toBuffer();
    });
    results[`policy${cidrs}`] = await measure(`parse + sanity + access(${cidrs} CIDRs) + scanner + geoip`, n, (i) => {
      const c = ctxOf(i);
      for (const s of ['sanity', 'access', 'scanner', 'geoip'] as const) stage(s).check(c);
    });
    for (const s of ['access', 'scanner', 'geoip'] as const) {
      results[`${s}${cidrs}`] = await measure(`  ${s} alone (${cidrs} CIDRs in the rules)`, n, (() => {
        const pre = Array.from({ length: 256 }, (_, i) => ctxOf(i));
        return (i: number) => { stage(s).check(pre[i & 255]!); };
      })());
    }
    policy.close();
  }
  // the stages measured alone on pre-parsed messages are the stable figures; the end-to-end rows
  // above include parse and GC noise
  const extra = results.access100000! + results.scanner100000! + results.geoip100000!;
  console.log(JSON.stringify({
    policyStagesNsPerMessage: Math.round(extra),
    ratioPolicyToForwardingFloor: Number(((results.forward100000! + extra) / results.forward100000!).toFixed(2)),
    accessLookupRatio100kTo10: Number((results.access100000! / results.access10!).toFixed(2)),
  }));
}

void main();
