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
 * - `ifNoneMatch` sends `If-None-Match: *`, `ifMatch` sends `If-Match: <etag>` (412 →
 *   ALREADY_EXISTS). Some servers (Ceph RGW before Squid) ignore those headers on
 *   CompleteMultipartUpload and overwrite silently, so unless `conditionalMultipart` is set, a
 *   conditional write of more than one part (day blocks, which may be larger than any buffer
 *   should be) checks the object (HEAD) just before its complete instead: two steps, so it stops
 *   a writer that read an older version (a paused process), not two completes in the same
 *   instant. A write of one part (leases, marks) is one PutObject, conditional on the server. Ceph RGW (pacific) compares If-Match with the ETag without its
 *   quotes: a 412 for the ETag the object does have is tried once more with it unquoted.
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
import { backoffDelayMs, DEFAULT_RETRY_POLICY, type RetryPolicy } from '../../common/backoff.js';
import { ErrorCode, InvalidArgumentError, ObjectStoreError } from '../../errors.js';
import { isAbortError, putViaUpload } from '../body.js';
import { writeCondition, type Bucket, type ByteRange, type GetRangeOptions, type IncompleteUpload, type IncompleteUploads, type ObjectInfo, type ObjectUpload, type PutOptions, type RangeResult, type WriteCondition } from '../bucket.js';
import { formatRange, normalizeKeyPrefix, resolveRange, validateKey, validateListPrefix, validateRange } from '../keys.js';
import type { Agent as HttpAgent } from 'node:http';
import type { Agent as HttpsAgent } from 'node:https';
import { GuardedHttpAgent, GuardedHttpsAgent } from './agents.js';
import { intOption, S3_DEFAULTS as DEFAULTS, type S3BucketConfig, type S3Hooks, type S3Operation, type S3Stats } from './config.js';
import { BODY_OPERATIONS, classify, describe, TransientError, type Classified } from './errors.js';
import { S3Upload, type MultipartTarget } from './multipart.js';

/** A {@link Bucket} on an S3-compatible server. See the module comment for the contract. */
/** An ETag without its quotes. */
function unquoted(etag: string): string {
  return etag.replace(/^"|"$/g, '');
}

/** Whether two ETags name one version (servers differ in quoting them). */
function sameEtag(a: string, b: string): boolean {
  return unquoted(a) === unquoted(b);
}


export class S3Bucket implements Bucket, IncompleteUploads, MultipartTarget {
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

  async getRange(key: string, range: ByteRange, opts?: GetRangeOptions): Promise<RangeResult> {
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
        const data = await readBody(res, opts?.into);
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
      return this.#putObject(key, fullKey, body, writeCondition(opts), signal);
    }
    return putViaUpload(this.upload(key, opts), body, { bucket: this.name, key, signal });
  }

  upload(key: string, opts?: PutOptions): ObjectUpload {
    const fullKey = this.#fullKey(key);
    const cond = writeCondition(opts);
    return new S3Upload(this, {
      key,
      fullKey,
      cond,
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

  /**
   * @internal One PutObject. A 412 after a retried attempt is checked against our own bytes; a
   * 412 of `ifMatch` for the ETag the object does have is tried once more with it unquoted.
   */
  async #putObject(key: string, fullKey: string, body: Uint8Array, cond: WriteCondition, signal: AbortSignal | undefined): Promise<ObjectInfo> {
    const doing = `storing "${key}" (${body.length} bytes) in ${this.name}${cond.ifMatch !== undefined ? ` over version ${cond.ifMatch}` : ''}`;
    let attempts = 0;
    const send = (ifMatch: string | undefined): Promise<ObjectInfo> =>
      this.#call('put', key, doing, signal, async () => {
        attempts++;
        const res = await this.#client.send(
          new PutObjectCommand({
            Bucket: this.#bucket,
            Key: fullKey,
            Body: body,
            ContentLength: body.length,
            ...(cond.ifNoneMatch ? { IfNoneMatch: '*' } : {}),
            ...(ifMatch !== undefined ? { IfMatch: ifMatch } : {}),
          }),
          sendOpts(signal),
        );
        return { key, size: body.length, lastModifiedMs: Date.now(), etag: res.ETag ?? '' };
      });
    // the forms of If-Match to try: as given, then unquoted (Ceph RGW 16 compares it so)
    const forms = cond.ifMatch === undefined ? [undefined] : [...new Set([cond.ifMatch, unquoted(cond.ifMatch)])];
    for (let i = 0; ; i++) {
      const before = attempts;
      try {
        return await send(forms[i]);
      } catch (err) {
        if (!(err instanceof ObjectStoreError && err.code === ErrorCode.ALREADY_EXISTS)) throw err;
        const retried = attempts - before > 1;
        const another = i + 1 < forms.length;
        if (!retried && !another) throw err;
        const info = await this.head(key).catch(() => null);
        // an earlier attempt may have stored the object before its response was lost: then the
        // 412 is about our own write. Single-part ETags are the MD5 of the body.
        if (retried && info !== null && info.size === body.length && info.etag === `"${createHash('md5').update(body).digest('hex')}"`) return info;
        // the object is the version asked for, refused in this form of its ETag: the next form
        if (another && info !== null && sameEtag(info.etag, cond.ifMatch!)) continue;
        throw err;
      }
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
    cond: WriteCondition,
    signal: AbortSignal | undefined,
  ): Promise<ObjectInfo> {
    const conditional = this.#conditionalMultipart;
    if ((cond.ifMatch !== undefined || cond.ifNoneMatch) && !conditional) {
      // the server may ignore the condition on a complete: check the object just before it
      const now = await this.head(key).catch((err: unknown) => {
        if (err instanceof ObjectStoreError && err.code === ErrorCode.NOT_FOUND) return null;
        throw err;
      });
      const wanted = cond.ifMatch === undefined ? 'no object (ifNoneMatch)' : `version ${cond.ifMatch} (ifMatch)`;
      if (cond.ifMatch === undefined ? now !== null : now === null || !sameEtag(now.etag, cond.ifMatch)) {
        throw new ObjectStoreError(ErrorCode.ALREADY_EXISTS, this.name, key, `completing the multipart upload of "${key}" to ${this.name}: the object is ${now === null ? 'gone' : `version ${now.etag}`}, not ${wanted}: not replaced`);
      }
    }
    const res = await this.#call('completeMultipart', key, `completing the multipart upload of "${key}" to ${this.name}`, signal, () =>
      this.#client.send(
        new CompleteMultipartUploadCommand({
          Bucket: this.#bucket,
          Key: fullKey,
          UploadId: uploadId,
          MultipartUpload: { Parts: parts },
          ...(cond.ifNoneMatch && conditional ? { IfNoneMatch: '*' } : {}),
          ...(cond.ifMatch !== undefined && conditional ? { IfMatch: cond.ifMatch } : {}),
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
        // without its start time an upload cannot be told abandoned: it is not listed (as 0, it
        // would look older than any bound, and one in progress would be aborted)
        if (!k.startsWith(this.#prefix) || u.UploadId === undefined || u.Initiated === undefined) continue;
        yield { key: k.slice(this.#prefix.length), id: u.UploadId, startedMs: u.Initiated.getTime() };
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
  putObject(key: string, fullKey: string, body: Uint8Array, cond: WriteCondition, signal: AbortSignal | undefined): Promise<ObjectInfo> {
    return this.#putObject(key, fullKey, body, cond, signal);
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

function sendOpts(signal: AbortSignal | undefined): { abortSignal?: AbortSignal } {
  return signal ? { abortSignal: signal } : {};
}

async function readBody(res: GetObjectCommandOutput, into?: Uint8Array): Promise<Buffer> {
  if (res.Body === undefined) return Buffer.alloc(0);
  const length = res.ContentLength;
  if (into !== undefined && length !== undefined && length <= into.length && Symbol.asyncIterator in res.Body) {
    // the body, as it arrives, into the caller's buffer; a body longer than Content-Length said
    // is read on into a buffer of its own, so rangeResult() sees every byte and refuses it
    const out = Buffer.from(into.buffer, into.byteOffset, into.length);
    let filled = 0;
    const more: Buffer[] = [];
    for await (const chunk of res.Body as AsyncIterable<Uint8Array>) {
      if (more.length === 0 && filled + chunk.length <= length) {
        out.set(chunk, filled);
        filled += chunk.length;
      } else more.push(Buffer.from(chunk));
    }
    return more.length === 0 ? out.subarray(0, filled) : Buffer.concat([out.subarray(0, filled), ...more]);
  }
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
