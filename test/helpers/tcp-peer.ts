// A bare TCP SIP client for tests: one connection, Content-Length framing, an inbox to wait on.
import net from 'node:net';
import tls from 'node:tls';
import type { Received } from './udp-peer';

export class TcpPeer {
  readonly inbox: Received[] = [];
  private buf = Buffer.alloc(0);
  private waiters: Array<{ pred: (r: Received) => boolean; resolve: (r: Received) => void }> = [];
  closed = false;
  private constructor(readonly sock: net.Socket) {
    sock.on('data', (d) => { this.buf = Buffer.concat([this.buf, d]); this.drain(); });
    sock.on('close', () => { this.closed = true; });
    sock.on('error', () => { /* closed by the server: tests look at `closed` */ });
  }

  get address(): string { return this.sock.localAddress!; }
  get port(): number { return this.sock.localPort!; }

  static connect(port: number, host = '127.0.0.1', localAddress?: string): Promise<TcpPeer> {
    return new Promise((res, rej) => {
      const s = net.connect({ port, host, localAddress }, () => res(new TcpPeer(s)));
      s.once('error', rej);
    });
  }

  /** the same client over TLS (SIP over TLS, RFC 3261 26.2); resolves after the handshake */
  static connectTls(port: number, opts: tls.ConnectionOptions = {}, host = '127.0.0.1'): Promise<TcpPeer> {
    return new Promise((res, rej) => {
      const s = tls.connect({ port, host, rejectUnauthorized: false, ...opts }, () => res(new TcpPeer(s)));
      s.once('error', rej);
    });
  }

  private drain(): void {
    for (;;) {
      while (this.buf.length >= 2 && this.buf[0] === 13 && this.buf[1] === 10) this.buf = this.buf.subarray(2);
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = this.buf.subarray(0, end).toString('latin1');
      const cl = Number(/^(?:content-length|l)\s*:\s*(\d+)/im.exec(head)?.[1] ?? 0);
      if (this.buf.length < end + 4 + cl) return;
      const text = this.buf.subarray(0, end + 4 + cl).toString('latin1');
      this.buf = this.buf.subarray(end + 4 + cl);
      const r: Received = { text, port: this.sock.remotePort!, address: this.sock.remoteAddress! };
      const w = this.waiters.find((x) => x.pred(r));
      if (w) { this.waiters.splice(this.waiters.indexOf(w), 1); w.resolve(r); } else this.inbox.push(r);
    }
  }

  send(text: string | Buffer): void { this.sock.write(typeof text === 'string' ? Buffer.from(text, 'latin1') : text); }

  wait(pred: (r: Received) => boolean, ms = 2000, what = 'message'): Promise<Received> {
    const have = this.inbox.find(pred);
    if (have) { this.inbox.splice(this.inbox.indexOf(have), 1); return Promise.resolve(have); }
    return new Promise((resolve, reject) => {
      const w = { pred, resolve: (r: Received) => { clearTimeout(t); resolve(r); } };
      const t = setTimeout(() => { this.waiters.splice(this.waiters.indexOf(w), 1); reject(new Error(`timeout waiting for ${what}`)); }, ms);
      this.waiters.push(w);
    });
  }

  waitFirstLine(prefix: string, ms = 2000): Promise<Received> { return this.wait((r) => r.text.startsWith(prefix), ms, prefix); }

  close(): void { this.sock.destroy(); }
}
