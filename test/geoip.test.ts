// GeoIP library (geoip/), the MaxMind DB fixture writer, geoip.yaml compilation and the geoip
// stage. Fixture databases are written into temp dirs by test/helpers/mmdb-writer.ts and read
// back with the `maxmind` package, in both record layouts (nested GeoLite2 `country.iso_code`,
// flat ip-location-db `country_code`) and the GeoLite2-ASN layout.
import { after, test } from 'node:test';
import { snapshotWith } from './helpers/snapshot';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as maxmind from 'maxmind';
import { buildMmdb, writeMmdb, type MmdbEntry } from './helpers/mmdb-writer';
import { canonicalIp, combineGeo, defaultCountryDbPath, GeoDb, openGeoDatabases, type ReloadEvent } from '../geoip';
import { loadYamlText } from '../edge/config/yaml';
import { canonicalAddress, ipToBytes } from '../edge/net/address';
import fc from 'fast-check';
import { parseMessage } from '../edge/sip/parser';
import type { Endpoint } from '../edge/sip/types';
import type { MessageContext, Verdict } from '../edge/verdict';
import { compileGeo, GeoFileSchema } from '../edge/policy/geo/compile';
import type { RulesSnapshot } from '../edge/policy/snapshot';
import type { CompiledGeo } from '../edge/policy/geo/compile';
import { createGeoStage, GEO_REASONS, isUnlocatable, type GeoSource } from '../edge/policy/geo/stage';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function tmpDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'sip-edge-geoip-'));
  dirs.push(d);
  return d;
}

// GeoLite2-Country / City shape
const NESTED: MmdbEntry[] = [
  { cidr: '198.51.100.0/24', data: { country: { iso_code: 'CN', names: { en: 'China' } }, continent: { code: 'AS' } } },
  { cidr: '198.51.100.128/25', data: { country: { iso_code: 'RU' } } },
  { cidr: '203.0.113.0/24', data: { country: { iso_code: 'US' }, registered_country: { iso_code: 'US' } } },
  { cidr: '192.0.2.0/28', data: { registered_country: { iso_code: 'NL' } } }, // no located country
  { cidr: '127.0.0.0/8', data: { country: { iso_code: 'US' } } }, // the stage must ignore this
  { cidr: '2001:db8:cc::/48', data: { country: { iso_code: 'CN' } } },
  { cidr: '2001:db8:de::/48', data: { country: { iso_code: 'DE' } } },
];
// @ip-location-db shape
const FLAT: MmdbEntry[] = [
  { cidr: '198.51.100.0/24', data: { country_code: 'CN' } },
  { cidr: '198.51.100.128/25', data: { country_code: 'RU' } },
  { cidr: '203.0.113.0/24', data: { country_code: 'US' } },
  { cidr: '2001:db8:de::/48', data: { country_code: 'DE' } },
];
// GeoLite2-ASN shape
const ASN: MmdbEntry[] = [
  { cidr: '203.0.113.0/25', data: { autonomous_system_number: 14061, autonomous_system_organization: 'DIGITALOCEAN-ASN' } },
  { cidr: '198.51.100.0/24', data: { autonomous_system_number: 4134, autonomous_system_organization: 'Chinanet' } },
  { cidr: '2001:db8:de::/48', data: { autonomous_system_number: 3320, autonomous_system_organization: 'Deutsche Telekom AG' } },
];

async function reader(buf: Buffer): Promise<maxmind.Reader<maxmind.Response>> {
  const f = path.join(tmpDir(), 'x.mmdb');
  fs.writeFileSync(f, buf);
  return maxmind.open(f);
}

test('mmdb writer: files read back with the maxmind package, every record size, IPv4 and IPv6 trees', async () => {
  for (const recordSize of [24, 28, 32] as const) {
    for (const ipVersion of [4, 6] as const) {
      const entries = ipVersion === 4 ? FLAT.filter((e) => !e.cidr.includes(':')) : FLAT;
      const r = await reader(buildMmdb(entries, { recordSize, ipVersion, databaseType: 'Test-Country' }));
      const tag = `${recordSize}/${ipVersion}`;
      assert.equal(r.metadata.recordSize, recordSize, tag);
      assert.equal(r.metadata.ipVersion, ipVersion, tag);
      assert.equal(r.metadata.databaseType, 'Test-Country', tag);
      assert.equal(r.metadata.binaryFormatMajorVersion, 2, tag);
      assert.deepEqual(r.get('198.51.100.1'), { country_code: 'CN' }, tag);
      assert.deepEqual(r.get('198.51.100.200'), { country_code: 'RU' }, tag); // longest prefix
      assert.deepEqual(r.getWithPrefixLength('198.51.100.200'), [{ country_code: 'RU' }, 25], tag); // counted from the IPv4 subtree
      assert.equal(r.get('198.51.99.255'), null, tag);
      assert.equal(r.get('8.8.8.8'), null, tag);
      if (ipVersion === 6) {
        assert.deepEqual(r.get('2001:db8:de:1::1'), { country_code: 'DE' }, tag);
        assert.equal(r.get('2001:db8:df::1'), null, tag);
      }
    }
  }
});

test('mmdb writer: value types (nested maps, arrays, booleans, negative, double, uint64) round-trip', async () => {
  const data = { a: { b: { c: 'deep' } }, list: ['x', 'y'], t: true, f: false, neg: -7, d: 2.5, big: 2n ** 40n, u16: 65535, u32: 4294967295, long: 'z'.repeat(70000) };
  const r = await reader(buildMmdb([{ cidr: '192.0.2.0/24', data }]));
  const got = r.get('192.0.2.9') as unknown as Record<string, unknown>;
  assert.deepEqual({ ...got, big: String(got.big) }, { ...data, big: String(2n ** 40n) });
});

test('mmdb writer: 28-bit records whose values need the shared nibble (data offset past 2^24)', async () => {
  // a 16.8 MB first record pushes the second record's pointer past 24 bits
  const big = 'p'.repeat(16_800_000);
  const buf = buildMmdb([{ cidr: '192.0.2.0/24', data: { pad: big } }, { cidr: '198.51.100.0/24', data: { country_code: 'JP' } }], { recordSize: 28 });
  const r = await reader(buf);
  assert.deepEqual(r.get('198.51.100.5'), { country_code: 'JP' });
  assert.equal((r.get('192.0.2.5') as unknown as { pad: string }).pad.length, big.length);
  assert.throws(() => buildMmdb([{ cidr: '192.0.2.0/24', data: { pad: big } }, { cidr: '198.51.100.0/24', data: { x: 1 } }], { recordSize: 24 }), /too big/);
});

test('canonicalIp: IPv4-mapped to dotted quad, IPv6 compressed, junk to null', () => {
  assert.equal(canonicalIp('198.51.100.1'), '198.51.100.1');
  assert.equal(canonicalIp('::ffff:198.51.100.1'), '198.51.100.1');
  assert.equal(canonicalIp('::FFFF:c633:6401'), '198.51.100.1');
  assert.equal(canonicalIp('[2001:DB8:0:0::1]'), '2001:db8::1');
  assert.equal(canonicalIp('fe80::1%eth0'), 'fe80::1');
  for (const bad of ['', 'example.com', '01.2.3.4', '1.2.3', '256.1.1.1', '1::2::3', 'x'.repeat(1000), null, 42, undefined]) {
    assert.equal(canonicalIp(bad), null, String(bad).slice(0, 20));
  }
});

test('canonicalIp (geoip\'s own: geoip/ imports nothing from edge/) agrees with edge/net on every spelling', () => {
  // geoip/ is a leaf library, so it keeps its own canonicaliser; this pins it to edge/net's, so
  // the address the GeoIP stage looks up is the one the ban list and the access lists key on
  const same = (text: string): void => {
    const b = ipToBytes(text);
    assert.equal(canonicalIp(text), b === null ? null : canonicalAddress(text), text);
  };
  for (const t of ['198.51.100.1', '::ffff:198.51.100.1', '::FFFF:c633:6401', '[2001:DB8:0:0::1]', 'fe80::1%eth0', '::', '::1',
    '1::', '64:ff9b::192.0.2.33', '::ffff:0:0', '0:0:0:0:0:ffff:7f00:1', '', 'example.com', '01.2.3.4', '1.2.3', '256.1.1.1',
    '1::2::3', '1:2:3:4:5:6:7:8:9', '12345::', '::1.2.3', '1.2.3.4 ', ' 1.2.3.4', '[1.2.3.4]', 'x'.repeat(100)]) same(t);
  const group = fc.integer({ min: 0, max: 0xffff }).map((n) => n.toString(16));
  fc.assert(fc.property(fc.array(group, { minLength: 8, maxLength: 8 }), fc.integer({ min: 0, max: 8 }), fc.integer({ min: 0, max: 8 }), fc.boolean(), (g, a, len, mapped) => {
    if (mapped) { g[0] = g[1] = g[2] = g[3] = g[4] = '0'; g[5] = 'ffff'; }
    const b = Math.min(8, a + len);
    same(len >= 1 && a < 8 ? `${g.slice(0, a).join(':')}::${g.slice(b).join(':')}` : g.join(':'));
  }), { numRuns: 2000 });
  fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 300 }), { minLength: 3, maxLength: 5 }), (o) => same(o.join('.'))), { numRuns: 500 });
});

test('GeoDb: nested (GeoLite2) and flat (ip-location-db) layouts, ASN layout, any address spelling', async () => {
  const dir = tmpDir();
  writeMmdb(path.join(dir, 'country.mmdb'), NESTED, { databaseType: 'GeoLite2-Country' });
  writeMmdb(path.join(dir, 'flat.mmdb'), FLAT, { recordSize: 28, databaseType: 'geo-whois-asn-country' });
  writeMmdb(path.join(dir, 'asn.mmdb'), ASN, { recordSize: 32, databaseType: 'GeoLite2-ASN' });
  const nested = await GeoDb.open(path.join(dir, 'country.mmdb'), { watch: false });
  const flat = await GeoDb.open(path.join(dir, 'flat.mmdb'), { watch: false });
  const asn = await GeoDb.open(path.join(dir, 'asn.mmdb'), { watch: false });
  for (const db of [nested, flat]) {
    assert.deepEqual(db.lookup('198.51.100.1'), { country: 'CN' });
    assert.deepEqual(db.lookup('198.51.100.129'), { country: 'RU' });
    assert.deepEqual(db.lookup('::ffff:198.51.100.1'), { country: 'CN' }); // dual-stack socket spelling
    assert.deepEqual(db.lookup('[2001:DB8:DE::5]'), { country: 'DE' });
    assert.deepEqual(db.lookup('8.8.8.8'), {});
    assert.deepEqual(db.lookup('2001:db8:ff::1'), {});
  }
  assert.deepEqual(nested.lookup('192.0.2.3'), { country: 'NL' }); // registered_country fallback
  assert.deepEqual(asn.lookup('203.0.113.7'), { asn: 14061, asOrg: 'DIGITALOCEAN-ASN' });
  assert.deepEqual(asn.lookup('203.0.113.200'), {});
  assert.deepEqual(asn.lookup('2001:db8:de::1'), { asn: 3320, asOrg: 'Deutsche Telekom AG' });
  assert.equal(nested.info.databaseType, 'GeoLite2-Country');
  const both = combineGeo([flat, null, asn]);
  assert.deepEqual(both.lookup('203.0.113.7'), { country: 'US', asn: 14061, asOrg: 'DIGITALOCEAN-ASN' });
  assert.deepEqual(both.lookup('8.8.4.4'), {});
  assert.deepEqual(combineGeo([]).lookup('203.0.113.7'), {});
});

test('GeoDb: other ASN and country spellings ({ asn: "AS123" }, lower-case codes); junk records give {}', async () => {
  const dir = tmpDir();
  writeMmdb(path.join(dir, 'odd.mmdb'), [
    { cidr: '192.0.2.0/26', data: { asn: 'AS64500', as_name: 'EXAMPLE' } },
    { cidr: '192.0.2.64/26', data: { asn: 64501, country_code: 'de' } },
    { cidr: '192.0.2.128/26', data: { country_code: 'Germany', asn: 'lots' } },
    { cidr: '192.0.2.192/26', data: 'just a string' },
  ]);
  const db = await GeoDb.open(path.join(dir, 'odd.mmdb'), { watch: false });
  assert.deepEqual(db.lookup('192.0.2.1'), { asn: 64500, asOrg: 'EXAMPLE' });
  assert.deepEqual(db.lookup('192.0.2.65'), { country: 'DE', asn: 64501 });
  assert.deepEqual(db.lookup('192.0.2.129'), {});
  assert.deepEqual(db.lookup('192.0.2.193'), {});
});

test('GeoDb: total on hostile input; an IPv6 query on an IPv4-only database gives {}', async () => {
  const dir = tmpDir();
  writeMmdb(path.join(dir, 'v4.mmdb'), FLAT.filter((e) => !e.cidr.includes(':')), { ipVersion: 4 });
  const db = await GeoDb.open(path.join(dir, 'v4.mmdb'), { watch: false });
  assert.deepEqual(db.lookup('198.51.100.1'), { country: 'CN' });
  assert.deepEqual(db.lookup('2001:db8:de::1'), {});
  for (const bad of ['', 'not-an-ip', '999.1.1.1', '01.2.3.4', '\u0000', 'x'.repeat(100000), null, {}, 7]) {
    assert.deepEqual(db.lookup(bad as unknown as string), {});
  }
});

test('GeoDb.open refuses missing, truncated and non-MaxMind files with a readable error', async () => {
  const dir = tmpDir();
  await assert.rejects(GeoDb.open(path.join(dir, 'nope.mmdb')), /ENOENT|no such file/);
  const good = buildMmdb(FLAT);
  fs.writeFileSync(path.join(dir, 'trunc.mmdb'), good.subarray(0, Math.floor(good.length / 2)));
  await assert.rejects(GeoDb.open(path.join(dir, 'trunc.mmdb'), { watch: false }), /not a MaxMind DB file|truncated/);
  fs.writeFileSync(path.join(dir, 'junk.mmdb'), Buffer.from('hello world, this is not a database'));
  await assert.rejects(GeoDb.open(path.join(dir, 'junk.mmdb'), { watch: false }), /not a MaxMind DB file/);
  // a tree that claims more nodes than the file holds
  const lying = Buffer.from(good);
  const meta = lying.lastIndexOf(Buffer.from('node_count'));
  assert.ok(meta > 0);
  fs.writeFileSync(path.join(dir, 'lying.mmdb'), Buffer.concat([lying.subarray(0, 20), lying.subarray(lying.indexOf(Buffer.from([0xab, 0xcd, 0xef])))]));
  await assert.rejects(GeoDb.open(path.join(dir, 'lying.mmdb'), { watch: false }), /truncated|not a MaxMind|lookup failed/);
  // openGeoDatabases never rejects: the missing database is reported and counts as unknown
  const g = await openGeoDatabases({ countryDb: path.join(dir, 'nope.mmdb'), asnDb: null }, { watch: false });
  assert.equal(g.errors.length, 1);
  assert.match(g.errors[0]!, /nope\.mmdb/);
  assert.deepEqual(g.lookup('198.51.100.1'), {});
  g.close();
});

/** resolves with the next reload event; rejects after a generous bound so a broken watcher fails
 *  the test instead of hanging it (a guard, not a timing assertion) */
function nextEvent(events: ReloadEvent[], waiters: Array<(e: ReloadEvent) => void>): Promise<ReloadEvent> {
  const queued = events.shift();
  if (queued) return Promise.resolve(queued);
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no reload event within 20 s')), 20_000);
    waiters.push((e) => { clearTimeout(t); resolve(e); });
  });
}

test('GeoDb: reloads when the file is replaced on disk; keeps the old reader when the new file is corrupt', async () => {
  const dir = tmpDir();
  const file = path.join(dir, 'country.mmdb');
  writeMmdb(file, [{ cidr: '198.51.100.0/24', data: { country_code: 'CN' } }]);
  const events: ReloadEvent[] = [];
  const waiters: Array<(e: ReloadEvent) => void> = [];
  const db = await GeoDb.open(file, {
    debounceMs: 20,
    onReload: (e) => { const w = waiters.shift(); if (w) w(e); else events.push(e); },
  });
  try {
    assert.deepEqual(db.lookup('198.51.100.1'), { country: 'CN' });

    // 1. replaced by rename (how geoipupdate and npm write): the watcher reopens it
    writeMmdb(file, [{ cidr: '198.51.100.0/24', data: { country_code: 'BR' } }]);
    let e = await nextEvent(events, waiters);
    while (e.ok && db.lookup('198.51.100.1').country !== 'BR') e = await nextEvent(events, waiters);
    assert.equal(e.ok, true);
    assert.deepEqual(db.lookup('198.51.100.1'), { country: 'BR' });
    assert.equal(db.lastError, null);
    const reloads = db.reloadCount;
    assert.ok(reloads >= 1);

    // 2. a corrupt file: the old reader stays in service, the error is reported
    fs.writeFileSync(`${file}.tmp`, Buffer.from('garbage, not a database'));
    fs.renameSync(`${file}.tmp`, file);
    e = await nextEvent(events, waiters);
    while (e.ok) e = await nextEvent(events, waiters);
    assert.equal(e.ok, false);
    assert.match(e.ok ? '' : e.error, /not a MaxMind DB file/);
    assert.deepEqual(db.lookup('198.51.100.1'), { country: 'BR' });
    assert.match(db.lastError ?? '', /not a MaxMind DB file/);
    assert.equal(db.reloadCount, reloads);

    // 3. a manual reload of the still-corrupt file fails the same way and keeps the reader
    assert.equal(await db.reload(), false);
    assert.deepEqual(db.lookup('198.51.100.1'), { country: 'BR' });

    // 4. a good file again: back in business
    writeMmdb(file, [{ cidr: '198.51.100.0/24', data: { country: { iso_code: 'AR' } } }]);
    e = await nextEvent(events, waiters);
    while (!e.ok || db.lookup('198.51.100.1').country !== 'AR') e = await nextEvent(events, waiters);
    assert.deepEqual(db.lookup('198.51.100.1'), { country: 'AR' });
    assert.equal(db.lastError, null);
  } finally {
    db.close();
  }
  // after close, lookups still answer from the last reader and reload is a no-op
  assert.deepEqual(db.lookup('198.51.100.1'), { country: 'AR' });
  assert.equal(await db.reload(), false);
});

test('defaultCountryDbPath: the embedded ip-location-db database when installed, else null', async () => {
  const p = defaultCountryDbPath();
  let installed = false;
  try {
    require.resolve('@ip-location-db/geo-whois-asn-country-mmdb/package.json');
    installed = true;
  } catch {
    installed = false;
  }
  if (!installed) {
    assert.equal(p, null);
    const g = await openGeoDatabases({ countryDb: null, asnDb: null }, { watch: false });
    assert.deepEqual(g.errors, []);
    assert.deepEqual(g.lookup('8.8.8.8'), {}); // every country unknown
    return;
  }
  assert.ok(p !== null && p.endsWith(path.join('geo-whois-asn-country-mmdb', 'geo-whois-asn-country.mmdb')), String(p));
  const g = await openGeoDatabases({ countryDb: null, asnDb: null }, { watch: false });
  try {
    assert.deepEqual(g.errors, []);
    assert.ok(g.countryDb !== null);
    // flat layout; a large public resolver is in some country, loopback in none
    assert.match(g.lookup('8.8.8.8').country ?? '', /^[A-Z]{2}$/);
    assert.match(g.lookup('::ffff:8.8.8.8').country ?? '', /^[A-Z]{2}$/);
    assert.match(g.lookup('2001:4860:4860::8888').country ?? '', /^[A-Z]{2}$/);
    assert.deepEqual(g.lookup('127.0.0.1'), {});
  } finally {
    g.close();
  }
});

// ---- geoip.yaml and the stage

function compileText(yaml: string): { geo: CompiledGeo; errors: string[]; ruleNames: readonly string[] } {
  const r = loadYamlText(yaml, 'rules/geoip.yaml', GeoFileSchema);
  assert.ok(r.ok, `schema must accept: ${r.ok ? '' : r.errors.join('; ')}`);
  return compileGeo(r.value, r.at);
}

function geoOk(yaml: string): CompiledGeo {
  const r = compileText(yaml);
  assert.deepEqual(r.errors, []);
  return r.geo;
}

function snapshot(geoip: CompiledGeo): RulesSnapshot {
  return snapshotWith({ stages: [{ name: 'sanity', mode: 'enforce' }, { name: 'geoip', mode: 'enforce' }], trustedSkip: new Set(['geoip']), geoip });
}

function request(ruri: string): MessageContext['msg'] {
  const lines = [
    `OPTIONS ${ruri} SIP/2.0`,
    'Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-geo-1',
    'Max-Forwards: 70',
    'To: <sip:100@example.com>',
    'From: <sip:100@example.com>;tag=a1',
    'Call-ID: geo-test-1',
    'CSeq: 1 OPTIONS',
    'Content-Length: 0',
  ];
  const r = parseMessage(Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), { framing: 'datagram' });
  assert.ok(r.ok);
  return r.msg;
}

const DEFAULT_MSG = request('sip:100@example.com');

function ctx(address: string, over: { listenerId?: string; side?: 'inside' | 'outside'; msg?: MessageContext['msg'] } = {}): MessageContext {
  const source: Endpoint = { transport: 'udp', address, port: 5060, listenerId: over.listenerId ?? 'udp:127.0.0.1:5060' };
  return { msg: over.msg ?? DEFAULT_MSG, source, side: over.side ?? 'outside', trust: over.side === 'inside' ? 'inside' : 'untrusted', receivedAt: 0 };
}

let fixtureGeo: GeoSource | null = null;
async function fixture(): Promise<GeoSource> {
  if (fixtureGeo) return fixtureGeo;
  const dir = tmpDir();
  writeMmdb(path.join(dir, 'country.mmdb'), NESTED);
  writeMmdb(path.join(dir, 'asn.mmdb'), ASN, { recordSize: 28 });
  const g = await openGeoDatabases({ countryDb: path.join(dir, 'country.mmdb'), asnDb: path.join(dir, 'asn.mmdb') }, { watch: false });
  assert.deepEqual(g.errors, []);
  fixtureGeo = g;
  return g;
}

function run(geo: CompiledGeo, src: GeoSource, c: MessageContext): Verdict {
  const v = createGeoStage(() => snapshot(geo), src).check(c);
  assert.ok(!(v instanceof Promise));
  return v as Verdict;
}

// addresses in the fixture: 198.51.100.1 CN (AS4134), 198.51.100.200 RU, 203.0.113.7 US (AS14061),
// 203.0.113.200 US (no ASN), 2001:db8:de::1 DE (AS3320), 8.8.8.8 unknown, 127.0.0.1 loopback
test('stage: deny-list by country; unknown countries follow unknownCountry; loopback is unknown', async () => {
  const src = await fixture();
  const geo = geoOk('mode: deny\ncountries: [CN, ru]\n');
  assert.deepEqual(run(geo, src, ctx('198.51.100.1')), { action: 'drop', reason: 'country_blocked', rule: 'geoip:default' });
  assert.deepEqual(run(geo, src, ctx('198.51.100.200')), { action: 'drop', reason: 'country_blocked', rule: 'geoip:default' });
  assert.deepEqual(run(geo, src, ctx('::ffff:198.51.100.1')), { action: 'drop', reason: 'country_blocked', rule: 'geoip:default' });
  assert.deepEqual(run(geo, src, ctx('203.0.113.7')), { action: 'continue' });
  assert.deepEqual(run(geo, src, ctx('8.8.8.8')), { action: 'continue' });
  const strict = geoOk('mode: deny\ncountries: [CN]\nunknownCountry: deny\naction: reject\n');
  assert.deepEqual(run(strict, src, ctx('8.8.8.8')), { action: 'reply', status: 403, reason: 'country_unknown', phrase: 'Forbidden', rule: 'geoip:default' });
  // the fixture says 127/8 is US; the stage knows better: loopback has no country
  assert.deepEqual(run(strict, src, ctx('127.0.0.1')).action, 'reply');
  assert.equal((run(strict, src, ctx('127.0.0.1')) as { reason: string }).reason, 'country_unknown');
  assert.equal((run(strict, src, ctx('::1')) as { reason: string }).reason, 'country_unknown');
  assert.deepEqual(run(geo, src, ctx('127.0.0.1')), { action: 'continue' });
  assert.equal(isUnlocatable('10.1.2.3') && isUnlocatable('192.168.1.1') && isUnlocatable('fe80::1') && isUnlocatable('100.64.0.1'), true);
  assert.equal(isUnlocatable('198.51.100.1') || isUnlocatable('2001:db8::1'), false);
});

test('stage: allow-list by country', async () => {
  const src = await fixture();
  const geo = geoOk('mode: allow\ncountries: [DE, US]\n');
  assert.deepEqual(run(geo, src, ctx('198.51.100.1')), { action: 'drop', reason: 'country_not_allowed', rule: 'geoip:default' });
  assert.deepEqual(run(geo, src, ctx('203.0.113.200')), { action: 'continue' });
  assert.deepEqual(run(geo, src, ctx('2001:db8:de::1')), { action: 'continue' });
  assert.deepEqual(run(geo, src, ctx('8.8.8.8')), { action: 'continue' }); // unknownCountry: allow (default)
  assert.equal((run(geoOk('mode: allow\ncountries: [DE]\nunknownCountry: deny\n'), src, ctx('8.8.8.8')) as { reason: string }).reason, 'country_unknown');
});

test('stage: denied ASNs win over an allowed country; without a country policy ASNs still apply', async () => {
  const src = await fixture();
  const geo = geoOk('mode: allow\ncountries: [US, DE]\ndenyAsns: [14061]\n');
  assert.deepEqual(run(geo, src, ctx('203.0.113.7')), { action: 'drop', reason: 'asn_blocked', rule: 'geoip:default' });
  assert.deepEqual(run(geo, src, ctx('203.0.113.200')), { action: 'continue' }); // same country, other AS
  const asnOnly = geoOk('denyAsns: [3320]\n');
  assert.deepEqual(run(asnOnly, src, ctx('2001:db8:de::1')), { action: 'drop', reason: 'asn_blocked', rule: 'geoip:default' });
  assert.deepEqual(run(asnOnly, src, ctx('198.51.100.1')), { action: 'continue' });
  assert.deepEqual(run(asnOnly, src, ctx('8.8.8.8')), { action: 'continue' });
});

test('stage: listener and domain overrides inherit unset fields; domain beats listener', async () => {
  const src = await fixture();
  const r = compileText(`
mode: deny
countries: [CN]
unknownCountry: deny
listeners:
  - { listener: "UDP:127.0.0.1:5062", mode: off }
  - { listener: "udp:127.0.0.1:5063", unknownCountry: allow }
domains:
  - { domain: PBX.example.com., mode: allow, countries: [CN] }
`);
  assert.deepEqual(r.errors, []);
  assert.deepEqual([...r.ruleNames], ['geoip:default', 'geoip:listener:udp:127.0.0.1:5062', 'geoip:listener:udp:127.0.0.1:5063', 'geoip:domain:pbx.example.com']);
  const geo = r.geo;
  // default policy
  assert.equal((run(geo, src, ctx('198.51.100.1')) as { reason: string }).reason, 'country_blocked');
  // listener 5062 has no country check at all
  assert.deepEqual(run(geo, src, ctx('198.51.100.1', { listenerId: 'udp:127.0.0.1:5062' })), { action: 'continue' });
  assert.deepEqual(run(geo, src, ctx('8.8.8.8', { listenerId: 'udp:127.0.0.1:5062' })), { action: 'continue' });
  // listener 5063 inherits the deny-list, only unknownCountry differs
  assert.deepEqual(run(geo, src, ctx('198.51.100.1', { listenerId: 'udp:127.0.0.1:5063' })), { action: 'drop', reason: 'country_blocked', rule: 'geoip:listener:udp:127.0.0.1:5063' });
  assert.deepEqual(run(geo, src, ctx('8.8.8.8', { listenerId: 'udp:127.0.0.1:5063' })), { action: 'continue' });
  // the domain override: only CN, and it inherits unknownCountry: deny
  const toPbx = request('sip:100@pbx.example.com');
  assert.deepEqual(run(geo, src, ctx('198.51.100.1', { msg: toPbx, listenerId: 'udp:127.0.0.1:5062' })), { action: 'continue' });
  assert.deepEqual(run(geo, src, ctx('2001:db8:de::1', { msg: toPbx, listenerId: 'udp:127.0.0.1:5062' })), { action: 'drop', reason: 'country_not_allowed', rule: 'geoip:domain:pbx.example.com' });
  assert.equal((run(geo, src, ctx('8.8.8.8', { msg: toPbx })) as { reason: string }).reason, 'country_unknown');
});

test('stage: inside traffic passes; a throwing lookup counts as unknown; shape of the stage', async () => {
  const src = await fixture();
  const geo = geoOk('mode: deny\ncountries: [CN]\nunknownCountry: deny\n');
  assert.deepEqual(run(geo, src, ctx('198.51.100.1', { side: 'inside' })), { action: 'continue' });
  const broken: GeoSource = { lookup: () => { throw new Error('boom'); } };
  assert.equal((run(geo, broken, ctx('198.51.100.1')) as { reason: string }).reason, 'country_unknown');
  const nothing: GeoSource = { lookup: () => ({}) };
  assert.deepEqual(run(geoOk('mode: deny\ncountries: [CN]\n'), nothing, ctx('198.51.100.1')), { action: 'continue' });
  const stage = createGeoStage(() => snapshot(geo), src);
  assert.equal(stage.name, 'geoip');
  assert.equal(stage.skippableForTrusted, true);
  assert.deepEqual([...stage.reasons], ['country_blocked', 'country_not_allowed', 'country_unknown', 'asn_blocked']);
  assert.deepEqual([...GEO_REASONS], [...stage.reasons]);
  // off by default: an empty geoip.yaml says nothing, even for unknown countries
  const empty = geoOk('');
  assert.equal(empty.policy.countryMode, 'off');
  assert.equal(empty.countryDb, null);
  assert.deepEqual(run(empty, src, ctx('8.8.8.8')), { action: 'continue' });
});

test('geoip.yaml: country codes validated with positions and hints; contradictions and duplicates refused', () => {
  const r = compileText(`mode: deny
countries: [CN, UK, XX, xk]
listeners:
  - { listener: "udp:0.0.0.0:5060", mode: allow, countries: [] }
  - { listener: "udp:0.0.0.0:5060", mode: off }
  - { listener: "bogus", mode: off }
domains:
  - { domain: "not a domain!", mode: off }
`);
  assert.deepEqual(r.errors, [
    'rules/geoip.yaml:2:17: unknown country code "UK" (expected ISO 3166-1 alpha-2; did you mean "GB"?)',
    'rules/geoip.yaml:2:21: unknown country code "XX" (expected ISO 3166-1 alpha-2)',
    'rules/geoip.yaml:4:43: mode allow needs at least one country in countries',
    'rules/geoip.yaml:5:17: listener "udp:0.0.0.0:5060" has two overrides',
    'rules/geoip.yaml:6:17: expected a listener id "proto:host:port" (got "bogus")',
    'rules/geoip.yaml:8:15: expected a domain name (got "not a domain!")',
  ]);
  assert.ok(r.geo.policy.countries.has('XK')); // Kosovo, as GeoIP data spells it
  const top = compileText('mode: allow\n');
  assert.deepEqual(top.errors, ['rules/geoip.yaml:1:7: mode allow needs at least one country in countries']);
  const schemaErr = loadYamlText('mode: block\ndenyAsns: [-1]\ncountrydb: x\n', 'rules/geoip.yaml', GeoFileSchema);
  assert.ok(!schemaErr.ok);
  assert.match(schemaErr.errors.join('\n'), /rules\/geoip\.yaml:1:7: mode: expected allow, deny or off/);
  assert.match(schemaErr.errors.join('\n'), /rules\/geoip\.yaml:2:12: denyAsns\[0\]: expected an AS number/);
  assert.match(schemaErr.errors.join('\n'), /rules\/geoip\.yaml:3:1: unknown key "countrydb" \(did you mean "countryDb"\?\)/);
  const paths = geoOk('countryDb: /var/lib/GeoIP/GeoLite2-Country.mmdb\nasnDb: /var/lib/GeoIP/GeoLite2-ASN.mmdb\n');
  assert.equal(paths.countryDb, '/var/lib/GeoIP/GeoLite2-Country.mmdb');
  assert.equal(paths.asnDb, '/var/lib/GeoIP/GeoLite2-ASN.mmdb');
});
