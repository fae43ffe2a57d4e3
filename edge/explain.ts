// `sip-edge explain FILE.sip --source IP[:PORT]`: what would the edge do with this message, and
// why? Parses the bytes with the production parser and limits, then asks every configured stage
// for its decision (Pipeline.explain: no short circuit, no metrics, no side effects), so an
// operator sees not only the stage that decided but also what the later ones would have said.
//
// Pure apart from the stages themselves: no socket, no file. The CLI reads the file, builds the
// stages from the rules snapshot and prints formatExplain(report).
import { trunkOfAddress } from './router/trunks';
import type { ResolvedConfig } from './config/types';
import { sourceClassifier } from './classify';
import { canonicalAddress } from './net/address';
import { Pipeline, type StageEntry } from './pipeline';
import { parseMessage, type ParseReason } from './sip/parser';
import type { Endpoint, SipMessage } from './sip/types';
import { verdictForParseFailure } from './stages/parse-verdict';
import { answerable } from './path/respond';
import type { MessageContext, Side, StageMode, Trust, Verdict } from './verdict';
import type { RulesSnapshot } from './policy/snapshot';

export interface ExplainOptions {
  readonly bytes: Buffer;
  readonly source: Endpoint;
  readonly rules: RulesSnapshot;
  readonly cfg: ResolvedConfig;
  /** the stages in the configured order, built from the snapshot by the caller */
  readonly stages: readonly StageEntry[];
  /** override the side / trust the edge would derive from cfg and the access lists */
  readonly side?: Side;
  readonly trust?: Trust;
}

export type ExplainDecision = 'skipped' | 'continue' | 'reply' | 'drop' | 'ban' | 'log';

export interface ExplainStageStep {
  readonly stage: string;
  readonly mode: StageMode;
  readonly decision: ExplainDecision;
  /** why a skipped stage did not run */
  readonly skippedBecause?: 'off' | 'trusted_source';
  readonly reason?: string;
  readonly rule?: string;
  readonly status?: number;
  readonly banSeconds?: number;
  /** what this decision does in the live pipeline */
  readonly effect:
    | 'none'          // continue, or a stage that did not run
    | 'decides'       // the first enforced decision: the edge acts on it
    | 'shadow'        // shadow mode: counted and logged, the message goes on
    | 'log'           // a log-only rule: counted and logged, the message goes on
    | 'not_reached';  // an earlier stage decided; live, this stage would not run
  readonly verdict?: Verdict;
}

export interface ExplainReport {
  readonly rulesVersion: string;
  readonly source: Endpoint;
  readonly side: Side;
  readonly trust: Trust;
  /** the configured trunk the source address belongs to, if any */
  readonly trunk?: string;
  readonly bytes: number;
  readonly parse:
    | { readonly ok: true; readonly kind: 'request' | 'response'; readonly startLine: string; readonly headers: number; readonly bodyBytes: number }
    | { readonly ok: false; readonly reason: ParseReason; readonly status: number };
  readonly steps: readonly ExplainStageStep[];
  /** the verdict the edge acts on, and which step produced it ('parse' for a parse failure) */
  readonly final: { readonly verdict: Verdict; readonly stage?: string };
  /** true when every stage lets the message through: it goes to the proxy (routing, served
   *  domains and Route checks happen there and are not part of explain) */
  readonly forwarded: boolean;
}

/** The edge's own side / trust derivation (edge/classify.ts), for one source. */
export function classifySource(source: Endpoint, cfg: ResolvedConfig, rules: RulesSnapshot): { side: Side; trust: Trust } {
  return sourceClassifier(cfg, () => rules).classify({ ...source, address: canonicalAddress(source.address) });
}

function startLineOf(msg: SipMessage): string {
  // the start line as received (latin1: one char per byte), bounded for display
  const line = msg.raw.subarray(0, Math.max(0, msg.startLineEnd - 2)).toString('latin1');
  return line.length > 200 ? `${line.slice(0, 197)}...` : line;
}

function stepOf(stage: string, mode: StageMode, v: Verdict | 'skipped', decided: boolean, skippedBecause?: 'off' | 'trusted_source'): ExplainStageStep {
  if (v === 'skipped') return { stage, mode, decision: 'skipped', skippedBecause, effect: 'none' };
  if (v.action === 'continue') return { stage, mode, decision: 'continue', effect: decided ? 'not_reached' : 'none', verdict: v };
  const effect: ExplainStageStep['effect'] = decided ? 'not_reached' : mode === 'shadow' ? 'shadow' : v.action === 'log' ? 'log' : 'decides';
  return {
    stage, mode, decision: v.action, reason: v.reason, rule: v.rule, effect, verdict: v,
    status: v.action === 'reply' ? v.status : undefined,
    banSeconds: v.action === 'ban' ? v.seconds : undefined,
  };
}

export async function explainMessage(opts: ExplainOptions): Promise<ExplainReport> {
  const { bytes, rules, cfg, stages } = opts;
  const source: Endpoint = { ...opts.source, address: canonicalAddress(opts.source.address) };
  const derived = classifySource(source, cfg, rules);
  const side = opts.side ?? derived.side;
  const trust = opts.trust ?? (side === 'inside' ? 'inside' : derived.trust);
  const trunk = trunkOfAddress(cfg.trunks, source.address); // [trunks]
  const base = { rulesVersion: rules.version, source, side, trust, ...(trunk !== undefined ? { trunk } : {}), bytes: bytes.length };

  // exactly what the edge does: the configured limits, datagram framing for UDP (bytes past
  // Content-Length are discarded, RFC 3261 18.3), stream framing otherwise
  const r = parseMessage(bytes, { limits: cfg.limits, framing: source.transport === 'udp' ? 'datagram' : 'stream' });
  if (!r.ok) {
    const verdict = answerable(verdictForParseFailure(r, source), r.partial);
    return { ...base, parse: { ok: false, reason: r.reason, status: r.status }, steps: [], final: { verdict, stage: 'parse' }, forwarded: false };
  }
  const msg = r.msg;
  const ctx: MessageContext = { msg, source, side, trust, receivedAt: 0 };
  const res = await new Pipeline(stages).explain(ctx, stages);

  const steps: ExplainStageStep[] = [];
  let decided = false;
  for (const s of res.steps) {
    const why = s.verdict === 'skipped' ? (s.mode === 'off' ? 'off' : 'trusted_source') : undefined;
    const step = stepOf(s.stage, s.mode, s.verdict, decided, why);
    steps.push(step);
    if (step.effect === 'decides') decided = true;
  }
  return {
    ...base,
    parse: { ok: true, kind: msg.kind, startLine: startLineOf(msg), headers: msg.headers.length, bodyBytes: msg.bodyLength },
    steps,
    final: res.final.stage !== undefined ? { verdict: res.final.verdict, stage: res.final.stage } : { verdict: res.final.verdict },
    forwarded: res.final.verdict.action === 'continue',
  };
}

function endpointText(e: Endpoint): string {
  return `${e.transport}:${e.address.includes(':') ? `[${e.address}]` : e.address}:${e.port}`;
}

function verdictText(v: Verdict): string {
  switch (v.action) {
    case 'continue': return 'continue';
    case 'reply': return `reply ${v.status}${v.phrase ? ` "${v.phrase}"` : ''}, reason ${v.reason}${v.rule ? `, rule ${v.rule}` : ''}`;
    case 'drop': return `drop, reason ${v.reason}${v.rule ? `, rule ${v.rule}` : ''}`;
    case 'ban': return `ban ${v.seconds}s, reason ${v.reason}${v.rule ? `, rule ${v.rule}` : ''}`;
    case 'log': return `log, reason ${v.reason}${v.rule ? `, rule ${v.rule}` : ''}`;
  }
}

const EFFECT_TEXT: Record<ExplainStageStep['effect'], string> = {
  none: '',
  decides: '<- decides',
  shadow: '(shadow: counted, not enforced)',
  log: '(log only: counted, message goes on)',
  not_reached: '(not reached live: an earlier stage decided)',
};

/** Human-readable report, one line per fact; no colour, stable for tests and pasting. */
export function formatExplain(rep: ExplainReport): string {
  const out: string[] = [];
  out.push(`rules version ${rep.rulesVersion}`);
  out.push(`source   ${endpointText(rep.source)} (${rep.side}, ${rep.trust}${rep.trunk !== undefined ? `, trunk ${rep.trunk}` : ''})`);
  if (!rep.parse.ok) {
    out.push(`parse    FAILED: ${rep.parse.reason} (a request with this defect deserves ${rep.parse.status}); no stage runs`);
    const v = rep.final.verdict;
    const how = v.action === 'reply'
      ? `reply ${v.status}, reason ${v.reason}`
      : `drop, reason ${v.action === 'continue' ? '' : v.reason} (silently: a reply needs the request's Via, From, To, Call-ID and CSeq, RFC 3261 8.2.6.2; an ACK or a response is never answered, RFC 3261 17)`;
    out.push(`verdict  ${how} [stage parse]`);
    out.push('forward  no');
    return out.join('\n');
  }
  out.push(`parse    ok: ${rep.parse.kind} "${rep.parse.startLine}", ${rep.parse.headers} header lines, ${rep.parse.bodyBytes} body bytes`);
  out.push('stages');
  const width = Math.max(5, ...rep.steps.map((s) => s.stage.length));
  rep.steps.forEach((s, i) => {
    const head = `  ${i + 1}. ${s.stage.padEnd(width)}  ${s.mode.padEnd(7)}  `;
    let body: string;
    if (s.decision === 'skipped') body = s.skippedBecause === 'off' ? 'skipped (stage is off)' : 'skipped (trusted source skips this stage)';
    else body = s.verdict ? verdictText(s.verdict) : s.decision;
    const eff = EFFECT_TEXT[s.effect];
    out.push(`${head}${body}${eff ? `  ${eff}` : ''}`);
  });
  if (rep.steps.length === 0) out.push('  (no stage configured)');
  if (rep.forwarded) {
    out.push('verdict  continue: every stage lets it through');
    out.push('forward  yes: the message would be forwarded (the proxy still applies routing: served domains, Route, Max-Forwards)');
  } else {
    out.push(`verdict  ${verdictText(rep.final.verdict)} [stage ${rep.final.stage ?? '?'}]`);
    out.push('forward  no');
  }
  return out.join('\n');
}
