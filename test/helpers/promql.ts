// The series selectors of a PromQL expression (metric name + label matchers), for tests that check
// the shipped dashboard and alert rules against what the edge really exports. Not a full PromQL
// parser; it knows enough of the lexical grammar
// (https://prometheus.io/docs/prometheus/latest/querying/basics/) to tell a metric name from:
// - a function or aggregation (an identifier followed by "("),
// - label names (inside {...}, and in the lists after by / without / on / ignoring /
//   group_left / group_right),
// - keywords (and, or, unless, bool, offset ...), numbers, durations ([5m], offset 1h),
// - string literals ("...", '...', `...`), comments (#) and Grafana variables ($instance).
// Histogram series are named as queried (x_bucket, x_sum, x_count).

export interface Matcher {
  readonly label: string;
  readonly op: '=' | '!=' | '=~' | '!~';
  readonly value: string;
}

export interface Selector {
  readonly name: string;
  readonly matchers: readonly Matcher[];
}

const LABEL_LIST_KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);
const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'atan2', 'inf', 'nan', 'start', 'end', ...LABEL_LIST_KEYWORDS]);
const IDENT_START = /[a-zA-Z_:]/;
const IDENT = /[a-zA-Z0-9_:]/;

class Lexer {
  i = 0;
  constructor(readonly s: string) {}

  get done(): boolean { return this.i >= this.s.length; }
  peek(): string { return this.s[this.i] ?? ''; }

  skipSpace(): void {
    for (;;) {
      while (!this.done && /\s/.test(this.peek())) this.i++;
      if (this.peek() !== '#') return;
      while (!this.done && this.peek() !== '\n') this.i++;
    }
  }

  /** a string literal starting at i; returns its (unescaped) value */
  string(): string {
    const q = this.s[this.i++]!;
    let v = '';
    while (!this.done) {
      const c = this.s[this.i++]!;
      if (c === q) return v;
      if (c === '\\' && q !== '`') {
        const e = this.s[this.i++] ?? '';
        v += e === 'n' ? '\n' : e === 't' ? '\t' : e;
      } else {
        v += c;
      }
    }
    throw new Error(`unterminated string in: ${this.s}`);
  }

  ident(): string {
    const start = this.i;
    while (!this.done && IDENT.test(this.peek())) this.i++;
    return this.s.slice(start, this.i);
  }

  /** skip a balanced (...) or [...] group starting at i */
  group(): void {
    const open = this.s[this.i]!;
    const close = open === '(' ? ')' : ']';
    let depth = 0;
    while (!this.done) {
      const c = this.peek();
      if (c === '"' || c === "'" || c === '`') { this.string(); continue; }
      this.i++;
      if (c === open) depth++;
      else if (c === close && --depth === 0) return;
    }
    throw new Error(`unbalanced ${open} in: ${this.s}`);
  }

  /** {label op "value", ...} starting at i */
  matchers(): Matcher[] {
    const out: Matcher[] = [];
    this.i++; // {
    for (;;) {
      this.skipSpace();
      if (this.peek() === '}') { this.i++; return out; }
      if (this.peek() === ',') { this.i++; continue; }
      const label = this.peek() === '"' ? this.string() : this.ident();
      if (label === '') throw new Error(`bad label matcher at ${this.i} in: ${this.s}`);
      this.skipSpace();
      const op = (['=~', '!~', '!=', '='] as const).find((o) => this.s.startsWith(o, this.i));
      if (op === undefined) throw new Error(`bad matcher operator at ${this.i} in: ${this.s}`);
      this.i += op.length;
      this.skipSpace();
      const value = this.string();
      out.push({ label, op, value });
    }
  }
}

export function selectors(expr: string): Selector[] {
  const lx = new Lexer(expr);
  const out: Selector[] = [];
  while (!lx.done) {
    lx.skipSpace();
    if (lx.done) break;
    const c = lx.peek();
    if (c === '"' || c === "'" || c === '`') { lx.string(); continue; }
    if (c === '[') { lx.group(); continue; } // range or subquery: durations only
    if (c === '$') { lx.i++; if (lx.peek() === '{') lx.group(); else lx.ident(); continue; } // Grafana variable
    if (c === '{') {
      // a selector without a name outside the braces: {__name__="x", ...}
      const ms = lx.matchers();
      const n = ms.find((m) => m.label === '__name__' && m.op === '=');
      if (n) out.push({ name: n.value, matchers: ms.filter((m) => m !== n) });
      continue;
    }
    if (/[0-9.]/.test(c)) {
      // number (1, 0.99, 1e-3, 0x1f, Inf handled as ident) or a duration after offset/@
      const m = /^(?:0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?(?:\d+(?:ms|[smhdwy]))*)/.exec(expr.slice(lx.i));
      lx.i += m && m[0].length > 0 ? m[0].length : 1;
      continue;
    }
    if (IDENT_START.test(c)) {
      const id = lx.ident();
      lx.skipSpace();
      if (LABEL_LIST_KEYWORDS.has(id)) {
        if (lx.peek() === '(') lx.group();
        continue;
      }
      if (lx.peek() === '(') continue; // function or aggregation; its arguments are read next
      // an aggregation with its grouping first: sum by (le) (...), count without (x) (...)
      if (/^(?:by|without)\s*\(/.test(expr.slice(lx.i))) continue;
      if (KEYWORDS.has(id.toLowerCase())) continue;
      out.push({ name: id, matchers: lx.peek() === '{' ? lx.matchers() : [] });
      continue;
    }
    lx.i++; // operators, commas, parentheses
  }
  return out;
}

/** Does a label set satisfy the matchers (PromQL: regexes are fully anchored)? Labels absent
 *  from the set read as "" (so `x!=""` needs the label, `x=""` needs it absent). */
export function matches(labels: Readonly<Record<string, string>>, ms: readonly Matcher[]): boolean {
  return ms.every((m) => {
    const v = labels[m.label] ?? '';
    switch (m.op) {
      case '=': return v === m.value;
      case '!=': return v !== m.value;
      case '=~': return new RegExp(`^(?:${m.value})$`).test(v);
      case '!~': return !new RegExp(`^(?:${m.value})$`).test(v);
    }
  });
}
