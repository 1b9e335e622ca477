/**
 * The lifecycle role's configuration (`strata lifecycle`): typed, validated once at start-up (zod,
 * unknown keys rejected), assembled from defaults < a JSON file < `STRATA_LIFECYCLE_*` environment
 * variables < command-line values, like the other services. Every option is documented in
 * docs/config.md (a test keeps the two in sync).
 */
import { z } from 'zod';
import { bucketOptionSchema, checkBucketSource, configLayers, listenSchema, timerMsSchema, type OptionKind } from '../common/config.js';
import { DEFAULT_BLOCK_DURATION_MS } from '../format/key.js';
import { DEFAULT_DAY_BLOCKS_AFTER_MS } from '../format/day-key.js';

const posInt = z.number().int().positive();

/** The schema; every option is described in docs/config.md. */
/** Default daySourceGraceMs: how long a 4-hour block held by a published day block is kept. */
export const DEFAULT_DAY_SOURCE_GRACE_MS = 3 * 3600 * 1000;

export const lifecycleConfigSchema = z.strictObject({
  /** Prometheus /metrics (and /healthz) listen address. */
  metricsListen: listenSchema.default('0.0.0.0:9403'),
  /** The bucket when there is no tenants file (exclusive with tenantsFile). */
  bucket: bucketOptionSchema.optional(),
  /** The tenants file: default bucket, tenant buckets, retention. Re-read before each pass. */
  tenantsFile: z.string().min(1).optional(),
  /** Window length of the blocks. */
  blockDurationMs: posInt.default(DEFAULT_BLOCK_DURATION_MS),
  /** Time from the start of one pass to the start of the next (kept in the bucket across restarts). */
  intervalMs: timerMsSchema.default(3600 * 1000),
  /** A replica holds the lease this long after its last renewal (renewed every third of it). */
  leaseDurationMs: timerMsSchema.min(3000).default(5 * 60 * 1000),
  /** A block is deleted this long after its window passed retention (gateways stop serving it at retention). */
  retentionGraceMs: z.number().int().nonnegative().default(3600 * 1000),
  /** Incomplete writes (multipart uploads, temp files) that started this long ago are discarded. */
  incompleteUploadMaxAgeMs: posInt.default(24 * 3600 * 1000),
  /** Deletions in flight at once. */
  deleteConcurrency: posInt.max(256).default(8),
  /** Merge the 4-hour blocks of each closed (tenant, shard, day) into a day block (src/lifecycle/day.ts). */
  dayBlocks: z.boolean().default(true),
  /** A day is merged once it ended this long ago (after the late-data window; gateways' dayBlocksAfterMs must not exceed it by more than daySourceGraceMs - closedStalenessMs). */
  dayMergeAfterMs: z.number().int().nonnegative().default(DEFAULT_DAY_BLOCKS_AFTER_MS),
  /** A 4-hour block held by a day block is deleted this long after that day block was published (longer than any gateway's staleness bound). */
  daySourceGraceMs: z.number().int().nonnegative().default(DEFAULT_DAY_SOURCE_GRACE_MS),
  /** Local directory for the day block being merged (a file as large as the day block); default the system's temp dir. */
  dayWorkDir: z.string().min(1).optional(),
  /** This replica's name in the lease; default `<hostname>-<pid>`. */
  instanceId: z.string().min(1).max(200).optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

/** Validated configuration. */
export type LifecycleConfig = z.output<typeof lifecycleConfigSchema>;
type LifecycleConfigKey = keyof z.input<typeof lifecycleConfigSchema>;

const KINDS: Record<LifecycleConfigKey, OptionKind> = {
  metricsListen: 'string',
  bucket: 'json',
  tenantsFile: 'string',
  blockDurationMs: 'int',
  intervalMs: 'int',
  leaseDurationMs: 'int',
  retentionGraceMs: 'int',
  incompleteUploadMaxAgeMs: 'int',
  deleteConcurrency: 'int',
  dayBlocks: 'bool',
  dayMergeAfterMs: 'int',
  daySourceGraceMs: 'int',
  dayWorkDir: 'string',
  instanceId: 'string',
  logLevel: 'string',
};

/** The environment variable prefix. */
export const ENV_PREFIX = 'STRATA_LIFECYCLE_';
/** Variable naming the config file (not a config key). */
export const ENV_CONFIG_FILE = 'STRATA_LIFECYCLE_CONFIG';

const layers = configLayers({ what: 'lifecycle', kinds: KINDS, envPrefix: ENV_PREFIX, envConfigFile: ENV_CONFIG_FILE });
/** The layer readers of this config (file, environment, flags). */
export const lifecycleConfigLayers = layers;

/**
 * Validates merged config input (layers applied left to right, later wins per top-level key).
 * @throws StrataError CONFIG naming every offending option.
 */
export function parseLifecycleConfig(...layerValues: Record<string, unknown>[]): LifecycleConfig {
  const cfg = layers.validate(lifecycleConfigSchema, layerValues);
  checkBucketSource(cfg, layers.error);
  return cfg;
}
