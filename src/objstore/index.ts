/**
 * The object-store layer's entry point: `openBucket(config)` builds a Bucket from typed config
 * (`{ type: 'filesystem', ... } | { type: 's3', ... }`), validated once with unknown keys rejected.
 */
import { mkdir, stat } from 'node:fs/promises';
import { z } from 'zod';
import { ErrorCode, StrataError } from '../errors.js';
import type { Bucket } from './bucket.js';
import { errorMessage } from './body.js';
import { FilesystemBucket } from './fs.js';
import { S3_OPTION_RANGES, S3Bucket, type S3BucketConfig, type S3Hooks } from './s3/index.js';

export type { Bucket, BucketReader, ByteRange, GetRangeOptions, IncompleteUpload, IncompleteUploads, ObjectInfo, ObjectUpload, PutOptions, RangeResult } from './bucket.js';
export { hasIncompleteUploads } from './bucket.js';
export { FilesystemBucket, FS_TEMP_PREFIX, type FilesystemBucketConfig } from './fs.js';
export { PrefixedBucket } from './prefixed.js';
export * from './s3/index.js';
export { DEFAULT_RETRY_POLICY, type RetryPolicy } from '../common/backoff.js';
export { validateKey, validateListPrefix, MAX_KEY_BYTES } from './keys.js';

/** Config of the embedded filesystem bucket. */
export interface FilesystemBucketOptions {
  readonly type: 'filesystem';
  /** Root directory; created if missing. */
  readonly path: string;
  readonly prefix?: string;
}

/** Config of an S3-compatible bucket: S3BucketConfig's options (defaults there), hooks aside. */
export type S3BucketOptions = { readonly type: 's3' } & Omit<S3BucketConfig, 'hooks'>;

/** Where a bucket lives. */
export type BucketConfig = FilesystemBucketOptions | S3BucketOptions;

/** An integer option in its range of {@link S3_OPTION_RANGES}. */
const ranged = (name: keyof typeof S3_OPTION_RANGES) => {
  const [min, max] = S3_OPTION_RANGES[name];
  return z
    .number()
    .int()
    .min(min, `must be an integer in [${min}, ${max}]`)
    .max(max, `must be an integer in [${min}, ${max}]`)
    .optional();
};

/**
 * The tuning options of an S3 bucket, each range-checked (shared with the tenants file's bucket
 * schema, so every bucket anywhere in the config is checked at start-up alike).
 */
const s3TuningShape = {
  partSizeBytes: ranged('partSizeBytes'),
  multipartThresholdBytes: ranged('multipartThresholdBytes'),
  partConcurrency: ranged('partConcurrency'),
  listPageSize: ranged('listPageSize'),
  conditionalMultipart: z.boolean().optional(),
  retry: z
    .strictObject({
      maxAttempts: ranged('retry.maxAttempts'),
      baseDelayMs: ranged('retry.baseDelayMs'),
      maxDelayMs: ranged('retry.maxDelayMs'),
    })
    .optional(),
  connectTimeoutMs: ranged('connectTimeoutMs'),
  socketTimeoutMs: ranged('socketTimeoutMs'),
  maxSockets: ranged('maxSockets'),
};

/**
 * The bucket schema, with `credentials` given as `credentials` says: inline values here, references
 * to secrets in the tenants file (src/tenancy/config.ts). One schema for both, so the two cannot drift.
 */
export function bucketSchema<C extends z.ZodType>(credentials: C) {
  return z.discriminatedUnion('type', [
    z.strictObject({
      type: z.literal('filesystem'),
      path: z.string().min(1),
      prefix: z.string().optional(),
    }),
    z.strictObject({
      type: z.literal('s3'),
      endpoint: z.string().url().optional(),
      region: z.string().min(1),
      bucket: z.string().min(3),
      prefix: z.string().optional(),
      forcePathStyle: z.boolean().optional(),
      credentials: credentials.optional(),
      ...s3TuningShape,
    }),
  ]);
}

const bucketConfigSchema = bucketSchema(
  z.strictObject({
    accessKeyId: z.string().min(1),
    secretAccessKey: z.string().min(1),
    sessionToken: z.string().min(1).optional(),
  }),
);

/**
 * Validates untyped bucket config (e.g. parsed from a file or the environment).
 * @throws StrataError CONFIG naming the offending option (secrets are never echoed).
 */
export function parseBucketConfig(input: unknown): BucketConfig {
  const res = bucketConfigSchema.safeParse(input);
  if (!res.success) {
    const problems = res.error.issues.map((i) => `${i.path.length > 0 ? i.path.join('.') : '(root)'}: ${i.message}`);
    throw new StrataError(ErrorCode.CONFIG, `invalid bucket config: ${problems.join('; ')}`);
  }
  return stripUndefined(res.data) as BucketConfig;
}

/**
 * Opens a bucket. A filesystem bucket's root directory is created if missing; an S3 bucket makes
 * no request until used. `opts.s3Hooks` receives per-request and retry events of an S3 bucket.
 * @throws StrataError CONFIG for invalid config; InvalidArgumentError from the provider for
 *   values out of range.
 */
export async function openBucket(config: BucketConfig, opts?: { readonly s3Hooks?: S3Hooks; /** Create a missing filesystem bucket directory (default true); the read-only tools say it is missing instead. */ readonly create?: boolean }): Promise<Bucket> {
  const cfg = parseBucketConfig(config);
  if (cfg.type === 'filesystem') {
    if (opts?.create === false) {
      const st = await stat(cfg.path).catch(() => null);
      if (st === null || !st.isDirectory()) throw new StrataError(ErrorCode.CONFIG, `no such bucket directory: ${cfg.path}`);
      return new FilesystemBucket(cfg);
    }
    try {
      await mkdir(cfg.path, { recursive: true });
    } catch (err) {
      throw new StrataError(ErrorCode.STORAGE, `creating filesystem bucket directory ${cfg.path}: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    return new FilesystemBucket(cfg);
  }
  const { type: _type, ...s3 } = cfg;
  return new S3Bucket({ ...s3, ...(opts?.s3Hooks !== undefined ? { hooks: opts.s3Hooks } : {}) });
}

/** Drops `undefined` members (recursively) so results fit `exactOptionalPropertyTypes` types. */
function stripUndefined(v: unknown): unknown {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) if (x !== undefined) out[k] = stripUndefined(x);
  return out;
}

/** A bucket's location for logs and messages: where it is, never its credentials. */
export function describeBucket(cfg: BucketConfig): string {
  return cfg.type === 'filesystem' ? `file://${cfg.path}${cfg.prefix ? `#${cfg.prefix}` : ''}` : `s3://${cfg.bucket}/${cfg.prefix ?? ''}`;
}
