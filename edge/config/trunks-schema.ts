// Schema of the `trunks:` and `egress:` keys (issue 15): named SIP trunks to carriers and what
// each may do. Kept apart from schema.ts so the trunk work stays in its own files.
import { Type } from '@sinclair/typebox';

const bool = (def: boolean, description: string) =>
  Type.Boolean({ default: def, description, errorMessage: 'expected true or false' });
const strings = (description: string, item: string) =>
  Type.Array(Type.String({ description: item, errorMessage: 'expected a string' }), {
    default: [], maxItems: 1000, description, errorMessage: 'expected a list of strings (at most 1000)',
  });

const cps = (description: string) =>
  Type.Integer({ default: 0, minimum: 0, maximum: 100000, description, errorMessage: 'expected an integer from 0 to 100000' });

export const TrunkSchema = Type.Object(
  {
    name: Type.String({ pattern: '^[a-z0-9][a-z0-9_-]{0,31}$', description: 'Trunk name: lower-case letters, digits, _ and -, at most 32 (used in logs and as a metric label).', errorMessage: 'expected a name of 1 to 32 characters a-z 0-9 _ -' }),
    addresses: strings('CIDRs the carrier sends from and may be sent to.', 'CIDR'),
    hosts: strings('Host names of the carrier (RFC 3263: NAPTR/SRV/A/AAAA through the dns: resolvers). Requests from inside to these names (or to the addresses they resolve to) are this trunk\'s outbound traffic.', 'host name'),
    transport: Type.Union([Type.Literal('udp'), Type.Literal('tcp'), Type.Literal('tls'), Type.Null()], { default: null, description: 'Transport toward the carrier when its URIs do not say; null = what DNS (NAPTR/SRV) chooses.', errorMessage: 'expected udp, tcp, tls or null' }),
    inbound: Type.Object(
      {
        allowed: bool(true, 'Calls from the carrier\'s addresses to the PBX.'),
        skipAuth: bool(true, 'Treat the carrier\'s addresses as trusted (like `trusted:`): no digest challenge, no per-source rate limits; never the sanity stage.'),
        callsPerSecond: cps('New INVITEs per second the carrier may send in (its own budget, burst of one second); more get 503 trunk_rate_limited. 0 = no limit.'),
      },
      { additionalProperties: false, default: {}, description: 'What the carrier may send in.' },
    ),
    outbound: Type.Object(
      {
        allowed: bool(true, 'Requests from the PBX toward this trunk (INVITE, MESSAGE, OPTIONS ...).'),
        callsPerSecond: cps('New INVITEs per second the PBX may send to this trunk (burst of one second); more get 503 trunk_rate_limited. 0 = no limit.'),
      },
      { additionalProperties: false, default: {}, description: 'What the PBX may send out to this trunk.' },
    ),
    register: Type.Object(
      { allowed: bool(false, 'REGISTER from the PBX to the carrier through the edge (trunk registration).') },
      { additionalProperties: false, default: {}, description: 'Registrations the PBX sends to the carrier.' },
    ),
  },
  { additionalProperties: false, description: 'One SIP trunk (carrier).' },
);

export const TrunksSchema = Type.Array(TrunkSchema, {
  default: [], maxItems: 256,
  description: 'Named SIP trunks to carriers (README "Trunks").', errorMessage: 'expected a list of trunks (at most 256)',
});

export const EgressSchema = Type.Union([Type.Literal('trunks'), Type.Literal('any'), Type.Null()], {
  default: null,
  description: 'Where requests from inside may go (besides registered phones and dialogs that exist): trunks = only to configured trunks (403 egress_denied otherwise), any = anywhere. null = trunks when any trunk is configured, else any.',
  errorMessage: 'expected trunks, any or null',
});
