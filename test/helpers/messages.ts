// Sample SIP messages for the parser/headers/writer tests: captures in the shape real phones,
// PBXs and scanners send, plus RFC 4475 / RFC 5118 torture messages.

/** Joins head lines with CRLF, adds the empty line and the body. "{CL}" in a line is replaced by
 *  the body's byte length. */
export function sip(lines: readonly string[], body = ''): Buffer {
  const bodyBuf = Buffer.from(body, 'utf8');
  const head = lines.map((l) => l.replace('{CL}', String(bodyBuf.length))).join('\r\n') + '\r\n\r\n';
  return Buffer.concat([Buffer.from(head, 'latin1'), bodyBuf]);
}

/** like sip() but head lines may hold UTF-8 text (display names, unknown headers) */
export function sipUtf8(lines: readonly string[], body = ''): Buffer {
  const bodyBuf = Buffer.from(body, 'utf8');
  const head = lines.map((l) => l.replace('{CL}', String(bodyBuf.length))).join('\r\n') + '\r\n\r\n';
  return Buffer.concat([Buffer.from(head, 'utf8'), bodyBuf]);
}

const SDP = [
  'v=0',
  'o=- 20518 0 IN IP4 192.168.1.23',
  's=SDP data',
  'c=IN IP4 192.168.1.23',
  't=0 0',
  'm=audio 11796 RTP/AVP 0 8 18 101',
  'a=rtpmap:0 PCMU/8000',
  'a=rtpmap:101 telephone-event/8000',
  'a=fmtp:101 0-15',
  'a=sendrecv',
  '',
].join('\r\n');

export interface Sample {
  readonly name: string;
  readonly bytes: Buffer;
  readonly kind: 'request' | 'response';
  /** method for requests, status for responses */
  readonly method?: string;
  readonly status?: number;
  readonly headerCount: number;
  readonly bodyLength: number;
}

export const INVITE_YEALINK = sip([
  'INVITE sip:1002@pbx.example.com SIP/2.0',
  'Via: SIP/2.0/UDP 192.168.1.23:5060;branch=z9hG4bK1497823375;rport',
  'From: "Alice Desk" <sip:1001@pbx.example.com>;tag=3519573745',
  'To: <sip:1002@pbx.example.com>',
  'Call-ID: 1426489117@192.168.1.23',
  'CSeq: 1 INVITE',
  'Contact: <sip:1001@192.168.1.23:5060>',
  'Content-Type: application/sdp',
  'Allow: INVITE, INFO, PRACK, ACK, BYE, CANCEL, OPTIONS, NOTIFY, REGISTER, SUBSCRIBE, REFER, PUBLISH, UPDATE, MESSAGE',
  'Max-Forwards: 70',
  'User-Agent: Yealink SIP-T46S 66.86.0.15',
  'Supported: replaces, timer',
  'Allow-Events: talk,hold,conference,refer,check-sync',
  'Content-Length: {CL}',
], SDP);

export const OK_INVITE = sip([
  'SIP/2.0 200 OK',
  'Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKedge.7f3a9c;received=203.0.113.5, SIP/2.0/UDP 192.168.1.23:5060;branch=z9hG4bK1497823375;rport=5060;received=198.51.100.7',
  'Record-Route: <sip:203.0.113.5;lr;ftag=3519573745>, <sip:10.0.0.2;lr>',
  'From: "Alice Desk" <sip:1001@pbx.example.com>;tag=3519573745',
  'To: <sip:1002@pbx.example.com>;tag=as5d1e9c41',
  'Call-ID: 1426489117@192.168.1.23',
  'CSeq: 1 INVITE',
  'Server: Asterisk PBX 18.20.0',
  'Contact: <sip:1002@10.0.0.2:5060>',
  'Content-Type: application/sdp',
  'Content-Length: {CL}',
], SDP);

export const REGISTER_ZOIPER = sip([
  'REGISTER sip:pbx.example.com;transport=TCP SIP/2.0',
  'Via: SIP/2.0/TCP 10.20.30.40:52644;branch=z9hG4bK-524287-1---d8c4a7e1c6b1c55f;rport',
  'Max-Forwards: 70',
  'Contact: <sip:2001@10.20.30.40:52644;rinstance=0d95a1b0f1c9a3f6;transport=TCP>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1',
  'To: <sip:2001@pbx.example.com;transport=TCP>',
  'From: <sip:2001@pbx.example.com;transport=TCP>;tag=7a2d5b1c',
  'Call-ID: Zm9vYmFyYmF6cXV4MTIz',
  'CSeq: 2 REGISTER',
  'Expires: 60',
  'Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE',
  'Supported: replaces, norefersub, extended-refer, timer, outbound, path, X-cisco-serviceuri',
  'User-Agent: Zoiper v2.10.19.6',
  'Authorization: Digest username="2001",realm="pbx.example.com",nonce="1b2c3d4e",uri="sip:pbx.example.com;transport=TCP",response="6629fae49393a05397450978507c4ef1",algorithm=MD5',
  'Allow-Events: presence, kpml, talk',
  'Content-Length: 0',
]);

export const UNAUTHORIZED = sip([
  'SIP/2.0 401 Unauthorized',
  'Via: SIP/2.0/UDP 192.168.1.23:5060;branch=z9hG4bK77;rport=5060;received=198.51.100.7',
  'From: <sip:1001@pbx.example.com>;tag=92817',
  'To: <sip:1001@pbx.example.com>;tag=as0e5e7c1d',
  'Call-ID: 55512@192.168.1.23',
  'CSeq: 1 REGISTER',
  'WWW-Authenticate: Digest algorithm=MD5, realm="asterisk", nonce="2f0a7b31"',
  'Content-Length: 0',
]);

export const COMPACT = sip([
  'INVITE sip:bob@biloxi.example.com SIP/2.0',
  'v: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9',
  'max-forwards: 70',
  'f: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl',
  't: Bob <sip:bob@biloxi.example.com>',
  'i: 3848276298220188511@atlanta.example.com',
  'CSeq: 2 INVITE',
  'm: <sip:alice@client.atlanta.example.com;transport=tcp>',
  'k: timer',
  's: lunch',
  'c: application/sdp',
  'l: {CL}',
], SDP);

/** RFC 4475 wsinv (line folding, LWS around separators, compact and long forms) */
export const WSINV = sip([
  'INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0',
  'TO :',
  ' sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n',
  'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>',
  '  ;',
  '  tag = 98asjd8',
  'MaX-fOrWaRdS: 0068',
  'Call-ID: wsinv.ndaksdj@192.0.2.1',
  'Content-Length   : {CL}',
  'cseq: 0009',
  '  INVITE',
  'Via  : SIP  /   2.0',
  ' /UDP',
  '    192.0.2.2;branch=390skdjuw',
  's :',
  'NewFangledHeader:   newfangled value',
  ' continued newfangled value',
  'UnknownHeaderWithUnusualValue: ;;,,;;,;',
  'Content-Type: application/sdp',
  'Route:',
  ' <sip:services.example.com;lr;unknownwith=value;unknown-no-value>',
  'v:  SIP  / 2.0  / TCP     spindle.example.com   ;',
  '  branch  =   z9hG4bK9ikj8  ,',
  ' SIP  /    2.0   / UDP  192.168.255.111   ; branch=',
  ' z9hG4bK30239',
  'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =',
  '      newvalue ;',
  '  secondparam ; q = 0.33',
], 'v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.3\r\ns=-\r\nc=IN IP4 192.0.2.4\r\nt=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n');

/** RFC 4475 intmeth, minus the quoted BEL/NUL/DEL in To: this edge refuses every control
 *  byte in the head (control_char) even inside a quoted-pair. */
export const INTMETH = sipUtf8([
  "!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com SIP/2.0",
  "Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~",
  'To: "BEL:\\a NUL:\\0 DEL:\\z" <sip:1_unusual.URI~(to-be!sure)&isn\'t+it$/crazy?,/;;*@example.com>',
  "From: token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%=\"работающий\";tag=_token~1'+`*%!-.",
  'Call-ID: intmeth.word%ZK-!.*_+\'@word`~)(><:\\/"][?}{',
  "CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~",
  'Max-Forwards: 255',
  "extensionHeader-!.%*+_`'~:\uFEFF大停電",
  'Content-Length: 0',
]);

/** RFC 4475 semiuri: ';' in the userinfo */
export const SEMIURI = sip([
  'OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0',
  'To: sip:j_user@example.com',
  'From: sip:caller@example.org;tag=33242',
  'Max-Forwards: 3',
  'Call-ID: semiuri.0ha0isndaksdj',
  'CSeq: 8 OPTIONS',
  'Accept: application/sdp, application/pkcs7-mime,',
  ' multipart/mixed, multipart/signed,',
  ' message/sip, message/sipfrag',
  'Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw',
  'l: 0',
]);

/** RFC 4475 esc01 shape: %-escaped Request-URI user (esc01 shape) */
export const ESC01 = sip([
  'INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0',
  'To: sip:%75se%72@example.com',
  'From: <sip:I%20have%20spaces@example.net>;tag=938',
  'Max-Forwards: 87',
  'i: esc01.239409asdfakjkn23onasd0-3234',
  'CSeq: 234234 INVITE',
  'Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw',
  'C: application/sdp',
  'Contact:',
  '  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>',
  'Content-Length: {CL}',
], 'v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\n');

/** RFC 5118 4.1 ipv6-good / 4.5 received with IPv6 */
export const IPV6 = sip([
  'REGISTER sip:[2001:db8::10] SIP/2.0',
  'To: sip:user@example.com',
  'From: sip:user@example.com;tag=81x2',
  'Via: SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bKas3-111;received=[2001:db8::9:255]',
  'Call-ID: SSG9559905523997077@hlau_4100',
  'Max-Forwards: 70',
  'Contact: "Caller" <sip:caller@[2001:db8::1]:5070;transport=udp>',
  'CSeq: 98176 REGISTER',
  'Content-Length: 0',
]);

/** several values per Via / Route line, mixed with separate lines */
export const MULTI = sip([
  'BYE sip:1002@10.0.0.2:5060 SIP/2.0',
  'Via: SIP/2.0/UDP 203.0.113.5;branch=z9hG4bKaaa, SIP/2.0/TCP [2001:db8::5]:5061;branch=z9hG4bKbbb',
  'Via: SIP/2.0/UDP 192.168.1.23:5060;branch=z9hG4bKccc;rport=5060;received=198.51.100.7',
  'Route: <sip:203.0.113.5;lr>, <sip:10.0.0.2;lr>',
  'Route: <sip:10.0.0.3;lr>',
  'Max-Forwards: 69',
  'From: <sip:1001@pbx.example.com>;tag=3519573745',
  'To: <sip:1002@pbx.example.com>;tag=as5d1e9c41',
  'Call-ID: 1426489117@192.168.1.23',
  'CSeq: 2 BYE',
  'Content-Length: 0',
]);

/** RFC 4475 3.1.1.13 noreason: empty Reason-Phrase after the SP */
export const NOREASON = sip([
  'SIP/2.0 100 ',
  'Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe',
  'Call-ID: noreason.asndj203insdf99223ndf',
  'CSeq: 35 INVITE',
  'From: <sip:user@example.com>;tag=39ansfi3',
  'To: <sip:user@example.edu>;tag=902jndnke3',
  'Content-Length: 0',
]);

/** SIPVicious svmap probe */
export const SIPVICIOUS = sip([
  'OPTIONS sip:100@198.51.100.20 SIP/2.0',
  'Via: SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bK-2791532546;rport',
  'Content-Length: 0',
  'From: "sipvicious"<sip:100@1.1.1.1>; tag=6138643231313432313363340131363133303834393731',
  'Accept: application/sdp',
  'User-agent: friendly-scanner',
  'To: "sipvicious"<sip:100@1.1.1.1>',
  'Contact: sip:100@192.0.2.66:5060',
  'CSeq: 1 OPTIONS',
  'Call-ID: 820427349457837391461486',
  'Max-Forwards: 70',
]);

/** UTF-8 display name and Contact "*" unregister */
export const UNREGISTER = sipUtf8([
  'REGISTER sip:pbx.example.com SIP/2.0',
  'Via: SIP/2.0/UDP 192.168.1.50:5060;branch=z9hG4bK9a8b7c;rport',
  'From: "Jürgen Müller" <sip:3001@pbx.example.com>;tag=abc123',
  'To: "Jürgen Müller" <sip:3001@pbx.example.com>',
  'Call-ID: 9f8e7d6c@192.168.1.50',
  'CSeq: 5 REGISTER',
  'Contact: *',
  'Expires: 0',
  'Max-Forwards: 70',
  'Content-Length: 0',
]);

export const SAMPLES: readonly Sample[] = [
  { name: 'INVITE (Yealink, SDP)', bytes: INVITE_YEALINK, kind: 'request', method: 'INVITE', headerCount: 13, bodyLength: Buffer.byteLength(SDP) },
  { name: '200 OK to INVITE', bytes: OK_INVITE, kind: 'response', status: 200, headerCount: 10, bodyLength: Buffer.byteLength(SDP) },
  { name: 'REGISTER (Zoiper, TCP, digest)', bytes: REGISTER_ZOIPER, kind: 'request', method: 'REGISTER', headerCount: 14, bodyLength: 0 },
  { name: '401 with WWW-Authenticate', bytes: UNAUTHORIZED, kind: 'response', status: 401, headerCount: 7, bodyLength: 0 },
  { name: 'compact forms', bytes: COMPACT, kind: 'request', method: 'INVITE', headerCount: 11, bodyLength: Buffer.byteLength(SDP) },
  { name: 'RFC 4475 wsinv (folding)', bytes: WSINV, kind: 'request', method: 'INVITE', headerCount: 14, bodyLength: 150 },
  { name: 'RFC 4475 intmeth', bytes: INTMETH, kind: 'request', method: "!interesting-Method0123456789_*+`.%indeed'~", headerCount: 8, bodyLength: 0 },
  { name: 'RFC 4475 semiuri', bytes: SEMIURI, kind: 'request', method: 'OPTIONS', headerCount: 8, bodyLength: 0 },
  { name: 'RFC 4475 esc01', bytes: ESC01, kind: 'request', method: 'INVITE', headerCount: 9, bodyLength: Buffer.byteLength('v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\n') },
  { name: 'RFC 5118 IPv6', bytes: IPV6, kind: 'request', method: 'REGISTER', headerCount: 8, bodyLength: 0 },
  { name: 'multi-value Via/Route', bytes: MULTI, kind: 'request', method: 'BYE', headerCount: 10, bodyLength: 0 },
  { name: 'RFC 4475 noreason', bytes: NOREASON, kind: 'response', status: 100, headerCount: 6, bodyLength: 0 },
  { name: 'SIPVicious OPTIONS', bytes: SIPVICIOUS, kind: 'request', method: 'OPTIONS', headerCount: 10, bodyLength: 0 },
  { name: 'UTF-8 unregister', bytes: UNREGISTER, kind: 'request', method: 'REGISTER', headerCount: 9, bodyLength: 0 },
];
