/**
 * Connection hygiene of the gRPC servers, shared by both services: keepalive pings, an idle
 * timeout, a handshake timeout and a bound on concurrent streams per connection (docs/config.md
 * lists them under each service), and the refusal of a message flagged as compressed on a call
 * that named no compression.
 */
import type { Socket } from 'node:net';
import { constants as h2constants, type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import { ERROR_CODE_TRAILER } from '../api/headers.js';
import { ErrorCode } from '../errors.js';
import type { Server, ServerCredentials, ServerOptions } from '@grpc/grpc-js';
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
  };
}

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
export type ReceiveRefusal =
  | 'max_concurrent_calls'
  | 'request_receive_timeout'
  | 'message_too_large'
  | 'malformed_request'
  | 'compressed_request'
  | 'unknown_method'
  | 'call_deadline';

/** A call still open this long after its deadline (grpc-timeout, or the service's own bound) is reset. */
export const CALL_RESET_GRACE_MS = 5_000;

/** grpc-js computes a deadline with `| 0`: a grpc-timeout of 2^31 ms or more becomes "already passed". */
const MAX_TIMER_MS = 2 ** 31 - 1;
const TIMEOUT_UNITS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/** The grpc-timeout header in ms; null when absent; NaN when it is not a valid timeout. */
export function parseGrpcTimeout(v: string | string[] | undefined): number | null {
  if (v === undefined) return null;
  const m = typeof v === 'string' ? /^(\d{1,8})([HMSmun])$/.exec(v) : null;
  return m ? Number(m[1]) * TIMEOUT_UNITS[m[2]!]! : NaN;
}

/** The request headers Strata reads (docs/protocol.md). */
const STRATA_HEADERS = ['x-strata-tenant', 'x-strata-shard', 'x-strata-block', 'authorization'] as const;

/** What {@link guardReceives} notes of a stream's headers before grpc-js reads them. */
const headerFaults = new WeakMap<ServerHttp2Stream, string>();
const callDeadlines = new WeakMap<ServerHttp2Stream, number>();

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
 *   reservations are given back (when a request has arrived whole, or its call ends). A call that
 *   ends while it waits leaves the queue at once. One call is always let through when none is
 *   receiving, so a message larger than the budget still passes (grpc-js's
 *   `max_receive_message_length` bounds it). A reserved message is never paused, so reservations
 *   cannot wait on each other;
 * - a request message declared larger than `maxMessage` is refused (RESOURCE_EXHAUSTED, naming
 *   it) from its first 5 bytes, before the rest is sent;
 * - a request must arrive whole within `requestReceiveTimeoutMs` (time spent waiting for the
 *   budget not counted), or the call is answered DEADLINE_EXCEEDED, naming the bound, and closed;
 * - every RPC of both services takes exactly one request message, so what is received is counted
 *   against the declared length: bytes beyond it (a second message) and a call that half-closes
 *   before its message is whole are refused with INVALID_ARGUMENT before grpc-js sees them;
 * - a message whose gRPC compressed flag is not 0 is refused with INVALID_ARGUMENT, from its prefix;
 * - a call of a method not in `methods` (when given) gets grpc-js's UNIMPLEMENTED naming the path,
 *   with a `strata-error-code` like every refusal (grpc-js sends none), and is counted;
 * - compressed requests (a `grpc-encoding` other than identity) are refused with UNIMPLEMENTED
 *   (the protocol takes none; gzip would also inflate past every bound above, which count wire
 *   bytes), and a grpc-timeout that is not one is refused with INVALID_ARGUMENT;
 * - a call still open {@link CALL_RESET_GRACE_MS} after its deadline (the grpc-timeout header,
 *   or `maxCallMs`, the service's own bound, whichever is sooner) is reset: a client that stopped
 *   reading an answer cannot hold a call, and its slot in `maxConcurrentCalls`, for ever.
 */
export function guardReceives(
  server: Server,
  c: ConnectionConfig,
  onRefused?: (reason: ReceiveRefusal) => void,
  maxMessage?: { readonly bytes: number; readonly name: string },
  maxCallMs?: number,
  methods?: ReadonlySet<string>,
): { calls(): number; receivingBytes(): number; waiting(): number } {
  let calls = 0;
  let receiving = 0;
  // in arrival order; a stream that closes while it waits is taken out at once
  const waiting = new Map<ServerHttp2Stream, { need: number; admit: () => void }>();
  const admitWaiting = (): void => {
    for (const [stream, w] of waiting) {
      if (stream.closed || stream.destroyed) {
        waiting.delete(stream);
        continue;
      }
      if (receiving > 0 && receiving + w.need > c.maxReceivingBytes) return;
      waiting.delete(stream);
      w.admit();
    }
  };
  /** Runs before grpc-js reads the headers: a grpc-timeout it would misread is taken out and noted. */
  const onHeaders = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void => {
    const path = headers[':path'];
    if (methods !== undefined && (typeof path !== 'string' || !methods.has(path))) {
      // grpc-js answers it UNIMPLEMENTED ("does not implement the method <path>") as soon as
      // this event is handled, without the error code every refusal carries: add it
      const respond = stream.respond.bind(stream);
      stream.respond = (h, o) => respond({ ...h, [ERROR_CODE_TRAILER]: ErrorCode.UNIMPLEMENTED }, o);
      onRefused?.('unknown_method');
      return;
    }
    // grpc-js drops a value with bytes outside printable ASCII (the call then looks as if the
    // header were missing, or absent where it is optional: test/tenancy/read.test.ts)
    for (const name of STRATA_HEADERS) {
      const v = headers[name];
      if (typeof v === 'string' && !/^[ -~]*$/.test(v)) {
        // (a credential is never echoed)
        const shown = name === 'authorization' ? '' : ` ${JSON.stringify(v)}`;
        headerFaults.set(stream, `the ${name} header${shown} has bytes outside printable ASCII`);
        return;
      }
    }
    const ms = parseGrpcTimeout(headers['grpc-timeout']);
    if (ms === null) return;
    if (Number.isNaN(ms)) {
      headerFaults.set(stream, `the grpc-timeout header "${String(headers['grpc-timeout'])}" is not a timeout (1 to 8 digits and one of H M S m u n)`);
      delete headers['grpc-timeout'];
      return;
    }
    callDeadlines.set(stream, ms);
    // longer than a timer can hold (24.8 days): as good as no deadline, which grpc-js can keep
    if (ms > MAX_TIMER_MS) delete headers['grpc-timeout'];
  };
  const onStream = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void => {
    calls++;
    let counted = true;
    let reserved = 0;
    let prefix: Buffer | null = Buffer.alloc(0);
    let need = -1;
    let received = 0;
    /** The request is whole (or refused): no more bytes are counted. */
    let done = false;
    /** The call was refused or its stream closed. */
    let ended = false;
    let timer: NodeJS.Timeout | undefined;
    let deadlineTimer: NodeJS.Timeout | undefined;
    const release = (): void => {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      if (reserved > 0) {
        receiving -= reserved;
        reserved = 0;
        admitWaiting();
      }
    };
    /** Refuses the call; it no longer counts as open (its stream may linger while the status goes out). */
    const refuseCall = (reason: ReceiveRefusal, grpcStatus: number, code: string, message: string, extra?: Record<string, string>): void => {
      if (ended) return;
      ended = true;
      done = true;
      if (deadlineTimer !== undefined) clearTimeout(deadlineTimer);
      onRefused?.(reason);
      if (counted) {
        counted = false;
        calls--;
      }
      waiting.delete(stream);
      release();
      stream.off('data', onData);
      refuse(stream, grpcStatus, code, message, extra);
    };
    const arm = (): void => {
      timer = setTimeout(() => {
        refuseCall('request_receive_timeout', 4, ErrorCode.DEADLINE_EXCEEDED, `the request message did not arrive whole within requestReceiveTimeoutMs (${c.requestReceiveTimeoutMs} ms)`);
      }, c.requestReceiveTimeoutMs);
      timer.unref();
    };
    stream.once('close', () => {
      if (counted) calls--;
      counted = false;
      done = true;
      ended = true;
      waiting.delete(stream);
      if (deadlineTimer !== undefined) clearTimeout(deadlineTimer);
      release();
    });
    if (calls > c.maxConcurrentCalls) {
      refuseCall('max_concurrent_calls', 8, ErrorCode.RESOURCE_EXHAUSTED, `too many calls at once: maxConcurrentCalls (${c.maxConcurrentCalls}) are open; retry shortly`);
      return;
    }
    const fault = headerFaults.get(stream);
    if (fault !== undefined) {
      refuseCall('malformed_request', 3, ErrorCode.INVALID_ARGUMENT, `invalid request: ${fault}`);
      return;
    }
    const encoding = headers['grpc-encoding'];
    if (encoding !== undefined && encoding !== 'identity') {
      refuseCall('compressed_request', 12, ErrorCode.UNIMPLEMENTED, `compressed requests are not supported (grpc-encoding ${String(encoding)}); send them uncompressed`, { 'grpc-accept-encoding': 'identity' });
      return;
    }
    const grpcTimeout = callDeadlines.get(stream);
    const limit = Math.min(grpcTimeout ?? Infinity, maxCallMs ?? Infinity);
    if (limit + CALL_RESET_GRACE_MS <= MAX_TIMER_MS) {
      deadlineTimer = setTimeout(() => {
        refuseCall('call_deadline', 4, ErrorCode.DEADLINE_EXCEEDED, `the call was still open ${CALL_RESET_GRACE_MS} ms after its deadline (${limit} ms)`);
      }, limit + CALL_RESET_GRACE_MS);
      deadlineTimer.unref();
    }
    arm();
    // a declaration, so the refusals above may take it off before it is attached
    function onData(chunk: Buffer): void {
      if (done) return;
      received += chunk.length;
      if (prefix === null) {
        if (received > need) refuseCall('malformed_request', 3, ErrorCode.INVALID_ARGUMENT, `invalid request: more than one request message: ${received} bytes arrived for one message of ${need} bytes (its prefix included); every method takes one; nothing of it was used`);
        return;
      }
      // the prefix is almost always in the first chunk: copied only when it is split
      const head = prefix.length === 0 && chunk.length >= 5 ? chunk : Buffer.concat([prefix, chunk.subarray(0, 5 - prefix.length)]);
      if (head.length < 5) {
        prefix = head;
        return;
      }
      need = 5 + head.readUInt32BE(1);
      prefix = null;
      // gRPC's compressed flag: compressed requests were refused with their headers, so only 0 is
      // valid (grpc-js would take the bytes of a flagged message as they are)
      const flag = head[0]!;
      if (flag !== 0) {
        refuseCall(
          'malformed_request',
          3,
          ErrorCode.INVALID_ARGUMENT,
          flag > 1
            ? `invalid request: a message's compressed flag is ${flag} (0 or 1 only); nothing of it was used`
            : 'invalid request: a message is flagged as compressed, but the call has no grpc-encoding header; nothing of it was used',
        );
        return;
      }
      if (maxMessage !== undefined && need - 5 > maxMessage.bytes) {
        // refused before its bytes arrive, with the error code grpc-js's own refusal lacks
        refuseCall('message_too_large', 8, ErrorCode.RESOURCE_EXHAUSTED, `the request message is ${need - 5} bytes, more than ${maxMessage.name} (${maxMessage.bytes}); nothing of it was used`);
        return;
      }
      if (received > need) {
        refuseCall('malformed_request', 3, ErrorCode.INVALID_ARGUMENT, `invalid request: more than one request message: ${received} bytes arrived for one message of ${need} bytes (its prefix included); every method takes one; nothing of it was used`);
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
      waiting.set(stream, {
        need,
        admit: () => {
          receiving += need;
          reserved = need;
          arm();
          stream.resume();
        },
      });
    }
    // before grpc-js's own listeners: a refusal is answered with our error, not its
    stream.prependListener('data', onData);
    stream.prependOnceListener('end', () => {
      if (done) return;
      // a client gone part-way (its connection dropped, or its stream reset without ending it):
      // Node ends the stream after 'aborted'; that is a cancelled call, not a malformed request. A
      // client that ends its stream and resets it after (Node's stream.close(), grpc-js's cancel)
      // looks, when its stream ends, like any request cut short, and is refused as one
      if (stream.aborted) {
        done = true;
        release();
        return;
      }
      if (received < need || need < 0) {
        refuseCall('malformed_request', 3, ErrorCode.INVALID_ARGUMENT, `invalid request: the call ended before its request message was whole (${received} bytes${need < 0 ? '' : ` of ${need}`}); nothing of it was used`);
        return;
      }
      done = true;
      release();
    });
  };
  for (const h2 of http2ServersOf(server, 'the receive bounds')) {
    h2.prependListener('stream', onHeaders);
    h2.on('stream', onStream);
  }
  return { calls: () => calls, receivingBytes: () => receiving, waiting: () => waiting.size };
}

/**
 * Answers a call with a gRPC status and closes its stream. When nothing was sent yet the status
 * goes as trailers only, and the stream is then reset with NO_ERROR, which tells a client still
 * sending to stop without discarding the status (with CANCEL, grpcio reported
 * "Received RST_STREAM with error code 8" and never saw the status); when an answer was under
 * way, the stream is reset with CANCEL.
 */
function refuse(stream: ServerHttp2Stream, grpcStatus: number, code: string, message: string, extra?: Record<string, string>): void {
  if (stream.closed || stream.destroyed) return;
  let sent = false;
  try {
    if (!stream.headersSent) {
      stream.respond(
        { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(grpcStatus), 'grpc-message': encodeURI(message), [ERROR_CODE_TRAILER]: code, ...extra },
        { endStream: true },
      );
      sent = true;
    }
  } finally {
    stream.close(sent ? h2constants.NGHTTP2_NO_ERROR : h2constants.NGHTTP2_CANCEL);
  }
}
