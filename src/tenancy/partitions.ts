/**
 * Time-partitioned tenant buckets: a tenant's S3 `bucket` may be a name template, such as
 * `metrics-{tenant}-{isoyear}-w{isoweek}` (one bucket per ISO week). Every block goes to the bucket
 * of its window's start: writers create that bucket when it is missing, readers take a missing one
 * for a window without data, and the lifecycle role drops a whole bucket (empties it, then deletes
 * it) once every window it can hold has passed retention. Documented in docs/config.md ("Tenants
 * file") and docs/deploy.md.
 *
 * Placeholders: `{tenant}` (the tenant id), and one time partitioning, in UTC:
 * - week: `{isoyear}` (4 digits) and `{isoweek}` (2 digits, 01-53), ISO 8601 weeks from Monday;
 * - month: `{year}` (4 digits) and `{month}` (2 digits);
 * - day: `{year}`, `{month}` and `{day}` (2 digits).
 * A day block lies in one UTC day, so it lies in one partition of every kind.
 */
import {
  type BucketLocationConstraint,
  CreateBucketCommand,
  DeleteBucketCommand,
  HeadBucketCommand,
  ListBucketsCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import type { Readable } from 'node:stream';
import { ErrorCode, hasCode, ObjectStoreError, StrataError } from '../errors.js';
import {
  classifyS3Error,
  describeS3Error,
  hasIncompleteUploads,
  type Bucket,
  type BucketConfig,
  type ByteRange,
  type GetRangeOptions,
  type IncompleteUpload,
  type IncompleteUploads,
  type ObjectInfo,
  type ObjectUpload,
  type PutOptions,
  type RangeResult,
  type S3BucketOptions,
} from '../objstore/index.js';

const DAY_MS = 24 * 3600 * 1000;

/** How a template partitions time. */
export type PartitionKind = 'week' | 'month' | 'day';

/** The placeholders a template may use. */
export const TEMPLATE_PLACEHOLDERS = ['tenant', 'isoyear', 'isoweek', 'year', 'month', 'day'] as const;
type Placeholder = (typeof TEMPLATE_PLACEHOLDERS)[number];

/** Rendered width of each time placeholder (digits). */
const WIDTH: Record<Exclude<Placeholder, 'tenant'>, number> = { isoyear: 4, isoweek: 2, year: 4, month: 2, day: 2 };

/** Whether a bucket name is a template (holds a `{`). */
export function isBucketTemplate(name: string): boolean {
  return name.includes('{') || name.includes('}');
}

/** One tenant's template, `{tenant}` already filled in. */
export interface BucketTemplate {
  /** The template as written. */
  readonly source: string;
  readonly kind: PartitionKind;
  /** Literal text and time placeholders, alternating as written. */
  readonly parts: readonly (string | { readonly p: Exclude<Placeholder, 'tenant'> })[];
}

/** A partition: its bucket name and the windows whose start falls in it. */
export interface Partition {
  readonly name: string;
  readonly startMs: number;
  readonly endMs: number;
}

const S3_NAME_CHARS = /^[a-z0-9.-]*$/;

/**
 * Parses `source` for `tenant`. Returns the template, or throws Error with a message saying what
 * is wrong (the caller names the field).
 */
export function parseBucketTemplate(source: string, tenant: string): BucketTemplate {
  const parts: (string | { p: Exclude<Placeholder, 'tenant'> })[] = [];
  const used = new Set<Placeholder>();
  let literal = '';
  let rest = source;
  while (rest.length > 0) {
    const open = rest.indexOf('{');
    const close = rest.indexOf('}');
    if (open < 0) {
      if (close >= 0) throw new Error(`"}" without "{" in "${source}"`);
      literal += rest;
      break;
    }
    if (close >= 0 && close < open) throw new Error(`"}" without "{" in "${source}"`);
    if (close < 0) throw new Error(`"{" without "}" in "${source}"`);
    literal += rest.slice(0, open);
    const name = rest.slice(open + 1, close);
    if (!(TEMPLATE_PLACEHOLDERS as readonly string[]).includes(name)) {
      throw new Error(`unknown placeholder {${name}} in "${source}" (known: ${TEMPLATE_PLACEHOLDERS.map((p) => `{${p}}`).join(', ')})`);
    }
    const p = name as Placeholder;
    if (used.has(p)) throw new Error(`placeholder {${p}} appears twice in "${source}"`);
    used.add(p);
    if (p === 'tenant') literal += tenant;
    else {
      if (literal) parts.push(literal);
      literal = '';
      parts.push({ p });
    }
    rest = rest.slice(close + 1);
  }
  if (literal) parts.push(literal);
  const has = (p: Placeholder): boolean => used.has(p);
  let kind: PartitionKind;
  if (has('isoyear') && has('isoweek') && !has('year') && !has('month') && !has('day')) kind = 'week';
  else if (has('year') && has('month') && has('day') && !has('isoyear') && !has('isoweek')) kind = 'day';
  else if (has('year') && has('month') && !has('day') && !has('isoyear') && !has('isoweek')) kind = 'month';
  else throw new Error(`"${source}" must partition time one way: {isoyear} and {isoweek}, {year} and {month}, or {year}, {month} and {day}`);
  const t: BucketTemplate = { source, kind, parts };
  // every name it renders must be a valid S3 bucket name: 3-63 of a-z, 0-9, "." and "-", starting and ending with a letter or digit
  for (const part of parts) {
    if (typeof part === 'string' && !S3_NAME_CHARS.test(part)) {
      throw new Error(`"${source}" renders "${part}" for tenant "${tenant}": bucket names hold only a-z, 0-9, "." and "-"`);
    }
  }
  const sample = renderParts(t, { isoyear: '2000', isoweek: '01', year: '2000', month: '01', day: '01' });
  if (sample.length < 3 || sample.length > 63) throw new Error(`"${source}" renders names of ${sample.length} characters for tenant "${tenant}" (e.g. "${sample}"); bucket names have 3 to 63`);
  if (!/^[a-z0-9].*[a-z0-9]$/.test(sample)) throw new Error(`"${source}" renders "${sample}": a bucket name starts and ends with a letter or digit`);
  return t;
}

function renderParts(t: BucketTemplate, v: Record<Exclude<Placeholder, 'tenant'>, string>): string {
  return t.parts.map((part) => (typeof part === 'string' ? part : v[part.p])).join('');
}

const pad = (n: number, w: number): string => String(n).padStart(w, '0');

/** ISO 8601 year and week of the UTC day holding `ms`. */
export function isoWeekOf(ms: number): { isoyear: number; isoweek: number; mondayMs: number } {
  const dayMs = Math.floor(ms / DAY_MS) * DAY_MS;
  const dow = (new Date(dayMs).getUTCDay() + 6) % 7; // Monday 0 .. Sunday 6
  const mondayMs = dayMs - dow * DAY_MS;
  const thursday = new Date(mondayMs + 3 * DAY_MS);
  const isoyear = thursday.getUTCFullYear();
  const isoweek = Math.floor((thursday.getTime() - Date.UTC(isoyear, 0, 1)) / (7 * DAY_MS)) + 1;
  return { isoyear, isoweek, mondayMs };
}

/** Monday 00:00 UTC of ISO week `isoweek` of `isoyear`. */
export function isoWeekStart(isoyear: number, isoweek: number): number {
  const jan4 = Date.UTC(isoyear, 0, 4);
  const dow = (new Date(jan4).getUTCDay() + 6) % 7;
  return jan4 - dow * DAY_MS + (isoweek - 1) * 7 * DAY_MS;
}

/** The partition of `t` holding the window that starts at `windowStartMs`. */
export function partitionOf(t: BucketTemplate, windowStartMs: number | bigint): Partition {
  const ms = Number(windowStartMs);
  const d = new Date(ms);
  const year = d.getUTCFullYear();
  const month = d.getUTCMonth() + 1;
  const day = d.getUTCDate();
  const w = isoWeekOf(ms);
  const name = renderParts(t, { isoyear: pad(w.isoyear, 4), isoweek: pad(w.isoweek, 2), year: pad(year, 4), month: pad(month, 2), day: pad(day, 2) });
  switch (t.kind) {
    case 'week':
      return { name, startMs: w.mondayMs, endMs: w.mondayMs + 7 * DAY_MS };
    case 'month':
      return { name, startMs: Date.UTC(year, month - 1, 1), endMs: Date.UTC(year, month, 1) };
    case 'day': {
      const start = Date.UTC(year, month - 1, day);
      return { name, startMs: start, endMs: start + DAY_MS };
    }
  }
}

/** The partition a bucket name of `t` stands for, or null when `t` does not render `name`. */
export function parsePartitionName(t: BucketTemplate, name: string): Partition | null {
  const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const order: Exclude<Placeholder, 'tenant'>[] = [];
  const re = new RegExp(`^${t.parts.map((part) => (typeof part === 'string' ? esc(part) : (order.push(part.p), `(\\d{${WIDTH[part.p]}})`))).join('')}$`);
  const m = re.exec(name);
  if (!m) return null;
  const v = new Map(order.map((p, i) => [p, Number(m[i + 1])]));
  let startMs: number;
  if (t.kind === 'week') {
    const y = v.get('isoyear')!;
    const wk = v.get('isoweek')!;
    startMs = isoWeekStart(y, wk);
    if (wk < 1 || isoWeekOf(startMs).isoyear !== y || isoWeekOf(startMs).isoweek !== wk) return null;
  } else {
    const y = v.get('year')!;
    const mo = v.get('month')!;
    const dd = t.kind === 'day' ? v.get('day')! : 1;
    startMs = Date.UTC(y, mo - 1, dd);
    const back = new Date(startMs);
    if (mo < 1 || mo > 12 || back.getUTCFullYear() !== y || back.getUTCMonth() !== mo - 1 || back.getUTCDate() !== dd) return null;
  }
  const p = partitionOf(t, startMs);
  return p.name === name ? p : null;
}

/**
 * The end of the last window a partition can hold: windows start in `[startMs, endMs)` and last
 * `blockDurationMs` (a day block ends at a day's end, within the partition).
 */
export function partitionLastWindowEnd(p: Partition, blockDurationMs: number): number {
  const lastStart = Math.floor((p.endMs - 1) / blockDurationMs) * blockDurationMs;
  return Math.max(p.endMs, lastStart + blockDurationMs);
}

/** The bucket config of one partition. */
export function partitionConfig(base: S3BucketOptions, name: string): S3BucketOptions {
  return { ...base, bucket: name };
}

function adminClient(cfg: S3BucketOptions): S3Client {
  return new S3Client({
    ...(cfg.endpoint !== undefined ? { endpoint: cfg.endpoint } : {}),
    region: cfg.region,
    forcePathStyle: cfg.forcePathStyle ?? false,
    // a copy: the SDK marks the object it is given (a `$source` member), and the config must stay as parsed
    ...(cfg.credentials ? { credentials: { ...cfg.credentials } } : {}),
    maxAttempts: 3,
  });
}

function s3Name(err: unknown): string {
  return err instanceof S3ServiceException ? err.name : (err as { name?: string } | null)?.name ?? '';
}

function storageError(what: string, bucket: string, err: unknown): ObjectStoreError {
  // classified as every other bucket operation is: a HEAD refused with 403 has no body, and the
  // SDK names it "Unknown"; its status says access denied
  const c = classifyS3Error(err);
  const reason = c.name === 'BucketAlreadyExists' ? `the name is taken by another account (${c.reason})` : describeS3Error(c);
  return new ObjectStoreError(c.code, bucket, '', `${what} bucket "${bucket}": ${reason}`, { cause: err });
}

/**
 * Whether a new bucket needs its region as LocationConstraint: AWS S3 outside us-east-1 (other
 * servers, e.g. Ceph RGW, take their zone group's default without one).
 */
export function needsLocationConstraint(cfg: S3BucketOptions): boolean {
  const aws = cfg.endpoint === undefined || /\.amazonaws\.com(\.cn)?(:\d+)?$/.test(new URL(cfg.endpoint).host);
  return aws && cfg.region !== 'us-east-1';
}

/**
 * Creates bucket `cfg.bucket` when it does not exist (a HEAD first: the writer's credentials need
 * s3:CreateBucket only when it is missing). Another writer creating it at the same time is fine.
 */
export async function ensureBucket(cfg: S3BucketOptions): Promise<void> {
  const client = adminClient(cfg);
  try {
    try {
      await client.send(new HeadBucketCommand({ Bucket: cfg.bucket }));
      return;
    } catch (err) {
      if (s3Name(err) !== 'NotFound' && s3Name(err) !== 'NoSuchBucket' && (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode !== 404) {
        throw storageError('checking', cfg.bucket, err);
      }
    }
    try {
      await client.send(new CreateBucketCommand({ Bucket: cfg.bucket, ...(needsLocationConstraint(cfg) ? { CreateBucketConfiguration: { LocationConstraint: cfg.region as BucketLocationConstraint } } : {}) }));
    } catch (err) {
      if (s3Name(err) !== 'BucketAlreadyOwnedByYou') throw storageError('creating', cfg.bucket, err);
    }
  } finally {
    client.destroy();
  }
}

/** The names of the buckets the credentials of `cfg` can list (S3 ListBuckets), every page. */
export async function listBucketNames(cfg: S3BucketOptions): Promise<string[]> {
  const client = adminClient(cfg);
  try {
    const out: string[] = [];
    let token: string | undefined;
    do {
      const res = await client.send(new ListBucketsCommand(token !== undefined ? { ContinuationToken: token } : {}));
      for (const b of res.Buckets ?? []) if (b.Name) out.push(b.Name);
      token = res.ContinuationToken;
    } while (token);
    return out;
  } catch (err) {
    throw storageError('listing the buckets next to', cfg.bucket, err);
  } finally {
    client.destroy();
  }
}

/**
 * Deletes bucket `cfg.bucket`. Returns false when it did not exist. A bucket not empty (a writer
 * put a block meanwhile) is an ObjectStoreError STORAGE: the next pass empties it again.
 */
export async function deleteBucket(cfg: S3BucketOptions): Promise<boolean> {
  const client = adminClient(cfg);
  try {
    await client.send(new DeleteBucketCommand({ Bucket: cfg.bucket }));
    return true;
  } catch (err) {
    if (s3Name(err) === 'NoSuchBucket') return false;
    throw storageError('deleting', cfg.bucket, err);
  } finally {
    client.destroy();
  }
}

const missing = (err: unknown): boolean => hasCode(err, ErrorCode.NO_SUCH_BUCKET);

/**
 * A partition's bucket as readers see it: a bucket that does not exist holds nothing, so reads
 * answer NOT_FOUND and lists are empty (a window without data, like a missing block). Writes are
 * passed through unchanged.
 */
export class PartitionBucket implements Bucket, IncompleteUploads {
  readonly name: string;
  /** `onMissing`: told when a write finds the bucket missing (dropped since: the writer creates it again). */
  constructor(
    readonly inner: Bucket,
    private readonly onMissing: () => void = () => undefined,
  ) {
    this.name = inner.name;
  }

  #written<T>(p: Promise<T>): Promise<T> {
    return p.catch((err: unknown) => {
      if (missing(err)) this.onMissing();
      throw err;
    });
  }

  #notFound(key: string, err: unknown): never {
    if (missing(err)) throw new ObjectStoreError(ErrorCode.NOT_FOUND, this.name, key, `no object "${key}" in ${this.name}: the bucket does not exist`, { cause: err });
    throw err;
  }

  async get(key: string, opts?: { signal?: AbortSignal }): Promise<Buffer> {
    return this.inner.get(key, opts).catch((err: unknown) => this.#notFound(key, err));
  }

  async getRange(key: string, range: ByteRange, opts?: GetRangeOptions): Promise<RangeResult> {
    return this.inner.getRange(key, range, opts).catch((err: unknown) => this.#notFound(key, err));
  }

  async head(key: string): Promise<ObjectInfo> {
    return this.inner.head(key).catch((err: unknown) => this.#notFound(key, err));
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    try {
      yield* this.inner.list(prefix);
    } catch (err) {
      if (!missing(err)) throw err;
    }
  }

  put(key: string, body: Uint8Array | Readable | { readonly file: string }, opts?: PutOptions): Promise<ObjectInfo> {
    return this.#written(this.inner.put(key, body, opts));
  }

  upload(key: string, opts?: PutOptions): ObjectUpload {
    const u = this.inner.upload(key, opts);
    return { write: (chunk) => this.#written(u.write(chunk)), complete: () => this.#written(u.complete()), abort: () => u.abort() };
  }

  async delete(key: string): Promise<void> {
    await this.inner.delete(key).catch((err: unknown) => {
      if (!missing(err)) throw err;
    });
  }

  async *listIncompleteUploads(prefix: string): AsyncIterable<IncompleteUpload> {
    if (!hasIncompleteUploads(this.inner)) return;
    try {
      yield* this.inner.listIncompleteUploads(prefix);
    } catch (err) {
      if (!missing(err)) throw err;
    }
  }

  async discardIncompleteUpload(upload: IncompleteUpload): Promise<void> {
    if (!hasIncompleteUploads(this.inner)) return;
    await this.inner.discardIncompleteUpload(upload).catch((err: unknown) => {
      if (!missing(err)) throw err;
    });
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/** A tenant bucket config whose name is a template (see {@link isBucketTemplate}). */
export function templateOf(cfg: BucketConfig | null): string | null {
  return cfg !== null && cfg.type === 's3' && isBucketTemplate(cfg.bucket) ? cfg.bucket : null;
}

/** Thrown when a partitioned tenant's bucket is asked for without a window. */
export function windowNeeded(tenant: string): StrataError {
  return new StrataError(ErrorCode.INTERNAL, `tenant "${tenant}" has time-partitioned buckets: its bucket depends on the window`);
}
