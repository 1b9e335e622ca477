/**
 * Connection hygiene of the gRPC servers, shared by both services: keepalive pings, an idle
 * timeout and a bound on concurrent streams per connection (docs/config.md lists them under each
 * service).
 */
import { z } from 'zod';
import { timerMsSchema, type OptionKind } from './config.js';

const posInt = z.number().int().positive();

/** Config keys of connection hygiene, to spread into a service's config schema. */
export const connectionSchema = {
  /** The server pings a connection that was quiet this long... */
  keepaliveTimeMs: timerMsSchema.default(60_000),
  /** ...and closes it when the ping is not answered within this. */
  keepaliveTimeoutMs: timerMsSchema.default(20_000),
  /** A connection with no call for this long is closed (GOAWAY). */
  idleTimeoutMs: timerMsSchema.default(5 * 60_000),
  /** Concurrent streams (calls) one connection may open; more wait in the client. */
  maxConcurrentStreams: posInt.max(2 ** 31 - 1).default(256),
} as const;

/** Kinds of the keys of {@link connectionSchema} (for environment variables and flags). */
export const connectionKinds: Record<keyof typeof connectionSchema, OptionKind> = {
  keepaliveTimeMs: 'int',
  keepaliveTimeoutMs: 'int',
  idleTimeoutMs: 'int',
  maxConcurrentStreams: 'int',
};

/** What a service's config holds of connection hygiene. */
export interface ConnectionConfig {
  readonly keepaliveTimeMs: number;
  readonly keepaliveTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly maxConcurrentStreams: number;
}

/** grpc-js server options for `c`. */
export function grpcServerOptions(c: ConnectionConfig): Record<string, number> {
  return {
    'grpc.keepalive_time_ms': c.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': c.keepaliveTimeoutMs,
    'grpc.max_connection_idle_ms': c.idleTimeoutMs,
    'grpc.max_concurrent_streams': c.maxConcurrentStreams,
  };
}
