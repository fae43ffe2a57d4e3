// Topology hiding (what Kamailio's topoh/topos and SBCs do): nothing the edge sends to the
// outside names an inside host. Stateless: everything the edge needs to undo a rewrite travels in
// the message itself as a sealed token (AES-256-CTR + HMAC-SHA-256, encrypt-then-MAC), so it
// survives restarts of nothing (no table) and fails closed: a token that does not authenticate is
// never expanded (the request then routes as if the token were an ordinary URI user, which the
// proxy's own rules refuse from outside).
//
// What is rewritten on the way out (to the outside side):
// - Via: the Vias under the edge's own (the PBX's, RFC 3261 16.6 item 8 keeps them) are folded
//   into a `setv` parameter of the edge's Via; the reply carries it back (RFC 3261 8.2.6.2 / 16.7:
//   Vias are copied into responses), and inbound() restores them before the proxy looks.
// - Record-Route: the entries on the inside of the edge's outside-facing entry (the PBX's own and
//   the edge's inside entry) are folded into a `setr` parameter of that entry. The peer's route
//   set then holds only the edge; inbound() unfolds it again in Route (requests) and
//   Record-Route (responses), in the order RFC 3261 12.1.1 / 12.1.2 gives the route set.
// - Contact (not in REGISTER transactions from outside: those are the phone's own bindings): the
//   URI becomes `sip:<sealed original>@<edge>`; a Request-URI naming it (the remote target,
//   RFC 3261 12.2.1.1) is turned back into the original by inbound().
// - Call-ID is not masked yet: with a PBX that proxies (both legs outside) the same dialog needs
//   the masked Call-ID on one leg and the original on the other, which a stateless rewrite at the
//   send path cannot tell apart once the edge's Route entries are popped (see README).
// - Header policy: Server, User-Agent, Organization, Warning and the named X- headers removed or
//   replaced (they fingerprint the PBX).
// SDP is not rewritten (the edge relays no media): sdpInside() only reports c=/o= addresses that
// are inside, so the operator can fix the PBX's NAT settings.
import { createCipheriv, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import * as H from '../sip/headers';
import { parseMessage } from '../sip/parser';
import type { SipMessage } from '../sip/types';

const MAC_BYTES = 12;
const IV_BYTES = 12;

/**
 * Sealed tokens: base64url(iv || AES-256-CTR(plaintext) || HMAC-SHA-256(iv || ct)[0..12]).
 * The IV is derived from the plaintext (a keyed hash, SIV-like) so that the same value always
 * seals to the same token: a retransmission or a refresh REGISTER keeps its Contact, a masked
 * Call-ID stays one dialog. Deterministic encryption leaks only equality, which the peer sees
 * anyway. base64url is valid in a URI user part, a Via/URI parameter and a Call-ID word.
 */
export class TokenSealer {
  private readonly encKey: Buffer;
  private readonly macKey: Buffer;
  private readonly ivKey: Buffer;

  constructor(key?: Buffer) {
    const k = key ?? randomBytes(32);
    const derive = (label: string): Buffer => createHmac('sha256', k).update(label).digest();
    this.encKey = derive('sip-edge topology enc');
    this.macKey = derive('sip-edge topology mac');
    this.ivKey = derive('sip-edge topology iv');
  }

  /** plaintext <-> token for the values seen lately: an inside host's Contact and Record-Route
   *  set are the same for every call, so most seals and opens are a lookup. Bounded (cleared when
   *  full); only tokens this key made get in, so outsiders cannot fill it with anything new. */
  private readonly sealed = new Map<string, string>();
  private readonly opened = new Map<string, string>();

  seal(plain: string): string {
    const hit = this.sealed.get(plain);
    if (hit !== undefined) return hit;
    const tok = this.sealNew(plain);
    remember(this.sealed, plain, tok);
    remember(this.opened, tok, plain);
    return tok;
  }

  /** the plaintext, or null when the token is not one this key sealed (never throws) */
  open(token: string): string | null {
    const hit = this.opened.get(token);
    if (hit !== undefined) return hit;
    const plain = this.openNew(token);
    if (plain !== null) remember(this.opened, token, plain);
    return plain;
  }

  private sealNew(plain: string): string {
    const p = Buffer.from(plain, 'latin1');
    const iv = createHmac('sha256', this.ivKey).update(p).digest().subarray(0, IV_BYTES);
    const c = createCipheriv('aes-256-ctr', this.encKey, Buffer.concat([iv, Buffer.alloc(16 - IV_BYTES)]));
    const ct = Buffer.concat([c.update(p), c.final()]);
    const mac = createHmac('sha256', this.macKey).update(iv).update(ct).digest().subarray(0, MAC_BYTES);
    return Buffer.concat([iv, ct, mac]).toString('base64url');
  }

  private openNew(token: string): string | null {
    if (token.length < 32 || token.length > 4096 || !/^[A-Za-z0-9_-]+$/.test(token)) return null;
    const b = Buffer.from(token, 'base64url');
    if (b.length < IV_BYTES + MAC_BYTES + 1) return null;
    const iv = b.subarray(0, IV_BYTES);
    const ct = b.subarray(IV_BYTES, b.length - MAC_BYTES);
    const mac = b.subarray(b.length - MAC_BYTES);
    const want = createHmac('sha256', this.macKey).update(iv).update(ct).digest().subarray(0, MAC_BYTES);
    if (!timingSafeEqual(mac, want)) return null;
    const d = createCipheriv('aes-256-ctr', this.encKey, Buffer.concat([iv, Buffer.alloc(16 - IV_BYTES)]));
    return Buffer.concat([d.update(ct), d.final()]).toString('latin1');
  }
}

export interface TopologyConfig {
  readonly enabled: boolean;
  /** hex or base64 key material (32 bytes or more); null: random at start (tokens die with the process) */
  readonly key: string | null;
  readonly headers: {
    /** lower-case header names removed toward the outside */
    readonly remove: readonly string[];
    /** lower-case header name -> replacement value */
    readonly replace: Readonly<Record<string, string>>;
  };
}

export const DEFAULT_TOPOLOGY: TopologyConfig = {
  enabled: true,
  key: null,
  headers: { remove: ['server', 'user-agent', 'organization', 'warning'], replace: {} },
};

export type SdpField = 'c' | 'o';

export interface TopologyOptions {
  cfg: TopologyConfig;
  /** is this address inside (the PBX side)? */
  isInside(address: string): boolean;
  /** is this URI one of the edge's own (a Route/Record-Route/Contact entry naming the edge)? */
  isOwnHost(host: string, port: number | undefined): boolean;
  /** the edge's own Server value (config serverHeader): its replies keep it */
  ownServer?: string;
  /** SDP exposing an inside address went out (for the counter and the log) */
  onSdpInside?(kind: 'request' | 'response', field: SdpField): void;
}

const SEP = '\u0001';

/** "name: value" lines, with the edge's own lines marked as such */
interface Line { name: string; raw: string; value: string }

export class Topology {
  readonly enabled: boolean;
  private readonly sealer: TokenSealer;
  private readonly remove: Set<string>;
  private readonly prefixes: string[];
  private readonly replace: Map<string, string>;
  private readonly o: TopologyOptions;

  constructor(o: TopologyOptions) {
    this.o = o;
    this.enabled = o.cfg.enabled;
    this.sealer = new TokenSealer(o.cfg.key ? keyBytes(o.cfg.key) : undefined);
    const rm = o.cfg.headers.remove.map((n) => n.toLowerCase());
    // `x-acme-*`: every header with that prefix (the operator names its PBX's X- family)
    this.remove = new Set(rm.filter((n) => !n.endsWith('*')));
    this.prefixes = rm.filter((n) => n.endsWith('*')).map((n) => n.slice(0, -1));
    this.replace = new Map(Object.entries(o.cfg.headers.replace).map(([k, v]) => [k.toLowerCase(), v]));
  }

  // ------------------------------------------------------------------ outbound

  /**
   * The bytes `out` (a message the proxy built) as they go to the outside. `own` is the edge's
   * advertised host:port on the sending listener (the Contact rewrite names it). Bytes that do
   * not parse are returned unchanged (the proxy built them; it cannot happen).
   */
  outbound(out: Buffer, own: { hostPort: string; transport: string }): Buffer {
    const r = parseMessage(out, { framing: 'datagram' });
    if (!r.ok) return out;
    const msg = r.msg;
    const isReq = msg.kind === 'request';
    const cseqMethod = H.cseq(msg)?.method ?? '';
    const lines: Line[] = msg.headers.map((h) => ({ name: h.name, raw: msg.raw.toString('latin1', h.start, h.end).replace(/\r\n$/, ''), value: h.value }));
    let changed = false;
    const out2: string[] = [];
    const viaAll: string[] = [];
    for (const l of lines) if (l.name === 'via') viaAll.push(...H.splitCommaList(l.value));
    const rrAll: string[] = [];
    for (const l of lines) if (l.name === 'record-route') rrAll.push(...H.splitCommaList(l.value));
    const rrNew = this.foldRecordRoute(rrAll, isReq);
    let rrDone = false;
    let viaDone = false;
    for (const l of lines) {
      const n = l.name;
      if (this.removes(n) && !(n === 'server' && l.value === this.o.ownServer)) { changed = true; continue; }
      const rep = this.replace.get(n);
      if (rep !== undefined) { out2.push(`${headerName(l)}: ${rep}`); changed = true; continue; }
      if (n === 'via' && isReq && viaAll.length > 1) {
        // RFC 3261 16.6 item 8: the Vias below ours are the inside hops (and whoever was before
        // them); they go into one sealed parameter of ours, which the response brings back
        if (!viaDone) out2.push(`Via: ${viaAll[0]};setv=${this.sealer.seal(viaAll.slice(1).join(SEP))}`);
        viaDone = true;
        changed = true;
        continue;
      }
      if (n === 'record-route' && rrNew !== undefined) {
        changed = true;
        if (!rrDone && rrNew.length > 0) out2.push(`Record-Route: ${rrNew.join(', ')}`);
        rrDone = true;
        continue;
      }
      if (n === 'contact' && cseqMethod !== 'REGISTER') {
        const v = this.sealContacts(l.value, own);
        if (v !== l.value) { out2.push(`Contact: ${v}`); changed = true; continue; }
      }
      out2.push(l.raw);
    }
    this.sdpScan(msg, isReq ? 'request' : 'response');
    if (!changed) return out;
    const start = msg.raw.toString('latin1', 0, msg.startLineEnd);
    const body = msg.raw.subarray(msg.bodyStart, msg.bodyStart + msg.bodyLength);
    return Buffer.concat([Buffer.from(start + out2.join('\r\n') + '\r\n\r\n', 'latin1'), body]);
  }

  /** The Record-Route list toward the outside, or undefined when nothing is to be hidden. In a
   *  request the inside entries are below the edge's outside entry (it was added last), in a
   *  response above it (the PBX added its own after the edge's, RFC 3261 16.6 item 4). */
  private foldRecordRoute(rr: string[], isReq: boolean): string[] | undefined {
    if (rr.length === 0) return undefined;
    const parsed = rr.map((e) => H.parseNameAddr(e));
    // the edge's outside entry: its own URI with a flow-token user (the inside one says upN)
    // (in a request the topmost: the edge added it last; in a response to an outside client the
    // bottom-most own one: the edge added it when the request arrived, before any spiral)
    const isMine = (p: ReturnType<typeof H.parseNameAddr>): boolean => p !== null && this.o.isOwnHost(p.uri.host, p.uri.port) && p.uri.user !== undefined && !p.uri.user.startsWith('up');
    const at = isReq ? parsed.findIndex(isMine) : lastIndex(parsed, isMine);
    // a UAS that did not copy the edge's entries (RFC 3261 12.1.1 says it MUST): nothing to
    // carry the folded set, and dropping the inside entries would break its route set: left as is
    if (at < 0) return undefined;
    const inner = isReq ? rr.slice(at + 1) : rr.slice(0, at);
    if (inner.length === 0) return undefined;
    const sealed = this.sealer.seal((isReq ? 'q' : 's') + inner.join(SEP));
    const mine = addUriParam(rr[at]!, `setr=${sealed}`);
    return isReq ? [...rr.slice(0, at), mine] : [mine, ...rr.slice(at + 1)];
  }

  private removes(name: string): boolean {
    if (this.remove.has(name)) return true;
    for (const p of this.prefixes) if (name.startsWith(p)) return true;
    return false;
  }


  private sealContacts(value: string, own: { hostPort: string; transport: string }): string {
    if (value.trim() === '*') return value;
    const parts = H.splitCommaList(value);
    let changed = false;
    const res = parts.map((p) => {
      const na = H.parseNameAddr(p);
      if (!na || (na.uri.scheme !== 'sip' && na.uri.scheme !== 'sips')) return p;
      if (this.o.isOwnHost(na.uri.host, na.uri.port)) return p;
      changed = true;
      const t = own.transport === 'udp' ? '' : `;transport=${own.transport}`;
      const tail = na.raw.slice(na.raw.indexOf('>') + 1);
      return `<${na.uri.scheme}:${this.sealer.seal(na.uriRaw)}@${own.hostPort}${t}>${na.raw.includes('>') ? tail : paramsText(na.params)}`;
    });
    return changed ? res.join(', ') : value;
  }

  // ------------------------------------------------------------------ inbound

  /**
   * A message from the outside, before the proxy routes it: undo what outbound() did (the
   * Request-URI that names a sealed Contact, folded Route/Record-Route/Via, a masked Call-ID).
   * Returns the bytes to parse again, or undefined when nothing applies. A token that does not
   * open is left as it is (fail closed: the proxy's own rules then apply to an edge URI).
   */
  inbound(msg: SipMessage): Buffer | undefined {
    let changed = false;
    let start = msg.raw.toString('latin1', 0, msg.startLineEnd);
    const isReq = msg.kind === 'request';
    if (isReq) {
      const u = H.requestUri(msg);
      if (u?.user && this.o.isOwnHost(u.host, u.port)) {
        const orig = this.sealer.open(u.user);
        if (orig !== null) {
          start = `${msg.method} ${orig} ${msg.version}\r\n`;
          changed = true;
        }
      }
    }
    const out: string[] = [];
    for (const h of msg.headers) {
      const raw = msg.raw.toString('latin1', h.start, h.end).replace(/\r\n$/, '');
      if (h.name === 'route' && isReq) {
        const v = this.unfold(h.value, 'route');
        if (v !== h.value) { out.push(`Route: ${v}`); changed = true; continue; }
      } else if (h.name === 'record-route' && !isReq) {
        const v = this.unfold(h.value, 'record-route');
        if (v !== h.value) { out.push(`Record-Route: ${v}`); changed = true; continue; }
      } else if (h.name === 'via' && !isReq) {
        const vs = H.splitCommaList(h.value);
        const top = H.parseVia(vs[0] ?? '');
        const sealed = top?.params.get('setv');
        const plain = sealed ? this.sealer.open(sealed) : null;
        if (plain !== null && top && this.o.isOwnHost(top.host, top.port)) {
          out.push(`Via: ${[stripParam(vs[0]!, 'setv'), ...plain.split(SEP), ...vs.slice(1)].join(', ')}`);
          changed = true;
          continue;
        }
      } else if (h.name === 'contact' && !isReq && H.cseq(msg)?.method === 'REGISTER') {
        // the 2xx to a REGISTER the inside sent lists its bindings: the sealed Contacts it sent
        const v = this.unsealContacts(h.value);
        if (v !== h.value) { out.push(`Contact: ${v}`); changed = true; continue; }
      }
      out.push(raw);
    }
    if (!changed) return undefined;
    const body = msg.raw.subarray(msg.bodyStart, msg.bodyStart + msg.bodyLength);
    return Buffer.concat([Buffer.from(start + out.join('\r\n') + '\r\n\r\n', 'latin1'), body]);
  }

  private unfold(value: string, kind: 'route' | 'record-route'): string {
    const parts = H.splitCommaList(value);
    let changed = false;
    const res: string[] = [];
    for (const p of parts) {
      const na = H.parseNameAddr(p);
      const sealed = na?.uri.params.get('setr');
      const plain = na && sealed && this.o.isOwnHost(na.uri.host, na.uri.port) ? this.sealer.open(sealed) : null;
      if (plain === null || plain.length === 0) { res.push(p); continue; }
      changed = true;
      const mode = plain[0];
      const inner = plain.slice(1).split(SEP);
      const me = removeUriParam(p, 'setr');
      if (kind === 'record-route') {
        // RFC 3261 16.7 item 9 is not involved: the order is exactly what the inside wrote
        if (mode === 'q') res.push(me, ...inner);
        else res.push(...inner, me);
      } else {
        // the route set (RFC 3261 12.1.1 reverses the Record-Route for a UAC, 12.1.2 keeps it
        // for a UAS): the inside entries always follow the edge's entry
        res.push(me, ...(mode === 'q' ? inner : inner.reverse()));
      }
    }
    return changed ? res.join(', ') : value;
  }

  private unsealContacts(value: string): string {
    const parts = H.splitCommaList(value);
    let changed = false;
    const res = parts.map((p) => {
      const na = H.parseNameAddr(p);
      if (!na?.uri.user || !this.o.isOwnHost(na.uri.host, na.uri.port)) return p;
      const orig = this.sealer.open(na.uri.user);
      if (orig === null) return p;
      changed = true;
      return `<${orig}>${paramsText(na.params)}`;
    });
    return changed ? res.join(', ') : value;
  }

  // ------------------------------------------------------------------ SDP

  /** RFC 4566 5.7 (c=) and 5.2 (o=): count bodies going out that name an inside address. */
  private sdpScan(msg: SipMessage, kind: 'request' | 'response'): void {
    if (!this.o.onSdpInside || msg.bodyLength === 0) return;
    const ct = H.first(msg, 'content-type')?.toLowerCase() ?? '';
    if (!ct.startsWith('application/sdp')) return;
    for (const f of sdpInside(msg.raw.toString('latin1', msg.bodyStart, msg.bodyStart + msg.bodyLength), this.o.isInside)) this.o.onSdpInside(kind, f);
  }
}

/** The SDP fields (c, o: each once) whose address is inside. */
export function sdpInside(sdp: string, isInside: (a: string) => boolean): SdpField[] {
  const found = new Set<SdpField>();
  for (const line of sdp.split(/\r?\n/, 200)) {
    let addr: string | undefined;
    if (line.startsWith('c=IN IP')) addr = line.split(' ')[2];
    else if (line.startsWith('o=')) { const p = line.split(' '); if (p[4]?.startsWith('IP')) addr = p[5]; }
    if (!addr) continue;
    addr = addr.split('/')[0]!.trim();
    if (isIP(addr) !== 0 && isInside(addr)) found.add(line[0] as SdpField);
  }
  return [...found];
}

function keyBytes(k: string): Buffer {
  const b = /^[0-9a-fA-F]{64,}$/.test(k) ? Buffer.from(k, 'hex') : Buffer.from(k, 'base64');
  return b.length >= 32 ? b : Buffer.from(k, 'utf8');
}

function headerName(l: Line): string {
  return l.raw.slice(0, l.raw.indexOf(':')).trim();
}

function paramsText(params: ReadonlyMap<string, string | null>): string {
  let s = '';
  for (const [k, v] of params) s += v === null ? `;${k}` : `;${k}=${v}`;
  return s;
}

function stripParam(via: string, name: string): string {
  return via.replace(new RegExp(`;\\s*${name}(=[^;,]*)?`, 'i'), '');
}

/** add a URI parameter inside the <> of a name-addr (or to a bare addr-spec) */
function addUriParam(entry: string, param: string): string {
  const gt = entry.indexOf('>');
  return gt >= 0 ? `${entry.slice(0, gt)};${param}${entry.slice(gt)}` : `<${entry};${param}>`;
}

function removeUriParam(entry: string, name: string): string {
  return entry.replace(new RegExp(`;${name}=[A-Za-z0-9_-]*`), '');
}

function lastIndex<T>(a: readonly T[], f: (x: T) => boolean): number {
  for (let i = a.length - 1; i >= 0; i--) if (f(a[i]!)) return i;
  return -1;
}

const CACHE_MAX = 4096;
function remember(m: Map<string, string>, k: string, v: string): void {
  if (m.size >= CACHE_MAX) m.clear();
  m.set(k, v);
}
