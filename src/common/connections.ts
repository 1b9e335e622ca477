/**
 * Connection hygiene of the gRPC servers, shared by both services: keepalive pings, an idle
 * timeout, a handshake timeout and a bound on concurrent streams per connection (docs/config.md
 * lists them under each service), and the refusal of a message flagged as compressed on a call
 * that named no compression.
 */
import { status, type ServerInterceptingCall, type ServerInterceptor, type ServerOptions } from '@grpc/grpc-js';
import { z } from 'zod';
import type { OptionKind } from './config.js';

const posInt = z.number().int().positive();

/** Config keys of connection hygiene, to spread into a service's config schema. */
export const connectionSchema = {
  /** The server pings a connection that was quiet this long... */
  keepaliveTimeMs: posInt.default(60_000),
  /** ...and closes it when the ping is not answered within this. */
  keepaliveTimeoutMs: posInt.default(20_000),
  /** A connection with no call for this long is closed (GOAWAY). */
  idleTimeoutMs: posInt.default(5 * 60_000),
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
export function grpcServerOptions(c: ConnectionConfig): ServerOptions {
  return {
    'grpc.keepalive_time_ms': c.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': c.keepaliveTimeoutMs,
    'grpc.max_connection_idle_ms': c.idleTimeoutMs,
    'grpc.max_concurrent_streams': c.maxConcurrentStreams,
    interceptors: [refuseUndeclaredCompression],
  };
}

/** What {@link refuseUndeclaredCompression} replaces on grpc-js's innermost server call. */
interface Decompressing {
  decompressMessage?: (frame: Buffer, encoding: string) => unknown;
}

/**
 * A message whose frame is flagged as compressed on a call without a `grpc-encoding` header
 * (identity) is malformed (gRPC over HTTP/2, "Compressed-Flag"); grpc-js would take its bytes as
 * they are. This interceptor refuses it with INVALID_ARGUMENT before it is decoded, so nothing of
 * it is used. It wraps the decompression step of grpc-js's own call (the first interceptor is
 * handed that call); test/common/malformed.test.ts fails if a grpc-js release moves it.
 */
export const refuseUndeclaredCompression: ServerInterceptor = (_method, call) => {
  // grpc-js's type says an interceptor returns its own ServerInterceptingCall; handing back the
  // call it was given (the innermost one here) is what its interceptor chain does without any
  const same = call as unknown as ServerInterceptingCall;
  const inner = call as unknown as Decompressing;
  const decompress = inner.decompressMessage;
  if (typeof decompress !== 'function') return same;
  inner.decompressMessage = function (this: unknown, frame: Buffer, encoding: string): unknown {
    if (encoding === 'identity' && frame.length > 0 && frame[0] === 1) {
      return Promise.reject({
        code: status.INVALID_ARGUMENT,
        details: 'invalid request: a message is flagged as compressed, but the call has no grpc-encoding header; nothing of it was used',
      });
    }
    return decompress.call(this, frame, encoding);
  };
  return same;
};
