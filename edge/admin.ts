// Admin HTTP listener: /metrics (Prometheus text exposition), /healthz (liveness), /readyz (readiness).
//
// node:http only. It binds to loopback by default (config metrics.listen "127.0.0.1:9090") and is
// not meant to face the internet, but it is still written as if it might: GET/HEAD only, no
// request body read, short timeouts, a connection cap, and a bearer token compared in constant
// time. The token protects /metrics only: the probes must stay usable by an orchestrator that has
// no secret, and they reveal no more than "ready or not, and which check failed".
import { createHash, timingSafeEqual } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseHostPort } from './net/address';

export interface ReadinessCheck {
  /** stable snake_case name: "listeners_bound", "rules_loaded", "upstream_healthy", "redis_reachable" */
  readonly name: string;
  readonly ok: boolean;
  /** short operator-facing detail ("0 of 2 upstreams healthy"); never attacker data */
  readonly detail?: string;
}

export interface ReadinessReport {
  readonly ready: boolean;
  readonly checks: readonly ReadinessCheck[];
}

/** What the admin listener needs from metrics: both Metrics and NullMetrics fit. */
export interface MetricsExposition {
  metrics(): Promise<string>;
  readonly contentType: string;
}

export interface AdminOptions {
  /** "host:port"; IPv6 as "[::1]:9090"; port 0 = ephemeral */
  readonly listen: string;
  /** when set, /metrics requires "Authorization: Bearer <token>" */
  readonly token?: string;
  readonly metrics: MetricsExposition;
  /** called per /readyz request; may be async (e.g. a Redis PING with its own timeout) */
  readonly readiness: () => ReadinessReport | Promise<ReadinessReport>;
  /** ban operations for `sip-edge bans` on a single node (no Redis): GET/POST/DELETE /bans.
   *  Guarded by the token like /metrics (the config requires a token off loopback). */
  readonly bans?: BanAdmin;
  /** fraud locks of call admission control (issue 16): GET /fraud, DELETE /fraud/<user>[/<class>],
   *  guarded by the token like /bans */
  readonly fraud?: FraudAdmin;
  /** max simultaneous connections (default 32): scrapers and probes need a handful */
  readonly maxConnections?: number;
}

export interface FraudAdmin {
  list(): Promise<unknown[]>;
  /** cls undefined: every class of the user; the number of locks removed, or an error string */
  unlock(user: string, cls?: string): Promise<number | string>;
}

export interface BanAdmin {
  list(): Promise<unknown[]>;
  /** key: IP or CIDR; returns the ban, or an error string for invalid input */
  add(key: string, seconds: number, reason: string): Promise<unknown | string>;
  remove(key: string): Promise<boolean>;
}

export interface AdminServer {
  readonly address: { readonly address: string; readonly port: number };
  close(): Promise<void>;
}

/** Stable error codes for startAdmin rejections. */
export type AdminErrorCode = 'admin_listen_invalid' | 'admin_listen_failed';

export class AdminError extends Error {
  constructor(readonly code: AdminErrorCode, message: string) {
    super(message);
    this.name = 'AdminError';
  }
}

/** Parse "host:port" / "[v6]:port" (edge/net's parser; the port is required here). Returns
 *  undefined when malformed. */
export function parseListen(listen: string): { host: string; port: number } | undefined {
  const hp = parseHostPort(listen);
  if ('error' in hp || hp.port === undefined) return undefined;
  return { host: hp.host, port: hp.port };
}

const JSON_TYPE = 'application/json; charset=utf-8';
const TEXT_TYPE = 'text/plain; charset=utf-8';

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

export async function startAdmin(opts: AdminOptions): Promise<AdminServer> {
  const bind = parseListen(opts.listen);
  if (!bind) throw new AdminError('admin_listen_invalid', `admin listen address "${opts.listen}" is not host:port`);

  // Comparing fixed-length digests keeps timingSafeEqual's equal-length requirement from leaking
  // the token length, and the comparison time independent of where the first mismatch is.
  const tokenDigest = opts.token !== undefined && opts.token !== '' ? digest(opts.token) : undefined;

  const authorized = (req: http.IncomingMessage): boolean => {
    if (!tokenDigest) return true;
    const h = req.headers.authorization;
    if (typeof h !== 'string') return false;
    // RFC 6750 2.1: "Bearer" SP b64token; the scheme is case-insensitive (RFC 9110 11.1). Any
    // non-space token is accepted, so an operator's token with other characters still works.
    const m = /^bearer +(\S+) *$/i.exec(h);
    if (!m) return false;
    return timingSafeEqual(digest(m[1]), tokenDigest);
  };

  const send = (res: http.ServerResponse, head: boolean, status: number, type: string, body: string, extra?: Record<string, string>): void => {
    const buf = Buffer.from(body, 'utf8');
    res.writeHead(status, {
      'Content-Type': type,
      'Content-Length': String(buf.length),
      'Cache-Control': 'no-store',
      'X-Content-Type-Options': 'nosniff',
      ...extra,
    });
    res.end(head ? undefined : buf);
  };

  /** GET /bans; POST /bans?key=IP|CIDR&seconds=N&reason=TEXT; DELETE /bans?key=IP|CIDR */
  const handleBans = async (req: http.IncomingMessage, res: http.ServerResponse, query: string, bans: BanAdmin): Promise<void> => {
    if (!authorized(req)) return send(res, false, 401, TEXT_TYPE, 'unauthorized\n', { 'WWW-Authenticate': 'Bearer realm="sip-edge"' });
    const p = new URLSearchParams(query);
    const key = p.get('key') ?? '';
    if (req.method === 'GET') return send(res, false, 200, JSON_TYPE, `${JSON.stringify(await bans.list())}\n`);
    if (req.method === 'POST') {
      const seconds = Number(p.get('seconds'));
      if (!key || !Number.isInteger(seconds) || seconds <= 0) return send(res, false, 400, TEXT_TYPE, 'key and seconds (a positive integer) are required\n');
      const r = await bans.add(key, seconds, (p.get('reason') ?? 'manual').slice(0, 200));
      if (typeof r === 'string') return send(res, false, 400, TEXT_TYPE, `${r}\n`);
      return send(res, false, 200, JSON_TYPE, `${JSON.stringify(r)}\n`);
    }
    if (req.method === 'DELETE') {
      if (!key) return send(res, false, 400, TEXT_TYPE, 'key is required\n');
      const removed = await bans.remove(key);
      return send(res, false, removed ? 200 : 404, JSON_TYPE, `${JSON.stringify({ removed })}\n`);
    }
    return send(res, false, 405, TEXT_TYPE, 'method not allowed\n', { Allow: 'GET, POST, DELETE' });
  };

  /** GET /fraud; DELETE /fraud/<user>[/<class>] (path segments percent-encoded) */
  const handleFraud = async (req: http.IncomingMessage, res: http.ServerResponse, pathname: string, fraud: FraudAdmin): Promise<void> => {
    if (!authorized(req)) return send(res, false, 401, TEXT_TYPE, 'unauthorized\n', { 'WWW-Authenticate': 'Bearer realm="sip-edge"' });
    if (pathname === '/fraud') {
      if (req.method !== 'GET') return send(res, false, 405, TEXT_TYPE, 'method not allowed\n', { Allow: 'GET' });
      return send(res, false, 200, JSON_TYPE, `${JSON.stringify(await fraud.list())}\n`);
    }
    if (req.method !== 'DELETE') return send(res, false, 405, TEXT_TYPE, 'method not allowed\n', { Allow: 'DELETE' });
    const parts = pathname.slice('/fraud/'.length).split('/');
    let user: string, cls: string | undefined;
    try { user = decodeURIComponent(parts[0] ?? ''); cls = parts[1] !== undefined ? decodeURIComponent(parts[1]) : undefined; } catch { return send(res, false, 400, TEXT_TYPE, 'bad percent-encoding\n'); }
    if (user === '' || parts.length > 2) return send(res, false, 400, TEXT_TYPE, 'DELETE /fraud/<user>[/<class>]\n');
    const r = await fraud.unlock(user, cls);
    if (typeof r === 'string') return send(res, false, 400, TEXT_TYPE, `${r}\n`);
    return send(res, false, r > 0 ? 200 : 404, JSON_TYPE, `${JSON.stringify({ removed: r })}\n`);
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const pathname = q < 0 ? url : url.slice(0, q);
    if ((pathname === '/fraud' || pathname.startsWith('/fraud/')) && opts.fraud) return handleFraud(req, res, pathname, opts.fraud);
    if (pathname === '/bans' && opts.bans) return handleBans(req, res, url.slice(q < 0 ? url.length : q + 1), opts.bans);
    const known = pathname === '/metrics' || pathname === '/healthz' || pathname === '/readyz';
    if (!known) return send(res, req.method === 'HEAD', 404, TEXT_TYPE, 'not found\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return send(res, false, 405, TEXT_TYPE, 'method not allowed\n', { Allow: 'GET, HEAD' });
    }
    const head = req.method === 'HEAD';

    if (pathname === '/healthz') {
      // liveness: the event loop answers, so the process runs
      return send(res, head, 200, JSON_TYPE, '{"status":"ok"}\n');
    }

    if (pathname === '/metrics') {
      if (!authorized(req)) {
        return send(res, head, 401, TEXT_TYPE, 'unauthorized\n', { 'WWW-Authenticate': 'Bearer realm="sip-edge"' });
      }
      let text: string;
      try {
        text = await opts.metrics.metrics();
      } catch {
        return send(res, head, 500, TEXT_TYPE, 'metrics collection failed\n');
      }
      return send(res, head, 200, opts.metrics.contentType, text);
    }

    // /readyz
    let report: ReadinessReport;
    try {
      report = await opts.readiness();
    } catch {
      report = { ready: false, checks: [{ name: 'readiness_error', ok: false, detail: 'readiness callback failed' }] };
    }
    const checks = report.checks.map((c) => (c.detail === undefined ? { name: c.name, ok: c.ok } : { name: c.name, ok: c.ok, detail: c.detail }));
    // not ready when any check fails, even if the caller said ready: the body must not contradict the code
    const ready = report.ready && checks.every((c) => c.ok);
    const body = JSON.stringify({ status: ready ? 'ready' : 'not_ready', checks, failing: checks.filter((c) => !c.ok).map((c) => c.name) });
    return send(res, head, ready ? 200 : 503, JSON_TYPE, `${body}\n`);
  };

  const server = http.createServer(
    {
      // small, slow or huge requests are not what Prometheus or a probe sends
      requestTimeout: 10_000,
      headersTimeout: 5_000,
      maxHeaderSize: 8192,
      keepAliveTimeout: 5_000,
    },
    (req, res) => {
      // no request body is ever needed; drain whatever comes so the socket can be reused
      req.resume();
      handle(req, res).catch(() => {
        if (!res.headersSent) send(res, false, 500, TEXT_TYPE, 'internal error\n');
        else res.destroy();
      });
    },
  );
  server.maxConnections = opts.maxConnections ?? 32;
  server.on('clientError', (_err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    else socket.destroy();
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => {
      server.off('listening', onListening);
      reject(new AdminError('admin_listen_failed', `admin listener on ${opts.listen}: ${err.message}`));
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(bind.port, bind.host);
  });

  // after bind, errors (e.g. EMFILE on accept) must not crash the edge through an unhandled 'error'
  server.on('error', () => {});

  const a = server.address() as AddressInfo;
  let closing: Promise<void> | undefined;
  return {
    address: { address: a.address, port: a.port },
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
