// A bare UDP SIP peer for tests: sends text, collects what it receives, waits for a match.
import dgram from 'node:dgram';

export interface Received { text: string; port: number; address: string }

export class UdpPeer {
  readonly inbox: Received[] = [];
  private waiters: Array<{ pred: (r: Received) => boolean; resolve: (r: Received) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }> = [];
  private constructor(readonly sock: dgram.Socket, readonly address: string, readonly port: number) {
    sock.on('message', (b, rinfo) => {
      const r = { text: b.toString('latin1'), port: rinfo.port, address: rinfo.address };
      this.inbox.push(r);
      for (const w of [...this.waiters]) {
        if (w.pred(r)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          clearTimeout(w.timer);
          w.resolve(r);
        }
      }
    });
  }

  static async bind(address = '127.0.0.1'): Promise<UdpPeer> {
    const sock = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
    await new Promise<void>((res, rej) => { sock.once('error', rej); sock.bind(0, address, () => res()); });
    // the peer reads on the test's event loop, which also runs an in-process edge, while the
    // edge's UDP I/O thread sends at full speed: with the default buffer (208 KiB) a burst of a
    // few hundred messages overflows it before the loop gets to read, and the test loses them
    try { sock.setRecvBufferSize(4 * 1024 * 1024); } catch { /* capped by net.core.rmem_max */ }
    return new UdpPeer(sock, address, sock.address().port);
  }

  send(text: string, port: number, address = '127.0.0.1'): Promise<void> {
    return new Promise((res, rej) => this.sock.send(Buffer.from(text, 'latin1'), port, address, (e) => (e ? rej(e) : res())));
  }

  /** resolves with the first message (already received or arriving) matching pred */
  wait(pred: (r: Received) => boolean, ms = 2000, what = 'message'): Promise<Received> {
    const have = this.inbox.find(pred);
    if (have) { this.inbox.splice(this.inbox.indexOf(have), 1); return Promise.resolve(have); }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.timer !== timer);
        reject(new Error(`timeout waiting for ${what}; inbox: ${this.inbox.map((r) => r.text.split('\r\n')[0]).join(' | ')}`));
      }, ms);
      this.waiters.push({ pred: (r) => { const ok = pred(r); if (ok) this.inbox.splice(this.inbox.indexOf(r), 1); return ok; }, resolve, reject, timer });
    });
  }

  /** wait for a message whose first line starts with `prefix` */
  waitFirstLine(prefix: string, ms = 2000): Promise<Received> {
    return this.wait((r) => r.text.startsWith(prefix), ms, prefix);
  }

  /** true when nothing matching arrives within ms */
  async silent(pred: (r: Received) => boolean = () => true, ms = 150): Promise<boolean> {
    try { await this.wait(pred, ms); return false; } catch { return true; }
  }

  close(): void { this.sock.close(); }
}

/** value of the first header `name` (long or compact form) in a message text */
export function header(text: string, name: string): string | undefined {
  const re = new RegExp(`^${name}[ \\t]*:[ \\t]*(.*)$`, 'im');
  return re.exec(text.split('\r\n\r\n')[0]!)?.[1]?.trim();
}

export function headers(text: string, name: string): string[] {
  const re = new RegExp(`^${name}[ \\t]*:[ \\t]*(.*)$`, 'gim');
  return [...text.split('\r\n\r\n')[0]!.matchAll(re)].map((m) => m[1]!.trim());
}

export interface MsgOpts {
  method?: string;
  ruri?: string;
  branch?: string;
  callId?: string;
  fromTag?: string;
  toTag?: string;
  cseq?: number;
  cseqMethod?: string;
  via?: string;
  extra?: string[];
  body?: string;
  from?: string;
  to?: string;
  maxForwards?: number | null;
  /** the Contact header value; default <sip:alice@ADDRESS:PORT> */
  contact?: string;
}

let seq = 0;
export function uniq(p: string): string { return `${p}${process.pid}x${++seq}x${Math.random().toString(36).slice(2, 8)}`; }

/** A request as a phone would send it from peer `p` */
export function request(p: { address: string; port: number }, o: MsgOpts = {}): string {
  const method = o.method ?? 'INVITE';
  const body = o.body ?? '';
  const lines = [
    `${method} ${o.ruri ?? 'sip:1000@example.com'} SIP/2.0`,
    `Via: ${o.via ?? `SIP/2.0/UDP ${p.address}:${p.port};branch=${o.branch ?? uniq('z9hG4bK')};rport`}`,
    ...(o.maxForwards === null ? [] : [`Max-Forwards: ${o.maxForwards ?? 70}`]),
    `From: ${o.from ?? '"Alice" <sip:alice@example.com>'};tag=${o.fromTag ?? 'ft1'}`,
    `To: ${o.to ?? '<sip:1000@example.com>'}${o.toTag ? `;tag=${o.toTag}` : ''}`,
    `Call-ID: ${o.callId ?? uniq('cid')}`,
    `CSeq: ${o.cseq ?? 1} ${o.cseqMethod ?? method}`,
    `Contact: ${o.contact ?? `<sip:alice@${p.address}:${p.port}>`}`,
    ...(o.extra ?? []),
    `Content-Length: ${Buffer.byteLength(body)}`,
    '',
    body,
  ];
  return lines.join('\r\n');
}

/** A response to the request text `req` (all Vias copied), as a UAS would send it */
export function response(req: string, status: number, phrase: string, o: { toTag?: string; extra?: string[] } = {}): string {
  const head = req.split('\r\n\r\n')[0]!;
  const vias = head.split('\r\n').filter((l) => /^(via|v)\s*:/i.test(l));
  const to = header(req, 'To')!;
  return [
    `SIP/2.0 ${status} ${phrase}`,
    ...vias,
    `From: ${header(req, 'From')}`,
    `To: ${to}${o.toTag && !/;tag=/.test(to) ? `;tag=${o.toTag}` : ''}`,
    `Call-ID: ${header(req, 'Call-ID')}`,
    `CSeq: ${header(req, 'CSeq')}`,
    ...(o.extra ?? []),
    'Content-Length: 0',
    '', '',
  ].join('\r\n');
}
