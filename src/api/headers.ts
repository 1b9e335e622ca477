/**
 * The request headers (gRPC metadata) and trailers of Strata's wire protocol, and their parsing.
 * docs/protocol.md describes each one.
 */
import type { Metadata } from '@grpc/grpc-js';
import { ErrorCode, InvalidArgumentError, StrataError } from '../errors.js';

/** Header naming the tenant of a write or read. */
export const TENANT_HEADER = 'x-strata-tenant';
/** Header naming the shard of a write (the proxy in front of the aggregators routes on it). */
export const SHARD_HEADER = 'x-strata-shard';
/** Header naming the block of a read (the Maglev routing key, {@link blockRoutingKey}). */
export const BLOCK_HEADER = 'x-strata-block';
/** Header carrying the auth token (`Bearer <token>`). */
export const AUTH_HEADER = 'authorization';
/** The trailer (gRPC response metadata) that carries a refused call's `ERR_STRATA_*` code. */
export const ERROR_CODE_TRAILER = 'strata-error-code';
/**
 * The trailer of a refusal that is worth retrying soon (gRPC's retry pushback, gRFC A6): the
 * milliseconds to wait first. A gateway sends it when a read budget is used up by other calls
 * (concurrent calls, bytes in flight), never for a limit of the request itself.
 */
export const RETRY_PUSHBACK_TRAILER = 'grpc-retry-pushback-ms';

/**
 * The routing key of a block: the value of {@link BLOCK_HEADER}, `<tenant>/<shard>/<windowStart>`
 * for a 4-hour block, `<tenant>/<shard>/<dayStart>/<windowMs>` for a request of a whole day
 * (`windowMs` given). Clients send it and the gateway checks it against the request; the load
 * balancer hashes it, so every read of one block reaches the same gateway and its cache.
 */
export function blockRoutingKey(tenant: string, shard: number, windowStartMs: bigint | number, windowMs?: bigint | number): string {
  return windowMs === undefined ? `${tenant}/${shard}/${windowStartMs}` : `${tenant}/${shard}/${windowStartMs}/${windowMs}`;
}

/** The `authorization` header value for a token. */
export function bearerHeader(token: string): string {
  return `Bearer ${token}`;
}

/**
 * The one value of header `name`, or null when absent.
 * @throws InvalidArgumentError naming the header when it is given more than once.
 */
export function headerValue(md: Metadata, name: string): string | null {
  const v = md.get(name);
  if (v.length === 0) return null;
  if (v.length > 1) throw new InvalidArgumentError(name, 'header given more than once');
  return typeof v[0] === 'string' ? v[0] : v[0]!.toString('utf8');
}

/**
 * The bearer token of a call, or null when it sent no {@link AUTH_HEADER}.
 * @throws StrataError ERR_STRATA_UNAUTHENTICATED when the header is not `Bearer <token>`.
 */
export function bearerToken(md: Metadata): string | null {
  const a = headerValue(md, AUTH_HEADER);
  if (a === null) return null;
  const m = /^Bearer\s+(.+)$/i.exec(a);
  if (!m) throw new StrataError(ErrorCode.UNAUTHENTICATED, `${AUTH_HEADER} header must be "Bearer <token>"`);
  return m[1]!;
}

/**
 * The `ERR_STRATA_*` code a server sent in the {@link ERROR_CODE_TRAILER} trailer of a failed
 * call (grpc-js: `err.metadata`), or undefined when it sent none (a proxy, an older server, a
 * transport failure).
 */
export function errorCodeOfTrailers(trailers: { get(key: string): unknown[] } | undefined): string | undefined {
  const v = trailers?.get(ERROR_CODE_TRAILER)[0];
  return typeof v === 'string' && v !== '' ? v : undefined;
}
