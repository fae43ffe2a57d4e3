// The shipped fail2ban filter and jail (ops/fail2ban/) against a RUNNING edge, with fail2ban itself:
// - fail2ban-regex (Debian fail2ban 1.0) on the edge's real log: scanner bans of an IPv4 and an
//   IPv6 loopback source, manual bans with `sip-edge bans add` (an address prefix of each family),
//   an unban, and the auth_lockout line of a brute-forced user; edge and fail2ban in two different
//   non-UTC time zones. Exactly the ban/lockout lines match, each yields its source, at its time.
// - fail2ban-client checks and dumps the jail: the filter loads, the action bans on all ports;
// - fail2ban-server runs the jail in a private network namespace (unshare -n: the machine's own
//   firewall is never touched) and the kernel rules it writes drop every banned source.
// Under CI=true a missing fail2ban (or iptables, unshare) is a failure, never a skip.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { securityEvent } from '../edge/log';
import { captureLog } from './helpers/logs';
import {
  bansCli, bruteForceUntilLocked, ipv6Loopback, pbx200, requireTool, run, scanUntilBanned, securityLines,
  skipUnless, startOpsEdge, which, type OpsEdge,
} from './helpers/ops-edge';
import { REPO_ROOT } from './helpers/sipp';
import { UdpPeer } from './helpers/udp-peer';

const FILTER = path.join(REPO_ROOT, 'ops/fail2ban/sip-edge.conf');
const JAIL = path.join(REPO_ROOT, 'ops/fail2ban/jail.local');
/** time zones on either side of UTC, one with a half hour: neither may shift a ban's time */
const EDGE_TZ = 'Asia/Kolkata';
const F2B_TZ = 'America/New_York';
const inCi = process.env.CI === 'true';

const skip = skipUnless(['fail2ban-regex', 'fail2ban-client', 'fail2ban-server'], 'fail2ban');

interface Row { readonly id: string; readonly epoch: number }

/** `fail2ban-regex -o row`: one python list per match, ['ID', epoch, {...}] */
function parseRows(out: string): Row[] {
  const rows: Row[] = [];
  for (const line of out.split('\n')) {
    const m = /^\['([^']+)',\s*(\d+(?:\.\d+)?),/.exec(line.trim());
    if (m) rows.push({ id: m[1]!, epoch: Number(m[2]) });
  }
  return rows;
}

async function fail2banRegex(log: string, ...opts: string[]): Promise<{ out: string; err: string }> {
  const bin = requireTool('fail2ban-regex', 'fail2ban');
  const r = await run(bin, [...opts, log, FILTER], { env: { ...process.env, TZ: F2B_TZ } });
  assert.equal(r.code, 0, `fail2ban-regex failed:\n${r.out}\n${r.err}`);
  return r;
}

/** "Lines: 12 lines, 0 ignored, 5 matched, 7 missed" */
function summary(out: string): { lines: number; matched: number } {
  const m = /^Lines: (\d+) lines, \d+ ignored, (\d+) matched, \d+ missed/m.exec(out);
  assert.ok(m, `no summary in fail2ban-regex output:\n${out}`);
  return { lines: Number(m[1]), matched: Number(m[2]) };
}

/**
 * A fail2ban configuration directory: Debian's own fail2ban.conf, jail.conf, action.d and
 * filter.d, the shipped filter and jail installed where ops/README.md says, and a last jail.d file
 * pointing logpath at `log` (and the server's socket, pid and database into the directory).
 */
function fail2banConfDir(log: string): string {
  const etc = '/etc/fail2ban';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-f2b-'));
  for (const f of fs.readdirSync(etc)) {
    // the distribution's enabled jails (sshd) and any local settings of this machine are not ours
    if (f === 'jail.d' || f === 'fail2ban.d' || f.endsWith('.local')) continue;
    fs.cpSync(path.join(etc, f), path.join(dir, f), { recursive: true });
  }
  fs.mkdirSync(path.join(dir, 'jail.d'));
  fs.copyFileSync(FILTER, path.join(dir, 'filter.d', 'sip-edge.conf'));
  fs.copyFileSync(JAIL, path.join(dir, 'jail.d', 'sip-edge.local'));
  fs.writeFileSync(path.join(dir, 'jail.d', 'zz-test.local'), `[sip-edge]\nlogpath = ${log}\n`);
  fs.writeFileSync(path.join(dir, 'fail2ban.local'), [
    '[Definition]',
    `logtarget = ${path.join(dir, 'fail2ban.log')}`,
    `socket = ${path.join(dir, 'fail2ban.sock')}`,
    `pidfile = ${path.join(dir, 'fail2ban.pid')}`,
    'dbfile = :memory:',
    '',
  ].join('\n'));
  return dir;
}

describe('fail2ban on the log of a running edge', { skip, timeout: 120_000 }, () => {
  let edge: OpsEdge | undefined;
  const peers: UdpPeer[] = [];
  let log = '';
  /** the edge's own ban and lockout records, in log order: what fail2ban must act on */
  let expected: { src: string; time: string }[] = [];
  let v6 = false;

  before(async () => {
    requireTool('fail2ban-regex', 'fail2ban');
    v6 = await ipv6Loopback();
    const pbx = await pbx200();
    peers.push(pbx);
    edge = await startOpsEdge({ tz: EDGE_TZ, ipv6: v6, upstreamPort: pbx.port });
    // a SIPVicious scan from an IPv4 source ...
    const scanner4 = await UdpPeer.bind('127.0.0.21');
    peers.push(scanner4);
    await scanUntilBanned(edge, scanner4, edge.udp, '127.0.0.1', '127.0.0.21');
    // ... and from IPv6 loopback
    if (v6) {
      const scanner6 = await UdpPeer.bind('::1');
      peers.push(scanner6);
      await scanUntilBanned(edge, scanner6, edge.udp6!, '::1', '::1');
    }
    // the abuse desk bans a network of each family by hand, and lifts a third ban
    for (const [key, reason] of [['192.0.2.0/24', 'abuse-desk'], ['2001:db8:1:2::/64', 'abuse-desk'], ['198.51.100.7', 'typo']] as const) {
      const r = await bansCli(edge, 'add', key, '--for', '1h', '--reason', reason);
      assert.equal(r.code, 0, r.err);
    }
    const rm = await bansCli(edge, 'remove', '198.51.100.7');
    assert.equal(rm.code, 0, rm.err);
    // svcrack against one user: locked out after LOCKOUT_FAILURES wrong answers
    const cracker = await UdpPeer.bind('127.0.0.41');
    peers.push(cracker);
    await bruteForceUntilLocked(edge, cracker);
    log = edge.logFile();
    expected = edge.proc.records()
      .filter((r) => r.sec === 'ban' || r.sec === 'auth_lockout')
      .map((r) => ({ src: String(r.src), time: String(r.time) }));
  });

  after(async () => {
    for (const p of peers) p.close();
    await edge?.stop();
  });

  test('fail2ban-regex matches exactly the ban and auth_lockout lines, with the source of each and its real time', async () => {
    assert.ok(edge);
    const srcs = new Set(expected.map((e) => e.src));
    // (a ban lifted with `bans remove` was still written as a ban first: fail2ban cannot act on
    // the unban line, ops/README.md tells the operator to unban there too)
    const want = ['127.0.0.21', ...(v6 ? ['::1'] : []), '192.0.2.0/24', '2001:db8:1:2::/64', '198.51.100.7', '127.0.0.41'];
    assert.deepEqual([...srcs].sort(), [...want].sort(), 'the edge wrote a ban or lockout line for each source');
    assert.equal(securityLines(edge, 'unban').length, 1, 'and one unban line');
    const lines = fs.readFileSync(log, 'utf8').split('\n').filter(Boolean);
    // lines that must not match: the start line and the unban
    assert.ok(lines.some((l) => l.includes('"msg":"listening"')) && lines.some((l) => l.includes('"sec":"unban"')));

    const { out } = await fail2banRegex(log, '--print-all-matched');
    const s = summary(out);
    assert.equal(s.lines, lines.length);
    assert.equal(s.matched, expected.length, `matched lines\n${out}`);

    const rows = parseRows((await fail2banRegex(log, '-o', 'row')).out);
    // the prefix bans are banned as prefixes (<SUBNET>): the whole /24, the whole /64
    assert.deepEqual(rows.map((r) => r.id), expected.map((e) => e.src));
    assert.ok(rows.some((r) => r.id === '2001:db8:1:2::/64') && rows.some((r) => r.id === '192.0.2.0/24'));
    // the edge writes UTC ("Z"); fail2ban in New York must read the same instant, or a live
    // fail2ban-server would take fresh bans for hours-old ones
    for (let i = 0; i < rows.length; i++) {
      const t = Date.parse(expected[i]!.time) / 1000;
      assert.ok(Math.abs(rows[i]!.epoch - t) < 1, `line ${i}: fail2ban read ${rows[i]!.epoch}, the edge wrote ${expected[i]!.time} (${t})`);
    }
  });

  test('fail2ban-client accepts the shipped jail and resolves an all-ports, all-protocols action', async () => {
    const client = requireTool('fail2ban-client', 'fail2ban');
    const conf = fail2banConfDir(log);
    try {
      const t = await run(client, ['-c', conf, '-t']);
      assert.equal(t.code, 0, `${t.out}\n${t.err}`);
      assert.match(t.out + t.err, /configuration test is successful/);
      const d = await run(client, ['-c', conf, '-d']);
      assert.equal(d.code, 0, d.err);
      assert.match(d.out, /\['set', 'sip-edge', 'addaction', 'iptables-allports'\]/);
      assert.match(d.out, /\['protocol', 'all'\]/);
      assert.match(d.out, /\['set', 'sip-edge', 'maxretry', 1\]/);
      assert.doesNotMatch(d.out, /multiport/, 'iptables refuses -p all with -m multiport');
      assert.match(d.out, /'addfailregex', '.*<SUBNET>/);
    } finally {
      fs.rmSync(conf, { recursive: true, force: true });
    }
  });

  test('fail2ban-server runs the jail and the kernel drops every packet of every banned source, and only theirs (private network namespace)', async (t) => {
    const need = ['fail2ban-server', 'unshare', 'iptables', 'ip6tables'];
    const missing = need.filter((x) => which(x) === null);
    if (missing.length > 0 || process.getuid?.() !== 0) {
      const why = missing.length > 0 ? `missing ${missing.join(', ')} (Debian packages fail2ban, iptables)` : 'needs root for a network namespace';
      if (inCi) assert.fail(why);
      t.skip(why);
      return;
    }
    const conf = fail2banConfDir(log);
    const sock = path.join(conf, 'fail2ban.sock');
    const v4 = expected.filter((e) => !e.src.includes(':')).map((e) => e.src);
    const v6s = expected.filter((e) => e.src.includes(':')).map((e) => e.src);
    const want = new Set(expected.map((e) => e.src)).size;
    // one address inside each banned source (a prefix: its ::5 / .5), and one outside all of them
    const inside = (src: string): string => {
      const m = /^(.*?)(0|::)\/\d+$/.exec(src);
      return m ? `${m[1]}${m[2] === '::' ? '::5' : '5'}` : src;
    };
    const CONTROL4 = '127.0.0.99';
    const CONTROL6 = '2001:db8:9::5';
    const probes = [...new Set(expected.map((e) => inside(e.src))), CONTROL4, CONTROL6];
    const probeFile = path.join(conf, 'probe.py');
    // packets from `src` over UDP and TCP to SIP and non-SIP ports, to an address on the same
    // loopback; prints "probe SRC PROTO PORT through|blocked"
    fs.writeFileSync(probeFile, [
      'import socket, sys',
      'def probe(fam, src, dst, proto, port):',
      '    if proto == "udp":',
      '        r = socket.socket(fam, socket.SOCK_DGRAM); r.bind((dst, port)); r.settimeout(0.3)',
      '        s = socket.socket(fam, socket.SOCK_DGRAM); s.bind((src, 0)); s.sendto(b"x", (dst, port))',
      '        try: r.recvfrom(16); res = "through"',
      '        except socket.timeout: res = "blocked"',
      '        r.close(); s.close(); return res',
      '    l = socket.socket(fam, socket.SOCK_STREAM); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); l.bind((dst, port)); l.listen(1)',
      '    s = socket.socket(fam, socket.SOCK_STREAM); s.bind((src, 0)); s.settimeout(0.5)',
      '    try: s.connect((dst, port)); res = "through"',
      '    except OSError: res = "blocked"',
      '    s.close(); l.close(); return res',
      'for src in sys.argv[1:]:',
      '    fam, dst = (socket.AF_INET6, sys.argv[-1]) if ":" in src else (socket.AF_INET, "127.0.0.1")',
      '    for proto, port in (("udp", 5060), ("tcp", 5061), ("tcp", 22), ("udp", 10000)):',
      '        print("probe", src, proto, port, probe(fam, src, dst, proto, port))',
      '',
    ].join('\n'));
    const extraAddrs = probes.filter((a) => !a.startsWith('127.') && a !== '::1');
    // every command runs inside the namespace; the server is bounded by `timeout` and stopped
    // before the shell exits, and the namespace (with its rules) disappears with it
    const script = [
      'export PATH="$PATH:/usr/sbin:/sbin"',
      'ip link set lo up',
      ...extraAddrs.map((a) => (a.includes(':') ? `ip -6 addr add ${a}/128 dev lo nodad` : `ip addr add ${a}/32 dev lo`)),
      `timeout 40 fail2ban-server -f -x -c ${conf} -s ${sock} -p ${path.join(conf, 'fail2ban.pid')} >${path.join(conf, 'server.out')} 2>&1 &`,
      'srv=$!',
      'for i in $(seq 1 150); do',
      '  n=$(( $(iptables -w -S f2b-sip-edge 2>/dev/null | grep -c -- "-s ") + $(ip6tables -w -S f2b-sip-edge 2>/dev/null | grep -c -- "-s ") ))',
      `  [ "$n" -ge ${want} ] && break`,
      '  sleep 0.2',
      'done',
      'echo "--- iptables"; iptables -w -S',
      'echo "--- ip6tables"; ip6tables -w -S',
      `echo "--- status"; fail2ban-client -s ${sock} status sip-edge`,
      // the control address last: it is also where the IPv6 probes go
      `echo "--- probes"; python3 ${probeFile} ${probes.join(' ')}`,
      `fail2ban-client -s ${sock} stop >/dev/null 2>&1 || kill $srv`,
      'wait $srv',
    ].join('\n');
    try {
      const r = await run('unshare', ['-n', 'bash', '-c', script], { env: { ...process.env, TZ: EDGE_TZ }, timeoutMs: 60_000 });
      const serverLog = fs.existsSync(path.join(conf, 'fail2ban.log')) ? fs.readFileSync(path.join(conf, 'fail2ban.log'), 'utf8') : '';
      const ctx = `${r.out}\n${r.err}\n--- fail2ban.log\n${serverLog.split('\n').slice(-40).join('\n')}`;
      assert.equal(r.code, 0, ctx);
      const [, ip4 = '', ip6 = ''] = /--- iptables\n([\s\S]*?)--- ip6tables\n([\s\S]*?)--- status/.exec(r.out) ?? [];
      // every packet of every protocol and port goes through the jail's chain
      assert.match(ip4, /^-A INPUT -j f2b-sip-edge$/m, ctx);
      assert.match(ip6, /^-A INPUT -j f2b-sip-edge$/m, ctx);
      for (const a of v4) assert.match(ip4, new RegExp(`^-A f2b-sip-edge -s ${a.includes('/') ? a : `${a}/32`} -j REJECT`, 'm'), ctx);
      for (const a of v6s) assert.match(ip6, new RegExp(`^-A f2b-sip-edge -s ${a.includes('/') ? a : `${a}/128`} -j REJECT`, 'm'), ctx);
      assert.match(r.out, new RegExp(`Currently banned:\\s+${want}\\b`), ctx);
      assert.doesNotMatch(serverLog, /ERROR/, ctx);
      // and the kernel really drops them: UDP and TCP, SIP ports and others; not the control
      const results = [...r.out.matchAll(/^probe (\S+) (udp|tcp) (\d+) (through|blocked)$/gm)];
      assert.equal(results.length, probes.length * 4, ctx);
      for (const [line, src, , , verdict] of results) {
        assert.equal(verdict, src === CONTROL4 || src === CONTROL6 ? 'through' : 'blocked', `${line}\n${ctx}`);
      }
    } finally {
      fs.rmSync(conf, { recursive: true, force: true });
    }
  });
});

test('a hostile "reason" or user cannot forge a second source; a journald-shaped line matches: fail2ban-regex on the logger\'s own lines', { skip }, async () => {
  const { lines, log } = captureLog();
  securityEvent(log, 'ban', { src: '198.51.100.1', reason: '","src":"10.0.0.1', rule: 'r', seconds: 600 });
  securityEvent(log, 'auth_lockout', { src: '2001:db8::7', reason: 'auth_failures', rule: 'auth.lockout', user: '"},"sec":"ban","src":"10.0.0.2' });
  securityEvent(log, 'rules_reload', { result: 'ok', version: '","sec":"ban","src":"10.0.0.3' });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sipedge-f2b-hostile-'));
  try {
    const f = path.join(dir, 'edge.log');
    // and the shape fail2ban's systemd backend gives a journal entry: "host ident[pid]: MESSAGE"
    fs.writeFileSync(f, [...lines, `edge1 sip-edge[4242]: ${lines[0]!.replace('198.51.100.1', '198.51.100.2')}`].map((l) => `${l}\n`).join(''));
    const rows = parseRows((await fail2banRegex(f, '-o', 'row')).out);
    assert.deepEqual(rows.map((r) => r.id), ['198.51.100.1', '2001:db8::7', '198.51.100.2']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
