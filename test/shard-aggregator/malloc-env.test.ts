/**
 * The glibc malloc settings the aggregator's memory bound assumes: the container image sets
 * exactly those (the benchmarks take them from the Dockerfile), and the start-up warning names
 * every one that is missing or different.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { MALLOC_ENV, mallocEnvWarning } from '../../src/shard-aggregator/malloc-env.js';
import { imageMallocEnv } from '../../bench/proc.js';

t.test('the Dockerfile sets the malloc settings of MALLOC_ENV, and the benchmarks read them from it', (t) => {
  const docker = readFileSync(join(import.meta.dirname, '..', '..', 'Dockerfile'), 'utf8');
  const set = Object.fromEntries([...docker.matchAll(/^ENV\s+(MALLOC_\w+)=(\S+)\s*$/gm)].map((m) => [m[1]!, m[2]!]));
  t.same(set, { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '1048576' });
  t.same(set, MALLOC_ENV);
  t.same(imageMallocEnv(), set);
  t.end();
});

t.test('mallocEnvWarning() is null with the settings and names each one missing or different', (t) => {
  t.equal(mallocEnvWarning({ MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '1048576' }), null);
  t.equal(
    mallocEnvWarning({ MALLOC_ARENA_MAX: '1' }),
    'glibc malloc settings differ from the image\'s: MALLOC_ARENA_MAX is "1" (expected 2), MALLOC_MMAP_THRESHOLD_ is unset (expected 1048576); ' +
      'the peak memory of docs/capacity.md assumes them: set them in the environment of the aggregator',
  );
  t.equal(
    mallocEnvWarning({ MALLOC_ARENA_MAX: '2' }),
    "glibc malloc settings differ from the image's: MALLOC_MMAP_THRESHOLD_ is unset (expected 1048576); " +
      'the peak memory of docs/capacity.md assumes them: set them in the environment of the aggregator',
  );
  t.end();
});
