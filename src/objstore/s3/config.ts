/**
 * The S3 bucket's options: S3's own limits, the accepted range of every numeric option, the
 * defaults, and the events its hooks receive.
 */
import { InvalidArgumentError } from '../../errors.js';
import type { RetryPolicy } from '../../common/backoff.js';

const MiB = 1024 * 1024;
/** S3's smallest part (all but the last part of a multipart upload). */
export const S3_MIN_PART_BYTES = 5 * MiB;
/** S3's largest part and largest single PutObject. */
export const S3_MAX_PUT_BYTES = 5 * 1024 * MiB;
/** S3's highest part number. */
export const S3_MAX_PARTS = 10_000;

/**
 * The accepted range `[min, max]` of every numeric S3 bucket option (`retry.*` by dotted name).
 * The constructor enforces them, and the config schemas (service `bucket`, tenants file buckets)
 * check them at start-up, so a bad value stops the service with the option named instead of
 * failing its first upload or read.
 */
export const S3_OPTION_RANGES = {
  partSizeBytes: [S3_MIN_PART_BYTES, S3_MAX_PUT_BYTES],
  multipartThresholdBytes: [0, S3_MAX_PUT_BYTES],
  partConcurrency: [1, 64],
  listPageSize: [1, 1000],
  'retry.maxAttempts': [1, 100],
  'retry.baseDelayMs': [0, 60_000],
  'retry.maxDelayMs': [0, 600_000],
  connectTimeoutMs: [1, 600_000],
  socketTimeoutMs: [1, 3_600_000],
  maxSockets: [1, 4096],
} as const satisfies Record<string, readonly [number, number]>;

/** Static credentials. Without them the SDK's default chain (env, profile, IMDS, ...) is used. */
export interface S3Credentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

/** The requests an S3Bucket makes, as named in hooks and stats. */
export type S3Operation =
  | 'get'
  | 'getRange'
  | 'head'
  | 'put'
  | 'createMultipart'
  | 'uploadPart'
  | 'completeMultipart'
  | 'abortMultipart'
  | 'listMultipart'
  | 'list'
  | 'delete';

/** One HTTP attempt, reported to {@link S3Hooks.onRequest} when it ends. */
export interface S3RequestEvent {
  readonly operation: S3Operation;
  readonly key: string;
  /** 1 for the first attempt. */
  readonly attempt: number;
  readonly durationMs: number;
  /** `ok`; `retry` (failed, will be retried); `error` (failed for good, including "not found"). */
  readonly outcome: 'ok' | 'retry' | 'error';
  /** HTTP status when a response arrived. */
  readonly httpStatus?: number;
  /** S3 error code or Node error name/code of a failure. */
  readonly errorName?: string;
}

/** A retry about to be slept on, reported to {@link S3Hooks.onRetry}. */
export interface S3RetryEvent {
  readonly operation: S3Operation;
  readonly key: string;
  /** The attempt that failed (1 for the first). */
  readonly attempt: number;
  readonly delayMs: number;
  readonly errorName: string;
  readonly httpStatus?: number;
}

/** Callbacks for metrics. They run synchronously on the request path: keep them cheap; they must not throw. */
export interface S3Hooks {
  onRequest?(event: S3RequestEvent): void;
  onRetry?(event: S3RetryEvent): void;
}

/** Running totals since the bucket was created. */
export interface S3Stats {
  /** HTTP attempts made. */
  readonly requests: number;
  /** Attempts that were retried. */
  readonly retries: number;
  /** Operations that failed for good (after retries, or not retryable). */
  readonly failures: number;
  /** Errors on connections (a broken connection also fails the request in flight on it, if any). */
  readonly socketErrors: number;
}

/** Configuration of an {@link S3Bucket}. */
export interface S3BucketConfig {
  readonly bucket: string;
  readonly region: string;
  /** e.g. `http://127.0.0.1:7480`; omit for AWS. */
  readonly endpoint?: string;
  /** Key prefix inside the bucket (`a/b` or `a/b/`). */
  readonly prefix?: string;
  /** Path-style URLs (`endpoint/bucket/key`), needed by most non-AWS servers. Default false. */
  readonly forcePathStyle?: boolean;
  readonly credentials?: S3Credentials;
  /** Multipart part size; default 8 MiB, at least 5 MiB, at most 5 GiB. */
  readonly partSizeBytes?: number;
  /** Buffers up to this size are stored with one PutObject; default 16 MiB, at most 5 GiB. */
  readonly multipartThresholdBytes?: number;
  /** Parts uploaded at once by one upload; default 4. */
  readonly partConcurrency?: number;
  /** Keys per ListObjectsV2 page; default 1000 (S3's maximum). */
  readonly listPageSize?: number;
  /** The server honours If-None-Match on CompleteMultipartUpload (AWS does); default false. */
  readonly conditionalMultipart?: boolean;
  /** Retry policy; default {@link DEFAULT_RETRY_POLICY}. */
  readonly retry?: Partial<RetryPolicy>;
  /** TCP connect timeout; default 5000 ms. */
  readonly connectTimeoutMs?: number;
  /** A socket idle for this long is destroyed (and the request retried); default 30000 ms. */
  readonly socketTimeoutMs?: number;
  /** Concurrent connections to the server; default 64. */
  readonly maxSockets?: number;
  readonly hooks?: S3Hooks;
}

/** Defaults of the options of {@link S3BucketConfig}. */
export const S3_DEFAULTS = {
  partSizeBytes: 8 * MiB,
  multipartThresholdBytes: 16 * MiB,
  partConcurrency: 4,
  listPageSize: 1000,
  connectTimeoutMs: 5_000,
  socketTimeoutMs: 30_000,
  maxSockets: 64,
} as const;

/** `value` checked against its range in {@link S3_OPTION_RANGES}, or `dflt` when absent. */
export function intOption(field: keyof typeof S3_OPTION_RANGES, value: number | undefined, dflt: number): number {
  if (value === undefined) return dflt;
  const [min, max] = S3_OPTION_RANGES[field];
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(field, `must be an integer in [${min}, ${max}], got ${String(value)}`);
  }
  return value;
}

