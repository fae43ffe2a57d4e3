// Header name canonicalisation, shared by the parser and headers.ts.

/** RFC 3261 7.3.3 and the IANA SIP header registry: compact forms. Indexed by lower-case letter. */
const COMPACT: Record<string, string> = {
  v: 'via', f: 'from', t: 'to', i: 'call-id', m: 'contact', l: 'content-length', c: 'content-type',
  k: 'supported', s: 'subject', e: 'content-encoding', o: 'event', u: 'allow-events', r: 'refer-to',
  b: 'referred-by', x: 'session-expires', y: 'identity', a: 'accept-contact', j: 'reject-contact',
  d: 'request-disposition',
};

// Interned canonical names for the spellings real traffic uses, so the hot path neither lower-cases
// nor allocates. Fixed at load time: attacker-chosen names never grow it.
const KNOWN = new Map<string, string>();
for (const n of [
  'Via', 'From', 'To', 'Call-ID', 'Call-Id', 'CSeq', 'Contact', 'Max-Forwards', 'Content-Length',
  'Content-Type', 'User-Agent', 'Allow', 'Supported', 'Expires', 'Route', 'Record-Route', 'Path',
  'Authorization', 'Proxy-Authorization', 'WWW-Authenticate', 'Proxy-Authenticate', 'Server',
  'Accept', 'Require', 'Proxy-Require', 'Session-Expires', 'Min-SE', 'Event', 'Allow-Events',
  'P-Asserted-Identity', 'Privacy', 'Date', 'Subject', 'Organization', 'Content-Disposition',
]) {
  KNOWN.set(n, n.toLowerCase());
  KNOWN.set(n.toLowerCase(), n.toLowerCase());
}
for (const k of Object.keys(COMPACT)) {
  KNOWN.set(k, COMPACT[k] as string);
  KNOWN.set(k.toUpperCase(), COMPACT[k] as string);
}

/** canonical long lower-case name for a header name as received (compact forms expanded) */
export function canonicalName(rawName: string): string {
  const known = KNOWN.get(rawName);
  if (known !== undefined) return known;
  const lower = rawName.toLowerCase();
  if (lower.length === 1) {
    const c = COMPACT[lower];
    if (c !== undefined) return c;
  }
  return lower;
}
