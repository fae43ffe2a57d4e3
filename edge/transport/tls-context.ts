// TLS material for the stream listeners: certificate chains and keys from PEM files, one
// SecureContext per certificate chosen by SNI, the protocol policy every context is built with,
// and the holder that reloads the files when they change on disk (or on SIGHUP) and keeps the
// previous contexts when the new files are invalid (the same rule as the rule and users files:
// lib/watched-file.ts).
//
// Policy (RFC 3261 26.2 asks for TLS on every hop the edge controls; RFC 8996 deprecates TLS 1.0
// and 1.1; RFC 9325 (BCP 195) 4.2 recommends ECDHE with AEAD ciphers only):
// - TLS 1.2 minimum, TLS 1.3 preferred (OpenSSL negotiates the highest both sides have).
// - Default ciphers: the TLS 1.3 suites and, for TLS 1.2, ECDHE + AES-GCM / ChaCha20-Poly1305
//   only (forward secrecy, no CBC, no RSA key exchange, no SHA-1 MAC). RFC 3261 26.3.1 names
//   TLS_RSA_WITH_AES_128_CBC_SHA as the mandatory suite; it has neither forward secrecy nor an
//   AEAD, so it is not in the default list (an operator with a legacy peer can list it in
//   tls.ciphers).
// - No renegotiation (SSL_OP_NO_RENEGOTIATION: a client-initiated renegotiation is refused with
//   an alert, the CVE-2011-1473 CPU amplification and the 2009 prefix injection are gone) and no
//   compression (SSL_OP_NO_COMPRESSION, CRIME).
import { constants as C, createHash, createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { WatchedFile, type Loaded } from '../../lib/watched-file';
import { ipLiteral } from '../net/address';

/** TLS 1.3 suites (RFC 8446 9.1) then TLS 1.2 ECDHE + AEAD suites, in order of preference. */
export const DEFAULT_TLS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

export const TLS_SECURE_OPTIONS = C.SSL_OP_NO_RENEGOTIATION | C.SSL_OP_NO_COMPRESSION;

/** what a PEM file may weigh: a chain of a few certificates is a few KiB */
const MAX_PEM_BYTES = 1024 * 1024;

export interface TlsCertificateSpec {
  /** absolute path: the leaf certificate first, then the intermediates (a "fullchain" file) */
  readonly cert: string;
  /** absolute path of the private key (PEM, PKCS#8 or the traditional formats) */
  readonly key: string;
}

/** The `tls:` section, resolved (paths absolute). */
export interface TlsSettings {
  /** the first is the default (clients that send no SNI, or a name no certificate covers) */
  readonly certificates: readonly TlsCertificateSpec[];
  readonly minVersion: 'TLSv1.2' | 'TLSv1.3';
  readonly ciphers: string;
  /** from the accepted TCP connection to the end of the handshake */
  readonly handshakeTimeoutMs: number;
  /** handshakes in progress at once, all sources together */
  readonly maxHandshakes: number;
  /** handshakes in progress at once from one source (IPv6: one prefix, as the connection caps) */
  readonly maxHandshakesPerSource: number;
  /** mutual TLS: CA bundle client certificates are verified against; absent = none asked for */
  readonly clientCa?: string;
  /** listeners ("tls:host:port", as in listen) that refuse a client without a valid certificate */
  readonly requireClientCert: readonly string[];
  /** trusted peers by certificate: a verified client certificate whose SHA-256 fingerprint or
   *  DNS name / CN matches one of these is a trusted source */
  readonly peers: readonly TlsPeer[];
  /** upstreams over TLS: the CA bundle their certificates are verified against (absent: the
   *  system's roots) and the name expected in them (absent: the upstream's address) */
  readonly upstreamCa?: string;
  readonly upstreamName?: string;
}

export interface TlsPeer {
  /** "AA:BB:..." upper-case SHA-256 of the DER certificate (what openssl x509 -fingerprint -sha256 prints) */
  readonly fingerprint?: string;
  /** lower-case DNS name (a SAN dNSName, or the CN when the certificate has no SAN) */
  readonly name?: string;
  /** CIDRs the peer connects from: its connections take trusted-class TCP capacity during the
   *  handshake, on probation (edge/tls-service.ts probation) */
  readonly addresses?: readonly string[];
}

export const DEFAULT_TLS_SETTINGS: Omit<TlsSettings, 'certificates'> = Object.freeze({
  minVersion: 'TLSv1.2',
  ciphers: DEFAULT_TLS_CIPHERS,
  handshakeTimeoutMs: 5000,
  maxHandshakes: 1000,
  maxHandshakesPerSource: 8,
  requireClientCert: [],
  peers: [],
});

/** What `check` and the logs say about one certificate. */
export interface CertInfo {
  readonly file: string;
  readonly subject: string;
  /** DNS names and IP addresses the certificate is valid for, lower-case */
  readonly names: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly fingerprint256: string;
}

interface Entry {
  readonly info: CertInfo;
  readonly context: tls.SecureContext;
  readonly options: tls.SecureContextOptions;
}

/** Every certificate's context, by the names it covers, built with the policy. Immutable. */
export interface TlsMaterial {
  /** SHA-256 over every file's bytes: a reload of the same content changes nothing */
  readonly version: string;
  readonly certs: readonly CertInfo[];
  /** the first certificate's context, and what it was built from (tls.Server.setSecureContext) */
  readonly defaultContext: tls.SecureContext;
  readonly defaultOptions: tls.SecureContextOptions;
  /** SNI: exact names, then "*.rest" wildcards by "rest" (RFC 6125 6.4.3: one left-most label) */
  contextFor(serverName: string | undefined): tls.SecureContext;
  /** the CA bundle for client certificates (mutual TLS), PEM; absent when none is configured */
  readonly clientCa?: Buffer;
  /** the CA bundle for upstream certificates, PEM; absent = the system's roots */
  readonly upstreamCa?: Buffer;
}

function readPem(file: string, what: string, errors: string[]): Buffer | undefined {
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) { errors.push(`${file}: ${what} is not a regular file`); return undefined; }
    if (st.size > MAX_PEM_BYTES) { errors.push(`${file}: ${what} is larger than ${MAX_PEM_BYTES} bytes`); return undefined; }
    return fs.readFileSync(file);
  } catch (e) {
    errors.push(`${file}: cannot read ${what} (${(e as NodeJS.ErrnoException).code ?? 'EIO'})`);
    return undefined;
  }
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** SAN DNS names and IP addresses; the CN only when there is no SAN (RFC 6125 6.4.4) */
export function certNames(x: X509Certificate): string[] {
  const out: string[] = [];
  const san = x.subjectAltName;
  if (san) {
    // "DNS:a.example, IP Address:127.0.0.1, DNS:b.example"
    for (const part of san.split(/,\s*/)) {
      const i = part.indexOf(':');
      if (i < 0) continue;
      const kind = part.slice(0, i).trim();
      const value = part.slice(i + 1).trim().toLowerCase();
      if (kind === 'DNS') out.push(value.replace(/\.$/, ''));
      else if (kind === 'IP Address') out.push(ipLiteral(value) ?? value);
    }
    return out;
  }
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(x.subject)?.[1];
  if (cn) out.push(cn.trim().toLowerCase());
  return out;
}

export function parseChain(pem: Buffer): X509Certificate[] | string {
  const blocks = pem.toString('latin1').match(PEM_CERT);
  if (!blocks || blocks.length === 0) return 'no PEM certificate in the file';
  try {
    return blocks.map((b) => new X509Certificate(b));
  } catch (e) {
    return `certificate does not parse (${(e as Error).message})`;
  }
}

/** What every context is built with (listeners and, for the client side, upstream connections). */
export function policyOptions(s: Pick<TlsSettings, 'minVersion' | 'ciphers'>): tls.SecureContextOptions {
  return {
    minVersion: s.minVersion,
    maxVersion: 'TLSv1.3',
    ciphers: s.ciphers,
    // the server's order: a client listing a weaker suite first still gets the strongest shared one
    honorCipherOrder: true,
    secureOptions: TLS_SECURE_OPTIONS,
  };
}

/**
 * Read and check every file of `s` and build the contexts. Errors name the file: unreadable,
 * no certificate, key that does not match its certificate, a certificate that is expired or not
 * yet valid, one without any name, a cipher list OpenSSL refuses. `now` for tests.
 */
export function loadTlsMaterial(s: TlsSettings, now = new Date()): Loaded<TlsMaterial> {
  const errors: string[] = [];
  const hash = createHash('sha256');
  hash.update(JSON.stringify({ v: s.minVersion, c: s.ciphers }));
  const entries: Entry[] = [];
  // the client-certificate CA of mutual TLS belongs in every server context (OpenSSL verifies
  // the client against the context the SNI callback chose)
  let clientCa: Buffer | undefined;
  if (s.clientCa !== undefined) {
    clientCa = readPem(s.clientCa, 'client CA bundle', errors);
    if (clientCa !== undefined) {
      hash.update(clientCa);
      const c = parseChain(clientCa);
      if (typeof c === 'string') { errors.push(`${s.clientCa}: ${c}`); clientCa = undefined; }
    }
  }
  if (s.certificates.length === 0) errors.push('tls.certificates: at least one certificate is required for a tls listener');
  for (const spec of s.certificates) {
    const certPem = readPem(spec.cert, 'certificate', errors);
    const keyPem = readPem(spec.key, 'key', errors);
    if (certPem === undefined || keyPem === undefined) continue;
    hash.update(certPem).update(keyPem);
    const chain = parseChain(certPem);
    if (typeof chain === 'string') { errors.push(`${spec.cert}: ${chain}`); continue; }
    let key: KeyObject;
    try {
      key = createPrivateKey(keyPem);
    } catch (e) {
      errors.push(`${spec.key}: private key does not parse (${(e as Error).message})`);
      continue;
    }
    const leaf = chain[0]!;
    if (!leaf.checkPrivateKey(key)) { errors.push(`${spec.key}: does not match the certificate in ${spec.cert}`); continue; }
    const notBefore = new Date(leaf.validFrom);
    const notAfter = new Date(leaf.validTo);
    if (now.getTime() > notAfter.getTime()) { errors.push(`${spec.cert}: certificate expired on ${notAfter.toISOString()}`); continue; }
    if (now.getTime() < notBefore.getTime()) { errors.push(`${spec.cert}: certificate not valid before ${notBefore.toISOString()}`); continue; }
    const names = certNames(leaf);
    if (names.length === 0) { errors.push(`${spec.cert}: certificate names no host (no subjectAltName DNS or IP entry, no CN)`); continue; }
    let context: tls.SecureContext;
    const options: tls.SecureContextOptions = { ...policyOptions(s), cert: certPem, key: keyPem, ...(clientCa !== undefined ? { ca: clientCa } : {}) };
    try {
      context = tls.createSecureContext(options);
    } catch (e) {
      errors.push(`${spec.cert}: ${(e as Error).message}`);
      continue;
    }
    entries.push({ context, options, info: { file: spec.cert, subject: leaf.subject.replace(/\n/g, ', '), names, notBefore, notAfter, fingerprint256: leaf.fingerprint256 } });
  }
  let upstreamCa: Buffer | undefined;
  if (s.upstreamCa !== undefined) {
    upstreamCa = readPem(s.upstreamCa, 'upstream CA bundle', errors);
    if (upstreamCa !== undefined) {
      hash.update(upstreamCa);
      const c = parseChain(upstreamCa);
      if (typeof c === 'string') errors.push(`${s.upstreamCa}: ${c}`);
    }
  }
  if (errors.length > 0) return { ok: false, errors };
  const exact = new Map<string, tls.SecureContext>();
  const wild = new Map<string, tls.SecureContext>();
  // the first certificate listed wins a name two of them cover
  for (const e of entries) {
    for (const n of e.info.names) {
      if (n.startsWith('*.')) { if (!wild.has(n.slice(2))) wild.set(n.slice(2), e.context); } else if (!exact.has(n)) exact.set(n, e.context);
    }
  }
  const defaultContext = entries[0]!.context;
  const material: TlsMaterial = {
    version: hash.digest('hex').slice(0, 16),
    certs: entries.map((e) => e.info),
    defaultContext,
    defaultOptions: entries[0]!.options,
    contextFor(serverName) {
      if (serverName === undefined || serverName === '') return defaultContext;
      const n = serverName.toLowerCase().replace(/\.$/, '');
      const hit = exact.get(n);
      if (hit !== undefined) return hit;
      const dot = n.indexOf('.');
      return (dot > 0 ? wild.get(n.slice(dot + 1)) : undefined) ?? defaultContext;
    },
    ...(clientCa !== undefined ? { clientCa } : {}),
    ...(upstreamCa !== undefined ? { upstreamCa } : {}),
  };
  return { ok: true, value: material };
}

/** Every file the material is read from (their directories are watched). */
export function tlsFiles(s: TlsSettings): string[] {
  return [
    ...s.certificates.flatMap((c) => [c.cert, c.key]),
    ...(s.clientCa !== undefined ? [s.clientCa] : []),
    ...(s.upstreamCa !== undefined ? [s.upstreamCa] : []),
  ];
}

/** Days until the certificate expires (negative when it has). */
export function daysLeft(c: CertInfo, now = new Date()): number {
  return Math.floor((c.notAfter.getTime() - now.getTime()) / 86_400_000);
}

export interface TlsHolderOptions {
  readonly debounceMs?: number;
}

/**
 * The TLS material in service, swapped whole when the files change or reload() is called. A
 * handshake reads current() once (in the SNI callback), so the next handshake after a swap gets
 * the new certificate and connections already established keep theirs.
 */
export class TlsHolder extends WatchedFile<TlsMaterial> {
  private constructor(readonly settings: TlsSettings, m: TlsMaterial, opts: TlsHolderOptions) {
    super(m, {
      dirs: () => [...new Set(tlsFiles(settings).map((f) => path.dirname(f)))],
      same: (next, previous) => next.version === previous.version,
      ...(opts.debounceMs !== undefined ? { debounceMs: opts.debounceMs } : {}),
    });
  }

  static open(s: TlsSettings, opts: TlsHolderOptions = {}): { ok: true; holder: TlsHolder } | { ok: false; errors: readonly string[] } {
    const r = loadTlsMaterial(s);
    if (!r.ok) return r;
    return { ok: true, holder: new TlsHolder(s, r.value, opts) };
  }

  /** Re-read every file now; the old material stays in service when they are invalid. */
  reload(): { ok: true; version: string; changed: boolean } | { ok: false; errors: readonly string[] } {
    const r = this.load(() => loadTlsMaterial(this.settings));
    return r.ok ? { ok: true, version: r.value.version, changed: r.changed } : r;
  }
}
