/**
 * The lifecycle role's configuration: defaults, layers (file < environment < flags), and bad
 * values refused with the option named, through the real `strata lifecycle` command.
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import t from 'tap';
import { lifecycleConfigFrom } from '../../src/cli/lifecycle.js';
import { parseLifecycleConfig } from '../../src/lifecycle/config.js';
import { ErrorCode, StrataError } from '../../src/errors.js';
import { tempDir } from '../support/gateway.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const run = promisify(execFile);

t.test('defaults, and the layers in order', async (t) => {
  const dir = tempDir(t, 'lc-cfg');
  const cfg = parseLifecycleConfig({ bucket: { type: 'filesystem', path: dir } });
  t.match(cfg, { metricsListen: '0.0.0.0:9403', intervalMs: 3_600_000, leaseDurationMs: 300_000, retentionGraceMs: 3_600_000, incompleteUploadMaxAgeMs: 86_400_000, deleteConcurrency: 8, blockDurationMs: 14_400_000 });
  const file = join(dir, 'lifecycle.json');
  writeFileSync(file, JSON.stringify({ bucket: { type: 'filesystem', path: dir }, intervalMs: 1000, deleteConcurrency: 2 }));
  const layered = await lifecycleConfigFrom({ config: file, intervalMs: '5000', set: [] }, { STRATA_LIFECYCLE_DELETE_CONCURRENCY: '3' });
  t.equal(layered.intervalMs, 5000, 'the flag wins over the file');
  t.equal(layered.deleteConcurrency, 3, 'the environment wins over the file');
});

t.test('bad values are refused naming the option', async (t) => {
  const dir = tempDir(t, 'lc-cfg');
  const bucket = { type: 'filesystem', path: dir };
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ bucket, leaseDurationMs: 10 }, /leaseDurationMs/],
    [{ bucket, deleteConcurrency: 0 }, /deleteConcurrency/],
    [{ bucket, intervalMs: 2 ** 31 }, /intervalMs: must be at most/],
    [{ bucket, retentionGraceMs: -1 }, /retentionGraceMs/],
    [{ bucket, colour: 'red' }, /colour/],
    [{}, /bucket: give a bucket, or a tenantsFile/],
  ];
  for (const [input, re] of bad) {
    const err = (() => {
      try {
        parseLifecycleConfig(input);
        return null;
      } catch (e) {
        return e;
      }
    })();
    t.ok(err instanceof StrataError && err.code === ErrorCode.CONFIG, `${JSON.stringify(input)}: CONFIG error`);
    t.match((err as Error).message, re);
  }
  const cli = await run(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), 'lifecycle', '--bucket-dir', dir, '--set', 'leaseDurationMs=10', '--print-config'], { cwd: ROOT }).then(
    () => null,
    (e: { code: number; stderr: string }) => e,
  );
  t.equal(cli?.code, 2, 'strata lifecycle exits with 2 on a config error');
  t.match(cli?.stderr, /strata lifecycle: invalid lifecycle config: .*leaseDurationMs/);
});
