// Every sip-edge metric is declared in METRICS below, and nowhere else.
//
// Rules (STYLE.md principle 9, Envoy "stats declared up front"):
// - prefix `sipedge_`, base units (seconds), counters end in `_total`, HELP on every metric;
// - label values come only from closed lists known at construction (stage names, reason codes,
//   rule names, configured upstream specs). A value outside the list is counted under "other":
//   an attacker who controls a reason string, a rule name or a header can never create series.
//   Never an IP address, user, Call-ID or User-Agent as a label value.
//
// Hot path (~40k messages/s): prom-client's `counter.inc(labels)` builds a label object and a
// hash string per call, and `histogram.observe` also validates labels and stringifies the bucket
// bound. So the edge counts into plain Float64Array cells addressed through Maps of the closed
// label values (resolved once per call, no allocation) and prom-client only sees the numbers at
// scrape time: each family is a small collector whose get() returns the same shape prom-client's
// own metrics return, so the Registry's text exposition, getMetricsAsJSON() and the cluster
// AggregatorRegistry all work on it unchanged.
//
// Cluster mode (later): run one Metrics per worker, each on its own Registry (the default);
// in the primary, `new AggregatorRegistry()` + `clusterMetrics()` merges the workers' JSON
// using each family's `aggregator` (sum for counters and most gauges, max for *_up and *_info).
// Metrics takes an injected Registry so a worker can hand its registry to prom-client's cluster
// plumbing, or a test can inspect it.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { collectDefaultMetrics, Registry } from 'prom-client';
import type { Aggregator, Metric } from 'prom-client';
import type { ParseReason } from './sip/parser';
import { PRIORITY_CLASSES, PRIORITY_SHED_REASONS, type PriorityClass, type PriorityShedReason } from './path/priority';
import type { TransportName } from './sip/types';
import type { AdmissionResult, SourceClass, TransportEvent } from './transport/types';
import type { HealthFailureCause } from './router/upstreams';
import { TLS_HANDSHAKE_REASONS, type TlsHandshakeReason } from './transport/tls';
import { WS_UPGRADE_REASONS, WS_UPGRADE_RESULTS, wsUpgradeResult, type WsUpgradeReason } from './transport/ws';
import { DNS_CACHE_RESULTS, DNS_QUERY_TYPES, DNS_RESULTS } from './dns/types';
import type { DnsCacheResult, DnsQueryType, DnsResult } from './dns/types';
import type { Side, StageMode, Verdict } from './verdict';
import { CAC_REASONS, type CacReason } from './policy/cac/stage';
import { DEST_CLASSES, FRAUD_SIGNALS, type FraudSignal } from './policy/cac/rules';

// ---------------------------------------------------------------------------------------------
// Closed label value lists. Each list is checked against its source type at compile time.

type Exhaustive<T, L extends readonly T[]> = [Exclude<T, L[number]>] extends [never] ? L : never;

export const TRANSPORTS = ['udp', 'tcp', 'tls', 'ws', 'wss'] as const;
const _transports: Exhaustive<TransportName, typeof TRANSPORTS> = TRANSPORTS;

export const SIDES = ['outside', 'inside'] as const;
const _sides: Exhaustive<Side, typeof SIDES> = SIDES;

/** keepalive: RFC 5626 4.4.1 CRLF ping / RFC 3261 7.5 stray CRLF; invalid: failed to parse */
export const MESSAGE_KINDS = ['request', 'response', 'keepalive', 'invalid'] as const;
export type MessageKind = (typeof MESSAGE_KINDS)[number];

export const VERDICT_ACTIONS = ['reply', 'drop', 'ban', 'log'] as const;
export type VerdictAction = (typeof VERDICT_ACTIONS)[number];

/** 'off' stages never run, so they never produce a verdict to count. */
export const VERDICT_MODES = ['enforce', 'shadow'] as const;
export type VerdictMode = Exclude<StageMode, 'off'>;
const _modes: Exhaustive<VerdictMode, typeof VERDICT_MODES> = VERDICT_MODES;

export const PARSE_REASONS = [
  'empty', 'start_line_invalid', 'method_invalid', 'version_unsupported', 'status_invalid',
  'request_uri_invalid', 'request_uri_too_long', 'header_line_too_long', 'too_many_headers',
  'message_too_large', 'headers_unterminated', 'header_syntax', 'control_char',
  'content_length_invalid', 'content_length_duplicate', 'content_length_missing', 'body_truncated',
  'trailing_bytes',
] as const;
const _parse: Exhaustive<ParseReason, typeof PARSE_REASONS> = PARSE_REASONS;

/** Replies / ACKs / CANCELs matching no transaction (RFC 3261 17.1.3, 17.2.3, 9.2; Kamailio
 *  t_check_trans drops them too). */
export const UNMATCHED_KINDS = ['response', 'ack', 'cancel'] as const;
export type UnmatchedKind = (typeof UNMATCHED_KINDS)[number];

/** absorbed: a retransmitted request swallowed by the edge (RFC 3261 17.2.1 "Proceeding" state);
 *  answered: a retransmission answered from the stored final response (17.2.1 / 17.2.2);
 *  sent: the edge itself retransmitted over UDP (17.1.1.2 Timer A, 17.1.2.2 Timer E). */
export const RETRANSMISSION_DIRECTIONS = ['absorbed', 'answered', 'sent'] as const;
export type RetransmissionDirection = (typeof RETRANSMISSION_DIRECTIONS)[number];

export const TRANSACTION_REJECT_REASONS = ['table_full'] as const;

export const TRANSPORT_EVENTS = [
  'conn_opened', 'conn_closed', 'conn_rejected_total_cap', 'conn_rejected_source_cap',
  'conn_idle_timeout', 'conn_message_timeout', 'conn_framing_error', 'conn_oversize',
  'keepalive_pong', 'datagram_oversize', 'datagram_queue_full', 'send_error',
  'conn_rejected_class_cap', 'conn_evicted', 'conn_rejected_banned',
] as const;
const _events: Exhaustive<TransportEvent, typeof TRANSPORT_EVENTS> = TRANSPORT_EVENTS;

/** TCP admission by source class (the edge classifies, the transport reserves capacity: unknown
 *  sources cannot take what trusted, inside and promoted ones need) */
export const SOURCE_CLASSES = ['inside', 'trusted', 'promoted', 'unknown'] as const;
const _classes: Exhaustive<SourceClass, typeof SOURCE_CLASSES> = SOURCE_CLASSES;
export const ADMISSION_RESULTS = ['accepted', 'evicted', 'rejected_class_cap', 'rejected_total_cap', 'rejected_source_cap', 'probation', 'probation_verified', 'probation_failed'] as const;
const _admissions: Exhaustive<AdmissionResult, typeof ADMISSION_RESULTS> = ADMISSION_RESULTS;

/** what counted against an upstream's health (edge/router/upstreams.ts) */
export const HEALTH_FAILURE_CAUSES = ['probe_timeout', 'probe_unavailable', 'transport_error'] as const;
const _causes: Exhaustive<HealthFailureCause, typeof HEALTH_FAILURE_CAUSES> = HEALTH_FAILURE_CAUSES;

/** RFC 3261 7.2 status classes; timeout: no final response before Timer B/F (17.1.1.2, 17.1.2.2) */
export const RESPONSE_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx', '6xx', 'timeout'] as const;
export type ResponseClass = (typeof RESPONSE_CLASSES)[number];

/** request methods counted by name (RFC 3261 plus the extensions a PBX sees: RFC 3262 PRACK,
 *  3265/6665 SUBSCRIBE/NOTIFY, 3311 UPDATE, 3428 MESSAGE, 3515 REFER, 3903 PUBLISH, 6086 INFO);
 *  anything else is "other" (a method name is attacker-chosen text) */
export const REQUEST_METHODS = ['INVITE', 'ACK', 'BYE', 'CANCEL', 'REGISTER', 'OPTIONS', 'PRACK', 'SUBSCRIBE', 'NOTIFY', 'UPDATE', 'MESSAGE', 'REFER', 'PUBLISH', 'INFO'] as const;
/** the six RFC 3261 7.2 classes received (no 'timeout': that is not something received) */
const RECEIVED_RESPONSE_CLASSES = RESPONSE_CLASSES.slice(0, 6);

/** challenge: 401/407 sent (RFC 3261 22.1); stale: nonce expired, re-challenged (RFC 2617 3.2.1 stale=true) */
export const AUTH_RESULTS = ['challenge', 'success', 'failure', 'stale', 'lockout'] as const;
export type AuthResult = (typeof AUTH_RESULTS)[number];
/** edge: the edge challenged and verified; pbx: the PBX did and the edge watched (pass-through) */
export const AUTH_MODES = ['edge', 'pbx'] as const;
/** digest algorithms a right answer can use (RFC 7616 3.2, RFC 8760) */
export const AUTH_ALGORITHMS = ['SHA-256', 'SHA-512-256', 'MD5'] as const;
export type AuthAlgorithmLabel = (typeof AUTH_ALGORITHMS)[number];
export type AuthMetricMode = (typeof AUTH_MODES)[number];

export const RELOAD_RESULTS = ['ok', 'error'] as const;
/** refused: before the handshake began (the per-source or total handshake cap) */
export const TLS_HANDSHAKE_RESULTS = ['ok', 'failed', 'refused'] as const;
function tlsHandshakeResult(reason: TlsHandshakeReason): (typeof TLS_HANDSHAKE_RESULTS)[number] {
  return reason === 'ok' ? 'ok' : reason === 'source_cap' || reason === 'total_cap' ? 'refused' : 'failed';
}

/** 10 us .. 100 ms: one message's trip through gate, parse and stages should sit in the lower half. */
export const PROCESSING_BUCKETS = [
  0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
] as const;

/** 100 us .. 2 s: a queue that is served within the turn sits at the bottom; the class delay
 *  bounds (edge/path/priority.ts MAX_DELAY_MS: 200 ms, 500 ms, 2 s) are bucket edges */
export const PRIORITY_DELAY_BUCKETS = [0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2] as const;

/** prom-client default metrics that are gauges despite their `_total` name (removed, see Metrics) */
const DEFAULT_GAUGES_NAMED_TOTAL = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'] as const;

/** Label value used for anything outside a declared list. */
export const OTHER = 'other';

/** Caps for the operator-fed lists (rules, upstreams, stages, reasons): config typos or a huge
 *  generated rule file must not turn into a cardinality explosion. Past the cap: "other". */
export const MAX_DYNAMIC_VALUES = 1000;
const MAX_LABEL_VALUE_LENGTH = 128;

// Keep the compile-time exhaustiveness checks referenced (noUnusedLocals).
void [_transports, _sides, _modes, _parse, _events, _classes, _admissions, _causes];

// ---------------------------------------------------------------------------------------------
// THE metric declarations.

type MetricType = 'counter' | 'gauge' | 'histogram';
interface MetricDef {
  readonly name: string;
  readonly help: string;
  readonly type: MetricType;
  readonly labels: readonly string[];
  /** how the cluster AggregatorRegistry merges workers */
  readonly aggregator: Aggregator;
}
const def = (name: string, type: MetricType, labels: readonly string[], help: string, aggregator: Aggregator = 'sum'): MetricDef =>
  ({ name, type, labels, help, aggregator });

export const METRICS = {
  received: def('sipedge_messages_received_total', 'counter', ['transport', 'side', 'kind'],
    'SIP messages received, by transport, side (outside = internet, inside = PBX) and kind.'),
  requests: def('sipedge_requests_total', 'counter', ['method', 'side'],
    'SIP requests received that parsed, by method (closed list, else other) and side.'),
  responses: def('sipedge_responses_total', 'counter', ['class', 'side'],
    'SIP responses received that parsed, by status class and side (inside = from the PBX or trunk side).'),
  upstreamInfo: def('sipedge_upstream_info', 'gauge', ['upstream', 'target'],
    'Always 1: which configured upstream (transport:host:port from the config, never a traffic address) an upstream position label means.', 'max'),
  sent: def('sipedge_messages_sent_total', 'counter', ['transport', 'side', 'kind'],
    'SIP messages sent (forwarded or generated by the edge), by transport, side and kind.'),
  verdicts: def('sipedge_verdicts_total', 'counter', ['stage', 'action', 'reason', 'mode'],
    'Non-continue verdicts by stage, action (reply|drop|ban), reason code and mode (shadow = counted, not applied).'),
  ruleHits: def('sipedge_rule_hits_total', 'counter', ['rule'],
    'Verdicts decided by a named rule from the rule files.'),
  parseFailures: def('sipedge_parse_failures_total', 'counter', ['reason'],
    'Messages rejected by the strict parser, by parse reason code.'),
  unmatched: def('sipedge_unmatched_total', 'counter', ['kind'],
    'Responses, ACKs and CANCELs matching no transaction, dropped (RFC 3261 17).'),
  transactionsActive: def('sipedge_transactions_active', 'gauge', [],
    'Entries in the transaction table at scrape time.'),
  transactionsExpired: def('sipedge_transactions_expired_total', 'counter', [],
    'Transactions removed by RFC 3261 timers.'),
  transactionsRejected: def('sipedge_transactions_rejected_total', 'counter', ['reason'],
    'Transactions that could not be created (e.g. table_full).'),
  retransmissions: def('sipedge_retransmissions_total', 'counter', ['direction'],
    'Retransmissions absorbed, answered from the stored response, or sent by the edge.'),
  sdpInside: def('sipedge_sdp_inside_total', 'counter', ['kind', 'field'],
    'Messages sent to the outside whose SDP c= or o= names an inside address (the edge relays no media; fix the PBX NAT settings). Counted with topology hiding on.'),
  upstreamUp: def('sipedge_upstream_up', 'gauge', ['upstream'],
    '1 when the configured upstream passes health checks, else 0.', 'max'),
  upstreamResponses: def('sipedge_upstream_responses_total', 'counter', ['upstream', 'class'],
    'Final and provisional responses from upstreams by status class, and timeouts.'),
  upstreamHealthFailures: def('sipedge_upstream_health_failures_total', 'counter', ['upstream', 'cause'],
    'Failures counted against an upstream\'s health: probe_timeout, probe_unavailable (503 to a probe), transport_error (connect refused/unreachable). Timeouts and 503s on real traffic never count.'),
  transportEvents: def('sipedge_transport_events_total', 'counter', ['transport', 'event'],
    'Transport events: connection caps, timeouts, framing errors, oversize, send errors.'),
  tcpConnections: def('sipedge_tcp_connections', 'gauge', [],
    'Open stream (TCP/TLS/WS) connections at scrape time.'),
  tcpAdmissions: def('sipedge_tcp_admissions_total', 'counter', ['class', 'result'],
    'Inbound TCP connections by source class (inside|trusted|promoted|unknown) and result (accepted, evicted to make room for a higher class, rejected by the class share, the total or the per-source cap; TLS from a certificate-trusted peer address: probation = admitted as trusted before its handshake, then probation_verified or probation_failed).'),
  bansAdded: def('sipedge_bans_added_total', 'counter', ['reason'],
    'Source bans added, by reason code.'),
  bansActive: def('sipedge_bans_active', 'gauge', [],
    'Sources currently banned at scrape time.'),
  bansExpired: def('sipedge_bans_expired_total', 'counter', [],
    'Bans that expired.'),
  auth: def('sipedge_auth_total', 'counter', ['mode', 'result'],
    'Digest authentication outcomes (challenge|success|failure|stale|lockout) by who checked (edge|pbx); failure reasons are in sipedge_verdicts_total{stage="auth"}.'),
  authAlgorithm: def('sipedge_auth_algorithm_total', 'counter', ['algorithm'],
    'Right digest answers checked by the edge, by the algorithm the client used (how much MD5 is still in use; the challenge chosen is sipedge_rule_hits_total{rule=~"auth-clients:.*"}).'),
  redisUp: def('sipedge_redis_up', 'gauge', [],
    '1 when the shared store (Redis) is reachable, else 0.', 'min'),
  redisErrors: def('sipedge_redis_errors_total', 'counter', [],
    'Failed shared store (Redis) operations.'),
  rulesReloads: def('sipedge_rules_reloads_total', 'counter', ['result'],
    'Rule file reloads by result (error keeps the previous snapshot).'),
  tlsHandshakes: def('sipedge_tls_handshakes_total', 'counter', ['result', 'reason'],
    'TLS handshakes on inbound connections admitted by the TCP caps: ok, failed (timeout, not_tls, protocol_version, no_shared_cipher, client_cert_missing, client_cert_invalid, reset, failed) or refused before they began (source_cap, total_cap).'),
  wsUpgrades: def('sipedge_ws_upgrades_total', 'counter', ['result', 'reason'],
    'WebSocket upgrades (RFC 7118) on inbound ws/wss connections admitted by the TCP caps (after the TLS handshake for wss): ok, refused by policy (origin_refused, no_subprotocol, banned) or failed (not_websocket, bad_handshake, forwarded_invalid, timeout, too_large, bad_request, reset).'),
  tlsReloads: def('sipedge_tls_reloads_total', 'counter', ['result'],
    'Reloads of the TLS certificate files by result (error keeps the previous certificates).'),
  connections: def('sipedge_connections', 'gauge', ['transport'],
    'Open stream connections by transport at scrape time.'),
  rulesInfo: def('sipedge_rules_info', 'gauge', ['version'],
    'Always 1; the version label identifies the active rules snapshot.', 'max'),
  processing: def('sipedge_processing_seconds', 'histogram', ['kind'],
    'Time from receipt to verdict applied (gate, parse, stages, route) per message.'),
  dialogsLive: def('sipedge_dialogs_live', 'gauge', ['side', 'state', 'class'],
    'Calls tracked by call admission control on this instance at scrape time, by the side that placed them (outside), state (early|confirmed) and destination class (edge/policy/cac/rules.ts DEST_CLASSES).'),
  cacRefused: def('sipedge_cac_refused_total', 'counter', ['reason'],
    'New calls refused by call admission control and the fraud rules, by reason (edge/policy/cac/stage.ts CAC_REASONS).'),
  fraudSignals: def('sipedge_fraud_signals_total', 'counter', ['signal', 'level'],
    'Fraud signals raised (warning: logged; critical: the user is locked for the destination class), by signal and level.'),
  priorityShed: def('sipedge_priority_shed_total', 'counter', ['class', 'reason'],
    'Messages shed before parsing by trusted-first prioritization, by class (dialog|favoured|unknown_dialog|unknown) and reason (queue_full|queue_delay).'),
  priorityDelay: def('sipedge_priority_queue_delay_seconds', 'histogram', ['class'],
    'Time a message waited in its priority class queue (from receipt) before it was handled.'),
  dnsQueries: def('sipedge_dns_queries_total', 'counter', ['type', 'result'],
    'DNS questions asked for RFC 3263 resolution (NAPTR|SRV|A|AAAA), by outcome after retries (ok|nxdomain|nodata|servfail|refused|timeout|busy|error).'),
  dnsCacheLookups: def('sipedge_dns_cache_lookups_total', 'counter', ['result'],
    'Synchronous resolver lookups on the request path: hit (fresh), stale (served while refreshing, RFC 8767) or miss (nothing usable cached yet).'),
  ready: def('sipedge_ready', 'gauge', [],
    '1 when the edge is ready (what /readyz answers 200 for), else 0; read at scrape time.', 'min'),
  buildInfo: def('sipedge_build_info', 'gauge', ['version', 'node'],
    'Always 1; labels carry the sip-edge and Node.js versions.', 'max'),
} as const satisfies Record<string, MetricDef>;

// ---------------------------------------------------------------------------------------------
// The API the edge calls. Metrics and NullMetrics both implement it.

export interface StageDeclaration {
  readonly name: string;
  readonly reasons: readonly string[];
  /** the actions this stage can take (default reply, drop, ban): only these rows start at zero */
  readonly actions?: readonly ('reply' | 'drop' | 'ban')[];
  /** false for what the rules cannot put in shadow mode (gate, parse, proxy, overload) */
  readonly shadow?: boolean;
}

/** Numbers owned by other components, read only when Prometheus scrapes. */
export interface GaugeSources {
  transactionsActive?: () => number;
  tcpConnections?: () => number;
  /** open stream connections of one transport */
  connectionsOf?: (transport: TransportName) => number;
  bansActive?: () => number;
  /** the readiness verdict, cached by its owner (a scrape must not wait on a Redis PING) */
  ready?: () => boolean;
  /** a counter kept by its owner: failed shared-store operations (the store counts every failed
   *  or timed-out command itself, so the metric cannot miss one that no caller reported) */
  redisErrors?: () => number;
  /** live tracked calls per `state|class` (edge/dialogs/tracker.ts census) */
  dialogsLive?: () => ReadonlyMap<string, number>;
}

export interface EdgeMetrics {
  readonly enabled: boolean;
  received(transport: TransportName, side: Side, kind: MessageKind): void;
  /** a parsed request (method) or response (status) */
  request(method: string, side: Side): void;
  response(status: number, side: Side): void;
  sent(transport: TransportName, side: Side, kind: MessageKind): void;
  verdict(stage: string, action: VerdictAction, reason: string, mode: VerdictMode): void;
  /** Convenience for the pipeline: counts a stage's verdict value (continue costs one compare)
   *  and its rule hit, if a rule decided. */
  verdictOf(stage: string, verdict: Verdict, mode: VerdictMode): void;
  ruleHit(rule: string): void;
  parseFailure(reason: ParseReason): void;
  unmatched(kind: UnmatchedKind): void;
  transactionExpired(): void;
  transactionRejected(reason: string): void;
  retransmission(direction: RetransmissionDirection): void;
  sdpInside(kind: 'request' | 'response', field: 'c' | 'o'): void;
  upstreamUp(upstream: string, up: boolean): void;
  /** status 100..699 or 'timeout' */
  upstreamResponse(upstream: string, status: number | 'timeout'): void;
  upstreamHealthFailure(upstream: string, cause: HealthFailureCause): void;
  transportEvent(transport: TransportName, event: TransportEvent): void;
  tcpAdmission(cls: SourceClass, result: AdmissionResult): void;
  banAdded(reason: string): void;
  banExpired(): void;
  auth(result: AuthResult, mode?: AuthMetricMode): void;
  authAlgorithm(algorithm: AuthAlgorithmLabel): void;
  redisUp(up: boolean): void;
  redisError(): void;
  rulesReload(ok: boolean): void;
  /** how a TLS handshake ended (edge/transport/tls.ts TLS_HANDSHAKE_REASONS) */
  tlsHandshake(reason: TlsHandshakeReason): void;
  tlsReload(ok: boolean): void;
  /** how a WebSocket upgrade ended (edge/transport/ws.ts WS_UPGRADE_REASONS) */
  wsUpgrade(reason: WsUpgradeReason): void;
  /** new rules snapshot: its version and the rule names that may appear in ruleHit() */
  rulesLoaded(version: string, ruleNames: readonly string[]): void;
  observeProcessing(kind: MessageKind, seconds: number): void;
  /** a message shed before parsing by prioritization (edge/path/priority.ts) */
  priorityShed(cls: PriorityClass, reason: PriorityShedReason): void;
  observePriorityDelay(cls: PriorityClass, seconds: number): void;
  /** one DNS question answered or given up (edge/dns; wire it with dnsMetricsOf) */
  dnsQuery(type: DnsQueryType, result: DnsResult): void;
  /** one synchronous resolver lookup */
  dnsCache(result: DnsCacheResult): void;
  declareStage(stage: string, reasons: readonly string[], shape?: Pick<StageDeclaration, 'actions' | 'shadow'>): void;
  bindGauges(sources: GaugeSources): void;
  /** a new call refused by call admission control (edge/policy/cac/stage.ts CAC_REASONS) */
  cacRefused?(reason: CacReason): void;
  fraudSignal?(signal: FraudSignal, level: 'warning' | 'critical'): void;
  /** Prometheus text exposition */
  metrics(): Promise<string>;
  readonly contentType: string;
}

export interface MetricsOptions {
  /** injected registry (cluster worker, tests); a fresh one otherwise. Never the global one. */
  registry?: Registry;
  /** process/runtime metrics from prom-client, prefixed `sipedge_` (default true) */
  defaultMetrics?: boolean;
  /** sip-edge version for sipedge_build_info (default: package.json version when readable) */
  version?: string;
  stages?: readonly StageDeclaration[];
  /** upstream labels (positions "1", "2" ...) */
  upstreams?: readonly string[];
  /** the configured upstream each label means, same order (sipedge_upstream_info) */
  upstreamTargets?: readonly string[];
  /** rule names from the rule files */
  rules?: readonly string[];
  /** reasons a ban can carry besides the declared stages' reasons (e.g. "suspicion_exhausted") */
  banReasons?: readonly string[];
  /** transports in use: received/sent/event series start at zero only for these (default: all) */
  transports?: readonly TransportName[];
  gauges?: GaugeSources;
}

// ---------------------------------------------------------------------------------------------
// Storage: one dimension = a closed list of values + "other".

class Dim {
  readonly values: string[];
  private readonly index = new Map<string, number>();
  /** index of "other": always the last slot */
  readonly other: number;

  constructor(values: readonly string[]) {
    const vs: string[] = [];
    for (const v of values) {
      if (vs.length >= MAX_DYNAMIC_VALUES) break;
      if (typeof v !== 'string' || !isSafeLabelValue(v) || v === OTHER || this.index.has(v)) continue;
      this.index.set(v, vs.length);
      vs.push(v);
    }
    this.other = vs.length;
    vs.push(OTHER);
    this.values = vs;
  }

  get size(): number { return this.values.length; }

  at(v: string): number {
    const i = this.index.get(v);
    return i === undefined ? this.other : i;
  }
}

/** A label value the operator declared must still be printable and short. */
function isSafeLabelValue(v: string): boolean {
  if (v.length === 0 || v.length > MAX_LABEL_VALUE_LENGTH) return false;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

interface ExportValue {
  value: number;
  labels: Record<string, string>;
  metricName?: string;
}

interface Collector {
  readonly name: string;
  readonly help: string;
  readonly type: MetricType;
  readonly aggregator: Aggregator;
  get(): Promise<{ name: string; help: string; type: MetricType; aggregator: Aggregator; values: ExportValue[] }>;
  reset(): void;
}

/** Counter or gauge over a product of closed dimensions, stored flat. */
class Family implements Collector {
  readonly name: string;
  readonly help: string;
  readonly type: MetricType;
  readonly aggregator: Aggregator;
  private readonly labelNames: readonly string[];
  dims: Dim[];
  cells: Float64Array;
  /** gauges read from another component at scrape time */
  source?: () => number;
  /** not exported until first set (e.g. redis_up when no Redis is configured) */
  hidden = false;
  /** label combinations that can occur (the others are not exported while zero); all when absent */
  possible?: (values: readonly string[]) => boolean;

  constructor(d: MetricDef, dims: Dim[]) {
    if (dims.length !== d.labels.length) throw new Error(`metric ${d.name}: label/dimension mismatch`);
    this.name = d.name;
    this.help = d.help;
    this.type = d.type;
    this.aggregator = d.aggregator;
    this.labelNames = d.labels;
    this.dims = dims;
    this.cells = new Float64Array(dims.reduce((n, dim) => n * dim.size, 1));
  }

  /** Replace dimension `k`'s value list, keeping the counts of values that remain. */
  redeclare(k: number, values: readonly string[]): void {
    const old = this.dims;
    const oldCells = this.cells;
    const dims = old.slice();
    dims[k] = new Dim(values);
    const cells = new Float64Array(dims.reduce((n, dim) => n * dim.size, 1));
    forEachIndex(old, (idx, flat) => {
      const v = oldCells[flat];
      if (v === 0) return;
      let f = 0;
      for (let i = 0; i < dims.length; i++) f = f * dims[i].size + dims[i].at(old[i].values[idx[i]]);
      cells[f] += v;
    });
    this.dims = dims;
    this.cells = cells;
  }

  reset(): void { this.cells.fill(0); }

  async get(): Promise<{ name: string; help: string; type: MetricType; aggregator: Aggregator; values: ExportValue[] }> {
    const values: ExportValue[] = [];
    if (this.hidden) {
      // nothing to say yet
    } else if (this.source) {
      let v = 0;
      try {
        v = Number(this.source());
      } catch {
        v = NaN; // a broken source must not break the scrape
      }
      values.push({ value: Number.isFinite(v) ? v : 0, labels: {} });
    } else {
      forEachIndex(this.dims, (idx, flat) => {
        const v = this.cells[flat];
        // Declared values start at zero (dashboards show 0, not "no data"); "other" appears once used.
        if (v === 0 && idx.some((i, k) => i === this.dims[k].other)) return;
        if (v === 0 && this.possible !== undefined && !this.possible(idx.map((i, k) => this.dims[k].values[i]))) return;
        const labels: Record<string, string> = {};
        for (let k = 0; k < idx.length; k++) labels[this.labelNames[k]] = this.dims[k].values[idx[k]];
        values.push({ value: v, labels });
      });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}

function forEachIndex(dims: readonly Dim[], fn: (idx: number[], flat: number) => void): void {
  const idx = new Array<number>(dims.length).fill(0);
  const total = dims.reduce((n, d) => n * d.size, 1);
  for (let flat = 0; flat < total; flat++) {
    fn(idx, flat);
    for (let k = dims.length - 1; k >= 0; k--) {
      if (++idx[k] < dims[k].size) break;
      idx[k] = 0;
    }
  }
}

/** sipedge_verdicts_total: reasons are closed per stage, so each stage has its own block. */
class VerdictFamily implements Collector {
  readonly name: string;
  readonly help: string;
  readonly type: MetricType;
  readonly aggregator: Aggregator;
  readonly stages = new Map<string, StageBlock>();
  /** verdicts from stages nobody declared: stage="other", reason="other" */
  readonly otherStage = new StageBlock(OTHER, []);

  constructor(d: MetricDef) {
    this.name = d.name;
    this.help = d.help;
    this.type = d.type;
    this.aggregator = d.aggregator;
  }

  block(stage: string): StageBlock {
    return this.stages.get(stage) ?? this.otherStage;
  }

  declare(stage: string, reasons: readonly string[], shape?: Pick<StageDeclaration, 'actions' | 'shadow'>): void {
    if (!isSafeLabelValue(stage) || stage === OTHER) return;
    const prev = this.stages.get(stage);
    if (!prev && this.stages.size >= MAX_DYNAMIC_VALUES) return;
    const next = new StageBlock(stage, prev ? [...prev.reasons.values.slice(0, -1), ...reasons] : reasons, shape ?? prev?.shape);
    if (prev) next.absorb(prev);
    this.stages.set(stage, next);
  }

  reset(): void {
    for (const b of this.stages.values()) b.cells.fill(0);
    this.otherStage.cells.fill(0);
  }

  async get(): Promise<{ name: string; help: string; type: MetricType; aggregator: Aggregator; values: ExportValue[] }> {
    const values: ExportValue[] = [];
    for (const b of this.stages.values()) b.export(values, true);
    this.otherStage.export(values, false);
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}

const ACTION_INDEX: Readonly<Record<string, number>> = { reply: 0, drop: 1, ban: 2 };
const MODE_INDEX: Readonly<Record<string, number>> = { enforce: 0, shadow: 1 };

class StageBlock {
  readonly reasons: Dim;
  /** [action][mode][reason] */
  readonly cells: Float64Array;

  constructor(readonly stage: string, reasons: readonly string[], readonly shape?: Pick<StageDeclaration, 'actions' | 'shadow'>) {
    this.reasons = new Dim(reasons);
    this.cells = new Float64Array(VERDICT_ACTIONS.length * VERDICT_MODES.length * this.reasons.size);
  }

  inc(action: string, reason: string, mode: string): void {
    const a = ACTION_INDEX[action];
    const m = MODE_INDEX[mode];
    if (a === undefined || m === undefined) return; // typed API; a bad call is a bug, not a series
    this.cells[(a * 2 + m) * this.reasons.size + this.reasons.at(reason)]++;
  }

  private possible(a: number, m: number): boolean {
    const action = VERDICT_ACTIONS[a]!;
    if (action === 'log' || (m === 1 && this.shape?.shadow === false)) return false;
    const acts = this.shape?.actions;
    return acts === undefined || (acts as readonly string[]).includes(action);
  }

  absorb(prev: StageBlock): void {
    const n = prev.reasons.size;
    for (let am = 0; am < VERDICT_ACTIONS.length * VERDICT_MODES.length; am++) {
      for (let r = 0; r < n; r++) {
        const v = prev.cells[am * n + r];
        if (v !== 0) this.cells[am * this.reasons.size + this.reasons.at(prev.reasons.values[r])] += v;
      }
    }
  }

  export(out: ExportValue[], declared: boolean): void {
    const n = this.reasons.size;
    for (let a = 0; a < VERDICT_ACTIONS.length; a++) {
      for (let m = 0; m < VERDICT_MODES.length; m++) {
        for (let r = 0; r < n; r++) {
          const v = this.cells[(a * 2 + m) * n + r];
          // zero rows only for combinations that can occur: a declared reason, an action the
          // stage takes (log verdicts are counted as rule hits, never here), shadow only for
          // stages the rules can shadow (issue 15: 720 declared series, most impossible)
          if (v === 0 && (!declared || r === this.reasons.other || !this.possible(a, m))) continue;
          out.push({ value: v, labels: { stage: this.stage, action: VERDICT_ACTIONS[a], reason: this.reasons.values[r], mode: VERDICT_MODES[m] } });
        }
      }
    }
  }
}

/** sipedge_processing_seconds: fixed buckets, plain counts per kind. */
class ProcessingHistogram implements Collector {
  readonly name: string;
  readonly help: string;
  readonly type: MetricType;
  readonly aggregator: Aggregator;
  readonly kinds: Dim;
  /** per kind: one count per bucket (non-cumulative) + one for +Inf */
  readonly buckets: Float64Array;
  readonly sums: Float64Array;
  readonly counts: Float64Array;
  private readonly nb: number;

  constructor(d: MetricDef, values: readonly string[] = MESSAGE_KINDS, private readonly label = 'kind', private readonly bounds: readonly number[] = PROCESSING_BUCKETS) {
    this.kinds = new Dim(values);
    this.nb = bounds.length + 1;
    this.name = d.name;
    this.help = d.help;
    this.type = d.type;
    this.aggregator = d.aggregator;
    this.buckets = new Float64Array(this.kinds.size * this.nb);
    this.sums = new Float64Array(this.kinds.size);
    this.counts = new Float64Array(this.kinds.size);
  }

  observe(kind: string, seconds: number): void {
    if (!(seconds >= 0) || seconds === Infinity) return; // NaN, negative, Infinity: a clock bug, not data
    const k = this.kinds.at(kind);
    let b = 0;
    while (b < this.bounds.length && seconds > this.bounds[b]!) b++;
    this.buckets[k * this.nb + b]++;
    this.sums[k] += seconds;
    this.counts[k]++;
  }

  reset(): void {
    this.buckets.fill(0);
    this.sums.fill(0);
    this.counts.fill(0);
  }

  async get(): Promise<{ name: string; help: string; type: MetricType; aggregator: Aggregator; values: ExportValue[] }> {
    const values: ExportValue[] = [];
    for (let k = 0; k < this.kinds.size; k++) {
      if (k === this.kinds.other && this.counts[k] === 0) continue;
      const kind = this.kinds.values[k];
      let acc = 0;
      for (let b = 0; b < this.bounds.length; b++) {
        acc += this.buckets[k * this.nb + b];
        values.push({ value: acc, labels: { le: String(this.bounds[b]), [this.label]: kind }, metricName: `${this.name}_bucket` });
      }
      values.push({ value: this.counts[k], labels: { le: '+Inf', [this.label]: kind }, metricName: `${this.name}_bucket` });
      values.push({ value: this.sums[k], labels: { [this.label]: kind }, metricName: `${this.name}_sum` });
      values.push({ value: this.counts[k], labels: { [this.label]: kind }, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}

function readPackageVersion(): string {
  try {
    // edge/metrics.ts compiles to <out>/edge/metrics.js: the repo root is two or three levels up.
    for (const up of ['..', '../..', '../../..']) {
      const p = path.resolve(__dirname, up, 'package.json');
      if (fs.existsSync(p)) {
        const v = (JSON.parse(fs.readFileSync(p, 'utf8')) as { name?: unknown; version?: unknown });
        if (v.name === 'sip-edge' && typeof v.version === 'string') return v.version;
      }
    }
  } catch {
    // fall through
  }
  return 'unknown';
}

function responseClassIndex(status: number | 'timeout'): number {
  if (status === 'timeout') return 6;
  // RFC 3261 7.2 / 21: classes 1xx..6xx; anything else is not a status we should have parsed
  const c = Math.floor(status / 100);
  return c >= 1 && c <= 6 ? c - 1 : -1;
}

// ---------------------------------------------------------------------------------------------

export class Metrics implements EdgeMetrics {
  readonly enabled = true;
  readonly registry: Registry;

  private readonly fReceived: Family;
  private readonly fRequests: Family;
  private readonly fResponses: Family;
  private readonly fUpInfo: Family;
  private readonly fSent: Family;
  private readonly fVerdicts: VerdictFamily;
  private readonly fRuleHits: Family;
  private readonly fParse: Family;
  private readonly fUnmatched: Family;
  private readonly fTxActive: Family;
  private readonly fTxExpired: Family;
  private readonly fTxRejected: Family;
  private readonly fRetrans: Family;
  private readonly fSdpInside: Family;
  private readonly fUpUp: Family;
  private readonly fUpResp: Family;
  private readonly fUpHealth: Family;
  private readonly fTransport: Family;
  private readonly fTcp: Family;
  private readonly fTcpAdmit: Family;
  private readonly fBansAdded: Family;
  private readonly fBansActive: Family;
  private readonly fBansExpired: Family;
  private readonly fAuth: Family;
  private readonly fAuthAlg: Family;
  private readonly fRedisUp: Family;
  private readonly fRedisErrors: Family;
  private readonly fReloads: Family;
  private readonly fRulesInfo: Family;
  private readonly fTlsHandshakes: Family;
  private readonly fWsUpgrades: Family;
  private readonly fTlsReloads: Family;
  private readonly fConnections: Family;
  private connectionsOf?: (transport: TransportName) => number;
  private readonly hProcessing: ProcessingHistogram;
  private readonly fPrioShed: Family;
  private readonly hPrioDelay: ProcessingHistogram;
  private readonly fReady: Family;
  private readonly fBuild: Family;
  private readonly fDnsQueries: Family;
  private readonly fDnsCache: Family;
  private readonly fDialogs: Family;
  private readonly fCacRefused: Family;
  private readonly fFraud: Family;
  private dialogsOf?: () => ReadonlyMap<string, number>;

  private extraBanReasons: readonly string[];

  constructor(opts: MetricsOptions = {}) {
    this.registry = opts.registry ?? new Registry();
    const transports = new Dim(opts.transports ?? TRANSPORTS);
    const sides = new Dim(SIDES);
    const kinds = new Dim(MESSAGE_KINDS);
    this.extraBanReasons = opts.banReasons ?? [];

    this.fReceived = new Family(METRICS.received, [transports, sides, kinds]);
    this.fSent = new Family(METRICS.sent, [transports, sides, kinds]);
    this.fRequests = new Family(METRICS.requests, [new Dim(REQUEST_METHODS), sides]);
    this.fResponses = new Family(METRICS.responses, [new Dim(RECEIVED_RESPONSE_CLASSES), sides]);
    // only the pairs the config makes exist: position i with the i-th upstream, set to 1 here;
    // no zero row is possible, so the crossed pairs are never exported
    const upTargets = opts.upstreamTargets ?? [];
    const fInfo = this.fUpInfo = new Family(METRICS.upstreamInfo, [new Dim(opts.upstreams ?? []), new Dim(upTargets)]);
    fInfo.possible = () => false;
    (opts.upstreams ?? []).forEach((label, i) => {
      if (upTargets[i] !== undefined) fInfo.cells[fInfo.dims[0]!.at(label) * fInfo.dims[1]!.size + fInfo.dims[1]!.at(upTargets[i])] = 1;
    });
    this.fVerdicts = new VerdictFamily(METRICS.verdicts);
    this.fRuleHits = new Family(METRICS.ruleHits, [new Dim(opts.rules ?? [])]);
    this.fParse = new Family(METRICS.parseFailures, [new Dim(PARSE_REASONS)]);
    this.fUnmatched = new Family(METRICS.unmatched, [new Dim(UNMATCHED_KINDS)]);
    this.fTxActive = new Family(METRICS.transactionsActive, []);
    this.fTxExpired = new Family(METRICS.transactionsExpired, []);
    this.fTxRejected = new Family(METRICS.transactionsRejected, [new Dim(TRANSACTION_REJECT_REASONS)]);
    this.fRetrans = new Family(METRICS.retransmissions, [new Dim(RETRANSMISSION_DIRECTIONS)]);
    this.fSdpInside = new Family(METRICS.sdpInside, [new Dim(['request', 'response']), new Dim(['c', 'o'])]);
    this.fUpUp = new Family(METRICS.upstreamUp, [new Dim(opts.upstreams ?? [])]);
    this.fUpResp = new Family(METRICS.upstreamResponses, [new Dim(opts.upstreams ?? []), new Dim(RESPONSE_CLASSES)]);
    this.fUpHealth = new Family(METRICS.upstreamHealthFailures, [new Dim(opts.upstreams ?? []), new Dim(HEALTH_FAILURE_CAUSES)]);
    this.fTransport = new Family(METRICS.transportEvents, [transports, new Dim(TRANSPORT_EVENTS)]);
    this.fTcp = new Family(METRICS.tcpConnections, []);
    this.fTcpAdmit = new Family(METRICS.tcpAdmissions, [new Dim(SOURCE_CLASSES), new Dim(ADMISSION_RESULTS)]);
    this.fBansAdded = new Family(METRICS.bansAdded, [new Dim(this.extraBanReasons)]);
    this.fBansActive = new Family(METRICS.bansActive, []);
    this.fBansExpired = new Family(METRICS.bansExpired, []);
    this.fAuth = new Family(METRICS.auth, [new Dim(AUTH_MODES), new Dim(AUTH_RESULTS)]);
    this.fAuthAlg = new Family(METRICS.authAlgorithm, [new Dim(AUTH_ALGORITHMS)]);
    this.fRedisUp = new Family(METRICS.redisUp, []);
    this.fRedisUp.hidden = true; // absent, not 0, when no Redis is configured: "Redis down" must not fire
    this.fRedisErrors = new Family(METRICS.redisErrors, []);
    this.fReloads = new Family(METRICS.rulesReloads, [new Dim(RELOAD_RESULTS)]);
    this.fRulesInfo = new Family(METRICS.rulesInfo, [new Dim([])]);
    this.fTlsHandshakes = new Family(METRICS.tlsHandshakes, [new Dim(TLS_HANDSHAKE_RESULTS), new Dim(TLS_HANDSHAKE_REASONS)]);
    // a reason belongs to one result: only those pairs start at zero
    this.fTlsHandshakes.possible = ([result, reason]) => result === tlsHandshakeResult(reason as TlsHandshakeReason);
    this.fTlsReloads = new Family(METRICS.tlsReloads, [new Dim(RELOAD_RESULTS)]);
    this.fWsUpgrades = new Family(METRICS.wsUpgrades, [new Dim(WS_UPGRADE_RESULTS), new Dim(WS_UPGRADE_REASONS)]);
    this.fWsUpgrades.possible = ([result, reason]) => result === wsUpgradeResult(reason as WsUpgradeReason);
    this.fConnections = new Family(METRICS.connections, [transports]);
    const fConn = this.fConnections;
    const get = fConn.get.bind(fConn);
    // read at scrape time from the listeners, one cell per transport
    fConn.get = () => {
      const read = this.connectionsOf;
      if (read !== undefined) fConn.dims[0]!.values.forEach((t, i) => { if (t !== OTHER) fConn.cells[i] = read(t as TransportName); });
      return get();
    };
    this.hProcessing = new ProcessingHistogram(METRICS.processing);
    this.fPrioShed = new Family(METRICS.priorityShed, [new Dim(PRIORITY_CLASSES), new Dim(PRIORITY_SHED_REASONS)]);
    this.hPrioDelay = new ProcessingHistogram(METRICS.priorityDelay, PRIORITY_CLASSES, 'class', PRIORITY_DELAY_BUCKETS);
    this.fDnsQueries = new Family(METRICS.dnsQueries, [new Dim(DNS_QUERY_TYPES), new Dim(DNS_RESULTS)]);
    this.fDnsCache = new Family(METRICS.dnsCacheLookups, [new Dim(DNS_CACHE_RESULTS)]);
    this.fDialogs = new Family(METRICS.dialogsLive, [new Dim(SIDES), new Dim(['early', 'confirmed']), new Dim(DEST_CLASSES)]);
    const fDlg = this.fDialogs;
    const getDlg = fDlg.get.bind(fDlg);
    // read at scrape time from the tracker; the CAC stage tracks the calls placed from outside
    fDlg.get = () => {
      const census = this.dialogsOf?.();
      if (census !== undefined) {
        fDlg.cells.fill(0);
        const d = fDlg.dims;
        for (const [k, n] of census) {
          const [state, cls] = k.split('|');
          fDlg.cells[(d[0]!.at('outside') * d[1]!.size + d[1]!.at(state!)) * d[2]!.size + d[2]!.at(cls!)] = n;
        }
      }
      return getDlg();
    };
    this.fCacRefused = new Family(METRICS.cacRefused, [new Dim(CAC_REASONS)]);
    this.fFraud = new Family(METRICS.fraudSignals, [new Dim(FRAUD_SIGNALS), new Dim(['warning', 'critical'])]);
    this.fReady = new Family(METRICS.ready, []);
    this.fReady.hidden = true; // absent until someone says how readiness is known
    this.fBuild = new Family(METRICS.buildInfo, [
      new Dim([sanitizeInfo(opts.version ?? readPackageVersion())]),
      new Dim([process.version]),
    ]);
    this.fBuild.cells[0] = 1;

    // gauges with no source bound yet read 0 (nothing known), not absent
    for (const c of this.collectors()) this.registry.registerMetric(c as unknown as Metric);

    for (const s of opts.stages ?? []) this.declareStage(s.name, s.reasons, s);
    if (opts.gauges) this.bindGauges(opts.gauges);
    if (opts.defaultMetrics !== false) {
      collectDefaultMetrics({ register: this.registry, prefix: 'sipedge_' });
      // prom-client names three gauges `*_total`, which `promtool check metrics` rejects (only
      // counters end in _total) and which a rate() would misread. Each is the sum of the
      // per-type gauge of the same name without the suffix (sum by () of
      // sipedge_nodejs_active_handles etc.), so nothing is lost by dropping them.
      for (const n of DEFAULT_GAUGES_NAMED_TOTAL) this.registry.removeSingleMetric(`sipedge_${n}`);
    }
  }

  /** every sip-edge family, in declaration order */
  private collectors(): Collector[] {
    return [
      this.fReceived, this.fRequests, this.fResponses, this.fUpInfo, this.fSent, this.fVerdicts, this.fRuleHits, this.fParse, this.fUnmatched,
      this.fTxActive, this.fTxExpired, this.fTxRejected, this.fRetrans, this.fSdpInside, this.fUpUp, this.fUpResp, this.fUpHealth,
      this.fTransport, this.fTcp, this.fTcpAdmit, this.fBansAdded, this.fBansActive, this.fBansExpired, this.fAuth,
      this.fAuthAlg, this.fRedisUp, this.fRedisErrors, this.fReloads, this.fRulesInfo, this.fTlsHandshakes, this.fTlsReloads, this.fWsUpgrades,
      this.fConnections, this.hProcessing, this.fPrioShed, this.hPrioDelay, this.fReady, this.fBuild,
      this.fDnsQueries, this.fDnsCache, this.fDialogs, this.fCacRefused, this.fFraud,
    ];
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  // --- hot path: no allocation, Map lookups of closed values ---------------------------------

  received(transport: TransportName, side: Side, kind: MessageKind): void {
    const f = this.fReceived, d = f.dims;
    f.cells[(d[0].at(transport) * d[1].size + d[1].at(side)) * d[2].size + d[2].at(kind)]++;
  }

  request(method: string, side: Side): void {
    const f = this.fRequests, d = f.dims;
    f.cells[d[0].at(method) * d[1].size + d[1].at(side)]++;
  }

  response(status: number, side: Side): void {
    const c = responseClassIndex(status);
    if (c < 0 || c > 5) return;
    const f = this.fResponses, d = f.dims;
    f.cells[c * d[1].size + d[1].at(side)]++;
  }

  sent(transport: TransportName, side: Side, kind: MessageKind): void {
    const f = this.fSent, d = f.dims;
    f.cells[(d[0].at(transport) * d[1].size + d[1].at(side)) * d[2].size + d[2].at(kind)]++;
  }

  verdict(stage: string, action: VerdictAction, reason: string, mode: VerdictMode): void {
    this.fVerdicts.block(stage).inc(action, reason, mode);
  }

  verdictOf(stage: string, v: Verdict, mode: VerdictMode): void {
    if (v.action === 'continue') return;
    this.fVerdicts.block(stage).inc(v.action, v.reason, mode);
    if (v.rule !== undefined) this.ruleHit(v.rule);
  }

  ruleHit(rule: string): void {
    const f = this.fRuleHits;
    f.cells[f.dims[0].at(rule)]++;
  }

  parseFailure(reason: ParseReason): void {
    const f = this.fParse;
    f.cells[f.dims[0].at(reason)]++;
  }

  unmatched(kind: UnmatchedKind): void {
    const f = this.fUnmatched;
    f.cells[f.dims[0].at(kind)]++;
  }

  transactionExpired(): void {
    this.fTxExpired.cells[0]++;
  }

  transactionRejected(reason: string): void {
    const f = this.fTxRejected;
    f.cells[f.dims[0].at(reason)]++;
  }

  retransmission(direction: RetransmissionDirection): void {
    const f = this.fRetrans;
    f.cells[f.dims[0].at(direction)]++;
  }

  sdpInside(kind: 'request' | 'response', field: 'c' | 'o'): void {
    const f = this.fSdpInside;
    f.cells[f.dims[0]!.at(kind) * 2 + f.dims[1]!.at(field)]++;
  }

  dnsQuery(type: DnsQueryType, result: DnsResult): void {
    const f = this.fDnsQueries, d = f.dims;
    f.cells[d[0].at(type) * d[1].size + d[1].at(result)]++;
  }

  dnsCache(result: DnsCacheResult): void {
    const f = this.fDnsCache;
    f.cells[f.dims[0].at(result)]++;
  }

  upstreamUp(upstream: string, up: boolean): void {
    const f = this.fUpUp;
    const i = f.dims[0].at(upstream);
    // an undeclared upstream has no meaningful "up" to aggregate under "other"
    if (i !== f.dims[0].other) f.cells[i] = up ? 1 : 0;
  }

  upstreamResponse(upstream: string, status: number | 'timeout'): void {
    const c = responseClassIndex(status);
    if (c < 0) return;
    const f = this.fUpResp, d = f.dims;
    f.cells[d[0].at(upstream) * d[1].size + c]++;
  }

  upstreamHealthFailure(upstream: string, cause: HealthFailureCause): void {
    const f = this.fUpHealth, d = f.dims;
    f.cells[d[0].at(upstream) * d[1].size + d[1].at(cause)]++;
  }

  transportEvent(transport: TransportName, event: TransportEvent): void {
    const f = this.fTransport, d = f.dims;
    f.cells[d[0].at(transport) * d[1].size + d[1].at(event)]++;
  }

  tcpAdmission(cls: SourceClass, result: AdmissionResult): void {
    const f = this.fTcpAdmit, d = f.dims;
    f.cells[d[0].at(cls) * d[1].size + d[1].at(result)]++;
  }

  banAdded(reason: string): void {
    const f = this.fBansAdded;
    f.cells[f.dims[0].at(reason)]++;
  }

  banExpired(): void {
    this.fBansExpired.cells[0]++;
  }

  auth(result: AuthResult, mode: AuthMetricMode = 'edge'): void {
    const f = this.fAuth, d = f.dims;
    f.cells[d[0].at(mode) * d[1].size + d[1].at(result)]++;
  }

  authAlgorithm(algorithm: AuthAlgorithmLabel): void {
    const f = this.fAuthAlg;
    f.cells[f.dims[0].at(algorithm)]++;
  }

  redisUp(up: boolean): void {
    this.fRedisUp.hidden = false;
    this.fRedisUp.cells[0] = up ? 1 : 0;
  }

  cacRefused(reason: CacReason): void {
    const f = this.fCacRefused;
    f.cells[f.dims[0]!.at(reason)]++;
  }

  fraudSignal(signal: FraudSignal, level: 'warning' | 'critical'): void {
    const f = this.fFraud, d = f.dims;
    f.cells[d[0]!.at(signal) * d[1]!.size + d[1]!.at(level)]++;
  }

  redisError(): void {
    this.fRedisErrors.cells[0]++;
  }

  rulesReload(ok: boolean): void {
    this.fReloads.cells[ok ? 0 : 1]++;
  }

  tlsHandshake(reason: TlsHandshakeReason): void {
    const f = this.fTlsHandshakes, d = f.dims;
    f.cells[d[0].at(tlsHandshakeResult(reason)) * d[1].size + d[1].at(reason)]++;
  }

  tlsReload(ok: boolean): void {
    this.fTlsReloads.cells[ok ? 0 : 1]++;
  }

  wsUpgrade(reason: WsUpgradeReason): void {
    const f = this.fWsUpgrades, d = f.dims;
    f.cells[d[0].at(wsUpgradeResult(reason)) * d[1].size + d[1].at(reason)]++;
  }

  observeProcessing(kind: MessageKind, seconds: number): void {
    this.hProcessing.observe(kind, seconds);
  }

  priorityShed(cls: PriorityClass, reason: PriorityShedReason): void {
    const f = this.fPrioShed, d = f.dims;
    f.cells[d[0]!.at(cls) * d[1]!.size + d[1]!.at(reason)]++;
  }

  observePriorityDelay(cls: PriorityClass, seconds: number): void {
    this.hPrioDelay.observe(cls, seconds);
  }

  // --- setup / reload time -------------------------------------------------------------------

  rulesLoaded(version: string, ruleNames: readonly string[]): void {
    // only the active snapshot's version is exported: one series, whatever the reload count
    this.fRulesInfo.redeclare(0, [sanitizeInfo(version)]);
    this.fRulesInfo.cells.fill(0);
    this.fRulesInfo.cells[0] = 1;
    this.fRuleHits.redeclare(0, ruleNames);
  }

  declareStage(stage: string, reasons: readonly string[], shape?: Pick<StageDeclaration, 'actions' | 'shadow'>): void {
    this.fVerdicts.declare(stage, reasons, shape && (shape.actions !== undefined || shape.shadow !== undefined) ? { ...(shape.actions ? { actions: shape.actions } : {}), ...(shape.shadow !== undefined ? { shadow: shape.shadow } : {}) } : undefined);
    // a ban verdict carries its stage's reason code, so every stage reason is a possible ban reason
    const all = [...this.extraBanReasons];
    for (const b of this.fVerdicts.stages.values()) all.push(...b.reasons.values.slice(0, -1));
    this.fBansAdded.redeclare(0, all);
  }

  bindGauges(sources: GaugeSources): void {
    if (sources.transactionsActive) this.fTxActive.source = sources.transactionsActive;
    if (sources.tcpConnections) this.fTcp.source = sources.tcpConnections;
    if (sources.connectionsOf) this.connectionsOf = sources.connectionsOf;
    if (sources.bansActive) this.fBansActive.source = sources.bansActive;
    if (sources.redisErrors) this.fRedisErrors.source = sources.redisErrors;
    if (sources.dialogsLive) this.dialogsOf = sources.dialogsLive;
    const ready = sources.ready;
    if (ready) {
      this.fReady.source = () => (ready() ? 1 : 0);
      this.fReady.hidden = false;
    }
  }
}

/** Version strings are operator data, but keep them to a safe, short shape anyway. */
function sanitizeInfo(v: string): string {
  const s = String(v).replace(/[^\x21-\x7e]/g, '_').slice(0, 64);
  return s.length > 0 && s !== OTHER ? s : 'unknown';
}

/** Metrics switched off: same API, nothing counted (also the bench baseline). */
export class NullMetrics implements EdgeMetrics {
  readonly enabled = false;
  readonly contentType = Registry.PROMETHEUS_CONTENT_TYPE;
  received(): void {}
  request(): void {}
  response(): void {}
  sent(): void {}
  verdict(): void {}
  verdictOf(): void {}
  ruleHit(): void {}
  parseFailure(): void {}
  unmatched(): void {}
  transactionExpired(): void {}
  transactionRejected(): void {}
  retransmission(): void {}
  sdpInside(): void {}
  upstreamUp(): void {}
  upstreamResponse(): void {}
  upstreamHealthFailure(): void {}
  transportEvent(): void {}
  tcpAdmission(): void {}
  banAdded(): void {}
  banExpired(): void {}
  auth(): void {}
  authAlgorithm(): void {}
  redisUp(): void {}
  redisError(): void {}
  rulesReload(): void {}
  tlsHandshake(): void {}
  tlsReload(): void {}
  wsUpgrade(): void {}
  rulesLoaded(): void {}
  observeProcessing(): void {}
  priorityShed(): void {}
  observePriorityDelay(): void {}
  dnsQuery(): void {}
  dnsCache(): void {}
  cacRefused(): void {}
  fraudSignal(): void {}
  declareStage(): void {}
  bindGauges(): void {}
  async metrics(): Promise<string> {
    return '';
  }
}
