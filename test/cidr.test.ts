import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import {
  bytesToIp, canonicalAddress, formatHostPort, ipToBytes, ipv6Prefix, isIP, maskBytes, parseHostPort,
} from '../edge/net/address';
import { CidrMap, CidrSet, cidrErrorText, cidrKey, formatCidr, parseCidr } from '../edge/net/cidr';
import { parseCli } from '../edge/cli';
import { loadConfig } from '../edge/config/load';
import { loadYamlText } from '../edge/config/yaml';
import { AccessFileSchema, compileAccess } from '../edge/policy/access/compile';
import { CIDR_CASES, firstAddress } from './helpers/cidr-cases';

/** "a/bits" with the host bits cleared: the network a random (address, length) pair names */
function network(a: string, bits: number): string {
  return `${bytesToIp(maskBytes(ipToBytes(a)!, bits))}/${bits}`;
}

test('canonicalAddress: RFC 5952 form, IPv4-mapped to IPv4', () => {
  const cases: Array<[string, string]> = [
    ['1.2.3.4', '1.2.3.4'],
    ['::ffff:10.0.0.1', '10.0.0.1'],
    ['::FFFF:10.0.0.1', '10.0.0.1'],
    ['::ffff:0a00:0001', '10.0.0.1'],
    ['0:0:0:0:0:ffff:7f00:1', '127.0.0.1'],
    ['[::ffff:127.0.0.1]', '127.0.0.1'],
    ['2001:0DB8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // RFC 5952 4.2.3: first of equal runs
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // 4.2.2: a single 0 group stays
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'], // 4.2.3: the longest run
    ['[2001:db8::1]', '2001:db8::1'],
    ['fe80::1%eth0', 'fe80::1'],
    ['::', '::'],
    ['::1', '::1'],
    ['1::', '1::'],
    ['::2:3:4:5:6:7:8', '0:2:3:4:5:6:7:8'],
    ['64:ff9b::192.0.2.33', '64:ff9b::c000:221'],
    ['Host.Example.COM', 'host.example.com'],
  ];
  for (const [input, want] of cases) assert.equal(canonicalAddress(input), want, input);
});

test('isIP: strict forms only', () => {
  const bad = ['', '1.2.3', '1.2.3.4.5', '01.2.3.4', '256.1.1.1', '0x7f.0.0.1', '1.2.3.4 ', ':::', '1:2:3:4:5:6:7:8:9',
    '1::2::3', '12345::', ':1::', '1:', 'g::1', '::1.2.3', '1:2:3:4:5:6:7:1.2.3.4', 'a'.repeat(200)];
  for (const s of bad) assert.equal(isIP(s), 0, s);
  assert.equal(isIP('1.2.3.4'), 4);
  assert.equal(isIP('::ffff:1.2.3.4'), 6);
  assert.equal(isIP('1:2:3:4:5:6:1.2.3.4'), 6);
});

test('isIP and canonicalAddress agree with node:net on random IPv6 text', () => {
  const group = fc.integer({ min: 0, max: 0xffff }).map((n) => n.toString(16));
  fc.assert(fc.property(fc.array(group, { minLength: 8, maxLength: 8 }), fc.integer({ min: 0, max: 8 }), fc.integer({ min: 0, max: 8 }), (g, a, len) => {
    // compress an arbitrary run (possibly non-zero: then the text is invalid and both must say so)
    const b = Math.min(8, a + len);
    const text = len >= 1 && a < 8 ? `${g.slice(0, a).join(':')}::${g.slice(b).join(':')}` : g.join(':');
    assert.equal(isIP(text), net.isIP(text), text);
    if (net.isIP(text) === 6) {
      const c = canonicalAddress(text);
      // the canonical form denotes the same bytes
      assert.deepEqual(ipToBytes(c), ipToBytes(text));
      assert.equal(canonicalAddress(c), c);
    }
  }), { numRuns: 2000 });
});

test('parseHostPort', () => {
  assert.deepEqual(parseHostPort('[::1]:5060'), { host: '::1', port: 5060, isIP: 6 });
  assert.deepEqual(parseHostPort('[::1]'), { host: '::1', isIP: 6 });
  assert.deepEqual(parseHostPort('1.2.3.4:5060'), { host: '1.2.3.4', port: 5060, isIP: 4 });
  assert.deepEqual(parseHostPort('Host.example:5061'), { host: 'host.example', port: 5061, isIP: 0 });
  assert.deepEqual(parseHostPort('2001:db8::1'), { host: '2001:db8::1', isIP: 6 });
  assert.deepEqual(parseHostPort('[::ffff:1.2.3.4]:1'), { host: '1.2.3.4', port: 1, isIP: 4 });
  for (const bad of ['', '[::1', '[::1]x', '[1.2.3.4]:5', '1.2.3.4:', '1.2.3.4:65536', '1.2.3.4:-1', 'host:5060:1', 'a b:1', '1.2.3:5', '[::1]:+5']) {
    assert.ok('error' in parseHostPort(bad), bad);
  }
});

test('formatHostPort', () => {
  assert.equal(formatHostPort('::1', 5060), '[::1]:5060');
  assert.equal(formatHostPort('1.2.3.4', 5060), '1.2.3.4:5060');
  assert.equal(formatHostPort('::1'), '[::1]');
  assert.equal(formatHostPort('[::1]', 1), '[::1]:1');
});

test('ipv6Prefix aggregates by prefix, leaves IPv4 alone', () => {
  assert.equal(ipv6Prefix('2001:db8:1:2:3:4:5:6', 64), '2001:db8:1:2::/64');
  assert.equal(ipv6Prefix('2001:db8:1:2:ffff::1', 64), '2001:db8:1:2::/64');
  assert.equal(ipv6Prefix('2001:db8:1:2:3:4:5:6', 48), '2001:db8:1::/48');
  assert.equal(ipv6Prefix('2001:db8:1:2:3:4:5:6', 56), '2001:db8:1::/56');
  assert.equal(ipv6Prefix('2001:db8:1:2ff:3:4:5:6', 56), '2001:db8:1:200::/56');
  assert.equal(ipv6Prefix('2001:db8::1', 128), '2001:db8::1');
  assert.equal(ipv6Prefix('::ffff:1.2.3.4', 64), '1.2.3.4');
  assert.equal(ipv6Prefix('1.2.3.4', 64), '1.2.3.4');
});

test('CidrSet: IPv4 and IPv6 membership', () => {
  const s = new CidrSet();
  for (const c of ['10.0.0.0/8', '192.168.1.5', '2001:db8::/32', '::1', '0.0.0.0/32']) assert.equal(s.add(c), null, c);
  assert.equal(s.size, 5);
  assert.ok(s.has('10.255.255.255'));
  assert.ok(s.has('::ffff:10.1.2.3'), 'IPv4-mapped source matches the IPv4 entry');
  assert.ok(!s.has('11.0.0.0'));
  assert.ok(!s.has('9.255.255.255'));
  assert.ok(s.has('192.168.1.5'));
  assert.ok(!s.has('192.168.1.4'));
  assert.ok(s.has('2001:DB8:ffff::1'));
  assert.ok(!s.has('2001:db9::1'));
  assert.ok(s.has('::1'));
  assert.ok(!s.has('::2'));
  assert.ok(s.has('0.0.0.0'));
  assert.ok(!s.has('not-an-ip'));
  assert.ok(!s.has(''));
  assert.equal(s.match('10.9.9.9'), '10.0.0.0/8');
  assert.equal(s.match('2001:db8::5'), '2001:db8::/32');
});

test('CidrSet: host bits set are refused (a typo for one address or for the network), duplicates count once', () => {
  const s = new CidrSet();
  assert.equal(s.add('10.1.2.3/8'), 'cidr_host_bits');
  assert.equal(cidrErrorText('10.1.2.3/8', 'cidr_host_bits'), 'host bits set (did you mean "10.0.0.0/8"?)');
  assert.equal(s.size, 0);
  assert.equal(s.match('10.200.0.1'), null, 'nothing of the refused entry was added');
  assert.equal(s.add('10.0.0.0/8'), null);
  assert.equal(s.add(' 10.0.0.0/8 '), null);
  assert.equal(s.size, 1);
  assert.equal(s.match('10.200.0.1'), '10.0.0.0/8');
  assert.equal(s.add('2001:db8::ffff/32'), 'cidr_host_bits');
  assert.equal(cidrErrorText('2001:db8::ffff/32', 'cidr_host_bits'), 'host bits set (did you mean "2001:db8::/32"?)');
  assert.equal(s.add('2001:DB8::/32'), null);
  assert.equal(s.match('2001:db8:1::'), '2001:db8::/32');
  assert.equal(s.add('::ffff:172.16.0.1/108'), 'cidr_host_bits');
  assert.equal(cidrErrorText('::ffff:172.16.0.1/108', 'cidr_host_bits'), 'host bits set (did you mean "172.16.0.0/12"?)');
  assert.equal(s.add('::ffff:172.16.0.0/108'), null);
  assert.equal(s.match('172.31.255.255'), '172.16.0.0/12');
  assert.equal(s.size, 3);
  // a full-length prefix has no host bits: it is the address
  assert.equal(s.add('192.0.2.7/32'), null);
  assert.equal(s.match('192.0.2.7'), '192.0.2.7/32');
});

test('formatCidr and cidrKey: one spelling per network, a single address as the address', () => {
  const key = (t: string): string => { const p = parseCidr(t); assert.equal(typeof p, 'object', t); return cidrKey(p as Exclude<typeof p, string>); };
  const fmt = (t: string): string => { const p = parseCidr(t); assert.equal(typeof p, 'object', t); return formatCidr(p as Exclude<typeof p, string>); };
  assert.equal(fmt('2001:DB8:0::/48'), '2001:db8::/48');
  assert.equal(fmt('192.0.2.7'), '192.0.2.7/32');
  assert.equal(key('192.0.2.7'), '192.0.2.7');
  assert.equal(key('192.0.2.7/32'), '192.0.2.7');
  assert.equal(key('::FFFF:192.0.2.7/128'), '192.0.2.7');
  assert.equal(key('2001:DB8::1/128'), '2001:db8::1');
  assert.equal(key('[2001:db8::1]'), '2001:db8::1');
  assert.equal(key('2001:DB8:0::/48'), '2001:db8::/48');
  assert.equal(key('0.0.0.0/0'), '0.0.0.0/0');
});

test('CidrSet: /0 matches everything of its family only', () => {
  const s = new CidrSet();
  assert.equal(s.add('0.0.0.0/0'), null);
  assert.ok(s.has('255.255.255.255'));
  assert.ok(!s.has('::1'));
  const s6 = new CidrSet();
  assert.equal(s6.add('::/0'), null);
  assert.ok(s6.has('ffff::1'));
  assert.ok(!s6.has('1.2.3.4'));
});

test('CidrSet: invalid inputs give error codes and leave the set unchanged', () => {
  const s = new CidrSet();
  const cases: Array<[string, string]> = [
    ['10.0.0.0/33', 'cidr_invalid_prefix'],
    ['10.0.0.0/', 'cidr_invalid_prefix'],
    ['10.0.0.0/-1', 'cidr_invalid_prefix'],
    ['10.0.0.0/08', 'cidr_invalid_prefix'],
    ['10.0.0.0/8/8', 'cidr_invalid_prefix'],
    ['::/129', 'cidr_invalid_prefix'],
    ['::ffff:1.2.3.4/95', 'cidr_invalid_prefix'],
    ['10.0.0/8', 'cidr_invalid_address'],
    ['010.0.0.0/8', 'cidr_invalid_address'],
    ['example.com/24', 'cidr_invalid_address'],
    ['', 'cidr_invalid_address'],
    ['/8', 'cidr_invalid_address'],
    ['fe80::1%eth0/64', 'cidr_invalid_address'],
    ['1:2:3/64', 'cidr_invalid_address'],
  ];
  for (const [c, want] of cases) assert.equal(s.add(c), want, c);
  assert.equal(s.size, 0);
  assert.deepEqual(parseCidr('1.2.3.4'), { bytes: new Uint8Array([1, 2, 3, 4]), bits: 32 });
  assert.equal(cidrErrorText('10.0.0.0/33', 'cidr_invalid_prefix'), 'prefix length must be 0..32');
  assert.equal(cidrErrorText('::/129', 'cidr_invalid_prefix'), 'prefix length must be 0..128');
  assert.equal(cidrErrorText('::ffff:1.2.3.4/95', 'cidr_invalid_prefix'), 'prefix length must be 96..128 for an IPv4-mapped address');
  assert.equal(cidrErrorText('bogus', 'cidr_invalid_address'), 'not an IP address or CIDR (e.g. "192.0.2.7", "10.0.0.0/8", "2001:db8::/32")');
});

test('CidrMap: longest prefix wins, regardless of insertion order', () => {
  const m = new CidrMap<string>();
  assert.equal(m.add('10.1.2.0/24', 'net24'), null);
  assert.equal(m.add('10.0.0.0/8', 'net8'), null);
  assert.equal(m.add('10.1.0.0/16', 'net16'), null);
  assert.equal(m.add('10.1.2.3', 'host'), null);
  assert.equal(m.get('10.1.2.3'), 'host');
  assert.equal(m.get('10.1.2.4'), 'net24');
  assert.equal(m.get('10.1.3.4'), 'net16');
  assert.equal(m.get('10.2.3.4'), 'net8');
  assert.equal(m.get('11.0.0.1'), undefined);
  assert.deepEqual(m.match('10.1.2.200'), { cidr: '10.1.2.0/24', value: 'net24' });

  assert.equal(m.add('2001:db8::/32', 'v6-32'), null);
  assert.equal(m.add('2001:db8:aa::/48', 'v6-48'), null);
  assert.equal(m.add('2001:db8:aa:bb::/64', 'v6-64'), null);
  assert.equal(m.add('2001:db8:aa:bb::6/127', 'v6-127'), null);
  assert.equal(m.get('2001:db8:aa:bb::6'), 'v6-127');
  assert.equal(m.get('2001:db8:aa:bb::7'), 'v6-127');
  assert.equal(m.get('2001:db8:aa:bb::8'), 'v6-64');
  assert.equal(m.get('2001:db8:aa:cc::1'), 'v6-48');
  assert.equal(m.get('2001:db8:ab::1'), 'v6-32');
  assert.equal(m.get('2001:db9::1'), undefined);
  // replacing a value keeps the count
  assert.equal(m.add('10.0.0.0/8', 'net8b'), null);
  assert.equal(m.get('10.2.3.4'), 'net8b');
  assert.equal(m.size, 8);
});

test('CidrMap agrees with a brute-force matcher on random IPv4 prefixes', () => {
  const toNum = (a: string): number => a.split('.').reduce((x, o) => x * 256 + Number(o), 0);
  const ip = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((t) => t.join('.'));
  fc.assert(fc.property(fc.array(fc.tuple(ip, fc.integer({ min: 0, max: 32 })), { maxLength: 30 }), fc.array(ip, { minLength: 1, maxLength: 20 }), (entries, probes) => {
    const m = new CidrMap<number>();
    entries.forEach(([a, bits], i) => assert.equal(m.add(network(a, bits), i), null));
    for (const p of probes) {
      let best = -1;
      let bestVal: number | undefined;
      entries.forEach(([a, bits], i) => {
        const div = 2 ** (32 - bits);
        if (Math.floor(toNum(a) / div) === Math.floor(toNum(p) / div) && bits >= best) {
          best = bits;
          bestVal = i; // the last add of an equal prefix replaces the earlier ones
        }
      });
      assert.equal(m.get(p), bestVal, p);
    }
  }), { numRuns: 300 });
});

test('CidrMap agrees with a brute-force matcher on random IPv6 prefixes', () => {
  const toBig = (a: string): bigint => ipToBytes(a)!.reduce((x, o) => (x << 8n) | BigInt(o), 0n);
  // few distinct group values so that prefixes overlap often
  const group = fc.constantFrom('0', '1', 'db8', '2001', 'ffff', 'a');
  const ip = fc.array(group, { minLength: 8, maxLength: 8 }).map((g) => g.join(':'));
  fc.assert(fc.property(fc.array(fc.tuple(ip, fc.integer({ min: 0, max: 128 })), { maxLength: 30 }), fc.array(ip, { minLength: 1, maxLength: 20 }), (all, probes) => {
    // IPv4-mapped text folds into IPv4 (tested above); keep this a pure IPv6 comparison
    const entries = all.filter(([a]) => ipToBytes(a)!.length === 16);
    const m = new CidrMap<number>();
    entries.forEach(([a, bits], i) => assert.equal(m.add(network(a, bits), i), null));
    for (const p of probes.filter((x) => ipToBytes(x)!.length === 16)) {
      let best = -1;
      let bestVal: number | undefined;
      entries.forEach(([a, bits], i) => {
        const shift = BigInt(128 - bits);
        if (toBig(a) >> shift === toBig(p) >> shift && bits >= best) {
          best = bits;
          bestVal = i;
        }
      });
      assert.equal(m.get(p), bestVal, p);
    }
  }), { numRuns: 300 });
});

// ---- one CIDR, one answer, through every entry point an operator has (the admin listener's
// turn is in test/cli-bans.test.ts: it needs a running edge)

test('every entry point gives one CIDR the same answer: config, access.yaml, list files, sip-edge bans', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sip-edge-cidr-'));
  try {
    for (const c of CIDR_CASES) {
      const label = JSON.stringify(c.text);
      // the parser itself
      const p = parseCidr(c.text);
      if ('error' in c) assert.equal(typeof p === 'string' ? cidrErrorText(c.text, p) : formatCidr(p), c.error, label);
      else assert.deepEqual(typeof p === 'string' ? p : [formatCidr(p), cidrKey(p)], [c.cidr, c.key], label);

      // sip-edge.yaml inside / trusted (a file, so errors carry file:line:column)
      const cfgFile = path.join(dir, 'sip-edge.yaml');
      fs.writeFileSync(cfgFile, `upstreams: [udp:10.0.0.5:5060]\ntrusted:\n  - ${JSON.stringify(c.text)}\n`);
      const cfg = loadConfig({ file: cfgFile, env: {} });
      if ('error' in c) assert.deepEqual(cfg.ok ? cfg.config.trusted : cfg.errors, [`${cfgFile}:3:5: trusted ${label}: ${c.error}`], label);
      else assert.deepEqual(cfg.ok ? cfg.config.trusted : cfg.errors, [c.cidr], label);

      // rules/access.yaml inline, and a list file it names
      fs.mkdirSync(path.join(dir, 'lists'), { recursive: true });
      fs.writeFileSync(path.join(dir, 'lists', 'x.txt'), `# one entry\n${c.text}\n`);
      const inline = loadYamlText(`deny:\n  - ${JSON.stringify(c.text)}\n`, 'rules/access.yaml', AccessFileSchema);
      const listed = loadYamlText('files:\n  - { path: lists/x.txt, list: deny, name: x }\n', 'rules/access.yaml', AccessFileSchema);
      assert.ok(inline.ok && listed.ok);
      const a = compileAccess(inline.value, inline.at, dir);
      const l = compileAccess(listed.value, listed.at, dir);
      if ('error' in c) {
        assert.deepEqual(a.errors, [`rules/access.yaml:2:5: invalid CIDR ${label}: ${c.error}`], label);
        assert.deepEqual(l.errors, [`rules/lists/x.txt:2: invalid CIDR ${label}: ${c.error}`], label);
      } else {
        assert.deepEqual([a.errors, l.errors], [[], []], label);
        assert.equal(a.access.classify(firstAddress(c.cidr))?.list, 'deny', label);
        assert.equal(l.access.classify(firstAddress(c.cidr))?.list, 'deny', label);
      }

      // sip-edge bans add / remove (the key goes to the store or the admin listener as is)
      for (const op of ['add', 'remove'] as const) {
        const cli = parseCli(['bans', op, c.text, '--for', '10m', '--no-config'].slice(0, op === 'add' ? 5 : 3));
        if ('error' in c) assert.deepEqual(cli, { kind: 'usage_error', message: `bans ${op}: ${label}: ${c.error}` }, label);
        else assert.equal(cli.kind === 'bans' ? cli.bans?.key : cli, c.key, label);
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
