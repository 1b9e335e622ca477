/**
 * The day-block index: which (tenant, shard, day) of a bucket have a day block, as the lifecycle
 * role listed them. It lets a gateway read a closed day's 4-hour block without first asking the
 * bucket for a day block that does not exist (a GET answered 404, a third request for a cold
 * 4-hour read). Stored in every bucket the lifecycle keeps day blocks in, at
 * {@link DAY_INDEX_KEY}, replaced whole by each pass (docs/format/day-index.md).
 *
 * Why a reader may trust it, though it is older than the bucket: a day's 4-hour blocks are deleted
 * only `daySourceGraceMs` after its day block was published (src/lifecycle/day.ts), and the index
 * holds every day block published before `listedAtMs`. So until `listedAtMs + graceMs`, a day
 * block the index does not name was published after the listing, and the 4-hour blocks it was
 * merged from are all still there, with every sample (late data replaces a 4-hour block whole
 * while it exists). {@link DAY_INDEX_MARGIN_MS} off that bound covers clock skew between the
 * lifecycle and the gateways, and an upload whose start (its LastModified) came before the
 * listing and its end after. Past the bound, readers go back to looking for the day block first.
 */
import { z } from 'zod';
import { ErrorCode, StrataError } from '../errors.js';
import { DAY_MS } from '../format/day-key.js';
import { validateTenant } from '../format/key.js';

/** Where the index lives in each bucket. */
export const DAY_INDEX_KEY = 'lifecycle/day-blocks.json';
/** Taken off `listedAtMs + graceMs` before a reader stops trusting the index (see the module comment). */
export const DAY_INDEX_MARGIN_MS = 30 * 60 * 1000;
/** Largest index a reader parses (a larger one is refused, and readers look for day blocks first). */
export const DAY_INDEX_MAX_BYTES = 16 * 1024 * 1024;
/**
 * Most memory one parsed index may take ({@link DayIndex.heldBytes}); a larger one is refused by
 * readers, and not written by the lifecycle. A bucket may be a tenant's own, so its index is not
 * trusted to be small once parsed: 16 MiB of JSON can name a million (tenant, shard) pairs.
 */
export const DAY_INDEX_MAX_HELD_BYTES = 32 * 1024 * 1024;
/**
 * Largest `graceMs` an index may carry (a reader refuses a larger one; the lifecycle writes at
 * most this, trusting its index for less than its daySourceGraceMs when that is longer).
 */
export const DAY_INDEX_MAX_GRACE_MS = 7 * 24 * 3600 * 1000;
/** Memory of one (tenant, shard) entry of a parsed index besides its runs: Map entry, key string, typed array and its buffer. */
const HELD_BYTES_PER_KEY = 256;
/** Issues of an invalid index named in its error, at most. */
const MAX_ISSUES = 5;

const VERSION = 1;

const schema = z
  .object({
    version: z.literal(VERSION),
    listedAtMs: z.number().int().nonnegative(),
    graceMs: z.number().int().nonnegative().max(DAY_INDEX_MAX_GRACE_MS),
    /** tenant → shard → runs of consecutive days [first day number, count] (day number: dayStartMs / DAY_MS), ascending. */
    tenants: z.record(z.string(), z.record(z.string().regex(/^\d{1,5}$/), z.array(z.tuple([z.number().int(), z.number().int().positive()])))),
  })
  .strict();

/** One day block: its tenant, shard and day (ms since the epoch, a multiple of DAY_MS). */
export interface DayBlockRef {
  readonly tenant: string;
  readonly shard: number;
  readonly dayStartMs: bigint;
}

/**
 * Day blocks one index names, at most: about 12 bytes of JSON each at worst (no two consecutive),
 * so an index that a reader accepts ({@link DAY_INDEX_MAX_BYTES}) holds more than this.
 */
export const DAY_INDEX_MAX_BLOCKS = 1_000_000;

/**
 * Collects day blocks (in any order, duplicates allowed) and makes the index's bytes. Holds a
 * number per day block (a bucket of 100 tenants x 16 shards x a year of days: 4.7 MB), at most
 * {@link DAY_INDEX_MAX_BLOCKS}: past that it drops what it holds and makes no index.
 */
export class DayIndexBuilder {
  private readonly days = new Map<string, Map<number, number[]>>();
  private count = 0;

  /** Whether more than {@link DAY_INDEX_MAX_BLOCKS} were added (then there is no index to make). */
  get overflowed(): boolean {
    return this.count > DAY_INDEX_MAX_BLOCKS;
  }

  add(b: DayBlockRef): void {
    if (++this.count > DAY_INDEX_MAX_BLOCKS) {
      this.days.clear();
      return;
    }
    let shards = this.days.get(b.tenant);
    if (!shards) this.days.set(b.tenant, (shards = new Map()));
    let list = shards.get(b.shard);
    if (!list) shards.set(b.shard, (list = []));
    list.push(Number(b.dayStartMs / BigInt(DAY_MS)));
  }

  /** The index of the day blocks added, listed from `listedAtMs` on, with the lifecycle's `graceMs`. */
  encode(listedAtMs: number, graceMs: number): Buffer {
    if (this.overflowed) throw new StrataError(ErrorCode.RESOURCE_EXHAUSTED, `the bucket holds more than DAY_INDEX_MAX_BLOCKS (${DAY_INDEX_MAX_BLOCKS}) day blocks: no day-block index is written (the previous one is trusted until its own bound, then readers look for day blocks first)`);
    const tenants: Record<string, Record<string, [number, number][]>> = {};
    let held = 0;
    for (const tenant of [...this.days.keys()].sort()) {
      const out: Record<string, [number, number][]> = {};
      const shards = this.days.get(tenant)!;
      for (const shard of [...shards.keys()].sort((a, b) => a - b)) {
        const sorted = [...new Set(shards.get(shard)!)].sort((a, b) => a - b);
        const runs: [number, number][] = [];
        for (const d of sorted) {
          const last = runs[runs.length - 1];
          if (last && last[0] + last[1] === d) last[1]++;
          else runs.push([d, 1]);
        }
        out[String(shard)] = runs;
        held += heldBytesOf(tenant, shard, runs.length);
      }
      tenants[tenant] = out;
    }
    const bytes = Buffer.from(`${JSON.stringify({ version: VERSION, listedAtMs, graceMs: Math.min(graceMs, DAY_INDEX_MAX_GRACE_MS), tenants })}\n`);
    // what every reader would refuse is not written
    if (bytes.length > DAY_INDEX_MAX_BYTES || held > DAY_INDEX_MAX_HELD_BYTES) {
      throw new StrataError(
        ErrorCode.RESOURCE_EXHAUSTED,
        `the day-block index would be ${bytes.length} bytes (DAY_INDEX_MAX_BYTES ${DAY_INDEX_MAX_BYTES}) and take ${held} bytes of a reader's memory (DAY_INDEX_MAX_HELD_BYTES ${DAY_INDEX_MAX_HELD_BYTES}): no day-block index is written (readers look for day blocks first)`,
      );
    }
    return bytes;
  }
}

/** Memory a parsed index takes for one (tenant, shard) entry with `runs` runs of days (an estimate, per {@link HELD_BYTES_PER_KEY}). */
function heldBytesOf(tenant: string, shard: number | string, runs: number): number {
  return HELD_BYTES_PER_KEY + tenant.length + String(shard).length + 16 * runs;
}

/** A parsed index; see the module comment. */
export class DayIndex {
  private constructor(
    /** When the listing it holds started (the lifecycle's clock). */
    readonly listedAtMs: number,
    /** The lifecycle's daySourceGraceMs when it wrote the index. */
    readonly graceMs: number,
    /** `tenant/shard` → sorted, disjoint runs [first day, count] flattened. */
    private readonly runs: Map<string, Float64Array>,
    /** About how much memory it takes (at most {@link DAY_INDEX_MAX_HELD_BYTES}). */
    readonly heldBytes: number,
  ) {}

  /**
   * Parses the index's bytes.
   * @throws StrataError CORRUPT naming `where` when they are not a valid index.
   */
  static parse(data: Buffer, where: string): DayIndex {
    if (data.length > DAY_INDEX_MAX_BYTES) throw new StrataError(ErrorCode.CORRUPT, `${where}: ${data.length} bytes, more than the ${DAY_INDEX_MAX_BYTES} a reader accepts`);
    let v: unknown;
    try {
      v = JSON.parse(data.toString('utf8'));
    } catch (err) {
      throw new StrataError(ErrorCode.CORRUPT, `${where}: not JSON`, { cause: err });
    }
    const r = schema.safeParse(v);
    if (!r.success) {
      const { issues } = r.error;
      const named = issues.slice(0, MAX_ISSUES).map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`);
      if (issues.length > MAX_ISSUES) named.push(`and ${issues.length - MAX_ISSUES} more`);
      throw new StrataError(ErrorCode.CORRUPT, `${where}: ${named.join('; ')}`);
    }
    // its memory once parsed, before any of it is made
    let held = 0;
    for (const [tenant, shards] of Object.entries(r.data.tenants)) for (const [shard, list] of Object.entries(shards)) held += heldBytesOf(tenant, shard, list.length);
    if (held > DAY_INDEX_MAX_HELD_BYTES) throw new StrataError(ErrorCode.CORRUPT, `${where}: would take about ${held} bytes of memory, more than the ${DAY_INDEX_MAX_HELD_BYTES} (DAY_INDEX_MAX_HELD_BYTES) a reader holds`);
    const runs = new Map<string, Float64Array>();
    for (const [tenant, shards] of Object.entries(r.data.tenants)) {
      try {
        validateTenant(tenant);
      } catch (err) {
        throw new StrataError(ErrorCode.CORRUPT, `${where}: tenant ${JSON.stringify(tenant)}: ${(err as Error).message}`);
      }
      for (const [shard, list] of Object.entries(shards)) {
        const flat = new Float64Array(list.length * 2);
        let end = -Infinity;
        list.forEach(([first, count], i) => {
          if (first < end) throw new StrataError(ErrorCode.CORRUPT, `${where}: tenants.${tenant}.${shard}: day runs not ascending and disjoint`);
          flat[2 * i] = first;
          flat[2 * i + 1] = count;
          end = first + count;
        });
        runs.set(`${tenant}/${Number(shard)}`, flat);
      }
    }
    return new DayIndex(r.data.listedAtMs, r.data.graceMs, runs, held);
  }

  /** Until when (exclusive, ms since the epoch) a reader may trust that a day block the index does not name has all its 4-hour blocks. */
  get trustedUntilMs(): number {
    return this.listedAtMs + this.graceMs - DAY_INDEX_MARGIN_MS;
  }

  /** Whether the index names the day block of (`tenant`, `shard`, `dayStartMs`). */
  has(tenant: string, shard: number, dayStartMs: bigint): boolean {
    const runs = this.runs.get(`${tenant}/${shard}`);
    if (!runs) return false;
    const d = Number(dayStartMs / BigInt(DAY_MS));
    // binary search for the last run starting at or before d
    let lo = 0;
    let hi = runs.length / 2 - 1;
    let at = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (runs[2 * mid]! <= d) {
        at = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return at >= 0 && d < runs[2 * at]! + runs[2 * at + 1]!;
  }
}
