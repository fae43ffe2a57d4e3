// Process harness for a real Linphone (Debian linphone-cli 5.1: liblinphone + belle-sip, which
// answers SHA-256 digest challenges, RFC 8760) as a headless phone: `linphone-daemon` driven on
// stdin with its documented commands (`linphone-daemon --dump-commands-help`), a fresh config and
// HOME per run (it writes its state there), its SIP log in a file of the run directory.
//
// Headless notes (found here, Debian bookworm): the network monitor never reports the network up
// in a container, so the config turns it off and asks to register regardless; the SIP transport
// must then be set with the `port` command before it listens.
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { childSet } from './children';
import { freePort } from './ports';

export const LINPHONE_DAEMON_BIN = process.env.LINPHONE_DAEMON_BIN ?? '/usr/bin/linphone-daemon';

const children = childSet();

export function linphoneAvailable(): boolean {
  if (!fs.existsSync(LINPHONE_DAEMON_BIN)) return false;
  const r = spawnSync(LINPHONE_DAEMON_BIN, ['--help'], { encoding: 'utf8', timeout: 5_000 });
  return /--pipe/.test(`${r.stdout}${r.stderr}`);
}

export interface LinphoneDaemon {
  readonly sipPort: number;
  /** send one command line, resolve with the response block (up to the next prompt) */
  command(line: string, ms?: number): Promise<string>;
  /** poll `register-status` until the state is final (Ok / Failed) or `ms` passed */
  registrationState(id: number, ms: number): Promise<string>;
  /** the daemon's SIP log so far (every message it sent and received) */
  log(): string;
  stop(): Promise<void>;
}

export async function startLinphone(): Promise<LinphoneDaemon> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'linphone-'));
  const sipPort = await freePort('udp');
  const rc = path.join(dir, 'linphonerc');
  fs.writeFileSync(rc, [
    '[sip]', 'sip_tcp_port=-1', 'sip_tls_port=-1', 'register_only_when_network_is_up=0', 'register_only_when_upnp_is_ok=0',
    '[net]', 'auto_net_state_mon=0', '',
  ].join('\n'));
  const logFile = path.join(dir, 'linphone.log');
  const child: ChildProcessWithoutNullStreams = spawn(LINPHONE_DAEMON_BIN, ['--config', rc, '--log', logFile], {
    cwd: dir, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir }, stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.track(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let out = '';
  let waiter: (() => void) | undefined;
  child.stdout.on('data', (b: Buffer) => { out += b.toString('utf8'); if (out.length > 1024 * 1024) out = out.slice(-512 * 1024); waiter?.(); });
  child.stderr.on('data', () => undefined);
  child.stdin.on('error', () => undefined);

  const PROMPT = 'daemon-linphone>';
  let chain = Promise.resolve('');
  const command = (line: string, ms = 5_000): Promise<string> => {
    // one command at a time: responses are matched by position, between prompts
    const run = async (): Promise<string> => {
      const start = out.length;
      child.stdin.write(`${line}\n`);
      const deadline = Date.now() + ms;
      for (;;) {
        const seg = out.slice(start);
        // the response follows the echo of our command and ends at the next prompt
        const at = seg.indexOf('Status:');
        const end = at >= 0 ? seg.indexOf(PROMPT, at) : -1;
        if (at >= 0 && (end >= 0 || /\n\n$/.test(seg))) return end >= 0 ? seg.slice(at, end) : seg.slice(at);
        if (Date.now() > deadline || child.exitCode !== null) return seg;
        await new Promise<void>((r) => { waiter = r; setTimeout(r, 50); });
      }
    };
    chain = chain.then(run, run);
    return chain;
  };
  const r = await command(`port sip ${sipPort} udp`);
  if (!/Status: Ok/.test(r)) {
    child.kill('SIGKILL');
    await exited;
    throw new Error(`linphone-daemon did not take its SIP port: ${r}`);
  }
  return {
    sipPort,
    command,
    async registrationState(id, ms) {
      const deadline = Date.now() + ms;
      let state = '';
      while (Date.now() < deadline) {
        const s = await command(`register-status ${id}`);
        state = /State: (\S+)/.exec(s)?.[1] ?? '';
        if (state === 'LinphoneRegistrationOk' || state === 'LinphoneRegistrationFailed') return state;
        await new Promise((res) => setTimeout(res, 200));
      }
      return state;
    },
    log: () => { try { return fs.readFileSync(logFile, 'latin1'); } catch { return ''; } },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.stdin.write('quit\n');
        const t = setTimeout(() => child.kill('SIGKILL'), 3_000);
        await exited;
        clearTimeout(t);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
