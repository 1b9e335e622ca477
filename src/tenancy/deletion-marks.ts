/**
 * Tenant deletion marks: `strata tenant delete <tenant>` stores one small JSON object per tenant
 * in the default bucket, at `lifecycle/deleted-tenants/<tenant>.json`. The mark is durable and
 * permanent: the lifecycle role deletes every block of a marked tenant on each pass (so a crash
 * part-way resumes on the next pass, and blocks flushed after the mark are removed too), and
 * aggregators refuse the tenant's writes with FAILED_PRECONDITION once they have seen the mark
 * (they re-read the marks every `deletionMarksPollMs`). What a pass removed is written next to it,
 * at `lifecycle/reports/deleted-tenants/<tenant>.json`.
 */
import { ErrorCode, ObjectStoreError, StrataError } from '../errors.js';
import { validateTenant } from '../format/key.js';
import type { Bucket, BucketReader } from '../objstore/index.js';
import type { Logger } from '../common/logger.js';

/** Where the marks live in the default bucket. */
export const DELETION_MARKS_PREFIX = 'lifecycle/deleted-tenants/';
/** Where the deletion reports live in the default bucket. */
export const DELETION_REPORTS_PREFIX = 'lifecycle/reports/deleted-tenants/';

/** A tenant marked for deletion. */
export interface DeletionMark {
  readonly tenant: string;
  /** When it was marked (ms since the epoch, the marking machine's clock). */
  readonly markedMs: number;
  /**
   * The tenant's own bucket (or bucket template) when it was marked, if it had one: its deletion
   * is complete only once a pass has been through that bucket, so a tenant whose bucket left the
   * tenants file is reported with blocks left, not as done. Absent in marks of older versions.
   */
  readonly ownBucket?: OwnBucketOfMark;
}

/** Where a marked tenant's own blocks are (no credentials). */
export interface OwnBucketOfMark {
  /** `bucketLocationOf` of the tenant's bucket config (src/tenancy/tenants.ts). */
  readonly location: string;
  /** The bucket as configured, for messages. */
  readonly where: string;
}

/** What the lifecycle role has removed of a marked tenant so far. */
export interface DeletionReport {
  readonly tenant: string;
  readonly markedMs: number;
  /** Blocks and bytes removed, over every pass. */
  readonly blocksRemoved: number;
  readonly bytesRemoved: number;
  /** When the last pass ended, and how many of the tenant's blocks it found left afterwards (0: done). */
  readonly lastPassMs: number;
  readonly blocksLeft: number;
  /**
   * Blocks a pass was deleting when it wrote this report (written before each batch of deletions,
   * so that a pass killed part-way loses no count: the next pass counts those that are gone). Empty
   * or absent once a pass ended.
   */
  readonly pending?: readonly PendingDeletion[];
}

/** A block of a marked tenant whose deletion was under way. */
export interface PendingDeletion {
  readonly bucket: string;
  readonly key: string;
  readonly bytes: number;
}

/** The key of `tenant`'s mark. */
export function deletionMarkKey(tenant: string): string {
  validateTenant(tenant);
  return `${DELETION_MARKS_PREFIX}${tenant}.json`;
}

/** The key of `tenant`'s deletion report. */
export function deletionReportKey(tenant: string): string {
  validateTenant(tenant);
  return `${DELETION_REPORTS_PREFIX}${tenant}.json`;
}

function parseMark(key: string, data: Buffer): DeletionMark {
  let v: unknown;
  try {
    v = JSON.parse(data.toString('utf8'));
  } catch (err) {
    throw new StrataError(ErrorCode.CORRUPT, `reading the deletion mark "${key}": not JSON`, { cause: err });
  }
  const m = v as Partial<DeletionMark> | null;
  let keyOfTenant: string | null = null;
  try {
    if (m !== null && typeof m.tenant === 'string') keyOfTenant = deletionMarkKey(m.tenant);
  } catch {
    // not a valid tenant name: the mark is damaged
  }
  const own = m?.ownBucket as Partial<OwnBucketOfMark> | undefined;
  const ownOk = own === undefined || (own !== null && typeof own === 'object' && typeof own.location === 'string' && typeof own.where === 'string');
  if (m === null || typeof m.tenant !== 'string' || typeof m.markedMs !== 'number' || keyOfTenant !== key || !ownOk) {
    throw new StrataError(ErrorCode.CORRUPT, `reading the deletion mark "${key}": expected {"tenant", "markedMs", "ownBucket"?: {"location", "where"}} of the tenant its key names`);
  }
  if (own !== undefined) return { tenant: m.tenant, markedMs: m.markedMs, ownBucket: { location: own.location!, where: own.where! } };
  return { tenant: m.tenant, markedMs: m.markedMs };
}

/**
 * Marks `tenant` for deletion (idempotent: an existing mark is kept and returned with
 * `created: false`), with its own bucket when it has one.
 */
export async function markTenantDeleted(bucket: Bucket, tenant: string, nowMs: number, ownBucket?: OwnBucketOfMark): Promise<{ mark: DeletionMark; created: boolean }> {
  const key = deletionMarkKey(tenant);
  const mark: DeletionMark = { tenant, markedMs: nowMs, ...(ownBucket ? { ownBucket } : {}) };
  try {
    await bucket.put(key, Buffer.from(`${JSON.stringify(mark)}\n`), { ifNoneMatch: true });
    return { mark, created: true };
  } catch (err) {
    if (!(err instanceof ObjectStoreError) || err.code !== ErrorCode.ALREADY_EXISTS) throw err;
    return { mark: parseMark(key, await bucket.get(key)), created: false };
  }
}

/**
 * Every deletion mark in the bucket. A mark that cannot be parsed (CORRUPT) throws, or, with
 * `onCorrupt`, is reported to it and left out (the lifecycle role: one damaged mark must not stop
 * retention and the other deletions).
 */
export async function listDeletionMarks(bucket: BucketReader, onCorrupt?: (key: string, err: StrataError) => void): Promise<DeletionMark[]> {
  const out: DeletionMark[] = [];
  for await (const info of bucket.list(DELETION_MARKS_PREFIX)) {
    if (!info.key.endsWith('.json')) continue;
    try {
      out.push(parseMark(info.key, await bucket.get(info.key)));
    } catch (err) {
      if (err instanceof ObjectStoreError && err.code === ErrorCode.NOT_FOUND) continue; // removed meanwhile
      if (onCorrupt && err instanceof StrataError && err.code === ErrorCode.CORRUPT) {
        onCorrupt(info.key, err);
        continue;
      }
      throw err;
    }
  }
  return out;
}

/** The deletion report of `tenant`, or null when no pass has finished yet. */
export async function readDeletionReport(bucket: BucketReader, tenant: string): Promise<DeletionReport | null> {
  const key = deletionReportKey(tenant);
  try {
    return JSON.parse((await bucket.get(key)).toString('utf8')) as DeletionReport;
  } catch (err) {
    if (err instanceof ObjectStoreError && err.code === ErrorCode.NOT_FOUND) return null;
    if (err instanceof SyntaxError) throw new StrataError(ErrorCode.CORRUPT, `reading the deletion report "${key}": not JSON`, { cause: err });
    throw err;
  }
}

/** Stores `report` (replacing the previous one). */
export async function writeDeletionReport(bucket: Bucket, report: DeletionReport): Promise<void> {
  await bucket.put(deletionReportKey(report.tenant), Buffer.from(`${JSON.stringify(report)}\n`));
}

/**
 * The marks as a service sees them: re-read from the default bucket every `pollMs` (a failed read
 * keeps the previous set and is logged). `refusal(tenant)` is the message of the refusal of a
 * marked tenant's writes, or null.
 */
export class DeletionMarkWatcher {
  #marks = new Map<string, DeletionMark>();
  #timer: NodeJS.Timeout | null = null;
  #closed = false;
  #reading: Promise<void> = Promise.resolve();

  constructor(
    private readonly bucket: () => Promise<BucketReader>,
    private readonly opts: { readonly pollMs: number; readonly logger?: Logger; readonly onRefresh?: (ok: boolean) => void },
  ) {}

  /** Reads the marks now, then every `pollMs`. Resolves after the first read (failed or not). */
  async start(): Promise<void> {
    await this.refresh();
    this.#schedule();
  }

  #schedule(): void {
    if (this.#closed) return;
    this.#timer = setTimeout(() => {
      void this.refresh().then(() => this.#schedule());
    }, this.opts.pollMs);
    this.#timer.unref();
  }

  /** Re-reads the marks. */
  refresh(): Promise<void> {
    this.#reading = this.#reading.then(async () => {
      try {
        const marks = await listDeletionMarks(await this.bucket());
        this.#marks = new Map(marks.map((m) => [m.tenant, m]));
        this.opts.onRefresh?.(true);
      } catch (err) {
        this.opts.logger?.warn({ err: (err as Error).message }, 'cannot read the tenant deletion marks; keeping the previous ones');
        this.opts.onRefresh?.(false);
      }
    });
    return this.#reading;
  }

  /** The mark of `tenant`, if it is marked. */
  markOf(tenant: string): DeletionMark | undefined {
    return this.#marks.get(tenant);
  }

  /** Why `tenant`'s writes are refused, or null. */
  refusal(tenant: string): string | null {
    const m = this.#marks.get(tenant);
    if (!m) return null;
    return `tenant "${tenant}" is marked for deletion (mark ${deletionMarkKey(tenant)} of ${new Date(m.markedMs).toISOString()}); its writes are refused`;
  }

  /** Stops polling. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    await this.#reading;
  }
}
