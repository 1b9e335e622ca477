/**
 * `strata serve` as a real process: a window read while it had no block, then written and
 * sealed, and then replaced by late data and sealed again, reads back exactly right after each
 * Seal returns. The gateway would otherwise answer from its cached "no block" and its cached
 * block until `closedStalenessMs` (1 h) passed; the aggregator in the same process tells it of
 * every block it writes.
 *
 * Run alone: npx tap test/cli/serve.test.ts
 */
import { join } from 'node:path';
import t from 'tap';
import { QueryClient } from '../../src/client/query.js';
import { WriterClient } from '../../src/client/writer.js';
import { tempDir } from '../support/aggregator.js';
import { startServiceProcess } from '../support/service-process.js';

const H4 = 4n * 3600n * 1000n;

t.test('strata serve: the blocks of a Seal are readable once it returns, also where the gateway had read the window before', async (t) => {
  const dir = tempDir('serve-seal');
  const strata = await startServiceProcess(t, ['serve', '--data-dir', join(dir, 'data'), '--num-shards', '2', '--write-listen', '127.0.0.1:0', '--read-listen', '127.0.0.1:0', '--write-metrics-listen', '127.0.0.1:0', '--read-metrics-listen', '127.0.0.1:0']);
  const w = new WriterClient({ tenant: 'late', numShards: 2, target: `127.0.0.1:${strata.grpcPort}` });
  const q = new QueryClient({ endpoints: [`127.0.0.1:${strata.readPort}`], numShards: 2, dayRequestsAfterMs: null });
  t.teardown(() => {
    w.close();
    q.close();
  });
  // a closed window, three days back
  const W = ((BigInt(Date.now()) - 3n * 24n * 3600n * 1000n) / H4) * H4;
  const ids = [4n, 7n];
  const read = async (): Promise<number[][]> => (await q.query('late', ids, { start: W, end: W + H4 })).series.map((s) => [...s.values]);
  const write = async (values: number[]): Promise<void> => {
    await w.write(ids.map((id) => ({ id, timestamps: BigInt64Array.from(values.map((_, i) => W + BigInt(i) * 15_000n)), values: Float64Array.from(values) })));
    await w.seal(W);
  };
  t.same(await read(), [[], []], 'no block yet: no data (and the gateway remembers that)');
  await write([1, 2, 3]);
  t.same(await read(), [[1, 2, 3], [1, 2, 3]], 'the new blocks are read at once');
  await write([1, 2, 3, 4.5, -0]);
  const got = await read();
  t.same(got, [[1, 2, 3, 4.5, -0], [1, 2, 3, 4.5, -0]], 'the replacing blocks (late data) are read at once');
  t.ok(Object.is(got[0]![4], -0), '-0 kept');
});
