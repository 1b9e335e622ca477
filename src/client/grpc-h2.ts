/**
 * A lean gRPC client for server-streaming calls, on node:http2: the query client's read path.
 *
 * Why not grpc-js here. A warm read of one block is a few hundred microseconds of real work; the
 * grpc-js client (resolver, load balancer, retry and filter layers, Metadata objects, channelz)
 * costed about as much again per call, twice the client CPU of this transport on the read
 * benchmark, and its garbage lengthened the tails (see src/storage-gateway/README.md). The
 * servers stay grpc-js, so do the write client and the health checks.
 *
 * What it implements of the gRPC over HTTP/2 protocol (PROTOCOL-HTTP2.md): one request message,
 * length-prefixed response messages (uncompressed: no message encoding is offered), the status
 * from the trailers or from a trailers-only response, `grpc-message` percent-decoding,
 * `grpc-timeout` from the deadline (and a local timer), cancellation as RST_STREAM(CANCEL),
 * the spec's mapping of HTTP statuses and stream resets to gRPC codes, TLS and mTLS. A
 * connection that fails or drops, or a stream reset without a status, is UNAVAILABLE (reads are
 * idempotent: the caller may retry). A lost connection is replaced on the next call; a GOAWAY
 * lets streams in flight finish on the old one.
 *
 * Connection health. The channel pings its connection every `keepaliveTimeMs`; a ping not
 * answered within `keepaliveTimeoutMs` closes it (calls on it fail UNAVAILABLE, the next call
 * connects anew), so a silently dead peer costs seconds, not every call's deadline. A connection
 * attempt that fails makes the next one wait: exponential backoff with full jitter
 * (src/common/backoff.ts), reset by a connection that succeeds. A call made during the wait
 * starts once it is over, or fails UNAVAILABLE at once when its deadline comes first.
 *
 * Errors are {@link GrpcCallError}s with `code` (a grpc-js `status`) and `details`, the shape of
 * grpc-js's ServiceError, so callers handle both transports alike.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import { status } from '@grpc/grpc-js';
import type { ClientTlsOptions } from '../common/tls.js';
import { backoffDelayMs, type RetryPolicy } from '../common/backoff.js';
import { encodeFrame, FrameDecoder, FrameError } from '../api/grpc-frame.js';
import { ERROR_CODE_TRAILER, RETRY_PUSHBACK_TRAILER } from '../api/headers.js';

const {
  HTTP2_HEADER_STATUS,
  HTTP2_HEADER_CONTENT_TYPE,
  NGHTTP2_CANCEL,
  NGHTTP2_REFUSED_STREAM,
  NGHTTP2_ENHANCE_YOUR_CALM,
  NGHTTP2_INADEQUATE_SECURITY,
  NGHTTP2_NO_ERROR,
} = http2.constants;

/** Longest delay setTimeout takes (longer deadlines are left to the server's grpc-timeout). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** The listener a closed stream keeps for 'error'. */
function ignoreError(): void {}

/**
 * A failed call: the gRPC status code and the server's (or transport's) message, and the
 * server's `ERR_STRATA_*` code when it sent one (trailer `strata-error-code`).
 */
export class GrpcCallError extends Error {
  readonly strataCode: string | undefined;
  /** The server's retry pushback (trailer `grpc-retry-pushback-ms`): retry after this many ms. */
  readonly pushbackMs: number | undefined;
  constructor(
    readonly code: status,
    readonly details: string,
    options?: { cause?: unknown; strataCode?: string | undefined; pushbackMs?: number | undefined },
  ) {
    super(`${code} ${status[code] ?? 'UNKNOWN'}: ${details}`, options);
    this.name = 'GrpcCallError';
    this.strataCode = options?.strataCode;
    this.pushbackMs = options?.pushbackMs;
  }
}

/** The `strata-error-code` header of a trailers block (or trailers-only headers). */
function strataCodeHeader(h: IncomingHttpHeaders): string | undefined {
  const v = h[ERROR_CODE_TRAILER];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/**
 * The `grpc-retry-pushback-ms` header of a trailers block: a non-negative integer of ms. As gRFC
 * A6 says, anything else (negative, not a number) means "do not retry": undefined.
 */
function pushbackHeader(h: IncomingHttpHeaders): number | undefined {
  const v = h[RETRY_PUSHBACK_TRAILER];
  return typeof v === 'string' && /^\d{1,9}$/.test(v) ? Number(v) : undefined;
}

/** Options of an {@link H2Channel}. */
export interface H2ChannelOptions {
  /** TLS (mTLS with a client certificate); plaintext (h2c) when absent. */
  readonly tls?: ClientTlsOptions;
  /** HTTP/2 receive window of the connection and of each stream (default 16 MiB). */
  readonly windowBytes?: number;
  /** Largest response message accepted (default 64 MiB): RESOURCE_EXHAUSTED beyond. */
  readonly maxMessageBytes?: number;
  /** `user-agent` header (default `strata-query`). */
  readonly userAgent?: string;
  /** The connection is pinged this often (default 30 s)... */
  readonly keepaliveTimeMs?: number;
  /** ...and closed when a ping is not answered within this (default 10 s). */
  readonly keepaliveTimeoutMs?: number;
  /** Waits between failed connection attempts: ceilings of the first and of every later one (default 100 ms, 10 s). */
  readonly reconnectBackoff?: { readonly baseDelayMs: number; readonly maxDelayMs: number };
  /** Random source of the backoff's jitter, in [0, 1) (tests). */
  readonly random?: () => number;
}

/** One server-streaming call. */
export interface ServerStreamCall {
  /** `/package.Service/Method`. */
  readonly path: string;
  /** The serialized request message. */
  readonly message: Uint8Array;
  /** Custom metadata (lowercase ASCII names and values). */
  readonly headers: Readonly<Record<string, string>>;
  /** Epoch ms after which the call fails with DEADLINE_EXCEEDED (Infinity: none). */
  readonly deadline: number;
  /** Aborting cancels the call; the promise rejects with the signal's reason. */
  readonly signal?: AbortSignal;
  /**
   * Receives each response message (a view of received bytes, valid for as long as it is
   * referenced). Throwing cancels the call and rejects the promise with what was thrown.
   */
  onMessage(message: Buffer): void;
}

/** gRPC code of an HTTP status that came without a gRPC status (the spec's mapping). */
export function codeOfHttpStatus(httpStatus: number): status {
  switch (httpStatus) {
    case 400:
      return status.INTERNAL;
    case 401:
      return status.UNAUTHENTICATED;
    case 403:
      return status.PERMISSION_DENIED;
    case 404:
      return status.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return status.UNAVAILABLE;
    default:
      return status.UNKNOWN;
  }
}

/** gRPC code of a stream reset that came without a gRPC status. */
function codeOfReset(rstCode: number): status {
  switch (rstCode) {
    case NGHTTP2_CANCEL:
      return status.CANCELLED;
    case NGHTTP2_ENHANCE_YOUR_CALM:
      return status.RESOURCE_EXHAUSTED;
    case NGHTTP2_INADEQUATE_SECURITY:
      return status.PERMISSION_DENIED;
    default:
      return status.UNAVAILABLE; // REFUSED_STREAM, and resets by a proxy whose upstream went away
  }
}

/** `grpc-timeout` for `ms` milliseconds (at most 8 digits, coarser units beyond). */
export function grpcTimeout(ms: number): string {
  const m = Math.max(1, Math.ceil(ms));
  if (m < 1e8) return `${m}m`;
  const s = Math.ceil(m / 1000);
  if (s < 1e8) return `${s}S`;
  return `${Math.min(99_999_999, Math.ceil(s / 3600))}H`;
}

function decodeGrpcMessage(raw: string | string[] | undefined): string {
  const v = Array.isArray(raw) ? raw.join(',') : (raw ?? '');
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

/** Status code of `grpc-status`, or null when absent or not a number. */
function statusHeader(h: IncomingHttpHeaders): number | null {
  const v = h['grpc-status'];
  if (v === undefined) return null;
  const n = Number(Array.isArray(v) ? v[0] : v);
  return Number.isInteger(n) && n >= 0 ? n : status.UNKNOWN;
}

/** A connection to one `host:port` carrying any number of calls; see the module comment. */
export class H2Channel {
  private session: ClientHttp2Session | null = null;
  /** Why each connection failed (for the calls it took down). */
  private readonly failures = new WeakMap<ClientHttp2Session, Error>();
  private active = 0;
  private closed = false;
  private readonly authority: string;
  private readonly window: number;
  private readonly maxMessage: number;
  private readonly userAgent: string;
  private readonly backoff: RetryPolicy;
  /** Connection attempts that failed in a row, the last one's error, and when the next may start. */
  private failedConnects = 0;
  /** Connections that completed the HTTP/2 handshake, and those counted as failed attempts. */
  private readonly handshaken = new WeakSet<ClientHttp2Session>();
  private readonly counted = new WeakSet<ClientHttp2Session>();
  private lastConnectError: Error | null = null;
  private nextConnectAt = 0;

  constructor(
    readonly endpoint: string,
    private readonly opts: H2ChannelOptions = {},
  ) {
    this.authority = `${opts.tls ? 'https' : 'http'}://${endpoint}`;
    this.window = opts.windowBytes ?? 16 * 1024 * 1024;
    this.maxMessage = opts.maxMessageBytes ?? 64 * 1024 * 1024;
    this.userAgent = opts.userAgent ?? 'strata-query';
    const b = opts.reconnectBackoff ?? { baseDelayMs: 100, maxDelayMs: 10_000 };
    this.backoff = { maxAttempts: Infinity, ...b };
  }

  /** Closes the connection; calls in flight fail as UNAVAILABLE, later calls are refused. */
  close(): void {
    this.closed = true;
    const s = this.session;
    this.session = null;
    s?.destroy();
  }

  private connection(): ClientHttp2Session {
    if (this.session && !this.session.closed && !this.session.destroyed) return this.session;
    const window = this.window;
    const s = http2.connect(this.authority, {
      settings: { enablePush: false, initialWindowSize: window },
      // bytes buffered per connection before nghttp2 refuses streams (MB); responses can be large
      maxSessionMemory: 1024,
      ...(this.opts.tls ?? {}),
    });
    const drop = (): void => {
      if (this.session === s) this.session = null;
    };
    s.once('remoteSettings', () => {
      // the server's SETTINGS: the HTTP/2 handshake is done
      this.handshaken.add(s);
      this.failedConnects = 0;
      this.lastConnectError = null;
    });
    s.on('connect', () => {
      try {
        s.setLocalWindowSize(window);
      } catch {
        // the connection closed already; its streams fail on their own
      }
    });
    s.on('error', (err: Error) => {
      this.failures.set(s, err); // the streams see the failure too
      drop();
      this.connectFailed(s);
    });
    s.on('goaway', drop);
    s.on('close', () => {
      drop();
      this.connectFailed(s);
    });
    this.keepalive(s);
    if (this.active === 0) s.unref();
    this.session = s;
    return s;
  }

  /**
   * Notes that `s` failed before its HTTP/2 handshake (refused, reset, timed out), once: the next
   * attempt waits for the backoff. Called by whichever comes first of its events and its calls'.
   */
  private connectFailed(s: ClientHttp2Session): void {
    if (this.handshaken.has(s) || this.counted.has(s) || this.closed) return;
    this.counted.add(s);
    this.failedConnects++;
    this.lastConnectError = this.failures.get(s) ?? new Error('connection closed before the HTTP/2 handshake');
    this.nextConnectAt = Date.now() + backoffDelayMs(this.backoff, this.failedConnects, this.opts.random);
  }

  /** Pings `s` every keepaliveTimeMs; an unanswered ping destroys it (see the module comment). */
  private keepalive(s: ClientHttp2Session): void {
    const every = this.opts.keepaliveTimeMs ?? 30_000;
    const within = this.opts.keepaliveTimeoutMs ?? 10_000;
    let pending: NodeJS.Timeout | undefined;
    const timer = setInterval(() => {
      if (s.destroyed || s.closed || pending !== undefined || !s.socket) return;
      pending = setTimeout(() => {
        const err = new Error(`keepalive ping not answered within ${within} ms; connection closed`);
        this.failures.set(s, err);
        s.destroy(err);
      }, within);
      pending.unref();
      const answered = (): void => {
        clearTimeout(pending);
        pending = undefined;
      };
      try {
        if (!s.ping(answered)) answered();
      } catch {
        answered(); // the session is closing
      }
    }, every);
    timer.unref();
    s.once('close', () => {
      clearInterval(timer);
      clearTimeout(pending);
    });
  }

  private hold(s: ClientHttp2Session): void {
    if (this.active++ === 0) s.ref();
  }

  private release(s: ClientHttp2Session): void {
    if (--this.active === 0 && !s.destroyed) s.unref();
  }

  /**
   * Runs one server-streaming call: resolves when the server ends it with OK, rejects with a
   * {@link GrpcCallError} (or what `onMessage` threw, or the signal's reason) otherwise.
   */
  serverStream(call: ServerStreamCall): Promise<void> {
    const live = this.session && !this.session.closed && !this.session.destroyed;
    const wait = live ? 0 : this.nextConnectAt - Date.now();
    if (wait > 0 && !this.closed) {
      // a connection attempt failed a moment ago: the next one waits for its backoff
      if (Date.now() + wait >= call.deadline) {
        return Promise.reject(
          new GrpcCallError(status.UNAVAILABLE, `${this.endpoint}: not connecting again for ${wait} ms after: ${this.lastConnectError?.message ?? 'a failed connection'}`),
        );
      }
      return sleep(wait, undefined, call.signal ? { signal: call.signal } : {}).then(
        () => this.serverStream(call),
        () => Promise.reject(call.signal!.reason),
      );
    }
    return new Promise<void>((resolve, reject) => {
      if (call.signal?.aborted) {
        reject(call.signal.reason);
        return;
      }
      if (this.closed) {
        reject(new GrpcCallError(status.UNAVAILABLE, `channel to ${this.endpoint} is closed`));
        return;
      }
      const left = call.deadline - Date.now();
      if (left <= 0) {
        reject(new GrpcCallError(status.DEADLINE_EXCEEDED, 'deadline exceeded before the call started'));
        return;
      }
      let session: ClientHttp2Session;
      let stream: ClientHttp2Stream;
      const headers: http2.OutgoingHttpHeaders = {
        ':method': 'POST',
        ':path': call.path,
        'content-type': 'application/grpc',
        te: 'trailers',
        'user-agent': this.userAgent,
        ...(this.opts.tls?.servername !== undefined ? { ':authority': this.opts.tls.servername } : {}),
        ...(Number.isFinite(left) ? { 'grpc-timeout': grpcTimeout(left) } : {}),
        ...call.headers,
      };
      try {
        session = this.connection();
        stream = session.request(headers, { endStream: false });
      } catch (err) {
        reject(new GrpcCallError(status.UNAVAILABLE, `cannot start a call on ${this.endpoint}: ${(err as Error).message}`, { cause: err }));
        return;
      }
      this.hold(session);

      let settled = false;
      let code: number | null = null;
      let details = '';
      let strataCode: string | undefined;
      let pushbackMs: number | undefined;
      let transportError: Error | null = null;
      const frames = new FrameDecoder(this.maxMessage);

      const finish = (err: unknown): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        call.signal?.removeEventListener('abort', onAbort);
        this.release(session);
        if (err === null) resolve();
        else reject(err);
      };
      const cancel = (err: unknown): void => {
        if (settled) return;
        if (!stream.closed) stream.close(NGHTTP2_CANCEL);
        finish(err);
      };
      const onAbort = (): void => cancel(call.signal!.reason);
      call.signal?.addEventListener('abort', onAbort, { once: true });
      const timer = left <= MAX_TIMER_MS ? setTimeout(() => cancel(new GrpcCallError(status.DEADLINE_EXCEEDED, 'deadline exceeded')), left) : undefined;

      const onResponse = (h: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader): void => {
        const st = statusHeader(h);
        if (st !== null) {
          // trailers-only: the status comes with the headers
          code = st;
          details = decodeGrpcMessage(h['grpc-message']);
          strataCode = strataCodeHeader(h);
          pushbackMs = pushbackHeader(h);
          return;
        }
        const http = Number(h[HTTP2_HEADER_STATUS]);
        if (http !== 200) {
          cancel(new GrpcCallError(codeOfHttpStatus(http), `HTTP status ${http} from ${this.endpoint}`));
          return;
        }
        const type = String(h[HTTP2_HEADER_CONTENT_TYPE] ?? '');
        if (!type.startsWith('application/grpc')) cancel(new GrpcCallError(status.UNKNOWN, `content-type "${type}" from ${this.endpoint} is not gRPC`));
      };

      const onData = (chunk: Buffer): void => {
        if (settled) return;
        try {
          frames.push(chunk, (msg) => call.onMessage(msg));
        } catch (err) {
          if (err instanceof FrameError) {
            const code = err.reason === 'compressed' ? status.INTERNAL : status.RESOURCE_EXHAUSTED;
            cancel(new GrpcCallError(code, `${this.endpoint}: ${err.message}`));
          } else cancel(err);
        }
      };

      const onTrailers = (h: http2.IncomingHttpHeaders): void => {
        const st = statusHeader(h);
        code = st ?? status.UNKNOWN;
        details = st === null ? `no grpc-status in the trailers from ${this.endpoint}` : decodeGrpcMessage(h['grpc-message']);
        strataCode = strataCodeHeader(h);
        pushbackMs = pushbackHeader(h);
      };

      const onError = (err: Error): void => {
        transportError = err;
      };

      const onClose = (): void => {
        // a closed stream emits nothing more. Node keeps the stream object (and so everything its
        // listeners reach: this call, its message handler and the query's decoded samples) alive
        // until a full collection, so every young collection in between copies and promotes it
        // all; detached, only the stream itself is kept
        stream.off('response', onResponse);
        stream.off('data', onData);
        stream.off('trailers', onTrailers);
        stream.off('error', onError);
        stream.on('error', ignoreError); // nothing comes after 'close', but an 'error' without a listener would throw
        stream.off('close', onClose);
        if (settled) return;
        if (code !== null) {
          if (code === status.OK && frames.partial) {
            finish(new GrpcCallError(status.INTERNAL, `the response from ${this.endpoint} ended inside a message`));
          } else finish(code === status.OK ? null : new GrpcCallError(code, details, { strataCode, pushbackMs }));
          return;
        }
        const rst = stream.rstCode ?? NGHTTP2_NO_ERROR;
        // Node reports a peer's RST_STREAM as an ERR_HTTP2_STREAM_ERROR: a reset, not a lost connection
        const reset = (transportError as NodeJS.ErrnoException | null)?.code === 'ERR_HTTP2_STREAM_ERROR' && rst !== NGHTTP2_NO_ERROR;
        const lost = (reset ? null : transportError) ?? this.failures.get(session) ?? (session.destroyed ? new Error('connection closed') : null);
        if (lost !== null) {
          // the connection failed or went away under the call (Node resets its streams)
          if (session.destroyed) this.connectFailed(session);
          finish(new GrpcCallError(status.UNAVAILABLE, `${this.endpoint}: ${lost.message}`, { cause: lost }));
          return;
        }
        if (rst !== NGHTTP2_NO_ERROR) {
          finish(new GrpcCallError(codeOfReset(rst), `${this.endpoint}: ${rst === NGHTTP2_REFUSED_STREAM ? 'stream refused' : `stream reset with code ${rst}`}`));
          return;
        }
        finish(new GrpcCallError(status.UNKNOWN, `the response from ${this.endpoint} ended without a gRPC status`));
      };
      stream.on('response', onResponse);
      stream.on('data', onData);
      stream.on('trailers', onTrailers);
      stream.on('error', onError);
      stream.on('close', onClose);

      stream.end(encodeFrame(call.message));
    });
  }
}
