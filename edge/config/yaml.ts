// Generic YAML loader for the main config and every rule file: parse, apply schema defaults,
// validate, and report each problem as `file:line:column: message` so an operator can jump to it.
// Never throws: a bad file is a value (STYLE.md principle 2), the caller keeps its old snapshot.
import * as fs from 'node:fs';
import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument } from 'yaml';
import type { Node as YamlNode, Document } from 'yaml';
import type { Static, TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { ValueErrorType } from '@sinclair/typebox/errors';
import type { ValueError } from '@sinclair/typebox/errors';

/** A path into the loaded value: object keys and array indices. */
export type ValuePath = ReadonlyArray<string | number>;

export type YamlLoadResult<T> =
  | {
      readonly ok: true;
      readonly value: T;
      /** `file:line:column` of the node at `path` (or of its nearest existing ancestor);
       *  lets semantic checks done after schema validation point at the offending node. */
      readonly at: (path: ValuePath) => string;
    }
  | {
      readonly ok: false;
      readonly errors: string[];
      /** when only the schema failed: the document without the parts the schema refused (array
       *  items and properties dropped, schema defaults filled in), valid against the schema, and
       *  `at` in terms of the original file. Lets a checker report the semantic errors of the
       *  rest in the same run; never to be used to run on. */
      readonly repaired?: { readonly value: T; readonly at: (path: ValuePath) => string };
    };

/** Config and rule files are written by operators, but a runaway file must not eat memory. */
export const MAX_YAML_BYTES = 4 * 1024 * 1024;
/** One bad indentation can cascade; past this many the rest is noise. */
const MAX_ERRORS = 50;

export function loadYamlFile<T extends TSchema>(file: string, schema: T): YamlLoadResult<Static<T>> {
  let text: string;
  try {
    const st = fs.statSync(file);
    if (!st.isFile()) return { ok: false, errors: [`${file}: not a regular file`] };
    if (st.size > MAX_YAML_BYTES) return { ok: false, errors: [`${file}: file is larger than ${MAX_YAML_BYTES} bytes`] };
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    return { ok: false, errors: [`${file}: cannot read file (${code})`] };
  }
  return loadYamlText(text, file, schema);
}

export function loadYamlText<T extends TSchema>(text: string, fileName: string, schema: T): YamlLoadResult<Static<T>> {
  if (text.length > MAX_YAML_BYTES) return { ok: false, errors: [`${fileName}: file is larger than ${MAX_YAML_BYTES} bytes`] };
  const lc = new LineCounter();
  let doc: Document.Parsed;
  try {
    // YAML 1.2 core schema: "on"/"yes"/"no" stay strings (no Norway problem); duplicate keys are errors.
    doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true, strict: true });
  } catch (e) {
    return { ok: false, errors: [`${fileName}:1:1: ${(e as Error).message}`] };
  }
  const posAt = (offset: number): string => {
    const p = lc.linePos(Math.max(0, Math.min(offset, text.length)));
    return `${fileName}:${p.line}:${p.col}`;
  };

  if (doc.errors.length > 0) {
    return {
      ok: false,
      errors: doc.errors.slice(0, MAX_ERRORS).map((e) => `${posAt(e.pos[0])}: ${firstLine(e.message)}`),
    };
  }

  let raw: unknown;
  try {
    // maxAliasCount bounds "billion laughs" alias expansion.
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    return { ok: false, errors: [`${posAt(0)}: ${firstLine((e as Error).message)}`] };
  }
  // An empty file (or one with only comments) means "all defaults".
  if ((raw === null || raw === undefined) && (schema as { type?: unknown }).type === 'object') raw = {};

  const at = (path: ValuePath): string => posAt(locate(doc, path, false));
  // Value.Default fills absent fields (nested objects carry `default: {}` so their fields fill too).
  const value = Value.Default(schema, Value.Clone(raw));

  const found: { offset: number; text: string }[] = [];
  const seen = new Set<string>();
  for (const err of Value.Errors(schema, value)) {
    if (found.length >= MAX_ERRORS) break;
    // Several errors can be raised for one value (a union and its members); the first says it best.
    if (seen.has(err.path)) continue;
    seen.add(err.path);
    const path = splitPointer(err.path);
    const isKeyError = err.type === ValueErrorType.ObjectAdditionalProperties;
    const offset = locate(doc, path, isKeyError);
    found.push({ offset, text: `${posAt(offset)}: ${describe(err, path)}` });
  }
  // File order reads best in an editor; the sort is stable, so schema order breaks ties.
  if (found.length > 0) {
    const errors = found.sort((a, b) => a.offset - b.offset).map((e) => e.text);
    const r = repairValue(schema, value);
    if (r === undefined) return { ok: false, errors };
    return { ok: false, errors, repaired: { value: r.value as Static<T>, at: (path) => at(r.original(path)) } };
  }
  return { ok: true, value: value as Static<T>, at };
}

/** Rounds of removal before giving up: each round removes what the previous one exposed
 *  (a required field removed makes its object invalid, which is removed next). */
const MAX_REPAIR_ROUNDS = 6;

/**
 * `value` minus what `schema` refuses: a list entry with any error is removed whole, other failing
 * or unknown properties are deleted (a default fills in where the schema has one), repeated until the value
 * validates; undefined when the document itself would have to go. `original` maps a path in the
 * repaired value back to the file (array indices shift when items are removed).
 */
function repairValue(schema: TSchema, start: unknown): { value: unknown; original: (path: ValuePath) => ValuePath } | undefined {
  // per array (keyed by its path in the file), the file index of each item still present
  const kept = new Map<string, number[]>();
  const original = (path: ValuePath): ValuePath => {
    const out: Array<string | number> = [];
    for (const seg of path) {
      const idx = typeof seg === 'number' ? seg : /^\d+$/.test(seg) ? Number(seg) : undefined;
      const map = idx !== undefined ? kept.get(JSON.stringify(out)) : undefined;
      out.push(idx !== undefined ? (map?.[idx] ?? idx) : seg);
    }
    return out;
  };
  let value = start;
  for (let round = 0; round < MAX_REPAIR_ROUNDS; round++) {
    const errs = [...Value.Errors(schema, value)];
    if (errs.length === 0) return { value, original };
    const targets = new Map<string, string[]>();
    for (const e of errs) {
      let path = splitPointer(e.path);
      // inside a list (a rule, a signature, a domain entry): the whole entry goes, so that what
      // is left of it does not raise errors that only echo this one
      const item = innermostItem(value, path);
      if (item > 0) path = path.slice(0, item);
      // a required property that is absent: its object has to go
      else if (e.type === ValueErrorType.ObjectRequiredProperty || getAt(value, path) === undefined) path = path.slice(0, -1);
      if (path.length === 0) return undefined;
      targets.set(JSON.stringify(path), path);
    }
    // deepest first, and for items of one array from the highest index down, so that removing
    // one does not move the next
    const paths = [...targets.values()].sort((a, b) => b.length - a.length || compareLast(b, a));
    for (const path of paths) {
      const parent = getAt(value, path.slice(0, -1));
      const last = path[path.length - 1]!;
      if (Array.isArray(parent)) {
        const i = Number(last);
        if (!Number.isInteger(i) || i < 0 || i >= parent.length) continue;
        const key = JSON.stringify(original(path.slice(0, -1)));
        const map = kept.get(key) ?? parent.map((_, k) => k);
        map.splice(i, 1);
        kept.set(key, map);
        parent.splice(i, 1);
      } else if (parent !== null && typeof parent === 'object') {
        delete (parent as Record<string, unknown>)[last];
      }
    }
    value = Value.Default(schema, value);
  }
  return undefined;
}

/** length of the prefix of `path` that ends at the innermost array item on it; 0 when none */
function innermostItem(root: unknown, path: readonly string[]): number {
  let node = root;
  let found = 0;
  for (let i = 0; i < path.length; i++) {
    if (node === null || typeof node !== 'object') break;
    if (Array.isArray(node) && /^\d+$/.test(path[i]!) && Number(path[i]) < node.length) found = i + 1;
    node = (node as Record<string, unknown>)[path[i]!];
  }
  return found;
}

function getAt(root: unknown, path: readonly string[]): unknown {
  let node = root;
  for (const seg of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string, unknown>)[seg];
  }
  return node;
}

function compareLast(a: readonly string[], b: readonly string[]): number {
  const x = Number(a[a.length - 1]);
  const y = Number(b[b.length - 1]);
  return Number.isInteger(x) && Number.isInteger(y) ? x - y : 0;
}

/** JSON pointer ("/limits/maxHeaders", "/listen/0") into segments, RFC 6901 unescaped. */
function splitPointer(pointer: string): string[] {
  if (pointer === '') return [];
  return pointer.slice(1).split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function dotted(path: ValuePath): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number' || /^\d+$/.test(seg)) out += `[${seg}]`;
    else out += out === '' ? seg : `.${seg}`;
  }
  return out;
}

function describe(err: ValueError, path: string[]): string {
  const custom = (err.schema as { errorMessage?: unknown }).errorMessage;
  if (err.type === ValueErrorType.ObjectAdditionalProperties) {
    const key = path[path.length - 1] ?? '';
    const known = Object.keys((err.schema as { properties?: Record<string, unknown> }).properties ?? {});
    const guess = suggest(key, known);
    const where = path.length > 1 ? ` in ${dotted(path.slice(0, -1))}` : '';
    return `unknown key "${key}"${where}${guess ? ` (did you mean "${guess}"?)` : ''}`;
  }
  const name = path.length > 0 ? dotted(path) : '(document)';
  if (err.type === ValueErrorType.ObjectRequiredProperty) return `${name}: required`;
  const msg = typeof custom === 'string' ? custom : lowerFirst(err.message);
  return `${name}: ${msg}${showValue(err.value)}`;
}

function showValue(v: unknown): string {
  if (v === undefined || (typeof v === 'object' && v !== null)) return '';
  const s = JSON.stringify(v);
  return s.length <= 60 ? ` (got ${s})` : ` (got ${s.slice(0, 57)}...)`;
}

function lowerFirst(s: string): string {
  return s.length > 0 ? s[0].toLowerCase() + s.slice(1) : s;
}

function firstLine(s: string): string {
  const i = s.indexOf('\n');
  return (i < 0 ? s : s.slice(0, i)).replace(/ at line \d+, column \d+:?$/, '').trim();
}

/**
 * Offset of the YAML node at `path`, or of the deepest ancestor that exists (a missing field
 * was filled by a default, or is required and absent). With `keyNode`, the last segment names
 * a map key and the key itself is the offending node (unknown keys).
 */
function locate(doc: Document.Parsed, path: ValuePath, keyNode: boolean): number {
  let node: unknown = doc.contents;
  let best = rangeStart(node) ?? 0;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i];
    const last = i === path.length - 1;
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) return best;
      if (last && keyNode) return rangeStart(pair.key) ?? best;
      node = pair.value;
      // `key:` with no value has a null value node (or none at all): point at the key.
      best = rangeStart(node) ?? rangeStart(pair.key) ?? best;
    } else if (isSeq(node)) {
      const idx = typeof seg === 'number' ? seg : Number(seg);
      const item = Number.isInteger(idx) ? node.items[idx] : undefined;
      if (item === undefined) return best;
      node = item;
      best = rangeStart(node) ?? best;
    } else {
      return best;
    }
  }
  return best;
}

function rangeStart(node: unknown): number | undefined {
  const r = (node as YamlNode | null | undefined)?.range;
  return r ? r[0] : undefined;
}

/** Closest known key within edit distance 2 (or a case-insensitive match), for typo hints. */
export function suggest(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  const k = key.toLowerCase();
  for (const cand of known) {
    const c = cand.toLowerCase();
    if (c === k) return cand;
    const d = editDistance(k, c, 3);
    if (d < bestD) {
      bestD = d;
      best = cand;
    }
  }
  const limit = key.length <= 3 ? 1 : key.length <= 5 ? 2 : 3;
  return bestD <= limit ? best : undefined;
}

/** Damerau-Levenshtein (optimal string alignment), capped: keys are short and operator-written. */
function editDistance(a: string, b: string, cap: number): number {
  if (Math.abs(a.length - b.length) > cap) return cap + 1;
  if (a.length > 64 || b.length > 64) return cap + 1;
  const d: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    d.push(new Array<number>(b.length + 1).fill(0));
    d[i][0] = i;
  }
  for (let j = 0; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2][j - 2] + 1);
      d[i][j] = v;
    }
  }
  return d[a.length][b.length];
}
