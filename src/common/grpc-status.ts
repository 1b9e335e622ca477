/**
 * The one place where Strata errors become gRPC statuses. Handlers throw StrataErrors (or
 * GrpcError for refusals with an explicit status) and call {@link toServiceError}, which also puts
 * the error's `ERR_STRATA_*` code in the {@link ERROR_CODE_TRAILER} trailer, so a client can tell
 * a corrupt block (ERR_STRATA_CORRUPT) from one of an unsupported version
 * (ERR_STRATA_UNSUPPORTED_VERSION) although both are DATA_LOSS.
 */
import { Metadata, status, type MethodDefinition, type ServiceDefinition, type ServiceError } from '@grpc/grpc-js';
import { ERROR_CODE_TRAILER, RETRY_PUSHBACK_TRAILER } from '../api/headers.js';
import { ErrorCode, InvalidArgumentError, StrataError } from '../errors.js';


/** The code of a refusal that has only a gRPC status (see {@link GrpcError}). */
const codeOfStatus: Partial<Record<status, ErrorCode>> = {
  [status.INVALID_ARGUMENT]: ErrorCode.INVALID_ARGUMENT,
  [status.UNAUTHENTICATED]: ErrorCode.UNAUTHENTICATED,
  [status.PERMISSION_DENIED]: ErrorCode.PERMISSION_DENIED,
  [status.RESOURCE_EXHAUSTED]: ErrorCode.RESOURCE_EXHAUSTED,
  [status.FAILED_PRECONDITION]: ErrorCode.FAILED_PRECONDITION,
  [status.DEADLINE_EXCEEDED]: ErrorCode.DEADLINE_EXCEEDED,
  [status.CANCELLED]: ErrorCode.CANCELLED,
  [status.UNAVAILABLE]: ErrorCode.UNAVAILABLE,
  [status.NOT_FOUND]: ErrorCode.NOT_FOUND,
  [status.DATA_LOSS]: ErrorCode.CORRUPT,
};

/**
 * A refusal with an explicit gRPC status (auth failures, ownership, limits, draining). Its `code`
 * follows from the status (UNAUTHENTICATED → ERR_STRATA_UNAUTHENTICATED, ...; INTERNAL for a
 * status with no code of its own).
 */
export class GrpcError extends Error {
  readonly grpcCode: status;
  readonly code: ErrorCode;
  /**
   * Set on a refusal that frees up by itself (a budget other calls are using): how long a client
   * should wait before it retries, sent as the {@link RETRY_PUSHBACK_TRAILER} trailer.
   */
  readonly retryAfterMs: number | undefined;
  constructor(grpcCode: status, message: string, options?: { readonly retryAfterMs?: number }) {
    super(message);
    this.grpcCode = grpcCode;
    this.code = codeOfStatus[grpcCode] ?? ErrorCode.INTERNAL;
    this.retryAfterMs = options?.retryAfterMs;
    this.name = 'GrpcError';
  }
}

const byCode: Record<ErrorCode, status> = {
  [ErrorCode.CORRUPT]: status.DATA_LOSS,
  [ErrorCode.INVALID_ARGUMENT]: status.INVALID_ARGUMENT,
  [ErrorCode.UNSUPPORTED_VERSION]: status.DATA_LOSS,
  [ErrorCode.NOT_FOUND]: status.NOT_FOUND,
  [ErrorCode.ACCESS_DENIED]: status.UNAVAILABLE,
  [ErrorCode.ALREADY_EXISTS]: status.ALREADY_EXISTS,
  [ErrorCode.NO_SUCH_BUCKET]: status.UNAVAILABLE,
  [ErrorCode.INVALID_RANGE]: status.INTERNAL,
  [ErrorCode.UNAVAILABLE]: status.UNAVAILABLE,
  [ErrorCode.STORAGE]: status.UNAVAILABLE,
  [ErrorCode.CONFIG]: status.INTERNAL,
  [ErrorCode.UNAUTHENTICATED]: status.UNAUTHENTICATED,
  [ErrorCode.PERMISSION_DENIED]: status.PERMISSION_DENIED,
  [ErrorCode.RESOURCE_EXHAUSTED]: status.RESOURCE_EXHAUSTED,
  [ErrorCode.FAILED_PRECONDITION]: status.FAILED_PRECONDITION,
  [ErrorCode.DEADLINE_EXCEEDED]: status.DEADLINE_EXCEEDED,
  [ErrorCode.CANCELLED]: status.CANCELLED,
  [ErrorCode.UNIMPLEMENTED]: status.UNIMPLEMENTED,
  [ErrorCode.INTERNAL]: status.INTERNAL,
};

/** gRPC status for any thrown value (unknown errors are INTERNAL). */
export function grpcStatusOf(err: unknown): status {
  if (err instanceof GrpcError) return err.grpcCode;
  if (err instanceof StrataError) return byCode[err.code];
  return status.INTERNAL;
}

/** The `ERR_STRATA_*` code of any thrown value (unknown errors are ERR_STRATA_INTERNAL). */
export function strataCodeOf(err: unknown): ErrorCode {
  if (err instanceof GrpcError || err instanceof StrataError) return err.code;
  return ErrorCode.INTERNAL;
}

/**
 * A grpc-js ServiceError for `err`, its code in the {@link ERROR_CODE_TRAILER} trailer.
 * Storage-side failures keep their message (it names the object, never credentials); unexpected
 * errors are reported as "internal error" so stack details stay in the logs.
 */
export function toServiceError(err: unknown): Partial<ServiceError> {
  const code = grpcStatusOf(err);
  const known = err instanceof GrpcError || err instanceof StrataError;
  const details = known ? (err as Error).message : 'internal error';
  const metadata = new Metadata();
  metadata.set(ERROR_CODE_TRAILER, strataCodeOf(err));
  if (err instanceof GrpcError && err.retryAfterMs !== undefined) metadata.set(RETRY_PUSHBACK_TRAILER, String(Math.max(0, Math.round(err.retryAfterMs))));
  return { code, details, message: details, metadata };
}


/** A request message that did not decode (see {@link tolerantRequests}). */
export class MalformedRequest {
  constructor(
    readonly method: string,
    readonly reason: string,
  ) {}
}

/**
 * `def` with request decoders that never throw: a message that does not decode becomes a
 * {@link MalformedRequest}, which the handlers refuse with INVALID_ARGUMENT through
 * {@link checkWellFormed} (grpc-js itself would answer INTERNAL, blaming the server).
 */
export function tolerantRequests(def: ServiceDefinition): ServiceDefinition {
  const out: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const [name, m] of Object.entries(def as Record<string, MethodDefinition<unknown, unknown>>)) {
    out[name] = {
      ...m,
      requestDeserialize: (buf: Buffer): unknown => {
        try {
          return m.requestDeserialize(buf);
        } catch (err) {
          return new MalformedRequest(name, err instanceof Error ? err.message : String(err));
        }
      },
    };
  }
  return out as ServiceDefinition;
}

/**
 * Throws INVALID_ARGUMENT naming the message when `req` did not decode.
 * @throws InvalidArgumentError
 */
export function checkWellFormed(req: unknown): void {
  if (req instanceof MalformedRequest) throw new InvalidArgumentError('request', `the ${req.method} request message does not decode (${req.reason}); nothing of it was used`);
}
