// Schema of the main config file (sip-edge.yaml). Types derive from it (Static<>), defaults and
// descriptions sit beside each field (fastify style). Field names mirror ResolvedConfig
// (edge/config/types.ts); string syntax (listen specs, CIDRs, domains) is checked in load.ts
// with the same file:line:column positions. Every object rejects unknown keys so a typo
// ("listne:") is an error, not a silently ignored setting.
import { Type } from '@sinclair/typebox';
import type { Static, TProperties } from '@sinclair/typebox';

/** An object that rejects unknown keys and defaults to {} so that its fields' defaults apply. */
function section<P extends TProperties>(properties: P, description: string) {
  return Type.Object(properties, { additionalProperties: false, default: {}, description });
}

function int(def: number, minimum: number, maximum: number, description: string) {
  return Type.Integer({
    default: def,
    minimum,
    maximum,
    description,
    errorMessage: `expected an integer from ${minimum} to ${maximum}`,
  });
}

function list(def: string[], description: string, itemDescription: string) {
  return Type.Array(Type.String({ description: itemDescription, errorMessage: 'expected a string' }), {
    default: def,
    maxItems: 10000,
    description,
    errorMessage: 'expected a list of strings (at most 10000)',
  });
}

function nullableString(def: string | null, description: string) {
  return Type.Union([Type.String(), Type.Null()], { default: def, description, errorMessage: 'expected a string or null' });
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const LogLevelSchema = Type.Union(
  LOG_LEVELS.map((l) => Type.Literal(l)),
  { default: 'info', description: 'pino log level', errorMessage: `expected one of ${LOG_LEVELS.join(', ')}` },
);

export const DEFAULT_LISTEN = ['udp:127.0.0.1:5060', 'tcp:127.0.0.1:5060'];

export const ConfigFileSchema = Type.Object(
  {
    listen: list(
      DEFAULT_LISTEN,
      'Sockets to bind, "proto:host:port" (IPv6 in brackets: "udp:[::]:5060"). udp and tcp today.',
      'listener spec',
    ),
    advertise: nullableString(
      null,
      '"host[:port]" to put in Via / Record-Route / Path instead of the bound address (wildcard binds, NAT in front of the edge); null = the bound address.',
    ),
    upstreams: list([], 'PBX addresses to forward to, "proto:host:port", in failover order. IP literals or localhost.', 'upstream spec'),
    domains: list([], 'SIP domains served (lower-cased). The edge\'s own addresses always count too.', 'domain name'),
    inside: list([], 'CIDRs whose traffic is inside traffic, besides the upstream addresses.', 'CIDR'),
    trusted: list([], 'Outside CIDRs authenticated by address (carriers, partner PBXs): skip auth and rate limits, never sanity.', 'CIDR'),
    secret: Type.Optional(
      Type.String({
        minLength: 16,
        maxLength: 4096,
        description: 'HMAC secret for flow tokens and branches, shared by every instance. Env SIPEDGE_SECRET overrides.',
        errorMessage: 'expected a string of 16 to 4096 characters',
      }),
    ),
    limits: section(
      {
        maxMessageBytes: int(16384, 512, 1048576, 'Whole message, start line + headers + body -> 413.'),
        maxRequestUriBytes: int(512, 32, 8192, 'Request-URI length -> 414.'),
        maxHeaderLineBytes: int(4096, 128, 65536, 'One header line including folded continuations -> 400.'),
        maxHeaders: int(100, 10, 1000, 'Number of header lines -> 400.'),
      },
      'Parser limits, checked before anything else reads the message.',
    ),
    tcp: section(
      {
        maxConnections: int(10000, 1, 1000000, 'Open TCP connections in total.'),
        maxConnectionsPerSource: int(32, 1, 100000, 'Open TCP connections per source address.'),
        messageTimeoutMs: int(10000, 100, 600000, 'Time to receive one whole message once it has started (slowloris).'),
        idleTimeoutMs: int(180000, 1000, 86400000, 'Idle connection lifetime; phones keep flows alive with CRLF pings (RFC 5626 4.4.1).'),
      },
      'Stream transport caps.',
    ),
    transactions: section(
      {
        max: int(100000, 100, 10000000, 'Transaction table size cap.'),
        t1Ms: int(500, 50, 10000, 'RFC 3261 17.1.1.1 T1 (RTT estimate).'),
        t2Ms: int(4000, 100, 60000, 'RFC 3261 17.1.2.2 T2 (max non-INVITE retransmit interval).'),
        t4Ms: int(5000, 100, 60000, 'RFC 3261 17.1.2.2 T4 (max time a message stays in the network).'),
      },
      'Transaction table.',
    ),
    health: section(
      {
        intervalMs: int(5000, 0, 3600000, 'OPTIONS ping period per upstream; 0 disables active probes (health then follows real traffic only).'),
        timeoutMs: int(2000, 50, 60000, 'Time to wait for the OPTIONS reply.'),
        failuresBeforeDown: int(2, 1, 100, 'Consecutive failures before an upstream is marked down.'),
        retryAfterSeconds: int(30, 0, 86400, 'Retry-After on the 503 sent when no upstream is healthy (RFC 3261 21.5.4).'),
      },
      'Upstream health checks.',
    ),
    proxy: section(
      {
        recordRoute: Type.Boolean({ default: true, description: 'Insert Record-Route (RFC 3261 16.6 step 4).', errorMessage: 'expected true or false' }),
        path: Type.Boolean({ default: true, description: 'Add Path to REGISTER (RFC 3327).', errorMessage: 'expected true or false' }),
        maxForwards: int(70, 1, 255, 'Max-Forwards inserted when absent (RFC 3261 16.6 step 3).'),
      },
      'Proxy behaviour.',
    ),
    redis: nullableString(null, 'Redis URL (redis://host:6379/0, rediss://, redis+sentinel is not supported yet) shared by every instance for rate limits and bans; null = in memory, single node.'),
    rules: nullableString(null, 'Directory of the rule files (stages, scanner, access, geoip); relative to this file; null = the shipped rules/ directory.'),
    shutdownGraceMs: int(5000, 0, 600000, 'On SIGTERM, time given to open transactions and connections to finish.'),
    log: section({ level: LogLevelSchema }, 'Logging.'),
    metrics: section(
      {
        listen: nullableString('127.0.0.1:9090', 'Prometheus endpoint "host:port"; null disables it.'),
        token: Type.Optional(
          Type.String({ minLength: 16, maxLength: 4096, description: 'Bearer token required on /metrics.', errorMessage: 'expected a string of 16 to 4096 characters' }),
        ),
      },
      'Prometheus metrics.',
    ),
  },
  { additionalProperties: false, description: 'sip-edge main configuration' },
);

export type ConfigFile = Static<typeof ConfigFileSchema>;
