/**
 * Benchmark entry point: `npm run bench -- <name> [flags]`. Each benchmark prints a readable
 * report and, as its last line, one JSON object with its figures.
 */
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
  // one line per benchmark module
};

const [name, ...rest] = process.argv.slice(2);
const load = name ? benches[name] : undefined;
if (!load) {
  console.error(`usage: npm run bench -- <${Object.keys(benches).join('|')}> [flags]`);
  process.exit(2);
}
await (await load()).main(rest);
