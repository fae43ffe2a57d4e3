// A small writer of MaxMind DB format v2 files, for deterministic GeoIP fixtures
// (MaxMind DB File Format Specification v2.0, https://maxmind.github.io/MaxMind-DB/).
//
// Layout written:
//   search tree   node_count nodes of two records (24, 28 or 32 bits each). A record is
//                 another node (< node_count), "no data" (== node_count), or a data pointer
//                 (node_count + 16 + offset into the data section).
//                 28-bit nodes: left = (b[3] >> 4) << 24 | b[0..2], right = (b[3] & 0x0f) << 24 | b[4..6].
//   separator     16 zero bytes
//   data section  one encoded value per distinct record (maps, UTF-8 strings, uint32, ...)
//   metadata      "\xAB\xCD\xEFMaxMind.com" then a map: node_count, record_size, ip_version,
//                 database_type, languages, binary_format_major/minor_version, build_epoch,
//                 description
// ip_version 6 trees hold IPv4 at ::/96 (the spec's "IPv4 addresses in an IPv6 tree"), which is
// where readers (mmdb-lib's ipv4Start) look for them.
// Overlapping entries: the longest prefix wins, as in MaxMind's own writer.
import * as fs from 'node:fs';
import { ipToBytes } from '../../edge/net/address';

export type MmdbValue = string | number | boolean | bigint | readonly MmdbValue[] | { readonly [k: string]: MmdbValue };

export interface MmdbEntry {
  readonly cidr: string;
  readonly data: MmdbValue;
}

export interface MmdbOptions {
  readonly ipVersion?: 4 | 6;
  readonly recordSize?: 24 | 28 | 32;
  readonly databaseType?: string;
  readonly languages?: readonly string[];
  readonly description?: Readonly<Record<string, string>>;
  /** seconds since the epoch (default a fixed date, so files are byte-for-byte reproducible) */
  readonly buildEpoch?: number;
}

// data types (spec "Output Data Section")
const T_STRING = 2;
const T_DOUBLE = 3;
const T_UINT16 = 5;
const T_UINT32 = 6;
const T_MAP = 7;
const T_INT32 = 8;
const T_UINT64 = 9;
const T_ARRAY = 11;
const T_BOOLEAN = 14;

/** control byte (+ extended type byte) + size bytes (spec "Data Field Format") */
function control(type: number, size: number): Buffer {
  const out: number[] = [];
  let sizeBits: number;
  const extra: number[] = [];
  if (size < 29) sizeBits = size;
  else if (size < 29 + 256) { sizeBits = 29; extra.push(size - 29); }
  else if (size < 285 + 65536) { sizeBits = 30; const v = size - 285; extra.push(v >> 8, v & 0xff); }
  else { sizeBits = 31; const v = size - 65821; extra.push((v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff); }
  if (type <= 7) {
    out.push((type << 5) | sizeBits);
  } else {
    // extended type: type bits 0, the next byte holds type - 7, the size bytes follow it
    out.push(sizeBits);
    out.push(type - 7);
  }
  out.push(...extra);
  return Buffer.from(out);
}

/** unsigned big-endian integer with no leading zero bytes (size = byte count; 0 -> size 0) */
function uintBytes(v: bigint): Buffer {
  const bytes: number[] = [];
  let x = v;
  while (x > 0n) {
    bytes.unshift(Number(x & 0xffn));
    x >>= 8n;
  }
  return Buffer.from(bytes);
}

export function encodeValue(v: MmdbValue): Buffer {
  if (typeof v === 'string') {
    const b = Buffer.from(v, 'utf8');
    return Buffer.concat([control(T_STRING, b.length), b]);
  }
  if (typeof v === 'boolean') return control(T_BOOLEAN, v ? 1 : 0); // the size is the value
  if (typeof v === 'bigint') {
    if (v < 0n || v >= 1n << 64n) throw new Error(`uint64 out of range: ${v}`);
    const b = uintBytes(v);
    return Buffer.concat([control(T_UINT64, b.length), b]);
  }
  if (typeof v === 'number') {
    if (Number.isInteger(v) && v >= 0 && v <= 0xffffffff) {
      const b = uintBytes(BigInt(v));
      return Buffer.concat([control(v <= 0xffff ? T_UINT16 : T_UINT32, b.length), b]);
    }
    if (Number.isInteger(v) && v < 0 && v >= -0x80000000) {
      const b = Buffer.alloc(4);
      b.writeInt32BE(v);
      return Buffer.concat([control(T_INT32, 4), b]);
    }
    const b = Buffer.alloc(8);
    b.writeDoubleBE(v);
    return Buffer.concat([control(T_DOUBLE, 8), b]);
  }
  if (Array.isArray(v)) {
    const arr = v as readonly MmdbValue[];
    return Buffer.concat([control(T_ARRAY, arr.length), ...arr.map(encodeValue)]);
  }
  const obj = v as { readonly [k: string]: MmdbValue };
  const keys = Object.keys(obj);
  const parts: Buffer[] = [control(T_MAP, keys.length)];
  for (const k of keys) parts.push(encodeValue(k), encodeValue(obj[k]!));
  return Buffer.concat(parts);
}

type Rec = { kind: 'empty' } | { kind: 'data'; idx: number } | { kind: 'node'; node: TreeNode };
interface TreeNode { left: Rec; right: Rec; id: number }

const EMPTY_REC: Rec = { kind: 'empty' };

function prefixBits(cidr: string, ipVersion: 4 | 6): { bits: Uint8Array; len: number } {
  const slash = cidr.indexOf('/');
  const addr = slash < 0 ? cidr : cidr.slice(0, slash);
  const b = ipToBytes(addr);
  if (b === null) throw new Error(`bad address in ${cidr}`);
  let len = slash < 0 ? b.length * 8 : Number(cidr.slice(slash + 1));
  const isV6Text = addr.includes(':');
  if (isV6Text && b.length === 4) len -= 96; // ::ffff:a.b.c.d/n spelled entries
  if (!Number.isInteger(len) || len < 0 || len > b.length * 8) throw new Error(`bad prefix in ${cidr}`);
  if (ipVersion === 4) {
    if (b.length !== 4) throw new Error(`IPv6 entry ${cidr} in an ip_version 4 tree`);
    return { bits: b, len };
  }
  if (b.length === 16) return { bits: b, len };
  const full = new Uint8Array(16); // IPv4 at ::/96
  full.set(b, 12);
  return { bits: full, len: len + 96 };
}

function bitAt(b: Uint8Array, i: number): number {
  return (b[i >> 3]! >> (7 - (i & 7))) & 1;
}

/** Build a MaxMind DB file in memory. */
export function buildMmdb(entries: readonly MmdbEntry[], opts: MmdbOptions = {}): Buffer {
  const ipVersion = opts.ipVersion ?? 6;
  const recordSize = opts.recordSize ?? 24;

  // data section: one encoding per distinct value
  const dataIdx = new Map<string, number>();
  const datas: Buffer[] = [];
  const prepared = entries.map((e) => {
    const key = JSON.stringify(e.data, (_k, val: unknown) => (typeof val === 'bigint' ? `${val}n` : val));
    let idx = dataIdx.get(key);
    if (idx === undefined) {
      idx = datas.length;
      datas.push(encodeValue(e.data));
      dataIdx.set(key, idx);
    }
    return { ...prefixBits(e.cidr, ipVersion), idx };
  });
  // shorter prefixes first: a longer one then splits the shorter one's leaf on its way down,
  // so the longest prefix wins wherever they overlap
  prepared.sort((a, b) => a.len - b.len);

  const root: TreeNode = { left: EMPTY_REC, right: EMPTY_REC, id: 0 };
  for (const p of prepared) {
    const leaf: Rec = { kind: 'data', idx: p.idx };
    if (p.len === 0) { root.left = leaf; root.right = leaf; continue; }
    let cur = root;
    for (let i = 0; i < p.len; i++) {
      const side = bitAt(p.bits, i) === 1 ? 'right' : 'left';
      if (i === p.len - 1) { cur[side] = leaf; break; }
      const r = cur[side];
      if (r.kind === 'node') { cur = r.node; continue; }
      // split an empty or a shorter prefix's leaf: both halves keep what was there
      const n: TreeNode = { left: r, right: r, id: -1 };
      cur[side] = { kind: 'node', node: n };
      cur = n;
    }
  }

  // number the nodes breadth first; the root must be node 0
  const order: TreeNode[] = [root];
  for (let i = 0; i < order.length; i++) {
    const n = order[i]!;
    n.id = i;
    if (n.left.kind === 'node') order.push(n.left.node);
    if (n.right.kind === 'node') order.push(n.right.node);
  }
  const nodeCount = order.length;
  const dataOffsets: number[] = [];
  let off = 0;
  for (const d of datas) { dataOffsets.push(off); off += d.length; }
  const recValue = (r: Rec): number =>
    r.kind === 'node' ? r.node.id : r.kind === 'empty' ? nodeCount : nodeCount + 16 + dataOffsets[r.idx]!;
  const maxValue = nodeCount + 16 + off;
  if (maxValue >= 2 ** recordSize) throw new Error(`tree too big for ${recordSize}-bit records`);

  const nodeBytes = recordSize / 4;
  const tree = Buffer.alloc(nodeCount * nodeBytes);
  for (const n of order) {
    const o = n.id * nodeBytes;
    const l = recValue(n.left);
    const r = recValue(n.right);
    if (recordSize === 24) {
      tree.writeUIntBE(l, o, 3);
      tree.writeUIntBE(r, o + 3, 3);
    } else if (recordSize === 28) {
      tree.writeUIntBE(l & 0xffffff, o, 3);
      tree[o + 3] = ((l >>> 24) << 4) | (r >>> 24);
      tree.writeUIntBE(r & 0xffffff, o + 4, 3);
    } else {
      tree.writeUInt32BE(l, o);
      tree.writeUInt32BE(r, o + 4);
    }
  }

  const meta = Buffer.concat([
    control(T_MAP, 9),
    encodeValue('node_count'), u32(nodeCount),
    encodeValue('record_size'), u16(recordSize),
    encodeValue('ip_version'), u16(ipVersion),
    encodeValue('database_type'), encodeValue(opts.databaseType ?? 'sip-edge-test'),
    encodeValue('languages'), encodeValue([...(opts.languages ?? ['en'])]),
    encodeValue('binary_format_major_version'), u16(2),
    encodeValue('binary_format_minor_version'), u16(0),
    encodeValue('build_epoch'), encodeValue(BigInt(opts.buildEpoch ?? 1_700_000_000)),
    encodeValue('description'), encodeValue({ ...(opts.description ?? { en: 'sip-edge test fixture' }) }),
  ]);
  return Buffer.concat([tree, Buffer.alloc(16), ...datas, Buffer.from([0xab, 0xcd, 0xef]), Buffer.from('MaxMind.com', 'latin1'), meta]);
}

/** metadata integers with the exact type the spec names (uint16 / uint32) */
function u16(v: number): Buffer {
  const b = uintBytes(BigInt(v));
  return Buffer.concat([control(T_UINT16, b.length), b]);
}
function u32(v: number): Buffer {
  const b = uintBytes(BigInt(v));
  return Buffer.concat([control(T_UINT32, b.length), b]);
}

/** Write a database atomically (temp file + rename, as database updaters do). */
export function writeMmdb(file: string, entries: readonly MmdbEntry[], opts: MmdbOptions = {}): void {
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, buildMmdb(entries, opts));
  fs.renameSync(tmp, file);
}
