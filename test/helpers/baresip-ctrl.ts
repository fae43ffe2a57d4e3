// Process harness for a real baresip (Debian baresip-core 1.0, libre 1.1) as a headless phone:
// its own config directory (-f), one account, SIP on a loopback port, no audio, and the ctrl_tcp
// module (JSON in netstrings, https://github.com/baresip/baresip/blob/v1.0.0/modules/ctrl_tcp)
// through which the test reads the phone's own events (REGISTER_OK, REGISTER_FAIL ...).
//
// Ports: baresip 1.0 listens for SIP on UDP and TCP at sip_listen and for SIP/TLS on the next
// port, so the SIP port is chosen with that next port free too, and the control port elsewhere.
// Every run is bounded: stop() sends SIGTERM, then SIGKILL; the child set kills leftovers on exit.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { childSet } from './children';
import { freePort } from './ports';

export const BARESIP_BIN = process.env.BARESIP_BIN ?? '/usr/bin/baresip';
export const BARESIP_MODULES = process.env.BARESIP_MODULES ?? '/usr/lib/baresip/modules';

const children = childSet();

/** is a baresip with the ctrl_tcp and account modules runnable here? */
export function baresipAvailable(): boolean {
  if (!fs.existsSync(BARESIP_BIN)) return false;
  if (!fs.existsSync(path.join(BARESIP_MODULES, 'ctrl_tcp.so')) || !fs.existsSync(path.join(BARESIP_MODULES, 'account.so'))) return false;
  const r = spawnSync(BARESIP_BIN, ['-h'], { encoding: 'utf8', timeout: 5_000 });
  return /baresip v\d/.test(`${r.stdout}${r.stderr}`);
}

export interface BaresipEvent {
  readonly type: string;
  readonly class?: string;
  readonly accountaor?: string;
  readonly param?: string;
  readonly [k: string]: unknown;
}

export interface Baresip {
  readonly sipPort: number;
  /** every event the phone reported so far, oldest first */
  events(): BaresipEvent[];
  /** the first event (already seen or still to come) that `pred` accepts, within `ms` */
  waitFor(pred: (e: BaresipEvent) => boolean, ms: number): Promise<BaresipEvent | undefined>;
  /** baresip's console output (its SIP trace with -s), bounded */
  output(): string;
  stop(): Promise<void>;
}

/** a TCP port free on 127.0.0.1 whose next port is free too (baresip's SIP/TLS listener) */
async function sipPortPair(): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const p = await freePort('both');
    if (p >= 65535) continue;
    const nextFree = await new Promise<boolean>((resolve) => {
      const srv = net.createServer();
      srv.once('error', () => resolve(false));
      srv.listen({ port: p + 1, host: '127.0.0.1', exclusive: true }, () => srv.close(() => resolve(true)));
    });
    if (nextFree) return p;
  }
  throw new Error('no free port pair for baresip');
}

/**
 * Start baresip with one account. `account` is an accounts-file line, e.g.
 * `<sip:alice@example.com>;auth_pass=secret;outbound="sip:127.0.0.1:5060;transport=udp";regint=60`.
 * Resolves once the control socket is connected and the account created (`uanew`, menu module):
 * it registers at once.
 */
export async function startBaresip(o: { account: string; readyMs?: number }): Promise<Baresip> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'baresip-'));
  const sipPort = await sipPortPair();
  let ctrlPort = await freePort('tcp');
  while (ctrlPort === sipPort + 1 || ctrlPort === sipPort) ctrlPort = await freePort('tcp');
  fs.writeFileSync(path.join(dir, 'config'), [
    'poll_method epoll',
    `sip_listen 127.0.0.1:${sipPort}`,
    `module_path ${BARESIP_MODULES}`,
    'module_tmp account.so',
    'module_app menu.so',
    'module_app ctrl_tcp.so',
    `ctrl_tcp_listen 127.0.0.1:${ctrlPort}`,
    '',
  ].join('\n'));
  // no account at start: it is created over the control socket once that is connected, so the
  // events of its first registration are not lost (ctrl_tcp only tells connected clients)
  fs.writeFileSync(path.join(dir, 'accounts'), '');
  // -s: SIP trace on the console, for assertion messages
  const child = spawn(BARESIP_BIN, ['-f', dir, '-s'], { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
  children.track(child);
  let out = '';
  const keep = (b: Buffer): void => { out += b.toString('latin1'); if (out.length > 256 * 1024) out = out.slice(-128 * 1024); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  const events: BaresipEvent[] = [];
  const waiters = new Set<() => void>();
  const notify = (): void => { for (const w of [...waiters]) w(); };

  // ctrl_tcp accepts once baresip has loaded its modules: retry the connect for a while
  const deadline = Date.now() + (o.readyMs ?? 10_000);
  let sock: net.Socket | undefined;
  while (sock === undefined && Date.now() < deadline && child.exitCode === null) {
    sock = await new Promise<net.Socket | undefined>((resolve) => {
      const s = net.connect({ port: ctrlPort, host: '127.0.0.1' });
      s.once('connect', () => resolve(s));
      s.once('error', () => { s.destroy(); resolve(undefined); });
    });
    if (sock === undefined) await new Promise((r) => setTimeout(r, 50));
  }
  if (sock === undefined) {
    child.kill('SIGKILL');
    await exited;
    fs.rmSync(dir, { recursive: true, force: true });
    throw new Error(`baresip did not open its control socket within ${o.readyMs ?? 10_000} ms\n${out.slice(-4000)}`);
  }
  // netstrings: "<length>:<json>,"
  let buf = Buffer.alloc(0);
  sock.on('data', (b: Buffer) => {
    buf = Buffer.concat([buf, b]);
    for (;;) {
      const colon = buf.indexOf(0x3a);
      if (colon < 0 || colon > 10) break;
      const len = Number(buf.subarray(0, colon).toString('latin1'));
      if (!Number.isInteger(len) || buf.length < colon + 1 + len + 1) break;
      const body = buf.subarray(colon + 1, colon + 1 + len).toString('utf8');
      buf = buf.subarray(colon + 1 + len + 1);
      try {
        const m = JSON.parse(body) as Record<string, unknown>;
        if (m.event === true && typeof m.type === 'string' && events.length < 10_000) { events.push(m as BaresipEvent); notify(); }
      } catch { /* not JSON: ignore */ }
    }
  });
  sock.on('error', () => undefined);
  const cmd = JSON.stringify({ command: 'uanew', params: o.account, token: 'uanew' });
  sock.write(`${Buffer.byteLength(cmd)}:${cmd},`);

  return {
    sipPort,
    events: () => events.slice(),
    output: () => out,
    waitFor(pred, ms) {
      const seen = events.find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve) => {
        const t = setTimeout(() => { waiters.delete(check); resolve(undefined); }, ms);
        const check = (): void => {
          const e = events.find(pred);
          if (e) { clearTimeout(t); waiters.delete(check); resolve(e); }
        };
        waiters.add(check);
      });
    },
    async stop() {
      sock?.destroy();
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 3_000);
        await exited;
        clearTimeout(t);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
