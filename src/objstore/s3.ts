/**
 * S3Bucket: a bucket on any S3-compatible server through @aws-sdk/client-s3 v3.
 *
 * - One retry policy (ours): the SDK client is built with `maxAttempts: 1`; every request is
 *   retried with exponential backoff and full jitter on 5xx, 429, SlowDown/throttling, request
 *   timeouts and connection errors (ECONNRESET, EPIPE, ECONNREFUSED, socket hang up, timeouts).
 *   A GET is retried as a whole, including reading its body. Request bodies are always in-memory
 *   buffers, so every request can be replayed.
 * - Checksums: `requestChecksumCalculation`/`responseChecksumValidation` are `WHEN_REQUIRED`
 *   (the SDK's default CRC trailers break uploads on non-AWS servers). Blocks carry their own
 *   checksums.
 * - Writes: a buffer up to `multipartThresholdBytes` is one PutObject; larger buffers, streams and
 *   files go through a multipart upload with `partSizeBytes` parts, `partConcurrency` at a time
 *   (an upload that fits in one part is sent as one PutObject). A failed multipart upload is
 *   aborted. Nothing is visible before the final request succeeds.
 * - `ifNoneMatch` sends `If-None-Match: *` (412 → ALREADY_EXISTS). Some servers (Ceph RGW before
 *   Squid) ignore that header on CompleteMultipartUpload and overwrite silently, so unless
 *   `conditionalMultipart` is set, a conditional write is buffered whole and sent as a single
 *   PutObject (at most 5 GiB).
 * - Errors are ObjectStoreError: NoSuchKey/404 → NOT_FOUND (a HEAD on a missing bucket is also
 *   NOT_FOUND: a 404 HEAD has no body to tell them apart), 403/AccessDenied/InvalidAccessKeyId/
 *   SignatureDoesNotMatch → ACCESS_DENIED, NoSuchBucket → NO_SUCH_BUCKET, 416/InvalidRange →
 *   INVALID_RANGE, 412 → ALREADY_EXISTS, retryable failures after the last attempt → UNAVAILABLE,
 *   anything else → STORAGE. Messages name the bucket and key, never credentials. An aborted
 *   `signal` rejects with its reason (an AbortError).
 * - `lastModifiedMs` of the ObjectInfo returned by a write is the local clock at completion (S3
 *   does not return the server's time for writes); `head` and `list` report the server's.
 */
import { createHash } from 'node:crypto';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type CompletedPart,
  type GetObjectCommandOutput,
} from '@aws-sdk/client-s3';
import { ErrorCode, InvalidArgumentError, ObjectStoreError } from '../errors.js';
import { isAbortError, putViaUpload, withSecondaryError } from './body.js';
import type { Bucket, ByteRange, IncompleteUpload, IncompleteUploads, ObjectInfo, ObjectUpload, PutOptions, RangeResult } from './bucket.js';
import { formatRange, normalizeKeyPrefix, resolveRange, validateKey, validateListPrefix, validateRange } from './keys.js';
import { backoffDelayMs, DEFAULT_RETRY_POLICY, type RetryPolicy } from '../common/backoff.js';

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

const DEFAULTS = {
  partSizeBytes: 8 * MiB,
  multipartThresholdBytes: 16 * MiB,
  partConcurrency: 4,
  listPageSize: 1000,
  connectTimeoutMs: 5_000,
  socketTimeoutMs: 30_000,
  maxSockets: 64,
} as const;

/** Internal: an error worth retrying that did not come from the SDK (e.g. a short body). */
class TransientError extends Error {
  override readonly name = 'TransientError';
}

/*
 * Connection agents whose sockets always have an 'error' listener. Node can emit a socket error
 * after the SDK has taken the response and Node has detached the request's own listener, e.g.
 * EPIPE while still sending a PUT body that the server rejected early (RGW answers NoSuchBucket
 * and closes the connection). With no listener left that is an uncaught exception that kills the
 * process. The request has already succeeded or failed through its own listener; such a late
 * error only means the socket is dead, and Node discards it. The listener counts it.
 */
class GuardedHttpAgent extends HttpAgent {
  readonly #onError: (err: Error) => void;
  constructor(opts: ConstructorParameters<typeof HttpAgent>[0], onError: (err: Error) => void) {
    super(opts);
    this.#onError = onError;
  }
  override createConnection(...args: Parameters<HttpAgent['createConnection']>): ReturnType<HttpAgent['createConnection']> {
    const socket = super.createConnection(...args);
    socket?.on('error', this.#onError);
    return socket;
  }
}

class GuardedHttpsAgent extends HttpsAgent {
  readonly #onError: (err: Error) => void;
  constructor(opts: ConstructorParameters<typeof HttpsAgent>[0], onError: (err: Error) => void) {
    super(opts);
    this.#onError = onError;
  }
  override createConnection(...args: Parameters<HttpsAgent['createConnection']>): ReturnType<HttpsAgent['createConnection']> {
    const socket = super.createConnection(...args);
    socket?.on('error', this.#onError);
    return socket;
  }
}

/** S3 error codes (or `name`s) that mean "try again". */
const RETRYABLE_NAMES = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'ThrottledException',
  'RequestThrottled',
  'RequestThrottledException',
  'TooManyRequestsException',
  'RequestTimeout',
  'RequestTimeoutException',
  'InternalError',
  'ServiceUnavailable',
  'ConditionalRequestConflict',
  'TimeoutError',
  'TransientError',
]);
/** Operations that send a body, which a server may refuse before reading it. */
const BODY_OPERATIONS: ReadonlySet<S3Operation> = new Set(['put', 'uploadPart']);

/** Node socket errors that mean the connection broke, not the request. */
const RETRYABLE_ERRNOS = new Set([
  'ECONNRESET',
  'EPIPE',
  'ECONNREFUSED',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'ENOTFOUND',
  'UND_ERR_SOCKET',
]);

interface Classified {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly reason: string;
  readonly name: string;
  readonly status: number | undefined;
}

/** Sorts an SDK/network error into our codes and says whether to retry it. */
function classify(err: unknown): Classified {
  const e = (typeof err === 'object' && err !== null ? err : {}) as {
    name?: unknown;
    Code?: unknown;
    code?: unknown;
    message?: unknown;
    $metadata?: { httpStatusCode?: number };
  };
  const status = e.$metadata?.httpStatusCode;
  const sdkName = typeof e.Code === 'string' ? e.Code : typeof e.name === 'string' ? e.name : 'Error';
  const errno = typeof e.code === 'string' ? e.code : undefined;
  const name = errno ?? sdkName;
  const message = typeof e.message === 'string' ? e.message : String(err);
  const detail = message !== '' && message !== 'UnknownError' && message !== sdkName ? `: ${message}` : '';
  const reason = `${name}${status !== undefined ? ` (HTTP ${status})` : ''}${detail}`;
  const out = (code: ErrorCode, retryable = false): Classified => ({ code, retryable, reason, name, status });

  if (sdkName === 'NoSuchBucket') return out(ErrorCode.NO_SUCH_BUCKET);
  if (sdkName === 'NoSuchKey' || sdkName === 'NotFound' || status === 404) return out(ErrorCode.NOT_FOUND);
  if (
    sdkName === 'AccessDenied' ||
    sdkName === 'InvalidAccessKeyId' ||
    sdkName === 'SignatureDoesNotMatch' ||
    sdkName === 'Forbidden' ||
    status === 403
  ) {
    return out(ErrorCode.ACCESS_DENIED);
  }
  if (sdkName === 'InvalidRange' || status === 416) return out(ErrorCode.INVALID_RANGE);
  if (sdkName === 'PreconditionFailed' || status === 412) return out(ErrorCode.ALREADY_EXISTS);
  if (RETRYABLE_NAMES.has(sdkName) || (errno !== undefined && RETRYABLE_ERRNOS.has(errno))) return out(ErrorCode.UNAVAILABLE, true);
  if (status !== undefined && (status === 429 || (status >= 500 && status !== 501))) return out(ErrorCode.UNAVAILABLE, true);
  if (status === undefined && /socket hang up|ECONNRESET|EPIPE|timed? ?out/i.test(message)) return out(ErrorCode.UNAVAILABLE, true);
  return out(ErrorCode.STORAGE);
}

/** A {@link Bucket} on an S3-compatible server. See the module comment for the contract. */
export class S3Bucket implements Bucket, IncompleteUploads {
  readonly name: string;
  readonly #client: S3Client;
  readonly #bucket: string;
  readonly #prefix: string;
  readonly #partSize: number;
  readonly #threshold: number;
  readonly #partConcurrency: number;
  readonly #pageSize: number;
  readonly #conditionalMultipart: boolean;
  readonly #retry: RetryPolicy;
  readonly #hooks: S3Hooks;
  readonly #agents: { http: HttpAgent; https: HttpsAgent };
  readonly #stats = { requests: 0, retries: 0, failures: 0, socketErrors: 0 };
  #closed = false;

  /** @throws InvalidArgumentError naming the option when the configuration is not valid. */
  constructor(config: S3BucketConfig) {
    if (typeof config.bucket !== 'string' || !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(config.bucket)) {
      throw new InvalidArgumentError('bucket', `${JSON.stringify(config.bucket)} is not a valid S3 bucket name`);
    }
    if (typeof config.region !== 'string' || config.region === '') throw new InvalidArgumentError('region', 'region is empty');
    this.#bucket = config.bucket;
    this.#prefix = normalizeKeyPrefix(config.prefix);
    this.#partSize = intOption('partSizeBytes', config.partSizeBytes, DEFAULTS.partSizeBytes);
    this.#threshold = intOption('multipartThresholdBytes', config.multipartThresholdBytes, DEFAULTS.multipartThresholdBytes);
    this.#partConcurrency = intOption('partConcurrency', config.partConcurrency, DEFAULTS.partConcurrency);
    this.#pageSize = intOption('listPageSize', config.listPageSize, DEFAULTS.listPageSize);
    this.#conditionalMultipart = config.conditionalMultipart ?? false;
    this.#retry = {
      maxAttempts: intOption('retry.maxAttempts', config.retry?.maxAttempts, DEFAULT_RETRY_POLICY.maxAttempts),
      baseDelayMs: intOption('retry.baseDelayMs', config.retry?.baseDelayMs, DEFAULT_RETRY_POLICY.baseDelayMs),
      maxDelayMs: intOption('retry.maxDelayMs', config.retry?.maxDelayMs, DEFAULT_RETRY_POLICY.maxDelayMs),
    };
    this.#hooks = config.hooks ?? {};
    const maxSockets = intOption('maxSockets', config.maxSockets, DEFAULTS.maxSockets);
    const onSocketError = (): void => {
      this.#stats.socketErrors++;
    };
    this.#agents = {
      http: new GuardedHttpAgent({ keepAlive: true, maxSockets }, onSocketError),
      https: new GuardedHttpsAgent({ keepAlive: true, maxSockets }, onSocketError),
    };
    this.#client = new S3Client({
      region: config.region,
      ...(config.endpoint !== undefined ? { endpoint: config.endpoint } : {}),
      forcePathStyle: config.forcePathStyle ?? false,
      ...(config.credentials !== undefined ? { credentials: { ...config.credentials } } : {}),
      maxAttempts: 1,
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: {
        connectionTimeout: intOption('connectTimeoutMs', config.connectTimeoutMs, DEFAULTS.connectTimeoutMs),
        socketTimeout: intOption('socketTimeoutMs', config.socketTimeoutMs, DEFAULTS.socketTimeoutMs),
        httpAgent: this.#agents.http,
        httpsAgent: this.#agents.https,
      },
    });
    this.name = `s3://${this.#bucket}${this.#prefix === '' ? '' : `/${this.#prefix.slice(0, -1)}`}`;
  }

  /** Counters since construction (a snapshot). */
  get stats(): S3Stats {
    return { ...this.#stats };
  }

  async get(key: string, opts?: { signal?: AbortSignal }): Promise<Buffer> {
    const fullKey = this.#fullKey(key);
    const signal = opts?.signal;
    return this.#call('get', key, `reading "${key}" from ${this.name}`, signal, async () => {
      const res = await this.#client.send(new GetObjectCommand({ Bucket: this.#bucket, Key: fullKey }), sendOpts(signal));
      const data = await readBody(res);
      if (res.ContentLength !== undefined && res.ContentLength !== data.length) {
        throw new TransientError(`body has ${data.length} bytes, Content-Length said ${res.ContentLength}`);
      }
      return data;
    });
  }

  async getRange(key: string, range: ByteRange, opts?: { signal?: AbortSignal }): Promise<RangeResult> {
    const fullKey = this.#fullKey(key);
    validateRange(range);
    const signal = opts?.signal;
    const header = formatRange(range);
    const doing = `reading ${header} of "${key}" from ${this.name}`;
    try {
      return await this.#call('getRange', key, doing, signal, async () => {
        const res = await this.#client.send(
          new GetObjectCommand({ Bucket: this.#bucket, Key: fullKey, Range: header }),
          sendOpts(signal),
        );
        const data = await readBody(res);
        return rangeResult(range, res, data);
      });
    } catch (err) {
      // S3 answers 416 to any range of an empty object, but a suffix of an empty object is empty.
      if ('suffix' in range && err instanceof ObjectStoreError && err.code === ErrorCode.INVALID_RANGE) {
        const info = await this.head(key);
        if (info.size === 0) return { data: Buffer.alloc(0), offset: 0, size: 0 };
      }
      throw err;
    }
  }

  async head(key: string): Promise<ObjectInfo> {
    const fullKey = this.#fullKey(key);
    return this.#call('head', key, `looking up "${key}" in ${this.name}`, undefined, async () => {
      const res = await this.#client.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: fullKey }));
      return {
        key,
        size: res.ContentLength ?? 0,
        lastModifiedMs: res.LastModified?.getTime() ?? 0,
        etag: res.ETag ?? '',
      };
    });
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    validateListPrefix(prefix);
    this.#checkOpen(prefix);
    const full = this.#prefix + prefix;
    let token: string | undefined;
    for (;;) {
      const page = await this.#call('list', prefix, `listing "${prefix}" in ${this.name}`, undefined, () =>
        this.#client.send(
          new ListObjectsV2Command({
            Bucket: this.#bucket,
            Prefix: full,
            MaxKeys: this.#pageSize,
            ...(token !== undefined ? { ContinuationToken: token } : {}),
          }),
        ),
      );
      for (const obj of page.Contents ?? []) {
        const k = obj.Key ?? '';
        if (!k.startsWith(this.#prefix)) {
          throw new ObjectStoreError(ErrorCode.STORAGE, this.name, prefix, `listing "${prefix}" in ${this.name}: server returned key ${JSON.stringify(k)} outside the prefix`);
        }
        yield {
          key: k.slice(this.#prefix.length),
          size: obj.Size ?? 0,
          lastModifiedMs: obj.LastModified?.getTime() ?? 0,
          etag: obj.ETag ?? '',
        };
      }
      if (page.IsTruncated !== true) return;
      if (page.NextContinuationToken === undefined || page.NextContinuationToken === '') {
        throw new ObjectStoreError(ErrorCode.STORAGE, this.name, prefix, `listing "${prefix}" in ${this.name}: truncated page without a continuation token`);
      }
      token = page.NextContinuationToken;
    }
  }

  async put(key: string, body: Uint8Array | Readable | { readonly file: string }, opts?: PutOptions): Promise<ObjectInfo> {
    const fullKey = this.#fullKey(key);
    const signal = opts?.signal;
    if (body instanceof Uint8Array && body.length <= this.#threshold) {
      return this.#putObject(key, fullKey, body, opts?.ifNoneMatch === true, signal);
    }
    return putViaUpload(this.upload(key, opts), body, { bucket: this.name, key, signal });
  }

  upload(key: string, opts?: PutOptions): ObjectUpload {
    const fullKey = this.#fullKey(key);
    const ifNoneMatch = opts?.ifNoneMatch === true;
    return new S3Upload(this, {
      key,
      fullKey,
      ifNoneMatch,
      // Without server support for conditional completes, a conditional write is one PutObject.
      singlePut: ifNoneMatch && !this.#conditionalMultipart,
      partSize: this.#partSize,
      concurrency: this.#partConcurrency,
      signal: opts?.signal,
    });
  }

  async delete(key: string): Promise<void> {
    const fullKey = this.#fullKey(key);
    try {
      await this.#call('delete', key, `deleting "${key}" from ${this.name}`, undefined, () =>
        this.#client.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: fullKey })),
      );
    } catch (err) {
      if (err instanceof ObjectStoreError && err.code === ErrorCode.NOT_FOUND) return;
      throw err;
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#client.destroy();
    this.#agents.http.destroy();
    this.#agents.https.destroy();
  }

  // ---- internals used by S3Upload -------------------------------------------------------------

  /** @internal One PutObject; with `ifNoneMatch` a 412 after a retried attempt is checked against our own bytes. */
  async #putObject(key: string, fullKey: string, body: Uint8Array, ifNoneMatch: boolean, signal: AbortSignal | undefined): Promise<ObjectInfo> {
    const doing = `storing "${key}" (${body.length} bytes) in ${this.name}`;
    let attempts = 0;
    try {
      const res = await this.#call('put', key, doing, signal, () => {
        attempts++;
        return this.#client.send(
          new PutObjectCommand({
            Bucket: this.#bucket,
            Key: fullKey,
            Body: body,
            ContentLength: body.length,
            ...(ifNoneMatch ? { IfNoneMatch: '*' } : {}),
          }),
          sendOpts(signal),
        );
      });
      return { key, size: body.length, lastModifiedMs: Date.now(), etag: res.ETag ?? '' };
    } catch (err) {
      // An earlier attempt may have stored the object before its response was lost: then the 412
      // is about our own write. Single-part ETags are the MD5 of the body.
      if (ifNoneMatch && attempts > 1 && err instanceof ObjectStoreError && err.code === ErrorCode.ALREADY_EXISTS) {
        const info = await this.head(key);
        const md5 = `"${createHash('md5').update(body).digest('hex')}"`;
        if (info.size === body.length && info.etag === md5) return info;
      }
      throw err;
    }
  }

  /** @internal */
  createMultipart(key: string, fullKey: string, signal: AbortSignal | undefined): Promise<string> {
    return this.#call('createMultipart', key, `starting a multipart upload of "${key}" to ${this.name}`, signal, async () => {
      const res = await this.#client.send(new CreateMultipartUploadCommand({ Bucket: this.#bucket, Key: fullKey }), sendOpts(signal));
      if (res.UploadId === undefined || res.UploadId === '') throw new TransientError('CreateMultipartUpload returned no UploadId');
      return res.UploadId;
    });
  }

  /** @internal */
  uploadPart(key: string, fullKey: string, uploadId: string, partNumber: number, body: Buffer, signal: AbortSignal | undefined): Promise<CompletedPart> {
    return this.#call('uploadPart', key, `uploading part ${partNumber} (${body.length} bytes) of "${key}" to ${this.name}`, signal, async () => {
      const res = await this.#client.send(
        new UploadPartCommand({ Bucket: this.#bucket, Key: fullKey, UploadId: uploadId, PartNumber: partNumber, Body: body, ContentLength: body.length }),
        sendOpts(signal),
      );
      if (res.ETag === undefined || res.ETag === '') throw new TransientError(`UploadPart ${partNumber} returned no ETag`);
      return { PartNumber: partNumber, ETag: res.ETag };
    });
  }

  /** @internal */
  async completeMultipart(
    key: string,
    fullKey: string,
    uploadId: string,
    parts: CompletedPart[],
    size: number,
    ifNoneMatch: boolean,
    signal: AbortSignal | undefined,
  ): Promise<ObjectInfo> {
    const res = await this.#call('completeMultipart', key, `completing the multipart upload of "${key}" to ${this.name}`, signal, () =>
      this.#client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.#bucket,
          Key: fullKey,
          UploadId: uploadId,
          MultipartUpload: { Parts: parts },
          ...(ifNoneMatch ? { IfNoneMatch: '*' } : {}),
        }),
        sendOpts(signal),
      ),
    );
    if (res.ETag === undefined || res.ETag === '') {
      // Ceph RGW (pacific) answers with an empty ETag: ask for it.
      const info = await this.head(key);
      return { ...info, size };
    }
    return { key, size, lastModifiedMs: Date.now(), etag: res.ETag };
  }

  /** Unfinished multipart uploads under `prefix` (ListMultipartUploads, paged). */
  async *listIncompleteUploads(prefix: string): AsyncIterable<IncompleteUpload> {
    validateListPrefix(prefix);
    this.#checkOpen(prefix);
    let keyMarker: string | undefined;
    let idMarker: string | undefined;
    for (;;) {
      const page = await this.#call('listMultipart', prefix, `listing unfinished multipart uploads of "${prefix}" in ${this.name}`, undefined, () =>
        this.#client.send(
          new ListMultipartUploadsCommand({
            Bucket: this.#bucket,
            Prefix: this.#prefix + prefix,
            MaxUploads: this.#pageSize,
            ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}),
            ...(idMarker !== undefined ? { UploadIdMarker: idMarker } : {}),
          }),
        ),
      );
      for (const u of page.Uploads ?? []) {
        const k = u.Key ?? '';
        if (!k.startsWith(this.#prefix) || u.UploadId === undefined) continue;
        yield { key: k.slice(this.#prefix.length), id: u.UploadId, startedMs: u.Initiated?.getTime() ?? 0 };
      }
      if (page.IsTruncated !== true) return;
      if (page.NextKeyMarker === undefined || page.NextKeyMarker === '') {
        throw new ObjectStoreError(ErrorCode.STORAGE, this.name, prefix, `listing unfinished multipart uploads of "${prefix}" in ${this.name}: truncated page without a marker`);
      }
      keyMarker = page.NextKeyMarker;
      idMarker = page.NextUploadIdMarker;
    }
  }

  /** AbortMultipartUpload; an upload already gone is not an error. */
  async discardIncompleteUpload(upload: IncompleteUpload): Promise<void> {
    await this.abortMultipart(upload.key, this.#fullKey(upload.key), upload.id);
  }

  /** @internal */
  async abortMultipart(key: string, fullKey: string, uploadId: string): Promise<void> {
    try {
      await this.#call('abortMultipart', key, `aborting the multipart upload of "${key}" to ${this.name}`, undefined, () =>
        this.#client.send(new AbortMultipartUploadCommand({ Bucket: this.#bucket, Key: fullKey, UploadId: uploadId })),
      );
    } catch (err) {
      if (err instanceof ObjectStoreError && err.code === ErrorCode.NOT_FOUND) return; // NoSuchUpload: already gone
      throw err;
    }
  }

  /** @internal */
  putObject(key: string, fullKey: string, body: Uint8Array, ifNoneMatch: boolean, signal: AbortSignal | undefined): Promise<ObjectInfo> {
    return this.#putObject(key, fullKey, body, ifNoneMatch, signal);
  }

  /**
   * Runs `attempt` under the retry policy and maps its failure to an ObjectStoreError whose
   * message starts with `doing`.
   */
  async #call<T>(operation: S3Operation, key: string, doing: string, signal: AbortSignal | undefined, attempt: () => Promise<T>): Promise<T> {
    this.#checkOpen(key);
    for (let n = 1; ; n++) {
      signal?.throwIfAborted();
      const started = performance.now();
      try {
        const out = await attempt();
        this.#stats.requests++;
        this.#hooks.onRequest?.({ operation, key, attempt: n, durationMs: performance.now() - started, outcome: 'ok' });
        return out;
      } catch (err) {
        this.#stats.requests++;
        if (signal?.aborted === true || isAbortError(err)) {
          this.#stats.failures++;
          this.#hooks.onRequest?.({ operation, key, attempt: n, durationMs: performance.now() - started, outcome: 'error', errorName: 'AbortError' });
          throw err;
        }
        let c = classify(err);
        if (c.retryable && c.status === undefined && BODY_OPERATIONS.has(operation)) {
          // A server may refuse a request with a body before reading it (no such bucket, access
          // denied) and close the connection mid-body, so the client sees only a reset. Ask the
          // bucket once: a definite answer replaces the connection error.
          c = (await this.#bucketProblem(signal)) ?? c;
        }
        const retry = c.retryable && n < this.#retry.maxAttempts;
        this.#hooks.onRequest?.({
          operation,
          key,
          attempt: n,
          durationMs: performance.now() - started,
          outcome: retry ? 'retry' : 'error',
          errorName: c.name,
          ...(c.status !== undefined ? { httpStatus: c.status } : {}),
        });
        if (!retry) {
          this.#stats.failures++;
          const message = c.retryable
            ? `${doing}: ${c.reason} (gave up after ${n} attempt${n === 1 ? '' : 's'})`
            : `${doing}: ${describe(c)}`;
          throw new ObjectStoreError(c.code, this.name, key, message, { cause: err });
        }
        const delayMs = backoffDelayMs(this.#retry, n);
        this.#stats.retries++;
        this.#hooks.onRetry?.({ operation, key, attempt: n, delayMs, errorName: c.name, ...(c.status !== undefined ? { httpStatus: c.status } : {}) });
        await sleep(delayMs, undefined, signal ? { signal } : {});
      }
    }
  }

  /** Why the bucket refuses requests (no such bucket, access denied), or null if it does not. */
  async #bucketProblem(signal: AbortSignal | undefined): Promise<Classified | null> {
    try {
      await this.#client.send(new HeadBucketCommand({ Bucket: this.#bucket }), sendOpts(signal));
      return null;
    } catch (err) {
      const c = classify(err);
      if (c.status === 404) return { ...c, code: ErrorCode.NO_SUCH_BUCKET, retryable: false };
      return c.code === ErrorCode.ACCESS_DENIED ? c : null;
    }
  }

  #fullKey(key: string): string {
    validateKey(key);
    this.#checkOpen(key);
    const full = this.#prefix + key;
    if (Buffer.byteLength(full, 'utf8') > 1024) {
      throw new InvalidArgumentError('key', `object key with the bucket prefix is longer than 1024 bytes`);
    }
    return full;
  }

  #checkOpen(key: string): void {
    if (this.#closed) throw new ObjectStoreError(ErrorCode.STORAGE, this.name, key, `using ${this.name}: bucket is closed`);
  }
}

/** A short human reason for a non-retryable failure. */
function describe(c: Classified): string {
  switch (c.code) {
    case ErrorCode.NOT_FOUND:
      return `no such object (${c.reason})`;
    case ErrorCode.NO_SUCH_BUCKET:
      return `no such bucket (${c.reason})`;
    case ErrorCode.ACCESS_DENIED:
      return `access denied (${c.reason})`;
    case ErrorCode.INVALID_RANGE:
      return `range starts at or beyond the end of the object (${c.reason})`;
    case ErrorCode.ALREADY_EXISTS:
      return `object already exists (${c.reason})`;
    default:
      return c.reason;
  }
}

function sendOpts(signal: AbortSignal | undefined): { abortSignal?: AbortSignal } {
  return signal ? { abortSignal: signal } : {};
}

async function readBody(res: GetObjectCommandOutput): Promise<Buffer> {
  if (res.Body === undefined) return Buffer.alloc(0);
  const bytes = await res.Body.transformToByteArray();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Interprets a ranged GET response (206 with Content-Range, or 200 with the whole object). */
function rangeResult(range: ByteRange, res: GetObjectCommandOutput, data: Buffer): RangeResult {
  const status = res.$metadata.httpStatusCode;
  if (status === 200 || res.ContentRange === undefined) {
    // The server ignored the Range header and sent everything.
    if (res.ContentLength !== undefined && res.ContentLength !== data.length) {
      throw new TransientError(`body has ${data.length} bytes, Content-Length said ${res.ContentLength}`);
    }
    const span = resolveRange(range, data.length);
    if (span === undefined) {
      throw Object.assign(new Error('range starts at or beyond the end of the object'), { name: 'InvalidRange' });
    }
    return { data: data.subarray(span.start, span.end), offset: span.start, size: data.length };
  }
  const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(res.ContentRange);
  if (m === null) throw new Error(`unusable Content-Range ${JSON.stringify(res.ContentRange)}`);
  const start = Number(m[1]);
  const end = Number(m[2]) + 1;
  const size = Number(m[3]);
  const want = resolveRange(range, size);
  if (want === undefined || want.start !== start || want.end !== end) {
    throw new Error(`server answered ${formatRange(range)} with Content-Range ${res.ContentRange}`);
  }
  if (data.length !== end - start) {
    throw new TransientError(`range body has ${data.length} bytes, Content-Range said ${end - start}`);
  }
  return { data, offset: start, size };
}

function intOption(field: keyof typeof S3_OPTION_RANGES, value: number | undefined, dflt: number): number {
  if (value === undefined) return dflt;
  const [min, max] = S3_OPTION_RANGES[field];
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(field, `must be an integer in [${min}, ${max}], got ${String(value)}`);
  }
  return value;
}

interface UploadSpec {
  readonly key: string;
  readonly fullKey: string;
  readonly ifNoneMatch: boolean;
  readonly singlePut: boolean;
  readonly partSize: number;
  readonly concurrency: number;
  readonly signal: AbortSignal | undefined;
}

/**
 * A piecewise write. Bytes are copied into part-sized buffers; a full buffer is uploaded as a
 * part once more bytes arrive (so an object of at most one part becomes one PutObject), with at
 * most `concurrency` parts in flight (`write` waits for a slot). In `singlePut` mode everything is
 * buffered for one conditional PutObject.
 */
class S3Upload implements ObjectUpload {
  readonly #bucket: S3Bucket;
  readonly #spec: UploadSpec;
  #state: 'open' | 'busy' | 'done' | 'failed' | 'aborted' = 'open';
  #buf: Buffer | undefined;
  #filled = 0;
  /** singlePut mode: every byte so far. */
  readonly #all: Buffer[] = [];
  #size = 0;
  #uploadId: Promise<string> | undefined;
  #nextPart = 1;
  /** Part uploads in flight by part number; they never reject (errors go to #partError). */
  readonly #inflight = new Map<number, Promise<void>>();
  readonly #parts: CompletedPart[] = [];
  #partError: unknown;

  constructor(bucket: S3Bucket, spec: UploadSpec) {
    this.#bucket = bucket;
    this.#spec = spec;
  }

  async write(chunk: Uint8Array): Promise<void> {
    this.#enter('write');
    try {
      this.#spec.signal?.throwIfAborted();
      if (this.#spec.singlePut) {
        if (this.#size + chunk.length > S3_MAX_PUT_BYTES) {
          throw new ObjectStoreError(
            ErrorCode.STORAGE,
            this.#bucket.name,
            this.#spec.key,
            `writing "${this.#spec.key}" to ${this.#bucket.name}: a conditional (ifNoneMatch) write is one PutObject of at most 5 GiB; set conditionalMultipart if the server supports conditional multipart completes`,
          );
        }
        this.#all.push(Buffer.from(chunk)); // a copy: the caller may reuse its buffer
        this.#size += chunk.length;
        this.#state = 'open';
        return;
      }
      let off = 0;
      while (off < chunk.length) {
        if (this.#buf !== undefined && this.#filled === this.#buf.length) await this.#flushPart();
        this.#buf ??= Buffer.allocUnsafe(this.#spec.partSize);
        const n = Math.min(chunk.length - off, this.#buf.length - this.#filled);
        this.#buf.set(chunk.subarray(off, off + n), this.#filled);
        this.#filled += n;
        this.#size += n;
        off += n;
      }
      this.#state = 'open';
    } catch (err) {
      throw await this.#fail(err);
    }
  }

  async complete(): Promise<ObjectInfo> {
    this.#enter('complete');
    const { key, fullKey, ifNoneMatch, signal } = this.#spec;
    try {
      signal?.throwIfAborted();
      let info: ObjectInfo;
      if (this.#spec.singlePut) {
        info = await this.#bucket.putObject(key, fullKey, Buffer.concat(this.#all, this.#size), ifNoneMatch, signal);
      } else if (this.#uploadId === undefined) {
        const body = this.#buf === undefined ? Buffer.alloc(0) : this.#buf.subarray(0, this.#filled);
        info = await this.#bucket.putObject(key, fullKey, body, ifNoneMatch, signal);
      } else {
        if (this.#filled > 0) await this.#flushPart();
        await this.#drain();
        if (this.#partError !== undefined) throw this.#partError;
        const parts = [...this.#parts].sort((a, b) => (a.PartNumber ?? 0) - (b.PartNumber ?? 0));
        info = await this.#bucket.completeMultipart(key, fullKey, await this.#uploadId, parts, this.#size, ifNoneMatch, signal);
      }
      this.#state = 'done';
      this.#release();
      return info;
    } catch (err) {
      throw await this.#fail(err);
    }
  }

  async abort(): Promise<void> {
    if (this.#state === 'done' || this.#state === 'failed' || this.#state === 'aborted') return;
    this.#state = 'aborted';
    await this.#cleanup();
  }

  #enter(op: string): void {
    if (this.#state === 'busy') throw new TypeError(`ObjectUpload.${op}() called while another call is pending`);
    if (this.#state !== 'open') {
      throw new ObjectStoreError(
        ErrorCode.STORAGE,
        this.#bucket.name,
        this.#spec.key,
        `${op} on the upload of "${this.#spec.key}" to ${this.#bucket.name}: upload is ${this.#state}`,
      );
    }
    this.#state = 'busy';
  }

  /** Starts uploading the current buffer as the next part, after waiting for a free slot. */
  async #flushPart(): Promise<void> {
    const { key, fullKey, signal } = this.#spec;
    while (this.#inflight.size >= this.#spec.concurrency) await Promise.race(this.#inflight.values());
    if (this.#partError !== undefined) throw this.#partError;
    const body = (this.#buf as Buffer).subarray(0, this.#filled);
    this.#buf = undefined;
    this.#filled = 0;
    const partNumber = this.#nextPart++;
    if (partNumber > S3_MAX_PARTS) {
      throw new ObjectStoreError(
        ErrorCode.STORAGE,
        this.#bucket.name,
        key,
        `writing "${key}" to ${this.#bucket.name}: more than ${S3_MAX_PARTS} parts of ${this.#spec.partSize} bytes; raise partSizeBytes`,
      );
    }
    this.#uploadId ??= this.#bucket.createMultipart(key, fullKey, signal);
    const uploadId = this.#uploadId;
    const task = async (): Promise<void> => {
      try {
        this.#parts.push(await this.#bucket.uploadPart(key, fullKey, await uploadId, partNumber, body, signal));
      } catch (err) {
        this.#partError ??= err; // the first failure is reported; the upload is aborted either way
      } finally {
        this.#inflight.delete(partNumber);
      }
    };
    this.#inflight.set(partNumber, task());
  }

  /** Waits for every part in flight to settle (their errors land in #partError). */
  async #drain(): Promise<void> {
    while (this.#inflight.size > 0) await Promise.all([...this.#inflight.values()]);
  }

  /** Marks the upload failed, aborts the multipart upload, and returns the error to throw. */
  async #fail(err: unknown): Promise<unknown> {
    this.#state = 'failed';
    try {
      await this.#cleanup();
    } catch (cleanupErr) {
      return withSecondaryError(err, cleanupErr, 'aborting the multipart upload also failed');
    }
    return err;
  }

  /** Lets parts in flight settle, then aborts the multipart upload (if one was started). */
  async #cleanup(): Promise<void> {
    await this.#drain();
    const uploadIdP = this.#uploadId;
    this.#release();
    if (uploadIdP === undefined) return;
    let uploadId: string;
    try {
      uploadId = await uploadIdP;
    } catch (err) {
      if (err instanceof ObjectStoreError || isAbortError(err)) return; // never started: nothing to abort
      throw err;
    }
    await this.#bucket.abortMultipart(this.#spec.key, this.#spec.fullKey, uploadId);
  }

  #release(): void {
    this.#buf = undefined;
    this.#filled = 0;
    this.#all.length = 0;
    this.#uploadId = undefined;
  }
}
