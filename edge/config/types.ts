// The configuration the edge runs on, after the YAML file and the CLI flags have been merged,
// validated and resolved. Immutable once built; a reload builds a new one.
import type { TopologyConfig } from '../router/topology';
import type { ParseLimits } from '../sip/parser';
import type { TransportName } from '../sip/types';
import type { ListenerSpec } from '../transport/types';
import type { TlsSettings } from '../transport/tls-context';

export interface UpstreamSpec {
  readonly transport: TransportName;
  /** canonical IP address (host names are resolved when the config is resolved) */
  readonly host: string;
  readonly port: number;
}

export type AuthMode = 'edge' | 'pbx' | 'off';
export type AuthAlgorithm = 'SHA-256' | 'SHA-512-256' | 'MD5';

/** How one served domain (or, as `fallback`, every other served name) is authenticated. */
export interface AuthDomainPolicy {
  /** lower-case domain; '*' for the fallback */
  readonly name: string;
  readonly mode: AuthMode;
  readonly realm: string;
  /** absolute path of the users file, when one applies */
  readonly usersFile?: string;
  /** challenge algorithms in order of preference (RFC 8760) */
  readonly algorithms: readonly AuthAlgorithm[];
  readonly qop: readonly ('auth' | 'auth-int')[];
  /** the authenticated user must be the From user; REGISTER binds only the authenticated AOR */
  readonly matchFrom: boolean;
  readonly forwardCredentials: boolean;
  readonly identity: 'strip' | 'assert';
  /** pbx mode: what becomes of a 404/480 to an unauthenticated outside request */
  readonly pbxRewrite: 'challenge' | 'forbidden' | 'off';
}

export interface AuthConfig {
  /** nonce HMAC secret (auth.secret, env SIPEDGE_AUTH_SECRET, or the main secret); absent: the
   *  edge makes a random one per process (edge.ts) */
  readonly secret?: string;
  readonly nonceSeconds: number;
  readonly lockout: { readonly failures: number; readonly seconds: number };
  readonly enumeration: { readonly users: number; readonly seconds: number };
  /** the domains listed in auth.domains, resolved */
  readonly domains: readonly AuthDomainPolicy[];
  /** for served domains not listed and for the edge's own addresses */
  readonly fallback: AuthDomainPolicy;
}

/** DNS resolution of host-name destinations (edge/dns); the schema's `dns:` section. */
export interface DnsConfig {
  /** resolvers to ask; empty = the nameservers of /etc/resolv.conf */
  readonly servers: readonly { readonly address: string; readonly port: number }[];
  readonly timeoutMs: number;      // per answer and server, default 2000
  readonly attempts: number;       // rounds over the servers, default 2
  readonly maxOutstanding: number; // questions in flight, default 256
  readonly ipv6: boolean;          // ask AAAA too, default true
  readonly preferIpv6: boolean;    // default false
  readonly cache: {
    readonly maxNames: number;              // default 10000
    readonly minTtlSeconds: number;         // default 1
    readonly maxTtlSeconds: number;         // default 3600
    readonly maxNegativeTtlSeconds: number; // default 300 (RFC 2308 5)
    readonly negativeTtlSeconds: number;    // without an SOA, default 30
    readonly errorTtlSeconds: number;       // default 5
    readonly staleSeconds: number;          // serve-stale window, default 3600
  };
}

/** One named SIP trunk (carrier), resolved from `trunks:` (edge/config/trunks.ts). */
export interface TrunkSpec {
  readonly name: string;
  /** canonical CIDRs */
  readonly addresses: readonly string[];
  /** lower-case host names (resolved by edge/dns at run time) */
  readonly hosts: readonly string[];
  readonly transport?: 'udp' | 'tcp' | 'tls';
  /** callsPerSecond: new INVITEs per second, 0 = no limit */
  readonly inbound: { readonly allowed: boolean; readonly skipAuth: boolean; readonly callsPerSecond: number };
  readonly outbound: { readonly allowed: boolean; readonly callsPerSecond: number };
  readonly register: { readonly allowed: boolean };
}

export interface ResolvedConfig {
  readonly listen: readonly ListenerSpec[];
  /** address (and port) to put in Via / Record-Route / Path instead of the bound one,
   *  for wildcard binds or NAT in front of the edge */
  readonly advertise?: { readonly host: string; readonly port?: number };
  readonly upstreams: readonly UpstreamSpec[];
  /** served SIP domains, lower-case; the edge's own addresses always count too */
  readonly domains: readonly string[];
  /** CIDRs whose traffic is inside traffic (besides the upstream addresses) */
  readonly inside: readonly string[];
  /** outside CIDRs authenticated by address (carriers, partner PBXs) */
  readonly trusted: readonly string[];
  /** named trunks (carriers); absent (configs built by hand) = none */
  readonly trunks?: readonly TrunkSpec[];
  /** where inside requests may go: only to trunks, or anywhere; absent = any */
  readonly egress?: 'trunks' | 'any';
  /** HMAC secret for flow tokens and branch derivation; shared by every instance of a cluster.
   *  From config `secret` or env SIPEDGE_SECRET; when absent a random per-process secret is used. */
  readonly secret?: string;
  readonly limits: ParseLimits;
  readonly tcp: {
    readonly maxConnections: number;          // default 10000
    readonly maxConnectionsPerSource: number; // default 32
    readonly unknownPercent: number;          // share of maxConnections unknown sources may hold, default 80
    readonly promotedPercent: number;         // share unknown + promoted sources may hold, default 90
    readonly messageTimeoutMs: number;        // time to receive one whole message, default 10000
    readonly idleTimeoutMs: number;           // default 180000 (phones keep TCP flows alive with CRLF pings)
  };
  /** TLS listeners' certificates and policy; present when a tls listener or a certificate is
   *  configured */
  readonly tls?: TlsSettings;
  /** WebSocket listeners (RFC 7118); present when a ws or wss listener is configured */
  readonly websocket?: {
    /** listener text ("wss:0.0.0.0:443", IPv6 in brackets) -> allowed origins (lower case, no
     *  trailing slash); a listener not here allows none */
    readonly origins: Readonly<Record<string, readonly string[]>>;
    readonly trustedProxies: readonly string[];
    readonly upgradeTimeoutMs: number;
    readonly maxUpgradeBytes: number;
    readonly pingIntervalMs: number;
  };
  readonly udp: {
    readonly ioThread: boolean;        // syscalls on a thread of their own, default true
    readonly recvBufferBytes: number;  // SO_RCVBUF asked for and hand-over queue size, default 4 MiB
  };
  readonly transactions: {
    readonly max: number;  // live-transaction cap: transactions.max, else derived from memoryBudgetMB
    readonly memoryBudgetMB: number; // default 1024 (edge/transaction/table.ts transactionBudget)
    readonly t1Ms: number; // RFC 3261 17.1.1.1 T1, default 500
    readonly t2Ms: number; // default 4000
    readonly t4Ms: number; // default 5000
  };
  readonly health: {
    readonly intervalMs: number;         // OPTIONS ping period, default 5000
    readonly timeoutMs: number;          // default 2000
    readonly failuresBeforeDown: number; // default 2
    readonly retryAfterSeconds: number;  // Retry-After on 503 when no upstream is healthy, default 30
  };
  readonly overload: {
    readonly enabled: boolean;           // default true
    readonly retryAfterSeconds: number;  // Retry-After on the overload 503, default 5
    readonly prioritize: boolean;        // trusted-first prioritization before parse, default true
    readonly turnBudgetMs: number;       // handling per event-loop turn when prioritizing, default 10
    readonly maxQueuedMB: number;        // bytes waiting in the priority queues, default 32
  };
  readonly proxy: {
    readonly recordRoute: boolean;  // default true
    readonly path: boolean;         // add Path to REGISTER (RFC 3327), default true
    readonly maxForwards: number;   // inserted when absent, default 70
  };
  /** topology hiding toward the outside (edge/router/topology.ts); absent (configs built by
   *  hand) = off */
  readonly topology?: TopologyConfig;
  /** Server header of locally generated replies; absent = none (the default: the edge does not
   *  name itself to scanners) */
  readonly serverHeader?: string;
  readonly shutdownGraceMs: number; // default 5000
  readonly warmUpCalls: number;     // synthetic calls through a throwaway edge before binding, default 2000
  readonly log: { readonly level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent' };
  readonly metrics: { readonly listen: string | null; readonly token?: string }; // default "127.0.0.1:9090"
  /** shared state for limits and bans across instances; absent = in memory (single node) */
  readonly redis?: { readonly url: string };
  /** absolute path of the rules directory (stages.yaml, scanner.yaml, access.yaml, geoip.yaml);
   *  absent = the shipped rules/ directory */
  readonly rulesDir?: string;
  /** digest authentication; absent = pbx mode with the defaults everywhere (watch, never challenge) */
  readonly auth?: AuthConfig;
  /** OPTIONS pings to the edge itself (edge/stages/ping.ts): answered here (default), forwarded
   *  to the PBX without an edge challenge, or challenged like any request */
  readonly pings: 'answer' | 'forward' | 'challenge';
  /** DNS resolver settings; absent (configs built by hand) = the schema defaults */
  readonly dns?: DnsConfig;
  /** absolute path of the config file this came from, if any */
  readonly configFile?: string;
}
