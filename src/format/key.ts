/**
 * Block keys and tenant ids. A block's key is a function of (tenant, shard, window) alone, so the
 * read path never lists the bucket:
 *
 * ```
 * blocks/<tenant>/<windowStartMs as 16 zero-padded decimal digits>/<shard as 5 digits>.block
 * ```
 * Windows sort lexicographically by time. Tenant ids are 1..64 characters of `[a-z0-9_-]`,
 * starting with a letter or digit, so nothing in them can escape their prefix.
 */
import { InvalidArgumentError } from '../errors.js';

/** Allowed tenant ids. */
export const TENANT_PATTERN = /^[a-z0-9][a-z0-9_-]{0,63}$/;
/** Default window length: 4 hours. */
export const DEFAULT_BLOCK_DURATION_MS = 4 * 3600 * 1000;
/** Largest number of shards a key can name. */
export const MAX_SHARDS = 100000;

/** Throws InvalidArgumentError (field `tenant`) unless `tenant` is a valid tenant id. */
export function validateTenant(tenant: string): void {
  if (!TENANT_PATTERN.test(tenant)) {
    throw new InvalidArgumentError('tenant', 'must be 1-64 characters of a-z, 0-9, "_" and "-", starting with a letter or digit');
  }
}

/** Start of the window holding `timestampMs`, for windows of `durationMs` aligned to the epoch. */
export function windowStartOf(timestampMs: bigint, durationMs: number): bigint {
  const d = BigInt(durationMs);
  const r = timestampMs % d;
  return r < 0n ? timestampMs - r - d : timestampMs - r;
}

/** The object key of the block of (tenant, shard, window). */
export function blockKey(tenant: string, shard: number, windowStartMs: bigint): string {
  validateTenant(tenant);
  if (!Number.isInteger(shard) || shard < 0 || shard >= MAX_SHARDS) throw new InvalidArgumentError('shard', `${shard} is outside 0..${MAX_SHARDS - 1}`);
  if (windowStartMs < 0n) throw new InvalidArgumentError('windowStart', 'must not be negative');
  return `blocks/${tenant}/${windowStartMs.toString().padStart(16, '0')}/${String(shard).padStart(5, '0')}.block`;
}

/** Inverse of {@link blockKey}; null when `key` is not a block key. */
export function parseBlockKey(key: string): { tenant: string; shard: number; windowStartMs: bigint } | null {
  const m = /^blocks\/([a-z0-9][a-z0-9_-]{0,63})\/(\d{16})\/(\d{5})\.block$/.exec(key);
  if (!m) return null;
  return { tenant: m[1]!, windowStartMs: BigInt(m[2]!), shard: Number(m[3]) };
}
