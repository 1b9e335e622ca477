/**
 * Strata's error types and codes. Errors raised on purpose are either a {@link StrataError} with a
 * stable `code`, or a refusal with an explicit gRPC status (`GrpcError` in src/common/grpc-status.ts:
 * authentication, ownership, limits, draining) whose code follows from that status. Every code is
 * listed in `docs/errors.md` (a test keeps the list and this file in sync) and reaches clients in
 * the `strata-error-code` trailer. Programmer mistakes (wrong argument types, impossible states)
 * throw plain `TypeError` / `RangeError` instead.
 *
 * Messages say what was being done: `cannot read index page 3 of "acme/..": checksum mismatch`.
 */

/** Stable error codes. Add new ones here and in docs/errors.md. */
export const ErrorCode = {
  /** Stored bytes fail a checksum, a bounds check or a structural check. */
  CORRUPT: 'ERR_STRATA_CORRUPT',
  /** Input handed to an encoder or API is malformed (lengths, order, ranges). */
  INVALID_ARGUMENT: 'ERR_STRATA_INVALID_ARGUMENT',
  /** A block or object uses a format version this build does not know. */
  UNSUPPORTED_VERSION: 'ERR_STRATA_UNSUPPORTED_VERSION',
  /** The object does not exist in the bucket. */
  NOT_FOUND: 'ERR_STRATA_NOT_FOUND',
  /** The bucket refused the credentials or the operation. */
  ACCESS_DENIED: 'ERR_STRATA_ACCESS_DENIED',
  /** A conditional write found the object present (ifNoneMatch), or not the version expected (ifMatch). */
  ALREADY_EXISTS: 'ERR_STRATA_ALREADY_EXISTS',
  /** The bucket itself does not exist. */
  NO_SUCH_BUCKET: 'ERR_STRATA_NO_SUCH_BUCKET',
  /** A requested byte range lies outside the object. */
  INVALID_RANGE: 'ERR_STRATA_INVALID_RANGE',
  /** The object store failed in a way that may succeed on retry (5xx, throttling, resets). */
  UNAVAILABLE: 'ERR_STRATA_UNAVAILABLE',
  /** Any other object-store failure. */
  STORAGE: 'ERR_STRATA_STORAGE',
  /** Configuration failed validation. */
  CONFIG: 'ERR_STRATA_CONFIG',
  /** The call carries no valid credentials (bearer token). */
  UNAUTHENTICATED: 'ERR_STRATA_UNAUTHENTICATED',
  /** The credentials do not grant the tenant named in the call. */
  PERMISSION_DENIED: 'ERR_STRATA_PERMISSION_DENIED',
  /** A limit was reached (request size, concurrency, in-flight bytes, WAL quota): retry later or split. */
  RESOURCE_EXHAUSTED: 'ERR_STRATA_RESOURCE_EXHAUSTED',
  /** The call was sent to the wrong place (a shard this aggregator does not own, a num_shards that does not match the block). */
  FAILED_PRECONDITION: 'ERR_STRATA_FAILED_PRECONDITION',
  /** The call's deadline (or the service's request timeout) passed before it finished. */
  DEADLINE_EXCEEDED: 'ERR_STRATA_DEADLINE_EXCEEDED',
  /** The client cancelled the call. */
  CANCELLED: 'ERR_STRATA_CANCELLED',
  /** The call asks for something the service does not serve: an unknown method, a compressed request. */
  UNIMPLEMENTED: 'ERR_STRATA_UNIMPLEMENTED',
  /** An unexpected failure inside the service (details in its log). */
  INTERNAL: 'ERR_STRATA_INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** Base of all Strata errors: a message plus a stable `code`. */
export class StrataError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/**
 * Stored bytes are damaged. `object` names the block or object (bucket key or file path, or
 * `<memory>` for buffers with no name) and `offset` the absolute byte offset in it where the bad
 * region starts.
 */
export class CorruptionError extends StrataError {
  readonly object: string;
  readonly offset: number;
  constructor(object: string, offset: number, what: string, options?: { cause?: unknown }) {
    super(ErrorCode.CORRUPT, `corrupt data in "${object}" at offset ${offset}: ${what}`, options);
    this.object = object;
    this.offset = offset;
  }
}

/** Malformed input given to an encoder or an API; `field` names the offending field. */
export class InvalidArgumentError extends StrataError {
  readonly field: string;
  constructor(field: string, message: string) {
    super(ErrorCode.INVALID_ARGUMENT, `invalid ${field}: ${message}`);
    this.field = field;
  }
}

/** A format version (or encoding id) that this build cannot read. */
export class UnsupportedVersionError extends StrataError {
  /** The version refused, when one was read. */
  readonly version: number | undefined;
  constructor(message: string, version?: number) {
    super(ErrorCode.UNSUPPORTED_VERSION, message);
    this.version = version;
  }
}

/** Errors of the bucket layer carry the bucket and key they concern. */
export class ObjectStoreError extends StrataError {
  readonly bucket: string;
  readonly key: string;
  constructor(code: ErrorCode, bucket: string, key: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.bucket = bucket;
    this.key = key;
  }
}

/** True when `err` is a StrataError with the given code. */
export function hasCode(err: unknown, code: ErrorCode): boolean {
  return err instanceof StrataError && err.code === code;
}
