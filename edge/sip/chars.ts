// Byte-class tables for the SIP grammar (RFC 3261 25.1). Built once at load time so the hot
// path is a table lookup per byte instead of a regex (no backtracking, no per-message RegExp).

function table(chars: string, alnum: boolean): Uint8Array {
  const t = new Uint8Array(256);
  if (alnum) {
    for (let c = 0x30; c <= 0x39; c++) t[c] = 1;
    for (let c = 0x41; c <= 0x5a; c++) t[c] = 1;
    for (let c = 0x61; c <= 0x7a; c++) t[c] = 1;
  }
  for (let i = 0; i < chars.length; i++) t[chars.charCodeAt(i)] = 1;
  return t;
}

/** RFC 3261 25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~") */
export const TOKEN = table("-.!%*_+`'~", true);
/** RFC 3261 25.1: unreserved = alphanum / mark */
const MARK = "-_.!~*'()";
/** RFC 3261 25.1: user = 1*( unreserved / escaped / user-unreserved ); user-unreserved = & = + $ , ; ? / */
export const USER = table(MARK + '&=+$,;?/', true);
/** RFC 3261 25.1: password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," ) */
export const PASSWORD = table(MARK + '&=+$,', true);
/** RFC 3261 25.1: paramchar = param-unreserved / unreserved / escaped; param-unreserved = [ ] / : & + $ */
export const PARAMCHAR = table(MARK + '[]/:&+$', true);
/** RFC 3261 25.1: hvalue/hname chars: hnv-unreserved / unreserved / escaped; hnv-unreserved = [ ] / ? : + $ */
export const HNVCHAR = table(MARK + '[]/?:+$', true);
/** RFC 3261 25.1: word = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" /
 *  "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" / "?" / "{" / "}" ) (Call-ID) */
export const WORD = table("-.!%*_+`'~()<>:\\\"/[]?{}", true);
/** RFC 3261 25.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) (first char checked apart) */
export const SCHEME = table('+-.', true);
/** RFC 3966 3: tel number characters (global or local number digits, visual separators, and the
 *  characters that may appear in par before a ';'); the tel: URI is only recognised, not validated deeply */
export const TELCHAR = table('+-.()*#', true);

export const HEX = new Int8Array(256).fill(-1);
for (let c = 0x30; c <= 0x39; c++) HEX[c] = c - 0x30;
for (let c = 0x41; c <= 0x46; c++) HEX[c] = c - 0x41 + 10;
for (let c = 0x61; c <= 0x66; c++) HEX[c] = c - 0x61 + 10;

export const isDigit = (c: number): boolean => c >= 0x30 && c <= 0x39;
export const isAlpha = (c: number): boolean => (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
export const isAlnum = (c: number): boolean => isDigit(c) || isAlpha(c);

/** true when s[from..to) contains only bytes of `t` or valid %XX escapes (RFC 3261 25.1 escaped) */
export function validChars(s: string, from: number, to: number, t: Uint8Array): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x25) {
      // RFC 3261 25.1: escaped = "%" HEXDIG HEXDIG
      if (i + 2 >= to) return false;
      const h1 = s.charCodeAt(i + 1), h2 = s.charCodeAt(i + 2);
      if (h1 > 0xff || h2 > 0xff || HEX[h1] < 0 || HEX[h2] < 0) return false;
      i += 2;
      continue;
    }
    if (c > 0xff || t[c] === 0) return false;
  }
  return true;
}

/** true when s[from..to) is a non-empty token */
export function isToken(s: string, from: number, to: number): boolean {
  if (to <= from) return false;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff || TOKEN[c] === 0) return false;
  }
  return true;
}
