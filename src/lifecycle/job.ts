/**
 * One pass of the lifecycle job over every bucket the tenants config names (the default bucket and
 * each distinct tenant bucket):
 *
 * 1. **Retention**: a block whose window ended at least `retention + retentionGraceMs` ago is
 *    deleted (the tenant's `retentionMs`, else the file's default; none: kept). Gateways given the
 *    same tenants file answer reads of windows that ended `retention` ago with no data, so by the
 *    time a block is deleted every gateway already answers "no data" for it.
 * 2. **Tenant deletion**: every block of a tenant with a deletion mark is deleted, and the
 *    tenant's deletion report is updated (blocks and bytes removed, blocks left).
 * 3. **Cleanup**: incomplete writes (S3 multipart uploads, filesystem temp files) that started
 *    `incompleteUploadMaxAgeMs` ago or more are discarded.
 *
 * Everything it deletes is due for deletion whatever happens later, so a pass stopped part-way
 * (crash, lost lease) leaves only objects the next pass deletes, and a pass done twice deletes
 * nothing more. Deletions go out `deleteConcurrency` at a time; `shouldContinue` is asked before
 * each batch (the lease). With `dryRun` nothing is deleted or written; the events say what would be.
 */
import { bucketLocationOf } from '../tenancy/tenants.js';
import { retentionOf, type TenantsConfig } from '../tenancy/config.js';
import { listDeletionMarks, readDeletionReport, writeDeletionReport, type DeletionMark, type DeletionReport } from '../tenancy/deletion-marks.js';
import { parseBlockKey } from '../format/key.js';
import { DAY_MS, dayBlockKey, dayBlocksFit, dayManifestKey, parseDayKey } from '../format/day-key.js';
import { hasIncompleteUploads, type Bucket, type IncompleteUpload, type ObjectInfo } from '../objstore/index.js';
import { StrataError, ErrorCode } from '../errors.js';
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
  /** A deletion that failed (the pass goes on; the next pass retries it). */
  readonly onError?: (what: { bucket: string; key: string; err: unknown }) => void;
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
  /** A 4-hour block deleted because its day block holds it. */
  readonly onSourceDeleted?: (what: { bucket: string; key: string; tenant: string; shard: number; dayStartMs: number; bytes: number }) => void;
}

/** What a pass did. */
export interface LifecyclePassResult {
  readonly buckets: number;
  readonly blocksDeleted: { readonly retention: number; readonly tenant_deleted: number };
  readonly bytesDeleted: { readonly retention: number; readonly tenant_deleted: number };
  readonly debrisRemoved: number;
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

/** The distinct buckets of the config (default first), each with a description for logs. */
export async function distinctBuckets(b: LifecycleBuckets): Promise<{ name: string; bucket: Bucket }[]> {
  const cfg = b.config;
  const seen = new Set<string>([bucketLocationOf(cfg.defaultBucket)]);
  const def = await b.defaultBucket();
  const out = [{ name: def.name, bucket: def }];
  for (const t of cfg.tenants.values()) {
    if (!t.bucket) continue;
    const loc = bucketLocationOf(t.bucket);
    if (seen.has(loc)) continue;
    seen.add(loc);
    const bucket = await b.bucketFor(t.id);
    out.push({ name: bucket.name, bucket });
  }
  return out;
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
  const marks: DeletionMark[] = await listDeletionMarks(defaultBucket);
  const marked = new Set(marks.map((m) => m.tenant));
  const perTenant = new Map<string, { blocks: number; bytes: number; left: number }>(marks.map((m) => [m.tenant, { blocks: 0, bytes: 0, left: 0 }]));
  const blocks = { retention: 0, tenant_deleted: 0 };
  const bytes = { retention: 0, tenant_deleted: 0 };
  let debris = 0;
  let failures = 0;
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

  const buckets = await distinctBuckets(b);
  for (const { name, bucket } of buckets) {
    const batch: BlockDeletion[] = [];
    const doneBlock = (d: BlockDeletion): void => {
      blocks[d.reason]++;
      bytes[d.reason] += d.bytes;
      const pt = perTenant.get(d.tenant);
      if (pt && d.reason === 'tenant_deleted') {
        pt.blocks++;
        pt.bytes += d.bytes;
      }
      opts.onBlock?.(d);
    };
    const failBlock = (x: BlockDeletion): { bucket: string; key: string } => {
      const pt = perTenant.get(x.tenant);
      if (pt) pt.left++;
      return { bucket: name, key: x.key };
    };
    const groups = new DayGroups();
    for await (const info of bucket.list('blocks/')) {
      const reason = deletionReason(info.key, cfg, marked, nowMs, opts);
      if (reason === null) {
        if (days) {
          const b = parseBlockKey(info.key);
          if (b) {
            if (dayClosed(b.windowStartMs - (b.windowStartMs % BigInt(DAY_MS)), nowMs, days.dayMergeAfterMs)) groups.addSource(b.tenant, b.shard, b.windowStartMs, info);
          } else {
            const d = parseDayKey(info.key);
            if (d) groups.addDay(d.tenant, d.shard, d.dayStartMs, d.kind, info);
          }
        }
        continue;
      }
      const b = parseBlockKey(info.key);
      const d = b ? null : parseDayKey(info.key)!;
      const windowStartMs = Number(b ? b.windowStartMs : d!.dayStartMs);
      batch.push({ bucket: name, key: info.key, tenant: (b ?? d)!.tenant, shard: (b ?? d)!.shard, windowStartMs, bytes: info.size, reason });
      if (batch.length >= concurrency) await drain(batch, (x) => bucket.delete(x.key), failBlock, doneBlock);
    }
    await drain(batch, (x) => bucket.delete(x.key), failBlock, doneBlock);

    if (days) {
      const r = await dayStep(bucket, name, groups, nowMs, days, concurrency, go, (e) => {
        failures++;
        days.onMergeError?.(e);
      });
      dayMerges += r.merges;
      daySourcesDeleted += r.deleted;
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
  }

  const reports: DeletionReport[] = [];
  for (const m of marks) {
    const pt = perTenant.get(m.tenant)!;
    const prev = await readDeletionReport(defaultBucket, m.tenant);
    const report: DeletionReport = {
      tenant: m.tenant,
      markedMs: m.markedMs,
      blocksRemoved: (prev?.blocksRemoved ?? 0) + pt.blocks,
      bytesRemoved: (prev?.bytesRemoved ?? 0) + pt.bytes,
      lastPassMs: nowMs,
      blocksLeft: pt.left,
    };
    if (!opts.dryRun) {
      go();
      await writeDeletionReport(defaultBucket, report);
    }
    reports.push(report);
  }
  return { buckets: buckets.length, blocksDeleted: blocks, bytesDeleted: bytes, debrisRemoved: debris, failures, reports, dayMerges, daySourcesDeleted };
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
        onMergeError({ bucket: name, key: info.key, tenant: g.tenant, shard: g.shard, dayStartMs: Number(g.dayStartMs), err: r.reason });
      } else if (r.value) {
        deleted++;
        days.onSourceDeleted?.({ bucket: name, key: info.key, tenant: g.tenant, shard: g.shard, dayStartMs: Number(g.dayStartMs), bytes: info.size });
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
