// Container health check: `node dist/edge/healthcheck.js` exits 0 when the edge's /healthz answers
// 200 within the timeout, 1 otherwise. The image's HEALTHCHECK runs it (the slim base image has
// no curl or wget, and a shell pipeline would hide which step failed).
//
// Where to ask: SIPEDGE_HEALTH_URL when set; else the admin listener of SIPEDGE_METRICS (the
// variable the image sets), a wildcard host asked on loopback; else the shipped default
// 127.0.0.1:9090. /healthz needs no token (edge/admin.ts: the token guards /metrics only).
import * as http from 'node:http';

const TIMEOUT_MS = 2000;

export function healthUrl(env: NodeJS.ProcessEnv): string {
  if (env.SIPEDGE_HEALTH_URL) return env.SIPEDGE_HEALTH_URL;
  const m = (env.SIPEDGE_METRICS ?? '').trim();
  if (m === '' || m === 'off' || m === 'none') return 'http://127.0.0.1:9090/healthz';
  const hp = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:]+)):(\d+)$/.exec(m);
  if (!hp) return 'http://127.0.0.1:9090/healthz';
  const host = hp[1] !== undefined ? (hp[1] === '::' ? '::1' : hp[1]) : hp[2] === '0.0.0.0' ? '127.0.0.1' : hp[2]!;
  return `http://${host.includes(':') ? `[${host}]` : host}:${hp[3]}/healthz`;
}

/** resolves to the exit code */
export function check(url: string, timeoutMs = TIMEOUT_MS): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode === 200 ? 0 : 1);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(1));
  });
}

if (require.main === module) {
  const url = healthUrl(process.env);
  void check(url).then((code) => {
    if (code !== 0) process.stderr.write(`sip-edge health check failed: ${url}\n`);
    process.exit(code);
  });
}
