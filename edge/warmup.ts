// JIT warm-up: before the edge binds its sockets, run a few thousand synthetic calls through a
// throwaway edge built by the same code (parser, stages, proxy, transactions, writer) with
// in-memory listeners, a manual clock, no metrics and its own in-memory store, then discard it.
//
// Why: V8 starts every function in the interpreter and optimizes it only after it has run a
// while. A cold edge needs two to three times the CPU per call for its first seconds; restarted at
// a busy hour (3,000 calls/s in bench/README.md) that is a queue of several hundred milliseconds,
// past T1 (RFC 3261 17.1.1.1), so every phone and the PBX retransmit and the extra load can tip
// the edge into collapse. The optimized code and type feedback belong to the functions, not to
// the edge instance, so the real edge starts with them. Nothing of the throwaway edge is
// observable: no socket, no metric, no log line, no shared state (Redis is not touched).
import pino from 'pino';
import { ManualClock } from './clock';
import type { ResolvedConfig } from './config/types';
import { startEdge } from './edge';
import { NullMetrics } from './metrics';
import type { Endpoint } from './sip/types';
import { createMemoryStore } from './store';
import type { Inbound, Listener, ListenerSpec } from './transport/types';

// documentation addresses (RFC 5737): never routed, never an operator's real peer
const EDGE_IP = '192.0.2.1';
const PHONE_IP = '192.0.2.10';
const PBX_IP = '192.0.2.20';
const PBX_PORT = 5060;

export interface WarmUpResult {
  readonly calls: number;
  /** calls whose INVITE the throwaway edge forwarded (the rest stopped at a stage: still warm-up) */
  readonly forwarded: number;
  readonly ms: number;
}

function msg(lines: string[], body = ''): Buffer {
  return Buffer.from(lines.join('\r\n') + '\r\n\r\n' + body, 'latin1');
}

const headerLines = (b: Buffer, name: string): string[] =>
  b.toString('latin1').split('\r\n').filter((x) => x.startsWith(`${name}: `));

/** Run `calls` synthetic INVITE/100/180/200/ACK/BYE/200 calls through a throwaway edge. */
export async function warmUp(cfg: ResolvedConfig, calls: number): Promise<WarmUpResult> {
  const t0 = performance.now();
  const sent: Buffer[] = [];
  const lid = `udp:${EDGE_IP}:5060`;
  const listenerFor = (spec: ListenerSpec): Promise<Listener> => Promise.resolve({
    id: lid,
    spec,
    local: { address: EDGE_IP, port: 5060, family: 4 },
    family: 4,
    send: (_dest: Endpoint, bytes: Buffer) => { sent.push(bytes); return true; },
    close: () => Promise.resolve(),
  });
  // no TLS: the warm-up runs on in-memory UDP listeners and must not load (or log) certificates
  const { redis: _redis, advertise: _advertise, tls: _tls, ...rest } = cfg;
  const wcfg: ResolvedConfig = {
    ...rest,
    listen: [{ transport: 'udp', host: EDGE_IP, port: 5060 }],
    upstreams: [{ transport: 'udp', host: PBX_IP, port: PBX_PORT }],
    domains: [],
    inside: [],
    trusted: [`${PHONE_IP}/32`],
    health: { ...cfg.health, intervalMs: 0 },
    overload: { ...cfg.overload, enabled: false },
    metrics: { ...cfg.metrics, listen: null },
    log: { level: 'silent' },
  };
  const store = createMemoryStore();
  const edge = await startEdge(wcfg, pino({ level: 'silent' }), {
    clock: new ManualClock(), metrics: new NullMetrics(), store, watchRules: false, idleGc: false, createListener: listenerFor,
  });
  const phone: Endpoint = { transport: 'udp', address: PHONE_IP, port: 5099, listenerId: lid };
  const pbx: Endpoint = { transport: 'udp', address: PBX_IP, port: PBX_PORT, listenerId: lid };
  const inject = (bytes: Buffer, source: Endpoint): void => edge.inject({ bytes, source, receivedAt: performance.now() } as Inbound);
  const sdp = `v=0\r\no=- 1 1 IN IP4 ${PHONE_IP}\r\ns=-\r\nc=IN IP4 ${PHONE_IP}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n`;
  let forwarded = 0;
  try {
    for (let i = 0; i < calls; i++) {
      const tag = `w${i}`;
      const from = `From: "warm" <sip:caller@${PHONE_IP}>;tag=${tag}`;
      const cid = `Call-ID: warm-${i}@${PHONE_IP}`;
      const to = `To: <sip:service@${EDGE_IP}>`;
      sent.length = 0;
      inject(msg([`INVITE sip:service@${EDGE_IP} SIP/2.0`, `Via: SIP/2.0/UDP ${PHONE_IP}:5099;branch=z9hG4bK-${tag}-0;rport`, from, to, cid,
        'CSeq: 1 INVITE', `Contact: <sip:caller@${PHONE_IP}:5099>`, 'Max-Forwards: 70', 'User-Agent: sip-edge warm-up',
        'Content-Type: application/sdp', `Content-Length: ${sdp.length}`], sdp), phone);
      // a stage may answer asynchronously (a store round trip): let it
      if (sent.length < 2) await new Promise((r) => setImmediate(r));
      const fwd = sent.find((b) => b.subarray(0, 6).toString('latin1') === 'INVITE');
      if (!fwd) continue;
      forwarded++;
      const vias = headerLines(fwd, 'Via');
      const rr = headerLines(fwd, 'Record-Route');
      const resp = (status: string, cseq: string): Buffer => msg([`SIP/2.0 ${status}`, ...vias, ...rr, from, `${to};tag=u${i}`, cid,
        `CSeq: ${cseq}`, `Contact: <sip:service@${PBX_IP}:${PBX_PORT}>`, 'Content-Length: 0']);
      inject(resp('180 Ringing', '1 INVITE'), pbx);
      inject(resp('200 OK', '1 INVITE'), pbx);
      const route = rr.map((x) => x.slice('Record-Route: '.length)).reverse().join(', ');
      const inDialog = (method: string, n: number, cseq: string): Buffer => msg([`${method} sip:service@${PBX_IP}:${PBX_PORT} SIP/2.0`,
        `Via: SIP/2.0/UDP ${PHONE_IP}:5099;branch=z9hG4bK-${tag}-${n};rport`, from, `${to};tag=u${i}`, cid, `CSeq: ${cseq}`,
        ...(route ? [`Route: ${route}`] : []), 'Max-Forwards: 70', 'Content-Length: 0']);
      inject(inDialog('ACK', 1, '1 ACK'), phone);
      sent.length = 0;
      inject(inDialog('BYE', 2, '2 BYE'), phone);
      const bye = sent.find((b) => b.subarray(0, 3).toString('latin1') === 'BYE');
      if (bye) {
        inject(msg(['SIP/2.0 200 OK', ...headerLines(bye, 'Via'), from, `${to};tag=u${i}`, cid, 'CSeq: 2 BYE', 'Content-Length: 0']), pbx);
      }
    }
  } finally {
    await edge.close(0);
    await store.close();
  }
  return { calls, forwarded, ms: performance.now() - t0 };
}
