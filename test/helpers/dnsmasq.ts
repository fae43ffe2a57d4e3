// A real DNS server for the resolver tests: dnsmasq (Debian `dnsmasq-base`) as the authoritative
// server of one test zone, on 127.0.0.1 and a random port, serving NAPTR, SRV, A and AAAA records
// from a configuration file the test writes.
//
// Why authoritative mode (auth-server / auth-zone): only then does dnsmasq put the zone's SOA in
// negative answers (RFC 2308 3), so the resolver's negative caching is tested against the real
// TTL rule; dnsmasq accepts auth-server only on an address an interface has (127.0.0.1, not
// 127.0.0.x). --auth-ttl sets the TTL of every record and the SOA MINIMUM.
// A change of records restarts dnsmasq on the same address and port with a new file: SIGHUP
// rereads hosts files only, never the naptr-record / srv-host lines of the configuration.
// pause()/resume() (SIGSTOP/SIGCONT) make a server that stops answering without closing its
// socket, as a dead or firewalled server looks to a client.
// --log-queries to stderr: each question dnsmasq receives is one line, so tests count what went
// over the wire (coalescing, negative caching, no NAPTR for an explicit port).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as dgram from 'node:dgram';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as dnsPacket from 'dns-packet';
import { childSet, eachLine } from './children';
import { freePort } from './ports';

export const DNSMASQ_BIN = process.env.DNSMASQ_BIN ?? '/usr/sbin/dnsmasq';

let available: boolean | undefined;
/** Is a dnsmasq binary runnable here? (cached) */
export function dnsmasqAvailable(): boolean {
  if (available === undefined) {
    const r = spawnSync(DNSMASQ_BIN, ['--version'], { encoding: 'utf8', timeout: 5_000 });
    available = r.error === undefined && /Dnsmasq version/.test(`${r.stdout}`);
  }
  return available;
}

/** Under CI the DNS tests must run: a missing dnsmasq fails them there, skips them only locally. */
export function dnsmasqRequired(): boolean {
  return process.env.CI === 'true';
}

export interface DnsmasqOptions {
  /** the zone served authoritatively, e.g. "sip.test" */
  readonly zone: string;
  /** dnsmasq configuration lines: naptr-record=, srv-host=, host-record= ... */
  readonly records: readonly string[];
  /** TTL of every record and SOA MINIMUM (negative answers), seconds; default 2 */
  readonly ttl?: number;
  /** loopback address to serve on; default 127.0.0.1 */
  readonly address?: '127.0.0.1' | '::1';
}

export interface Dnsmasq {
  readonly address: string;
  readonly port: number;
  /** every question received so far, "TYPE name", oldest first */
  queries(): string[];
  /** how many questions of `type` for `name` so far (call settled() first: the log is read
   *  asynchronously) */
  count(type: string, name: string): number;
  /** resolves once every question sent before the call is in queries(): a marker question is
   *  asked and its log line awaited (bounded: 2 s) */
  settled(): Promise<void>;
  /** stop, write the new records, start again on the same address and port */
  restart(records: readonly string[], ttl?: number): Promise<void>;
  /** SIGSTOP: the socket stays open, nothing answers */
  pause(): void;
  /** SIGCONT */
  resume(): void;
  stop(): Promise<void>;
  logTail(n?: number): string;
}

const children = childSet();
const SAFE = /^[A-Za-z0-9._,:+=\- ]*$/;

export function dnsmasqConfig(o: DnsmasqOptions): string {
  const address = o.address ?? '127.0.0.1';
  for (const line of o.records) if (!SAFE.test(line) || line.includes('\n')) throw new Error(`dnsmasqConfig: unsafe line ${JSON.stringify(line)}`);
  return [
    `auth-server=ns.${o.zone},${address}`,
    `auth-zone=${o.zone}`,
    // serial, hostmaster, refresh, retry, expiry; MINIMUM is --auth-ttl
    `auth-soa=1,hostmaster.${o.zone},1200,120,1209600`,
    ...o.records,
    '',
  ].join('\n');
}

export async function startDnsmasq(o: DnsmasqOptions): Promise<Dnsmasq> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-dnsmasq-'));
  const address = o.address ?? '127.0.0.1';
  const port = await freePort('both');
  const log: string[] = [];
  const seen: string[] = [];
  let child: ChildProcess | undefined;
  let gen = 0;
  let markers = 0;

  const start = async (records: readonly string[], ttl: number): Promise<void> => {
    const conf = path.join(dir, `dnsmasq-${gen++}.conf`);
    fs.writeFileSync(conf, dnsmasqConfig({ ...o, records, ttl }));
    const c = spawn(DNSMASQ_BIN, [
      '--keep-in-foreground', '--no-resolv', '--no-hosts', `--conf-file=${conf}`,
      `--listen-address=${address}`, '--bind-interfaces', `--port=${port}`,
      `--auth-ttl=${ttl}`, `--local-ttl=${ttl}`, `--pid-file=${path.join(dir, 'pid')}`,
      '--log-queries', '--log-facility=-', '--cache-size=0',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.track(c);
    child = c;
    eachLine(c.stderr, (line) => {
      log.push(line);
      if (log.length > 2000) log.splice(0, 1000);
      const m = /(?:query|auth)\[(\w+)\] (\S+) from/.exec(line);
      if (m) seen.push(`${m[1]} ${m[2]!.toLowerCase()}`);
    });
    await ready(address, port, o.zone, c, () => log.slice(-20).join('\n'));
  };

  const stop = (): Promise<void> => new Promise((resolve) => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return resolve();
    c.once('exit', () => resolve());
    c.kill('SIGKILL');
  });

  await start(o.records, o.ttl ?? 2);
  return {
    address,
    port,
    queries: () => [...seen],
    count: (type, name) => seen.filter((q) => q === `${type} ${name.toLowerCase()}`).length,
    async settled() {
      const marker = `settled-${markers++}.${o.zone}`;
      await soaAnswered(address, port, marker, 'A');
      const end = Date.now() + 2_000;
      while (!seen.includes(`A ${marker}`) && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
      if (!seen.includes(`A ${marker}`)) throw new Error(`dnsmasq log did not show ${marker}`);
    },
    async restart(records, ttl) {
      await stop();
      await start(records, ttl ?? o.ttl ?? 2);
    },
    pause() { child?.kill('SIGSTOP'); },
    resume() { child?.kill('SIGCONT'); },
    async stop() {
      await stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
    logTail: (n = 20) => log.slice(-n).join('\n'),
  };
}

/** Bounded wait until the server answers an SOA question for the zone. */
async function ready(address: string, port: number, zone: string, c: ChildProcess, tail: () => string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (Date.now() < deadline) {
    if (c.exitCode !== null) throw new Error(`dnsmasq exited with ${c.exitCode}:\n${tail()}`);
    if (await soaAnswered(address, port, zone)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`dnsmasq did not answer on ${address}:${port} within 5 s:\n${tail()}`);
}

function soaAnswered(address: string, port: number, zone: string, type: 'SOA' | 'A' = 'SOA'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
    const t = setTimeout(() => { s.close(); resolve(false); }, 200);
    s.on('error', () => { clearTimeout(t); s.close(); resolve(false); });
    s.on('message', () => { clearTimeout(t); s.close(); resolve(true); });
    s.send(dnsPacket.encode({ type: 'query', id: 7, questions: [{ type, name: zone }] }), port, address);
  });
}
