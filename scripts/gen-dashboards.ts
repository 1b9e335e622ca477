/**
 * Writes the monitoring kit's Grafana dashboards (scripts/monitoring/dashboards.ts) to
 * monitoring/dashboards/:
 *
 *   node --import tsx scripts/gen-dashboards.ts            # write them
 *   node --import tsx scripts/gen-dashboards.ts --check    # exit 1 if a committed file is stale
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DASHBOARDS, dashboardJson } from './monitoring/dashboards.js';

const dir = join(dirname(fileURLToPath(import.meta.url)), '..', 'monitoring', 'dashboards');
const check = process.argv.includes('--check');
let stale = 0;
for (const [file, d] of Object.entries(DASHBOARDS)) {
  const path = join(dir, file);
  const text = dashboardJson(d);
  if (!check) {
    writeFileSync(path, text);
    continue;
  }
  let committed = '';
  try {
    committed = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (committed !== text) {
    process.stderr.write(`monitoring/dashboards/${file} is stale: run node --import tsx scripts/gen-dashboards.ts\n`);
    stale++;
  }
}
process.exitCode = stale > 0 ? 1 : 0;
