/**
 * docs/figures.md is what `npm run figures` renders from bench/results/*.jsonl: nobody edits a
 * figure by hand, and a recorded run is never left out.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { FIGURES_FILE, readRecords, renderFigures } from '../../bench/record.js';
import { describeTarget, meets } from '../../bench/targets.js';

t.test('docs/figures.md matches the recorded runs', async (t) => {
  const records = readRecords();
  t.ok(records.size > 0, 'runs are on record');
  for (const [bench, runs] of records) {
    for (const r of runs) {
      t.equal(r.bench, bench, `${bench}: each record names its benchmark`);
      t.match(r.commit, /^[0-9a-f]{7,}$|^unknown$/);
      t.ok(Number.isFinite(r.load1) && r.cores > 0, `${bench}: load and cores recorded`);
    }
  }
  t.equal(readFileSync(FIGURES_FILE, 'utf8'), renderFigures(records), 'regenerate with `npm run figures`');
});

t.test('renderFigures() shows the latest run of each benchmark, scalar figures only', async (t) => {
  const rec = (at: string, figures: Record<string, unknown>) => ({ bench: 'read', args: [], at, commit: 'abcdef0', load1: 2.5, cores: 2, figures });
  const md = renderFigures(new Map([['read', [rec('2026-01-01T00:00:00.000Z', { warm_p50_ms: 9 }), rec('2026-01-02T03:04:05.000Z', { warm_p50_ms: 1.2345, runs: [1, 2] })]]]));
  t.match(md, /## `npm run bench -- read`/);
  t.match(md, /Recorded 2026-01-02 03:04 UTC at commit `abcdef0`, 2 cores, load 2.5; 2 run\(s\) on record/);
  t.match(md, /\| `warm_p50_ms` \| 1.235 \|/);
  t.notMatch(md, /runs/, 'nested values stay in the JSON line');
});

t.test('each figure with a target shows it and whether the run met it', async (t) => {
  const rec = (figures: Record<string, unknown>) => ({ bench: 'read', args: [], at: '2026-01-01T00:00:00.000Z', commit: 'abcdef0', load1: 1, cores: 2, figures });
  const md = renderFigures(new Map([['read', [rec({ event_loop_delay_p99_ms: 21.5, warm_1x4h_p50_ms: 1.5, vm_native_1x4h_p50_ms: 1.25, cold_1x30d_gets: 60, other: 3 })]]]));
  t.match(md, /\| `event_loop_delay_p99_ms` \| 21\.5 \| ≤ 20 \| \*\*no\*\* \|/);
  t.match(md, /\| `warm_1x4h_p50_ms` \| 1\.5 \| ≤ `vm_native_1x4h_p50_ms` \(1\.25\) \| \*\*no\*\* \|/, 'a bound named by a key is that figure of the same run');
  t.match(md, /\| `cold_1x30d_gets` \| 60 \| ≤ 60 \| yes \|/, 'a bound is inclusive');
  t.match(md, /\| `other` \| 3 \|  \|  \|/, 'no target, no verdict');

  const fmt = (v: number) => String(v);
  t.equal(describeTarget({ min: 1.7 }, {}, fmt), '≥ 1.7');
  t.equal(describeTarget({ min: 1, max: 2 }, {}, fmt), '≥ 1, ≤ 2');
  t.equal(describeTarget({ max: 'peer' }, {}, fmt), '≤ `peer`', 'a missing peer is named without a value');
  t.equal(meets({ min: 1.7 }, 1.7, {}), true);
  t.equal(meets({ min: 1.7 }, 1.69, {}), false);
  t.equal(meets({ max: 'peer' }, 1, {}), undefined, 'no verdict without the peer');
  t.equal(meets({ max: 'peer' }, 1, { peer: 0.5 }), false);
  t.equal(meets({ max: 2 }, 'x', {}), undefined, 'no verdict on a non-number');
});
