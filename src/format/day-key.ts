/**
 * Keys of day blocks and their manifests (docs/format/block.md, "Day blocks"). Like a block's key,
 * a day block's key is a function of (tenant, shard, day) alone, so the read path never lists:
 *
 * ```
 * blocks/<tenant>/<dayStartMs, 16 digits>/<shard, 5 digits>.day.block   the day block
 * blocks/<tenant>/<dayStartMs, 16 digits>/<shard, 5 digits>.day.json    its manifest
 * ```
 * A day is `[dayStart, dayStart + DAY_MS)`, aligned to the epoch (UTC days). Its first 4-hour
 * block lives in the same "directory" (`.../<shard>.block`): the suffixes keep them apart.
 */
import { InvalidArgumentError } from '../errors.js';
import { blockKey } from './key.js';

/** Length of a day block's window: 24 hours. */
export const DAY_MS = 24 * 3600 * 1000;

/**
 * How long after a day ended it is merged into day blocks (the lifecycle's `dayMergeAfterMs`),
 * read from them (the gateway's `dayBlocksAfterMs`) and asked for as one request per day (the
 * query client's `dayRequestsAfterMs`), by default: one value, so the three agree unless
 * configured apart.
 */
export const DEFAULT_DAY_BLOCKS_AFTER_MS = 8 * 3600 * 1000;

/** Start of the day holding `timestampMs`. */
export function dayStartOf(timestampMs: bigint): bigint {
  const d = BigInt(DAY_MS);
  const r = timestampMs % d;
  return r < 0n ? timestampMs - r - d : timestampMs - r;
}

/** Whether day blocks can be made of blocks of `blockDurationMs` (a whole number of them per day). */
export function dayBlocksFit(blockDurationMs: number): boolean {
  return Number.isSafeInteger(blockDurationMs) && blockDurationMs > 0 && blockDurationMs < DAY_MS && DAY_MS % blockDurationMs === 0;
}

function checkDay(dayStartMs: bigint): void {
  if (dayStartMs % BigInt(DAY_MS) !== 0n) throw new InvalidArgumentError('dayStart', `${dayStartMs} is not a multiple of ${DAY_MS}`);
}

/** The object key of the day block of (tenant, shard, day). */
export function dayBlockKey(tenant: string, shard: number, dayStartMs: bigint): string {
  checkDay(dayStartMs);
  return `${blockKey(tenant, shard, dayStartMs).slice(0, -'.block'.length)}.day.block`;
}

/** The key of the manifest of the day block of (tenant, shard, day). */
export function dayManifestKey(tenant: string, shard: number, dayStartMs: bigint): string {
  checkDay(dayStartMs);
  return `${blockKey(tenant, shard, dayStartMs).slice(0, -'.block'.length)}.day.json`;
}

/** What a day key names. */
export interface ParsedDayKey {
  readonly tenant: string;
  readonly shard: number;
  readonly dayStartMs: bigint;
  /** `block`: the day block; `manifest`: its manifest. */
  readonly kind: 'block' | 'manifest';
}

/** Inverse of {@link dayBlockKey} and {@link dayManifestKey}; null for any other key. */
export function parseDayKey(key: string): ParsedDayKey | null {
  const m = /^blocks\/([a-z0-9][a-z0-9_-]{0,63})\/(\d{16})\/(\d{5})\.day\.(block|json)$/.exec(key);
  if (!m) return null;
  const dayStartMs = BigInt(m[2]!);
  if (dayStartMs % BigInt(DAY_MS) !== 0n) return null;
  return { tenant: m[1]!, dayStartMs, shard: Number(m[3]), kind: m[4] === 'block' ? 'block' : 'manifest' };
}
