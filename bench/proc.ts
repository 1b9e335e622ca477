/**
 * What the benchmarks read of a process from /proc, and how they start a service as a separate
 * process (compiled JS when built, TypeScript through tsx otherwise).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const TICKS_PER_S = 100; // USER_HZ on Linux

/** `--name=value` from argv, or `def`. */
export function flag(argv: string[], name: string, def: string): string {
  const f = argv.find((a) => a.startsWith(`--${name}=`));
  return f ? f.slice(name.length + 3) : def;
}

/** utime + stime of a process (all its threads), in seconds. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_S; // fields 14 and 15 of stat(5)
}

/**
 * Peak and current resident set of a process, in MiB, and the current split between anonymous
 * memory (heaps, buffers) and file pages mapped into it (LevelDB maps its tables).
 */
export function rssMiB(pid: number): { peak: number; now: number; anon: number; file: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(s)?.[1] ?? 0) / 1024;
  return { peak: kb('VmHWM'), now: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') };
}

/** Bytes a process caused to be written to storage (`write_bytes` of /proc/PID/io). */
export function writeBytes(pid: number): number {
  const s = readFileSync(`/proc/${pid}/io`, 'utf8');
  return Number(/write_bytes:\s+(\d+)/.exec(s)?.[1] ?? 0);
}

/** The q-quantile (0..1, nearest rank: the ceil(q*n)-th smallest) of `xs`; NaN when empty. */
export function quantile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
}

/** The p-th percentile (nearest rank) of `xs`. */
export function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? 0;
}

/**
 * The `ENV MALLOC_*` settings of the container image (the repository's Dockerfile), so that a
 * benchmark runs the service with the allocator settings it is deployed with.
 */
export function imageMallocEnv(): Record<string, string> {
  const file = [join(here, '..', 'Dockerfile'), join(here, '..', '..', 'Dockerfile')].find((f) => existsSync(f));
  if (!file) throw new Error('the Dockerfile (the image environment the benchmarks run the services with) is not found');
  const env: Record<string, string> = {};
  for (const m of readFileSync(file, 'utf8').matchAll(/^ENV\s+(MALLOC_\w+)=(\S+)\s*$/gm)) env[m[1]!] = m[2]!;
  return env;
}

/** A running aggregator started by {@link startAggregator}. */
export interface AggregatorProcess {
  readonly proc: ChildProcess;
  readonly port: number;
  readonly serving: Promise<void>;
}

/**
 * Starts `strata aggregator` with `config` (written to `dir`), optionally under `prefix` (e.g.
 * `taskset -c 0`); resolves once it listens.
 */
export async function startAggregator(config: object, dir: string, prefix: readonly string[] = []): Promise<AggregatorProcess> {
  const file = join(dir, 'aggregator.json');
  writeFileSync(file, JSON.stringify(config));
  const compiled = join(here, '..', 'src', 'cli', 'main.js');
  const args = existsSync(compiled) ? [compiled] : ['--import', 'tsx', join(here, '..', 'src', 'cli', 'main.ts')];
  // STRATA_BENCH_NODE_ARGS: extra node flags for the service (e.g. --cpu-prof for profiling)
  const nodeArgs = (process.env['STRATA_BENCH_NODE_ARGS'] ?? '').split(' ').filter(Boolean);
  const cmd = [...prefix, process.execPath, ...nodeArgs, ...args, 'aggregator', '--config', file];
  // the environment of the container image: its glibc malloc settings (Dockerfile), unless set here
  const env = { ...imageMallocEnv(), ...process.env };
  const proc = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'pipe', 'inherit'], env });
  let buf = '';
  let onPort: (p: number) => void = () => undefined;
  let onServing: () => void = () => undefined;
  const port = new Promise<number>((resolve) => (onPort = resolve));
  const serving = new Promise<void>((resolve) => (onServing = resolve));
  proc.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        const rec = JSON.parse(line) as { msg?: string; grpcPort?: number; level?: number | string };
        if (rec.msg?.startsWith('aggregator listening')) onPort(rec.grpcPort!);
        if (rec.msg === 'aggregator serving') onServing();
        const level = typeof rec.level === 'number' ? rec.level : { warn: 40, error: 50, fatal: 60 }[String(rec.level)] ?? 0;
        // STRATA_BENCH_LOG=1: every line of the service's log (the flush records, for example)
        if (level >= 40 || process.env['STRATA_BENCH_LOG'] === '1') process.stderr.write(`aggregator: ${line}\n`);
      } catch {
        process.stderr.write(`aggregator: ${line}\n`);
      }
    }
  });
  const exited = new Promise<never>((_, reject) => proc.on('exit', (code) => reject(new Error(`aggregator exited with ${code}`))));
  exited.catch(() => undefined);
  return { proc, port: await Promise.race([port, exited]), serving: Promise.race([serving, exited]) };
}

/** Stops a process started here (SIGTERM) and waits for it. */
export async function stop(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const gone = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  await gone;
}
