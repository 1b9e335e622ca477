/**
 * The gateway's configuration: typed, validated once at start-up (zod, unknown keys rejected),
 * assembled from defaults < a JSON file < environment variables < command-line values.
 *
 * Environment variables are `STRATA_GATEWAY_<KEY>` with the key in CONSTANT_CASE
 * (`cacheMaxBytes` → `STRATA_GATEWAY_CACHE_MAX_BYTES`); `bucket` and `tls` are JSON. An unknown
 * `STRATA_GATEWAY_*` variable is an error, like an unknown key in the file.
 * Every option is documented in docs/config.md (a test keeps the two in sync).
 */
import { z } from 'zod';
import { bucketOptionSchema, checkBucketSource, configLayers, constantCase, listenSchema, timerMsSchema, type OptionKind } from '../common/config.js';
import { serverTlsSchema } from '../common/tls.js';
import { DEFAULT_BLOCK_DURATION_MS } from '../format/key.js';
import { DEFAULT_DAY_BLOCKS_AFTER_MS } from '../format/day-key.js';
import { connectionKinds, connectionSchema } from '../common/connections.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

const posInt = z.number().int().positive();
const nonNegInt = z.number().int().nonnegative();

/** The schema; every option is described in docs/config.md and the gateway README. */
export const gatewayConfigSchema = z.strictObject({
  /** gRPC listen address. */
  grpcListen: listenSchema.default('0.0.0.0:7402'),
  /** Prometheus /metrics listen address. */
  metricsListen: listenSchema.default('0.0.0.0:9402'),
  /** TLS (and client-certificate mTLS) of the gRPC server; plaintext without it. */
  tls: serverTlsSchema.optional(),
  /** Where blocks are read from when there is no tenants file (exclusive with tenantsFile). */
  bucket: bucketOptionSchema.optional(),
  /**
   * The tenants file (YAML or JSON): default bucket, per-tenant buckets, tokens, limits. Watched
   * and reloaded on change and on SIGHUP. Exclusive with bucket.
   */
  tenantsFile: z.string().min(1).optional(),
  /** Window length of the blocks (window starts must be multiples of it). */
  blockDurationMs: posInt.default(DEFAULT_BLOCK_DURATION_MS),
  /** `lmdb` (on disk, survives restarts) or `memory`. */
  cacheType: z.enum(['lmdb', 'memory']).default('lmdb'),
  /** Directory of the LMDB cache (required for cacheType lmdb). */
  cacheDir: z.string().min(1).optional(),
  /** Byte budget of the byte cache (LRU by block beyond it). */
  cacheMaxBytes: posInt.default(10 * GiB),
  /** Memory for opened blocks (footer + index of index) and for decoded index pages. */
  openBlocksMaxBytes: posInt.default(64 * MiB),
  pagesMaxBytes: posInt.default(256 * MiB),
  /** Memory for hot run and page bytes already checked, in front of the byte cache (0: none). */
  hotRangesMaxBytes: nonNegInt.default(64 * MiB),
  /** Bytes of cache writes that may wait in memory for the LMDB commit; ranges beyond are not cached. */
  cachePendingMaxBytes: posInt.default(64 * MiB),
  cacheMinFreeBytes: z.number().int().min(0).default(64 * MiB),
  /** Size of the first read of a block (footer + index of index, often index pages too). */
  suffixBytes: posInt.min(4 * KiB).default(64 * KiB),
  /** ...or up to this much when the tenant's earlier blocks had larger indexes (suffixBytes or less: never more). */
  suffixMaxBytes: posInt.default(1 * MiB),
  /** Ranges closer than this share one GET... */
  coalesceGapBytes: nonNegInt.default(512 * KiB),
  /** ...as long as the GET stays under this. */
  maxGetBytes: posInt.default(16 * MiB),
  /** A block of an open window is re-checked in the bucket (a suffix read) when its last check is older than this... */
  stalenessMs: posInt.default(60_000),
  /** ...and one of a closed window (ended more than uploadGraceMs ago) when older than this. */
  closedStalenessMs: posInt.default(3600 * 1000),
  /**
   * While the bucket cannot be reached (UNAVAILABLE), a cached block whose last check is younger
   * than this keeps being served as it was last read; 0: never.
   */
  maxStaleMs: nonNegInt.default(3600 * 1000),
  /**
   * A re-check of a cached block that the bucket does not answer within this serves the block as
   * last read (within maxStaleMs) while the re-check goes on: a bucket that hangs fails only after
   * its client's retries, minutes later.
   */
  recheckTimeoutMs: timerMsSchema.default(2000),
  /** How long "no block" is remembered for a window that may still be uploading... */
  negativeTtlMs: nonNegInt.default(5_000),
  /** ...which is one that ended less than this ago (older windows use closedStalenessMs). */
  uploadGraceMs: nonNegInt.default(6 * 3600 * 1000),
  /**
   * A read of a day that ended this long ago looks for the day block first (and answers from the
   * 4-hour blocks when there is none); keep it at most the lifecycle's dayMergeAfterMs +
   * daySourceGraceMs - closedStalenessMs.
   */
  dayBlocksAfterMs: nonNegInt.default(DEFAULT_DAY_BLOCKS_AFTER_MS),
  /**
   * How long a bucket's day-block index (written by the lifecycle role each pass) is used before
   * it is loaded again: a closed day it does not name is read from its 4-hour blocks without
   * looking for a day block first. Keep it well under the lifecycle's daySourceGraceMs.
   */
  dayIndexRefreshMs: posInt.default(30 * 60 * 1000),
  /** How often the tenant deletion marks are re-read (a marked tenant's reads answer no data). */
  deletionMarksPollMs: timerMsSchema.default(10_000),
  /** Series ids in one request. */
  maxSeriesPerRequest: posInt.default(10_000),
  /** Samples (of the runs touched) in one response. */
  maxSamplesPerResponse: posInt.default(20_000_000),
  /** Payload bytes (columns or runs) of one response. */
  maxBytesPerResponse: posInt.default(256 * MiB),
  /** Largest response message (clients accept 4 MiB by default). */
  maxMessageBytes: posInt.min(4 * KiB).max(64 * MiB).default(1 * MiB),
  /** Read calls served at once, gateway-wide; more get RESOURCE_EXHAUSTED. */
  maxConcurrentReads: posInt.default(256),
  /** Read calls of one tenant served at once (its fair share); more get RESOURCE_EXHAUSTED. */
  maxConcurrentReadsPerTenant: posInt.default(64),
  /**
   * Bytes of answer messages made but not yet taken by their clients, gateway-wide (RSS grew by
   * 1.15 to 1.3 times this when clients that do not read used it up).
   */
  maxBytesInFlight: posInt.default(128 * MiB),
  /** The same, of one tenant (its fair share). */
  maxBytesInFlightPerTenant: posInt.default(64 * MiB),
  /** Server-side time limit of a call (the client's deadline applies when shorter). */
  requestTimeoutMs: timerMsSchema.default(30_000),
  /** Time allowed for in-flight calls at shutdown. */
  shutdownGraceMs: timerMsSchema.default(10_000),
  ...connectionSchema,
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

/** Validated configuration. */
export type GatewayConfig = z.output<typeof gatewayConfigSchema>;
/** Keys of the configuration. */
export type GatewayConfigKey = keyof z.input<typeof gatewayConfigSchema>;

const KINDS: Record<GatewayConfigKey, OptionKind> = {
  grpcListen: 'string',
  metricsListen: 'string',
  tls: 'json',
  bucket: 'json',
  tenantsFile: 'string',
  blockDurationMs: 'int',
  cacheType: 'string',
  cacheDir: 'string',
  cacheMaxBytes: 'int',
  openBlocksMaxBytes: 'int',
  pagesMaxBytes: 'int',
  hotRangesMaxBytes: 'int',
  cachePendingMaxBytes: 'int',
  cacheMinFreeBytes: 'int',
  suffixBytes: 'int',
  suffixMaxBytes: 'int',
  coalesceGapBytes: 'int',
  maxGetBytes: 'int',
  stalenessMs: 'int',
  closedStalenessMs: 'int',
  maxStaleMs: 'int',
  recheckTimeoutMs: 'int',
  negativeTtlMs: 'int',
  uploadGraceMs: 'int',
  dayBlocksAfterMs: 'int',
  dayIndexRefreshMs: 'int',
  deletionMarksPollMs: 'int',
  maxSeriesPerRequest: 'int',
  maxSamplesPerResponse: 'int',
  maxBytesPerResponse: 'int',
  maxMessageBytes: 'int',
  requestTimeoutMs: 'int',
  maxConcurrentReads: 'int',
  maxConcurrentReadsPerTenant: 'int',
  maxBytesInFlight: 'int',
  maxBytesInFlightPerTenant: 'int',
  shutdownGraceMs: 'int',
  ...connectionKinds,
  logLevel: 'string',
};

/** The environment variable prefix. */
export const ENV_PREFIX = 'STRATA_GATEWAY_';
/** Variable naming the config file (not a config key). */
export const ENV_CONFIG_FILE = 'STRATA_GATEWAY_CONFIG';

const layers = configLayers({ what: 'gateway', kinds: KINDS, envPrefix: ENV_PREFIX, envConfigFile: ENV_CONFIG_FILE });
const configError = layers.error;
/** The layer readers of this config (file, environment, flags). */
export const gatewayConfigLayers = layers;

export { constantCase };
/** Config values from `STRATA_GATEWAY_*` variables; unknown ones are an error. */
export const configFromEnv = layers.fromEnv;

/**
 * Validates merged config input (layers applied left to right, later wins per top-level key).
 * @throws StrataError CONFIG naming every offending option.
 */
export function parseGatewayConfig(...layerValues: Record<string, unknown>[]): GatewayConfig {
  const cfg = layers.validate(gatewayConfigSchema, layerValues);
  checkBucketSource(cfg, configError);
  if (cfg.cacheType === 'lmdb' && cfg.cacheDir === undefined) throw configError('cacheDir: required when cacheType is lmdb');
  if (cfg.maxGetBytes < cfg.coalesceGapBytes) throw configError('maxGetBytes: must not be below coalesceGapBytes');
  return cfg;
}
