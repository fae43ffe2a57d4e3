// A small parser for the Prometheus text exposition format (version 0.0.4), for tests.
// Strict enough to catch malformed output: an unparseable sample line throws.
// https://prometheus.io/docs/instrumenting/exposition_formats/

export interface PromSample {
  /** full sample name, e.g. "sipedge_processing_seconds_bucket" */
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface PromExposition {
  readonly samples: readonly PromSample[];
  /** metric family name -> HELP text */
  readonly help: ReadonlyMap<string, string>;
  /** metric family name -> counter | gauge | histogram | summary | untyped */
  readonly type: ReadonlyMap<string, string>;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*/;

function parseValue(s: string): number {
  const t = s.toLowerCase();
  if (t === 'nan') return NaN;
  if (t === '+inf' || t === 'inf') return Infinity;
  if (t === '-inf') return -Infinity;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) throw new Error(`bad sample value "${s}"`);
  return Number(s);
}

function parseSampleLine(line: string): PromSample {
  const nm = NAME.exec(line);
  if (!nm) throw new Error(`bad sample line: ${line}`);
  const name = nm[0];
  let i = name.length;
  const labels: Record<string, string> = {};
  if (line[i] === '{') {
    i++;
    for (;;) {
      if (line[i] === '}') { i++; break; }
      const ln = LABEL_NAME.exec(line.slice(i));
      if (!ln) throw new Error(`bad label name at ${i}: ${line}`);
      i += ln[0].length;
      if (line[i] !== '=' || line[i + 1] !== '"') throw new Error(`expected =" at ${i}: ${line}`);
      i += 2;
      let v = '';
      for (;;) {
        const c = line[i];
        if (c === undefined) throw new Error(`unterminated label value: ${line}`);
        i++;
        if (c === '"') break;
        if (c === '\\') {
          const e = line[i++];
          if (e === 'n') v += '\n';
          else if (e === '\\' || e === '"') v += e;
          else throw new Error(`bad escape \\${e}: ${line}`);
        } else {
          v += c;
        }
      }
      if (Object.prototype.hasOwnProperty.call(labels, ln[0])) throw new Error(`duplicate label ${ln[0]}: ${line}`);
      labels[ln[0]] = v;
      if (line[i] === ',') i++;
      else if (line[i] !== '}') throw new Error(`expected , or } at ${i}: ${line}`);
    }
  }
  const rest = line.slice(i).trim().split(/\s+/);
  if (rest.length < 1 || rest.length > 2 || rest[0] === '') throw new Error(`bad value/timestamp: ${line}`);
  return { name, labels, value: parseValue(rest[0]) };
}

export function parseExposition(text: string): PromExposition {
  const samples: PromSample[] = [];
  const help = new Map<string, string>();
  const type = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    if (line.startsWith('#')) {
      const m = /^#\s+(HELP|TYPE)\s+([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(.*)$/.exec(line);
      if (!m) continue; // other comments are allowed
      if (m[1] === 'HELP') help.set(m[2], m[3]);
      else type.set(m[2], m[3]);
      continue;
    }
    samples.push(parseSampleLine(line));
  }
  return { samples, help, type };
}

/** The samples named `name` whose labels include every pair in `labels`. */
export function samples(text: string | PromExposition, name: string, labels: Readonly<Record<string, string>> = {}): PromSample[] {
  const exp = typeof text === 'string' ? parseExposition(text) : text;
  return exp.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

/**
 * Value of the one sample named `name` whose labels are exactly `labels` (order-free);
 * undefined when there is none. Histogram series: pass the `le` label too.
 */
export function sample(text: string | PromExposition, name: string, labels: Readonly<Record<string, string>> = {}): number | undefined {
  const want = Object.keys(labels).length;
  const hit = samples(text, name, labels).filter((s) => Object.keys(s.labels).length === want);
  if (hit.length > 1) throw new Error(`${hit.length} samples match ${name}${JSON.stringify(labels)}`);
  return hit.length === 1 ? hit[0].value : undefined;
}

/** Sum of every sample named `name` whose labels include `labels` (like PromQL sum()). */
export function sumOf(text: string | PromExposition, name: string, labels: Readonly<Record<string, string>> = {}): number {
  return samples(text, name, labels).reduce((n, s) => n + s.value, 0);
}

/** Family name a sample belongs to (histogram/summary suffixes stripped when the family is typed). */
export function familyOf(exp: PromExposition, sampleName: string): string {
  if (exp.type.has(sampleName)) return sampleName;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (sampleName.endsWith(suffix)) {
      const base = sampleName.slice(0, -suffix.length);
      if (exp.type.has(base)) return base;
    }
  }
  return sampleName;
}
