/**
 * The Read gRPC handler (proto/read.proto): thin. It validates the request and its headers, asks
 * the auth hook, runs the read, writes the messages with backpressure, and maps errors to a
 * status in one place (src/common/status.ts). A call ends at the earlier of the client's deadline
 * and `requestTimeoutMs`.
 */
import { once } from 'node:events';
import { status, type Metadata, type ServerWritableStream, type UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { ENCODING_RAW, ENCODING_RUNS, type ReadRequestFields } from '../client/query-codec.js';
import { GrpcError, grpcStatusOf, toServiceError } from '../common/status.js';
import { InvalidArgumentError } from '../errors.js';
import { blockKey, MAX_SHARDS, validateTenant } from '../format/key.js';
import type { GatewayConfig } from './config.js';
import type { GatewayMetrics } from './metrics.js';
import type { BlockReadExecutor, ReadQuery } from './read.js';

/** Header naming the block read: `<tenant>/<shard>/<windowStartMs>` (Envoy hashes it). */
export const BLOCK_HEADER = 'x-strata-block';
/** Header naming the tenant. */
export const TENANT_HEADER = 'x-strata-tenant';
/** Header carrying the auth token (`Bearer <token>`). */
export const AUTH_HEADER = 'authorization';

/** What the auth hook is told about a call. */
export interface AuthContext {
  readonly method: 'Read';
  readonly tenant: string;
  /** The bearer token, or null when none was sent. */
  readonly token: string | null;
  readonly peer: string;
}

/**
 * Decides whether a call may proceed; throws a GrpcError (UNAUTHENTICATED, PERMISSION_DENIED) to
 * refuse it. The tenancy issue provides the real one; the default allows everything.
 */
export type AuthHook = (ctx: AuthContext) => void | Promise<void>;

/** The default auth hook: allows every call. */
export const allowAll: AuthHook = () => undefined;

/** The value of the block routing header for a block. */
export function blockHeaderValue(tenant: string, shard: number, windowStartMs: bigint): string {
  return `${tenant}/${shard}/${windowStartMs}`;
}

function header(md: Metadata, name: string): string | null {
  const v = md.get(name);
  if (v.length === 0) return null;
  return String(v[0]);
}

/**
 * Validates a request and its headers into a ReadQuery.
 * @throws InvalidArgumentError naming the field.
 */
export function parseReadRequest(req: ReadRequestFields, md: Metadata, cfg: Pick<GatewayConfig, 'blockDurationMs' | 'maxSeriesPerRequest'>): ReadQuery {
  validateTenant(req.tenant);
  const headerTenant = header(md, TENANT_HEADER);
  if (headerTenant !== null && headerTenant !== req.tenant) {
    throw new InvalidArgumentError(TENANT_HEADER, `header names tenant "${headerTenant}", the request "${req.tenant}"`);
  }
  if (req.numShards < 1 || req.numShards > MAX_SHARDS) throw new InvalidArgumentError('num_shards', `${req.numShards} is outside 1..${MAX_SHARDS}`);
  if (req.shard >= req.numShards) throw new InvalidArgumentError('shard', `${req.shard} is not below num_shards (${req.numShards})`);
  const windowStart = req.windowStartMs;
  const d = BigInt(cfg.blockDurationMs);
  if (windowStart < 0n || windowStart % d !== 0n) {
    throw new InvalidArgumentError('window_start_ms', `${windowStart} is not a non-negative multiple of the block duration (${cfg.blockDurationMs} ms)`);
  }
  const routed = header(md, BLOCK_HEADER);
  const expected = blockHeaderValue(req.tenant, req.shard, windowStart);
  if (routed !== null && routed !== expected) {
    throw new InvalidArgumentError(BLOCK_HEADER, `header names block "${routed}", the request "${expected}"`);
  }
  const start = req.startMs;
  const end = req.endMs;
  if (end < start) throw new InvalidArgumentError('end_ms', `${end} is before start_ms (${start})`);
  const raw = Buffer.from(req.seriesIds.buffer, req.seriesIds.byteOffset, req.seriesIds.length);
  if (raw.length % 8 !== 0) throw new InvalidArgumentError('series_ids', `${raw.length} bytes is not a whole number of uint64`);
  const n = raw.length / 8;
  if (n > cfg.maxSeriesPerRequest) {
    throw new InvalidArgumentError('series_ids', `${n} series, over the gateway's maxSeriesPerRequest (${cfg.maxSeriesPerRequest})`);
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
  if (req.encoding !== ENCODING_RAW && req.encoding !== ENCODING_RUNS) throw new InvalidArgumentError('encoding', `unknown encoding ${req.encoding}`);
  return {
    block: { tenant: req.tenant, shard: req.shard, windowStart, windowEnd: windowStart + d, key: blockKey(req.tenant, req.shard, windowStart) },
    numShards: req.numShards,
    ids: all.subarray(0, m),
    start,
    end,
    encoding: req.encoding === ENCODING_RUNS ? 'runs' : 'raw',
  };
}

/** Dependencies of the handlers. */
export interface ReadServiceOptions {
  readonly config: GatewayConfig;
  readonly metrics: GatewayMetrics;
  readonly logger: Logger;
  readonly authorize: AuthHook;
  readonly executor: BlockReadExecutor;
  /** False while draining: new calls get UNAVAILABLE. */
  readonly serving: () => boolean;
}

/** Milliseconds left until the call's deadline (Infinity when it has none). */
function msUntilDeadline(call: ServerWritableStream<unknown, unknown>): number {
  const d = call.getDeadline();
  const at = d instanceof Date ? d.getTime() : d;
  return at === Infinity ? Infinity : at - Date.now();
}

/** The Read service implementation for `server.addService`. */
export function readService(opts: ReadServiceOptions): UntypedServiceImplementation {
  const { config, metrics, logger } = opts;
  const handle = async (call: ServerWritableStream<ReadRequestFields, Buffer>): Promise<void> => {
    const t0 = performance.now();
    const ac = new AbortController();
    let cancelled = false;
    let finished = false;
    call.on('cancelled', () => {
      if (finished) return; // grpc-js also reports streams closed after the status was sent
      cancelled = true;
      ac.abort(new GrpcError(status.CANCELLED, 'the client cancelled the call'));
    });
    const limitMs = Math.min(msUntilDeadline(call), config.requestTimeoutMs);
    const timer = setTimeout(
      () => ac.abort(new GrpcError(status.DEADLINE_EXCEEDED, `read did not finish within ${Math.max(0, Math.round(limitMs))} ms (deadline or requestTimeoutMs)`)),
      Math.max(0, limitMs),
    );
    let code: status = status.OK;
    let query: ReadQuery | null = null;
    try {
      if (!opts.serving()) throw new GrpcError(status.UNAVAILABLE, 'the gateway is shutting down; retry on another');
      query = parseReadRequest(call.request, call.metadata, config);
      const auth = header(call.metadata, AUTH_HEADER);
      await opts.authorize({ method: 'Read', tenant: query.block.tenant, token: auth?.startsWith('Bearer ') ? auth.slice(7) : null, peer: call.getPeer() });
      const result = await opts.executor.read(query, ac.signal);
      for (const msg of result.messages) {
        if (ac.signal.aborted) throw ac.signal.reason;
        if (!call.write(msg)) await once(call, 'drain', { signal: ac.signal });
      }
      metrics.samplesServed.inc(result.samples);
      metrics.seriesServed.inc(result.series);
      metrics.bytesServed.inc({ encoding: query.encoding }, result.bytes);
      call.end();
    } catch (e) {
      const err = ac.signal.aborted && !(e instanceof GrpcError) ? ac.signal.reason : e;
      code = cancelled ? status.CANCELLED : grpcStatusOf(err);
      if (code === status.INTERNAL || code === status.DATA_LOSS) logger.error({ err, key: query?.block.key }, 'read failed');
      else logger.debug({ err, key: query?.block.key }, 'read refused');
      if (!cancelled) call.emit('error', toServiceError(err));
    } finally {
      finished = true;
      clearTimeout(timer);
      const name = status[code] ?? String(code);
      metrics.requests.inc({ code: name });
      metrics.requestDuration.observe({ code: name }, (performance.now() - t0) / 1000);
    }
  };
  return {
    Read(call: ServerWritableStream<ReadRequestFields, Buffer>) {
      void handle(call);
    },
  };
}
