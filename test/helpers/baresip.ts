// Real phones: baresip 1.0 (Debian `baresip-core`) run headless, one process per phone, each with
// its own config directory (-f DIR), a random SIP port (sip_listen ADDR:0: UDP, TCP and TLS each
// get an ephemeral port, so phones never race for ports), no sound device (the `aubridge` module
// connects the phone's player to its own source, so audio starts without ALSA; media is not what
// these tests look at) and the edge as outbound proxy.
//
// Driven through baresip's ctrl_tcp module: JSON commands in netstrings
//   {"command":"dial","params":"sip:bob@pbx.test","token":"t1"}
// answered by {"response":true,"ok":true,"data":"...","token":"t1"}, and events pushed on the same
// connection: {"event":true,"class":"call","type":"CALL_CLOSED","param":"Connection reset by peer",
// "direction":"outgoing","peeruri":"sip:bob@pbx.test","id":"<call id>"}.
// Command names are those of baresip 1.0.0's menu and contact modules (modules/menu/menu.c,
// modules/contact/contact.c): uanew, accept, hangup, hold, resume, transfer, dial, message,
// contact_next/contact_prev. baresip 1.0 has no command that sends INFO (it only answers INFO);
// MESSAGE goes to the "current contact" (contact module), out of dialog.
//
// The account is not in the accounts file: register() creates it with `uanew`, so the
// REGISTERING / REGISTER_OK / REGISTER_FAIL events reach the harness (a REGISTER sent at start-up
// would happen before the control connection exists). A received MESSAGE is no event in baresip
// 1.0: the menu module prints `sip:alice@pbx.test: "text"` through the stdio UI (on stderr); the
// harness reads it as a MESSAGE_RECEIVED event. A MESSAGE the peer refused is printed on stderr as
// " 404 Not Found" by the contact module: a MESSAGE_FAILED event.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { childSet } from './children';
import { freePort } from './ports';

export const BARESIP_BIN = process.env.BARESIP_BIN ?? '/usr/bin/baresip';
export const BARESIP_MODULES = process.env.BARESIP_MODULES ?? '/usr/lib/baresip/modules';

let availability: boolean | undefined;
/** Is baresip runnable here, with the modules these phones load? (cached) */
export function baresipAvailable(): boolean {
  if (availability === undefined) {
    const r = spawnSync(BARESIP_BIN, ['-h'], { encoding: 'utf8', timeout: 5_000 });
    availability = r.error === undefined && /baresip v?\d/.test(`${r.stdout}${r.stderr}`)
      && MODULES.every((m) => fs.existsSync(path.join(BARESIP_MODULES, m)));
  }
  return availability;
}

const MODULES = ['stdio.so', 'g711.so', 'aubridge.so', 'uuid.so', 'account.so', 'contact.so', 'menu.so', 'ctrl_tcp.so'];

export interface PhoneOptions {
  /** label in messages, e.g. 'A' */
  readonly name: string;
  readonly user: string;
  readonly domain: string;
  /** digest password (auth_pass); omit when nobody challenges */
  readonly password?: string;
  readonly transport: 'udp' | 'tcp' | 'tls';
  /** TLS: CA bundle the phone is given (baresip's sip_cafile) */
  readonly cafile?: string;
  /** the edge: outbound proxy for everything the phone sends (RFC 3261 8.1.2) */
  readonly proxy: { readonly host: string; readonly port: number };
  /** loopback address the phone binds to; default 127.0.0.1 */
  readonly address?: string;
  /** registration interval asked for, seconds; default 600 */
  readonly regint?: number;
  /** refresh after this percentage of the granted interval (baresip: 5..95); default 90 */
  readonly rwait?: number;
  /** URIs the phone can send MESSAGEs to (the contact module's list) */
  readonly contacts?: readonly string[];
  /** readiness bound; default 10 s */
  readonly readyTimeoutMs?: number;
  /** print every SIP message on stdout (baresip -s), kept in the log tail; default $BARESIP_TRACE=1 */
  readonly trace?: boolean;
}

export interface PhoneEvent {
  readonly seq: number;
  /** baresip's event type (REGISTER_OK, CALL_INCOMING, CALL_RINGING, CALL_ESTABLISHED,
   *  CALL_CLOSED, CALL_REMOTE_SDP, TRANSFER, TRANSFER_FAILED ...) or the harness's own
   *  MESSAGE_RECEIVED / MESSAGE_FAILED */
  readonly type: string;
  readonly param?: string;
  readonly direction?: string;
  readonly peeruri?: string;
  /** baresip's call id (the SIP Call-ID) */
  readonly id?: string;
  readonly text?: string;
  readonly at: number;
}

export interface WaitOptions {
  /** only events with seq >= since (see cursor()); default 0 */
  readonly since?: number;
  readonly timeoutMs?: number;
  readonly where?: (e: PhoneEvent) => boolean;
}

export interface Phone {
  readonly name: string;
  readonly aor: string;
  readonly pid: number;
  /** seq of the next event: pass it as `since` to wait for something that happens after now */
  cursor(): number;
  events(since?: number): PhoneEvent[];
  /** the first event of `type` (or one of the types; matching `where`) at or after `since`;
   *  rejects after timeoutMs (default 5 s) with the events seen and the phone's log tail */
  waitEvent(type: string | readonly string[], o?: WaitOptions): Promise<PhoneEvent>;
  /** create the account (uanew): REGISTER through the edge; resolves to REGISTER_OK or REGISTER_FAIL */
  register(timeoutMs?: number): Promise<PhoneEvent>;
  dial(uri: string): Promise<void>;
  answer(): Promise<void>;
  hangup(): Promise<void>;
  hold(): Promise<void>;
  resume(): Promise<void>;
  /** blind transfer of the current call: an in-dialog REFER (RFC 3515) */
  transfer(uri: string): Promise<void>;
  /** an out-of-dialog MESSAGE (RFC 3428) to `uri`, which must be one of `contacts` */
  message(uri: string, text: string): Promise<void>;
  /** any ctrl_tcp command; resolves to its data, rejects when baresip says ok=false */
  command(cmd: string, params?: string): Promise<string>;
  /** the last n (default 60; Infinity: every one kept) of its stdout and stderr lines (the SIP
   *  trace with `trace`); at most the last 2,500 to 3,000 lines are kept */
  logTail(n?: number): string;
  /** quit (unregisters), SIGKILL after graceMs */
  stop(graceMs?: number): Promise<void>;
}

const SAFE = /^[A-Za-z0-9._-]+$/;
const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g;
const children = childSet();
/** config directories of running phones, removed at exit even when a test did not stop its phone */
const dirs = new Set<string>();
let dirsHooked = false;
function trackDir(d: string): void {
  dirs.add(d);
  if (dirsHooked) return;
  dirsHooked = true;
  process.once('exit', () => { for (const x of dirs) fs.rmSync(x, { recursive: true, force: true }); });
}

function accountLine(o: PhoneOptions): string {
  for (const v of [o.user, o.domain, o.proxy.host, ...(o.password === undefined ? [] : [o.password])]) {
    if (!SAFE.test(v)) throw new Error(`phone ${o.name}: ${JSON.stringify(v)} is not [A-Za-z0-9._-]+`);
  }
  const tp = o.transport === 'udp' ? '' : `;transport=${o.transport}`;
  const params = [
    ...(o.password === undefined ? [] : [`auth_pass=${o.password}`]),
    `outbound="sip:${o.proxy.host}:${o.proxy.port}${tp}"`,
    `regint=${o.regint ?? 600}`,
    ...(o.rwait === undefined ? [] : [`rwait=${o.rwait}`]),
    'answermode=manual',
  ];
  return `<sip:${o.user}@${o.domain}${tp}>;${params.join(';')}`;
}

function configText(o: PhoneOptions, ctrlPort: number): string {
  const addr = o.address ?? '127.0.0.1';
  return [
    'poll_method epoll',
    // port 0: every transport on an ephemeral port (a fixed port P would also take P+1 for TLS)
    `sip_listen ${addr}:0`,
    // SDP and RTP on loopback too (baresip would otherwise pick the first non-loopback interface)
    `net_interface ${addr}`,
    ...(o.cafile !== undefined ? [`sip_cafile ${o.cafile}`] : []),
    'call_local_timeout 120',
    'call_max_calls 4',
    `audio_player aubridge,${o.name}`,
    `audio_source aubridge,${o.name}`,
    `audio_alert aubridge,${o.name}-alert`,
    'statmode_default off',
    `module_path ${BARESIP_MODULES}`,
    'module stdio.so',
    'module g711.so',
    'module aubridge.so',
    'module_tmp uuid.so',
    'module_tmp account.so',
    'module_app contact.so',
    'module_app menu.so',
    'module_app ctrl_tcp.so',
    `ctrl_tcp_listen 127.0.0.1:${ctrlPort}`,
    '',
  ].join('\n');
}

/** Parse netstrings ("len:payload,") from a byte stream; garbage is reported and dropped. */
class NetstringReader {
  private buf: Buffer = Buffer.alloc(0);
  constructor(private readonly onPayload: (s: string) => void, private readonly onGarbage: (what: string) => void) {}
  push(d: Buffer): void {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    for (;;) {
      const colon = this.buf.indexOf(0x3a);
      if (colon < 0 && this.buf.length <= 10) return;
      const n = colon < 0 || colon > 10 ? NaN : Number(this.buf.subarray(0, colon).toString('latin1'));
      if (!Number.isInteger(n) || n < 0) {
        this.onGarbage(this.buf.subarray(0, 40).toString('latin1'));
        this.buf = Buffer.alloc(0);
        return;
      }
      if (this.buf.length < colon + 1 + n + 1) return;
      const payload = this.buf.subarray(colon + 1, colon + 1 + n).toString('utf8');
      this.buf = this.buf.subarray(colon + 2 + n);
      this.onPayload(payload);
    }
  }
}

function connectCtrl(port: number, deadline: number, alive: () => boolean): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const attempt = (): void => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => { s.removeAllListeners('error'); resolve(s); });
      s.once('error', () => {
        s.destroy();
        if (Date.now() > deadline || !alive()) reject(new Error(`ctrl_tcp on 127.0.0.1:${port} not reachable`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

export async function startPhone(o: PhoneOptions, attempt = 1): Promise<Phone> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `sipedge-phone-${o.name}-`));
  trackDir(dir);
  const ctrlPort = await freePort('tcp');
  fs.writeFileSync(path.join(dir, 'config'), configText(o, ctrlPort));
  fs.writeFileSync(path.join(dir, 'accounts'), '# created at run time with uanew\n');
  fs.writeFileSync(path.join(dir, 'contacts'), (o.contacts ?? []).map((c) => `<${c}>\n`).join('') || '# none\n');
  const account = accountLine(o);
  const args = ['-f', dir];
  if (o.trace ?? process.env.BARESIP_TRACE === '1') args.push('-s');
  // stdin stays an open pipe that is never written: the stdio UI (which prints received
  // MESSAGEs) must not see end-of-file
  const child: ChildProcess = spawn(BARESIP_BIN, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  children.track(child);
  const pid = child.pid ?? -1;
  const lines: string[] = [];
  const events: PhoneEvent[] = [];
  const waiters = new Set<() => void>();
  const push = (e: Omit<PhoneEvent, 'seq' | 'at'>): void => {
    if (events.length >= 20_000) return;
    events.push({ ...e, seq: events.length, at: Date.now() });
    for (const w of [...waiters]) w();
  };
  const addLine = (l: string): void => {
    lines.push(l);
    if (lines.length > 3_000) lines.splice(0, 500);
  };
  const lineReader = (onLine: (l: string) => void): ((d: string) => void) => {
    let buf = '';
    return (d: string) => {
      buf += d;
      const parts = buf.split(/\r\n|\r|\n/);
      buf = parts.pop() ?? '';
      for (const p of parts) {
        const l = p.replace(ANSI, '');
        addLine(l);
        onLine(l);
      }
    };
  };
  const onLine = (l: string): void => {
    // menu.c message_handler, printed by the stdio UI (on stderr): "\r%r: \"%b\"\n", the peer's
    // URI and the text in quotes
    const m = /^(sips?:[^\s"]+): "(.*)"$/.exec(l);
    if (m !== null) push({ type: 'MESSAGE_RECEIVED', peeruri: m[1]!, text: m[2]! });
    // contact.c send_resp_handler (stderr): " %u %r" for a final response >= 300 to our MESSAGE
    const f = /^ (\d{3}) (.+)$/.exec(l);
    if (f !== null) push({ type: 'MESSAGE_FAILED', param: `${f[1]} ${f[2]}` });
  };
  child.stdout?.setEncoding('utf8').on('data', lineReader(onLine));
  child.stderr?.setEncoding('utf8').on('data', lineReader(onLine));
  const exited = new Promise<void>((r) => {
    child.once('exit', () => r());
    child.once('error', (e) => { addLine(`spawn error: ${e.message}`); r(); });
  });
  const alive = (): boolean => child.exitCode === null && child.signalCode === null && pid > 0;
  const kill = async (graceMs: number): Promise<void> => {
    if (alive()) {
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      child.kill('SIGTERM');
      await exited;
      clearTimeout(t);
    }
    dirs.delete(dir);
    fs.rmSync(dir, { recursive: true, force: true });
  };

  let sock: net.Socket;
  try {
    sock = await connectCtrl(ctrlPort, Date.now() + (o.readyTimeoutMs ?? 10_000), alive);
  } catch (e) {
    if (!alive()) await exited;
    const tail = lines.slice(-30).join('\n');
    await kill(500);
    // the control port was taken between freePort() and baresip's bind: another port
    if (attempt < 3 && /Address already in use|failed to listen/i.test(tail)) return startPhone(o, attempt + 1);
    throw new Error(`phone ${o.name}: ${(e as Error).message}\n  cmd: ${BARESIP_BIN} ${args.join(' ')}\n${tail}`);
  }

  const pending = new Map<string, { resolve: (r: { ok: boolean; data: string }) => void }>();
  let tokens = 0;
  const reader = new NetstringReader((payload) => {
    let j: Record<string, unknown>;
    try {
      j = JSON.parse(payload) as Record<string, unknown>;
    } catch {
      addLine(`ctrl_tcp: unparsable ${payload.slice(0, 200)}`);
      return;
    }
    if (j.response === true && typeof j.token === 'string') {
      const p = pending.get(j.token);
      pending.delete(j.token);
      p?.resolve({ ok: j.ok === true, data: typeof j.data === 'string' ? j.data.replace(ANSI, '') : '' });
    } else if (j.event === true && typeof j.type === 'string') {
      const str = (k: string): string | undefined => (typeof j[k] === 'string' ? (j[k] as string) : undefined);
      const e: Omit<PhoneEvent, 'seq' | 'at'> = { type: j.type };
      const fields = { param: str('param'), direction: str('direction'), peeruri: str('peeruri'), id: str('id') };
      push({ ...e, ...Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined)) });
    }
  }, (what) => addLine(`ctrl_tcp: not a netstring, dropped: ${JSON.stringify(what)}`));
  sock.on('data', (d: Buffer) => reader.push(d));
  sock.on('error', (e) => addLine(`ctrl_tcp socket error: ${e.message}`));
  sock.on('close', () => {
    for (const p of pending.values()) p.resolve({ ok: false, data: 'ctrl_tcp connection closed' });
    pending.clear();
  });

  const command = (cmd: string, params?: string, timeoutMs = 5_000): Promise<string> => {
    const token = `t${++tokens}`;
    const body = Buffer.from(JSON.stringify(params === undefined ? { command: cmd, token } : { command: cmd, params, token }), 'utf8');
    return new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => {
        pending.delete(token);
        reject(new Error(`phone ${o.name}: no answer to "${cmd}" within ${timeoutMs} ms\n${lines.slice(-20).join('\n')}`));
      }, timeoutMs);
      pending.set(token, {
        resolve: (r) => {
          clearTimeout(t);
          if (r.ok) resolve(r.data);
          else reject(new Error(`phone ${o.name}: "${cmd}${params === undefined ? '' : ` ${params}`}" failed: ${r.data}`));
        },
      });
      sock.write(Buffer.concat([Buffer.from(`${body.length}:`), body, Buffer.from(',')]));
    });
  };

  const logTail = (n = 60): string => lines.slice(-n).join('\n');
  const describe = (since: number): string =>
    events.filter((e) => e.seq >= since).map((e) => `${e.type}${e.param ? ` "${e.param}"` : ''}${e.direction ? ` ${e.direction}` : ''}${e.peeruri ? ` ${e.peeruri}` : ''}${e.text ? ` "${e.text}"` : ''}`).join('; ') || '(none)';

  const waitEvent = (type: string | readonly string[], w: WaitOptions = {}): Promise<PhoneEvent> => {
    const since = w.since ?? 0;
    const timeoutMs = w.timeoutMs ?? 5_000;
    const types: readonly string[] = typeof type === 'string' ? [type] : type;
    const find = (): PhoneEvent | undefined => events.find((e) => e.seq >= since && types.includes(e.type) && (w.where === undefined || w.where(e)));
    const now = find();
    if (now !== undefined) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const e = find();
        if (e === undefined) return;
        waiters.delete(check);
        clearTimeout(t);
        resolve(e);
      };
      const t = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`phone ${o.name} (${o.user}, ${o.transport}): no ${types.join(' or ')} within ${timeoutMs} ms; events since #${since}: ${describe(since)}\n--- phone log ---\n${logTail(25)}`));
      }, timeoutMs);
      waiters.add(check);
    });
  };

  const contacts = o.contacts ?? [];
  return {
    name: o.name,
    aor: `sip:${o.user}@${o.domain}`,
    pid,
    cursor: () => events.length,
    events: (since = 0) => events.filter((e) => e.seq >= since),
    waitEvent,
    async register(timeoutMs = 8_000) {
      const since = events.length;
      await command('uanew', account);
      return waitEvent(['REGISTER_OK', 'REGISTER_FAIL'], { since, timeoutMs });
    },
    async dial(uri) { await command('dial', uri); },
    async answer() { await command('accept'); },
    async hangup() { await command('hangup'); },
    async hold() { await command('hold'); },
    async resume() { await command('resume'); },
    async transfer(uri) { await command('transfer', uri); },
    async message(uri, text) {
      const idx = contacts.indexOf(uri);
      if (idx < 0) throw new Error(`phone ${o.name}: ${uri} is not in its contacts ${JSON.stringify(contacts)}`);
      // the contact module sends to its "current contact": walk to the first one, then to idx
      for (let i = 0; i < contacts.length; i++) await command('contact_prev');
      let cur = '';
      for (let i = 0; i < idx; i++) cur = await command('contact_next');
      if (idx > 0 && !cur.includes(uri)) throw new Error(`phone ${o.name}: current contact is not ${uri}: ${cur}`);
      await command('message', text);
    },
    command: (cmd, params) => command(cmd, params),
    logTail,
    async stop(graceMs = 3_000) {
      sock.destroy();
      await kill(graceMs);
    },
  };
}
