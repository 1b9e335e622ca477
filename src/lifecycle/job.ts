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
import { hasIncompleteUploads, type Bucket, type IncompleteUpload } from '../objstore/index.js';
import { StrataError, ErrorCode } from '../errors.js';

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
}

/** What a pass did. */
export interface LifecyclePassResult {
  readonly buckets: number;
  readonly blocksDeleted: { readonly retention: number; readonly tenant_deleted: number };
  readonly bytesDeleted: { readonly retention: number; readonly tenant_deleted: number };
  readonly debrisRemoved: number;
  readonly failures: number;
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
  const p = parseBlockKey(key);
  if (!p) return null;
  if (marked.has(p.tenant)) return 'tenant_deleted';
  const retention = retentionOf(cfg, p.tenant);
  if (retention === null) return null;
  const windowEnd = Number(p.windowStartMs) + opts.blockDurationMs;
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
    for await (const info of bucket.list('blocks/')) {
      const reason = deletionReason(info.key, cfg, marked, nowMs, opts);
      if (reason === null) continue;
      const p = parseBlockKey(info.key)!;
      batch.push({ bucket: name, key: info.key, tenant: p.tenant, shard: p.shard, windowStartMs: Number(p.windowStartMs), bytes: info.size, reason });
      if (batch.length >= concurrency) await drain(batch, (x) => bucket.delete(x.key), failBlock, doneBlock);
    }
    await drain(batch, (x) => bucket.delete(x.key), failBlock, doneBlock);

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
  return { buckets: buckets.length, blocksDeleted: blocks, bytesDeleted: bytes, debrisRemoved: debris, failures, reports };
}
