// Schema of the main config file (sip-edge.yaml). Types derive from it (Static<>), defaults and
// descriptions sit beside each field (fastify style). Field names mirror ResolvedConfig
// (edge/config/types.ts); string syntax (listen specs, CIDRs, domains) is checked in load.ts
// with the same file:line:column positions. Every object rejects unknown keys so a typo
// ("listne:") is an error, not a silently ignored setting.
import { Type } from '@sinclair/typebox';
import type { Static, TProperties } from '@sinclair/typebox';
import { EgressSchema, TrunksSchema } from './trunks-schema';

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

export const DIGEST_ALGORITHMS = ['SHA-256', 'SHA-512-256', 'MD5'] as const;

const algorithmList = (withDefault: boolean) =>
  Type.Array(Type.Union(DIGEST_ALGORITHMS.map((a) => Type.Literal(a)), { errorMessage: `expected one of ${DIGEST_ALGORITHMS.join(', ')}` }), {
    ...(withDefault ? { default: ['SHA-256', 'SHA-512-256', 'MD5'] } : {}),
    minItems: 1,
    maxItems: 3,
    uniqueItems: true,
    description: 'Digest algorithms the edge accepts (the allow-list), in order of preference. Which of them a client is challenged with is chosen per client by rules/auth-clients.yaml (RFC 8760: one challenge per algorithm); without that file, every client gets all of them in this order. Take MD5 out only if no phone needs it.',
    errorMessage: `expected a non-empty list of distinct ${DIGEST_ALGORITHMS.join(', ')}`,
  });
const qopList = (withDefault: boolean) =>
  Type.Array(Type.Union([Type.Literal('auth'), Type.Literal('auth-int')], { errorMessage: 'expected auth or auth-int' }), {
    ...(withDefault ? { default: ['auth'] } : {}),
    minItems: 1,
    maxItems: 2,
    uniqueItems: true,
    description: 'qop values offered; auth is required, auth-int (body integrity) optional (RFC 7616 3.3).',
    errorMessage: 'expected a list of auth, auth-int',
  });
const bool = (def: boolean | undefined, description: string) =>
  Type.Boolean({ ...(def !== undefined ? { default: def } : {}), description, errorMessage: 'expected true or false' });
const identityMode = (withDefault: boolean) =>
  Type.Union([Type.Literal('strip'), Type.Literal('assert')], {
    ...(withDefault ? { default: 'strip' } : {}),
    description: 'P-Asserted-Identity, P-Preferred-Identity and Remote-Party-ID from untrusted sources: strip, or assert = strip and add P-Asserted-Identity of the authenticated user (RFC 3325).',
    errorMessage: 'expected strip or assert',
  });
const rewriteMode = (withDefault: boolean) =>
  Type.Union([Type.Literal('challenge'), Type.Literal('forbidden'), Type.Literal('off')], {
    ...(withDefault ? { default: 'challenge' } : {}),
    description: 'pbx mode: a 404/480 from the PBX to an unauthenticated outside request becomes the uniform challenge (challenge) or a 403 (forbidden), so it cannot reveal which users exist; off forwards it.',
    errorMessage: 'expected challenge, forbidden or off',
  });

/** Settings a domain entry may override (same names, no defaults there: unset = inherited). */
const AUTH_POLICY_FIELDS = {
  algorithms: algorithmList(true),
  qop: qopList(true),
  matchFrom: bool(true, 'The authenticated user must be the From user (and REGISTER may only bind the authenticated AOR).'),
  forwardCredentials: bool(false, 'Forward Authorization / Proxy-Authorization to the PBX (edge mode); false strips them.'),
  identity: identityMode(true),
  pbxRewrite: rewriteMode(true),
};

function optionalPolicy() {
  return {
    algorithms: Type.Optional(algorithmList(false)),
    qop: Type.Optional(qopList(false)),
    matchFrom: Type.Optional(bool(undefined, 'as above')),
    forwardCredentials: Type.Optional(bool(undefined, 'as above')),
    identity: Type.Optional(identityMode(false)),
    pbxRewrite: Type.Optional(rewriteMode(false)),
  };
}

export const DEFAULT_LISTEN = ['udp:127.0.0.1:5060', 'tcp:127.0.0.1:5060'];

export const ConfigFileSchema = Type.Object(
  {
    listen: list(
      DEFAULT_LISTEN,
      'Sockets to bind, "proto:host:port" (IPv6 in brackets: "udp:[::]:5060"): udp, tcp, tls (default port 5061; needs tls.certificates), ws (default port 80) and wss (default 443; needs tls.certificates): SIP over WebSocket, RFC 7118.',
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
    // trunks: edge/config/trunks.ts resolves them, edge/router/trunks.ts applies them (issue 15)
    trunks: TrunksSchema,
    egress: EgressSchema,
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
        unknownPercent: int(80, 0, 100, 'Share of maxConnections (per cent) that sources neither inside, trusted nor promoted may hold together; the rest stays free for those, whatever a flood of unknown sources holds.'),
        promotedPercent: int(90, 0, 100, 'Share of maxConnections (per cent) that unknown and promoted sources may hold together; the rest is for trusted and inside sources. A connection of a higher class that finds no room closes the least recently used one of the lowest class.'),
        messageTimeoutMs: int(10000, 100, 600000, 'Time to receive one whole message once it has started (slowloris).'),
        idleTimeoutMs: int(180000, 1000, 86400000, 'Idle connection lifetime; phones keep flows alive with CRLF pings (RFC 5626 4.4.1). A connection holding a registration the PBX accepted may stay silent as long as that registration.'),
      },
      'Stream transport caps.',
    ),
    tls: section(
      {
        certificates: Type.Array(
          Type.Object(
            {
              cert: Type.String({ minLength: 1, maxLength: 4096, description: 'PEM file: the certificate, then its intermediates (fullchain); relative to this file.', errorMessage: 'expected a file path' }),
              key: Type.String({ minLength: 1, maxLength: 4096, description: 'PEM file of its private key; relative to this file.', errorMessage: 'expected a file path' }),
            },
            { additionalProperties: false },
          ),
          { default: [], maxItems: 1000, description: 'Certificates of the tls listeners, chosen by SNI (the names in each certificate); the first one for clients that send no SNI or a name none covers. Reloaded when the files change or on SIGHUP; invalid files keep the previous certificates.', errorMessage: 'expected a list of {cert, key} entries' },
        ),
        minVersion: Type.Union([Type.Literal('TLSv1.2'), Type.Literal('TLSv1.3')], { default: 'TLSv1.2', description: 'Oldest TLS version accepted (RFC 8996: 1.0 and 1.1 are never); 1.3 is preferred whenever the peer has it.', errorMessage: 'expected TLSv1.2 or TLSv1.3' }),
        ciphers: nullableString(null, 'OpenSSL cipher list (TLS 1.3 suites TLS_* and TLS 1.2 suites); null = the default: TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256, ECDHE-(ECDSA|RSA)-AES128-GCM-SHA256, ECDHE-(ECDSA|RSA)-AES256-GCM-SHA384, ECDHE-(ECDSA|RSA)-CHACHA20-POLY1305.'),
        handshakeTimeoutMs: int(5000, 100, 120000, 'Time from the accepted TCP connection to the end of the TLS handshake.'),
        maxHandshakes: int(1000, 1, 1000000, 'TLS handshakes in progress at once, all sources together.'),
        maxHandshakesPerSource: int(8, 1, 100000, 'TLS handshakes in progress at once from one source (IPv6: per limits ipv6 prefix, as tcp.maxConnectionsPerSource).'),
        clientCa: nullableString(null, 'Mutual TLS: PEM bundle of the CAs client certificates are verified against; relative to this file. null = no client certificates.'),
        requireClientCert: list([], 'Listeners ("tls:host:port" as in listen) that refuse clients without a certificate that verifies against clientCa.', 'listener spec'),
        peers: Type.Array(
          Type.Object(
            {
              fingerprint: Type.Optional(Type.String({ pattern: '^([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}$', description: 'SHA-256 fingerprint of the peer\'s certificate, "AB:CD:..." (openssl x509 -noout -fingerprint -sha256).', errorMessage: 'expected a SHA-256 fingerprint "AB:CD:..." (32 bytes)' })),
              name: Type.Optional(Type.String({ minLength: 1, maxLength: 253, description: 'A DNS name (subjectAltName, or CN without SAN) of the peer\'s certificate.', errorMessage: 'expected a host name' })),
              addresses: Type.Optional(Type.Array(Type.String({ maxLength: 64 }), { maxItems: 1000, description: 'CIDRs the peer connects from: such a connection is admitted into the TCP capacity reserved for trusted sources while its handshake runs (on probation: closed if its certificate then matches no tls.peers entry), so that a connection flood from unknown sources cannot keep the peer out.', errorMessage: 'expected a list of CIDRs' })),
            },
            { additionalProperties: false },
          ),
          { default: [], maxItems: 10000, description: 'Trusted peers identified by their client certificate (verified against clientCa): a connection whose certificate matches an entry is trusted like a `trusted` CIDR.', errorMessage: 'expected a list of {fingerprint} or {name} entries' },
        ),
        upstreamCa: nullableString(null, 'PEM bundle of the CAs tls upstreams\' certificates are verified against; relative to this file. null = the system\'s roots.'),
        upstreamName: nullableString(null, 'Name expected in the tls upstreams\' certificates; null = their IP address (an IP subjectAltName).'),
      },
      'TLS (RFC 3261 26.2): certificates, protocol policy, handshake limits, mutual TLS.',
    ),
    websocket: section(
      {
        origins: Type.Array(
          Type.Object(
            {
              listener: Type.String({ minLength: 1, maxLength: 300, description: 'A ws or wss listener, as written in listen.', errorMessage: 'expected a listener spec' }),
              allow: Type.Array(Type.String({ minLength: 1, maxLength: 2048, errorMessage: 'expected an origin "https://host[:port]"' }), { maxItems: 1000, description: 'Origins ("https://app.example.com") whose pages may open a WebSocket to this listener.', errorMessage: 'expected a list of origins' }),
            },
            { additionalProperties: false },
          ),
          { default: [], maxItems: 1000, description: 'Origin allow-list per ws/wss listener (RFC 6455 10.2). A listener with none refuses every browser (browsers always send Origin); clients that send no Origin (SIP phones, softphones) are not browsers and are let in.', errorMessage: 'expected a list of {listener, allow} entries' },
        ),
        trustedProxies: list([], 'CIDRs of TLS-terminating proxies / load balancers in front of ws listeners: from these peers only, the client address is taken from Forwarded (RFC 7239) or X-Forwarded-For; from anyone else those headers are ignored and the socket address is the source.', 'CIDR'),
        upgradeTimeoutMs: int(5000, 100, 120000, 'Time from the accepted connection (after the TLS handshake for wss) to a complete HTTP upgrade request.'),
        maxUpgradeBytes: int(8192, 1024, 65536, 'Bytes of the HTTP upgrade request head -> 431.'),
        pingIntervalMs: int(30000, 1000, 3600000, 'WebSocket ping interval; a connection whose previous ping went unanswered is closed. Idle time (no SIP message either way) is tcp.idleTimeoutMs, or the registration\'s lifetime.'),
      },
      'SIP over WebSocket (RFC 7118): ws/wss listeners. Frames and messages are capped at limits.maxMessageBytes.',
    ),
    udp: section(
      {
        ioThread: Type.Boolean({ default: true, description: 'Do the UDP syscalls (recvmsg, sendmsg) on a thread of their own, handing datagrams to the event loop through shared memory. About 40 % less event-loop time per call (bench/README.md); false keeps one thread.', errorMessage: 'expected true or false' }),
        recvBufferBytes: int(4194304, 65536, 268435456, 'Socket receive buffer to ask for (the kernel caps it at net.core.rmem_max); also the size of each hand-over queue of the I/O thread.'),
      },
      'Datagram transport.',
    ),
    transactions: section(
      {
        memoryBudgetMB: int(1024, 16, 1048576, 'Memory (MiB) the transaction table may use at worst. Three quarters of it sizes the live-transaction cap, counting each live transaction at its worst case (2 x limits.maxMessageBytes + 4 KiB: the forwarded request kept for retransmission and a stored provisional); the rest bounds the bytes settled transactions keep for retransmissions (oldest forgotten first). With the defaults: 21845 live transactions. Measured: about 2.4 KB per live transaction of a 1 KB INVITE (bench/README.md).'),
        max: Type.Optional(Type.Integer({ minimum: 100, maximum: 10000000, description: 'Live-transaction cap (503 when full); default: derived from memoryBudgetMB. A value the budget cannot hold at worst case is refused.', errorMessage: 'expected an integer from 100 to 10000000' })),
        t1Ms: int(500, 50, 10000, 'RFC 3261 17.1.1.1 T1 (RTT estimate).'),
        t2Ms: int(4000, 100, 60000, 'RFC 3261 17.1.2.2 T2 (max non-INVITE retransmit interval).'),
        t4Ms: int(5000, 100, 60000, 'RFC 3261 17.1.2.2 T4 (max time a message stays in the network).'),
      },
      'Transaction table.',
    ),
    health: section(
      {
        intervalMs: int(5000, 0, 3600000, 'OPTIONS ping period per upstream; 0 = no OPTIONS at all (only TCP connect failures mark an upstream down; a down one is retried after retryAfterSeconds). Timeouts and 503s on real traffic never mark an upstream down.'),
        timeoutMs: int(2000, 50, 60000, 'Time to wait for the OPTIONS reply.'),
        failuresBeforeDown: int(2, 1, 100, 'Consecutive failures (unanswered probes, 503 to a probe, refused TCP connects; a burst within timeoutMs/2 counts once) before an upstream is marked down.'),
        retryAfterSeconds: int(30, 0, 86400, 'Retry-After on the 503 sent when no upstream is healthy (RFC 3261 21.5.4).'),
      },
      'Upstream health checks.',
    ),
    overload: section(
      {
        enabled: Type.Boolean({ default: false, description: 'Opt-in (measurements in bench/README.md). Refuse a share of new outside requests (503 to trusted and authenticated sources, silence to unknown ones) while the UDP receive queue is backlogged, so accepted calls keep flowing (RFC 7339 loss-based, applied locally).', errorMessage: 'expected true or false' }),
        retryAfterSeconds: int(5, 1, 3600, 'Retry-After on the overload 503 (jittered up to +50 %).'),
        prioritize: Type.Boolean({ default: true, description: 'Trusted-first prioritization before parse (edge/path/priority.ts): past capacity, responses and in-dialog requests first, then the PBX side, trusted peers and promoted sources, unknown sources last and shed silently (measurements in bench/README.md).', errorMessage: 'expected true or false' }),
        turnBudgetMs: int(10, 1, 1000, 'With prioritize: most milliseconds of message handling per event-loop turn before timers, TCP, /healthz and the UDP hand-over get their turn.'),
        maxQueuedMB: int(32, 1, 1024, 'With prioritize: most MiB of received messages waiting in the priority queues (lowest class shed first).'),
      },
      'Overload control.',
    ),
    proxy: section(
      {
        recordRoute: Type.Boolean({ default: true, description: 'Insert Record-Route (RFC 3261 16.6 step 4).', errorMessage: 'expected true or false' }),
        path: Type.Boolean({ default: true, description: 'Add Path to REGISTER (RFC 3327).', errorMessage: 'expected true or false' }),
        maxForwards: int(70, 1, 255, 'Max-Forwards inserted when absent (RFC 3261 16.6 step 3).'),
      },
      'Proxy behaviour.',
    ),
    topology: section(
      {
        enabled: Type.Boolean({ default: true, description: 'Topology hiding toward the outside (edge/router/topology.ts): the inside Vias and Record-Routes folded into sealed parameters of the edge\'s own, Contacts rewritten to the edge with a sealed token, the header policy below applied. On by default: the edge stands where the PBX meets the internet, and a PBX\'s addresses and product name are what a scanner collects; stateless, the tokens authenticated (a forged one only fails).', errorMessage: 'expected true or false' }),
        key: Type.Union([Type.String({ minLength: 32, maxLength: 4096 }), Type.Null()], { default: null, description: 'Key of the sealed tokens (32+ characters; 64 hex digits are read as 32 bytes), shared by every instance. Env SIPEDGE_TOPOLOGY_KEY overrides. null = derived from `secret` (the flow-token secret), so tokens live as long as flow tokens do.', errorMessage: 'expected a string of 32 to 4096 characters or null' }),
        headers: section(
          {
            remove: list(['server', 'user-agent', 'organization', 'warning'], 'Headers removed from everything sent to the outside (case-insensitive; `x-acme-*` names a prefix).', 'a header name or prefix*'),
            replace: Type.Record(Type.String({ pattern: '^[A-Za-z0-9!%*_+`\'~.-]+$' }), Type.String({ minLength: 1, maxLength: 256, pattern: '^[\\x20-\\x7e]+$' }), { default: {}, description: 'Headers whose value is replaced toward the outside (name -> value), e.g. Server: sip-edge. A header in both lists is removed.', errorMessage: 'expected a map of header name to printable value' }),
          },
          'Header policy toward the outside.',
        ),
      },
      'Topology hiding toward the outside (RFC 3261 16.6 allows a proxy to rewrite what it forwards; what Kamailio topoh/topos do).',
    ),
    auth: section(
      {
        users: nullableString(null, 'Users file (HA1 per algorithm, written by `sip-edge passwd`) for every served domain without a users file of its own; relative to this file. --users overrides. A domain with a users file uses edge authentication unless its mode says otherwise.'),
        secret: Type.Optional(
          Type.String({
            minLength: 16,
            maxLength: 4096,
            description: 'HMAC secret for digest nonces, shared by every instance (any instance can verify a nonce another issued). Env SIPEDGE_AUTH_SECRET overrides; falls back to `secret`. Without any, one instance uses a random secret per process (nonces then do not survive a restart); well-known values are refused.',
            errorMessage: 'expected a string of 16 to 4096 characters',
          }),
        ),
        realm: nullableString(null, 'Realm for requests to the edge\'s own addresses and for domains without a realm of their own; null = the first served domain name, else the edge\'s advertised (or first listen) address.'),
        mode: Type.Union([Type.Literal('edge'), Type.Literal('pbx'), Type.Literal('off'), Type.Null()], {
          default: null,
          description: 'edge: the edge challenges and verifies; pbx: the PBX challenges and the edge watches the exchange; off: no auth handling. null = edge when a users file applies, else pbx.',
          errorMessage: 'expected edge, pbx, off or null',
        }),
        ...AUTH_POLICY_FIELDS,
        nonceSeconds: int(300, 10, 86400, 'Nonce lifetime; an older nonce with a correct answer gets a fresh challenge with stale=true (RFC 7616 3.3).'),
        lockout: section(
          {
            failures: int(10, 1, 1000000, 'Failed authentications for one user (any source) before the user is locked out.'),
            seconds: int(900, 1, 86400 * 30, 'Lockout window and duration. Sources that authenticated recently (promoted) are exempt, so the owner keeps working.'),
          },
          'Per-user lockout against distributed brute force.',
        ),
        enumeration: section(
          {
            users: int(10, 2, 100000, 'Distinct target users from one source within the window before each further one counts as suspicion (enumeration).'),
            seconds: int(60, 1, 86400, 'Window.'),
          },
          'Extension enumeration detection (svwar, sippts).',
        ),
        domains: Type.Array(
          Type.Object(
            {
              name: Type.String({ minLength: 1, maxLength: 253, description: 'A served domain (one of `domains`).', errorMessage: 'expected a domain name' }),
              mode: Type.Optional(Type.Union([Type.Literal('edge'), Type.Literal('pbx'), Type.Literal('off')], { errorMessage: 'expected edge, pbx or off' })),
              realm: Type.Optional(Type.String({ minLength: 1, maxLength: 255, errorMessage: 'expected a realm string' })),
              users: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, errorMessage: 'expected a file path' })),
              ...optionalPolicy(),
            },
            { additionalProperties: false },
          ),
          { default: [], maxItems: 1000, description: 'Per-domain settings; a served domain not listed uses the settings above.', errorMessage: 'expected a list of domain entries' },
        ),
      },
      'Digest authentication (RFC 3261 22, RFC 7616, RFC 8760) and anti-enumeration.',
    ),
    pings: Type.Union([Type.Literal('answer'), Type.Literal('forward'), Type.Literal('challenge')], {
      default: 'answer',
      description: 'OPTIONS pings addressed to the edge itself (no user part; the edge, its advertised address or a served domain): answer = the edge answers 200 (RFC 3261 11.2) after the source, scanner and rate checks, no challenge; forward = to the PBX without an edge challenge; challenge = like any request (challenged in edge auth mode).',
      errorMessage: 'expected answer, forward or challenge',
    }),
    redis: nullableString(null, 'Redis shared by every instance for rate limits, bans, nonce replay and promotions: redis://[user:pass@]host:port[/db], rediss:// (TLS), redis-sentinel://host1:26379,host2:26379/MASTER[/db], redis-cluster://host1:7000,host2:7001; null = in memory, single node.'),
    rules: nullableString(null, 'Directory of the rule files (stages, scanner, access, geoip, limits, auth-clients); relative to this file; null = the shipped rules/ directory.'),
    serverHeader: Type.Union(
      [
        // RFC 3261 20.35 / 25.1: product / comment words; printable ASCII and single spaces, so
        // nothing can smuggle a line break into the replies
        Type.String({ minLength: 1, maxLength: 128, pattern: '^[\\x21-\\x7e]+( [\\x21-\\x7e]+)*$' }),
        Type.Null(),
      ],
      {
        default: null,
        description: 'Server header of the replies the edge generates itself (100 Trying, 4xx/5xx, challenges); null = none, so a scanner is not told which product it found.',
        errorMessage: 'expected null or 1 to 128 printable ASCII characters (words separated by single spaces)',
      },
    ),
    shutdownGraceMs: int(5000, 0, 600000, 'On SIGTERM, time given to open transactions to finish; then pending ones get 503 and their INVITE a CANCEL upstream.'),
    warmUpCalls: int(2000, 0, 100000, 'Synthetic calls run through a throwaway in-memory edge before the sockets are bound, so that the first real calls meet optimized code (edge/warmup.ts); 0 = none.'),
    dns: section(
      {
        servers: list([], 'Resolvers to ask, "ip" or "ip:port" (IPv6 in brackets with a port, "[::1]:53"); empty = the nameservers of /etc/resolv.conf, read when the edge starts.', 'resolver address'),
        timeoutMs: int(2000, 50, 30000, 'Wait for one answer from one server; a resolution waits at most attempts x servers x timeoutMs per chain step (NAPTR, SRV, A/AAAA).'),
        attempts: int(2, 1, 10, 'Rounds over the server list before a question counts as timed out.'),
        maxOutstanding: int(256, 1, 65535, 'Distinct questions (and resolutions) in flight at once; more are refused at once as busy.'),
        ipv6: bool(true, 'Ask AAAA as well as A.'),
        preferIpv6: bool(false, 'Try a host\'s IPv6 addresses before its IPv4 ones.'),
        cache: section(
          {
            maxNames: int(10000, 10, 1000000, 'Cached destinations (least recently used evicted); record sets: 8 times as many.'),
            minTtlSeconds: int(1, 0, 86400, 'Lower bound on every TTL, so that a zero TTL does not cost a lookup per request.'),
            maxTtlSeconds: int(3600, 1, 604800, 'Upper bound on every TTL.'),
            maxNegativeTtlSeconds: int(300, 0, 86400, 'Upper bound for NXDOMAIN / NODATA answers (RFC 2308 5: min of the SOA TTL and MINIMUM).'),
            negativeTtlSeconds: int(30, 0, 3600, 'TTL of a negative answer that carries no SOA.'),
            errorTtlSeconds: int(5, 1, 3600, 'A failed resolution (timeout, SERVFAIL) is remembered this long before DNS is asked again.'),
            staleSeconds: int(3600, 0, 604800, 'How long past its TTL a resolution is still used while refreshes fail (RFC 8767 serve-stale).'),
          },
          'Resolver cache.',
        ),
      },
      'DNS for host-name destinations (RFC 3263 NAPTR/SRV/A/AAAA, RFC 2782). Requests never wait on DNS for a name already resolved.',
    ),
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
