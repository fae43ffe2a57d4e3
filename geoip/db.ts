// GeoIP database over MaxMind DB format files (the npm `maxmind` package, 5.x, pure JS).
//
// One GeoDb wraps one .mmdb file of any of the layouts found in the wild:
//   - GeoLite2 / GeoIP2 Country and City: nested  { country: { iso_code: 'DE' }, registered_country: {...} }
//   - @ip-location-db country databases:   flat    { country_code: 'DE' }
//   - GeoLite2-ASN (and ip-location-db ASN): { autonomous_system_number: 3320, autonomous_system_organization: '...' }
//   - other ASN layouts seen:                { asn: 3320 | 'AS3320', as_org | as_name: '...' }
// lookup() is total: bad input, an address the file does not cover, a record of another shape
// or a reader error all give {} (unknown), never a throw, so a hostile source address cannot
// crash the edge through the GeoIP stage.
//
// Reload: the directory holding the file is watched, because database updaters (geoipupdate, npm,
// cron + curl) replace the file by rename and a watch on the old inode would never fire again. A
// changed file is reopened after a short debounce; if the new file cannot be opened or fails
// validation, the old reader stays in service and the error is reported. The watching, the
// debounce, the swap and keeping the old reader are lib/watched-file.ts, the same holder as the
// rules and the users files.
// Leaf library: imports nothing from edge/ (lib/watched-file.ts imports nothing of the project).
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as maxmind from 'maxmind';
import { fileStamp, WatchedFile } from '../lib/watched-file';
import { canonicalIp } from './address';

export interface GeoInfo {
  /** ISO 3166-1 alpha-2, upper-case */
  readonly country?: string;
  readonly asn?: number;
  readonly asOrg?: string;
}

/** What the GeoIP stage needs: a total, synchronous lookup. */
export interface GeoLookup {
  lookup(addr: string): GeoInfo;
}

export type ReloadEvent =
  | { readonly ok: true; readonly path: string }
  | { readonly ok: false; readonly path: string; readonly error: string };

export interface GeoDbOptions {
  /** reopen when the file changes on disk (default true) */
  readonly watch?: boolean;
  /** wait this long after the last change event before reopening (default 200 ms): an updater
   *  writing in several chunks must not make us parse half a file each time */
  readonly debounceMs?: number;
  /** called after every reload attempt (success or failure) */
  readonly onReload?: (e: ReloadEvent) => void;
  /** decoded-record cache entries (default 10,000; bounded LRU inside `maxmind`) */
  readonly cacheSize?: number;
}

/** Bigger files are refused: the largest MaxMind product (City) is under 100 MiB. */
export const MAX_DB_BYTES = 512 * 1024 * 1024;
const EMPTY: GeoInfo = Object.freeze({});
const COUNTRY_RE = /^[A-Za-z]{2}$/;
const MAX_ORG_CHARS = 256;

type Reader = maxmind.Reader<maxmind.Response>;

function errText(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.length > 300 ? `${m.slice(0, 297)}...` : m;
}

/** Open and validate one file; throws with a readable message. */
async function openReader(file: string, cacheSize: number): Promise<Reader> {
  const st = await fs.promises.stat(file);
  if (!st.isFile()) throw new Error(`${file}: not a regular file`);
  if (st.size > MAX_DB_BYTES) throw new Error(`${file}: larger than ${MAX_DB_BYTES} bytes`);
  let reader: Reader;
  try {
    reader = await maxmind.open<maxmind.Response>(file, { cache: { max: cacheSize } });
  } catch (e) {
    throw new Error(`${file}: not a MaxMind DB file (${errText(e)})`);
  }
  const md = reader.metadata;
  // MaxMind DB spec, "Database Metadata": record_size is 24, 28 or 32; ip_version 4 or 6; the
  // tree plus the 16-byte separator must fit in the file. mmdb-lib trusts these, so a truncated
  // file would otherwise fail only later, on some lookup.
  if (![24, 28, 32].includes(md.recordSize)) throw new Error(`${file}: unsupported record size ${md.recordSize}`);
  if (md.ipVersion !== 4 && md.ipVersion !== 6) throw new Error(`${file}: unsupported ip_version ${md.ipVersion}`);
  if (md.binaryFormatMajorVersion !== 2) throw new Error(`${file}: unsupported format version ${md.binaryFormatMajorVersion}`);
  if (!(md.nodeCount > 0) || md.searchTreeSize + 16 > st.size) throw new Error(`${file}: search tree larger than the file (truncated?)`);
  // probe a few lookups: a corrupt data section throws here instead of on live traffic
  try {
    reader.get('1.1.1.1');
    reader.get('8.8.8.8');
    if (md.ipVersion === 6) reader.get('2001:4860::1');
  } catch (e) {
    throw new Error(`${file}: lookup failed (${errText(e)})`);
  }
  return reader;
}

function pickCountry(rec: Record<string, unknown>): string | undefined {
  const nested = (k: string): unknown => {
    const v = rec[k];
    return v !== null && typeof v === 'object' ? (v as Record<string, unknown>).iso_code : undefined;
  };
  // GeoIP2: `country` is where the address is used; `registered_country` (where the block is
  // registered) is the fallback when MaxMind has no location (satellite, anycast).
  for (const c of [nested('country'), rec.country_code, nested('registered_country')]) {
    if (typeof c === 'string' && COUNTRY_RE.test(c)) return c.toUpperCase();
  }
  return undefined;
}

function pickAsn(rec: Record<string, unknown>): number | undefined {
  for (const v of [rec.autonomous_system_number, rec.asn]) {
    if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff) return v;
    if (typeof v === 'string') {
      const m = /^(?:AS)?([0-9]{1,10})$/i.exec(v);
      if (m) {
        const n = Number(m[1]);
        if (n <= 0xffffffff) return n;
      }
    }
  }
  return undefined;
}

function pickOrg(rec: Record<string, unknown>): string | undefined {
  for (const v of [rec.autonomous_system_organization, rec.as_org, rec.as_name, rec.organization]) {
    if (typeof v === 'string' && v.length > 0) return v.length > MAX_ORG_CHARS ? v.slice(0, MAX_ORG_CHARS) : v;
  }
  return undefined;
}

/** Extract the fields we use from a record of any known layout. */
export function geoInfoFromRecord(rec: unknown): GeoInfo {
  if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) return EMPTY;
  const r = rec as Record<string, unknown>;
  return geoInfo(pickCountry(r), pickAsn(r), pickOrg(r));
}

/** a GeoInfo holding only the fields that are known (EMPTY when none is) */
function geoInfo(country: string | undefined, asn: number | undefined, asOrg: string | undefined): GeoInfo {
  if (country === undefined && asn === undefined && asOrg === undefined) return EMPTY;
  const out: { country?: string; asn?: number; asOrg?: string } = {};
  if (country !== undefined) out.country = country;
  if (asn !== undefined) out.asn = asn;
  if (asOrg !== undefined) out.asOrg = asOrg;
  return out;
}

export class GeoDb extends WatchedFile<Reader> implements GeoLookup {
  private lastErr: string | null = null;
  private reloads = 0;

  private constructor(readonly path: string, reader: Reader, private readonly opts: GeoDbOptions, stamp: string | undefined) {
    super(reader, { file: path, ...(opts.debounceMs !== undefined ? { debounceMs: opts.debounceMs } : {}) }, stamp);
    this.on('reloaded', () => {
      this.lastErr = null;
      this.reloads++;
      this.notify({ ok: true, path: this.path });
    });
    this.on('failed', (errors) => {
      this.lastErr = errors[0] ?? 'reload failed';
      this.notify({ ok: false, path: this.path, error: this.lastErr });
    });
    this.on('watchError', (_dir, message) => {
      this.lastErr = `watch: ${errText(message)}`;
    });
  }

  /** Open a database; rejects with a readable Error when the file is missing or not valid. */
  static async open(file: string, opts: GeoDbOptions = {}): Promise<GeoDb> {
    const abs = path.resolve(file);
    const stamp = fileStamp(abs);
    const reader = await openReader(abs, opts.cacheSize ?? 10_000);
    const db = new GeoDb(abs, reader, opts, stamp);
    if (opts.watch !== false) db.watch();
    return db;
  }

  /** Total lookup on any address spelling; {} when unknown or on any error. */
  lookup(addr: string): GeoInfo {
    const ip = canonicalIp(addr);
    if (ip === null) return EMPTY;
    try {
      return geoInfoFromRecord(this.current().get(ip));
    } catch {
      return EMPTY;
    }
  }

  /** metadata of the reader in service */
  get info(): { readonly databaseType: string; readonly ipVersion: number; readonly nodeCount: number; readonly buildEpoch: Date } {
    const md = this.current().metadata;
    return { databaseType: md.databaseType, ipVersion: md.ipVersion, nodeCount: md.nodeCount, buildEpoch: md.buildEpoch };
  }

  /** the error of the last failed reload (null after a successful one) */
  get lastError(): string | null { return this.lastErr; }

  /** number of successful reloads since open */
  get reloadCount(): number { return this.reloads; }

  /** Reopen now. Resolves true when the new file is in service, false when the old one stays
   *  (and after close(): a closed database is not reloaded any more). */
  reload(): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    return this.loadAsync(async () => {
      try {
        return { ok: true, value: await openReader(this.path, this.opts.cacheSize ?? 10_000) };
      } catch (e) {
        return { ok: false, errors: [errText(e)] };
      }
    }).then((r) => r.ok);
  }

  private notify(e: ReloadEvent): void {
    try {
      this.opts.onReload?.(e);
    } catch {
      // a throwing listener must not break reloading
    }
  }
}

/** Several databases as one lookup (country db + ASN db): for each field, the first db that
 *  knows it wins. Missing (null) databases are skipped; with none, every lookup is {}. */
export function combineGeo(dbs: ReadonlyArray<GeoLookup | null | undefined>): GeoLookup {
  const list = dbs.filter((d): d is GeoLookup => d !== null && d !== undefined);
  if (list.length === 0) return { lookup: () => EMPTY };
  if (list.length === 1) return list[0]!;
  return {
    lookup(addr: string): GeoInfo {
      let country: string | undefined;
      let asn: number | undefined;
      let asOrg: string | undefined;
      for (const d of list) {
        let r: GeoInfo;
        try {
          r = d.lookup(addr);
        } catch {
          continue;
        }
        country ??= r.country;
        asn ??= r.asn;
        asOrg ??= r.asOrg;
      }
      return geoInfo(country, asn, asOrg);
    },
  };
}

/** The package and file of the embedded default country database (CC0 package metadata; the
 *  data itself credits the RIRs/NRO under CC BY 4.0, see its README). */
export const DEFAULT_COUNTRY_DB_PACKAGE = '@ip-location-db/geo-whois-asn-country-mmdb';
/** IPv4 + IPv6 in one tree (the package also ships -ipv4.mmdb and -ipv6.mmdb halves) */
export const DEFAULT_COUNTRY_DB_FILE = 'geo-whois-asn-country.mmdb';

/** Path of the embedded default country database, or null when the package is not installed
 *  (then every country is unknown and the geoip policy's unknownCountry decides). */
export function defaultCountryDbPath(): string | null {
  try {
    const pkg = require.resolve(`${DEFAULT_COUNTRY_DB_PACKAGE}/package.json`);
    const file = path.join(path.dirname(pkg), DEFAULT_COUNTRY_DB_FILE);
    return fs.statSync(file).isFile() ? file : null;
  } catch {
    return null;
  }
}

export interface OpenedGeo extends GeoLookup {
  readonly countryDb: GeoDb | null;
  readonly asnDb: GeoDb | null;
  /** one line per database that could not be opened (the lookup then treats it as unknown) */
  readonly errors: readonly string[];
  close(): void;
}

/** Open the country and ASN databases of a geoip rule set. countryDb null = embedded default
 *  (none when the package is absent); asnDb null = no ASN database. Never rejects. */
export async function openGeoDatabases(
  paths: { readonly countryDb: string | null; readonly asnDb: string | null },
  opts: GeoDbOptions = {},
): Promise<OpenedGeo> {
  const errors: string[] = [];
  const tryOpen = async (p: string | null): Promise<GeoDb | null> => {
    if (p === null) return null;
    try {
      return await GeoDb.open(p, opts);
    } catch (e) {
      errors.push(errText(e));
      return null;
    }
  };
  const countryPath = paths.countryDb ?? defaultCountryDbPath();
  const [countryDb, asnDb] = await Promise.all([tryOpen(countryPath), tryOpen(paths.asnDb)]);
  const combined = combineGeo([countryDb, asnDb]);
  return {
    countryDb,
    asnDb,
    errors,
    lookup: (addr: string) => combined.lookup(addr),
    close() {
      countryDb?.close();
      asnDb?.close();
    },
  };
}
