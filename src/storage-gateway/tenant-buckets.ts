/**
 * Where each tenant's blocks are read from: its bucket client and its cache scope (a hash of the
 * bucket's location, so two tenants' blocks in different buckets never share cache entries; see
 * docs/format/cache.md).
 *
 * A tenant's bucket and scope only change when the registry's config does (a reload swaps the
 * config object), so they are remembered per config: a warm call resolves with one Map lookup
 * instead of a location string, a SHA-256 and a promise. A tenant with time-partitioned buckets
 * (src/tenancy/partitions.ts) has one bucket per partition: remembered per partition, and
 * forgotten when the registry retires a client (it keeps a bounded number of partitions open).
 */
import { createHash } from 'node:crypto';
import type { BucketReader } from '../objstore/bucket.js';
import { partitionOf } from '../tenancy/partitions.js';
import type { TenantRegistry } from '../tenancy/tenants.js';
import type { TenantBucket } from './service.js';

/** Tenants whose bucket and scope are remembered at most (without auth any tenant id comes in). */
const RESOLVED_TENANTS_MAX = 10_000;

/** The cache scope of a bucket location: 32 hex digits (see block-directory.ts and docs/format/cache.md). */
export function scopeOf(location: string): string {
  return createHash('sha256').update(location).digest('hex').slice(0, 32);
}

/** Resolves tenants to their bucket and scope; see the module comment. */
export class TenantBucketResolver {
  private resolvedFor: unknown = null;
  private resolvedAtRetirements = 0;
  private readonly resolved = new Map<string, TenantBucket>();

  constructor(private readonly registry: Pick<TenantRegistry, 'config' | 'bucketLocation' | 'bucketFor' | 'clientRetirements'>) {}

  /** The bucket and scope of the tenant's window: at once when remembered, else once its bucket is open. */
  resolve(tenant: string, windowStart: bigint): TenantBucket | Promise<TenantBucket> {
    const registry = this.registry;
    const cfg = registry.config;
    if (cfg !== this.resolvedFor || registry.clientRetirements !== this.resolvedAtRetirements) {
      // a reload, or a client the registry retired (it closes it soon): resolve afresh
      this.resolved.clear();
      this.resolvedFor = cfg;
      this.resolvedAtRetirements = registry.clientRetirements;
    }
    const partitions = cfg.tenants.get(tenant)?.partitions;
    const id = partitions ? `${tenant} ${partitionOf(partitions, windowStart).name}` : tenant;
    const known = this.resolved.get(id);
    if (known) return known;
    let scope: string;
    let bucket: Promise<BucketReader>;
    try {
      // location and client are read from the same config (no await in between)
      scope = scopeOf(registry.bucketLocation(tenant, windowStart));
      bucket = registry.bucketFor(tenant, windowStart);
    } catch (err) {
      return Promise.reject(err);
    }
    return bucket.then((b) => {
      const tb: TenantBucket = { bucket: b, scope };
      if (registry.config === cfg && registry.clientRetirements === this.resolvedAtRetirements) {
        if (this.resolved.size >= RESOLVED_TENANTS_MAX) this.resolved.clear();
        this.resolved.set(id, tb);
      }
      return tb;
    });
  }
}
