/**
 * Error classification of the S3 bucket: an SDK or socket error becomes one of Strata's codes,
 * retryable or not (see the table in bucket.ts's module comment).
 */
import { ErrorCode } from '../../errors.js';
import type { S3Operation } from './config.js';

/** Internal: an error worth retrying that did not come from the SDK (e.g. a short body). */
export class TransientError extends Error {
  override readonly name = 'TransientError';
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
export const BODY_OPERATIONS: ReadonlySet<S3Operation> = new Set(['put', 'uploadPart']);

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

export interface Classified {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly reason: string;
  readonly name: string;
  readonly status: number | undefined;
}

/** Sorts an SDK/network error into our codes and says whether to retry it. */
export function classify(err: unknown): Classified {
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

/** A short human reason for a non-retryable failure. */
export function describe(c: Classified): string {
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
