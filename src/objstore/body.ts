/**
 * Helpers shared by the providers for `put` bodies and error plumbing.
 */
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { ErrorCode, ObjectStoreError } from '../errors.js';
import type { ObjectInfo, ObjectUpload } from './bucket.js';

/** The body forms `Bucket.put` accepts. */
export type PutBody = Uint8Array | Readable | { readonly file: string };

/** Read size used when streaming a local file into a bucket. */
const FILE_READ_CHUNK_BYTES = 1 << 20;

/**
 * Feeds `body` into `upload` chunk by chunk and completes it; on any failure the upload is
 * aborted and the error rethrown. Errors of the body itself (a stream that errors, a missing
 * source file) become STORAGE errors that say so.
 */
export async function putViaUpload(
  upload: ObjectUpload,
  body: PutBody,
  ctx: { bucket: string; key: string; signal?: AbortSignal | undefined },
): Promise<ObjectInfo> {
  try {
    if (body instanceof Uint8Array) {
      await upload.write(body);
    } else {
      const source =
        body instanceof Readable ? body : createReadStream(body.file, { highWaterMark: FILE_READ_CHUNK_BYTES });
      const what = body instanceof Readable ? 'the body stream' : `source file ${JSON.stringify(body.file)}`;
      const it = source[Symbol.asyncIterator]();
      for (;;) {
        ctx.signal?.throwIfAborted();
        let step: IteratorResult<unknown>;
        try {
          step = await it.next();
        } catch (err) {
          if (isAbortError(err)) throw err;
          throw new ObjectStoreError(
            ErrorCode.STORAGE,
            ctx.bucket,
            ctx.key,
            `reading ${what} to store "${ctx.key}" in ${ctx.bucket}: ${errorMessage(err)}`,
            { cause: err },
          );
        }
        if (step.done === true) break;
        await upload.write(toBytes(step.value));
      }
    }
    return await upload.complete();
  } catch (err) {
    await upload.abort();
    throw err;
  }
}

/** A stream chunk as bytes: Buffers and Uint8Arrays as they are, strings as UTF-8. */
function toBytes(chunk: unknown): Uint8Array {
  if (chunk instanceof Uint8Array) return chunk;
  if (typeof chunk === 'string') return Buffer.from(chunk, 'utf8');
  throw new TypeError(`put body stream yielded a ${typeof chunk}, expected bytes (is it in object mode?)`);
}

/** True for the error an aborted AbortSignal raises (DOMException or Node AbortError). */
export function isAbortError(err: unknown): boolean {
  return (
    typeof err === 'object' &&
    err !== null &&
    ((err as { name?: unknown }).name === 'AbortError' || (err as { code?: unknown }).code === 'ABORT_ERR')
  );
}

/**
 * The error to throw when `primary` happened and cleaning up after it failed too: `primary`'s
 * code (when it is an ObjectStoreError) with both messages, and both errors in an AggregateError
 * cause, so neither is lost and callers can still act on the code.
 */
export function withSecondaryError(primary: unknown, secondary: unknown, what: string): unknown {
  const both = new AggregateError([primary, secondary], `${errorMessage(primary)}; ${what}: ${errorMessage(secondary)}`);
  if (primary instanceof ObjectStoreError) {
    return new ObjectStoreError(primary.code, primary.bucket, primary.key, both.message, { cause: both });
  }
  return both;
}

/** `err.message` when there is one, else its string form. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
