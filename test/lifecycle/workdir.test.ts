/**
 * The lifecycle's work directory: files of merges a crash interrupted are removed, files another
 * lifecycle process sharing the directory is writing are not, and nothing else is touched.
 *
 * Run alone: npx tap test/lifecycle/workdir.test.ts
 */
import { existsSync, mkdtempSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { cleanWorkDir, DAY_TEMP_MAX_AGE_MS, DAY_TEMP_PREFIX } from '../../src/lifecycle/day.js';

t.test('cleanWorkDir removes merge files older than the bound, and only those', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'strata-workdir-'));
  const nowMs = 1_800_000_000_000; // file times are set explicitly: no dependence on the date
  const at = (ageMs: number): Date => new Date(nowMs - ageMs);
  const files = {
    crashed: `${DAY_TEMP_PREFIX}aaaa.block`,
    crashedHidden: `.${DAY_TEMP_PREFIX}bbbb.block`,
    otherProcess: `${DAY_TEMP_PREFIX}cccc.block`,
    unrelated: 'notes.txt',
  };
  for (const name of Object.values(files)) writeFileSync(join(dir, name), 'x');
  utimesSync(join(dir, files.crashed), at(DAY_TEMP_MAX_AGE_MS + 1000), at(DAY_TEMP_MAX_AGE_MS + 1000));
  utimesSync(join(dir, files.crashedHidden), at(2 * DAY_TEMP_MAX_AGE_MS), at(2 * DAY_TEMP_MAX_AGE_MS));
  utimesSync(join(dir, files.otherProcess), at(60_000), at(60_000)); // written a minute ago
  utimesSync(join(dir, files.unrelated), at(10 * DAY_TEMP_MAX_AGE_MS), at(10 * DAY_TEMP_MAX_AGE_MS));
  await cleanWorkDir(dir, nowMs);
  t.same(
    Object.fromEntries(Object.entries(files).map(([k, name]) => [k, existsSync(join(dir, name))])),
    { crashed: false, crashedHidden: false, otherProcess: true, unrelated: true },
  );
  await cleanWorkDir(join(dir, 'made'), nowMs);
  t.ok(existsSync(join(dir, 'made')), 'a missing directory is made');
});
