/**
 * The live tenant registry both services share: authenticates calls, resolves each tenant's
 * bucket (one client per distinct bucket configuration, reused), exposes per-tenant limits, and
 * swaps in a new tenants file on reload without dropping in-flight requests.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { status } from '@grpc/grpc-js';
import { GrpcError } from '../common/status.js';
import type { Logger } from '../common/logger.js';
import { InvalidArgumentError } from '../errors.js';
import { TENANT_PATTERN } from '../format/key.js';
import { openBucket, type Bucket, type BucketConfig } from '../objstore/index.js';
import { loadTenantsFile, type TenantEntry, type TenantsConfig } from './config.js';

/** What a service knows about an authenticated call. */
export interface TenantContext {
  readonly tenant: string;
  readonly limits: TenantEntry['limits'];
}

/** Label value for per-tenant metrics: configured tenants by name, everything else pooled. */
export const OTHER_TENANT_LABEL = '_other';

interface BucketSlot {
  readonly bucket: Promise<Bucket>;
}

/** Key of a bucket configuration; includes a digest of the credentials so rotation opens a new client. */
function bucketKey(cfg: BucketConfig): string {
  if (cfg.type === 'filesystem') return JSON.stringify(['fs', cfg.path, cfg.prefix ?? '']);
  const { credentials, ...rest } = cfg;
  const secret = credentials ? createHash('sha256').update(JSON.stringify([credentials.accessKeyId, credentials.secretAccessKey, credentials.sessionToken ?? ''])).digest('hex') : '';
  return JSON.stringify(['s3', rest, secret]);
}

export interface TenantRegistryOptions {
  readonly logger?: Logger;
  /** Opens a bucket (default openBucket); injectable to add S3 hooks. */
  readonly openBucket?: (cfg: BucketConfig) => Promise<Bucket>;
  /** How long a bucket client no longer in the config stays open for in-flight requests (ms). */
  readonly retireAfterMs?: number;
}

/** See the module comment. */
export class TenantRegistry {
  private cfg: TenantsConfig;
  private readonly buckets = new Map<string, BucketSlot>();
  private readonly open: (cfg: BucketConfig) => Promise<Bucket>;
  private readonly logger: Logger | undefined;
  private readonly retireAfterMs: number;
  private watcher: FSWatcher | null = null;
  private readonly timers = new Set<NodeJS.Timeout>();
  private reloading: Promise<void> = Promise.resolve();
  /** Successful and refused reloads (for metrics and tests). */
  readonly reloads = { ok: 0, failed: 0 };

  constructor(cfg: TenantsConfig, opts: TenantRegistryOptions = {}) {
    this.cfg = cfg;
    this.open = opts.openBucket ?? ((c) => openBucket(c));
    this.logger = opts.logger;
    this.retireAfterMs = opts.retireAfterMs ?? 60_000;
  }

  /** The config in force. */
  get config(): TenantsConfig {
    return this.cfg;
  }

  /**
   * Checks a call's tenant header and bearer token. Order matters so that nothing reveals whether
   * a tenant exists: a malformed tenant id → INVALID_ARGUMENT; no token, or a token no tenant owns
   * → UNAUTHENTICATED; a token of another tenant (the named one existing or not) →
   * PERMISSION_DENIED. Tokens are compared as SHA-256 digests with timingSafeEqual, against every
   * configured digest.
   */
  authenticate(tenant: string | null, token: string | null): TenantContext {
    if (tenant === null || tenant === '') throw new InvalidArgumentError('x-strata-tenant', 'header is missing');
    if (!TENANT_PATTERN.test(tenant)) throw new InvalidArgumentError('x-strata-tenant', 'must be 1-64 characters of a-z, 0-9, "_" and "-", starting with a letter or digit');
    const cfg = this.cfg;
    const entry = cfg.tenants.get(tenant);
    if (!cfg.authRequired) return { tenant, limits: entry?.limits ?? {} };
    if (!token) throw new GrpcError(status.UNAUTHENTICATED, 'missing bearer token');
    const digest = createHash('sha256').update(token, 'utf8').digest();
    let owner: TenantEntry | null = null;
    for (const t of cfg.tenants.values()) {
      for (const d of t.tokenDigests) if (timingSafeEqual(d, digest)) owner = t;
    }
    if (!owner) throw new GrpcError(status.UNAUTHENTICATED, 'invalid bearer token');
    if (owner.id !== tenant) throw new GrpcError(status.PERMISSION_DENIED, `the token does not grant access to tenant "${tenant}"`);
    return { tenant, limits: owner.limits };
  }

  /** The bucket of `tenant` (its own, or the default one); clients are shared and reused. */
  bucketFor(tenant: string): Promise<Bucket> {
    const cfg = this.cfg.tenants.get(tenant)?.bucket ?? this.cfg.defaultBucket;
    const key = bucketKey(cfg);
    let slot = this.buckets.get(key);
    if (!slot) {
      const bucket = this.open(cfg);
      bucket.catch(() => this.buckets.delete(key)); // a failed open is retried next time
      slot = { bucket };
      this.buckets.set(key, slot);
    }
    return slot.bucket;
  }

  /** Metric label for `tenant` (bounded: configured tenants, else {@link OTHER_TENANT_LABEL}). */
  label(tenant: string): string {
    return this.cfg.tenants.has(tenant) ? tenant : OTHER_TENANT_LABEL;
  }

  /** Number of bucket clients open now. */
  get openBuckets(): number {
    return this.buckets.size;
  }

  /**
   * Replaces the config. Bucket clients whose configuration is gone are closed after
   * `retireAfterMs`, so requests holding them finish first.
   */
  swap(next: TenantsConfig): void {
    this.cfg = next;
    const live = new Set<string>([bucketKey(next.defaultBucket)]);
    for (const t of next.tenants.values()) if (t.bucket) live.add(bucketKey(t.bucket));
    for (const [key, slot] of this.buckets) {
      if (live.has(key)) continue;
      this.buckets.delete(key);
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        slot.bucket.then((b) => b.close()).catch((err: unknown) => this.logger?.warn({ err: (err as Error).message }, 'closing a retired bucket client failed'));
      }, this.retireAfterMs);
      timer.unref();
      this.timers.add(timer);
    }
  }

  /** Re-reads `path`; an invalid file is refused, logged, and the old config stays in force. */
  reload(path: string): Promise<void> {
    this.reloading = this.reloading.then(async () => {
      try {
        const next = await loadTenantsFile(path);
        this.swap(next);
        this.reloads.ok++;
        this.logger?.info({ file: path, tenants: next.tenants.size }, 'tenants config reloaded');
      } catch (err) {
        this.reloads.failed++;
        this.logger?.error({ file: path, err: (err as Error).message }, 'tenants config refused; keeping the previous one');
      }
    });
    return this.reloading;
  }

  /** Reloads `path` when it changes (debounced) and on SIGHUP. */
  watch(path: string, debounceMs = 200): void {
    let timer: NodeJS.Timeout | null = null;
    const schedule = () => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => {
        timer = null;
        void this.reload(path);
      }, debounceMs);
      timer.unref();
    };
    // watch the directory: editors and Kubernetes ConfigMaps replace the file rather than write it
    const dir = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) || '/' : '.';
    const base = path.slice(path.lastIndexOf('/') + 1);
    this.watcher = watch(dir, (_event, name) => {
      if (name === null || name === base || String(name).startsWith('..')) schedule();
    });
    this.watcher.unref();
    process.on('SIGHUP', schedule);
    this.stopWatching = () => {
      process.off('SIGHUP', schedule);
      if (timer) clearTimeout(timer);
      this.watcher?.close();
      this.watcher = null;
    };
  }

  private stopWatching: () => void = () => undefined;

  /** Stops watching and closes every bucket client. */
  async close(): Promise<void> {
    this.stopWatching();
    await this.reloading;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    const slots = [...this.buckets.values()];
    this.buckets.clear();
    for (const s of slots) {
      const b = await s.bucket.catch(() => null);
      await b?.close();
    }
  }
}
