/**
 * Connection hygiene of the gRPC servers, shared by both services: keepalive pings, an idle
 * timeout, a handshake timeout and a bound on concurrent streams per connection (docs/config.md
 * lists them under each service), and the refusal of a message flagged as compressed on a call
 * that named no compression.
 */
import type { Socket } from 'node:net';
import { constants as h2constants, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import { ERROR_CODE_TRAILER } from '../api/headers.js';
import { ErrorCode } from '../errors.js';
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
  /** Calls open at once over every connection; more are refused (RESOURCE_EXHAUSTED). */
  maxConcurrentCalls: posInt.max(2 ** 31 - 1).default(2048),
  /** Bytes of request messages being received at once (declared lengths); more wait (flow control). */
  maxReceivingBytes: posInt.default(128 * 1024 * 1024),
  /** A call's request message must arrive whole within this (time waiting for maxReceivingBytes not counted). */
  requestReceiveTimeoutMs: timerMsSchema.default(120_000),
} as const;

/** Kinds of the keys of {@link connectionSchema} (for environment variables and flags). */
export const connectionKinds: Record<keyof typeof connectionSchema, OptionKind> = {
  keepaliveTimeMs: 'int',
  keepaliveTimeoutMs: 'int',
  idleTimeoutMs: 'int',
  maxConcurrentStreams: 'int',
  handshakeTimeoutMs: 'int',
  maxConcurrentCalls: 'int',
  maxReceivingBytes: 'int',
  requestReceiveTimeoutMs: 'int',
};

/** What a service's config holds of connection hygiene. */
export interface ConnectionConfig {
  readonly keepaliveTimeMs: number;
  readonly keepaliveTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly maxConcurrentStreams: number;
  readonly handshakeTimeoutMs: number;
  readonly maxConcurrentCalls: number;
  readonly maxReceivingBytes: number;
  readonly requestReceiveTimeoutMs: number;
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
  const servers = http2ServersOf(server, 'the handshake timeout');
  const arm = (socket: Socket & Timed): void => {
    const timer = setTimeout(() => socket.destroy(), ms);
    timer.unref();
    socket[PREFACE_TIMER] = timer;
    socket.once('close', () => clearTimeout(timer));
  };
  for (const h2 of servers) {
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

/** grpc-js's HTTP/2 servers of `server` (a private map; the tests fail if a release moves it). */
function http2ServersOf(server: Server, what: string): NodeJS.EventEmitter[] {
  const servers = (server as unknown as { http2Servers?: Map<NodeJS.EventEmitter, unknown> }).http2Servers;
  if (!(servers instanceof Map)) throw new Error(`grpc-js no longer exposes its HTTP/2 servers; ${what} cannot be applied`);
  return [...servers.keys()];
}

/** Why {@link guardReceives} refused a call (the `reason` of its callback). */
export type ReceiveRefusal = 'max_concurrent_calls' | 'request_receive_timeout' | 'message_too_large';

/**
 * Bounds what requests cost before a handler sees them. grpc-js collects a call's whole request
 * message before its handler runs, with no bound across calls: 40 calls that each sent 50 MiB of
 * a 60 MiB message and stopped held 2.2 GB of an aggregator, never timed out, and no in-flight
 * budget saw them (those charge decoded requests). Here, at the HTTP/2 level, in front of grpc-js:
 *
 * - at most `maxConcurrentCalls` calls are open at once, over every connection; the next is
 *   answered RESOURCE_EXHAUSTED at once, naming the bound. With the HTTP/2 flow-control window
 *   of each stream (64 KiB), this bounds what waiting calls hold;
 * - a call's request message reserves its declared length (the gRPC frame's 5-byte prefix) from
 *   `maxReceivingBytes` when its first bytes arrive; a call that does not fit waits, paused, so
 *   HTTP/2 flow control holds its client back, and calls are resumed in arrival order as
 *   reservations are given back (when a request has arrived whole, or its call ends). One call is
 *   always let through when none is receiving, so a message larger than the budget still passes
 *   (grpc-js's `max_receive_message_length` bounds it). A reserved message is never paused, so
 *   reservations cannot wait on each other;
 * - a request message declared larger than `maxMessage` is refused (RESOURCE_EXHAUSTED, naming
 *   it) from its first 5 bytes, before the rest is sent;
 * - a request must arrive whole within `requestReceiveTimeoutMs` (time spent waiting for the
 *   budget not counted), or the call is answered DEADLINE_EXCEEDED, naming the bound, and closed.
 *
 * Every RPC of both services takes one request message, so a call's request is whole when its
 * client half-closes the stream.
 */
export function guardReceives(
  server: Server,
  c: ConnectionConfig,
  onRefused?: (reason: ReceiveRefusal) => void,
  maxMessage?: { readonly bytes: number; readonly name: string },
): { calls(): number; receivingBytes(): number; waiting(): number } {
  let calls = 0;
  let receiving = 0;
  const waiting: { stream: ServerHttp2Stream; need: number; admit: () => void }[] = [];
  const admitWaiting = (): void => {
    while (waiting.length > 0) {
      const w = waiting[0]!;
      if (w.stream.closed || w.stream.destroyed) {
        waiting.shift();
        continue;
      }
      if (receiving > 0 && receiving + w.need > c.maxReceivingBytes) return;
      waiting.shift();
      w.admit();
    }
  };
  const onStream = (stream: ServerHttp2Stream): void => {
    calls++;
    let reserved = 0;
    let prefix: Buffer | null = Buffer.alloc(0);
    let done = false;
    let timer: NodeJS.Timeout | undefined;
    const release = (): void => {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      if (reserved > 0) {
        receiving -= reserved;
        reserved = 0;
        admitWaiting();
      }
    };
    const arm = (): void => {
      timer = setTimeout(() => {
        onRefused?.('request_receive_timeout');
        refuse(stream, 4, ErrorCode.DEADLINE_EXCEEDED, `the request message did not arrive whole within requestReceiveTimeoutMs (${c.requestReceiveTimeoutMs} ms)`);
      }, c.requestReceiveTimeoutMs);
      timer.unref();
    };
    stream.once('close', () => {
      calls--;
      done = true;
      release();
    });
    if (calls > c.maxConcurrentCalls) {
      onRefused?.('max_concurrent_calls');
      refuse(stream, 8, ErrorCode.RESOURCE_EXHAUSTED, `too many calls at once: maxConcurrentCalls (${c.maxConcurrentCalls}) are open; retry shortly`);
      return;
    }
    arm();
    stream.once('end', () => {
      done = true;
      release();
    });
    const onData = (chunk: Buffer): void => {
      if (done || prefix === null) return;
      // the prefix is almost always in the first chunk: copied only when it is split
      const head = prefix.length === 0 && chunk.length >= 5 ? chunk : Buffer.concat([prefix, chunk.subarray(0, 5 - prefix.length)]);
      if (head.length < 5) {
        prefix = head;
        return;
      }
      const need = 5 + head.readUInt32BE(1);
      prefix = null;
      stream.off('data', onData);
      if (maxMessage !== undefined && need - 5 > maxMessage.bytes) {
        // refused before its bytes arrive, with the error code grpc-js's own refusal lacks
        onRefused?.('message_too_large');
        refuse(stream, 8, ErrorCode.RESOURCE_EXHAUSTED, `the request message is ${need - 5} bytes, more than ${maxMessage.name} (${maxMessage.bytes}); nothing of it was used`);
        return;
      }
      if (receiving === 0 || receiving + need <= c.maxReceivingBytes) {
        receiving += need;
        reserved = need;
        return;
      }
      // wait for room: paused (grpc-js only resumes a stream to start reading, which it did), and
      // the receive clock stopped meanwhile
      stream.pause();
      if (timer !== undefined) clearTimeout(timer);
      waiting.push({
        stream,
        need,
        admit: () => {
          receiving += need;
          reserved = need;
          arm();
          stream.resume();
        },
      });
    };
    // before grpc-js's own listener: a message too large is answered with our error, not its
    stream.prependListener('data', onData);
  };
  for (const h2 of http2ServersOf(server, 'the receive bounds')) h2.on('stream', onStream);
  return { calls: () => calls, receivingBytes: () => receiving, waiting: () => waiting.length };
}

/** Answers a call with a gRPC status (trailers only when nothing was sent yet) and closes its stream. */
function refuse(stream: ServerHttp2Stream, grpcStatus: number, code: string, message: string): void {
  if (stream.closed || stream.destroyed) return;
  try {
    if (!stream.headersSent) {
      stream.respond(
        { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(grpcStatus), 'grpc-message': encodeURI(message), [ERROR_CODE_TRAILER]: code },
        { endStream: true },
      );
    }
  } finally {
    stream.close(h2constants.NGHTTP2_CANCEL);
  }
}
