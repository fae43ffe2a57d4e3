// A PBX / registrar stand-in for authentication tests, on a loopback UDP socket.
//
// Two personalities:
// - trusting (no `users`): the PBX behind an edge in edge mode, which trusts the edge by address
//   (README "In front of Asterisk"): every request is answered 200 (REGISTER echoes the Contact,
//   INVITE answers with its own Contact and the Record-Route set, RFC 3261 12.1.1).
// - authenticating (`users` given): a naive PBX doing its own digest authentication, like
//   Asterisk's chan_sip with alwaysauthreject=no: an unauthenticated request for a user it does not
//   know gets 404 (RFC 3261 21.4.5; exactly what svwar sorts extensions by), one for a user it knows
//   gets 401 (REGISTER) / 407 (others) with `Digest realm="asterisk", nonce=..., algorithm=MD5,
//   qop="auth"` (RFC 3261 22.1, RFC 7616 3.3); credentials are checked with the project's own
//   digest code (edge/auth/digest.ts): right -> 200, wrong -> `wrongStatus` (401 with a fresh
//   challenge by default, as Asterisk does; 403 optional, RFC 3261 22.4).
//
// Every request it receives is kept (bounded) so tests can assert what reached the PBX.
// Total: anything it cannot read is ignored, never thrown.
import { randomBytes } from 'node:crypto';
import { digestHex, digestsEqual, ha1, parseCredentials, type DigestAlgorithm } from '../../edge/auth/digest';
import { UdpPeer, header, headers } from './udp-peer';

export interface RegistrarOptions {
  /** loopback address to bind (default 127.0.0.2); the port is ephemeral */
  readonly address?: string;
  /** user -> password: the registrar authenticates these itself; absent = trusting */
  readonly users?: Readonly<Record<string, string>>;
  /** realm of its challenges (default "asterisk", Asterisk's default) */
  readonly realm?: string;
  /** answer to an unauthenticated request for an unknown user: 404 (naive PBX, default) or the
   *  same challenge as a known user (alwaysauthreject=yes) */
  readonly unknown?: 404 | 'challenge';
  /** answer to wrong credentials: 401/407 with a fresh challenge (default) or 403 */
  readonly wrongStatus?: 'challenge' | 403;
}

export interface RegistrarRequest {
  readonly method: string;
  /** To user for REGISTER, Request-URI user otherwise */
  readonly target: string | undefined;
  readonly text: string;
  readonly from: { address: string; port: number };
}

/** What the registrar keeps at most (older requests are forgotten first). */
const MAX_KEPT = 20_000;
/** Nonces it remembers having issued (oldest forgotten first). */
const MAX_NONCES = 50_000;

export class Registrar {
  /** requests received (not ACK), oldest first, at most MAX_KEPT */
  readonly requests: RegistrarRequest[] = [];
  /** users that presented right credentials (one entry per accepted request) */
  readonly accepted: string[] = [];
  /** users that presented wrong credentials (one entry per rejected request) */
  readonly rejected: string[] = [];
  private readonly nonces = new Set<string>();

  private constructor(private readonly peer: UdpPeer, private readonly o: RegistrarOptions) {
    peer.sock.on('message', (b, rinfo) => {
      try {
        this.onMessage(b.toString('latin1'), rinfo.port, rinfo.address);
      } catch {
        /* a stand-in never crashes on what it receives */
      }
    });
  }

  static async start(o: RegistrarOptions = {}): Promise<Registrar> {
    return new Registrar(await UdpPeer.bind(o.address ?? '127.0.0.2'), o);
  }

  get address(): string { return this.peer.address; }
  get port(): number { return this.peer.port; }
  get realm(): string { return this.o.realm ?? 'asterisk'; }

  /** requests of one method received, optionally for one target user */
  of(method: string, target?: string): RegistrarRequest[] {
    return this.requests.filter((r) => r.method === method && (target === undefined || r.target === target));
  }

  close(): void { this.peer.close(); }

  private onMessage(text: string, port: number, address: string): void {
    if (text.startsWith('SIP/2.0')) return; // responses (e.g. to nothing we sent): ignore
    const sp = text.indexOf(' ');
    const method = sp > 0 ? text.slice(0, sp) : '';
    if (!/^[A-Z]+$/.test(method)) return;
    const target = targetUser(text, method);
    if (this.requests.length >= MAX_KEPT) this.requests.shift();
    this.requests.push({ method, target, text, from: { address, port } });
    if (method === 'ACK') return; // RFC 3261 17.1.1.3: never answered
    const send = (status: number, phrase: string, extra: string[] = []): void => {
      this.peer.sock.send(Buffer.from(reply(text, status, phrase, extra), 'latin1'), port, address);
    };

    if (this.o.users === undefined || method === 'BYE' || method === 'CANCEL') {
      send(200, 'OK', this.okExtra(text, method));
      return;
    }
    const cred = credentialsOf(text, method);
    const known = target !== undefined && Object.prototype.hasOwnProperty.call(this.o.users, target);
    if (cred === undefined) {
      if (!known && (this.o.unknown ?? 404) === 404) send(404, 'Not Found');
      else this.challenge(method, send);
      return;
    }
    const user = cred.get('username') ?? '';
    const password = Object.prototype.hasOwnProperty.call(this.o.users, user) ? this.o.users[user] : undefined;
    if (password !== undefined && this.verify(cred, method, user, password)) {
      this.accepted.push(user);
      send(200, 'OK', this.okExtra(text, method));
      return;
    }
    this.rejected.push(user);
    if (this.o.wrongStatus === 403) send(403, 'Forbidden');
    else this.challenge(method, send);
  }

  private challenge(method: string, send: (status: number, phrase: string, extra: string[]) => void): void {
    const nonce = randomBytes(16).toString('hex');
    if (this.nonces.size >= MAX_NONCES) {
      const oldest = this.nonces.values().next().value;
      if (oldest !== undefined) this.nonces.delete(oldest);
    }
    this.nonces.add(nonce);
    const value = `Digest realm="${this.realm}", nonce="${nonce}", algorithm=MD5, qop="auth"`;
    if (method === 'REGISTER') send(401, 'Unauthorized', [`WWW-Authenticate: ${value}`]);
    else send(407, 'Proxy Authentication Required', [`Proxy-Authenticate: ${value}`]);
  }

  /** RFC 7616 3.4.1 with MD5 (RFC 2069 form when the client sent no qop) */
  private verify(c: ReadonlyMap<string, string>, method: string, user: string, password: string): boolean {
    const nonce = c.get('nonce');
    const uri = c.get('uri');
    const response = c.get('response');
    if (nonce === undefined || uri === undefined || response === undefined || !this.nonces.has(nonce)) return false;
    if (c.get('realm') !== this.realm) return false;
    const alg = (c.get('algorithm') ?? 'MD5').toUpperCase();
    if (alg !== 'MD5') return false;
    const h1 = ha1(alg as DigestAlgorithm, user, this.realm, password);
    const h2 = digestHex('MD5', `${method}:${uri}`);
    const qop = c.get('qop');
    const expected = qop === 'auth'
      ? digestHex('MD5', `${h1}:${nonce}:${c.get('nc') ?? ''}:${c.get('cnonce') ?? ''}:auth:${h2}`)
      : digestHex('MD5', `${h1}:${nonce}:${h2}`);
    return digestsEqual(expected, response);
  }

  private okExtra(text: string, method: string): string[] {
    if (method === 'REGISTER') {
      const c = header(text, 'Contact') ?? header(text, 'm');
      return c !== undefined ? [`Contact: ${c};expires=3600`] : [];
    }
    if (method === 'INVITE') {
      // RFC 3261 12.1.1: the UAS copies the Record-Route set into the 2xx and names itself as the
      // remote target
      return [...headers(text, 'Record-Route').map((r) => `Record-Route: ${r}`), `Contact: <sip:pbx@${this.address}:${this.port}>`];
    }
    return [];
  }
}

/** To user for REGISTER (RFC 3261 10.2: the AOR), Request-URI user otherwise */
function targetUser(text: string, method: string): string | undefined {
  const uri = method === 'REGISTER' ? header(text, 'To') ?? header(text, 't') : text.slice(0, text.indexOf('\r\n')).split(' ')[1];
  const m = uri !== undefined ? /sips?:([^@;>\s:]+)@/i.exec(uri) : null;
  return m ? m[1] : undefined;
}

/** the Digest credentials a request carries (Authorization for REGISTER, else Proxy-Authorization) */
function credentialsOf(text: string, method: string): ReadonlyMap<string, string> | undefined {
  for (const name of method === 'REGISTER' ? ['Authorization', 'Proxy-Authorization'] : ['Proxy-Authorization', 'Authorization']) {
    for (const v of headers(text, name)) {
      const c = parseCredentials(v);
      if (c !== null && c.scheme === 'digest') return c.params;
    }
  }
  return undefined;
}

/** a response to `req` (every Via, From, To with a tag, Call-ID, CSeq), as a UAS builds it (RFC 3261 8.2.6.2) */
function reply(req: string, status: number, phrase: string, extra: string[]): string {
  const head = req.split('\r\n\r\n')[0]!;
  const lines = head.split('\r\n');
  const pick = (re: RegExp): string[] => lines.filter((l) => re.test(l));
  const to = pick(/^(to|t)\s*:/i)[0] ?? 'To: <sip:unknown@invalid>';
  return [
    `SIP/2.0 ${status} ${phrase}`,
    ...pick(/^(via|v)\s*:/i),
    ...pick(/^(from|f)\s*:/i).slice(0, 1),
    /;\s*tag=/i.test(to) ? to : `${to};tag=pbx${status}`,
    ...pick(/^(call-id|i)\s*:/i).slice(0, 1),
    ...pick(/^cseq\s*:/i).slice(0, 1),
    ...extra,
    // what Asterisk puts in every response: an edge that rewrites one of them must keep these
    'Server: Asterisk PBX 18.20.0',
    'Allow: OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, PUBLISH, INVITE, ACK, BYE, CANCEL, UPDATE, PRACK, MESSAGE, REFER',
    'Content-Length: 0',
    '', '',
  ].join('\r\n');
}
