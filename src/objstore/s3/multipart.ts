/**
 * The multipart upload state machine of the S3 bucket (an {@link ObjectUpload}): parts buffered,
 * uploaded `concurrency` at a time, completed or aborted. The requests themselves (with retries)
 * are the bucket's, through {@link MultipartTarget}.
 */
import type { CompletedPart } from '@aws-sdk/client-s3';
import { ErrorCode, ObjectStoreError } from '../../errors.js';
import { isAbortError, withSecondaryError } from '../body.js';
import type { ObjectInfo, ObjectUpload, WriteCondition } from '../bucket.js';
import { S3_MAX_PARTS } from './config.js';

/** What an upload needs of its bucket: the requests of a write, each retried by the bucket. */
export interface MultipartTarget {
  readonly name: string;
  putObject(key: string, fullKey: string, body: Buffer, cond: WriteCondition, signal: AbortSignal | undefined): Promise<ObjectInfo>;
  createMultipart(key: string, fullKey: string, signal: AbortSignal | undefined): Promise<string>;
  uploadPart(key: string, fullKey: string, uploadId: string, partNumber: number, body: Buffer, signal: AbortSignal | undefined): Promise<CompletedPart>;
  completeMultipart(
    key: string,
    fullKey: string,
    uploadId: string,
    parts: CompletedPart[],
    size: number,
    cond: WriteCondition,
    signal: AbortSignal | undefined,
  ): Promise<ObjectInfo>;
  abortMultipart(key: string, fullKey: string, uploadId: string): Promise<void>;
}

export interface UploadSpec {
  readonly key: string;
  readonly fullKey: string;
  readonly cond: WriteCondition;
  readonly partSize: number;
  readonly concurrency: number;
  readonly signal: AbortSignal | undefined;
}

/**
 * A piecewise write. Bytes are copied into part-sized buffers; a full buffer is uploaded as a
 * part once more bytes arrive (so an object of at most one part becomes one PutObject), with at
 * most `concurrency` parts in flight (`write` waits for a slot). A conditional write of more than
 * one part is conditional at its complete (see S3Bucket.completeMultipart).
 */
export class S3Upload implements ObjectUpload {
  readonly #bucket: MultipartTarget;
  readonly #spec: UploadSpec;
  #state: 'open' | 'busy' | 'done' | 'failed' | 'aborted' = 'open';
  #buf: Buffer | undefined;
  #filled = 0;
  #size = 0;
  #uploadId: Promise<string> | undefined;
  #nextPart = 1;
  /** Part uploads in flight by part number; they never reject (errors go to #partError). */
  readonly #inflight = new Map<number, Promise<void>>();
  readonly #parts: CompletedPart[] = [];
  #partError: unknown;

  constructor(bucket: MultipartTarget, spec: UploadSpec) {
    this.#bucket = bucket;
    this.#spec = spec;
  }

  async write(chunk: Uint8Array): Promise<void> {
    this.#enter('write');
    try {
      this.#spec.signal?.throwIfAborted();
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
    const { key, fullKey, cond, signal } = this.#spec;
    try {
      signal?.throwIfAborted();
      let info: ObjectInfo;
      if (this.#uploadId === undefined) {
        const body = this.#buf === undefined ? Buffer.alloc(0) : this.#buf.subarray(0, this.#filled);
        info = await this.#bucket.putObject(key, fullKey, body, cond, signal);
      } else {
        if (this.#filled > 0) await this.#flushPart();
        await this.#drain();
        if (this.#partError !== undefined) throw this.#partError;
        const parts = [...this.#parts].sort((a, b) => (a.PartNumber ?? 0) - (b.PartNumber ?? 0));
        info = await this.#bucket.completeMultipart(key, fullKey, await this.#uploadId, parts, this.#size, cond, signal);
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
    this.#uploadId = undefined;
  }
}
