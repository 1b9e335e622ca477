/**
 * The Read gRPC handler (proto/read.proto): thin. It validates the request and its headers, asks
 * the auth hook, runs the read, writes the messages with backpressure, and maps errors to a
 * status in one place (src/common/grpc-status.ts). A call ends at the earlier of the client's deadline
 * and `requestTimeoutMs`.
 *
 * Tenancy. The request's tenant is the block's tenant: the block key is computed from it, and
 * `x-strata-tenant` (sent by the query client; required when the tenants file requires auth) and
 * `x-strata-block` must agree with it (INVALID_ARGUMENT otherwise). The auth hook checks the token against that tenant
 * (UNAUTHENTICATED / PERMISSION_DENIED), so a token of B can never read a key of A. Then the
 * tenant's limits apply (`maxSeriesPerRead`: RESOURCE_EXHAUSTED) and the block is read from the
 * tenant's bucket, resolved per call.
 */
import { setImmediate as yieldLoop } from 'node:timers/promises';
import { status, type Metadata, type ServerWritableStream, type UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { BLOCK_HEADER, bearerToken, blockRoutingKey, headerValue, TENANT_HEADER } from '../api/headers.js';
import { ENCODING_RAW, ENCODING_RUNS, type ReadRequestFields } from '../api/read-codec.js';
import { checkWellFormed, GrpcError, grpcStatusOf, toServiceError } from '../common/grpc-status.js';
import { InvalidArgumentError } from '../errors.js';
import { blockKey, MAX_SHARDS, validateTenant } from '../format/key.js';
import { DAY_MS, dayBlockKey, dayBlocksFit } from '../format/day-key.js';
import type { BucketReader } from '../objstore/bucket.js';
import type { BlockLocation } from './block-directory.js';
import { InFlightBudget, READ_RETRY_PUSHBACK_MS } from './budget.js';
import type { GatewayConfig } from './config.js';
import type { Counted, GatewayMetrics } from './metrics.js';
import type { ReadQuery, ReadResult, SignalSource } from './read.js';

/** What the auth hook is told about a call. */
export interface AuthContext {
  readonly method: 'Read';
  /** The request's tenant: the tenant of the block read. */
  readonly tenant: string;
  /** `x-strata-tenant` as sent (null when absent); when present it equals `tenant`. */
  readonly headerTenant: string | null;
  /** The bearer token, or null when none was sent. */
  readonly token: string | null;
  readonly peer: string;
}

/** What an auth hook grants a call it lets through. */
export interface AuthGrant {
  /** The tenant the caller was authenticated as (must be the call's tenant when given). */
  readonly tenant?: string;
  /** Per-tenant limits (absent: only the gateway's own limits apply). */
  readonly limits?: { readonly maxSeriesPerRead?: number };
}

/**
 * Decides whether a call may proceed; throws a GrpcError (UNAUTHENTICATED, PERMISSION_DENIED) or
 * an InvalidArgumentError to refuse it, or returns what it grants (`void`: the call's tenant with
 * no limits). See {@link registryAuth} for the real one.
 */
export type AuthHook = (ctx: AuthContext) => AuthGrant | void | Promise<AuthGrant | void>;

/** An auth hook that allows every call (tests). */
export const allowAll: AuthHook = () => undefined;

/** What {@link registryAuth} needs of the tenant registry (src/tenancy/tenants.ts). */
export interface TenantAuthenticator {
  readonly config: { readonly authRequired: boolean };
  authenticate(tenant: string | null, token: string | null): AuthGrant;
}

/**
 * The auth hook of the tenant registry: a Read needs a token of the block's tenant, the request's
 * `tenant` field. The `x-strata-tenant` header is optional, as docs/protocol.md and read.proto say
 * (when sent, parseReadRequest has checked that it names the same tenant): requiring it refused
 * clients that send the documented minimum with INVALID_ARGUMENT, even without a token.
 */
export function registryAuth(registry: TenantAuthenticator): AuthHook {
  return (ctx) => registry.authenticate(ctx.tenant, ctx.token);
}

/** Where a tenant's blocks are read from (see BlockAddress in block-directory.ts). */
export interface TenantBucket {
  readonly bucket: BucketReader;
  readonly scope: string;
}




/** A validated request before its tenant's bucket is known. */
export type ParsedRead = Omit<ReadQuery, 'block'> & {
  readonly block: BlockLocation;
  /** `x-strata-tenant` as sent (null when absent); when present it equals the block's tenant. */
  readonly headerTenant: string | null;
};

/** How many ids a Read may carry per series of `maxSeriesPerRequest`, duplicates included. */
const DUPLICATES_ALLOWED = 4;

/**
 * Validates a request and its headers into a ParsedRead.
 * @throws InvalidArgumentError naming the field.
 */
export function parseReadRequest(req: ReadRequestFields, md: Metadata, cfg: Pick<GatewayConfig, 'blockDurationMs' | 'maxSeriesPerRequest'>): ParsedRead {
  validateTenant(req.tenant);
  const headerTenant = headerValue(md, TENANT_HEADER);
  if (headerTenant !== null && headerTenant !== req.tenant) {
    throw new InvalidArgumentError(TENANT_HEADER, `header names tenant "${headerTenant}", the request "${req.tenant}"`);
  }
  if (req.numShards < 1 || req.numShards > MAX_SHARDS) throw new InvalidArgumentError('num_shards', `${req.numShards} is outside 1..${MAX_SHARDS}`);
  if (req.shard >= req.numShards) throw new InvalidArgumentError('shard', `${req.shard} is not below num_shards (${req.numShards})`);
  const windowStart = req.windowStartMs;
  const windowMs = req.windowMs ?? 0n;
  const day = windowMs === BigInt(DAY_MS) && windowMs !== BigInt(cfg.blockDurationMs);
  if (windowMs !== 0n && windowMs !== BigInt(cfg.blockDurationMs) && !(day && dayBlocksFit(cfg.blockDurationMs))) {
    throw new InvalidArgumentError('window_ms', `${windowMs} is neither the block duration (${cfg.blockDurationMs} ms) nor a day (${DAY_MS} ms, with a block duration dividing it)`);
  }
  const d = day ? BigInt(DAY_MS) : BigInt(cfg.blockDurationMs);
  if (windowStart < 0n || windowStart % d !== 0n) {
    throw new InvalidArgumentError('window_start_ms', `${windowStart} is not a non-negative multiple of the ${day ? 'day' : 'block duration'} (${d} ms)`);
  }
  const routed = headerValue(md, BLOCK_HEADER);
  const expected = blockRoutingKey(req.tenant, req.shard, windowStart, day ? DAY_MS : undefined);
  if (routed !== null && routed !== expected) {
    throw new InvalidArgumentError(BLOCK_HEADER, `header names block "${routed}", the request "${expected}"`);
  }
  const start = req.startMs;
  const end = req.endMs;
  if (end < start) throw new InvalidArgumentError('end_ms', `${end} is before start_ms (${start})`);
  const raw = Buffer.from(req.seriesIds.buffer, req.seriesIds.byteOffset, req.seriesIds.length);
  if (raw.length % 8 !== 0) throw new InvalidArgumentError('series_ids', `${raw.length} bytes is not a whole number of uint64`);
  const n = raw.length / 8;
  // the limit counts distinct series (duplicates do not matter, says read.proto); ids beyond
  // DUPLICATES_ALLOWED times it are refused before they are sorted, duplicates or not
  if (n > DUPLICATES_ALLOWED * cfg.maxSeriesPerRequest) {
    throw new InvalidArgumentError('series_ids', `${n} ids, more than ${DUPLICATES_ALLOWED} times the gateway's maxSeriesPerRequest (${cfg.maxSeriesPerRequest}) even with duplicates`);
  }
  const all = new BigUint64Array(n);
  const shards = BigInt(req.numShards);
  const shard = BigInt(req.shard);
  for (let i = 0; i < n; i++) {
    const id = raw.readBigUInt64LE(i * 8);
    if (id % shards !== shard) throw new InvalidArgumentError('series_ids', `series ${id} belongs to shard ${id % shards}, not ${req.shard}`);
    all[i] = id;
  }
  all.sort();
  let m = 0;
  for (let i = 0; i < n; i++) if (i === 0 || all[i] !== all[i - 1]) all[m++] = all[i]!;
  if (m > cfg.maxSeriesPerRequest) {
    throw new InvalidArgumentError('series_ids', `${m} series, over the gateway's maxSeriesPerRequest (${cfg.maxSeriesPerRequest})`);
  }
  if (req.encoding !== ENCODING_RAW && req.encoding !== ENCODING_RUNS) throw new InvalidArgumentError('encoding', `unknown encoding ${req.encoding}`);
  return {
    block: { tenant: req.tenant, shard: req.shard, windowStart, windowEnd: windowStart + d, key: day ? dayBlockKey(req.tenant, req.shard, windowStart) : blockKey(req.tenant, req.shard, windowStart) },
    numShards: req.numShards,
    ids: m === n ? all : all.slice(0, m),
    start,
    end,
    encoding: req.encoding === ENCODING_RUNS ? 'runs' : 'raw',
    runsVersion: req.runsVersion ?? 0,
    headerTenant,
  };
}

/** Dependencies of the handlers. */
export interface ReadServiceOptions {
  readonly config: GatewayConfig;
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  readonly authorize: AuthHook;
  /** The bucket a tenant's blocks are read from, resolved per call (at once when it is known). */
  readonly resolve: (tenant: string, windowStart: bigint) => TenantBucket | Promise<TenantBucket>;
  /** Bounded metric label of a tenant. */
  readonly tenantLabel: (tenant: string) => string;
  /** Answers a read (of a block's window, or of a day: src/storage-gateway/day.ts). */
  readonly executor: { readNow(q: ReadQuery, signal: SignalSource): ReadResult | Promise<ReadResult> };
  /** False while draining: new calls get UNAVAILABLE. */
  readonly serving: () => boolean;
  /**
   * Whether a read of `tenant`'s window ending at `windowEnd` is answered with no data without
   * touching the block (the window is past the tenant's retention, or the tenant is marked for
   * deletion): the same answer as once the block is deleted.
   */
  readonly noData?: (tenant: string, windowEnd: bigint) => boolean;
}

/**
 * The start of the range to answer: `start`, moved past the windows of `[windowStart, windowEnd)`
 * (one block's window, or a day of them) that `noData` answers with no data (past retention: the
 * earliest windows first). A read of one block's window keeps `start` (its end says it all).
 */
function noDataUntil(noData: ReadServiceOptions['noData'], tenant: string, windowStart: bigint, windowEnd: bigint, blockMs: bigint, start: bigint): bigint {
  if (!noData || windowEnd - windowStart <= blockMs) return start;
  let w = windowStart;
  while (w < windowEnd && noData(tenant, w + blockMs)) w += blockMs;
  return w > start ? w : start;
}

/** Milliseconds left until the call's deadline (Infinity when it has none). */
function msUntilDeadline(call: ServerWritableStream<unknown, unknown>): number {
  const d = call.getDeadline();
  const at = d instanceof Date ? d.getTime() : d;
  return at === Infinity ? Infinity : at - Date.now();
}

/**
 * The end of a call: its deadline (the earlier of the client's and `requestTimeoutMs`) and the
 * client's cancellation. The AbortSignal the read and the writes wait with, and the timer that
 * aborts it at the deadline, are made the first time something has to wait ({@link signal}): a
 * warm read answers without waiting, and an AbortController costs more than the rest of its
 * bookkeeping. A deadline already past when the signal is made aborts it at once; before each
 * message {@link check} looks at the clock itself, so no message leaves after the deadline.
 */
class CallEnd {
  private ac: AbortController | null = null;
  private timer: NodeJS.Timeout | undefined;
  /** The client cancelled the call. */
  cancelled = false;
  /** The call has ended; later events do not count. */
  finished = false;

  /**
   * `deadline` is in performance.now() time; `limitMs` is how long the call had, and `bound` what
   * set it (for messages).
   */
  constructor(
    private readonly deadline: number,
    private readonly limitMs: number,
    private readonly bound: 'deadline' | 'requestTimeoutMs',
  ) {}

  /** The signal that aborts at the deadline or on cancellation (made on first use). */
  get signal(): AbortSignal {
    if (this.ac) return this.ac.signal;
    const ac = new AbortController();
    this.ac = ac;
    if (this.finished) ac.abort(endedError());
    else if (this.cancelled) ac.abort(cancelledError());
    else {
      const left = this.deadline - performance.now();
      if (left <= 0) ac.abort(this.deadlineError());
      else if (left !== Infinity) this.timer = setTimeout(() => ac.abort(this.deadlineError()), left);
    }
    return ac.signal;
  }

  /** The source handed to the read: the signal, made on first use. */
  readonly source = (): AbortSignal => this.signal;

  /** Whether the call was aborted (cancelled, or its signal fired). */
  get aborted(): boolean {
    return this.cancelled || (this.ac !== null && this.ac.signal.aborted);
  }

  /** Why the call was aborted (when {@link aborted}). */
  get reason(): unknown {
    return this.ac?.signal.aborted ? this.ac.signal.reason : cancelledError();
  }

  /** Throws when the call was cancelled, was aborted, or is past its deadline. */
  check(): void {
    if (this.aborted) throw this.reason;
    if (performance.now() >= this.deadline) throw this.deadlineError();
  }

  cancel(): void {
    if (this.finished || this.cancelled) return;
    this.cancelled = true;
    this.ac?.abort(cancelledError());
    this.onCancel?.();
  }

  /** Called once when the client cancels (see {@link SendWindow.settled}). */
  onCancel: (() => void) | null = null;

  /** Whether the call's time is up at `now` (performance.now() time). */
  pastDeadline(now: number): boolean {
    return now >= this.deadline;
  }

  /**
   * Ends the call's bookkeeping (clears the timer), and aborts what it started that is still
   * running: the other block reads of a day answer after one of them failed, say, which would
   * otherwise go on fetching and decoding after the call gave its slot of maxConcurrentReads back.
   */
  finish(): void {
    this.finished = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.ac?.abort(endedError());
  }

  private deadlineError(): GrpcError {
    // a deadline of a few ms may have passed before the gateway took the call: no "within 0 ms"
    const had = this.limitMs <= 0 ? 'it had passed when the gateway took the call' : `${this.limitMs < 10 ? this.limitMs.toFixed(1) : Math.round(this.limitMs)} ms were left when the gateway took it`;
    return new GrpcError(
      status.DEADLINE_EXCEEDED,
      this.bound === 'deadline' ? `read did not finish within the call's deadline (grpc-timeout; ${had})` : `read did not finish within requestTimeoutMs (${Math.round(this.limitMs)} ms)`,
    );
  }
}

function endedError(): GrpcError {
  return new GrpcError(status.CANCELLED, 'the call has ended');
}

function cancelledError(): GrpcError {
  return new GrpcError(status.CANCELLED, 'the client cancelled the call');
}

/** The AuthContext of a call; the peer address is looked up only if the hook asks for it. */
class ReadAuthContext implements AuthContext {
  readonly method = 'Read';

  constructor(
    readonly tenant: string,
    readonly headerTenant: string | null,
    readonly token: string | null,
    private readonly call: ServerWritableStream<unknown, unknown>,
  ) {}

  get peer(): string {
    return this.call.getPeer();
  }
}

/**
 * Memory a message holds until the transport has sent it: the gateway's encoding and the framed
 * copy grpc-js makes of it (the encoding is garbage once copied, but stays until a GC). Measured:
 * with each message charged once, 255 unread 2 MB answers holding 256 MiB of budget grew the
 * gateway's RSS by 597 MiB.
 */
function heldBytes(msg: Buffer): number {
  return heldBytesOf(msg.length);
}

function heldBytesOf(messageLength: number): number {
  return 2 * messageLength;
}

/** Messages a call may have made that the transport has not sent yet; then it waits. */
const MESSAGES_AHEAD = 2;
/**
 * Work of Read calls in one turn of the event loop, at most (about): past it, a call yields
 * before reading and between messages, so a burst of calls (a connection delivers many streams
 * in one read) or a long answer never blocks health checks, /metrics or other calls for long.
 */
const SLICE_MS = 5;

/** Measures how long the current turn of the event loop has been running Read work. */
class TurnBudget {
  private start = 0;
  private armed = false;

  /** True when this turn has run SLICE_MS already (the caller should yield). */
  spent(): boolean {
    const now = performance.now();
    if (!this.armed) {
      this.armed = true;
      this.start = now;
      setImmediate(() => {
        this.armed = false;
      });
      return false;
    }
    return now - this.start >= SLICE_MS;
  }
}

/**
 * The messages of one call that the transport has not sent yet: their bytes stay taken from the
 * budget until grpc-js reports each message written (HTTP/2 has sent it, flow control permitting),
 * or the call ends ({@link close} gives back the rest; later reports are ignored).
 */
class SendWindow {
  /** Messages written to the call. */
  sent = 0;
  /** Written and not yet sent by the transport. */
  pending = 0;
  private bytes = 0;
  private closed = false;
  private wake: (() => void) | null = null;

  constructor(
    private readonly call: ServerWritableStream<unknown, Buffer>,
    private readonly budget: InFlightBudget,
    private readonly tenant: string,
  ) {}

  /** Writes `msg`, whose bytes the caller has taken from the budget. */
  write(msg: Buffer): void {
    const size = heldBytes(msg);
    this.sent++;
    this.pending++;
    this.bytes += size;
    this.call.write(msg, () => {
      if (this.closed) return;
      this.pending--;
      this.bytes -= size;
      this.budget.give(this.tenant, size);
      this.wake?.();
    });
  }

  /** Resolves once at most `n` messages are pending; rejects when `signal` aborts first. */
  drained(n: number, signal: AbortSignal): Promise<void> {
    if (this.pending <= n) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        this.wake = null;
        reject(signal.reason);
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      this.wake = () => {
        if (this.pending > n) return;
        this.wake = null;
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
    });
  }

  /**
   * Resolves once the transport has taken every message written, or the client cancels, or the
   * call's time is up (seen by `lingering` within {@link LINGER_SWEEP_MS}). Never rejects. Made
   * for the end of a call without an AbortSignal or a timer of its own: every call waits here
   * for about a millisecond, and those two, kept alive with the call's HTTP/2 stream until a
   * full collection (docs/capacity.md), cost a 30-request read a sixth of its gateway CPU.
   */
  settled(end: CallEnd, lingering: Lingering): Promise<void> {
    if (this.pending === 0 || end.cancelled || end.pastDeadline(performance.now())) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = (): void => {
        this.wake = null;
        end.onCancel = null;
        lingering.delete(end);
        resolve();
      };
      this.wake = () => {
        if (this.pending === 0) done();
      };
      end.onCancel = done;
      lingering.add(end, done);
    });
  }

  /** The call has ended: its pending bytes go back to the budget. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.budget.give(this.tenant, this.bytes);
    this.bytes = 0;
  }
}

/** How often {@link Lingering} looks for calls whose time is up. */
const LINGER_SWEEP_MS = 250;

/**
 * Calls that have written their whole answer and ended it, waiting for the transport to take the
 * last messages ({@link SendWindow.settled}; grpc-js sends the status after them), released when
 * their time is up by one timer for all of them.
 */
class Lingering {
  private readonly calls = new Map<CallEnd, () => void>();
  private timer: NodeJS.Timeout | null = null;

  add(end: CallEnd, release: () => void): void {
    this.calls.set(end, release);
    if (this.timer === null) {
      // cleared by a sweep that finds no call waiting, not when the last one leaves: made and
      // cleared per call, it would cost what it saves
      this.timer = setInterval(() => this.sweep(), LINGER_SWEEP_MS);
      this.timer.unref();
    }
  }

  delete(end: CallEnd): void {
    this.calls.delete(end);
  }

  private sweep(): void {
    if (this.calls.size === 0) {
      clearInterval(this.timer!);
      this.timer = null;
      return;
    }
    const now = performance.now();
    for (const [end, release] of this.calls) if (end.pastDeadline(now)) release();
  }
}

/** Metric children of one tenant label (see metrics.ts: counted at scrape time). */
interface TenantCounts {
  readonly requestsOk: Counted;
  readonly samples: Counted;
}

/** The Read service implementation for `server.addService`. */
export function readService(opts: ReadServiceOptions): UntypedServiceImplementation {
  const { config, metrics, logger } = opts;
  const requestsOk = metrics.counted(metrics.requests, { code: status[status.OK] });
  const durationOk = metrics.requestDuration.labels(status[status.OK]);
  const samplesServed = metrics.counted(metrics.samplesServed);
  const seriesServed = metrics.counted(metrics.seriesServed);
  const bytesServed = { runs: metrics.counted(metrics.bytesServed, { encoding: 'runs' }), raw: metrics.counted(metrics.bytesServed, { encoding: 'raw' }) };
  const tenants = new Map<string, TenantCounts>();
  // budgets (docs/config.md): calls being served, per tenant, and answer bytes not yet taken
  let active = 0;
  const activeOf = new Map<string, number>();
  const turn = new TurnBudget();
  const lingering = new Lingering();
  const inFlight = new InFlightBudget(config.maxBytesInFlight, config.maxBytesInFlightPerTenant, (used) => metrics.bytesInFlight.set(used));
  const tenantCounts = (label: string): TenantCounts => {
    let c = tenants.get(label);
    if (!c) {
      c = { requestsOk: metrics.counted(metrics.tenantRequests, { tenant: label, code: status[status.OK] }), samples: metrics.counted(metrics.tenantSamplesServed, { tenant: label }) };
      tenants.set(label, c);
    }
    return c;
  };

  const handle = async (call: ServerWritableStream<ReadRequestFields, Buffer>): Promise<void> => {
    const t0 = performance.now();
    const untilDeadline = msUntilDeadline(call);
    const limitMs = Math.min(untilDeadline, config.requestTimeoutMs);
    const end = new CallEnd(t0 + limitMs, limitMs, untilDeadline < config.requestTimeoutMs ? 'deadline' : 'requestTimeoutMs');
    // grpc-js also reports streams closed after the status was sent: CallEnd ignores those
    call.on('cancelled', () => end.cancel());
    let code: status = status.OK;
    let parsed: ParsedRead | null = null;
    let tenantLabel: string | null = null;
    let counted = false;
    let tenantCounted: string | null = null;
    let sending: SendWindow | null = null;
    let okRecorded = false;
    const recordOk = (): void => {
      if (okRecorded) return;
      okRecorded = true;
      requestsOk.inc();
      if (tenantLabel !== null) tenantCounts(tenantLabel).requestsOk.inc();
      durationOk.observe((performance.now() - t0) / 1000);
    };
    try {
      if (!opts.serving()) throw new GrpcError(status.UNAVAILABLE, 'the gateway is shutting down; retry on another');
      if (active >= config.maxConcurrentReads) {
        throw new GrpcError(status.RESOURCE_EXHAUSTED, `maxConcurrentReads (${config.maxConcurrentReads}) calls are being served; retry shortly or on another gateway`, { retryAfterMs: READ_RETRY_PUSHBACK_MS });
      }
      active++;
      counted = true;
      checkWellFormed(call.request);
      parsed = parseReadRequest(call.request, call.metadata, config);
      const tenant = parsed.block.tenant;
      tenantLabel = opts.tenantLabel(tenant);
      const auth = opts.authorize(new ReadAuthContext(tenant, parsed.headerTenant, bearerToken(call.metadata), call));
      const grant = auth instanceof Promise ? await auth : auth;
      if (grant?.tenant !== undefined && grant.tenant !== tenant) throw new GrpcError(status.PERMISSION_DENIED, `the token does not grant access to tenant "${tenant}"`);
      const mine = activeOf.get(tenant) ?? 0;
      if (mine >= config.maxConcurrentReadsPerTenant) {
        throw new GrpcError(status.RESOURCE_EXHAUSTED, `tenant "${tenant}" has maxConcurrentReadsPerTenant (${config.maxConcurrentReadsPerTenant}) calls being served; retry shortly`, { retryAfterMs: READ_RETRY_PUSHBACK_MS });
      }
      activeOf.set(tenant, mine + 1);
      tenantCounted = tenant;
      const maxSeries = grant?.limits?.maxSeriesPerRead;
      if (maxSeries !== undefined && parsed.ids.length > maxSeries) {
        throw new GrpcError(status.RESOURCE_EXHAUSTED, `request names ${parsed.ids.length} series, more than the limit maxSeriesPerRead (${maxSeries}) of tenant "${tenant}"; split it`);
      }
      const resolved = opts.resolve(tenant, parsed.block.windowStart);
      const { bucket, scope } = resolved instanceof Promise ? await resolved : resolved;
      const { block } = parsed;
      // windows with no data to answer (retention, deleted tenant) are cut off the range
      const start = noDataUntil(opts.noData, tenant, block.windowStart, block.windowEnd, BigInt(config.blockDurationMs), parsed.start);
      const query: ReadQuery = {
        block: { tenant: block.tenant, shard: block.shard, windowStart: block.windowStart, windowEnd: block.windowEnd, key: block.key, bucket, scope },
        numShards: parsed.numShards,
        ids: parsed.ids,
        start,
        end: opts.noData?.(tenant, block.windowEnd) === true ? parsed.start : parsed.end,
        encoding: parsed.encoding,
        runsVersion: parsed.runsVersion ?? 0,
        ...(start !== parsed.start ? { narrowed: true } : {}),
      };
      if (turn.spent()) {
        await yieldLoop();
        end.check();
      }
      const reading = opts.executor.readNow(query, end.source);
      const answer = reading instanceof Promise ? await reading : reading;
      // a first message that cannot fit the budgets is refused before it is made (decoded,
      // encoded): an overload of clients that do not read costs no work and no garbage
      const early = inFlight.refusal(tenant, heldBytesOf(answer.firstMessageMaxBytes));
      if (early) throw early;
      sending = new SendWindow(call, inFlight, tenant);
      for (let msg = answer.next(); msg !== null; msg = answer.next()) {
        end.check();
        if (sending.sent === 0) {
          // the first message must fit the budgets now: a call holding nothing does not queue
          const refused = inFlight.refusal(tenant, heldBytes(msg));
          if (refused) throw refused;
          inFlight.take(tenant, heldBytes(msg));
        } else await inFlight.wait(tenant, heldBytes(msg), end.signal);
        sending.write(msg);
        if (sending.pending >= MESSAGES_AHEAD) await sending.drained(MESSAGES_AHEAD - 1, end.signal);
        else if (turn.spent()) await yieldLoop(); // a long answer of a fast client: let others run
      }
      samplesServed.inc(answer.samples);
      seriesServed.inc(answer.series);
      bytesServed[query.encoding].inc(answer.bytes);
      tenantCounts(tenantLabel).samples.inc(answer.samples);
      call.end();
      recordOk();
      // the call stays counted until the transport has taken its last messages (HTTP/2 flow
      // control holds them while the client does not read), or the client leaves, or the call's
      // time is up; the outcome is decided already
      await sending.settled(end, lingering);
    } catch (e) {
      const err = end.aborted && !(e instanceof GrpcError) ? end.reason : e;
      code = end.cancelled ? status.CANCELLED : grpcStatusOf(err);
      if (code === status.INTERNAL || code === status.DATA_LOSS) logger.error({ err, key: parsed?.block.key }, 'read failed');
      else logger.debug({ err, key: parsed?.block.key }, 'read refused');
      if (!end.cancelled) call.emit('error', toServiceError(err));
    } finally {
      end.finish();
      if (counted) active--;
      if (tenantCounted !== null) {
        const n = (activeOf.get(tenantCounted) ?? 1) - 1;
        if (n > 0) activeOf.set(tenantCounted, n);
        else activeOf.delete(tenantCounted);
      }
      sending?.close();
      const seconds = (performance.now() - t0) / 1000;
      if (code === status.OK) {
        recordOk();
      } else {
        const name = status[code] ?? String(code);
        metrics.requests.inc({ code: name });
        if (tenantLabel !== null) metrics.tenantRequests.inc({ tenant: tenantLabel, code: name });
        metrics.requestDuration.observe({ code: name }, seconds);
      }
    }
  };
  return {
    Read(call: ServerWritableStream<ReadRequestFields, Buffer>) {
      void handle(call);
    },
  };
}
