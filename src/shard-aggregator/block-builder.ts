/**
 * Block building: *what* a flush computes. Reads the sealed WAL generations of one (tenant, shard,
 * window) from their directories, merges them with the block already published (late data), writes
 * the block through a byte sink, and verifies a published block by reading it back. Pure CPU and
 * local disk; the bucket is reached only through the sink and the range sources it is given, so the
 * same code runs on the main thread or on a worker thread (build-worker.ts), where the sink and the
 * sources are proxies of the main thread's upload and bucket (build-pool.ts).
 *
 * ```
 * old block (RangeSource) ─ scanBlock ─┐
 * gen 1 dir ─ WalDb.open ─ series() ───┤ merge by series id (block < gen 1 < gen 2 ..., last write wins)
 * gen 2 dir ─ WalDb.open ─ series() ───┘   └─ BlockWriter ─ ByteSink
 * ```
 *
 * *When* a flush runs, its retries and what happens around it (seal, upload, deletion of the WALs)
 * is the flush scheduler's business (flush-scheduler.ts).
 *
 * The caller closes its own handles of the generations before (LevelDB locks a database for one
 * opener per process); the builder opens them, reads them once and closes them again, also when it
 * fails.
 */
import { BlockReader } from '../block/reader.js';
import type { RangeSource } from '../block/source.js';
import { BlockWriter, type BlockMeta, type ByteSink, type WrittenBlock } from '../block/writer.js';
import { CorruptionError } from '../errors.js';
import { decodeRunInto, MAX_RUN_SAMPLES, readRunHeader, runTimeRange, type Samples } from '../format/run.js';
import { checkBlockRuns, scanBlock } from '../block/scan.js';
import { mergeSamples } from '../format/merge.js';
import { WalDb } from './wal-db.js';

/** How the builder opens and reads the WAL generations (a subset of WalDbOptions). */
export interface WalReadOptions {
  /** LevelDB write buffer of the WAL (used when opening a segment replays its log). */
  readonly writeBufferBytes: number;
  /** Segments a read holds open at once; more are merged through spill files. */
  readonly maxOpenSegments?: number;
  /** A read closes and reopens the segments after this many bytes. */
  readonly remapBytes?: number;
}

/** What to build: the block's identity, the generations (oldest first), the block to replace. */
export interface BuildInput {
  readonly meta: BlockMeta;
  /** Directories of the sealed generations, oldest first. */
  readonly gens: readonly string[];
  readonly wal: WalReadOptions;
  /** Expected series (the replaced block's count), to size index pages; 0 when unknown. */
  readonly expectedSeries: number;
  /** The block's creation time (the aggregator's clock, ms since the epoch). */
  readonly createdAtMs: number;
}

/** What a published block must hold. */
export interface ExpectedBlock {
  readonly blockId: string;
  readonly series: number;
  readonly samples: number;
  readonly size: number;
}

/** Thrown into a build that was cancelled (shutdown). */
export class BuildCancelled extends Error {
  constructor() {
    super('flush stopped by shutdown');
    this.name = 'BuildCancelled';
  }
}

/** Series merged between two checks for cancellation. */
const STOP_CHECK_EVERY = 256;

/**
 * Most samples of one series decoded at once in a merge (16 bytes each), unless one run holds
 * more: the runs of a series are merged in groups of this many into what came before. A series
 * of normal density fits in one group; one written many times over no longer takes memory for
 * every copy at once.
 */
export const MERGE_GROUP_SAMPLES = 1 << 20;

/**
 * Builds the block of `input` into `sink` (completed by BlockWriter.finish on success; the caller
 * aborts it on failure). `old` is the published block being replaced, or null.
 * @throws BuildCancelled when `cancelled()` turns true; any read, decode or sink error.
 */
export async function buildBlock(input: BuildInput, sink: ByteSink, old: RangeSource | null, cancelled: () => boolean): Promise<WrittenBlock> {
  const gens: WalDb[] = [];
  try {
    for (const dir of input.gens) {
      gens.push(await WalDb.open(dir, { ...input.wal, sync: false }));
    }
    const reader = old ? await BlockReader.open(old) : null;
    const writer = new BlockWriter(sink, input.meta, { now: () => input.createdAtMs, ...(input.expectedSeries > 0 ? { expectedSeries: input.expectedSeries } : {}) });
    await mergeInto(writer, reader, gens, cancelled);
    return await writer.finish();
  } finally {
    for (const g of gens) await g.close();
  }
}

type Head = { id: bigint; samples: Samples | null; runs: Uint8Array[] };
type Source = { it: AsyncIterator<Head>; head: Head | null; name: string };

/**
 * Merges the old block (if any) and the generations, series by series, into `writer`. A series
 * that is one WAL run and nothing else (the usual case: a batch node pushes each series' window
 * once) is copied as it is, lz4 applied, without decoding its samples; every other series is
 * decoded, merged (last write wins) and encoded again.
 */
async function mergeInto(writer: BlockWriter, old: BlockReader | null, gens: readonly WalDb[], cancelled: () => boolean): Promise<void> {
  const sources: Source[] = [];
  if (old) {
    const it = (async function* () {
      for await (const s of scanBlock(old)) yield { id: s.id, samples: s.samples, runs: [] };
    })();
    sources.push({ it, head: null, name: old.source.name });
  }
  for (const g of gens) {
    const it = (async function* () {
      for await (const s of g.series()) yield { id: s.id, samples: null, runs: s.runs };
    })();
    sources.push({ it, head: null, name: g.dir });
  }
  try {
    for (const s of sources) {
      const r = await s.it.next();
      s.head = r.done ? null : r.value;
    }
    let n = 0;
    for (;;) {
      let min: bigint | null = null;
      for (const s of sources) if (s.head && (min === null || s.head.id < min)) min = s.head.id;
      if (min === null) break;
      // sources are in age order (block, then generations), so parts are oldest first
      const taken: { samples: Samples | null; runs: Uint8Array[]; name: string }[] = [];
      for (const s of sources) {
        if (s.head && s.head.id === min) {
          taken.push({ samples: s.head.samples, runs: s.head.runs, name: s.name });
          const r = await s.it.next();
          s.head = r.done ? null : r.value;
        }
      }
      const only = taken.length === 1 && taken[0]!.samples === null && taken[0]!.runs.length === 1 ? taken[0]! : null;
      if (only) {
        const origin = { object: `${only.name} series ${min} run 0`, offset: 0 };
        const run = only.runs[0]!;
        const range = runTimeRange(run, origin);
        // the writer packs the plain WAL run with lz4 (or shares its timestamps) as add() would
        await writer.addEncoded(min, run, range.count, range.first, range.last);
      } else {
        // the runs are decoded into one allocation per group of runs (not one per run), and each
        // group is merged into what came before: memory follows the series' distinct samples (at
        // most one per millisecond of its window) and MERGE_GROUP_SAMPLES, not how many times its
        // samples were written
        let merged: Samples | null = null;
        let group: { run: Uint8Array; origin: { object: string; offset: number } }[] = [];
        let groupSamples = 0;
        /** `merged` and the runs of the group, merged. */
        const mergeGroup = (): Samples => {
          // not zero-filled: decodeRunInto writes every one of the samples the headers count
          const buf = Buffer.allocUnsafeSlow(16 * groupSamples).buffer;
          const ts = new BigInt64Array(buf, 0, groupSamples);
          const vs = new Float64Array(buf, 8 * groupSamples, groupSamples);
          const parts: Samples[] = merged ? [merged] : [];
          let at = 0;
          for (const g of group) {
            const k = decodeRunInto(g.run, g.origin, ts, vs, at);
            parts.push({ timestamps: ts.subarray(at, at + k), values: vs.subarray(at, at + k) });
            at += k;
          }
          group = [];
          groupSamples = 0;
          return mergeSamples(parts);
        };
        for (const p of taken) {
          if (p.samples) {
            // the replaced block's samples: older than every run after them
            if (group.length > 0) merged = mergeGroup();
            merged = merged ? mergeSamples([merged, p.samples]) : p.samples;
          }
          p.runs.forEach((run, i) => {
            const origin = { object: `${p.name} series ${min} run ${i}`, offset: 0 };
            const n = readRunHeader(run, origin).count;
            // checked before an allocation is sized by it (a damaged count is not a RangeError)
            if (n === 0 || n > MAX_RUN_SAMPLES) throw new CorruptionError(origin.object, 0, `run claims ${n} samples`);
            if (groupSamples > 0 && groupSamples + n > MERGE_GROUP_SAMPLES) merged = mergeGroup();
            group.push({ run, origin });
            groupSamples += n;
          });
        }
        if (group.length > 0) merged = mergeGroup();
        if (merged !== null && merged.timestamps.length > 0) await writer.add(min, merged);
      }
      if (++n % STOP_CHECK_EVERY === 0 && cancelled()) throw new BuildCancelled();
    }
  } finally {
    for (const s of sources) await s.it.return?.(undefined);
  }
}

/**
 * Reads the published block back and checks it is the one just written: its footer (`footer`
 * mode), and with `full` every run's checksum and the series and sample counts.
 * @throws CorruptionError naming the block when it differs; BuildCancelled.
 */
export async function verifyBlock(source: RangeSource, expected: ExpectedBlock, mode: 'full' | 'footer', cancelled: () => boolean): Promise<void> {
  const r = await BlockReader.open(source);
  const f = r.footer;
  const { blockId, series, samples, size } = expected;
  if (f.blockId !== blockId || f.seriesCount !== series || f.sampleCount !== samples || r.size !== size) {
    throw new CorruptionError(
      source.name,
      r.size,
      `uploaded block does not match what was written: block id ${f.blockId} vs ${blockId}, ${f.seriesCount} vs ${series} series, ${f.sampleCount} vs ${samples} samples, ${r.size} vs ${size} bytes`,
    );
  }
  if (mode === 'footer') return;
  const { series: gotSeries, samples: gotSamples, stopped } = await checkBlockRuns(r, cancelled, STOP_CHECK_EVERY);
  if (stopped) throw new BuildCancelled();
  if (gotSeries !== series || gotSamples !== samples) {
    throw new CorruptionError(source.name, 0, `uploaded block holds ${gotSeries} series / ${gotSamples} samples, expected ${series} / ${samples}`);
  }
}
