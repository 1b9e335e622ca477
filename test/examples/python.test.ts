/**
 * examples/python/: a Python client generated from proto/ with Debian's protobuf-compiler and run
 * on python3-grpcio writes, seals and reads back bit for bit against a real `strata serve` (RAW
 * and RUNS, runs split over several messages), leaves out series with no sample in the range,
 * and sees the strata-error-code trailer of a refusal.
 *
 * Needs /usr/bin/python3 with python3-grpcio and python3-protobuf, and protoc (.ci/run installs
 * them when missing).
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startServiceProcess } from '../support/service-process.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const EXAMPLE = join(ROOT, 'examples', 'python');
const run = promisify(execFile);

t.test('the Python example client round-trips through strata serve', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'strata-python-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  await run(join(EXAMPLE, 'generate.sh'), [join(dir, 'gen')]).catch((err: Error & { stderr?: string }) => {
    throw new Error(`generate.sh (protoc) failed; apt-get install protobuf-compiler: ${err.stderr ?? err.message}`);
  });
  // small response messages, so that a long series' run comes in several fragments
  const strata = await startServiceProcess(t, [
    'serve',
    '--data-dir',
    join(dir, 'data'),
    '--write-listen',
    '127.0.0.1:0',
    '--read-listen',
    '127.0.0.1:0',
    '--write-metrics-listen',
    '127.0.0.1:0',
    '--read-metrics-listen',
    '127.0.0.1:0',
    '--gateway-set',
    'maxMessageBytes=4096',
  ]);
  const { stdout } = await run('/usr/bin/python3', [join(EXAMPLE, 'strata_client.py'), '--write', `127.0.0.1:${strata.grpcPort}`, '--read', `127.0.0.1:${strata.readPort}`, '--gen', join(dir, 'gen')]).catch(
    (err: Error & { stdout?: string; stderr?: string }) => {
      throw new Error(`strata_client.py failed (python3-grpcio and python3-protobuf installed?): ${err.stdout ?? ''}${err.stderr ?? err.message}`);
    },
  );
  const out = JSON.parse(stdout) as { window: number; blocks: string[]; most_fragments_of_a_run: number } & Record<string, unknown>;
  t.match(out, {
    num_shards: 16,
    block_duration_ms: 14_400_000,
    written: 2024,
    checks: { raw_bit_for_bit: true, runs_crc_of_whole_run: true, runs_sample_count: true, no_sample_no_series: true },
    refused: { code: 'INVALID_ARGUMENT', strata_error_code: 'ERR_STRATA_INVALID_ARGUMENT', details: 'invalid series_ids: series 1 belongs to shard 1, not 0' },
  });
  t.equal(out.window % 14_400_000, 0, 'a window start');
  t.equal(out.blocks.length, 5, 'one block per shard written to');
  t.ok(out.most_fragments_of_a_run > 1, `a run came in ${out.most_fragments_of_a_run} fragments, each with the whole run's CRC`);
});
