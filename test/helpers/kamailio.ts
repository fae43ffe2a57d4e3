// A real Kamailio (Debian package `kamailio`) as the PBX behind the edge: a registrar that keeps the
// edge's Path (RFC 3327) and a record-routing proxy (RFC 3261 16.6 step 4), optionally challenging
// with digest authentication (auth module, passwords in an htable filled at start: no database).
//
// The configuration is generated here (kamailioConfig), never read from /etc. Each instance gets
// its own runtime directory, pid file and small shared/private memory, listens on one loopback
// address and a random port, runs in the foreground (-DD -E: no daemon, log to stderr) in a process
// group of its own (Kamailio forks worker processes: stop() and the exit hook signal the group, so
// no worker outlives the test).
//
// The script logs one machine-readable line per routing decision, e.g.
//   KAMEV|REGISTER|from=alice|auth=alice|path=<sip:sef1...@127.0.0.1:5070;lr>|expires=60
// which the harness parses into events: what the PBX saw, for assertions such as "Kamailio stored
// the edge's Path" or "Kamailio never saw credentials" (edge mode strips them).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { eachLine } from './children';
import { freePort } from './ports';

export const KAMAILIO_BIN = process.env.KAMAILIO_BIN ?? '/usr/sbin/kamailio';

export interface KamailioOptions {
  /** SIP domain served (Kamailio `alias`); phones register as user@domain */
  readonly domain: string;
  /** loopback address to listen on; default 127.0.0.2 */
  readonly address?: string;
  /** port (UDP, and TCP when listed); default a free one */
  readonly port?: number;
  /** default ['udp'] */
  readonly transports?: readonly ('udp' | 'tcp' | 'tls')[];
  /** TLS (kamailio-tls-modules): the server certificate and key (PEM files); Kamailio listens on
   *  TLS at `tlsPort` (default port + 1), TLS 1.2 minimum, and verifies no client certificate */
  readonly tls?: { readonly cert: string; readonly key: string; readonly tlsPort?: number };
  /** when set, REGISTER is challenged with 401 and every other initial request but ACK/CANCEL
   *  with 407 (RFC 3261 22.2, 22.3), checked against these user -> password pairs */
  readonly users?: Readonly<Record<string, string>>;
  /** registrar min_expires; default 5 (phones in the tests refresh every few seconds) */
  readonly minExpires?: number;
  /** readiness bound (an OPTIONS answered with 200); default 10 s */
  readonly readyTimeoutMs?: number;
  /** product string in Kamailio's Server and User-Agent headers (server_header/user_agent_header,
   *  [A-Za-z0-9._/ -]); default Kamailio's own "kamailio (version ...)" */
  readonly product?: string;
}

/** One KAMEV line: kind (REGISTER, INITIAL, INDIALOG, CHALLENGE, NOTFOUND) and its fields. */
export interface KamEvent {
  readonly kind: string;
  readonly fields: Readonly<Record<string, string>>;
  readonly at: number;
}

export interface Kamailio {
  readonly pid: number;
  readonly address: string;
  readonly port: number;
  /** the TLS port, when started with `tls` */
  readonly tlsPort?: number;
  readonly domain: string;
  /** every KAMEV event so far, oldest first */
  events(): KamEvent[];
  /** the last `n` log lines (bounded) */
  logTail(n?: number): string;
  /** SIGTERM to the process group, SIGKILL after `graceMs`; resolves when the main process exited */
  stop(graceMs?: number): Promise<void>;
}

let availability: boolean | undefined;
/** Is a kamailio binary runnable here? (cached) */
export function kamailioAvailable(): boolean {
  if (availability === undefined) {
    const r = spawnSync(KAMAILIO_BIN, ['-v'], { encoding: 'utf8', timeout: 5_000 });
    availability = r.error === undefined && /kamailio \d/.test(`${r.stdout}${r.stderr}`);
  }
  return availability;
}

/** Is Kamailio's tls module installed (Debian kamailio-tls-modules)? */
export function kamailioTlsAvailable(): boolean {
  if (!kamailioAvailable()) return false;
  const dirs = ['/usr/lib/kamailio/modules', ...(() => {
    try { return fs.readdirSync('/usr/lib').map((d) => path.join('/usr/lib', d, 'kamailio', 'modules')); } catch { return []; }
  })()];
  return dirs.some((d) => fs.existsSync(path.join(d, 'tls.so')));
}

const SAFE = /^[A-Za-z0-9._-]+$/;

/** The kamailio.cfg for `o` (its values are checked: they end up inside script string literals). */
/** the tls module's own file (Kamailio's tls.cfg syntax) */
export function kamailioTlsConfig(t: { cert: string; key: string }): string {
  return [
    '[server:default]',
    'method = TLSv1.2+',
    'verify_certificate = no',
    'require_certificate = no',
    `private_key = ${t.key}`,
    `certificate = ${t.cert}`,
    '',
    '[client:default]',
    'method = TLSv1.2+',
    'verify_certificate = no',
    'require_certificate = no',
    '',
  ].join('\n');
}

export function kamailioConfig(o: KamailioOptions & { address: string; port: number; tlsConfigFile?: string }): string {
  const transports = o.transports ?? ['udp'];
  for (const v of [o.domain, o.address, ...Object.keys(o.users ?? {}), ...Object.values(o.users ?? {})]) {
    if (!SAFE.test(v)) throw new Error(`kamailioConfig: ${JSON.stringify(v)} is not [A-Za-z0-9._-]+`);
  }
  const auth = o.users !== undefined;
  const lines: string[] = [
    '#!KAMAILIO',
    '# generated by test/helpers/kamailio.ts',
    'debug=2',
    'log_stderror=yes',
    'memdbg=5',
    'memlog=5',
    'children=2',
    'auto_aliases=no',
    'dns=no',
    'rev_dns=no',
    'dns_try_ipv6=no',
    ...transports.filter((t) => t !== 'tls').map((t) => `listen=${t}:${o.address}:${o.port}`),
    ...(o.tls !== undefined ? [`listen=tls:${o.address}:${o.tls.tlsPort ?? o.port + 1}`, 'enable_tls=yes'] : []),
    transports.includes('tcp') || o.tls !== undefined ? 'tcp_children=2' : 'disable_tcp=yes',
    `alias="${o.domain}"`,
    ...(o.product !== undefined && /^[A-Za-z0-9._/ -]+$/.test(o.product) ? [`server_header="Server: ${o.product}"`, `user_agent_header="User-Agent: ${o.product}"`] : []),
    '',
    'loadmodule "kex.so"',
    'loadmodule "corex.so"',
    'loadmodule "tm.so"',
    'loadmodule "sl.so"',
    'loadmodule "rr.so"',
    'loadmodule "pv.so"',
    'loadmodule "maxfwd.so"',
    'loadmodule "usrloc.so"',
    'loadmodule "registrar.so"',
    'loadmodule "path.so"',
    'loadmodule "textops.so"',
    'loadmodule "siputils.so"',
    'loadmodule "xlog.so"',
    'loadmodule "sanity.so"',
    ...(auth ? ['loadmodule "htable.so"', 'loadmodule "auth.so"'] : []),
    ...(o.tls !== undefined ? ['loadmodule "tls.so"', `modparam("tls", "config", "${o.tlsConfigFile ?? ''}")`] : []),
    '',
    // bindings live in memory only
    'modparam("usrloc", "db_mode", 0)',
    // route calls to a phone through the Path its REGISTER collected (the edge's flow token)
    'modparam("registrar", "use_path", 1)',
    // path_mode 0: keep the Path even though the phone did not send "Supported: path". The default
    // (2) answers such a REGISTER with 420 Bad Extension, and no phone tested here (baresip) says
    // it supports path: the edge, not the phone, is the one that needs it (RFC 3327 5.3 lets the
    // registrar decide)
    'modparam("registrar", "path_mode", 0)',
    `modparam("registrar", "min_expires", ${o.minExpires ?? 5})`,
  ];
  if (auth) {
    lines.push('modparam("htable", "htable", "users=>size=4;")', '');
    lines.push('event_route[htable:mod-init] {');
    for (const [u, p] of Object.entries(o.users ?? {})) lines.push(`  $sht(users=>${u}) = "${p}";`);
    lines.push('}');
  }
  // the routing script: a registrar and a record-routing proxy
  lines.push(`
request_route {
  if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
  if (!sanity_check()) { exit; }
  # the edge's health probe (OPTIONS to the PBX's own address, no user)
  if (is_method("OPTIONS") && uri==myself && $rU==$null) { sl_send_reply("200", "Keepalive"); exit; }
  if (has_totag()) { route(WITHINDLG); exit; }
  if (is_method("CANCEL")) { if (t_check_trans()) { route(RELAY); } exit; }
  if (is_method("ACK")) { if (t_check_trans()) { t_relay(); } exit; }
  # absorb retransmissions of transactions already being handled
  t_check_trans();
  if (uri!=myself) { sl_send_reply("403", "Not relaying"); exit; }
  if (is_method("REGISTER")) { route(REGISTRAR); exit; }
  route(AUTH);
  xlog("L_NOTICE", "KAMEV|INITIAL|method=$rm|from=$fU|to=$rU|auth=$au|rr=$hdr(Record-Route)\\n");
  if (is_method("INVITE|SUBSCRIBE|REFER")) { record_route(); }
  if (!lookup("location")) {
    xlog("L_NOTICE", "KAMEV|NOTFOUND|method=$rm|to=$rU\\n");
    sl_send_reply("404", "Not Found");
    exit;
  }
  route(RELAY);
}

route[WITHINDLG] {
  if (loose_route()) {
    xlog("L_NOTICE", "KAMEV|INDIALOG|method=$rm|from=$fU|to=$tU|ruri=$ru\\n");
    route(RELAY);
  }
  if (is_method("ACK")) { if (t_check_trans()) { t_relay(); } exit; }
  xlog("L_NOTICE", "KAMEV|NOROUTE|method=$rm|from=$fU|to=$tU\\n");
  sl_send_reply("404", "Not here");
  exit;
}

route[REGISTRAR] {
  route(AUTH);
  xlog("L_NOTICE", "KAMEV|REGISTER|from=$fU|auth=$au|path=$hdr(Path)|expires=$hdr(Expires)|contact=$ct\\n");
  if (!save("location")) { sl_reply_error(); }
  exit;
}

route[AUTH] {
${auth ? `  # digest against the htable: plain-text passwords (flags 0), the From user must be the
  # authenticated user (checks 1); 401 for REGISTER, 407 otherwise (auth_challenge), qop=auth
  if (!pv_auth_check("$fd", "$sht(users=>$fU)", "0", "1")) {
    xlog("L_NOTICE", "KAMEV|CHALLENGE|method=$rm|from=$fU|auth=$au\\n");
    auth_challenge("$fd", "1");
    exit;
  }
  consume_credentials();` : '  return;'}
}

route[RELAY] {
  if (!t_relay()) { sl_reply_error(); }
  exit;
}
`);
  return lines.join('\n');
}

/** Send OPTIONS to Kamailio until it answers 200 (bounded by `ms`). */
async function waitAnswering(address: string, port: number, ms: number, alive: () => boolean): Promise<boolean> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, address, () => r()));
  let ok = false;
  sock.on('message', (m) => { if (m.toString('latin1').startsWith('SIP/2.0 200')) ok = true; });
  const deadline = Date.now() + ms;
  try {
    for (let i = 0; !ok && Date.now() < deadline && alive(); i++) {
      const lp = sock.address().port;
      const msg = [
        `OPTIONS sip:${address}:${port} SIP/2.0`,
        `Via: SIP/2.0/UDP ${address}:${lp};branch=z9hG4bKready${i}${Date.now()}`,
        'Max-Forwards: 70', `From: <sip:probe@${address}>;tag=r${i}`, `To: <sip:${address}:${port}>`,
        `Call-ID: ready-${i}-${Date.now()}@${address}`, 'CSeq: 1 OPTIONS', 'Content-Length: 0', '', '',
      ].join('\r\n');
      sock.send(msg, port, address);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    sock.close();
  }
  return ok;
}

/** running instances: process group (0 before the spawn succeeded) and runtime directory */
const live = new Map<string, number>();
let hooked = false;
function track(dir: string, pid: number): void {
  live.set(dir, pid);
  if (hooked) return;
  hooked = true;
  // the workers are in the main process's group: never leave them behind
  process.once('exit', () => {
    for (const [d, p] of live) {
      if (p > 1) {
        try { process.kill(-p, 'SIGKILL'); } catch { /* already gone */ }
      }
      fs.rmSync(d, { recursive: true, force: true });
    }
  });
}

export async function startKamailio(o: KamailioOptions, attempt = 1): Promise<Kamailio> {
  const address = o.address ?? '127.0.0.2';
  const port = o.port ?? await freePort('udp');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-kamailio-'));
  const cfgFile = path.join(dir, 'kamailio.cfg');
  const given = o;
  let tlsConfigFile: string | undefined;
  const tlsPort = o.tls !== undefined ? o.tls.tlsPort ?? await freePort('tcp') : undefined;
  if (o.tls !== undefined) o = { ...o, tls: { ...o.tls, tlsPort } };
  if (o.tls !== undefined) {
    tlsConfigFile = path.join(dir, 'tls.cfg');
    fs.writeFileSync(tlsConfigFile, kamailioTlsConfig(o.tls));
  }
  fs.writeFileSync(cfgFile, kamailioConfig({ ...o, address, port, ...(tlsConfigFile !== undefined ? { tlsConfigFile } : {}) }));
  const args = ['-DD', '-E', '-f', cfgFile, '-Y', dir, '-P', path.join(dir, 'kamailio.pid'), '-m', '32', '-M', '8', '-w', dir];
  if (process.env.KAMAILIO_MODULES !== undefined) args.push('-L', process.env.KAMAILIO_MODULES);
  const child: ChildProcess = spawn(KAMAILIO_BIN, args, { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
  const pid = child.pid ?? -1;
  track(dir, Math.max(pid, 0));
  const lines: string[] = [];
  const events: KamEvent[] = [];
  eachLine(child.stderr, (line) => {
    lines.push(line);
    if (lines.length > 5_000) lines.splice(0, 1_000);
    const m = /KAMEV\|([A-Z]+)\|(.*)$/.exec(line);
    if (m !== null && events.length < 10_000) {
      const fields: Record<string, string> = {};
      for (const kv of m[2]!.split('|')) {
        const eq = kv.indexOf('=');
        if (eq > 0) fields[kv.slice(0, eq)] = kv.slice(eq + 1);
      }
      events.push({ kind: m[1]!, fields, at: Date.now() });
    }
  });
  const exited = new Promise<void>((r) => {
    if (child.exitCode !== null) r();
    child.once('exit', () => r());
    child.once('error', (e) => { lines.push(`spawn error: ${e.message}`); r(); });
  });
  const alive = (): boolean => child.exitCode === null && child.signalCode === null && pid > 0;
  const killGroup = (sig: NodeJS.Signals): void => {
    // never -0 (our own group) or -(-1)
    if (pid <= 1) return;
    try { process.kill(-pid, sig); } catch { /* gone */ }
  };
  const stop = async (graceMs = 3_000): Promise<void> => {
    if (alive()) {
      killGroup('SIGTERM');
      const t = setTimeout(() => killGroup('SIGKILL'), graceMs);
      await exited;
      clearTimeout(t);
    }
    // a worker that survived its parent (it should not) goes too
    killGroup('SIGKILL');
    live.delete(dir);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  const ready = alive() && await waitAnswering(address, port, o.readyTimeoutMs ?? 10_000, alive);
  if (!ready) {
    // a spawn error (binary missing) or an early exit: let its message reach the log first
    if (!alive()) await exited;
    const tail = lines.slice(-40).join('\n');
    await stop(500);
    // a port taken between freePort() and Kamailio's bind: try another one
    // fresh ports (the TLS one too, unless the caller chose it) on the next attempt
    if (o.port === undefined && attempt < 3 && /Address already in use/.test(tail)) return startKamailio(given, attempt + 1);
    throw new Error(`kamailio did not answer OPTIONS on udp:${address}:${port}\n  cmd: ${KAMAILIO_BIN} ${args.join(' ')}\n${tail}`);
  }
  return {
    pid, address, port, domain: o.domain, ...(tlsPort !== undefined ? { tlsPort } : {}),
    events: () => events.slice(),
    logTail: (n = 60) => lines.slice(-n).join('\n'),
    stop,
  };
}
