/**
 * Benchmark entry point: `npm run bench -- <name> [flags]`. Each benchmark prints a readable
 * report and, as its last line, one JSON object with its figures.
 *
 * `--record` also appends that JSON line, with the date, the commit and the machine's load, to
 * `bench/results/<name>.jsonl`; `npm run figures` renders the latest record of every benchmark
 * into docs/figures.md, the one place the documentation takes its figures from.
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { benchRecord, RESULTS_DIR } from './record.js';

const benches: Record<string, () => Promise<{ main(argv: string[]): Promise<void> }>> = {
  format: () => import('./format.js'),
  read: () => import('./read.js'),
  // a gateway over thousands of blocks: memory against its budgets, bucket requests when warm
  'read-scale': () => import('./read-scale.js'),
  writer: () => import('./writer.js'),
  write: () => import('./write.js'),
  // the names for the write benchmark: one run prints ingest and flush figures
  ingest: () => import('./write.js'),
  flush: () => import('./write.js'),
  // the write path at production volume (≥ 1 GiB of WAL, scaling over cores)
  scale: () => import('./scale.js'),
  // the lifecycle role's day merge: a day's six 4-hour blocks, then late data folded in
  'day-merge': () => import('./day-merge.js'),
  // what a request costs the garbage collector in node:http2 and in a plain socket (no Strata code)
  'transport-gc': () => import('./transport-gc.js'),
  // one line per benchmark module
};

const [name, ...args] = process.argv.slice(2);
const load = name ? benches[name] : undefined;
if (!load) {
  console.error(`usage: npm run bench -- <${Object.keys(benches).join('|')}> [--record] [flags]`);
  process.exit(2);
}
const record = args.includes('--record');
const rest = args.filter((a) => a !== '--record');
// the last line printed that is a JSON object: the benchmark's figures
let last: string | null = null;
let partial = '';
const write = process.stdout.write.bind(process.stdout);
process.stdout.write = ((chunk: string | Uint8Array, ...more: unknown[]) => {
  partial += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
  const lines = partial.split('\n');
  partial = lines.pop() ?? '';
  for (const l of lines) if (l.startsWith('{') && l.endsWith('}')) last = l;
  return (write as (...a: unknown[]) => boolean)(chunk, ...more);
}) as typeof process.stdout.write;
await (await load()).main(rest);
const figures = last as string | null;
if (record && name !== undefined) {
  if (figures === null) {
    console.error(`bench ${name}: no JSON line to record`);
    process.exit(1);
  }
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, `${name}.jsonl`);
  appendFileSync(file, `${JSON.stringify(benchRecord(name, rest, JSON.parse(figures) as Record<string, unknown>))}\n`);
  console.error(`bench ${name}: recorded in ${file}`);
}
