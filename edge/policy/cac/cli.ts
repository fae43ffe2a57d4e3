// `sip-edge fraud list | unlock USER [CLASS]` (issue 16): the fraud locks of call admission
// control, through the running edge's admin listener (GET /fraud, DELETE /fraud/<user>[/<class>],
// edge/admin.ts) with the metrics token. With Redis configured the edge's locks are the shared
// ones, so one edge's listener lists and unlocks for the whole cluster.
import type { ResolvedConfig } from '../../config/types';
import { DEST_CLASSES } from './rules';

export interface FraudCli { readonly op: 'list' | 'unlock'; readonly user?: string; readonly cls?: string; readonly token?: string; readonly json?: boolean }

/** the positionals after `fraud` (consumed from `extra`), or a usage error */
export function parseFraudArgs(extra: string[], token: string | undefined, json: boolean): FraudCli | string {
  const op = extra.shift();
  if (op !== 'list' && op !== 'unlock') return 'fraud needs list or unlock';
  const base: FraudCli = { op: op as FraudCli['op'], ...(token !== undefined ? { token } : {}), ...(json ? { json } : {}) };
  if (op === 'list') return base;
  const user = extra.shift();
  if (user === undefined || user === '') return 'fraud unlock needs a user';
  const cls = extra.shift();
  if (cls !== undefined && !(DEST_CLASSES as readonly string[]).includes(cls)) return `fraud unlock: unknown class "${cls}" (one of ${DEST_CLASSES.join(', ')})`;
  return { ...base, user, ...(cls !== undefined ? { cls } : {}) };
}

interface Io { out(t: string): void; err(t: string): void; env: NodeJS.ProcessEnv }

export async function fraudCommand(f: FraudCli, cfg: ResolvedConfig, io: Io): Promise<number> {
  if (!cfg.metrics.listen) { io.err('sip-edge: the admin listener is off (metrics.listen): nothing to talk to\n'); return 1; }
  const token = f.token ?? io.env.SIPEDGE_ADMIN_TOKEN ?? cfg.metrics.token;
  const p = f.op === 'list' ? '/fraud' : `/fraud/${encodeURIComponent(f.user!)}${f.cls !== undefined ? `/${encodeURIComponent(f.cls)}` : ''}`;
  try {
    const res = await fetch(`http://${cfg.metrics.listen}${p}`, {
      method: f.op === 'list' ? 'GET' : 'DELETE',
      headers: token ? { Authorization: `Bearer ${token}` } : {},
      signal: AbortSignal.timeout(5000),
    });
    const text = await res.text();
    if (!res.ok && !(f.op === 'unlock' && res.status === 404)) { io.err(`sip-edge: the edge answered ${res.status}: ${text}`); return 1; }
    let body: unknown;
    try { body = JSON.parse(text); } catch { io.err(`sip-edge: the edge answered something that is not JSON: ${text.slice(0, 200)}\n`); return 1; }
    if (f.json) io.out(`${JSON.stringify(body, null, 2)}\n`);
    else io.out(formatFraud(f, body));
    return res.ok ? 0 : 1;
  } catch (e) {
    io.err(`sip-edge: cannot reach the edge's admin listener at ${cfg.metrics.listen}: ${(e as Error).message}\n`);
    return 1;
  }
}

/** for people; user names come from callers: control characters are shown escaped */
function formatFraud(f: FraudCli, x: unknown): string {
  const shown = (v: unknown): string => String(v).replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  if (f.op === 'unlock') {
    const n = (x as { removed?: unknown } | null)?.removed;
    return typeof n === 'number' && n > 0 ? `unlocked ${shown(f.user)} (${n} lock${n === 1 ? '' : 's'})\n` : `not locked: ${shown(f.user)}${f.cls ? ` ${f.cls}` : ''}\n`;
  }
  const list = Array.isArray(x) ? (x as Array<{ user?: unknown; cls?: unknown; signal?: unknown; since?: unknown }>) : [];
  if (list.length === 0) return 'no fraud locks\n';
  const iso = (ms: unknown): string => (typeof ms === 'number' && Number.isFinite(ms) ? new Date(ms).toISOString() : shown(ms));
  const rows = [['USER', 'CLASS', 'SIGNAL', 'SINCE'], ...list.map((l) => [shown(l.user), shown(l.cls), shown(l.signal), iso(l.since)])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}
