/**
 * The layering rules (.dependency-cruiser.cjs, from ../shared/STYLE.md) hold in src/, and each of
 * them does fail on a forbidden import (test/fixtures/layering/ holds one per rule).
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const CONFIG = join(ROOT, '.dependency-cruiser.cjs');
const DEPCRUISE = join(ROOT, 'node_modules', 'dependency-cruiser', 'bin', 'dependency-cruise.mjs');

interface Violation {
  readonly from: string;
  readonly to: string;
  readonly rule: { readonly name: string };
}

/** The violations depcruise reports for `dir` (relative to `cwd`). */
async function violations(cwd: string, dir: string): Promise<string[]> {
  const run = promisify(execFile);
  let stdout: string;
  try {
    ({ stdout } = await run(process.execPath, [DEPCRUISE, '--config', CONFIG, '--output-type', 'json', dir], { cwd, maxBuffer: 64 << 20 }));
  } catch (err) {
    // exit code 1+ when there are violations; the report is still on stdout
    stdout = (err as { stdout?: string }).stdout ?? '';
    if (stdout === '') throw err;
  }
  const report = JSON.parse(stdout) as { summary: { violations: Violation[] } };
  return report.summary.violations.map((v) => `${v.rule.name}: ${v.from} → ${v.to}`).sort();
}

t.test('src/ keeps every layering rule', async (t) => {
  t.same(await violations(ROOT, 'src'), []);
});

t.test('each rule fails on a forbidden import', async (t) => {
  t.same(await violations(join(ROOT, 'test', 'fixtures', 'layering'), 'src'), [
    'api-is-a-leaf: src/api/headers.ts → src/common/util.ts',
    'format-index-no-io: src/format/run.ts → fs',
    'format-index-pure: src/format/run.ts → src/shard-aggregator/server.ts',
    'no-client-in-services: src/storage-gateway/gateway.ts → src/client/query.ts',
    'service-shard-aggregator-independent: src/shard-aggregator/server.ts → src/storage-gateway/gateway.ts',
    'shared-parts-import-no-service: src/format/run.ts → src/shard-aggregator/server.ts',
  ]);
});
