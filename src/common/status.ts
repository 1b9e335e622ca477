/**
 * The one place where Strata errors become gRPC statuses. Handlers throw StrataErrors (or
 * GrpcError for statuses with no StrataError code) and call {@link toServiceError}.
 */
import { Metadata, status, type MethodDefinition, type ServiceDefinition, type ServiceError } from '@grpc/grpc-js';
import { ErrorCode, InvalidArgumentError, StrataError } from '../errors.js';

/** An error that carries an explicit gRPC status (auth failures, ownership, limits). */
export class GrpcError extends Error {
  readonly grpcCode: status;
  constructor(grpcCode: status, message: string) {
    super(message);
    this.grpcCode = grpcCode;
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
};

/** gRPC status for any thrown value (unknown errors are INTERNAL). */
export function grpcStatusOf(err: unknown): status {
  if (err instanceof GrpcError) return err.grpcCode;
  if (err instanceof StrataError) return byCode[err.code];
  return status.INTERNAL;
}

/**
 * A grpc-js ServiceError for `err`. Storage-side failures keep their message (it names the
 * object, never credentials); unexpected errors are reported as "internal error" so stack details
 * stay in the logs.
 */
export function toServiceError(err: unknown): Partial<ServiceError> {
  const code = grpcStatusOf(err);
  const known = err instanceof GrpcError || err instanceof StrataError;
  const details = known ? (err as Error).message : 'internal error';
  return { code, details, message: details, metadata: new Metadata() };
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
