// An edge on an in-memory transport (the warm-up's listeners, edge/warmup.ts): messages are
// delivered by a function call and everything the edge sends is recorded, so a test can prove
// that nothing was sent by looking, instead of binding loopback sockets and waiting a fixed time.
// The message path runs synchronously for stages that need no I/O; settle() lets the few that do
// (store round trips) finish.
import pino from 'pino';
import { ManualClock } from '../../edge/clock';
import type { ResolvedConfig } from '../../edge/config/types';
import { startEdge, type EdgeHandle, type EdgeOptions } from '../../edge/edge';
import type { Endpoint } from '../../edge/sip/types';
import type { Inbound, Listener, ListenerSpec, TransportHooks } from '../../edge/transport/types';
import { testConfig } from './config';

export const EDGE_IP = '127.0.0.1';
export const EDGE_PORT = 5060;
export const LISTENER_ID = `udp:${EDGE_IP}:${EDGE_PORT}`;

export interface Sent { readonly dest: Endpoint; readonly bytes: Buffer; readonly text: string }

export interface MemoryEdge {
  readonly edge: EdgeHandle;
  readonly clock: ManualClock;
  /** everything the edge sent, in order */
  readonly sent: Sent[];
  /** deliver `text` from `source` (UDP, on the one listener) */
  deliver(text: string | Buffer, source: { address: string; port: number }): void;
  /** what the edge sent to this address (and port) */
  sentTo(address: string, port?: number): Sent[];
  /** let asynchronous stages (store round trips) and the grace timers of the store finish */
  settle(): Promise<void>;
  close(): Promise<void>;
}

export interface MemoryEdgeOptions extends Omit<EdgeOptions, 'createListener' | 'clock'> {
  /** called with the listener hooks as soon as the listener is created, before startEdge
   *  returns (what a transport could deliver while the edge is still starting) */
  onBound?: (hooks: TransportHooks) => void;
}

export function endpoint(address: string, port: number): Endpoint {
  return { transport: 'udp', address, port, listenerId: LISTENER_ID };
}

export async function startMemoryEdge(over: Partial<ResolvedConfig> = {}, opts: MemoryEdgeOptions = {}): Promise<MemoryEdge> {
  const sent: Sent[] = [];
  const clock = new ManualClock();
  const createListener = (spec: ListenerSpec, hooks: TransportHooks): Promise<Listener> => {
    const l: Listener = {
      id: LISTENER_ID,
      spec,
      local: { address: EDGE_IP, port: EDGE_PORT, family: 4 },
      family: 4,
      send: (dest: Endpoint, bytes: Buffer) => { sent.push({ dest, bytes, text: bytes.toString('latin1') }); return true; },
      close: () => Promise.resolve(),
    };
    opts.onBound?.(hooks);
    return Promise.resolve(l);
  };
  const { onBound: _onBound, ...edgeOpts } = opts;
  const edge = await startEdge(testConfig({ listen: [{ transport: 'udp', host: EDGE_IP, port: EDGE_PORT }], ...over }), pino({ level: 'silent' }), {
    watchRules: false, ...edgeOpts, clock, createListener,
  });
  return {
    edge, clock, sent,
    deliver(text, source) {
      const bytes = typeof text === 'string' ? Buffer.from(text, 'latin1') : text;
      edge.inject({ bytes, source: endpoint(source.address, source.port), receivedAt: performance.now() } as Inbound);
    },
    sentTo: (address, port) => sent.filter((s) => s.dest.address === address && (port === undefined || s.dest.port === port)),
    async settle() {
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    },
    close: () => edge.close(0),
  };
}

/** a SIP message from lines (CRLF, Content-Length added when missing) */
export function sip(lines: readonly string[], body = ''): string {
  const hasLength = lines.some((l) => /^(content-length|l)\s*:/i.test(l));
  return [...lines, ...(hasLength ? [] : [`Content-Length: ${Buffer.byteLength(body, 'latin1')}`])].join('\r\n') + '\r\n\r\n' + body;
}
