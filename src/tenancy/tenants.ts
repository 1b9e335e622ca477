/**
 * The live tenant registry both services share: authenticates calls, resolves each tenant's
 * bucket (one client per distinct bucket configuration, reused), exposes per-tenant limits, and
 * swaps in a new tenants file on reload without dropping in-flight requests.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { TENANT_HEADER } from '../api/headers.js';
import type { Logger } from '../common/logger.js';
import { ErrorCode, InvalidArgumentError, StrataError } from '../errors.js';
import { TENANT_PATTERN } from '../format/key.js';
import { describeBucket, openBucket, type Bucket, type BucketConfig } from '../objstore/index.js';
import { loadTenantsFile, type TenantEntry, type TenantsConfig } from './config.js';
import { deleteBucket, ensureBucket, listBucketNames, parsePartitionName, partitionConfig, partitionOf, PartitionBucket, windowNeeded, type Partition } from './partitions.js';

/** What a service knows about an authenticated call. */
export interface TenantContext {
  readonly tenant: string;
  readonly limits: TenantEntry['limits'];
}

/** Label value for per-tenant metrics: configured tenants by name, everything else pooled. */
export const OTHER_TENANT_LABEL = '_other';

interface BucketSlot {
  readonly bucket: Promise<Bucket>;
  /** Leases not yet released (see {@link TenantRegistry.acquireBucket}). */
  leases: number;
  /** Set once the slot left the config and its retire delay passed: close when leases reach 0. */
  closeDue: boolean;
  /** A partition's slot: the key of its tenant's template config (live while that is), and whether the bucket is known to exist. */
  readonly templateKey?: string;
  ensured?: Promise<void> | null;
}

/** A window's start (ms since the epoch), as the block keys and footers have it. */
export type WindowStart = number | bigint;

/** A bucket lent for one long operation (a flush); call `release()` exactly once when done. */
export interface BucketLease {
  readonly bucket: Bucket;
  release(): void;
}

/** Key of a bucket configuration; includes a digest of the credentials so rotation opens a new client. */
function bucketKey(cfg: BucketConfig): string {
  if (cfg.type === 'filesystem') return JSON.stringify(['fs', cfg.path, cfg.prefix ?? '']);
  const { credentials, ...rest } = cfg;
  const secret = credentials ? createHash('sha256').update(JSON.stringify([credentials.accessKeyId, credentials.secretAccessKey, credentials.sessionToken ?? ''])).digest('hex') : '';
  return JSON.stringify(['s3', rest, secret]);
}

/** Where a bucket configuration points (see {@link TenantRegistry.bucketLocation}). */
export function bucketLocationOf(cfg: BucketConfig): string {
  if (cfg.type === 'filesystem') return JSON.stringify(['fs', resolve(cfg.path), cfg.prefix ?? '']);
  return JSON.stringify(['s3', cfg.endpoint ?? '', cfg.region, cfg.bucket, cfg.prefix ?? '', cfg.forcePathStyle ?? false]);
}

/**
 * The tenant owning `token`: its SHA-256 is compared with timingSafeEqual against every configured
 * digest (no early exit). No token, or one no tenant owns → UNAUTHENTICATED.
 */
function ownerOf(cfg: TenantsConfig, token: string | null): TenantEntry {
  if (!token) throw new StrataError(ErrorCode.UNAUTHENTICATED, 'missing bearer token');
  const digest = createHash('sha256').update(token, 'utf8').digest();
  let owner: TenantEntry | null = null;
  for (const t of cfg.tenants.values()) {
    for (const d of t.tokenDigests) if (timingSafeEqual(d, digest)) owner = t;
  }
  if (!owner) throw new StrataError(ErrorCode.UNAUTHENTICATED, 'invalid bearer token');
  return owner;
}

export interface TenantRegistryOptions {
  readonly logger?: Logger;
  /** Opens a bucket (default openBucket); injectable to add S3 hooks. */
  readonly openBucket?: (cfg: BucketConfig) => Promise<Bucket>;
  /** How long a bucket client no longer in the config stays open for in-flight requests (ms). */
  readonly retireAfterMs?: number;
  /** Called after every reload attempt (for metrics). */
  readonly onReload?: (ok: boolean) => void;
  /** Runs `fn` after `ms` and returns its cancel function (default: an unref'd setTimeout; tests step it by hand). */
  readonly schedule?: (fn: () => void, ms: number) => () => void;
  /**
   * At most this many clients of time-partitioned buckets are kept open (default
   * {@link MAX_PARTITION_CLIENTS}); beyond it the least recently used one is retired like a client
   * that left the config (closed `retireAfterMs` later, once its leases are released).
   */
  readonly maxPartitionClients?: number;
}

/**
 * The default bound on open clients of time-partitioned buckets, per process. A tenant with one
 * bucket per week would otherwise keep a client (and its sockets) for every week ever read or
 * written; reads and writes mostly touch the newest few partitions, so a least recently used one
 * is retired and reopened on its next use.
 */
export const MAX_PARTITION_CLIENTS = 32;

/**
 * For the lifecycle role and the bucket tool, which visit every partition that exists in one pass
 * and hold its client until the pass ends (distinctBuckets): no least-recently-used retirement,
 * which would close a client the pass still uses. What bounds them is the partitions that exist,
 * which retention keeps bounded.
 */
export const ALL_PARTITION_CLIENTS = Number.MAX_SAFE_INTEGER;

/** The default of {@link TenantRegistryOptions.schedule}. */
function scheduleTimeout(fn: () => void, ms: number): () => void {
  const timer = setTimeout(fn, ms);
  timer.unref();
  return () => clearTimeout(timer);
}

/** See the module comment. */
export class TenantRegistry {
  private cfg: TenantsConfig;
  private readonly buckets = new Map<string, BucketSlot>();
  /** The open partition slots by key, least recently used first (a subset of {@link buckets}). */
  private readonly partitionSlots = new Map<string, BucketSlot>();
  private readonly maxPartitionClients: number;
  /** Slots no longer in the config that are not closed yet. */
  private readonly retired = new Set<BucketSlot>();
  private readonly swapListeners = new Set<(cfg: TenantsConfig) => void>();
  private readonly open: (cfg: BucketConfig) => Promise<Bucket>;
  private readonly logger: Logger | undefined;
  private readonly retireAfterMs: number;
  private readonly onReload: ((ok: boolean) => void) | undefined;
  /** Cancel functions of the pending retirements. */
  private readonly timers = new Set<() => void>();
  private readonly schedule: (fn: () => void, ms: number) => () => void;
  private reloading: Promise<void> = Promise.resolve();
  /** Successful and refused reloads (for metrics and tests). */
  readonly reloads = { ok: 0, failed: 0 };

  constructor(cfg: TenantsConfig, opts: TenantRegistryOptions = {}) {
    this.cfg = cfg;
    this.open = opts.openBucket ?? ((c) => openBucket(c));
    this.logger = opts.logger;
    this.retireAfterMs = opts.retireAfterMs ?? 60_000;
    this.schedule = opts.schedule ?? scheduleTimeout;
    this.onReload = opts.onReload;
    this.maxPartitionClients = opts.maxPartitionClients ?? MAX_PARTITION_CLIENTS;
    if (!Number.isSafeInteger(this.maxPartitionClients) || this.maxPartitionClients < 1) {
      throw new RangeError(`maxPartitionClients must be a positive integer, got ${opts.maxPartitionClients}`);
    }
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
    if (tenant === null || tenant === '') throw new InvalidArgumentError(TENANT_HEADER, 'header is missing');
    if (!TENANT_PATTERN.test(tenant)) throw new InvalidArgumentError(TENANT_HEADER, 'must be 1-64 characters of a-z, 0-9, "_" and "-", starting with a letter or digit');
    const cfg = this.cfg;
    const entry = cfg.tenants.get(tenant);
    if (!cfg.authRequired) return { tenant, limits: entry?.limits ?? {} };
    const owner = ownerOf(cfg, token);
    if (owner.id !== tenant) throw new StrataError(ErrorCode.PERMISSION_DENIED, `the token does not grant access to tenant "${tenant}"`);
    return { tenant, limits: owner.limits };
  }

  /**
   * For calls that name no tenant (the aggregator's Status): the tenant owning `token`, or null
   * when auth is not required (the caller may see every tenant). No token, or a token no tenant
   * owns → UNAUTHENTICATED. Same constant-time comparison as {@link authenticate}.
   */
  authenticateToken(token: string | null): TenantContext | null {
    const cfg = this.cfg;
    if (!cfg.authRequired) return null;
    const owner = ownerOf(cfg, token);
    return { tenant: owner.id, limits: owner.limits };
  }

  /**
   * The bucket configuration of `tenant`: its own, or the default one. When auth is required, a
   * tenant that is not in the config has no bucket (StrataError CONFIG): data of a tenant removed
   * from the file, e.g. one with its own bucket, must not silently go to the default bucket.
   */
  private bucketConfigOf(tenant: string, windowStart?: WindowStart): BucketConfig {
    const entry = this.cfg.tenants.get(tenant);
    if (!entry && this.cfg.authRequired) {
      throw new StrataError(ErrorCode.CONFIG, `tenant "${tenant}" is not in the tenants config, so it has no bucket; add it back (its own bucket if it had one) and reload`);
    }
    if (entry?.partitions && entry.bucket?.type === 's3') {
      if (windowStart === undefined) throw windowNeeded(tenant);
      return partitionConfig(entry.bucket, partitionOf(entry.partitions, windowStart).name);
    }
    return entry?.bucket ?? this.cfg.defaultBucket;
  }

  /**
   * The partitions of a time-partitioned tenant that exist now (S3 ListBuckets with the tenant's
   * credentials, names its template renders), oldest first. Empty for other tenants.
   */
  async partitionsOf(tenant: string): Promise<Partition[]> {
    const entry = this.cfg.tenants.get(tenant);
    if (!entry?.partitions || entry.bucket?.type !== 's3') return [];
    const t = entry.partitions;
    const out: Partition[] = [];
    for (const name of await listBucketNames(entry.bucket)) {
      const p = parsePartitionName(t, name);
      if (p) out.push(p);
    }
    return out.sort((a, b) => a.startMs - b.startMs);
  }

  /** The bucket of partition `name` of `tenant` (shared and reused like {@link bucketFor}'s). */
  partitionBucket(tenant: string, name: string): Promise<Bucket> {
    const entry = this.cfg.tenants.get(tenant);
    if (!entry?.partitions || entry.bucket?.type !== 's3') return Promise.reject(new StrataError(ErrorCode.CONFIG, `tenant "${tenant}" has no time-partitioned buckets`));
    return this.slotOf(partitionConfig(entry.bucket, name), bucketKey(entry.bucket)).bucket;
  }

  /** Deletes the (empty) bucket of partition `name` of `tenant`; false when it did not exist. */
  async dropPartition(tenant: string, name: string): Promise<boolean> {
    const entry = this.cfg.tenants.get(tenant);
    if (!entry?.partitions || entry.bucket?.type !== 's3' || !parsePartitionName(entry.partitions, name)) {
      throw new StrataError(ErrorCode.CONFIG, `"${name}" is not a partition of tenant "${tenant}"`);
    }
    return deleteBucket(partitionConfig(entry.bucket, name));
  }

  /**
   * Where `tenant`'s blocks are, as a stable string: the bucket's type, endpoint, region, name,
   * path and prefix, never its credentials (rotating them keeps the location). Two tenants, or
   * one tenant before and after a reload, have the same location only when their blocks are in
   * the same place. Same errors as {@link bucketFor}.
   */
  bucketLocation(tenant: string, windowStart?: WindowStart): string {
    return bucketLocationOf(this.bucketConfigOf(tenant, windowStart));
  }

  private slotFor(tenant: string, windowStart?: WindowStart): BucketSlot {
    const cfg = this.bucketConfigOf(tenant, windowStart);
    const entry = this.cfg.tenants.get(tenant);
    return this.slotOf(cfg, entry?.partitions && entry.bucket ? bucketKey(entry.bucket) : undefined);
  }

  private slotOf(cfg: BucketConfig, templateKey?: string): BucketSlot {
    const key = bucketKey(cfg);
    let slot = this.buckets.get(key);
    if (slot && slot.templateKey !== undefined) {
      // most recently used partition last
      this.partitionSlots.delete(key);
      this.partitionSlots.set(key, slot);
    }
    if (!slot) {
      // a partition that does not exist reads as empty (src/tenancy/partitions.ts)
      const bucket =
        templateKey === undefined
          ? this.open(cfg)
          : this.open(cfg).then(
              (b) =>
                new PartitionBucket(b, () => {
                  created.ensured = null; // dropped since it was created: the next write creates it again
                }),
            );
      const created: BucketSlot = { bucket, leases: 0, closeDue: false, ...(templateKey !== undefined ? { templateKey, ensured: null } : {}) };
      bucket.catch(() => {
        // a failed open is retried next time
        if (this.buckets.get(key) === created) this.buckets.delete(key);
        if (this.partitionSlots.get(key) === created) this.partitionSlots.delete(key);
      });
      slot = created;
      this.buckets.set(key, slot);
      if (templateKey !== undefined) {
        this.partitionSlots.set(key, slot);
        for (const [oldest, old] of this.partitionSlots) {
          if (this.partitionSlots.size <= this.maxPartitionClients) break;
          this.retire(oldest, old);
        }
      }
    }
    return slot;
  }

  /**
   * Takes a slot out of use: new calls open a new client, and this one is closed `retireAfterMs`
   * later, once its last lease is released (calls holding it finish first).
   */
  private retire(key: string, slot: BucketSlot): void {
    this.retirements++;
    if (this.buckets.get(key) === slot) this.buckets.delete(key);
    if (this.partitionSlots.get(key) === slot) this.partitionSlots.delete(key);
    this.retired.add(slot);
    const cancel = this.schedule(() => {
      this.timers.delete(cancel);
      slot.closeDue = true;
      if (slot.leases === 0) this.closeSlot(slot);
    }, this.retireAfterMs);
    this.timers.add(cancel);
  }

  /**
   * The bucket of `tenant` (its own, or the default one); clients are shared and reused. For short
   * calls: a client that leaves the config is closed `retireAfterMs` later. Long operations use
   * {@link acquireBucket}. Rejects with StrataError CONFIG for a tenant not in the config while
   * auth is required.
   */
  bucketFor(tenant: string, windowStart?: WindowStart): Promise<Bucket> {
    try {
      return this.slotFor(tenant, windowStart).bucket;
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * The default bucket (where tenant deletion marks and the lifecycle role's lease live), shared
   * and reused like {@link bucketFor}'s.
   */
  defaultBucket(): Promise<Bucket> {
    return this.slotOf(this.cfg.defaultBucket).bucket;
  }

  /**
   * Like {@link bucketFor}, but the client stays open until the lease is released, even if the
   * config changes meanwhile (a flush may take longer than `retireAfterMs`). Resolved at call
   * time: a reload affects the next acquisition, never one in progress.
   */
  async acquireBucket(tenant: string, windowStart?: WindowStart): Promise<BucketLease> {
    const cfg = this.bucketConfigOf(tenant, windowStart);
    const slot = this.slotFor(tenant, windowStart);
    slot.leases++;
    let bucket: Bucket;
    try {
      bucket = await slot.bucket;
      // a writer creates the partition of the window when it is missing (once per client)
      if (slot.templateKey !== undefined && cfg.type === 's3') {
        slot.ensured ??= ensureBucket(cfg).catch((err: unknown) => {
          slot.ensured = null;
          throw err;
        });
        await slot.ensured;
      }
    } catch (err) {
      this.releaseSlot(slot);
      throw err;
    }
    let released = false;
    return {
      bucket,
      release: () => {
        if (released) return;
        released = true;
        this.releaseSlot(slot);
      },
    };
  }

  private releaseSlot(slot: BucketSlot): void {
    slot.leases--;
    if (slot.leases === 0 && slot.closeDue) this.closeSlot(slot);
  }

  private closeSlot(slot: BucketSlot): void {
    this.retired.delete(slot);
    slot.bucket
      .then(
        (b) => b.close(),
        () => undefined, // never opened
      )
      .catch((err: unknown) => this.logger?.warn({ err: (err as Error).message }, 'closing a retired bucket client failed'));
  }

  /** Metric label for `tenant` (bounded: configured tenants, else {@link OTHER_TENANT_LABEL}). */
  label(tenant: string): string {
    return this.cfg.tenants.has(tenant) ? tenant : OTHER_TENANT_LABEL;
  }

  /**
   * Counts the clients retired so far (after a swap, or beyond {@link MAX_PARTITION_CLIENTS}).
   * Whoever remembers a client from {@link bucketFor} forgets it when this changes: a retired
   * client is closed `retireAfterMs` later.
   */
  get clientRetirements(): number {
    return this.retirements;
  }

  private retirements = 0;

  /** Number of bucket clients open now. */
  get openBuckets(): number {
    return this.buckets.size;
  }

  /**
   * Replaces the config. Bucket clients whose configuration is gone are closed after
   * `retireAfterMs` and once their last lease is released, so requests holding them finish first.
   * Then the {@link onSwap} listeners run.
   */
  swap(next: TenantsConfig): void {
    this.warnMoves(this.cfg, next);
    this.cfg = next;
    const live = new Set<string>([bucketKey(next.defaultBucket)]);
    for (const t of next.tenants.values()) if (t.bucket) live.add(bucketKey(t.bucket));
    for (const [key, slot] of this.buckets) {
      if (live.has(key) || (slot.templateKey !== undefined && live.has(slot.templateKey))) continue;
      this.retire(key, slot);
    }
    this.syncWatchers();
    for (const l of this.swapListeners) {
      try {
        l(next);
      } catch (err) {
        this.logger?.error({ err: (err as Error).message }, 'a tenants config listener failed');
      }
    }
  }

  /**
   * Logs a warning for each tenant whose blocks the new config looks for in another place (its own
   * bucket changed, or the default bucket it uses): nothing moves the blocks already written, so
   * they are no longer read, and a window flushed in both places is split between them.
   */
  private warnMoves(prev: TenantsConfig, next: TenantsConfig): void {
    const MOVED_WARNING =
      'a tenant moved to another bucket: its blocks in the old one are no longer read, and a window flushed in both is split between them; copy its blocks over first (docs/deploy.md, "Moving a tenant to another bucket")';
    // without authRequired, a tenant not in the file writes to the default bucket
    const where = (cfg: TenantsConfig, tenant: string): BucketConfig | undefined => {
      const entry = cfg.tenants.get(tenant);
      return entry === undefined ? (cfg.authRequired ? undefined : cfg.defaultBucket) : (entry.bucket ?? cfg.defaultBucket);
    };
    for (const tenant of next.tenants.keys()) {
      const from = where(prev, tenant);
      const to = where(next, tenant)!;
      if (from === undefined || bucketLocationOf(from) === bucketLocationOf(to)) continue;
      this.logger?.warn(
        { tenant, from: describeBucket(from), to: describeBucket(to) },
        MOVED_WARNING,
      );
    }
    if (!prev.authRequired && !next.authRequired && bucketLocationOf(prev.defaultBucket) !== bucketLocationOf(next.defaultBucket)) {
      this.logger?.warn(
        { tenant: '(tenants not in the file)', from: describeBucket(prev.defaultBucket), to: describeBucket(next.defaultBucket) },
        MOVED_WARNING,
      );
    }
  }

  /** Calls `listener` after every swap (e.g. to retry flushes at once after fixed credentials). */
  onSwap(listener: (cfg: TenantsConfig) => void): () => void {
    this.swapListeners.add(listener);
    return () => this.swapListeners.delete(listener);
  }

  /** Re-reads `path`; an invalid file is refused, logged, and the old config stays in force. */
  reload(path: string): Promise<void> {
    this.reloading = this.reloading.then(async () => {
      try {
        const next = await loadTenantsFile(path);
        this.swap(next);
        this.reloads.ok++;
        this.logger?.info({ file: path, tenants: next.tenants.size }, 'tenants config reloaded');
        this.onReload?.(true);
      } catch (err) {
        this.reloads.failed++;
        this.logger?.error({ file: path, err: (err as Error).message }, 'tenants config refused; keeping the previous one');
        this.onReload?.(false);
      }
    });
    return this.reloading;
  }

  /**
   * Reloads `path` when it changes (debounced), when a secret file it references changes (their
   * directories are watched too: a mounted Kubernetes Secret is updated by swapping a `..data`
   * link), and on SIGHUP.
   */
  watch(path: string, debounceMs = 200): void {
    if (this.watching) throw new RangeError('the registry already watches a tenants file');
    let timer: NodeJS.Timeout | null = null;
    const schedule = () => {
      if (timer) clearTimeout(timer);
      timer = setTimeout(() => {
        timer = null;
        void this.reload(path);
      }, debounceMs);
      timer.unref();
    };
    const base = basename(path);
    this.watching = { path: resolve(path), base, schedule };
    process.on('SIGHUP', schedule);
    this.syncWatchers();
    this.stopWatching = () => {
      process.off('SIGHUP', schedule);
      if (timer) clearTimeout(timer);
      for (const w of this.watchers.values()) w.close();
      this.watchers.clear();
      this.watching = null;
    };
  }

  private watching: { path: string; base: string; schedule: () => void } | null = null;
  private readonly watchers = new Map<string, FSWatcher>();

  /** Watches the tenants file's directory and those of the secret files of the config in force. */
  private syncWatchers(): void {
    const w = this.watching;
    if (!w) return;
    // per directory, the names whose change matters (`..`-prefixed names always do: Kubernetes
    // swaps a `..data` link to update a mounted ConfigMap or Secret)
    const names = new Map<string, Set<string>>([[dirname(w.path), new Set([w.base])]]);
    for (const f of this.cfg.secretFiles) {
      const abs = resolve(f);
      let set = names.get(dirname(abs));
      if (!set) names.set(dirname(abs), (set = new Set()));
      set.add(basename(abs));
    }
    this.watchNames = names;
    for (const [dir, watcher] of this.watchers) {
      if (names.has(dir)) continue;
      watcher.close();
      this.watchers.delete(dir);
    }
    for (const dir of names.keys()) {
      if (this.watchers.has(dir)) continue;
      let watcher: FSWatcher;
      try {
        // watch directories, not files: editors and Kubernetes replace files rather than write them
        watcher = watch(dir, (_event, name) => {
          const wanted = this.watchNames.get(dir);
          if (name === null || String(name).startsWith('..') || wanted?.has(String(name))) w.schedule();
        });
      } catch (err) {
        this.logger?.warn({ dir, err: (err as Error).message }, 'cannot watch a directory of the tenants config; reload with SIGHUP');
        continue;
      }
      watcher.on('error', (err) => this.logger?.warn({ dir, err: err.message }, 'watching a directory of the tenants config failed; reload with SIGHUP'));
      watcher.unref();
      this.watchers.set(dir, watcher);
    }
  }

  private watchNames = new Map<string, Set<string>>();

  private stopWatching: () => void = () => undefined;

  /** Stops watching and closes every bucket client. */
  async close(): Promise<void> {
    this.stopWatching();
    await this.reloading;
    for (const cancel of this.timers) cancel();
    this.timers.clear();
    const slots = [...this.buckets.values(), ...this.retired];
    this.buckets.clear();
    this.partitionSlots.clear();
    this.retired.clear();
    for (const s of slots) {
      const b = await s.bucket.catch(() => null);
      await b?.close();
    }
  }
}
