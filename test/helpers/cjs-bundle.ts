// A browser bundle of an npm CommonJS package, for pages served to a real browser in tests
// (test/browser-wss.test.ts loads JsSIP this way: the npm package ships lib/ only, no dist
// bundle, and no bundler is installed). Static require('...') calls with string literals are
// followed from the entry: relative paths, package names resolved through node_modules with the
// package.json "browser" field (string form) before "main". Each module is wrapped in a
// function(module, exports, require) and the result is assigned to window[globalName].
import * as fs from 'node:fs';
import * as path from 'node:path';

function resolveFile(p: string): string | null {
  for (const c of [p, `${p}.js`, `${p}.json`, path.join(p, 'index.js')]) {
    if (fs.existsSync(c) && fs.statSync(c).isFile()) return c;
  }
  return null;
}

function resolvePackage(name: string, fromDir: string): string | null {
  let dir = fromDir;
  for (;;) {
    const pkgDir = path.join(dir, 'node_modules', name);
    const pj = path.join(pkgDir, 'package.json');
    if (fs.existsSync(pj)) {
      const pkg = JSON.parse(fs.readFileSync(pj, 'utf8')) as { browser?: unknown; main?: string };
      const entry = typeof pkg.browser === 'string' ? pkg.browser : pkg.main ?? 'index.js';
      return resolveFile(path.resolve(pkgDir, entry));
    }
    const up = path.dirname(dir);
    if (up === dir) return null;
    dir = up;
  }
}

/** JavaScript text defining window[globalName] = require(entry) */
export function bundleCommonJs(entry: string, globalName: string): string {
  const ids = new Map<string, number>();
  const mods: string[] = [];
  const visit = (file: string): number => {
    const have = ids.get(file);
    if (have !== undefined) return have;
    const id = mods.length;
    ids.set(file, id);
    mods.push('');
    const src = fs.readFileSync(file, 'utf8');
    if (file.endsWith('.json')) { mods[id] = `function (module) { module.exports = ${src}; }`; return id; }
    const map: Record<string, number> = {};
    for (const m of src.matchAll(/require\(\s*['"]([^'"]+)['"]\s*\)/g)) {
      const spec = m[1]!;
      const target = spec.startsWith('.') ? resolveFile(path.resolve(path.dirname(file), spec)) : resolvePackage(spec, path.dirname(file));
      if (target === null) throw new Error(`bundle: cannot resolve ${spec} from ${file}`);
      map[spec] = visit(target);
    }
    mods[id] = `[function (module, exports, require) {\n${src}\n}, ${JSON.stringify(map)}]`;
    return id;
  };
  const root = visit(path.resolve(entry));
  return `(function () {
var defs = [${mods.join(',\n')}];
var cache = {};
var process = { env: {} };
function load(id) {
  if (cache[id]) return cache[id].exports;
  var module = cache[id] = { exports: {} };
  var def = defs[id];
  if (typeof def === 'function') { def(module); return module.exports; }
  def[0].call(module.exports, module, module.exports, function (spec) {
    var t = def[1][spec];
    if (t === undefined) throw new Error('not bundled: ' + spec);
    return load(t);
  });
  return module.exports;
}
window[${JSON.stringify(globalName)}] = load(${root});
})();\n`;
}
