// A/B of two builds in one sitting: is this build cheaper per call than an earlier commit?
//
//   node dist/bench/ab.js --base f293b05 [--rounds 5] [--calls 20000]
//                         [--steps 2000,3000] [--duration 10] [--sipp-rounds 1] [--no-sipp] [--keep]
//
// The base commit is checked out into a scratch git worktree (os.tmpdir()/sipedge-ab-<sha>),
// given this checkout's node_modules and compiled with its own tsconfig. Then, alternating which
// build goes first in each round so that neither always runs on a warmer or cooler machine:
//   - proxy-core: each build's own dist/bench/proxy-core.js (the in-process cost of one call, the
//     sockets replaced by counters), `--rounds` times each; medians of cpuUsPerCall, and of the
//     parse-only floor measured by the same process (both builds parse with the same parser unless
//     the commit range changed it, so the floor shows how noisy the sitting was);
//   - sipp-load: this build's dist/bench/sipp-load.js with `--target edge` at each step rate,
//     pointed at each build's CLI through SIP_EDGE_CLI: CPU per successful call of the edge's
//     process tree (utime+stime from /proc), failed calls and retransmissions.
// Reports ratios head/base; a ratio of 0.85 is 15 % less CPU per call.
//
// Every loop is bounded: rounds x builds runs of a bounded benchmark each; sipp-load bounds each
// step itself (-timeout). The scratch worktree is removed at the end unless --keep.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const argv = process.argv.slice(2);
const opt = (name: string, def: string): string => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : def;
};
const has = (name: string): boolean => argv.includes(`--${name}`);

const ROOT = path.resolve(__dirname, '../..');
const BASE = opt('base', 'f293b05');
const ROUNDS = Math.max(1, Math.min(20, Number(opt('rounds', '5'))));
const CALLS = Math.max(1000, Math.min(200_000, Number(opt('calls', '20000'))));
const STEPS = opt('steps', '2000,3000').split(',').map(Number).filter((n) => n > 0 && n <= 10_000);
const DURATION = Math.max(2, Math.min(60, Number(opt('duration', '10'))));
const SIPP_ROUNDS = Math.max(1, Math.min(5, Number(opt('sipp-rounds', '1'))));

function run(cmd: string, args: string[], o: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): string {
  const r = spawnSync(cmd, args, { cwd: o.cwd ?? ROOT, env: o.env ?? process.env, encoding: 'utf8', timeout: o.timeoutMs ?? 600_000, maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}: ${(r.stderr || r.stdout).slice(-2000)}`);
  return r.stdout;
}

/** the base commit built in a scratch worktree; returns its root */
function buildBase(): { dir: string; sha: string } {
  const sha = run('git', ['rev-parse', '--verify', `${BASE}^{commit}`]).trim();
  const dir = path.join(os.tmpdir(), `sipedge-ab-${sha.slice(0, 10)}`);
  if (!fs.existsSync(path.join(dir, 'dist', 'edge', 'cli.js'))) {
    if (fs.existsSync(dir)) run('git', ['worktree', 'remove', '--force', dir]);
    run('git', ['worktree', 'add', '--detach', dir, sha]);
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
    run(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: dir });
  }
  return { dir, sha };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const fmt = (n: number | undefined, d = 1): string => (n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(d));

interface Build { readonly name: 'base' | 'head'; readonly root: string }

function proxyCore(b: Build): { cpu: number; parse: number } {
  const out = run(process.execPath, [path.join(b.root, 'dist', 'bench', 'proxy-core.js'), '--calls', String(CALLS)], { cwd: b.root });
  const line = out.trim().split('\n').reverse().find((l) => l.startsWith('{'));
  if (!line) throw new Error(`proxy-core (${b.name}) printed no result: ${out.slice(-500)}`);
  const j = JSON.parse(line) as { cpuUsPerCall: number; parseOnlyUsPerCall: number };
  return { cpu: j.cpuUsPerCall, parse: j.parseOnlyUsPerCall };
}

interface SippStep { successful: number; failed: number; retransmissions: number; cpuMsPerCall?: number; achievedCps: number }

function sippLoad(b: Build, rate: number): SippStep {
  const out = path.join(os.tmpdir(), `sipedge-ab-sipp-${process.pid}-${b.name}-${rate}.md`);
  run(process.execPath, [path.join(ROOT, 'dist', 'bench', 'sipp-load.js'), '--steps', String(rate), '--duration', String(DURATION), '--target', 'edge', '--out', out], {
    env: { ...process.env, SIP_EDGE_CLI: path.join(b.root, 'dist', 'edge', 'cli.js') },
    timeoutMs: (DURATION + 120) * 1000,
  });
  const j = JSON.parse(fs.readFileSync(out.replace(/\.md$/, '.json'), 'utf8')) as { results: (SippStep & { target: string; rate: number })[] };
  fs.rmSync(out, { force: true });
  fs.rmSync(out.replace(/\.md$/, '.json'), { force: true });
  const r = j.results.find((x) => x.target === 'edge' && x.rate === rate);
  if (!r) throw new Error(`sipp-load (${b.name}) at ${rate} cps gave no result`);
  return r;
}

function main(): void {
  const head: Build = { name: 'head', root: ROOT };
  const headSha = run('git', ['rev-parse', '--short=10', 'HEAD']).trim();
  const dirty = run('git', ['status', '--porcelain', '--untracked-files=no']).trim() !== '';
  const { dir, sha } = buildBase();
  const base: Build = { name: 'base', root: dir };
  const lines: string[] = [`# A/B: head ${headSha}${dirty ? ' (with uncommitted changes)' : ''} vs base ${sha.slice(0, 10)} (${new Date().toISOString()}, node ${process.version}, ${os.cpus().length} CPUs)`, ''];
  try {
    const pc: Record<Build['name'], { cpu: number[]; parse: number[] }> = { base: { cpu: [], parse: [] }, head: { cpu: [], parse: [] } };
    for (let r = 0; r < ROUNDS; r++) {
      for (const b of r % 2 === 0 ? [base, head] : [head, base]) {
        const x = proxyCore(b);
        pc[b.name].cpu.push(x.cpu);
        pc[b.name].parse.push(x.parse);
        console.log(`proxy-core round ${r + 1} ${b.name}: ${x.cpu} us/call (parse floor ${x.parse})`);
      }
    }
    const cb = median(pc.base.cpu), ch = median(pc.head.cpu);
    lines.push(`## proxy-core (${CALLS} calls per run, ${ROUNDS} runs per build, medians)`, '',
      '| build | CPU us per call | parse-only floor us | runs |', '|---|---:|---:|---|',
      `| base | ${fmt(cb)} | ${fmt(median(pc.base.parse))} | ${pc.base.cpu.join(', ')} |`,
      `| head | ${fmt(ch)} | ${fmt(median(pc.head.parse))} | ${pc.head.cpu.join(', ')} |`,
      '', `head/base CPU per call: **${fmt(ch / cb, 3)}** (${ch <= cb ? `${fmt((1 - ch / cb) * 100)} % less` : `${fmt((ch / cb - 1) * 100)} % more`})`, '');

    if (!has('no-sipp')) {
      lines.push(`## sipp-load through the edge (${DURATION} s per step, ${SIPP_ROUNDS} run(s) per build and rate)`, '',
        '| rate cps | build | ok | failed | retrans | CPU ms per call |', '|---:|---|---:|---:|---:|---:|');
      const ratios: string[] = [];
      for (const rate of STEPS) {
        const acc: Record<Build['name'], SippStep[]> = { base: [], head: [] };
        for (let r = 0; r < SIPP_ROUNDS; r++) {
          for (const b of r % 2 === 0 ? [base, head] : [head, base]) {
            const x = sippLoad(b, rate);
            acc[b.name].push(x);
            console.log(`sipp-load ${rate} cps ${b.name}: ok=${x.successful} failed=${x.failed} retrans=${x.retransmissions} cpu/call=${fmt(x.cpuMsPerCall, 3)} ms`);
          }
        }
        for (const name of ['base', 'head'] as const) {
          const xs = acc[name];
          lines.push(`| ${rate} | ${name} | ${xs.map((x) => x.successful).join(', ')} | ${xs.map((x) => x.failed).join(', ')} | ${xs.map((x) => x.retransmissions).join(', ')} | ${xs.map((x) => fmt(x.cpuMsPerCall, 3)).join(', ')} |`);
        }
        const mb = median(acc.base.map((x) => x.cpuMsPerCall ?? NaN)), mh = median(acc.head.map((x) => x.cpuMsPerCall ?? NaN));
        ratios.push(`${rate} cps: **${fmt(mh / mb, 3)}**`);
      }
      lines.push('', `head/base CPU per call: ${ratios.join('; ')}`, '');
    }
  } finally {
    if (!has('keep')) {
      try { run('git', ['worktree', 'remove', '--force', dir]); } catch (e) { console.error(String(e)); }
    }
  }
  console.log('\n' + lines.join('\n'));
}

main();
