/**
 * Connection hygiene of the gRPC servers, shared by both services: keepalive pings, an idle
 * timeout, a handshake timeout and a bound on concurrent streams per connection (docs/config.md
 * lists them under each service), and the refusal of a message flagged as compressed on a call
 * that named no compression.
 */
import type { Socket } from 'node:net';
import type { ServerHttp2Session } from 'node:http2';
import { status, type Server, type ServerCredentials, type ServerInterceptingCall, type ServerInterceptor, type ServerOptions } from '@grpc/grpc-js';
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
  /** A connection must finish its TLS handshake and send the HTTP/2 preface within this, or it is closed. */
  handshakeTimeoutMs: posInt.default(10_000),
} as const;

/** Kinds of the keys of {@link connectionSchema} (for environment variables and flags). */
export const connectionKinds: Record<keyof typeof connectionSchema, OptionKind> = {
  keepaliveTimeMs: 'int',
  keepaliveTimeoutMs: 'int',
  idleTimeoutMs: 'int',
  maxConcurrentStreams: 'int',
  handshakeTimeoutMs: 'int',
};

/** What a service's config holds of connection hygiene. */
export interface ConnectionConfig {
  readonly keepaliveTimeMs: number;
  readonly keepaliveTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly maxConcurrentStreams: number;
  readonly handshakeTimeoutMs: number;
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

/**
 * `creds` with the TLS handshake bounded by `ms` (Node's tls.Server `handshakeTimeout`; the
 * default is 120 s). Plaintext credentials are returned as they are.
 */
export function withHandshakeTimeout(creds: ServerCredentials, ms: number): ServerCredentials {
  if (!creds._isSecure()) return creds;
  const base = creds._getConstructorOptions.bind(creds);
  creds._getConstructorOptions = () => ({ ...(base() ?? {}), handshakeTimeout: ms });
  return creds;
}

/** Marks a socket with the timer that closes it unless its HTTP/2 preface arrives in time. */
const PREFACE_TIMER = Symbol('strata.prefaceTimer');
type Timed = { [PREFACE_TIMER]?: NodeJS.Timeout };

/**
 * Closes every connection of `server` (bound already) whose HTTP/2 preface (the client's
 * SETTINGS) does not arrive within `ms` of the connection (plaintext) or of the end of its TLS
 * handshake, itself bounded by {@link withHandshakeTimeout}. Without it a connection that stops
 * mid-handshake stays open until the idle timeout. grpc-js keeps its HTTP/2 servers in a private
 * map; test/common/connections.test.ts fails if a release moves it.
 */
export function guardHandshakes(server: Server, ms: number): void {
  const servers = (server as unknown as { http2Servers?: Map<NodeJS.EventEmitter, unknown> }).http2Servers;
  if (!(servers instanceof Map)) throw new Error('grpc-js no longer exposes its HTTP/2 servers; the handshake timeout cannot be applied');
  const arm = (socket: Socket & Timed): void => {
    const timer = setTimeout(() => socket.destroy(), ms);
    timer.unref();
    socket[PREFACE_TIMER] = timer;
    socket.once('close', () => clearTimeout(timer));
  };
  for (const h2 of servers.keys()) {
    const secure = typeof (h2 as { setSecureContext?: unknown }).setSecureContext === 'function';
    // plaintext: from the TCP connection; TLS: from the end of the handshake
    h2.on(secure ? 'secureConnection' : 'connection', arm);
    h2.on('session', (session: ServerHttp2Session) => {
      session.once('remoteSettings', () => {
        // session.socket forwards property reads to the connection's socket
        const timer = (session.socket as unknown as Timed)[PREFACE_TIMER];
        if (timer !== undefined) clearTimeout(timer);
      });
    });
  }
}
