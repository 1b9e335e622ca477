/**
 * Types of the RGW harness (rgw.mjs) for TypeScript callers (scripts/cluster.ts). The harness
 * itself stays plain JavaScript so that `scripts/with-rgw.mjs` runs without a loader.
 */

/** An S3 user the harness creates, with fixed keys. */
export interface RgwUser {
  readonly uid: string;
  readonly accessKey: string;
  readonly secretKey: string;
}

/** The two test users (user 1 owns DEFAULT_BUCKET). */
export const USERS: readonly [RgwUser, RgwUser];
/** Bucket created for user 1 at start-up. */
export const DEFAULT_BUCKET: string;
export const REGION: string;

/** A running harness cluster. */
export interface RunningRgw {
  /** Cluster directory (config, logs). */
  readonly dir: string;
  /** STRATA_TEST_S3_* variables. */
  readonly env: Readonly<Record<string, string>>;
  /** `http://127.0.0.1:PORT` (path-style addressing). */
  readonly endpoint: string;
  readonly pids: Readonly<Record<string, number | undefined>>;
  /** Stops the daemons and removes the directory (kept with `keepDir` or STRATA_RGW_KEEP_DIR=1). */
  stop(opts?: { keepDir?: boolean }): Promise<void>;
}

/**
 * Bootstraps the cluster and starts radosgw; resolves once S3 answers and the users and the
 * default bucket exist. Aborting `signal` stops what was started and rejects.
 */
export function startRgw(opts?: {
  dir?: string;
  detached?: boolean;
  signal?: AbortSignal;
  log?: (msg: string) => void;
}): Promise<RunningRgw>;

/** Stops the daemons of a directory made by `rgw.mjs start` and removes it. */
export function stopRgwDir(dir: string): Promise<void>;
