/**
 * gRPC handlers of `strata.write.v1.Writer` (proto/write.proto): headers, auth hook, ownership,
 * limits, then the engine (aggregator.ts). Errors become statuses in src/common/grpc-status.ts.
 *
 * Order of checks for Write: state (UNAVAILABLE while starting or draining) → x-strata-tenant →
 * auth hook → x-strata-shard (INVALID_ARGUMENT if malformed, FAILED_PRECONDITION if not owned) →
 * array shapes (INVALID_ARGUMENT) → samples per request, the tenant's maxSamplesPerWrite, WAL
 * quota, in-flight budget (RESOURCE_EXHAUSTED) → per-sample validation (INVALID_ARGUMENT) → WAL
 * (group commit) → OK.
 *
 * Status is scoped by the auth hook: a grant naming a tenant sees only that tenant's windows,
 * flushes and WAL bytes (no cross-tenant information); a grant without a tenant (no tenants file,
 * or `authRequired: false`) sees everything.
 */
import { Metadata, status, type sendUnaryData, type ServerUnaryCall, type UntypedServiceImplementation } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { checkWellFormed, GrpcError, grpcStatusOf, toServiceError } from '../common/grpc-status.js';
import { InvalidArgumentError } from '../errors.js';
import { validateTenant } from '../format/key.js';
import { bearerToken, headerValue, SHARD_HEADER, TENANT_HEADER } from '../api/headers.js';
import type { Aggregator } from './aggregator.js';
import type { AggregatorConfig } from './config.js';
import type { FlushedBlock } from './flush-scheduler.js';
import { countSamples, type WireSeries } from './ingest.js';
import type { AggregatorMetrics } from './metrics.js';



/**
 * What a series of a Write costs while the request is processed, besides 16 bytes per sample:
 * measured 280 bytes per one-sample series for the decoded message (proto-loader), and as much
 * again for its run and its WAL batch entry each; charged to `inflightBytes`, so the budget bounds
 * memory whatever the samples per series.
 */
export const SERIES_CHARGE_BYTES = 1024;
/** What the auth hook is told about a call. */
export interface AuthContext {
  readonly method: 'Write' | 'Seal' | 'Status';
  /** Null for Status, which is not tenant-scoped. */
  readonly tenant: string | null;
  /** The bearer token, or null when none was sent. */
  readonly token: string | null;
  readonly peer: string;
}

/** What an auth hook grants a call it lets through. */
export interface AuthGrant {
  /**
   * For Write and Seal, the tenant of the call. For Status, the only tenant the caller may see,
   * or null for every tenant.
   */
  readonly tenant: string | null;
  /** Per-tenant limits (absent: only the aggregator's own limits apply). */
  readonly limits?: { readonly maxSamplesPerWrite?: number };
}

/**
 * Decides whether a call may proceed; throws a GrpcError (UNAUTHENTICATED, PERMISSION_DENIED) or
 * an InvalidArgumentError to refuse it, or returns what it grants (`void` grants the tenant of the
 * call with no limits, and every tenant for Status). See {@link registryAuth} for the real one.
 */
export type AuthHook = (ctx: AuthContext) => AuthGrant | void | Promise<AuthGrant | void>;

/** An auth hook that allows every call (tests). */
export const allowAll: AuthHook = () => undefined;

/** What {@link registryAuth} needs of the tenant registry (src/tenancy/tenants.ts). */
export interface TenantAuthenticator {
  authenticate(tenant: string | null, token: string | null): AuthGrant;
  authenticateToken(token: string | null): AuthGrant | null;
}

/**
 * The auth hook of the tenant registry: Write and Seal need a token of the named tenant; Status
 * needs a token of any tenant and sees only that tenant (when the tenants file requires auth).
 */
export function registryAuth(registry: TenantAuthenticator): AuthHook {
  return (ctx) => {
    if (ctx.method === 'Status') return registry.authenticateToken(ctx.token) ?? undefined;
    return registry.authenticate(ctx.tenant, ctx.token);
  };
}

/** Lifecycle of the server, as the handlers see it. */
export type ServerState = 'starting' | 'serving' | 'draining';

/** Dependencies of the handlers. */
export interface WriterServiceOptions {
  readonly config: AggregatorConfig;
  readonly metrics: AggregatorMetrics;
  readonly logger: Logger;
  readonly authorize: AuthHook;
  /** Bounded metric label of a tenant. */
  readonly tenantLabel: (tenant: string) => string;
  /** The engine once it is ready, and the server state. */
  readonly aggregator: () => Aggregator | null;
  readonly state: () => ServerState;
  /** Why writes of `tenant` are refused (it is marked for deletion), or null. */
  readonly refusal?: (tenant: string) => string | null;
}

interface WireWriteRequest {
  series: WireSeries[];
}
interface WireSealRequest {
  window_start_ms: string;
  no_wait: boolean;
}


function tenantOf(md: Metadata): string {
  const t = headerValue(md, TENANT_HEADER);
  if (t === null || t === '') throw new InvalidArgumentError(TENANT_HEADER, 'missing header');
  try {
    validateTenant(t);
  } catch (err) {
    if (err instanceof InvalidArgumentError) throw new InvalidArgumentError(TENANT_HEADER, `"${t.slice(0, 80)}": ${err.message.replace(/^invalid tenant: /, '')}`);
    throw err;
  }
  return t;
}


function shardOf(md: Metadata, cfg: AggregatorConfig, owned: ReadonlySet<number>): number {
  const s = headerValue(md, SHARD_HEADER);
  if (s === null || s === '') throw new InvalidArgumentError(SHARD_HEADER, 'missing header');
  // canonical decimal only: proxies route on the exact string ("01" would miss the route of "1")
  if (!/^(0|[1-9]\d{0,5})$/.test(s) || Number(s) >= cfg.numShards) {
    throw new InvalidArgumentError(SHARD_HEADER, `"${s.slice(0, 32)}" is not a shard number in 0..${cfg.numShards - 1}`);
  }
  const shard = Number(s);
  if (!owned.has(shard)) {
    throw new GrpcError(status.FAILED_PRECONDITION, `shard ${shard} is not owned by this aggregator (it owns ${describeShards([...owned])} of ${cfg.numShards})`);
  }
  return shard;
}

/** `0-3,7` style summary of a shard list. */
export function describeShards(shards: number[]): string {
  const s = [...shards].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < s.length; ) {
    let j = i;
    while (j + 1 < s.length && s[j + 1] === s[j]! + 1) j++;
    parts.push(i === j ? `${s[i]}` : `${s[i]}-${s[j]}`);
    i = j + 1;
  }
  return parts.join(',') || 'none';
}

function wireBlock(b: FlushedBlock): Record<string, unknown> {
  return {
    tenant: b.tenant,
    shard: b.shard,
    window_start_ms: b.windowStart.toString(),
    key: b.key,
    block_id: b.blockId,
    series: String(b.series),
    samples: String(b.samples),
    bytes: String(b.bytes),
    replaced: b.replaced,
  };
}

/** FAILED_PRECONDITION when `tenant` is marked for deletion. */
function refuseMarked(o: WriterServiceOptions, tenant: string | null): void {
  const why = tenant === null ? null : (o.refusal?.(tenant) ?? null);
  if (why !== null) throw new GrpcError(status.FAILED_PRECONDITION, why);
}

/** A write refused for want of free disk under walDir logs a warning at most this often. */
const LOW_DISK_WARN_INTERVAL_MS = 60_000;

/** Builds the handlers of the Writer service. */
export function writerService(o: WriterServiceOptions): UntypedServiceImplementation {
  let lastLowDiskWarnMs = -Infinity;
  let inflight = 0;

  const ready = (): Aggregator => {
    const st = o.state();
    const agg = o.aggregator();
    if (st === 'draining') throw new GrpcError(status.UNAVAILABLE, 'the aggregator is shutting down; retry on another attempt');
    if (st === 'starting' || !agg) throw new GrpcError(status.UNAVAILABLE, 'the aggregator is starting (recovering its WAL); retry shortly');
    return agg;
  };

  /** Throws when the caller of `call` gave up (cancelled, or its deadline passed): nothing more of it is done. */
  const refuseGoneCall = (call: ServerUnaryCall<unknown, unknown>): void => {
    if (call.cancelled) throw new GrpcError(status.CANCELLED, 'the call was cancelled before its samples reached the WAL; nothing of it was stored');
    const deadline = call.getDeadline();
    const ms = deadline instanceof Date ? deadline.getTime() : deadline;
    if (Number.isFinite(ms) && Date.now() >= ms) throw new GrpcError(status.DEADLINE_EXCEEDED, "the call's deadline passed before its samples reached the WAL; nothing of it was stored");
  };

  /** Runs a handler with metrics, error mapping and logging. */
  const unary = <Req, Res>(method: 'Write' | 'Seal' | 'Status', fn: (call: ServerUnaryCall<Req, Res>) => Promise<Res>) => {
    return (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>): void => {
      const end = o.metrics.requestDuration.startTimer({ method });
      Promise.resolve()
        .then(() => {
          checkWellFormed(call.request);
          return fn(call);
        })
        .then(
        (res) => {
          o.metrics.requests.inc({ method, code: 'OK' });
          end();
          cb(null, res);
        },
        (err: unknown) => {
          const code = grpcStatusOf(err);
          o.metrics.requests.inc({ method, code: status[code] });
          end();
          const level = code === status.INTERNAL || code === status.DATA_LOSS ? 'error' : 'debug';
          o.logger[level]({ method, code: status[code], err, peer: call.getPeer() }, 'request failed');
          cb(toServiceError(err));
        },
      );
    };
  };

  return {
    Write: unary<WireWriteRequest, Record<string, unknown>>('Write', async (call) => {
      const agg = ready();
      const md = call.metadata;
      const tenant = tenantOf(md);
      const grant = await o.authorize({ method: 'Write', tenant, token: bearerToken(md), peer: call.getPeer() });
      refuseMarked(o, tenant);
      const shard = shardOf(md, o.config, agg.owned);
      const series = call.request.series ?? [];
      const samples = countSamples(series);
      if (series.length > o.config.maxSeriesPerRequest) {
        throw new GrpcError(status.RESOURCE_EXHAUSTED, `request holds ${series.length} series, more than maxSeriesPerRequest (${o.config.maxSeriesPerRequest}); split it`);
      }
      if (samples > o.config.maxSamplesPerRequest) {
        throw new GrpcError(status.RESOURCE_EXHAUSTED, `request holds ${samples} samples, more than maxSamplesPerRequest (${o.config.maxSamplesPerRequest}); split it`);
      }
      const tenantMax = grant?.limits?.maxSamplesPerWrite;
      if (tenantMax !== undefined && samples > tenantMax) {
        throw new GrpcError(status.RESOURCE_EXHAUSTED, `request holds ${samples} samples, more than the limit maxSamplesPerWrite (${tenantMax}) of tenant "${tenant}"; split it`);
      }
      const payload = samples * 16;
      // what the request costs while it is processed: its samples, and the objects each series
      // becomes (decoded message, runs, WAL batch entries), which one-sample series are made of
      const charge = payload + series.length * SERIES_CHARGE_BYTES;
      if (inflight > 0 && inflight + charge > o.config.inflightBytes) {
        throw new GrpcError(status.RESOURCE_EXHAUSTED, `inflightBytes (${o.config.inflightBytes}) is used up: ${inflight} bytes of requests are being processed; retry later`);
      }
      const disk = agg.store.diskUsage();
      if (disk.usedBytes >= o.config.walQuotaBytes) {
        throw new GrpcError(
          status.RESOURCE_EXHAUSTED,
          `walQuotaBytes (${o.config.walQuotaBytes}) is used up: the WALs take ${disk.usedBytes} bytes on disk until their windows are flushed; retry later`,
        );
      }
      // a tenant whose own bucket is down must not fill the quota for all: it is bounded before
      // its bucket fails (a stalled bucket fails nothing for minutes, and by then the quota is full)
      if (o.config.walOwnBucketTenantPercent < 100 && agg.flusher.ownBucket(tenant)) {
        const bound = Math.floor((o.config.walQuotaBytes * o.config.walOwnBucketTenantPercent) / 100);
        const held = agg.store.tenantBytes(tenant);
        if (held >= bound) {
          throw new GrpcError(
            status.RESOURCE_EXHAUSTED,
            `tenant "${tenant}" holds ${held} bytes of WAL on disk: a tenant with a bucket of its own may hold at most walOwnBucketTenantPercent (${o.config.walOwnBucketTenantPercent} %) of walQuotaBytes (${o.config.walQuotaBytes}): ${bound} bytes, so that an outage of its bucket leaves the others room; retry once its windows are flushed`,
          );
        }
      }
      if (disk.freeBytes < o.config.walMinFreeBytes) {
        // refusals are logged at debug: this state is a disk to fix, so it is said once a minute
        const t = performance.now();
        if (t - lastLowDiskWarnMs >= LOW_DISK_WARN_INTERVAL_MS) {
          lastLowDiskWarnMs = t;
          o.logger.warn({ freeBytes: disk.freeBytes, walMinFreeBytes: o.config.walMinFreeBytes }, 'the disk of walDir has less free space than walMinFreeBytes: every write is refused until there is room');
        }
        throw new GrpcError(
          status.RESOURCE_EXHAUSTED,
          `the disk of walDir has ${disk.freeBytes} bytes free, less than walMinFreeBytes (${o.config.walMinFreeBytes}); retry later`,
        );
      }
      inflight += charge;
      o.metrics.inflightBytes.set(inflight);
      try {
        const r = await agg.write(tenant, shard, series, () => refuseGoneCall(call));
        const label = o.tenantLabel(tenant);
        o.metrics.samplesIngested.inc({ tenant: label }, r.samples);
        o.metrics.bytesIngested.inc({ tenant: label }, payload);
        return { samples: String(r.samples), series: r.series };
      } finally {
        inflight -= charge;
        o.metrics.inflightBytes.set(inflight);
      }
    }),

    Seal: unary<WireSealRequest, Record<string, unknown>>('Seal', async (call) => {
      const agg = ready();
      const md = call.metadata;
      const tenant = tenantOf(md);
      await o.authorize({ method: 'Seal', tenant, token: bearerToken(md), peer: call.getPeer() });
      refuseMarked(o, tenant);
      const shard = shardOf(md, o.config, agg.owned);
      const raw = call.request.window_start_ms ?? '0';
      const windowStart = BigInt(raw);
      if (windowStart < 0n) throw new InvalidArgumentError('window_start_ms', `${raw} is negative`);
      const blocks = await agg.seal(tenant, shard, windowStart, !call.request.no_wait);
      return { blocks: blocks.map(wireBlock) };
    }),

    Status: unary<Record<string, never>, Record<string, unknown>>('Status', async (call) => {
      const grant = await o.authorize({ method: 'Status', tenant: null, token: bearerToken(call.metadata), peer: call.getPeer() });
      const scope = grant?.tenant ?? null;
      const agg = o.aggregator();
      const st = o.state();
      const accepted = agg?.ingestContext(0);
      const layout = {
        block_duration_ms: String(o.config.blockDurationMs),
        ...(accepted ? { min_timestamp_ms: String(accepted.minTimestampMs), max_timestamp_ms: String(accepted.maxTimestampMs) } : {}),
      };
      if (!agg) return { num_shards: o.config.numShards, owned_shards: [], windows: [], last_flushes: [], state: st, ...layout };
      const s = agg.status();
      const windows = scope === null ? s.windows : s.windows.filter((w) => w.tenant === scope);
      const lastFlushes = scope === null ? s.lastFlushes : s.lastFlushes.filter((f) => f.window.tenant === scope);
      return {
        num_shards: s.numShards,
        owned_shards: s.ownedShards,
        windows: windows.map((w) => ({
          tenant: w.tenant,
          shard: w.shard,
          window_start_ms: w.windowStart.toString(),
          generation: w.generation,
          state: w.state,
          wal_bytes: String(w.walBytes),
          samples: String(w.samples),
          last_write_ms: String(w.lastWriteMs),
        })),
        // scoped to a tenant: its own WAL bytes only, and no aggregator-wide counters
        wal_bytes: String(scope === null ? s.walBytes : windows.reduce((n, w) => n + w.walBytes, 0)),
        last_flushes: lastFlushes.map((f) => ({
          block: f.block
            ? wireBlock(f.block)
            : { tenant: f.window.tenant, shard: f.window.shard, window_start_ms: f.window.windowStart.toString() },
          finished_at_ms: String(f.finishedAtMs),
          duration_s: f.durationS,
          error: f.error ?? '',
        })),
        wal_syncs: scope === null ? String(s.walSyncs) : '0',
        wal_requests: scope === null ? String(s.walRequests) : '0',
        state: st,
        ...layout,
      };
    }),
  };
}
