/**
 * One pass of the lifecycle job over every bucket the tenants config names (the default bucket and
 * each distinct tenant bucket):
 *
 * 1. **Retention**: a block whose window ended at least `retention + retentionGraceMs` ago is
 *    deleted (the tenant's `retentionMs`, else the file's default; none: kept). Gateways given the
 *    same tenants file answer reads of windows that ended `retention` ago with no data, so by the
 *    time a block is deleted every gateway already answers "no data" for it.
 * 2. **Tenant deletion**: every block of a tenant with a deletion mark is deleted, and the
 *    tenant's deletion report is updated (blocks and bytes removed, blocks left). Before each
 *    batch of a marked tenant's deletions the report is written with the counts so far and the
 *    batch as `pending`; a pass that finds pending blocks of a killed pass counts those that are
 *    gone, so the report adds up to every block removed however often a pass was killed.
 * 3. **Cleanup**: incomplete writes (S3 multipart uploads, filesystem temp files) that started
 *    `incompleteUploadMaxAgeMs` ago or more are discarded.
 *
 * A tenant with time-partitioned buckets (src/tenancy/partitions.ts) has each existing partition
 * visited like a bucket of its own; a partition is dropped whole (every object and incomplete
 * upload deleted, then the bucket) once every window it can hold is due for retention, or when the
 * tenant is marked for deletion. A partition that does not exist (dropped meanwhile) is skipped.
 *
 * Everything it deletes is due for deletion whatever happens later, so a pass stopped part-way
 * (crash, lost lease) leaves only objects the next pass deletes, and a pass done twice deletes
 * nothing more. Deletions go out `deleteConcurrency` at a time; `shouldContinue` is asked before
 * each batch (the lease). With `dryRun` nothing is deleted or written; the events say what would be.
 */
import { bucketLocationOf } from '../tenancy/tenants.js';
import { partitionLastWindowEnd, type Partition } from '../tenancy/partitions.js';
import { retentionOf, type TenantsConfig } from '../tenancy/config.js';
import { listDeletionMarks, readDeletionReport, writeDeletionReport, type DeletionMark, type DeletionReport, type PendingDeletion } from '../tenancy/deletion-marks.js';
import { DAY_INDEX_KEY, DayIndexBuilder, type DayBlockRef } from '../tenancy/day-index.js';
import { parseBlockKey } from '../format/key.js';
import { DAY_MS, dayBlockKey, dayBlocksFit, dayManifestKey, dayStartOf, parseDayKey } from '../format/day-key.js';
import { hasIncompleteUploads, type Bucket, type IncompleteUpload, type ObjectInfo } from '../objstore/index.js';
import { StrataError, ErrorCode, hasCode } from '../errors.js';
import { currentManifest, dayClosed, DayGroups, DayMergeStopped, deletableSources, deleteSource, mergeDay, needsMerge, readDayManifest, type DayGroup, type DayMergeResult } from './day.js';

/** Why a block is deleted. */
export type DeletionReason = 'retention' | 'tenant_deleted';

/** A block deleted (or, in a dry run, due for deletion). */
export interface BlockDeletion {
  readonly bucket: string;
  readonly key: string;
  readonly tenant: string;
  readonly shard: number;
  readonly windowStartMs: number;
  readonly bytes: number;
  readonly reason: DeletionReason;
}

/** An incomplete write discarded (or due). */
export interface DebrisRemoval {
  readonly bucket: string;
  readonly upload: IncompleteUpload;
}

/** What the job needs of the tenant registry. */
export interface LifecycleBuckets {
  readonly config: TenantsConfig;
  defaultBucket(): Promise<Bucket>;
  /** The bucket of a tenant of the config (its own, or the default one). */
  bucketFor(tenant: string): Promise<Bucket>;
  /** The existing partitions of a tenant with time-partitioned buckets (empty for others). */
  partitionsOf?(tenant: string): Promise<Partition[]>;
  /** The bucket of one partition. */
  partitionBucket?(tenant: string, name: string): Promise<Bucket>;
  /** Deletes the (empty) bucket of a partition; false when it did not exist. */
  dropPartition?(tenant: string, name: string): Promise<boolean>;
}

/** A partition dropped whole (or, in a dry run, due to be). */
export interface BucketDrop {
  readonly bucket: string;
  readonly tenant: string;
  readonly startMs: number;
  readonly endMs: number;
  readonly reason: DeletionReason;
  /** Objects deleted from it (blocks, day manifests, anything else) and their bytes. */
  readonly objects: number;
  readonly bytes: number;
  /** False when the bucket was already gone. */
  readonly existed: boolean;
}

/** One bucket a pass visits: the default one, a tenant's own, or one partition of a tenant's. */
export interface LifecycleBucket {
  readonly name: string;
  readonly bucket: Bucket;
  readonly partition?: { readonly tenant: string; readonly p: Partition };
  /**
   * The tenants whose blocks it can hold: undefined for the default bucket (any tenant's, one
   * that moved to a bucket of its own included), the tenants the config puts in it otherwise.
   */
  readonly tenants?: readonly string[];
}

export interface LifecycleJobOptions {
  readonly blockDurationMs: number;
  readonly retentionGraceMs: number;
  readonly incompleteUploadMaxAgeMs: number;
  readonly deleteConcurrency: number;
  readonly dryRun?: boolean;
  /** Asked before each batch of deletions; false stops the pass (LifecyclePassStopped). */
  readonly shouldContinue?: () => boolean;
  readonly onBlock?: (d: BlockDeletion) => void;
  readonly onDebris?: (d: DebrisRemoval) => void;
  /** A partition dropped whole. */
  readonly onBucketDropped?: (d: BucketDrop) => void;
  /** A deletion that failed (the pass goes on; the next pass retries it). */
  /** `tenants`: those whose blocks the bucket holds, when it is not the default bucket. */
  readonly onError?: (what: { bucket: string; key: string; err: unknown; tenants?: readonly string[] | undefined }) => void;
  /** Day blocks (src/lifecycle/day.ts); absent: none are made. */
  readonly days?: DayPassOptions;
}

/** The day-block part of a pass. */
export interface DayPassOptions {
  readonly dayMergeAfterMs: number;
  readonly daySourceGraceMs: number;
  readonly workDir: string;
  /** The role's clock (the merge's publication times). */
  readonly now: () => number;
  /** Before a day merge reads anything. */
  readonly onMergeStart?: (what: { bucket: string; key: string; tenant: string; shard: number; dayStartMs: number; sources: number; replacing: boolean }) => void;
  readonly onMerge?: (what: DayMergeResult & { bucket: string }) => void;
  readonly onMergeError?: (what: { bucket: string; key: string; tenant: string; shard: number; dayStartMs: number; err: unknown }) => void;
  /** A 4-hour block deleted because its day block holds it (`etag`: the version the day block holds). */
  readonly onSourceDeleted?: (what: { bucket: string; key: string; tenant: string; shard: number; dayStartMs: number; bytes: number; etag: string }) => void;
  /** A 4-hour block due for deletion found replaced (late data) just before its DELETE: kept. */
  readonly onSourceChanged?: (what: { bucket: string; key: string; tenant: string; shard: number; dayStartMs: number; bytes: number; etag: string }) => void;
  /** The bucket's day-block index was written (src/tenancy/day-index.ts). */
  readonly onDayIndex?: (what: { bucket: string; key: string }) => void;
}

/** What a pass did. */
export interface LifecyclePassResult {
  readonly buckets: number;
  readonly blocksDeleted: { readonly retention: number; readonly tenant_deleted: number };
  readonly bytesDeleted: { readonly retention: number; readonly tenant_deleted: number };
  readonly debrisRemoved: number;
  /** Partitions (time-partitioned tenant buckets) dropped whole. */
  readonly bucketsDropped: number;
  readonly failures: number;
  /** Day blocks written (new or with late data folded in), and 4-hour blocks deleted as held by one. */
  readonly dayMerges: number;
  readonly daySourcesDeleted: number;
  readonly reports: readonly DeletionReport[];
}

/** A pass stopped because `shouldContinue` said so (the lease was lost). */
export class LifecyclePassStopped extends StrataError {
  constructor() {
    super(ErrorCode.UNAVAILABLE, 'the lifecycle pass stopped: this replica no longer holds the lease');
  }
}

/**
 * The distinct buckets of the config (default first), each with a description for logs; a tenant
 * with time-partitioned buckets contributes every partition that exists.
 */
export async function distinctBuckets(b: LifecycleBuckets, onTenantError?: (tenant: string, err: unknown) => void): Promise<LifecycleBucket[]> {
  const cfg = b.config;
  const seen = new Set<string>([bucketLocationOf(cfg.defaultBucket)]);
  const def = await b.defaultBucket();
  const out: LifecycleBucket[] = [{ name: def.name, bucket: def }];
  for (const t of cfg.tenants.values()) {
    if (!t.bucket) continue;
    try {
      if (t.partitions) {
        if (!b.partitionsOf || !b.partitionBucket) throw new StrataError(ErrorCode.CONFIG, `tenant "${t.id}" has time-partitioned buckets, which this tool cannot list`);
        const found: LifecycleBucket[] = [];
        for (const p of await b.partitionsOf(t.id)) {
          const bucket = await b.partitionBucket(t.id, p.name);
          found.push({ name: bucket.name, bucket, partition: { tenant: t.id, p }, tenants: [t.id] });
        }
        out.push(...found);
        continue;
      }
      const loc = bucketLocationOf(t.bucket);
      if (seen.has(loc)) continue;
      const bucket = await b.bucketFor(t.id);
      seen.add(loc);
      const tenants = [...cfg.tenants.values()].filter((u) => u.bucket && !u.partitions && bucketLocationOf(u.bucket) === loc).map((u) => u.id);
      out.push({ name: bucket.name, bucket, tenants });
    } catch (err) {
      // with onTenantError, a tenant whose buckets cannot be listed or opened is reported and
      // skipped: the other tenants' buckets are still served
      if (!onTenantError) throw err;
      onTenantError(t.id, err);
    }
  }
  return out;
}

/**
 * Why partition `p` of `tenant` is dropped whole at `nowMs`, or null: the tenant is marked, or
 * every window the partition can hold ended `retention + retentionGraceMs` ago.
 */
export function partitionDropReason(
  tenant: string,
  p: Partition,
  cfg: TenantsConfig,
  marked: ReadonlySet<string>,
  nowMs: number,
  opts: { readonly blockDurationMs: number; readonly retentionGraceMs: number },
): DeletionReason | null {
  if (marked.has(tenant)) return 'tenant_deleted';
  const retention = retentionOf(cfg, tenant);
  if (retention === null) return null;
  return partitionLastWindowEnd(p, opts.blockDurationMs) + retention + opts.retentionGraceMs <= nowMs ? 'retention' : null;
}

/** Whether `key` is a block (4-hour or day), not a day manifest: what the counts of blocks count. */
export function isBlockObject(key: string): boolean {
  return parseBlockKey(key) !== null || parseDayKey(key)?.kind === 'block';
}

/**
 * The deletion reason of the block at `key` at `nowMs`, or null when it stays (or `key` is not a
 * block key).
 */
export function deletionReason(
  key: string,
  cfg: TenantsConfig,
  marked: ReadonlySet<string>,
  nowMs: number,
  opts: { readonly blockDurationMs: number; readonly retentionGraceMs: number },
): DeletionReason | null {
  const b = parseBlockKey(key);
  const d = b ? null : parseDayKey(key);
  const p = b ?? d;
  if (!p) return null;
  if (marked.has(p.tenant)) return 'tenant_deleted';
  const retention = retentionOf(cfg, p.tenant);
  if (retention === null) return null;
  // a day block and its manifest go with their whole day
  const windowEnd = b ? Number(b.windowStartMs) + opts.blockDurationMs : Number(d!.dayStartMs) + DAY_MS;
  return windowEnd + retention + opts.retentionGraceMs <= nowMs ? 'retention' : null;
}

/** Runs one pass at `nowMs`; see the module comment. */
export async function runLifecyclePass(b: LifecycleBuckets, nowMs: number, opts: LifecycleJobOptions): Promise<LifecyclePassResult> {
  const cfg = b.config;
  const defaultBucket = await b.defaultBucket();
  let badMarks = 0;
  const marks: DeletionMark[] = await listDeletionMarks(defaultBucket, (key, err) => {
    // that tenant is not deleted until its mark is readable again; the rest of the pass goes on
    badMarks++;
    opts.onError?.({ bucket: defaultBucket.name, key, err });
  });
  const marked = new Set(marks.map((m) => m.tenant));
  const perTenant = new Map<string, { blocks: number; bytes: number; left: number }>(marks.map((m) => [m.tenant, { blocks: 0, bytes: 0, left: 0 }]));
  const blocks = { retention: 0, tenant_deleted: 0 };
  const bytes = { retention: 0, tenant_deleted: 0 };
  let debris = 0;
  let dropped = 0;
  let failures = badMarks;
  let dayMerges = 0;
  let daySourcesDeleted = 0;
  const days = opts.days && dayBlocksFit(opts.blockDurationMs) && !opts.dryRun ? opts.days : null;
  const go = (): void => {
    if (opts.shouldContinue && !opts.shouldContinue()) throw new LifecyclePassStopped();
  };
  const concurrency = Math.max(1, opts.deleteConcurrency);

  /** Deletes a batch (unless dry run), reporting each success to `done` and each failure to onError. */
  const drain = async <T>(batch: T[], del: (x: T) => Promise<void>, what: (x: T) => { bucket: string; key: string }, done: (x: T) => void): Promise<void> => {
    if (batch.length === 0) return;
    go();
    const items = batch.splice(0);
    const results = opts.dryRun ? items.map(() => ({ status: 'fulfilled' as const })) : await Promise.allSettled(items.map((x) => del(x)));
    results.forEach((r, i) => {
      const x = items[i]!;
      if (r.status === 'fulfilled') done(x);
      else {
        failures++;
        opts.onError?.({ ...what(x), err: r.reason });
      }
    });
  };

  const buckets = await distinctBuckets(b, (tenant, err) => {
    failures++;
    const pt = perTenant.get(tenant);
    if (pt) pt.left++;
    opts.onError?.({ bucket: `(buckets of tenant ${tenant})`, key: '', err });
  });

  // a marked tenant's own bucket (as its mark names it) that is not its bucket in the tenants
  // file now is not visited: its blocks there are left, and the deletion is not complete
  for (const m of marks) {
    if (m.ownBucket === undefined) continue;
    const now = b.config.tenants.get(m.tenant)?.bucket;
    if (now && bucketLocationOf(now) === m.ownBucket.location) continue;
    failures++;
    perTenant.get(m.tenant)!.left++;
    opts.onError?.({
      bucket: m.ownBucket.where,
      key: '',
      err: new StrataError(
        ErrorCode.CONFIG,
        `tenant "${m.tenant}" was marked for deletion with its own bucket ${m.ownBucket.where}, which is not its bucket in the tenants file now: its blocks there cannot be deleted; keep the tenant and that bucket in the file until its deletion report says blocksLeft: 0`,
      ),
    });
  }

  // what earlier passes removed of each marked tenant: their reports, plus the blocks a killed
  // pass was deleting that are gone now (those still there are listed and counted below; those
  // whose bucket cannot be asked now stay pending)
  const earlier = new Map<string, { blocks: number; bytes: number; pending: PendingDeletion[] }>();
  const byName = new Map(buckets.map((x) => [x.name, x.bucket]));
  for (const m of marks) {
    const prev = await readDeletionReport(defaultBucket, m.tenant);
    const e = { blocks: prev?.blocksRemoved ?? 0, bytes: prev?.bytesRemoved ?? 0, pending: [] as PendingDeletion[] };
    for (const p of prev?.pending ?? []) {
      const bk = byName.get(p.bucket);
      const gone = bk === undefined ? null : await bk.head(p.key).then(() => false, (err: unknown) => (hasCode(err, ErrorCode.NOT_FOUND) ? true : null));
      if (gone === true) {
        if (isBlockObject(p.key)) e.blocks++;
        e.bytes += p.bytes;
      } else if (gone === null) e.pending.push(p);
    }
    earlier.set(m.tenant, e);
  }
  const reportOf = (m: DeletionMark, pending: readonly PendingDeletion[]): DeletionReport => {
    const pt = perTenant.get(m.tenant)!;
    const e = earlier.get(m.tenant)!;
    const all = [...e.pending, ...pending];
    return {
      tenant: m.tenant,
      markedMs: m.markedMs,
      blocksRemoved: e.blocks + pt.blocks,
      bytesRemoved: e.bytes + pt.bytes,
      lastPassMs: nowMs,
      // a report written while the pass runs (blocks pending) is not the end of it: what has
      // not been listed yet is unknown, so it never says 0 (the condition to remove the tenant)
      blocksLeft: pending.length > 0 ? Math.max(1, pt.left + pending.length) : pt.left,
      ...(all.length > 0 ? { pending: all } : {}),
    };
  };
  /** Writes the report of each marked tenant in `batch`, with its blocks of the batch pending. */
  const journal = async (batch: readonly BlockDeletion[]): Promise<void> => {
    if (opts.dryRun) return;
    for (const m of marks) {
      const pending = batch.filter((x) => x.tenant === m.tenant && x.reason === 'tenant_deleted').map((x) => ({ bucket: x.bucket, key: x.key, bytes: x.bytes }));
      if (pending.length === 0) continue;
      go();
      await writeDeletionReport(defaultBucket, reportOf(m, pending));
    }
  };

  for (const { name, bucket, partition, tenants } of buckets) {
    try {
      const batch: BlockDeletion[] = [];
      const doneBlock = (d: BlockDeletion): void => {
        // a day manifest goes with its day block; it is bytes, not a block
        const block = isBlockObject(d.key);
        if (block) blocks[d.reason]++;
        bytes[d.reason] += d.bytes;
        const pt = perTenant.get(d.tenant);
        if (pt && d.reason === 'tenant_deleted') {
          if (block) pt.blocks++;
          pt.bytes += d.bytes;
        }
        opts.onBlock?.(d);
      };
      const failBlock = (x: BlockDeletion): { bucket: string; key: string } => {
        const pt = perTenant.get(x.tenant);
        if (pt) pt.left++;
        return { bucket: name, key: x.key };
      };
      const deleteBlocks = async (done: (d: BlockDeletion) => void): Promise<void> => {
        if (batch.length === 0) return;
        await journal(batch);
        await drain(batch, (x) => bucket.delete(x.key), failBlock, done);
      };
      const dropReason = partition ? partitionDropReason(partition.tenant, partition.p, cfg, marked, nowMs, opts) : null;
      if (partition && dropReason !== null) {
        // the whole partition goes: every object (blocks first, counted as such), every incomplete upload, then the bucket
        const failedBefore = failures;
        let objects = 0;
        let objectBytes = 0;
        const others: ObjectInfo[] = [];
        const counted = (size: number): void => {
          objects++;
          objectBytes += size;
        };
        const doneOther = (info: ObjectInfo): void => counted(info.size);
        const doneDropped = (d: BlockDeletion): void => {
          counted(d.bytes);
          doneBlock(d);
        };
        for await (const info of bucket.list('')) {
          const p = parseBlockKey(info.key) ?? parseDayKey(info.key);
          if (p && p.tenant === partition.tenant) {
            const windowStartMs = Number('windowStartMs' in p ? p.windowStartMs : p.dayStartMs);
            batch.push({ bucket: name, key: info.key, tenant: p.tenant, shard: p.shard, windowStartMs, bytes: info.size, reason: dropReason });
            if (batch.length >= concurrency) await deleteBlocks(doneDropped);
          } else {
            others.push(info);
            if (others.length >= concurrency) await drain(others, (x) => bucket.delete(x.key), (x) => ({ bucket: name, key: x.key }), doneOther);
          }
        }
        await deleteBlocks(doneDropped);
        await drain(others, (x) => bucket.delete(x.key), (x) => ({ bucket: name, key: x.key }), doneOther);
        if (hasIncompleteUploads(bucket)) {
          // every incomplete upload, whatever its age: the bucket goes
          const uploads: IncompleteUpload[] = [];
          const discard = (): Promise<void> =>
            drain(uploads, (x) => bucket.discardIncompleteUpload(x), (x) => ({ bucket: name, key: x.key }), (u) => {
              debris++;
              opts.onDebris?.({ bucket: name, upload: u });
            });
          for await (const u of bucket.listIncompleteUploads('')) {
            uploads.push(u);
            if (uploads.length >= concurrency) await discard();
          }
          await discard();
        }
        if (failures > failedBefore) continue; // some object is left: the next pass tries again
        let existed = true;
        if (!opts.dryRun) {
          go();
          try {
            existed = b.dropPartition ? await b.dropPartition(partition.tenant, partition.p.name) : true;
          } catch (err) {
            failures++;
            const pt = perTenant.get(partition.tenant);
            if (pt) pt.left++;
            opts.onError?.({ bucket: name, key: '', err });
            continue;
          }
        }
        dropped++;
        opts.onBucketDropped?.({ bucket: name, tenant: partition.tenant, startMs: partition.p.startMs, endMs: partition.p.endMs, reason: dropReason, objects, bytes: objectBytes, existed });
        continue;
      }
      // Keys are listed in order and a (tenant, day)'s keys are contiguous (blocks/<tenant>/<window
      // start, 16 digits>/...), so each day's groups are handed to the day step as soon as the
      // listing has passed the day: at most one (tenant, day)'s keys are held, never the listing.
      let groups = new DayGroups();
      let listedDay: string | null = null;
      // the day blocks of the bucket as listed, and those this pass publishes: the day-block index
      // written once the bucket is done (src/tenancy/day-index.ts)
      const dayIndex = days ? new DayIndexBuilder() : null;
      // no later than the listing below, on the role's clock (and no later than the pass's time)
      const listedAtMs = days ? Math.min(nowMs, days.now()) : nowMs;
      const dayDone = async (): Promise<void> => {
        if (!days || groups.groups.size === 0) return;
        const done = groups;
        groups = new DayGroups();
        const r = await dayStep(
          bucket,
          name,
          done,
          nowMs,
          days,
          concurrency,
          go,
          (e) => {
            failures++;
            days.onMergeError?.(e);
          },
          (e) => {
            // a failed deletion of a held 4-hour block is a failed deletion, not a failed merge
            failures++;
            opts.onError?.(e);
          },
          (ref) => dayIndex?.add(ref),
        );
        dayMerges += r.merges;
        daySourcesDeleted += r.deleted;
      };
      for await (const info of bucket.list('blocks/')) {
        if (days) {
          const k = parseBlockKey(info.key);
          const dk = k ? null : parseDayKey(info.key);
          const day: string | null = k ? `${k.tenant}/${dayStartOf(k.windowStartMs)}` : dk ? `${dk.tenant}/${dk.dayStartMs}` : listedDay;
          if (day !== listedDay) {
            await dayDone();
            listedDay = day;
          }
        }
        const reason = deletionReason(info.key, cfg, marked, nowMs, opts);
        if (reason === null) {
          if (days) {
            const b = parseBlockKey(info.key);
            if (b) {
              if (dayClosed(b.windowStartMs - (b.windowStartMs % BigInt(DAY_MS)), nowMs, days.dayMergeAfterMs)) groups.addSource(b.tenant, b.shard, b.windowStartMs, info);
            } else {
              const d = parseDayKey(info.key);
              if (d) {
                groups.addDay(d.tenant, d.shard, d.dayStartMs, d.kind, info);
                if (d.kind === 'block') dayIndex?.add(d);
              }
            }
          }
          continue;
        }
        const b = parseBlockKey(info.key);
        const d = b ? null : parseDayKey(info.key)!;
        const windowStartMs = Number(b ? b.windowStartMs : d!.dayStartMs);
        batch.push({ bucket: name, key: info.key, tenant: (b ?? d)!.tenant, shard: (b ?? d)!.shard, windowStartMs, bytes: info.size, reason });
        if (batch.length >= concurrency) await deleteBlocks(doneBlock);
      }
      await deleteBlocks(doneBlock);
      await dayDone();
      if (days && dayIndex) {
        // readers trust it until listedAtMs + daySourceGraceMs less a margin; a failure leaves the
        // previous index, which bounds its own trust the same way
        go();
        try {
          await bucket.put(DAY_INDEX_KEY, dayIndex.encode(listedAtMs, days.daySourceGraceMs));
          days.onDayIndex?.({ bucket: name, key: DAY_INDEX_KEY });
        } catch (err) {
          failures++;
          opts.onError?.({ bucket: name, key: DAY_INDEX_KEY, err });
        }
      }

      if (hasIncompleteUploads(bucket)) {
        const cutoff = nowMs - opts.incompleteUploadMaxAgeMs;
        const old: IncompleteUpload[] = [];
        const doneDebris = (u: IncompleteUpload): void => {
          debris++;
          opts.onDebris?.({ bucket: name, upload: u });
        };
        for await (const u of bucket.listIncompleteUploads('')) {
          if (u.startedMs > cutoff) continue;
          old.push(u);
          if (old.length >= concurrency) await drain(old, (x) => bucket.discardIncompleteUpload(x), (x) => ({ bucket: name, key: x.key }), doneDebris);
        }
        await drain(old, (x) => bucket.discardIncompleteUpload(x), (x) => ({ bucket: name, key: x.key }), doneDebris);
      }
    } catch (err) {
      if (err instanceof LifecyclePassStopped) throw err;
      // one bucket that cannot be listed or written (gone, access denied, unreachable) is
      // reported and left to the next pass; the others are still served. A marked tenant that
      // may have blocks there (any tenant in the default bucket, the bucket's own tenants in
      // another) does not get a complete deletion report; the others' are not held back by it
      failures++;
      for (const [tenant, pt] of perTenant) if (tenants === undefined || tenants.includes(tenant)) pt.left++;
      opts.onError?.({ bucket: name, key: '', err, tenants: tenants ?? (partition ? [partition.tenant] : undefined) });
    }
  }

  const reports: DeletionReport[] = [];
  for (const m of marks) {
    const report = reportOf(m, []);
    if (!opts.dryRun) {
      go();
      await writeDeletionReport(defaultBucket, report);
    }
    reports.push(report);
  }
  return { buckets: buckets.length, blocksDeleted: blocks, bytesDeleted: bytes, debrisRemoved: debris, bucketsDropped: dropped, failures, reports, dayMerges, daySourcesDeleted };
}

/**
 * The day-block step of a pass over one bucket (src/lifecycle/day.ts): for every closed day
 * listed, merge when the day block does not hold every 4-hour block listed, else delete the
 * 4-hour blocks it has held for `daySourceGraceMs`. Merges run one at a time; the lease is asked
 * before each merge and each batch of deletions. A failed merge is reported and left to the next
 * pass; nothing of it is visible.
 */
async function dayStep(
  bucket: Bucket,
  name: string,
  groups: DayGroups,
  nowMs: number,
  days: DayPassOptions,
  concurrency: number,
  go: () => void,
  onMergeError: (e: { bucket: string; key: string; tenant: string; shard: number; dayStartMs: number; err: unknown }) => void,
  onDeleteError: (e: { bucket: string; key: string; err: unknown }) => void,
  onPublished: (ref: DayBlockRef) => void,
): Promise<{ merges: number; deleted: number }> {
  let merges = 0;
  let deleted = 0;
  const toDelete: { g: DayGroup; info: ObjectInfo }[] = [];
  const drainDeletes = async (): Promise<void> => {
    if (toDelete.length === 0) return;
    go();
    const items = toDelete.splice(0);
    const results = await Promise.allSettled(items.map((x) => deleteSource(bucket, x.info)));
    results.forEach((r, i) => {
      const { g, info } = items[i]!;
      if (r.status === 'rejected') {
        onDeleteError({ bucket: name, key: info.key, err: r.reason });
      } else if (r.value === 'deleted') {
        deleted++;
        days.onSourceDeleted?.({ bucket: name, key: info.key, tenant: g.tenant, shard: g.shard, dayStartMs: Number(g.dayStartMs), bytes: info.size, etag: info.etag });
      } else if (r.value === 'changed') {
        // late data replaced it since the listing: kept, and folded into the day block by the next pass
        days.onSourceChanged?.({ bucket: name, key: info.key, tenant: g.tenant, shard: g.shard, dayStartMs: Number(g.dayStartMs), bytes: info.size, etag: info.etag });
      }
    });
  };
  for (const g of groups.groups.values()) {
    if (!dayClosed(g.dayStartMs, nowMs, days.dayMergeAfterMs)) continue;
    if (g.day === null && g.sources.size === 0) continue;
    // a manifest written after the day block, with no 4-hour block left, needs no read
    if (g.sources.size === 0 && g.manifest !== null && g.day !== null && g.manifest.lastModifiedMs >= g.day.lastModifiedMs) continue;
    const key = dayManifestKey(g.tenant, g.shard, g.dayStartMs);
    const where = { bucket: name, key: dayBlockKey(g.tenant, g.shard, g.dayStartMs), tenant: g.tenant, shard: g.shard, dayStartMs: Number(g.dayStartMs) };
    try {
      const m = g.day !== null && g.manifest !== null ? await readDayManifest(bucket, key) : null;
      if (needsMerge(g, m)) {
        go();
        const r = await mergeDay(bucket, g, m, {
          ...days,
          shouldContinue: () => {
            try {
              go();
              return true;
            } catch {
              return false;
            }
          },
          onStart: () => days.onMergeStart?.({ ...where, sources: g.sources.size, replacing: currentManifest(g, m) !== null || g.day !== null }),
        });
        merges++;
        onPublished({ tenant: g.tenant, shard: g.shard, dayStartMs: g.dayStartMs });
        days.onMerge?.({ ...r, bucket: name });
      } else {
        for (const info of deletableSources(g, m, nowMs, days.daySourceGraceMs)) {
          toDelete.push({ g, info });
          if (toDelete.length >= concurrency) await drainDeletes();
        }
      }
    } catch (err) {
      if (err instanceof LifecyclePassStopped || err instanceof DayMergeStopped) throw new LifecyclePassStopped();
      onMergeError({ ...where, err });
    }
  }
  await drainDeletes();
  return { merges, deleted };
}
