// Test PKI made by the real `openssl` command: a CA and leaf certificates signed by it, written to
// a directory of the test's own. RSA keys, so that RSA-only cipher suites (the weak ones the
// policy refuses) can be offered by a test client at all.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface TestCa {
  readonly dir: string;
  readonly cert: string;
  readonly key: string;
}

export interface Leaf {
  readonly cert: string;
  readonly key: string;
  /** "AB:CD:..." SHA-256 fingerprint, as openssl x509 -fingerprint -sha256 prints it */
  readonly fingerprint: string;
}

let serial = 0;

function openssl(args: string[], cwd: string): string {
  return execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 }).toString('latin1');
}

export function makeCa(dir: string, name = 'sip-edge test CA'): TestCa {
  fs.mkdirSync(dir, { recursive: true });
  const tag = `ca${serial++}`;
  const cert = path.join(dir, `${tag}.pem`);
  const key = path.join(dir, `${tag}.key`);
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '3',
    '-subj', `/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  return { dir, cert, key };
}

export interface LeafOptions {
  /** DNS names (the first is the CN); IP addresses go in ips */
  readonly names: readonly string[];
  readonly ips?: readonly string[];
  /** validity in days from now (default 2); negative start offset via notBefore/notAfter below */
  readonly days?: number;
  /** write the certificate and key to these paths (replacing what is there) instead of fresh ones */
  readonly certPath?: string;
  readonly keyPath?: string;
  /** an already expired certificate (valid from 2001 to 2002) */
  readonly expired?: boolean;
}

/** A leaf certificate signed by `ca` (serverAuth + clientAuth), with the given names. */
export function makeLeaf(ca: TestCa, o: LeafOptions): Leaf {
  const tag = `leaf${serial++}`;
  const csr = path.join(ca.dir, `${tag}.csr`);
  const ext = path.join(ca.dir, `${tag}.ext`);
  const cert = o.certPath ?? path.join(ca.dir, `${tag}.pem`);
  const key = o.keyPath ?? path.join(ca.dir, `${tag}.key`);
  // write beside, then rename: a reader (the edge's watcher) never sees half a file
  const tmpCert = `${cert}.${tag}.tmp`;
  const tmpKey = `${key}.${tag}.tmp`;
  openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', tmpKey, '-out', csr, '-subj', `/CN=${o.names[0] ?? 'no-name'}`], ca.dir);
  const san = [...o.names.map((n) => `DNS:${n}`), ...(o.ips ?? []).map((i) => `IP:${i}`)];
  fs.writeFileSync(ext, `${san.length > 0 ? `subjectAltName=${san.join(',')}\n` : ''}basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n`);
  const validity = o.expired
    ? ['-not_before', '20010101000000Z', '-not_after', '20020101000000Z']
    : ['-days', String(o.days ?? 2)];
  if (o.expired) {
    // `openssl x509 -req` has no -not_before in 3.0: `openssl ca` does
    const db = path.join(ca.dir, `${tag}.db`);
    fs.writeFileSync(db, '');
    fs.writeFileSync(`${db}.serial`, `${(1000 + serial).toString(16).padStart(4, '0')}\n`);
    const cnf = path.join(ca.dir, `${tag}.cnf`);
    fs.writeFileSync(cnf, `[ca]\ndefault_ca=d\n[d]\ndatabase=${db}\nserial=${db}.serial\nnew_certs_dir=${ca.dir}\ndefault_md=sha256\npolicy=p\ncopy_extensions=none\n[p]\ncommonName=supplied\n`);
    openssl(['ca', '-batch', '-config', cnf, '-cert', ca.cert, '-keyfile', ca.key, '-in', csr, '-out', tmpCert, '-startdate', '20010101000000Z', '-enddate', '20020101000000Z', '-extfile', ext, '-notext'], ca.dir);
  } else {
    openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', String(Date.now() * 1000 + serial), '-out', tmpCert, ...validity, '-extfile', ext], ca.dir);
  }
  fs.renameSync(tmpKey, key);
  fs.renameSync(tmpCert, cert);
  const fp = openssl(['x509', '-in', cert, '-noout', '-fingerprint', '-sha256'], ca.dir);
  return { cert, key, fingerprint: fp.trim().replace(/^.*=/, '').toUpperCase() };
}

/** Is the `openssl` command there? (CI installs it; tests never skip under CI=true.) */
export function haveOpenssl(): boolean {
  try {
    openssl(['version'], process.cwd());
    return true;
  } catch {
    return false;
  }
}
