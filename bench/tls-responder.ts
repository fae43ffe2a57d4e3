// Stateless UDP responder behind the proxies of bench/tls.ts (its own process, so its CPU is not
// charged to the proxy): 200 to every request but ACK, echoing Via, From, To (with a tag on the
// INVITE), Call-ID, CSeq and Record-Route (RFC 3261 8.2.6.2, 12.1.1), with a Contact of its own.
//   node dist/bench/tls-responder.js HOST  -> prints "port N" once bound
import { createSocket } from 'node:dgram';

const host = process.argv[2] ?? '127.0.0.2';
const sock = createSocket('udp4');
const COPY = /^(via|v|from|f|to|t|call-id|i|cseq|record-route):/i;
let port = 0;

sock.on('message', (buf, rinfo) => {
  const text = buf.toString('latin1');
  const end = text.indexOf('\r\n\r\n');
  if (end < 0 || text.startsWith('SIP/2.0')) return;
  const lines = text.slice(0, end).split('\r\n');
  const method = lines[0]!.slice(0, lines[0]!.indexOf(' '));
  if (method === 'ACK') return;
  const out = ['SIP/2.0 200 OK'];
  for (const l of lines.slice(1)) {
    if (!COPY.test(l)) continue;
    if (method === 'INVITE' && /^(to|t):/i.test(l) && !/;tag=/i.test(l)) out.push(`${l};tag=r${rinfo.port}x${Date.now() % 100000}`);
    else out.push(l);
  }
  out.push(`Contact: <sip:r@${host}:${port}>`, 'Content-Length: 0', '', '');
  sock.send(Buffer.from(out.join('\r\n'), 'latin1'), rinfo.port, rinfo.address);
});
sock.bind(0, host, () => {
  port = sock.address().port;
  process.stdout.write(`port ${port}\n`);
});
process.on('SIGTERM', () => { sock.close(); process.exit(0); });
