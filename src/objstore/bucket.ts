/**
 * The bucket layer: the one small interface every object store implements. Two providers:
 * `fs` (the embedded default, a directory on local disk) and `s3` (any S3-compatible server).
 * Both pass the same acceptance suite (`test/support/bucket-acceptance.ts`).
 *
 * Keys are `/`-separated relative paths: no leading `/`, no empty, `.` or `..` segments, no
 * backslash or NUL. Implementations reject other keys with an InvalidArgumentError.
 *
 * Errors are ObjectStoreError with codes NOT_FOUND, ACCESS_DENIED, NO_SUCH_BUCKET, INVALID_RANGE,
 * ALREADY_EXISTS, UNAVAILABLE (after retries were exhausted) or STORAGE. Malformed keys, list
 * prefixes and ranges are InvalidArgumentError (INVALID_ARGUMENT). A call whose `signal` is
 * aborted rejects with the signal's reason (an AbortError), not an ObjectStoreError. Methods that
 * return a promise report every failure through it (they never throw synchronously); `upload()`
 * throws InvalidArgumentError synchronously for a bad key.
 */
import type { Readable } from 'node:stream';

/** A byte range of an object: `[offset, offset + length)`, or the last `suffix` bytes. */
export type ByteRange = { readonly offset: number; readonly length: number } | { readonly suffix: number };

/** What `head` and `list` report about an object. */
export interface ObjectInfo {
  readonly key: string;
  readonly size: number;
  /** Last modification time, ms since the epoch. */
  readonly lastModifiedMs: number;
  /** Opaque version tag (S3 ETag, or size+mtime for the filesystem); changes when the object does. */
  readonly etag: string;
}

/** Result of a range read: the bytes, plus the object's total size when the store reports it. */
export interface RangeResult {
  readonly data: Buffer;
  /** Absolute offset of `data[0]` in the object (differs from the request for suffix reads). */
  readonly offset: number;
  /** Total object size. */
  readonly size: number;
}

/** Options of a write. */
export interface PutOptions {
  /** Fail with ALREADY_EXISTS instead of replacing an existing object. */
  readonly ifNoneMatch?: boolean;
  /**
   * Replace the object only if it is still the version with this ETag (as `head`/`list` report
   * it); fail with ALREADY_EXISTS when it is another one or gone. A writer that read a version
   * and writes what it made of it cannot then overwrite a newer version someone else wrote
   * meanwhile (a paused replica waking up).
   */
  readonly ifMatch?: string;
  /** Abort the write. */
  readonly signal?: AbortSignal;
}

/** The condition of a write (from {@link PutOptions}), as every provider applies it. */
export interface WriteCondition {
  readonly ifNoneMatch: boolean;
  readonly ifMatch?: string;
}

/** The condition of a write with `opts`. @throws TypeError when it asks for both. */
export function writeCondition(opts: PutOptions | undefined): WriteCondition {
  if (opts?.ifNoneMatch === true && opts.ifMatch !== undefined) throw new TypeError('a write takes ifNoneMatch or ifMatch, not both');
  return opts?.ifMatch !== undefined ? { ifNoneMatch: false, ifMatch: opts.ifMatch } : { ifNoneMatch: opts?.ifNoneMatch === true };
}

/**
 * An object being written piece by piece (a multipart upload on S3, a temp file on disk). Nothing
 * is visible under the key until `complete()` resolves; `abort()` discards everything.
 * `write` calls must not overlap (await each one).
 */
export interface ObjectUpload {
  /** Appends `chunk`; once the promise settles the upload holds no reference to it (the caller may reuse its buffer). */
  write(chunk: Uint8Array): Promise<void>;
  /** Publishes the object atomically and returns what was stored. */
  complete(): Promise<ObjectInfo>;
  /** Discards the upload; safe to call after a failure and more than once. */
  abort(): Promise<void>;
}

/** Options of {@link BucketReader.getRange}. */
export interface GetRangeOptions {
  readonly signal?: AbortSignal;
  /** A buffer to read the bytes into, when they fit. */
  readonly into?: Uint8Array;
}

/**
 * Where a read of `length` bytes goes: a view of `into` when it is large enough
 * ({@link GetRangeOptions.into}), else a buffer of its own.
 */
export function readTarget(length: number, into: Uint8Array | undefined): Buffer {
  return into !== undefined && into.length >= length ? Buffer.from(into.buffer, into.byteOffset, length) : Buffer.allocUnsafe(length);
}

/** The read half of a bucket. */
export interface BucketReader {
  /** Human-readable name for messages and metrics (`s3://bucket/prefix` or `file:///dir`). */
  readonly name: string;
  /** Whole object. NOT_FOUND if missing. */
  get(key: string, opts?: { signal?: AbortSignal }): Promise<Buffer>;
  /**
   * A byte range. A range that starts inside the object and runs past its end is cut at the end;
   * one that starts at or beyond the end is INVALID_RANGE; a suffix longer than the object returns
   * the whole object (so any suffix of an empty object is empty). `offset` must be a non-negative
   * integer, `length` and `suffix` positive integers (INVALID_ARGUMENT otherwise).
   * With `opts.into` large enough for the bytes, they are read into it and `data` is a view of
   * it (no allocation per read: a caller reading many ranges in turn reuses one buffer);
   * otherwise, or when the implementation does not support it, `data` is a buffer of its own.
   */
  getRange(key: string, range: ByteRange, opts?: GetRangeOptions): Promise<RangeResult>;
  /** Size and version of an object. NOT_FOUND if missing. */
  head(key: string): Promise<ObjectInfo>;
  /**
   * Objects whose key starts with `prefix` (a string prefix, not a directory: `a/b` also matches
   * `a/bc`), in lexicographic order of the keys' UTF-8 bytes. Pages are fetched as iteration
   * proceeds.
   */
  list(prefix: string): AsyncIterable<ObjectInfo>;
}

/** A bucket: reads plus writes. */
export interface Bucket extends BucketReader {
  /** Stores a whole object from memory, a stream or a local file (`{ file }`), atomically. */
  put(key: string, body: Uint8Array | Readable | { readonly file: string }, opts?: PutOptions): Promise<ObjectInfo>;
  /** Starts a piecewise write (see ObjectUpload). */
  upload(key: string, opts?: PutOptions): ObjectUpload;
  /** Deletes an object; deleting a missing object is not an error. */
  delete(key: string): Promise<void>;
  /** Releases sockets and handles. */
  close(): Promise<void>;
}

/**
 * Debris of a write that never completed: an unfinished S3 multipart upload, or a temp file of the
 * filesystem bucket left by a crash. Invisible to readers and to `list`, but it takes space.
 */
export interface IncompleteUpload {
  /** The key the write was for (the temp file's own path, relative to the bucket, on disk). */
  readonly key: string;
  /** The provider's id of the write (S3 upload id; the temp file's relative path). */
  readonly id: string;
  /** When the write started (S3 `Initiated`; the temp file's mtime), ms since the epoch. */
  readonly startedMs: number;
}

/**
 * Finding and discarding {@link IncompleteUpload}s; both providers implement it. Discarding one
 * that is in fact still in progress makes that write fail, never publish a partial object, so a
 * sweeper only discards writes older than any write may take.
 */
export interface IncompleteUploads {
  /** The incomplete writes under `prefix` (same prefix rules as `list`), in no set order. */
  listIncompleteUploads(prefix: string): AsyncIterable<IncompleteUpload>;
  /** Discards one; one already gone is not an error. */
  discardIncompleteUpload(upload: IncompleteUpload): Promise<void>;
}

/** Whether `b` can list and discard its incomplete writes. */
export function hasIncompleteUploads<B extends object>(b: B): b is B & IncompleteUploads {
  return typeof (b as Partial<IncompleteUploads>).listIncompleteUploads === 'function' && typeof (b as Partial<IncompleteUploads>).discardIncompleteUpload === 'function';
}
