/**
 * Day blocks: the lifecycle role merges the 4-hour blocks of a closed (tenant, shard, day) into one
 * day block, folds 4-hour blocks written later (late data) into it, and deletes the 4-hour blocks
 * it holds once every reader must have seen it. The protocol is in src/lifecycle/README.md ("Day
 * blocks") and the layout in docs/format/block.md ("Day blocks"); in short:
 *
 * 1. **Plan** (from the pass's one LIST of `blocks/`): a day is due for a merge when it ended
 *    `dayMergeAfterMs` ago and some 4-hour block listed for it (key + ETag) is not in the manifest
 *    of the day block, or the day block has no manifest naming its current ETag.
 * 2. **Merge**: the current day block (if any, oldest) and the listed 4-hour blocks are read
 *    series by series and merged bit-exactly (src/format/merge.ts: later sources win on a repeated
 *    timestamp; a series only one source holds is copied as its stored run, checked but not
 *    encoded again) into a local file, which is verified whole (every checksum, every run
 *    decoded, the counts; read in pieces of at most 8 MiB, BlockReader.verify in src/block/reader.ts) before anything
 *    is published.
 * 3. **Publish**: one PUT of the file at the deterministic day key (atomic: readers see the old
 *    day block, or none, or the new one), then read back (footer: block id, size) and only then
 *    the manifest is written: the day block's ETag, block id, and every 4-hour block version
 *    (key + ETag) it holds with the time it was first published in a day block.
 * 4. **Delete**: a 4-hour block is deleted when the manifest names the day block's current ETag,
 *    holds the block's current ETag (checked again with a HEAD just before the DELETE), and that
 *    version was published `daySourceGraceMs` ago: longer than any gateway may go on answering
 *    the day from its 4-hour blocks.
 *
 * A crash anywhere leaves either nothing visible (the local file), or a whole day block without
 * a manifest naming it (the next pass merges again: merging a day block with blocks it already
 * holds changes nothing), or some 4-hour blocks left (deleted by the next pass).
 */
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { BlockReader, decodeLocatedRun, decodeLocatedRunInto, verifyBlock, type RunLocation } from '../block/reader.js';
import { bucketSource, fileSink, fileSource } from '../block/source.js';
import { BlockWriter, type ByteSink } from '../block/writer.js';
import { CorruptionError, ErrorCode, hasCode, StrataError } from '../errors.js';
import { DAY_MS, dayBlockKey, dayManifestKey, dayStartOf } from '../format/day-key.js';
import type { Samples } from '../format/run.js';
import type { Bucket, ObjectInfo } from '../objstore/index.js';
import { scanCheckedRuns } from '../block/scan.js';
import { joinRun } from '../format/run.js';
import { mergeSamples } from '../format/merge.js';

/** Manifest format version written. */
export const DAY_MANIFEST_VERSION = 1;
/** Prefix of the local files of merges in progress (removed after each merge, and by {@link cleanWorkDir}). */
export const DAY_TEMP_PREFIX = '.strata-day-';
/**
 * A merge file not written for this long is left over from a crash, and {@link cleanWorkDir}
 * removes it. A merge writes its file as it goes and reads it back within minutes, so a younger
 * file may belong to another lifecycle process that shares the directory (two on one host).
 */
export const DAY_TEMP_MAX_AGE_MS = 3600 * 1000;

/** A 4-hour block version held by a day block. */
export interface DaySource {
  readonly key: string;
  /** The ETag the block had when it was listed for the merge. */
  readonly etag: string;
  /** When a day block holding this version was first published (ms, the role's clock). */
  readonly foldedMs: number;
}

/** The manifest of a day block (`<shard>.day.json`, docs/format/block.md). */
export interface DayManifest {
  readonly version: number;
  readonly tenant: string;
  readonly shard: number;
  readonly dayStartMs: number;
  /** The ETag and block id of the day block this manifest describes. */
  readonly dayEtag: string;
  readonly dayBlockId: string;
  readonly publishedMs: number;
  readonly series: number;
  readonly samples: number;
  readonly bytes: number;
  readonly sources: readonly DaySource[];
}

/** The blocks of one (tenant, shard, day) as listed. */
export interface DayGroup {
  readonly tenant: string;
  readonly shard: number;
  readonly dayStartMs: bigint;
  /** 4-hour blocks of the day, by key. */
  readonly sources: Map<string, ObjectInfo>;
  day: ObjectInfo | null;
  manifest: ObjectInfo | null;
}

/** What a merge did. */
export interface DayMergeResult {
  readonly key: string;
  readonly tenant: string;
  readonly shard: number;
  readonly dayStartMs: number;
  readonly blockId: string;
  readonly series: number;
  readonly samples: number;
  readonly bytes: number;
  /** 4-hour blocks read (their versions not yet in the day block). */
  readonly sourcesMerged: number;
  /** Series only one source held, whose runs were copied as they were (not decoded and encoded again). */
  readonly seriesCopied: number;
  /** Whether a day block existed before (late data folded into it, or a manifest restored). */
  readonly replaced: boolean;
  readonly durationMs: number;
}

/** Options of the day work. */
export interface DayOptions {
  /** Local directory for the merge's file. */
  readonly workDir: string;
  readonly now: () => number;
  /** Most bytes the verification of a merged day block reads at once (default VERIFY_CHUNK_BYTES, src/block/reader.ts). */
  readonly verifyChunkBytes?: number;
}

/** Reads the manifest at `key`, or null when it is missing or does not parse (it is rewritten). */
export async function readDayManifest(bucket: Bucket, key: string): Promise<DayManifest | null> {
  let data: Buffer;
  try {
    data = await bucket.get(key);
  } catch (err) {
    if (hasCode(err, ErrorCode.NOT_FOUND)) return null;
    throw err;
  }
  try {
    const v = JSON.parse(data.toString('utf8')) as Partial<DayManifest> | null;
    if (v === null || v.version !== DAY_MANIFEST_VERSION || typeof v.dayEtag !== 'string' || !Array.isArray(v.sources)) return null;
    return v as DayManifest;
  } catch {
    return null; // a damaged manifest only costs a merge: the next merge rewrites it
  }
}

/** Whether the manifest holds `info` (key and ETag). */
function holds(m: DayManifest | null, info: ObjectInfo): DaySource | undefined {
  return m?.sources.find((s) => s.key === info.key && s.etag === info.etag);
}

/** The manifest when it describes the day block listed now; null otherwise. */
export function currentManifest(g: DayGroup, m: DayManifest | null): DayManifest | null {
  return g.day !== null && m !== null && m.dayEtag === g.day.etag ? m : null;
}

/** Whether the day is closed for merging at `nowMs`. */
export function dayClosed(dayStartMs: bigint, nowMs: number, dayMergeAfterMs: number): boolean {
  return Number(dayStartMs) + DAY_MS + dayMergeAfterMs <= nowMs;
}

/** Whether `g` needs a merge, given its manifest (read when the group has a day block). */
export function needsMerge(g: DayGroup, m: DayManifest | null): boolean {
  const cur = currentManifest(g, m);
  if (g.day !== null && cur === null) return true;
  for (const info of g.sources.values()) if (!holds(cur, info)) return true;
  return false;
}

/** The 4-hour blocks of `g` that may be deleted at `nowMs`. */
export function deletableSources(g: DayGroup, m: DayManifest | null, nowMs: number, graceMs: number): ObjectInfo[] {
  const cur = currentManifest(g, m);
  if (cur === null) return [];
  const out: ObjectInfo[] = [];
  for (const info of g.sources.values()) {
    const s = holds(cur, info);
    if (s && s.foldedMs + graceMs <= nowMs) out.push(info);
  }
  return out;
}

/** Groups listed keys into days; `sourceOf` parses a 4-hour block key. */
export class DayGroups {
  readonly groups = new Map<string, DayGroup>();

  private group(tenant: string, shard: number, dayStartMs: bigint): DayGroup {
    const id = `${tenant}/${dayStartMs}/${shard}`;
    let g = this.groups.get(id);
    if (!g) this.groups.set(id, (g = { tenant, shard, dayStartMs, sources: new Map(), day: null, manifest: null }));
    return g;
  }

  addSource(tenant: string, shard: number, windowStartMs: bigint, info: ObjectInfo): void {
    this.group(tenant, shard, dayStartOf(windowStartMs)).sources.set(info.key, info);
  }

  addDay(tenant: string, shard: number, dayStartMs: bigint, kind: 'block' | 'manifest', info: ObjectInfo): void {
    const g = this.group(tenant, shard, dayStartMs);
    if (kind === 'block') g.day = info;
    else g.manifest = info;
  }
}

/** Removes local files of merges a crash interrupted. */
export async function cleanWorkDir(dir: string, nowMs: number, maxAgeMs = DAY_TEMP_MAX_AGE_MS): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const name of await readdir(dir)) {
    if (!name.startsWith(DAY_TEMP_PREFIX) && !name.startsWith(`.${DAY_TEMP_PREFIX}`)) continue;
    const path = join(dir, name);
    // a file written within maxAgeMs may be the merge of another process sharing the directory
    const mtimeMs = await stat(path).then((st) => st.mtimeMs, () => null);
    if (mtimeMs !== null && nowMs - mtimeMs > maxAgeMs) await rm(path, { force: true });
  }
}

type Head = { loc: RunLocation; bytes: Uint8Array };

/**
 * Merges group `g` into a new day block and publishes it with its manifest (see the module
 * comment). `previous` is the manifest read for the plan (null: none or not current).
 * `shouldContinue` is asked before the PUT and before the manifest; `onStart` is told before
 * anything is read.
 */
export async function mergeDay(
  bucket: Bucket,
  g: DayGroup,
  previous: DayManifest | null,
  opts: DayOptions & { readonly shouldContinue: () => boolean; readonly onStart?: () => void },
): Promise<DayMergeResult> {
  const t0 = performance.now();
  const dayStart = g.dayStartMs;
  const dayEnd = dayStart + BigInt(DAY_MS);
  const key = dayBlockKey(g.tenant, g.shard, dayStart);
  const cur = currentManifest(g, previous);
  opts.onStart?.();
  const readers: { reader: BlockReader; info: ObjectInfo | null }[] = [];
  if (g.day !== null) {
    try {
      readers.push({ reader: await BlockReader.open(bucketSource(bucket, key)), info: null });
    } catch (err) {
      if (!hasCode(err, ErrorCode.NOT_FOUND)) throw err;
    }
  }
  // the 4-hour block versions the current day block holds need not be read again
  const sources = [...g.sources.values()].filter((info) => !(readers.length > 0 && holds(cur, info))).sort((a, b) => (a.key < b.key ? -1 : 1));
  for (const info of sources) {
    try {
      readers.push({ reader: await BlockReader.open(bucketSource(bucket, info.key)), info });
    } catch (err) {
      if (!hasCode(err, ErrorCode.NOT_FOUND)) throw err; // gone since the listing (retention): not held
    }
  }
  let numShards = 0;
  let expectedSeries = 0;
  for (const { reader } of readers) {
    const f = reader.footer;
    const name = reader.source.name;
    if (f.tenant !== g.tenant || f.shard !== g.shard || f.windowStart < dayStart || f.windowEnd > dayEnd) {
      throw new CorruptionError(name, reader.size, `block is for ${f.tenant}/shard ${f.shard}/[${f.windowStart}, ${f.windowEnd}), not a part of day ${dayStart} of ${g.tenant}/shard ${g.shard}`);
    }
    if (numShards !== 0 && f.numShards !== numShards) throw new CorruptionError(name, reader.size, `block was written with ${f.numShards} shards, another block of the day with ${numShards}`);
    numShards = f.numShards;
    expectedSeries = Math.max(expectedSeries, f.seriesCount);
  }
  if (readers.length === 0) throw new StrataError(ErrorCode.NOT_FOUND, `day ${dayStart} of ${g.tenant}/shard ${g.shard}: no block to merge (deleted since the listing)`);

  await mkdir(opts.workDir, { recursive: true });
  const file = join(opts.workDir, `${DAY_TEMP_PREFIX}${randomBytes(8).toString('hex')}.block`);
  // the writer's sink writes a temp file beside `file` and renames it when complete: a merge that
  // fails before that (a damaged source, a full disk, a lost lease) must close and remove it here,
  // or each failed pass leaves a file and an open descriptor behind
  const sink = await fileSink(file);
  try {
    const writer = new BlockWriter(sink, { tenant: g.tenant, shard: g.shard, numShards, windowStart: dayStart, windowEnd: dayEnd }, { expectedSeries, now: opts.now });
    // k-way merge by series id; parts oldest first (the day block, then the 4-hour blocks)
    const its = readers.map((r) => scanCheckedRuns(r.reader)[Symbol.asyncIterator]());
    const names = readers.map((r) => r.reader.source.name);
    const heads: (Head | null)[] = [];
    for (const it of its) {
      const r = await it.next();
      heads.push(r.done ? null : r.value);
    }
    let series = 0;
    let samples = 0;
    let copied = 0;
    const at: number[] = [];
    const scratch = { timestamps: new BigInt64Array(0), values: new Float64Array(0) };
    for (;;) {
      let min: bigint | null = null;
      for (const h of heads) if (h && (min === null || h.loc.id < min)) min = h.loc.id;
      if (min === null) break;
      at.length = 0;
      for (let i = 0; i < its.length; i++) if (heads[i]?.loc.id === min) at.push(i);
      if (at.length === 1) {
        // one source holds the series (the day block when late data does not touch it, or a
        // series of one window): its run goes in as it is, not encoded again. It is decoded
        // (into a scratch) against its index entry first, so that damage is reported against its
        // source, not against the merged file the verification below reads; and copied, since the
        // writer keeps it until its page closes
        const { loc, bytes } = heads[at[0]!]!;
        decodeLocatedRunInto(names[at[0]!]!, loc, bytes, scratch); // its CRC: checked by the scan
        const run = loc.timestamps ? joinRun(loc.timestamps, bytes, { object: names[at[0]!]!, offset: loc.offset }) : new Uint8Array(bytes);
        await writer.addEncoded(min, run, loc.sampleCount, loc.minTime, loc.maxTime);
        samples += loc.sampleCount;
        copied++;
      } else {
        const parts: Samples[] = at.map((i) => decodeLocatedRun(names[i]!, heads[i]!.loc, heads[i]!.bytes));
        const merged = mergeSamples(parts);
        await writer.add(min, merged);
        samples += merged.timestamps.length;
      }
      series++;
      // the bytes of a head are valid until its iterator moves on: used above, before this
      for (const i of at) {
        const r = await its[i]!.next();
        heads[i] = r.done ? null : r.value;
      }
    }
    const written = await writer.finish();
    // verify the whole file before anything is visible: checksums, every run decoded, counts (read in pieces: verify.ts)
    const local = await BlockReader.open(fileSource(file));
    const checked = await verifyBlock(local, opts.verifyChunkBytes);
    if (checked.series !== series || checked.samples !== samples || local.footer.blockId !== written.footer.blockId) {
      throw new CorruptionError(file, 0, `merged day block holds ${checked.series} series and ${checked.samples} samples, ${series} and ${samples} were written`);
    }
    if (!opts.shouldContinue()) throw new DayMergeStopped();
    // only over the version this merge started from (none: only where there is none): a replica
    // that paused here past its lease must not replace the day block another replica has since
    // published with late data, whose sources may be deleted by now (ALREADY_EXISTS: merged
    // again next pass, from what is then current)
    const stored = await bucket.put(key, { file }, g.day !== null ? { ifMatch: g.day.etag } : { ifNoneMatch: true });
    // read back what is published: the footer of the object at the key is ours, whole
    const back = await BlockReader.open(bucketSource(bucket, key));
    if (back.footer.blockId !== written.footer.blockId || back.size !== written.size || stored.size !== written.size) {
      throw new StrataError(ErrorCode.UNAVAILABLE, `day block "${key}" read back as block ${back.footer.blockId} of ${back.size} bytes, ${written.footer.blockId} of ${written.size} was written (another writer?); merged again next pass`);
    }
    const publishedMs = opts.now();
    // versions still listed that the previous day block held keep their time; the ones read now start theirs
    const kept = readers.length > 0 && readers[0]!.info === null ? (cur?.sources ?? []).filter((s) => g.sources.get(s.key)?.etag === s.etag) : [];
    const added = readers.filter((r) => r.info !== null).map((r) => ({ key: r.info!.key, etag: r.info!.etag, foldedMs: publishedMs }));
    const manifest: DayManifest = {
      version: DAY_MANIFEST_VERSION,
      tenant: g.tenant,
      shard: g.shard,
      dayStartMs: Number(dayStart),
      dayEtag: stored.etag,
      dayBlockId: written.footer.blockId,
      publishedMs,
      series,
      samples,
      bytes: written.size,
      sources: [...kept, ...added],
    };
    if (!opts.shouldContinue()) throw new DayMergeStopped();
    await bucket.put(dayManifestKey(g.tenant, g.shard, dayStart), Buffer.from(`${JSON.stringify(manifest)}\n`));
    return {
      key,
      tenant: g.tenant,
      shard: g.shard,
      dayStartMs: Number(dayStart),
      blockId: written.footer.blockId,
      series,
      samples,
      bytes: written.size,
      sourcesMerged: added.length,
      seriesCopied: copied,
      replaced: g.day !== null,
      durationMs: performance.now() - t0,
    };
  } catch (err) {
    await abortSink(sink, err, opts.workDir);
    throw err;
  } finally {
    await rm(file, { force: true });
  }
}

/**
 * Closes and removes the temp file of a failed merge's sink (nothing when the file was already
 * complete and renamed: the caller removes that one). When that fails too, the merge's error is
 * kept as the cause of one naming both; a lost lease stays what it is (the pass must stop), and
 * the file, if left, goes with {@link cleanWorkDir}.
 */
async function abortSink(sink: ByteSink, err: unknown, workDir: string): Promise<void> {
  try {
    await sink.abort();
  } catch (cleanup) {
    if (err instanceof DayMergeStopped) return;
    throw new StrataError(ErrorCode.STORAGE, `${(err as Error).message}; removing the merge's temp file in ${workDir} failed too: ${(cleanup as Error).message}`, { cause: err });
  }
}

/** A merge stopped before publishing because the lease was lost (nothing of it is visible). */
export class DayMergeStopped extends StrataError {
  constructor() {
    super(ErrorCode.UNAVAILABLE, 'the day merge stopped: this replica no longer holds the lease');
  }
}

/** What {@link deleteSource} did: deleted it, found it replaced since the listing (kept), or found it gone. */
export type SourceDeletion = 'deleted' | 'changed' | 'gone';

/**
 * Deletes a 4-hour block held by a day block, unless it changed since it was listed (late data
 * replaced it): a HEAD just before the DELETE, with nothing awaited in between. S3 has no
 * conditional DELETE, so a replacement stored between the two requests is deleted with its late
 * samples: docs/decisions/0008-day-source-delete-race.md gives the window and why it stays.
 */
export async function deleteSource(bucket: Bucket, info: ObjectInfo): Promise<SourceDeletion> {
  let now: ObjectInfo;
  try {
    now = await bucket.head(info.key);
  } catch (err) {
    if (hasCode(err, ErrorCode.NOT_FOUND)) return 'gone';
    throw err;
  }
  if (now.etag !== info.etag) return 'changed';
  await bucket.delete(info.key);
  return 'deleted';
}
