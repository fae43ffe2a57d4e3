// Rule loader: reads the rule files of one directory, validates each with its schema (errors as
// `rules/scanner.yaml:14:7: message`), compiles them once into an immutable RulesSnapshot.
//
//   stages.yaml   stage order, modes, what trusted sources skip     (schema: edge/policy/schema.ts)
//   scanner.yaml  scanner signatures                                (edge/policy/scanner/compile.ts)
//   access.yaml   allow / deny / trusted CIDR lists (+ list files)  (edge/policy/access/compile.ts)
//   geoip.yaml    country / ASN policy                              (edge/policy/geo/compile.ts)
//   limits.yaml   rate limits, suspicion budget, bans, promotion    (edge/policy/limits/compile.ts)
//   auth-clients.yaml  which digest challenges which client gets    (edge/auth/clients.ts)
//   cac.yaml      call admission limits, destination classes, groups (edge/policy/cac/rules.ts)
//   fraud.yaml    fraud signal thresholds per destination class     (edge/policy/cac/rules.ts)
//
// Every file is optional: a missing stages.yaml means the shipped order, a missing scanner /
// access / geoip file means that stage has nothing to say (no signature, no list, no policy); a
// missing limits.yaml means the documented default limits (never "no limits"); a missing
// auth-clients.yaml means every client is offered the domain's auth.algorithms as listed.
// Synchronous and total: a bad rule set is a value ({ ok: false, errors }) and never throws, so a
// reload can keep the old snapshot (STYLE.md principle 2). All files of a load are read once;
// the version hash is computed over exactly the bytes that were validated.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { TSchema } from '@sinclair/typebox';
import { loadYamlText, MAX_YAML_BYTES } from '../config/yaml';
import type { ValuePath } from '../config/yaml';
import type { SipMessage } from '../sip/types';
import { checkStages, DEFAULT_STAGES, DEFAULT_TRUSTED_SKIP, StagesFileSchema, type KnownStage } from './schema';
import type { LoadRulesResult, RulesSnapshot } from './snapshot';
import type { CompiledAccess } from './access/compile';
import type { CompiledAuthClients } from '../auth/clients';
import type { CompiledGeo, GeoPolicy } from './geo/compile';
import type { CompiledLimits } from './limits/compile';
import type { CompiledScanner } from './scanner/compile';
import { CacRulesSchema, FraudRulesSchema, checkCacRules, checkFraudRules, type CacRules, type FraudRules } from './cac/rules';

export const RULE_FILES = {
  stages: 'stages.yaml',
  scanner: 'scanner.yaml',
  access: 'access.yaml',
  geoip: 'geoip.yaml',
  limits: 'limits.yaml',
  authClients: 'auth-clients.yaml',
  cac: 'cac.yaml',
  fraud: 'fraud.yaml',
} as const;

/** `at(path)` of a validated document: `file:line:column` of the node at path. */
export type AtFn = (path: ValuePath) => string;

// The compile functions belong to the stage owners; the loader only needs their shape. `doc` is
// typed `any` here because each compile function takes its own schema's Static<> type, which
// loadYamlText has validated against that very schema just before the call.
/* eslint-disable @typescript-eslint/no-explicit-any */
export interface RuleCompilers {
  readonly scanner: {
    readonly schema: TSchema;
    compile(doc: any, at: AtFn): { scanner: CompiledScanner; errors: string[]; ruleNames?: readonly string[] };
  };
  readonly access: {
    readonly schema: TSchema;
    /** reads the list files access.yaml names, relative to baseDir; `files` = the paths it read */
    compile(doc: any, at: AtFn, baseDir: string): { access: CompiledAccess; errors: string[]; ruleNames?: readonly string[]; files?: readonly string[] };
  };
  readonly geoip: {
    readonly schema: TSchema;
    compile(doc: any, at: AtFn): { geo: CompiledGeo; errors: string[]; ruleNames?: readonly string[] };
  };
  readonly limits: {
    readonly schema: TSchema;
    /** a missing limits.yaml is compiled as an empty document: every schema default */
    compile(doc: any, at: AtFn): { limits: CompiledLimits; errors: string[]; ruleNames?: readonly string[] };
  };
  readonly authClients: {
    readonly schema: TSchema;
    compile(doc: any, at: AtFn): { authClients: CompiledAuthClients; errors: string[]; ruleNames?: readonly string[] };
  };
}
/* eslint-enable @typescript-eslint/no-explicit-any */

// The stage owners' modules, required on first use: a rule set without a scanner.yaml never
// loads the scanner compiler, and a test that stubs one compiler does not load the real one.
// The `typeof import()` annotations keep the signatures checked against RuleCompilers.
/* eslint-disable @typescript-eslint/no-require-imports */
export const DEFAULT_COMPILERS: { readonly [K in keyof RuleCompilers]: () => RuleCompilers[K] } = {
  scanner: () => {
    const m = require('./scanner/compile') as typeof import('./scanner/compile');
    return { schema: m.ScannerFileSchema, compile: m.compileScanner };
  },
  access: () => {
    const m = require('./access/compile') as typeof import('./access/compile');
    return { schema: m.AccessFileSchema, compile: m.compileAccess };
  },
  geoip: () => {
    const m = require('./geo/compile') as typeof import('./geo/compile');
    return { schema: m.GeoFileSchema, compile: m.compileGeo };
  },
  limits: () => {
    const m = require('./limits/compile') as typeof import('./limits/compile');
    return { schema: m.LimitsFileSchema, compile: m.compileLimits };
  },
  authClients: () => {
    const m = require('../auth/clients') as typeof import('../auth/clients');
    return { schema: m.AuthClientsFileSchema, compile: m.compileAuthClients };
  },
};
/* eslint-enable @typescript-eslint/no-require-imports */

export interface LoadRulesOptions {
  /** replace one or more compilers (tests; stages not written yet) */
  readonly compilers?: Partial<RuleCompilers>;
  /** how file names appear in errors, e.g. "rules" gives "rules/scanner.yaml:14:7: ...".
   *  Default: the path relative to the working directory when inside it, else absolute. */
  readonly displayDir?: string;
}

// ---- empty defaults: what a missing file means

/** No signature: nothing matches. */
export const EMPTY_SCANNER: CompiledScanner = Object.freeze({
  signatures: Object.freeze([]) as readonly never[],
  match: (_msg: SipMessage) => null,
});

/** No list: every source is unclassified, nobody is denied by default. */
export const EMPTY_ACCESS: CompiledAccess = Object.freeze({
  classify: (_address: string) => null,
  allowListActive: false,
  denyAction: Object.freeze({ kind: 'drop' as const }),
  counts: Object.freeze({ allow: 0, deny: 0, trusted: 0 }),
});

const OFF_POLICY: GeoPolicy = Object.freeze({
  countryMode: 'off' as const,
  countries: new Set<string>(),
  unknownCountry: 'allow' as const,
  denyAsns: new Set<number>(),
  action: Object.freeze({ kind: 'drop' as const }),
});

/** No country or ASN policy anywhere. */
export const EMPTY_GEO: CompiledGeo = Object.freeze({
  policy: OFF_POLICY,
  listenerOverrides: new Map<string, GeoPolicy>(),
  domainOverrides: new Map<string, GeoPolicy>(),
  countryDb: null,
  asnDb: null,
});

/** <package root>/rules: the shipped rule files (works from the sources and from dist-*). */
export function defaultRulesDir(): string {
  // compiled: <root>/dist*/edge/policy/load.js; from the sources (ts-node): <root>/edge/policy/load.ts
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return path.join(dir, 'rules');
    dir = path.dirname(dir);
  }
  return path.resolve(__dirname, '../../../rules');
}

// ---- reading

type ReadResult = { kind: 'ok'; text: string; bytes: Buffer } | { kind: 'missing' } | { kind: 'error'; error: string };

/** List files may be big public blocklists (the access compiler's own cap is the same). */
export const MAX_LIST_FILE_BYTES = 64 * 1024 * 1024;

function readRuleFile(abs: string, display: string, max = MAX_YAML_BYTES): ReadResult {
  try {
    const st = fs.statSync(abs);
    if (!st.isFile()) return { kind: 'error', error: `${display}: not a regular file` };
    if (st.size > max) return { kind: 'error', error: `${display}: file is larger than ${max} bytes` };
    const bytes = fs.readFileSync(abs);
    // the size may have changed between stat and read (an editor writing): check what was read
    if (bytes.length > max) return { kind: 'error', error: `${display}: file is larger than ${max} bytes` };
    return { kind: 'ok', text: bytes.toString('utf8'), bytes };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    if (code === 'ENOENT') return { kind: 'missing' };
    return { kind: 'error', error: `${display}: cannot read file (${code})` };
  }
}

/** Fallback when the access compiler does not say which list files it read: every file under
 *  <dir>/lists (bounded), except documentation. */
function listFilesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, depth: number): void => {
    if (depth > 4 || out.length >= 1000) return;
    let entries: fs.Dirent[];
    try { entries = fs.readdirSync(d, { withFileTypes: true }); } catch { return; }
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p, depth + 1);
      else if (e.isFile() && !e.name.endsWith('.md') && out.length < 1000) out.push(p);
    }
  };
  walk(path.join(dir, 'lists'), 0);
  return out;
}

/** Hash key of a file: its path relative to the rules dir (posix separators) when inside it. */
function hashName(dir: string, abs: string): string {
  const rel = path.relative(dir, abs);
  return rel.startsWith('..') || path.isAbsolute(rel) ? abs : rel.split(path.sep).join('/');
}

/** First 12 hex characters of sha256 over every file's name and content, in name order.
 *  Length-prefixed so that no two different file sets hash the same input. */
export function rulesVersion(files: ReadonlyArray<{ readonly name: string; readonly bytes: Buffer }>): string {
  const h = createHash('sha256');
  for (const f of [...files].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    h.update(`${Buffer.byteLength(f.name)}:${f.name}\0${f.bytes.length}:`);
    h.update(f.bytes);
  }
  return h.digest('hex').slice(0, 12);
}

function displayFor(abs: string, dir: string, displayDir: string | undefined): string {
  if (displayDir !== undefined) return path.join(displayDir, path.relative(dir, abs)).split(path.sep).join('/');
  const rel = path.relative(process.cwd(), abs);
  return rel === '' || rel.startsWith('..') || path.isAbsolute(rel) ? abs : rel;
}

function errText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Loads, validates and compiles every rule file in `dir`. Never throws.
 * On success the snapshot is deep-frozen where it holds plain data; compiled matchers are the
 * stage owners' immutable objects.
 */
export function loadRules(dir: string, opts: LoadRulesOptions = {}): LoadRulesResult {
  try {
    return loadRulesOnce(dir, opts);
  } catch (e) {
    // a bug, not a property of the files: still a value, so a reload keeps the old snapshot
    return { ok: false, errors: [`${dir}: internal error while loading rules: ${errText(e)}`] };
  }
}

function loadRulesOnce(dir: string, opts: LoadRulesOptions): LoadRulesResult {
  const compiler = <K extends keyof RuleCompilers>(k: K): RuleCompilers[K] => opts.compilers?.[k] ?? DEFAULT_COMPILERS[k]();
  const absDir = path.resolve(dir);
  const errors: string[] = [];
  const hashed: Array<{ name: string; bytes: Buffer }> = [];
  const files: string[] = [];
  const display = (abs: string): string => displayFor(abs, absDir, opts.displayDir);

  try {
    const st = fs.statSync(absDir);
    if (!st.isDirectory()) return { ok: false, errors: [`${display(absDir)}: not a directory`] };
  } catch (e) {
    return { ok: false, errors: [`${display(absDir)}: cannot read rules directory (${(e as NodeJS.ErrnoException).code ?? 'EIO'})`] };
  }

  /** read + validate one YAML file; 'missing' when absent, 'error' when recorded in errors */
  const loadDoc = <C extends { readonly schema: TSchema }>(file: string, get: () => C): { value: unknown; at: AtFn; c: C } | 'missing' | 'error' => {
    const abs = path.join(absDir, file);
    const shown = display(abs);
    const r = readRuleFile(abs, shown);
    if (r.kind === 'missing') return 'missing';
    if (r.kind === 'error') { errors.push(r.error); return 'error'; }
    hashed.push({ name: hashName(absDir, abs), bytes: r.bytes });
    files.push(abs);
    let c: C;
    try {
      c = get();
    } catch (e) {
      errors.push(`${shown}: no compiler for this file in this build (${errText(e).split('\n')[0]})`);
      return 'error';
    }
    const y = loadYamlText(r.text, shown, c.schema);
    if (!y.ok) {
      errors.push(...y.errors);
      // the rest of the file is still compiled, for its errors only (a schema error must not
      // hide a bad regex in the same file); the errors above already make the load fail
      return y.repaired ? { value: y.repaired.value, at: y.repaired.at, c } : 'error';
    }
    return { value: y.value, at: y.at, c };
  };

  // 1. stages.yaml
  let stages = DEFAULT_STAGES;
  let trustedSkip: ReadonlySet<KnownStage> = new Set(DEFAULT_TRUSTED_SKIP);
  const sd = loadDoc(RULE_FILES.stages, () => ({ schema: StagesFileSchema }));
  if (typeof sd === 'object') {
    const c = checkStages(sd.value as Parameters<typeof checkStages>[0], sd.at);
    errors.push(...c.errors);
    stages = c.stages;
    trustedSkip = c.trustedSkip;
  }

  // 2. scanner.yaml
  let scanner = EMPTY_SCANNER;
  let scannerNames: readonly string[] = [];
  const scd = loadDoc(RULE_FILES.scanner, () => compiler('scanner'));
  if (typeof scd === 'object') {
    try {
      const r = scd.c.compile(scd.value, scd.at);
      errors.push(...r.errors);
      scanner = r.scanner;
      scannerNames = r.ruleNames ?? r.scanner.signatures.map((s) => s.name);
    } catch (e) {
      errors.push(`${scd.at([])}: internal error while compiling: ${errText(e)}`);
    }
  }

  // 3. access.yaml (+ the list files it names)
  let access = EMPTY_ACCESS;
  let accessNames: readonly string[] = [];
  const ad = loadDoc(RULE_FILES.access, () => compiler('access'));
  if (typeof ad === 'object') {
    try {
      const r = ad.c.compile(ad.value, ad.at, absDir);
      errors.push(...r.errors);
      access = r.access;
      accessNames = r.ruleNames ?? [];
      const lists = r.files ? r.files.map((f) => path.resolve(absDir, f)) : listFilesUnder(absDir);
      for (const abs of [...new Set(lists)]) {
        const lr = readRuleFile(abs, display(abs), MAX_LIST_FILE_BYTES);
        // a list file that cannot be read is the access compiler's error to report; hash what is there
        if (lr.kind !== 'ok') continue;
        hashed.push({ name: hashName(absDir, abs), bytes: lr.bytes });
        files.push(abs);
      }
    } catch (e) {
      errors.push(`${ad.at([])}: internal error while compiling: ${errText(e)}`);
    }
  }

  // 4. geoip.yaml
  let geoip = EMPTY_GEO;
  let geoNames: readonly string[] = [];
  const gd = loadDoc(RULE_FILES.geoip, () => compiler('geoip'));
  if (typeof gd === 'object') {
    try {
      const r = gd.c.compile(gd.value, gd.at);
      errors.push(...r.errors);
      geoip = r.geo;
      geoNames = r.ruleNames ?? [];
    } catch (e) {
      errors.push(`${gd.at([])}: internal error while compiling: ${errText(e)}`);
    }
  }

  // 5. limits.yaml (absent: the default limits, so a rules dir without it is still protected)
  let limits: CompiledLimits | null = null;
  let limitNames: readonly string[] = [];
  const limitsFile = path.join(absDir, RULE_FILES.limits);
  let ld = loadDoc(RULE_FILES.limits, () => compiler('limits'));
  if (ld === 'missing') {
    // an empty document is every default; validated by the same schema as a real file
    try {
      const c = compiler('limits');
      const y = loadYamlText('', display(limitsFile), c.schema);
      if (y.ok) ld = { value: y.value, at: y.at, c };
      else errors.push(...y.errors);
    } catch (e) {
      errors.push(`${display(limitsFile)}: no compiler for the default limits in this build (${errText(e).split('\n')[0]})`);
    }
  }
  if (typeof ld === 'object') {
    try {
      const r = ld.c.compile(ld.value, ld.at);
      errors.push(...r.errors);
      limits = r.limits;
      limitNames = r.ruleNames ?? [];
    } catch (e) {
      errors.push(`${ld.at([])}: internal error while compiling: ${errText(e)}`);
    }
  }

  // 6. auth-clients.yaml (absent: no profiles, the domain's algorithms as listed)
  let authClients: CompiledAuthClients | null = null;
  let clientNames: readonly string[] = [];
  const cd = loadDoc(RULE_FILES.authClients, () => compiler('authClients'));
  if (typeof cd === 'object') {
    try {
      const r = cd.c.compile(cd.value, cd.at);
      errors.push(...r.errors);
      authClients = r.authClients;
      clientNames = r.ruleNames ?? [];
    } catch (e) {
      errors.push(`${cd.at([])}: internal error while compiling: ${errText(e)}`);
    }
  }

  // 7. cac.yaml and fraud.yaml (absent: every schema default; the cac stage itself is off
  // unless stages.yaml lists it)
  const cacDoc = <T>(file: string, schema: TSchema, check: (v: T, at: AtFn) => string[]): T | null => {
    let d = loadDoc(file, () => ({ schema }));
    if (d === 'error') return null;
    if (d === 'missing') {
      const y = loadYamlText('', display(path.join(absDir, file)), schema);
      if (!y.ok) { errors.push(...y.errors); return null; }
      d = { value: y.value, at: y.at, c: { schema } };
    }
    errors.push(...check(d.value as T, d.at));
    return d.value as T;
  };
  const cacRules = cacDoc<CacRules>(RULE_FILES.cac, CacRulesSchema, checkCacRules);
  const fraudRules = cacDoc<FraudRules>(RULE_FILES.fraud, FraudRulesSchema, checkFraudRules);

  if (limits === null && errors.length === 0) errors.push(`${display(limitsFile)}: no limits compiled`);
  if (errors.length > 0 || limits === null || cacRules === null || fraudRules === null) return { ok: false, errors };

  const ruleNames = Object.freeze([...new Set([...scannerNames, ...accessNames, ...geoNames, ...limitNames, ...clientNames])]);
  const snapshot: RulesSnapshot = Object.freeze({
    version: rulesVersion(hashed),
    loadedAt: new Date().toISOString(),
    files: Object.freeze([...files]),
    stages,
    trustedSkip,
    scanner,
    access,
    geoip,
    limits,
    authClients,
    cac: cacRules,
    fraud: fraudRules,
    ruleNames,
  });
  return { ok: true, snapshot };
}
