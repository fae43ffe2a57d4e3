// Structured logging. Attacker bytes are hostile in logs too (STYLE.md principle 12): log a
// bounded preview, never a whole payload, and sample every event an outsider can trigger so a
// flood cannot fill a disk.
import pino from 'pino';
import type { Logger } from 'pino';
import type { LogLevel } from './config/schema';

export type { Logger };

/**
 * JSON lines to stdout (fd 1), synchronous writes: a process that exits right after logging
 * (fatal config error, second SIGTERM) must not lose its last line. Volume is bounded by
 * sampling, so the sync cost stays off the packet hot path in practice.
 */
export function createLogger(level: LogLevel = 'info', dest: pino.DestinationStream = pino.destination({ dest: 1, sync: true })): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid, name: 'sip-edge' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    dest,
  );
}

export interface BytePreview {
  /** total length of the buffer */
  readonly bytes: number;
  /** hex of at most `max` bytes */
  readonly hex: string;
  /** the same bytes, printable ASCII kept, everything else as "." (no CR/LF/ESC reach a terminal) */
  readonly text: string;
  readonly truncated: boolean;
}

/** Bounded preview of untrusted bytes for a log line. */
export function preview(buf: Buffer, max = 64): BytePreview {
  const n = Math.max(0, Math.min(buf.length, Math.floor(max)));
  const head = buf.subarray(0, n);
  let text = '';
  for (let i = 0; i < head.length; i++) {
    const c = head[i];
    text += c >= 0x20 && c <= 0x7e ? String.fromCharCode(c) : '.';
  }
  return { bytes: buf.length, hex: head.toString('hex'), text, truncated: buf.length > n };
}

/** Keys must come from a closed set (reason codes); this cap is the backstop if one does not. */
const MAX_SAMPLER_KEYS = 4096;

export interface Sampler {
  /** true when an event for `key` may be logged now: a token bucket per key, refilled at
   *  `perSecond` tokens per second, burst of max(1, perSecond). */
  take(key: string, perSecond: number): boolean;
  /** events refused since the last allowed one for `key` (to log "suppressed": n with it) */
  suppressed(key: string): number;
}

export function createSampler(now: () => number = () => performance.now()): Sampler {
  const buckets = new Map<string, { tokens: number; last: number; dropped: number; reported: number }>();
  return {
    take(key, perSecond) {
      const t = now();
      let b = buckets.get(key);
      const burst = Math.max(1, perSecond);
      if (b === undefined) {
        // Unknown key past the cap: refuse rather than grow, an attacker may be choosing keys.
        if (buckets.size >= MAX_SAMPLER_KEYS) return false;
        b = { tokens: burst, last: t, dropped: 0, reported: 0 };
        buckets.set(key, b);
      }
      const elapsed = Math.max(0, t - b.last) / 1000;
      b.tokens = Math.min(burst, b.tokens + elapsed * Math.max(0, perSecond));
      b.last = t;
      if (b.tokens >= 1) {
        b.tokens -= 1;
        b.reported = b.dropped;
        b.dropped = 0;
        return true;
      }
      b.dropped++;
      return false;
    },
    suppressed(key) {
      return buckets.get(key)?.reported ?? 0;
    },
  };
}

const defaultSampler = createSampler();

/** Process-wide sampler: `if (sampled('parse_error', 5)) log.warn({...}, 'parse error')`. */
export function sampled(key: string, perSecond: number): boolean {
  return defaultSampler.take(key, perSecond);
}

/** Security events: one stable JSON shape that fail2ban or a SIEM can match (ops/fail2ban/),
 *  keyed on the transport source address only, never on anything a SIP header claims.
 *  Low volume by construction (one line per ban, unban, reload, lockout), so never sampled.
 *  auth_lockout: a user locked after repeated failures; src is the source whose failure locked it. */
export type SecurityEventKind = 'ban' | 'unban' | 'rules_reload' | 'users_reload' | 'auth_lockout' | 'tls_reload' | 'fraud_signal' | 'fraud_unlock';

export interface SecurityEventFields {
  /** transport source address (or the banned key: an address, an IPv6 /64, a CIDR) */
  readonly src?: string;
  readonly reason?: string;
  readonly rule?: string;
  readonly [extra: string]: unknown;
}

export function securityEvent(log: Logger, kind: SecurityEventKind, fields: SecurityEventFields = {}): void {
  // key order is part of the format: sec, then src, so a filter can anchor on both
  const { src, ...rest } = fields;
  log.warn({ sec: kind, ...(src !== undefined ? { src } : {}), ...rest }, `security ${kind}`);
}
