// Parser + writer throughput on typical messages, and the linearity check over pathological
// patterns. Run: node dist/bench/parser.js  (or the dist-NAME folder you built into)
import { DEFAULT_LIMITS, parseMessage, type ParseLimits } from '../edge/sip/parser';
import * as H from '../edge/sip/headers';
import { MessageWriter } from '../edge/sip/writer';
import { INVITE_YEALINK, OK_INVITE, REGISTER_ZOIPER } from '../test/helpers/messages';

function bench(name: string, raw: Buffer, seconds = 1): void {
  let n = 0, sink = 0;
  const end = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
  const t0 = process.hrtime.bigint();
  while (process.hrtime.bigint() < end) {
    for (let i = 0; i < 1000; i++) {
      const r = parseMessage(raw);
      if (!r.ok) throw new Error(`bench message rejected: ${r.reason}`);
      const m = r.msg;
      // what the forwarding path does: read the key headers, then rewrite Via / Max-Forwards
      sink += H.topVia(m)?.host.length ?? 0;
      sink += H.cseq(m)?.seq ?? 0;
      sink += H.callId(m)?.length ?? 0;
      sink += H.maxForwards(m) ?? 0;
      const out = new MessageWriter(m)
        .prependTop('Via', 'SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKbench1234567890')
        .replaceFirst('max-forwards', '69')
        .toBuffer();
      sink += out.length;
    }
    n += 1000;
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(`${name.padEnd(10)} ${Math.round(n / secs).toLocaleString('en-US').padStart(10)} msg/s  (parse + 4 accessors + writer, ${raw.length} B)${sink < 0 ? '!' : ''}`);
}

const WIDE: ParseLimits = { ...DEFAULT_LIMITS, maxHeaderLineBytes: DEFAULT_LIMITS.maxMessageBytes };
const PATTERNS = ['<', '"', ';', ',', '%', '\\', ':', '[', '@', ' ', 'a;', ';a', ';a=b', '<sip:', '"\\', 'sip:a@', 'a,', '\r\n ', '1', '=', '"a",'];
const NAMES = ['Via', 'From', 'Contact', 'Route', 'Call-ID', 'CSeq', 'Supported', 'X-Other'];
const fill = (p: string, n: number): string => p.repeat(Math.ceil(n / p.length)).slice(0, n);

function perByte(pattern: string, size: number, reps: number): number {
  const bufs = NAMES.map((name) => {
    const pre = `INVITE sip:a@example.com SIP/2.0\r\n${name}: `;
    return Buffer.from(`${pre}${fill(pattern, size - pre.length - 40).replace(/\r\n $/, 'x')}\r\nContent-Length: 0\r\n\r\n`, 'latin1');
  });
  bufs.push(Buffer.from(fill(pattern, size), 'latin1'));
  const bytes = bufs.reduce((a, b) => a + b.length, 0);
  const times: number[] = [];
  let sink = 0;
  for (let s = 0; s < 21; s++) {
    const t0 = process.hrtime.bigint();
    for (let r = 0; r < reps; r++) {
      for (const b of bufs) {
        const res = parseMessage(b, { limits: WIDE });
        const m = res.ok ? res.msg : res.partial;
        if (m === undefined) continue;
        sink += (H.vias(m)?.length ?? 0) + (H.from(m) ? 1 : 0) + (H.contacts(m)?.length ?? 0) + (H.routes(m)?.length ?? 0);
        sink += (H.callId(m)?.length ?? 0) + (H.cseq(m)?.seq ?? 0) + H.optionTags(m, 'supported').length;
      }
    }
    times.push(Number(process.hrtime.bigint() - t0) / reps / bytes);
  }
  if (sink < 0) console.log('');
  times.sort((a, b) => a - b);
  return times[10] as number;
}

bench('warmup', INVITE_YEALINK, 0.5);
bench('INVITE', INVITE_YEALINK);
bench('200 OK', OK_INVITE);
bench('REGISTER', REGISTER_ZOIPER);

let worst = 0, worstP = '';
for (const p of PATTERNS) {
  perByte(p, 1024, 20); perByte(p, 16320, 2);
  const f = perByte(p, 16320, 4) / perByte(p, 1024, 64);
  if (f > worst) { worst = f; worstP = p; }
}
console.log(`linearity: worst time-per-byte factor 1 KiB -> 16 KiB = ${worst.toFixed(2)}x (pattern ${JSON.stringify(worstP)}; quadratic would be ~16x)`);
