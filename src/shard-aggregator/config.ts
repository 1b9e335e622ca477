/**
 * The aggregator's configuration: typed, validated once at start-up (zod, unknown keys rejected),
 * assembled from defaults < a JSON file < environment variables < command-line values.
 *
 * Environment variables are `STRATA_AGGREGATOR_<KEY>` with the key in CONSTANT_CASE
 * (`walDir` → `STRATA_AGGREGATOR_WAL_DIR`); lists are comma-separated, `bucket` and `tls` are JSON.
 * An unknown `STRATA_AGGREGATOR_*` variable is an error, like an unknown key in the file.
 * Every option is documented in docs/config.md (a test keeps the two in sync).
 */
import { z } from 'zod';
import { bucketOptionSchema, checkBucketSource, configLayers, constantCase, listenSchema, timerMsSchema, type OptionKind } from '../common/config.js';
import { serverTlsSchema } from '../common/tls.js';
import { DEFAULT_BLOCK_DURATION_MS, MAX_SHARDS } from '../format/key.js';
import { connectionKinds, connectionSchema } from '../common/connections.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const DAY_MS = 24 * 3600 * 1000;

const posInt = z.number().int().positive();
const nonNegInt = z.number().int().nonnegative();

/** The schema; docs/config.md describes every option. */
export const aggregatorConfigSchema = z.strictObject({
  /** gRPC listen address. */
  grpcListen: listenSchema.default('0.0.0.0:7401'),
  /** Prometheus /metrics listen address. */
  metricsListen: listenSchema.default('0.0.0.0:9401'),
  /** TLS (and client-certificate mTLS) of the gRPC server; plaintext without it. */
  tls: serverTlsSchema.optional(),
  /** Directory of the write-ahead logs. */
  walDir: z.string().min(1),
  /** Where blocks go when there is no tenants file (exclusive with tenantsFile). */
  bucket: bucketOptionSchema.optional(),
  /**
   * The tenants file (YAML or JSON): default bucket, per-tenant buckets, tokens, limits. Watched
   * and reloaded on change and on SIGHUP. Exclusive with bucket.
   */
  tenantsFile: z.string().min(1).optional(),
  /** Total number of shards (series id % numShards). */
  numShards: z.number().int().min(1).max(MAX_SHARDS),
  /** Shards this aggregator owns (explicit list); exclusive with ordinal/replicas. */
  shards: z.array(nonNegInt).min(1).optional(),
  /** StatefulSet ordinal and replica count: owns the shards s with s % replicas === ordinal. */
  ordinal: nonNegInt.optional(),
  replicas: posInt.optional(),
  blockDurationMs: posInt.default(DEFAULT_BLOCK_DURATION_MS),
  /** A window is flushed automatically once windowEnd + flushDelayMs has passed... */
  flushDelayMs: nonNegInt.default(10 * 60 * 1000),
  /** ...and it received no write for flushIdleMs. */
  flushIdleMs: nonNegInt.default(2 * 60 * 1000),
  /**
   * ...or, writes or not, its WAL generation has taken writes for this long since it was made
   * (or since the window ended, if later): a trickle of late writes cannot hold a window unflushed.
   */
  flushMaxDelayMs: nonNegInt.default(60 * 60 * 1000),
  flushCheckIntervalMs: timerMsSchema.default(5000),
  /** How often the tenant deletion marks are re-read from the default bucket (writes of marked tenants are refused). */
  deletionMarksPollMs: timerMsSchema.default(10_000),
  /** Flushes running at once. */
  flushConcurrency: posInt.default(2),
  /** Backoff of failed flushes: base, doubled per failure up to the max. */
  flushRetryBaseMs: timerMsSchema.default(1000),
  flushRetryMaxMs: timerMsSchema.default(60 * 1000),
  /** After upload: `full` reads the block back and checks every checksum; `footer` checks its footer. */
  verifyUpload: z.enum(['full', 'footer']).default('full'),
  /**
   * Every run a write encodes is decoded again and compared with the request, bit for bit, before
   * the write is stored (runs a flush or a day merge re-encodes always are): a codec fault fails
   * the write with INTERNAL instead of storing wrong values under a valid checksum.
   */
  verifyEncoding: z.boolean().default(true),
  /** Largest request accepted (gRPC receive limit). */
  maxRequestBytes: posInt.max(2 * GiB - 1).default(64 * MiB),
  maxSamplesPerRequest: posInt.default(4_000_000),
  maxSeriesPerRequest: posInt.default(100_000),
  /** Writes are refused while the WALs take this many bytes on disk (LevelDB's files, all of them). */
  walQuotaBytes: posInt.default(64 * GiB),
  /**
   * A tenant with a bucket of its own (which can fail alone) is refused writes once its WALs hold
   * this percentage of walQuotaBytes, so that an outage of its bucket leaves the other tenants the
   * rest (100: no such bound).
   */
  walOwnBucketTenantPercent: posInt.max(100).default(50),
  /** Writes are refused while walDir's file system has less than this free (0: no floor). */
  walMinFreeBytes: nonNegInt.default(256 * MiB),
  /** Request payload bytes being processed at once; more is refused. */
  inflightBytes: posInt.default(128 * MiB),
  /** Accepted timestamps: not older than now - maxSampleAgeMs, not newer than now + maxSampleFutureMs. */
  // at most 2^52 ms (about 142,000 years) each way: the accepted range then stays inside the
  // +-2^53 ms the write path checks exactly, so Status never advertises a bound Write refuses
  maxSampleAgeMs: posInt.max(2 ** 52).default(31 * DAY_MS),
  maxSampleFutureMs: nonNegInt.max(2 ** 52).default(3600 * 1000),
  /** fsync every WAL group (acknowledged writes survive power loss). */
  walSync: z.boolean().default(true),
  /** LevelDB write buffer of each WAL. */
  walWriteBufferBytes: posInt.min(64 * 1024).default(16 * MiB),
  /** WAL segments a flush holds open at once; a larger WAL is merged through spill files. */
  flushMaxOpenSegments: posInt.min(2).max(4096).default(64),
  /** Worker threads that validate and encode write requests (0: on the main thread; absent: one per core). */
  encodeThreads: nonNegInt.max(256).optional(),
  /** Worker threads that build and verify blocks (0: on the main thread; absent: flushConcurrency). */
  flushThreads: nonNegInt.max(256).optional(),
  /** WAL databases kept open at once (idle ones are closed beyond that). */
  maxOpenWals: posInt.default(8),
  /** Time allowed for in-flight requests at shutdown. */
  shutdownGraceMs: timerMsSchema.default(30 * 1000),
  ...connectionSchema,
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

/** Validated configuration. */
export type AggregatorConfig = z.output<typeof aggregatorConfigSchema>;
/** Keys of the configuration. */
export type AggregatorConfigKey = keyof z.input<typeof aggregatorConfigSchema>;

const KINDS: Record<AggregatorConfigKey, OptionKind> = {
  grpcListen: 'string',
  metricsListen: 'string',
  tls: 'json',
  walDir: 'string',
  bucket: 'json',
  tenantsFile: 'string',
  numShards: 'int',
  shards: 'intList',
  ordinal: 'int',
  replicas: 'int',
  blockDurationMs: 'int',
  flushDelayMs: 'int',
  flushIdleMs: 'int',
  flushMaxDelayMs: 'int',
  flushCheckIntervalMs: 'int',
  deletionMarksPollMs: 'int',
  flushConcurrency: 'int',
  flushRetryBaseMs: 'int',
  flushRetryMaxMs: 'int',
  verifyUpload: 'string',
  verifyEncoding: 'bool',
  maxRequestBytes: 'int',
  maxSamplesPerRequest: 'int',
  maxSeriesPerRequest: 'int',
  walQuotaBytes: 'int',
  walMinFreeBytes: 'int',
  walOwnBucketTenantPercent: 'int',
  inflightBytes: 'int',
  maxSampleAgeMs: 'int',
  maxSampleFutureMs: 'int',
  walSync: 'bool',
  walWriteBufferBytes: 'int',
  flushMaxOpenSegments: 'int',
  maxOpenWals: 'int',
  encodeThreads: 'int',
  flushThreads: 'int',
  shutdownGraceMs: 'int',
  ...connectionKinds,
  logLevel: 'string',
};

/** The environment variable prefix. */
export const ENV_PREFIX = 'STRATA_AGGREGATOR_';
/** Variable naming the config file (not a config key). */
export const ENV_CONFIG_FILE = 'STRATA_AGGREGATOR_CONFIG';

const layers = configLayers({ what: 'aggregator', kinds: KINDS, envPrefix: ENV_PREFIX, envConfigFile: ENV_CONFIG_FILE });
const configError = layers.error;
/** The layer readers of this config (file, environment, flags). */
export const aggregatorConfigLayers = layers;

export { constantCase };
/** Config values from `STRATA_AGGREGATOR_*` variables; unknown ones are an error. */
export const configFromEnv = layers.fromEnv;

/**
 * Validates merged config input (layers applied left to right, later wins per top-level key).
 * @throws StrataError CONFIG naming every offending option.
 */
export function parseAggregatorConfig(...layerValues: Record<string, unknown>[]): AggregatorConfig {
  const cfg = layers.validate(aggregatorConfigSchema, layerValues);
  checkBucketSource(cfg, configError);
  if (cfg.shards !== undefined && (cfg.ordinal !== undefined || cfg.replicas !== undefined)) {
    throw configError('shards: give either an explicit shard list or ordinal + replicas, not both');
  }
  if ((cfg.ordinal === undefined) !== (cfg.replicas === undefined)) throw configError('ordinal and replicas go together');
  if (cfg.ordinal !== undefined && cfg.replicas !== undefined && cfg.ordinal >= cfg.replicas) {
    throw configError(`ordinal: ${cfg.ordinal} is not below replicas (${cfg.replicas})`);
  }
  for (const s of cfg.shards ?? []) if (s >= cfg.numShards) throw configError(`shards: shard ${s} is not below numShards (${cfg.numShards})`);
  if (cfg.flushRetryMaxMs < cfg.flushRetryBaseMs) throw configError('flushRetryMaxMs: must not be below flushRetryBaseMs');
  return cfg;
}

/** The shards an aggregator with this config owns, ascending. */
export function ownedShards(cfg: Pick<AggregatorConfig, 'numShards' | 'shards' | 'ordinal' | 'replicas'>): number[] {
  if (cfg.shards) return [...new Set(cfg.shards)].sort((a, b) => a - b);
  const all = Array.from({ length: cfg.numShards }, (_, s) => s);
  if (cfg.ordinal === undefined || cfg.replicas === undefined) return all;
  return all.filter((s) => s % cfg.replicas! === cfg.ordinal);
}

/** The StatefulSet ordinal at the end of a pod host name (`strata-aggregator-3` → 3), or null. */
export function ordinalFromHostname(hostname: string): number | null {
  const m = /-(\d+)$/.exec(hostname.split('.')[0] ?? '');
  return m ? Number(m[1]) : null;
}
