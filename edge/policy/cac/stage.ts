// CAC stage (issue 16): call admission control, destination policy and fraud signals for new
// calls from outside, and the dialog observation that keeps the live counts.
//
// A new call is an INVITE without a To tag (RFC 3261 12.2: a request inside a dialog carries the
// remote tag). For it, in order:
//   1. the destination class of the Request-URI's number (destinations.ts); emergency calls are
//      counted but never refused by anything below (they go straight to admission without limits);
//   2. the user's group must allow the class (403 class_forbidden);
//   3. a fraud lock of (user, class) refuses it (403 fraud_locked);
//   4. fraud signals (fraud.ts): warning -> a security log event; critical -> the (user, class) is
//      locked cluster-wide and the call refused (403 fraud_critical);
//   5. the per-class velocity budget (new calls per minute per user, 503 class_rate);
//   6. admission: the dialog takes a lease on every counted key (total, user, source, trunk,
//      source class, user+class) atomically; a full key refuses it with the configured answer
//      (cac.yaml answer: 486 Busy Here or 503 + Retry-After, RFC 3261 21.4.7 / 21.5.4).
// In-dialog requests are never refused here (RFC 3261 12.2: refusing a BYE would leave a call up
// and billed). BYE and CANCEL only end the tracked dialog; the PBX's final response to the INVITE
// (seen here as a response from inside) confirms it (2xx) or ends it (>= 300).
import { callId, cseq, from, to, requestUri } from '../../sip/headers';
import type { SipRequest, SipResponse } from '../../sip/types';
import { CONTINUE, reply, type MessageContext, type Stage, type Verdict } from '../../verdict';
import { DialogTracker, dialogId } from '../../dialogs/tracker';
import type { LeaseBackend, LeaseKey } from '../../dialogs/leases';
import { compileClassifier, compileGroups, type Classifier } from './destinations';
import { FraudSignals, type FraudFinding, type LockStore } from './fraud';
import type { CacRules, DestClass, FraudRules, FraudSignal } from './rules';

export const CAC_REASONS = [
  'cac_total', 'cac_user', 'cac_source', 'cac_trunk', 'cac_source_class', 'cac_class', 'dialogs_full',
  'class_forbidden', 'class_rate', 'fraud_locked', 'fraud_critical', 'store_down',
] as const;
export type CacReason = (typeof CAC_REASONS)[number];

export interface CacEvents {
  refused?(reason: CacReason): void;
  fraud?(signal: FraudSignal, level: 'warning' | 'critical', user: string, cls: DestClass, f: FraudFinding): void;
  log?(level: 'info' | 'warn', obj: Record<string, unknown>, msg: string): void;
}

export interface CacStageOptions {
  readonly rules: () => { cac: CacRules; fraud: FraudRules };
  readonly backend: LeaseBackend;
  readonly locks: LockStore;
  /** wall clock (shared with other instances through the leases) */
  readonly now?: () => number;
  /** the named trunk a source belongs to (helper "trunks"), or undefined */
  readonly trunkOf?: (ctx: MessageContext) => string | undefined;
  readonly events?: CacEvents;
  readonly maxDialogs?: number;
}

export interface CacStage extends Stage {
  readonly tracker: DialogTracker;
  readonly fraud: FraudSignals;
  readonly locks: LockStore;
  close(): Promise<void>;
}

interface Compiled { readonly rules: CacRules; readonly classify: Classifier; readonly groupOf: ReturnType<typeof compileGroups> }

export function createCacStage(o: CacStageOptions): CacStage {
  const now = o.now ?? Date.now;
  let compiled: Compiled | undefined;
  const current = (): Compiled => {
    const r = o.rules().cac;
    if (compiled?.rules !== r) compiled = { rules: r, classify: compileClassifier(r), groupOf: compileGroups(r) };
    return compiled;
  };
  const fraud = new FraudSignals(() => o.rules().fraud, now);
  const tracker = new DialogTracker({
    backend: o.backend, now,
    leaseTtlMs: o.rules().cac.leaseTtlSeconds * 1000,
    maxDurationS: o.rules().cac.maxDurationSeconds,
    maxDialogs: o.maxDialogs,
    onEnd: (d, _r, secs) => { if (secs > 0) fraud.ended(d.user, secs); },
    onError: (err) => o.events?.log?.('warn', { err: String(err) }, 'cac: lease store error'),
  });
  tracker.start();
  // per (user, class) starts in the last minute, for classBudgets.perMinute (bounded like fraud)
  const velocity = new Map<string, number[]>();

  const refuse = (reason: CacReason, c: Compiled, status?: number): Verdict => {
    o.events?.refused?.(reason);
    if (status === 403) return reply(403, reason);
    const a = c.rules.answer;
    return a.status === 486 ? reply(486, reason) : reply(503, reason, { headers: [['Retry-After', String(a.retryAfter)]] });
  };

  async function admitNew(ctx: MessageContext, req: SipRequest): Promise<Verdict> {
    const c = current();
    const f = from(req); const t = to(req); const cid = callId(req);
    const tag = f?.params.get('tag');
    if (!f || !t || !cid || !tag) return CONTINUE; // sanity refuses these; nothing to track
    const user = ctx.identity ?? `${f.uri.user ?? ''}@${f.uri.host}`;
    const dest = c.classify.classify(requestUri(req)?.user);
    const id = dialogId(cid, tag);
    const L = c.rules.limits;
    const trunk = o.trunkOf?.(ctx);
    const srcClass = ctx.trust === 'trusted' ? 'trusted' : ctx.promoted || ctx.identity !== undefined ? 'promoted' : 'untrusted';
    const keyUserClass = `uc:${user}|${dest.cls}`;
    if (dest.cls === 'emergency') {
      // counted (an operator sees them), never limited: RFC 5031 / local regulation
      try { await tracker.admit(id, user, dest.cls, [{ key: 'total', limit: null }, { key: `u:${user}`, limit: null }, { key: keyUserClass, limit: null }]); } catch { /* counted best effort */ }
      return CONTINUE;
    }
    const group = c.groupOf(user.split('@')[0]!);
    if (!group.allow.has(dest.cls) && !c.groupOf(user).allow.has(dest.cls)) return refuse('class_forbidden', c, 403);
    try {
      if (await o.locks.isLocked(user, dest.cls)) return refuse('fraud_locked', c, 403);
      const concurrent = await o.backend.count(keyUserClass, now());
      const findings = fraud.attempt(user, dest.cls, dest.number, concurrent);
      for (const x of findings) {
        o.events?.fraud?.(x.signal, x.level, user, dest.cls, x);
        o.events?.log?.('warn', { event: 'fraud_signal', signal: x.signal, level: x.level, user, class: dest.cls, value: x.value, threshold: x.threshold }, `fraud ${x.level}: ${x.signal}`);
      }
      const crit = findings.find((x) => x.level === 'critical');
      if (crit) {
        await o.locks.lock({ user, cls: dest.cls, signal: crit.signal, since: now() });
        return refuse('fraud_critical', c, 403);
      }
      const budget = (c.rules.classBudgets as Partial<Record<DestClass, { concurrent?: number; perMinute?: number }>>)[dest.cls];
      if (budget?.perMinute !== undefined) {
        const vk = `${user}|${dest.cls}`;
        const ts = (velocity.get(vk) ?? []).filter((x) => now() - x < 60_000);
        velocity.delete(vk);
        if (ts.length >= budget.perMinute) { velocity.set(vk, ts); return refuse('class_rate', c); }
        ts.push(now()); velocity.set(vk, ts);
        if (velocity.size > 50_000) velocity.delete(velocity.keys().next().value!);
      }
      const keys: LeaseKey[] = [
        { key: 'total', limit: L.total ?? null },
        { key: `u:${user}`, limit: L.perUser ?? null },
        { key: `s:${ctx.sourceKey ?? ctx.source.address}`, limit: L.perSource ?? null },
        { key: `sc:${srcClass}`, limit: L.perSourceClass?.[srcClass] ?? null },
        { key: keyUserClass, limit: budget?.concurrent ?? null },
      ];
      if (trunk !== undefined) keys.push({ key: `t:${trunk}`, limit: L.perTrunk?.[trunk] ?? null });
      const r = await tracker.admit(id, user, dest.cls, keys);
      if (r.ok) return CONTINUE;
      const k = r.key;
      const reason: CacReason = k === 'dialogs_full' ? 'dialogs_full' : k === 'total' ? 'cac_total' : k.startsWith('u:') ? 'cac_user'
        : k.startsWith('sc:') ? 'cac_source_class' : k.startsWith('s:') ? 'cac_source' : k.startsWith('t:') ? 'cac_trunk' : 'cac_class';
      return refuse(reason, c);
    } catch (err) {
      // the shared store is down: a call that cannot be counted is refused with the soft answer
      // (toll fraud costs money; an outage of Redis is visible in its own metrics)
      o.events?.log?.('warn', { err: String(err) }, 'cac: store unreachable');
      return refuse('store_down', c);
    }
  }

  function observeRequest(req: SipRequest): void {
    const cid = callId(req); if (!cid) return;
    const ft = from(req)?.params.get('tag'); const tt = to(req)?.params.get('tag');
    // either side may send the BYE: the dialog is keyed by the caller's tag, which is the From
    // tag of the caller's requests and the To tag of the callee's
    for (const tag of [ft, tt]) {
      if (!tag) continue;
      const id = dialogId(cid, tag);
      if (!tracker.get(id)) continue;
      if (req.method === 'BYE') tracker.end(id, 'bye');
      else if (req.method === 'CANCEL') tracker.end(id, 'cancel');
    }
  }

  function observeResponse(res: SipResponse): void {
    if (res.status < 200 || cseq(res)?.method !== 'INVITE') return;
    const cid = callId(res); const tag = from(res)?.params.get('tag');
    if (!cid || !tag) return;
    const id = dialogId(cid, tag);
    if (res.status < 300) tracker.confirm(id); else tracker.failed(id);
  }

  return {
    name: 'cac',
    reasons: CAC_REASONS,
    skippableForTrusted: false,
    scope: { sides: ['outside', 'inside'], requests: ['INVITE', 'BYE', 'CANCEL'], responses: true },
    tracker, fraud, locks: o.locks,
    check(ctx) {
      const m = ctx.msg;
      if (m.kind === 'response') { if (ctx.side === 'inside') observeResponse(m); return CONTINUE; }
      if (m.method !== 'INVITE') { observeRequest(m); return CONTINUE; }
      if (ctx.side !== 'outside' || ctx.trust === 'inside') return CONTINUE;
      if (to(m)?.params.has('tag')) return CONTINUE; // in-dialog: never refused
      return admitNew(ctx, m);
    },
    close: () => tracker.stop(true),
  };
}
