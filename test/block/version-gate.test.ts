/**
 * The version 2 golden block relabelled as format version 1 (footer version and CRC rewritten,
 * nothing else): its runs that use codes of version 2 are refused as corrupt, naming the code and
 * the versions, and the version 1 golden block still reads exactly (golden.test.ts).
 */
import t, { type Test } from 'tap';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { crc32c } from '@node-rs/crc32';
import { BlockReader } from '../../src/block/reader.js';
import { CorruptionError } from '../../src/errors.js';
import { FOOTER_LEN, FooterField } from '../../src/format/footer.js';
import { goldenSeriesV2, goldenSeriesV3 } from '../fixtures/golden.js';
import { memorySource } from '../support/memory-source.js';
import { sameSamples } from '../support/series.js';
import type { Samples } from '../../src/format/run.js';

const fixtures = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');

function relabelled(bytes: Uint8Array, version: number): Uint8Array {
  const out = Uint8Array.from(bytes);
  const at = out.length - FOOTER_LEN;
  const dv = new DataView(out.buffer, at, FOOTER_LEN);
  dv.setUint16(FooterField.VERSION, version, true);
  dv.setUint32(FooterField.FOOTER_CRC, crc32c(out.subarray(at, at + FooterField.FOOTER_CRC)), true);
  return out;
}

/**
 * Reads every series of `recipe` from `r`: each is exact, or refused with a CorruptionError whose
 * message matches `why` and names the object. Returns how many of each.
 */
async function readOrRefuse(t: Test, r: BlockReader, recipe: { id: bigint; samples: Samples }[], why: RegExp): Promise<{ refused: number; read: number }> {
  let refused = 0;
  let read = 0;
  for (const s of recipe) {
    try {
      const got = await r.readSeries(s.id);
      t.ok(got && sameSamples(got, s.samples), `series ${s.id} exact`);
      read++;
    } catch (err) {
      t.ok(err instanceof CorruptionError, `series ${s.id}: CorruptionError`);
      t.match((err as Error).message, why);
      t.match((err as Error).message, new RegExp(`"${r.source.name}"`), 'names the object');
      refused++;
    }
  }
  return { refused, read };
}

t.test('a version 1 block with codes of version 2 is refused as corrupt, run by run', async (t) => {
  const v2 = readFileSync(join(fixtures, 'golden-v2.block'));
  const recipe = goldenSeriesV2();
  // the relabelling itself is sound: as version 2 the rewritten footer reads every series
  const same = await BlockReader.open(memorySource('golden-v2', relabelled(v2, 2)));
  for (const s of recipe) t.ok(sameSamples((await same.readSeries(s.id))!, s.samples), `series ${s.id} as version 2`);

  const r = await BlockReader.open(memorySource('relabelled', relabelled(v2, 1)));
  t.equal(r.footer.version, 1);
  // a run of version 1 codes only reads as before
  const { refused, read } = await readOrRefuse(t, r, recipe, /(timestamp|value|integer sequence) layout \d+ \([A-Za-z ]+\) is format version 2, in a block of format version 1/);
  // 24 series of scrape targets share timestamp vectors, so at least those are refused
  t.ok(refused >= 24, `${refused} series refused`);
  t.ok(read > 0, `${read} series of version 1 codes read`);
  await t.rejects(r.verify(), CorruptionError, 'verify refuses the block');
});

t.test('a gateway refuses the runs of version 2 codes in a version 1 block with DATA_LOSS, and serves the others', async (t) => {
  const { mkdirSync, writeFileSync } = await import('node:fs');
  const { blockKey } = await import('../../src/format/key.js');
  const { rawRead, startTestGateway, tempDir, testConfig } = await import('../support/gateway.js');
  const v1 = relabelled(readFileSync(join(fixtures, 'golden-v2.block')), 1);
  const { footer } = await BlockReader.open(memorySource('relabelled', v1));
  const dir = tempDir(t, 'version-gate');
  const key = blockKey(footer.tenant, footer.shard, footer.windowStart);
  mkdirSync(dirname(join(dir, 'bucket', key)), { recursive: true });
  writeFileSync(join(dir, 'bucket', key), v1);
  const gw = await startTestGateway(t, testConfig({ type: 'filesystem', path: join(dir, 'bucket') }, join(dir, 'cache'), { blockDurationMs: Number(footer.windowEnd - footer.windowStart) }), { now: () => Number(footer.windowEnd) + 86_400_000 });
  const recipe = goldenSeriesV2();
  let refused = 0;
  let served = 0;
  for (const s of recipe) {
    const ids = Buffer.alloc(8);
    ids.writeBigUInt64LE(s.id);
    const req = { tenant: footer.tenant, shard: footer.shard, num_shards: footer.numShards, window_start_ms: String(footer.windowStart), series_ids: ids, start_ms: String(footer.windowStart), end_ms: String(footer.windowEnd), encoding: 'RAW' as const };
    try {
      const msgs = await rawRead(gw.grpcPort, req);
      const n = msgs.reduce((a, m) => a + (m['timestamps'] as Buffer).length / 8, 0);
      t.equal(n, s.samples.timestamps.length, `series ${s.id}: every sample of a run of version 1 codes`);
      served++;
    } catch (err) {
      t.equal((err as { code?: number }).code, 15, `series ${s.id}: DATA_LOSS`);
      t.match((err as Error).message, /is format version 2, in a block of format version 1/);
      refused++;
    }
  }
  t.ok(refused >= 24, `${refused} series refused`);
  t.ok(served > 0, `${served} series served`);
});

t.test('a version 2 block with a page of version 3 (ids 2^53 or more apart) is refused as corrupt for the series of that page', async (t) => {
  const v3 = readFileSync(join(fixtures, 'golden-v3.block'));
  const recipe = goldenSeriesV3();
  const r = await BlockReader.open(memorySource('relabelled-v2', relabelled(v3, 2)));
  t.equal(r.footer.version, 2);
  const { refused, read } = await readOrRefuse(t, r, recipe, /page flag 4 \(series ids 2\^53 or more apart\) is format version 3, in a block of format version 2/);
  // the pages that hold the spread ids and the series near 2^64 (7 series a page)
  t.ok(refused >= 9, `${refused} series refused`);
  t.ok(read >= 56, `${read} series of pages without wide ids read`);
  await t.rejects(r.verify(), CorruptionError, 'verify refuses the block');
});
