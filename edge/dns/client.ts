// DNS questions on the wire (RFC 1035 4.2), for the RFC 3263 resolver (edge/dns/resolver.ts).
//
// Every answer is hostile until proven otherwise (RFC 5452, "Measures for Making DNS More
// Resilient against Forged Answers"):
// - a fresh UDP socket per attempt, bound to port 0 so that the kernel picks a random ephemeral
//   source port, and connected to the server so that the kernel itself drops datagrams from any
//   other address or port (RFC 5452 9.2: source port randomisation);
// - a random 16-bit id per attempt (RFC 5452 9.1), from the CSPRNG;
// - an answer counts only if it comes from the queried address and port, carries our id, is a
//   response, and repeats our question (name, type, class IN) (RFC 5452 9.1, 4.1); anything else
//   is ignored and the wait goes on, so one forged datagram cannot end the attempt either;
// - records are taken from the answer section only, owned by the asked name or an alias the same
//   answer made of it (CNAME, bounded); the additional section is never trusted (RFC 2181 5.4.1).
// A truncated answer (TC bit, RFC 1035 4.2.1, RFC 7766 5) is asked again over TCP on the same
// server. Everything is bounded: per attempt `timeoutMs`, at most `attempts` rounds over the
// servers, at most `maxOutstanding` distinct questions in flight (more are answered `busy` at
// once), and identical concurrent questions share one exchange.
// Never throws and never rejects: every outcome is a DnsAnswer value.
import { randomInt } from 'node:crypto';
import * as dgram from 'node:dgram';
import * as net from 'node:net';
import * as dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, Question } from 'dns-packet';
import type { DnsAnswer, DnsMetrics, DnsQueryType, DnsRecord, DnsResult } from './types';
import { nullDnsMetrics } from './types';

export interface DnsServer {
  /** IP literal */
  readonly address: string;
  readonly port: number;
}

export interface DnsClientOptions {
  readonly servers: readonly DnsServer[];
  /** wait for one answer from one server (UDP, and again for the TCP retry of a truncated one) */
  readonly timeoutMs: number;
  /** rounds over the server list; total wait is bounded by attempts x servers x timeoutMs */
  readonly attempts: number;
  /** distinct questions in flight at once; more get `busy` without touching the network */
  readonly maxOutstanding: number;
  /** EDNS0 UDP payload size to advertise (RFC 6891 6.2.5; 1232 is the DNS flag day 2020 value);
   *  0 = no OPT record, answers over 512 bytes come truncated and go to TCP */
  readonly ednsUdpSize?: number;
  readonly metrics?: DnsMetrics;
}

/** Largest DNS message over TCP (RFC 1035 4.2.2: a 16-bit length). */
const MAX_TCP_MESSAGE = 65535;
/** CNAME links followed inside one answer. */
const MAX_ALIASES = 8;

/** What one attempt on one server produced. */
type Attempt =
  | { readonly kind: 'answer'; readonly packet: DecodedPacket }
  | { readonly kind: 'timeout' }
  | { readonly kind: 'error' };

export class DnsClient {
  private readonly o: DnsClientOptions;
  private readonly metrics: DnsMetrics;
  private readonly inflight = new Map<string, Promise<DnsAnswer>>();
  private readonly live = new Set<{ cancel(): void }>();
  private closed = false;

  constructor(opts: DnsClientOptions) {
    this.o = opts;
    this.metrics = opts.metrics ?? nullDnsMetrics;
  }

  /** the servers asked, in order */
  get servers(): readonly DnsServer[] { return this.o.servers; }

  /** distinct questions on the wire now */
  get outstanding(): number { return this.inflight.size; }

  /** Ask `type` for `name` (no trailing dot needed). Concurrent identical questions share one
   *  exchange. Never rejects. */
  query(name: string, type: DnsQueryType): Promise<DnsAnswer> {
    const qname = normalizeName(name);
    const key = `${type} ${qname}`;
    const running = this.inflight.get(key);
    if (running !== undefined) return running;
    if (this.closed || this.inflight.size >= this.o.maxOutstanding) {
      this.metrics.query(type, this.closed ? 'error' : 'busy');
      return Promise.resolve({ result: this.closed ? 'error' : 'busy', records: [] });
    }
    const p = this.ask(qname, type).then((a) => {
      this.inflight.delete(key);
      this.metrics.query(type, a.result);
      return a;
    });
    this.inflight.set(key, p);
    return p;
  }

  /** Cancel every exchange in flight (they resolve as `error`) and refuse new ones. */
  close(): void {
    this.closed = true;
    for (const x of [...this.live]) x.cancel();
  }

  private async ask(qname: string, type: DnsQueryType): Promise<DnsAnswer> {
    const seen = new Set<DnsResult>();
    if (this.o.servers.length === 0) return { result: 'error', records: [] };
    for (let round = 0; round < Math.max(1, this.o.attempts); round++) {
      for (const server of this.o.servers) {
        if (this.closed) return { result: 'error', records: [] };
        let a = await this.udp(server, qname, type);
        // RFC 7766 5: a truncated UDP answer is asked again over TCP
        if (a.kind === 'answer' && a.packet.flag_tc) a = await this.tcp(server, qname, type);
        if (a.kind !== 'answer') { seen.add(a.kind); continue; }
        const r = classify(a.packet, qname, type);
        // SERVFAIL, REFUSED, FORMERR ...: this server cannot help, the next one may
        if (r.result === 'servfail' || r.result === 'refused') { seen.add(r.result); continue; }
        return r;
      }
    }
    // the most telling failure: a server that answered says more than silence
    for (const r of ['servfail', 'refused', 'timeout', 'error'] as const) if (seen.has(r)) return { result: r, records: [] };
    return { result: 'error', records: [] };
  }

  private query1(qname: string, type: DnsQueryType): { id: number; question: Question; bytes: (tcp: boolean) => Buffer } {
    const id = randomInt(0, 0x10000);
    const question: Question = { type, name: qname, class: 'IN' };
    const edns = this.o.ednsUdpSize ?? 1232;
    const packet: dnsPacket.Packet = {
      type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [question],
      ...(edns > 0 ? { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: edns, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] } as Answer] } : {}),
    };
    return { id, question, bytes: (tcp) => (tcp ? dnsPacket.streamEncode(packet) : dnsPacket.encode(packet)) };
  }

  /** One exchange with its timer and cancel handle: `start` gets `finish`, and `close` runs
   *  once, whatever ends the exchange first (answer, timeout, socket error, close()). */
  private exchange(close: () => void, start: (finish: (a: Attempt) => void) => void): Promise<Attempt> {
    return new Promise<Attempt>((resolve) => {
      let done = false;
      const finish = (a: Attempt): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.live.delete(handle);
        try { close(); } catch { /* already closed */ }
        resolve(a);
      };
      const handle = { cancel: () => finish({ kind: 'error' }) };
      this.live.add(handle);
      const timer = setTimeout(() => finish({ kind: 'timeout' }), this.o.timeoutMs);
      timer.unref();
      start(finish);
    });
  }

  private udp(server: DnsServer, qname: string, type: DnsQueryType): Promise<Attempt> {
    const q = this.query1(qname, type);
    const sock = dgram.createSocket(net.isIPv6(server.address) ? 'udp6' : 'udp4');
    let closed = false;
    return this.exchange(() => { closed = true; sock.close(); }, (finish) => {
      sock.on('error', () => finish({ kind: 'error' }));
      sock.on('message', (msg, rinfo) => {
        // the connected socket already filters by source; this keeps the rule visible and
        // holds even where connect() filtering is not available
        if (rinfo.port !== server.port || !sameAddress(rinfo.address, server.address)) return;
        const p = decodeResponse(msg, q.id, q.question);
        if (p !== null) finish({ kind: 'answer', packet: p });
      });
      sock.bind(0, () => {
        if (closed) return;
        sock.connect(server.port, server.address, () => {
          if (closed) return;
          sock.send(q.bytes(false), (err) => { if (err) finish({ kind: 'error' }); });
        });
      });
    });
  }

  private tcp(server: DnsServer, qname: string, type: DnsQueryType): Promise<Attempt> {
    const q = this.query1(qname, type);
    const sock = net.connect({ host: server.address, port: server.port });
    let buf = Buffer.alloc(0);
    return this.exchange(() => sock.destroy(), (finish) => {
      sock.on('error', () => finish({ kind: 'error' }));
      sock.on('close', () => finish({ kind: 'error' }));
      sock.on('connect', () => sock.write(q.bytes(true)));
      sock.on('data', (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        if (buf.length > MAX_TCP_MESSAGE + 2) return finish({ kind: 'error' });
        // RFC 1035 4.2.2: two-byte length, then the message; only one answer is awaited
        if (buf.length < 2) return;
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) return;
        const p = decodeResponse(buf.subarray(2, 2 + len), q.id, q.question);
        finish(p !== null ? { kind: 'answer', packet: p } : { kind: 'error' });
      });
    });
  }
}

/** Lower-case, no trailing dot. */
export function normalizeName(name: string): string {
  const n = name.toLowerCase();
  return n.endsWith('.') && n.length > 1 ? n.slice(0, -1) : n;
}

function sameAddress(a: string, b: string): boolean {
  if (a === b) return true;
  // a udp6 socket may report an IPv4 source as IPv4-mapped
  return a.startsWith('::ffff:') && a.slice(7) === b;
}

/** The decoded packet when it answers exactly our question with our id; null otherwise (and for
 *  bytes that do not decode: a forged or broken datagram is ignored, never thrown). */
export function decodeResponse(msg: Buffer, id: number, question: Question): DecodedPacket | null {
  let p: DecodedPacket;
  try {
    p = dnsPacket.decode(msg);
  } catch {
    return null;
  }
  if (p.id !== id || p.type !== 'response') return null;
  const qs = p.questions ?? [];
  // RFC 5452 4.1: the question must be ours (name compared case-insensitively, RFC 4343)
  if (qs.length !== 1) return null;
  const q0 = qs[0]!;
  if (q0.type !== question.type || (q0.class ?? 'IN') !== 'IN' || normalizeName(q0.name) !== question.name) return null;
  return p;
}

/** RCODE and records of a matching answer -> DnsAnswer. */
export function classify(p: DecodedPacket, qname: string, type: DnsQueryType): DnsAnswer {
  const rcode = (p as DecodedPacket & { rcode?: string }).rcode ?? 'NOERROR';
  if (rcode === 'SERVFAIL') return { result: 'servfail', records: [] };
  if (rcode !== 'NOERROR' && rcode !== 'NXDOMAIN') return { result: 'refused', records: [] };
  // aliases of the asked name that this answer itself establishes (RFC 1034 3.6.2)
  const owners = new Set([qname]);
  let minTtl = Number.POSITIVE_INFINITY;
  const answers = p.answers ?? [];
  for (let i = 0, grew = true; grew && i < MAX_ALIASES; i++) {
    grew = false;
    for (const a of answers) {
      if (a.type === 'CNAME' && owners.has(normalizeName(a.name)) && typeof a.data === 'string') {
        const t = normalizeName(a.data);
        if (!owners.has(t)) { owners.add(t); grew = true; minTtl = Math.min(minTtl, a.ttl ?? 0); }
      }
    }
  }
  const records: DnsRecord[] = [];
  let recTtl = Number.POSITIVE_INFINITY;
  for (const a of answers) {
    if (a.type !== type || !owners.has(normalizeName(a.name))) continue;
    const r = toRecord(a);
    if (r === null) continue;
    records.push(r);
    recTtl = Math.min(recTtl, r.ttl);
  }
  if (records.length > 0) return { result: 'ok', records, ttl: Math.min(minTtl, recTtl) };
  // RFC 2308 5: a negative answer is cached for min(SOA TTL, SOA MINIMUM); without an SOA it
  // carries no TTL and the cache applies its own bound
  let negTtl: number | undefined;
  for (const a of p.authorities ?? []) {
    if (a.type !== 'SOA') continue;
    const min = a.data.minimum ?? 0;
    negTtl = Math.min(a.ttl ?? 0, min);
    break;
  }
  const result: DnsResult = rcode === 'NXDOMAIN' ? 'nxdomain' : 'nodata';
  return negTtl !== undefined ? { result, records: [], ttl: negTtl } : { result, records: [] };
}

function toRecord(a: Answer): DnsRecord | null {
  const ttl = typeof (a as { ttl?: number }).ttl === 'number' ? (a as { ttl: number }).ttl : 0;
  switch (a.type) {
    case 'A':
      return typeof a.data === 'string' && net.isIPv4(a.data) ? { type: 'A', ttl, address: a.data } : null;
    case 'AAAA':
      return typeof a.data === 'string' && net.isIPv6(a.data) ? { type: 'AAAA', ttl, address: a.data.toLowerCase() } : null;
    case 'SRV': {
      const d = a.data;
      return { type: 'SRV', ttl, priority: d.priority ?? 0, weight: d.weight ?? 0, port: d.port, target: normalizeName(d.target) };
    }
    case 'NAPTR': {
      const d = a.data;
      return {
        type: 'NAPTR', ttl, order: d.order, preference: d.preference, flags: d.flags.toLowerCase(),
        services: d.services.toLowerCase(), regexp: d.regexp, replacement: normalizeName(d.replacement),
      };
    }
    default:
      return null;
  }
}
