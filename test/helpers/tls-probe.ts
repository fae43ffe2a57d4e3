// The real `openssl s_client` as a TLS probe, run asynchronously (an in-process edge shares this
// event loop), and a Prometheus text reader for the counters the TLS tests assert on.
import { spawn } from 'node:child_process';

export interface Probe {
  /** the handshake completed (s_client -brief says CONNECTION ESTABLISHED, or printed the chain) */
  readonly ok: boolean;
  readonly protocol?: string;
  readonly cipher?: string;
  /** "CN = a.example" */
  readonly peer?: string;
  /** stdout and stderr together */
  readonly out: string;
}

export interface ProbeOptions {
  readonly host?: string;
  /** -brief (default true); false prints the certificate chain */
  readonly brief?: boolean;
  /** bytes written to the connection after it is up (s_client's stdin) */
  readonly send?: string;
  /** keep stdin open this long before closing it, so replies can arrive (default 0) */
  readonly holdMs?: number;
}

export function sClient(port: number, args: readonly string[], o: ProbeOptions = {}): Promise<Probe> {
  const host = o.host ?? '127.0.0.1';
  const brief = o.brief ?? true;
  return new Promise((resolve) => {
    const child = spawn('openssl', ['s_client', '-connect', host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`, ...(brief ? ['-brief'] : []), ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { if (out.length < 200_000) out += d.toString('latin1'); });
    child.stderr.on('data', (d: Buffer) => { if (out.length < 200_000) out += d.toString('latin1'); });
    const kill = setTimeout(() => child.kill('SIGKILL'), 10_000 + (o.holdMs ?? 0));
    child.stdin.on('error', () => undefined);
    if (o.send !== undefined) child.stdin.write(o.send);
    setTimeout(() => child.stdin.end(), o.holdMs ?? 0);
    child.on('close', (code) => {
      clearTimeout(kill);
      const protocol = /Protocol version: (\S+)/.exec(out)?.[1];
      const cipher = /Ciphersuite: (\S+)/.exec(out)?.[1];
      const peer = /Peer certificate: (.*)/.exec(out)?.[1]?.trim();
      resolve({
        ok: code === 0 && (out.includes('CONNECTION ESTABLISHED') || (!brief && /^-----BEGIN CERTIFICATE-----/m.test(out))),
        ...(protocol !== undefined ? { protocol } : {}),
        ...(cipher !== undefined ? { cipher } : {}),
        ...(peer !== undefined ? { peer } : {}),
        out,
      });
    });
  });
}

/** the sum of every series of `name` whose labels include all of `labels` */
export function metricSum(text: string, name: string, labels: Record<string, string> = {}): number {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    if (want.every((w) => line.includes(w))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/** poll `cond` every 50 ms until it holds (bounded) */
export async function until(cond: () => Promise<boolean> | boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** an OPTIONS to the edge itself (answered 200 by the ping stage), sent over TLS from `from` */
export function optionsToEdge(from = '127.0.0.1:5061'): string {
  return [
    'OPTIONS sip:127.0.0.1 SIP/2.0',
    `Via: SIP/2.0/TLS ${from};branch=z9hG4bK-${Math.random().toString(36).slice(2)}`,
    'Max-Forwards: 70',
    'From: <sip:probe@example.com>;tag=1',
    'To: <sip:127.0.0.1>',
    `Call-ID: ${Math.random().toString(36).slice(2)}@test`,
    'CSeq: 1 OPTIONS',
    'Content-Length: 0',
    '', '',
  ].join('\r\n');
}
