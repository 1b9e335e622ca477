/**
 * `strata bucket ls | usage | verify | retention --dry-run`: what is in the buckets, block by
 * block. With `--tenants-file`, every bucket of the file (the default bucket and each distinct
 * tenant bucket; with `--tenant`, only the bucket(s) of that tenant); otherwise the one bucket the
 * bucket flags name (as for `strata block`).
 *
 * - `ls`: one line per block: tenant, window start, shard, size, bucket and key.
 * - `usage`: per tenant, blocks, bytes and samples (samples from each block's footer, each sample
 *   once: a (tenant, shard, day) with a day block counts the day block's samples, not its 4-hour
 *   blocks', whose bytes are shown apart as superseded). A block that cannot be read is reported
 *   on stderr and the others are still counted.
 * - `verify`: reads every block whole and checks every checksum; progress on stderr when it is a
 *   terminal.
 * - `retention --dry-run`: the blocks the lifecycle role would delete now (retention and deleted
 *   tenants) and the incomplete uploads it would discard.
 *
 * A bucket that cannot be listed is reported on stderr (with its tenants) and the others are still
 * read. Exit statuses: {@link EXIT_STATUS_HELP}. Output cut short by its reader (`| head`) stops
 * the command quietly.
 */
import { Command, Option } from 'commander';
import { BlockReader } from '../block/reader.js';
import { bucketSource } from '../block/source.js';
import { ErrorCode, hasCode, InvalidArgumentError, StrataError, UnsupportedVersionError } from '../errors.js';
import { DEFAULT_BLOCK_DURATION_MS, parseBlockKey, validateTenant } from '../format/key.js';
import { dayStartOf, parseDayKey } from '../format/day-key.js';
import { runLifecyclePass, type BlockDeletion } from '../lifecycle/job.js';
import { describeBucket, openBucket, parseBucketConfig, type Bucket } from '../objstore/index.js';
import { loadTenantsFile, openTenantsConfig } from '../tenancy/config.js';
import { ALL_PARTITION_CLIENTS, bucketLocationOf, TenantRegistry } from '../tenancy/tenants.js';
import { addBucketOptions, bucketConfigFromFlags, type BucketFlags } from './block.js';
import { FORMAT_VERSION } from '../format/footer.js';

/** Exit statuses of the `strata bucket` commands. */
export const BucketExit = {
  OK: 0,
  /** Corrupt data: a block failed its checks (`verify`) or could not be read (`usage`). */
  CORRUPT: 1,
  /** Bad flags or tenants file: nothing was read. */
  USAGE: 2,
  /** A bucket could not be listed (or opened): the other buckets were read and are in the output. */
  BUCKET_FAILED: 3,
  /** A block has a format version this build does not read: not known to be damaged; a newer build checks it. */
  NEWER_FORMAT: 4,
} as const;

/** The exit statuses, as each command's --help and docs/deploy.md state them. */
export const EXIT_STATUS_HELP = `
Exit status:
  0  everything was listed (and read)
  1  corrupt data: a block failed its checks (verify) or could not be read (usage)
  2  bad flags (an invalid bucket name among them) or tenants file: nothing was read
  3  a bucket could not be listed: it is named on stderr, the other buckets are in the output
     (when both 1 and 3 apply: 1)
  4  a block has a format version this build does not read (written by a newer build): not
     known to be damaged; check it with that build (1 and 3 win over 4)
Output closed early by its reader (e.g. piped into head): the command stops quietly, with the
status due so far (0 when nothing failed).`;

/** Flags choosing the buckets. */
export interface BucketsFlags extends BucketFlags {
  tenantsFile?: string;
  json?: boolean;
  tenant?: string;
}

/** Adds `--tenants-file` and the bucket flags. */
export function addBucketsOptions(cmd: Command): Command {
  return addBucketOptions(cmd.option('--tenants-file <file>', 'every bucket of this tenants file (its defaultBucket and tenant buckets)'));
}

/** A registry over the buckets the flags name; close it when done. */
export async function registryFromFlags(f: BucketsFlags): Promise<TenantRegistry> {
  // flags are checked before anything is read: an invalid bucket name is a bad flag (status 2),
  // not a bucket that failed (3)
  const cfg = f.tenantsFile !== undefined ? await loadTenantsFile(f.tenantsFile) : openTenantsConfig(parseBucketConfig(bucketConfigFromFlags(f)));
  return new TenantRegistry(cfg, { openBucket: (c) => openBucket(c, { create: false }), maxPartitionClients: ALL_PARTITION_CLIENTS });
}

/** What a command found that decides its exit status. */
class Outcome {
  corrupt = 0;
  bucketsFailed = 0;
  /** Blocks of a format version this build does not read. */
  newer = 0;

  get status(): number {
    if (this.corrupt > 0) return BucketExit.CORRUPT;
    if (this.bucketsFailed > 0) return BucketExit.BUCKET_FAILED;
    return this.newer > 0 ? BucketExit.NEWER_FORMAT : BucketExit.OK;
  }
}

/**
 * Whether `err` refuses a block of a format version above the ones this build reads (a newer
 * build wrote it); a version below them (0) is damage, not a newer format.
 */
function isNewerFormat(err: unknown): boolean {
  return err instanceof UnsupportedVersionError && err.version !== undefined && err.version > FORMAT_VERSION;
}

/** Whether `err` is the user's to fix (flags, tenants file) rather than a bucket's failure. */
function isUsageError(err: unknown): boolean {
  return err instanceof StrataError && (err.code === ErrorCode.CONFIG || err.code === ErrorCode.INVALID_ARGUMENT);
}

/**
 * Runs `fn` with the registry of the flags, closing it afterwards, and sets the exit status from
 * the outcome. An error that ends the command goes to stderr: status 2 for flags and config,
 * else 3 (a bucket that could not be read). Stdout closed by its reader stops the process quietly.
 */
async function withBuckets(name: string, f: BucketsFlags, fn: (r: TenantRegistry, o: Outcome) => Promise<void>): Promise<void> {
  const outcome = new Outcome();
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    // `strata bucket ls | head`: nobody reads the rest; as Unix tools do, stop without a word
    if (err.code === 'EPIPE') process.exit(outcome.status);
    throw err;
  });
  let registry: TenantRegistry | null = null;
  try {
    if (f.tenant !== undefined) validateTenant(f.tenant);
    registry = await registryFromFlags(f);
    await fn(registry, outcome);
    process.exitCode = outcome.status;
  } catch (err) {
    process.stderr.write(`strata bucket ${name}: ${(err as Error).message}\n`);
    process.exitCode = isUsageError(err) ? BucketExit.USAGE : outcome.corrupt > 0 ? BucketExit.CORRUPT : BucketExit.BUCKET_FAILED;
  } finally {
    await registry?.close();
  }
}

/** A block as listed: what a deletion names, but no reason; and whether it is a day block. */
type BlockEntry = Omit<BlockDeletion, 'reason'> & { readonly kind: '4h' | 'day' };

/** One place blocks are kept: the default bucket, a tenant's own bucket, or a tenant's partitions. */
interface Place {
  /** Where it is, for messages (the bucket as configured; a template for partitions). */
  readonly where: string;
  /** The tenants of the config whose blocks it holds. */
  readonly tenants: string[];
  readonly isDefault: boolean;
  /** Its buckets: one, or every partition that exists. */
  open(): Promise<Bucket[]>;
}

/**
 * The places to read, default bucket first: with `tenant`, only where that tenant's blocks are
 * (its own bucket or partitions; the default bucket for a tenant without one, or not in the
 * file); else every distinct bucket of the config.
 */
function placesOf(r: TenantRegistry, tenant: string | undefined): Place[] {
  const cfg = r.config;
  const def: Place = { where: describeBucket(cfg.defaultBucket), tenants: [], isDefault: true, open: async () => [await r.defaultBucket()] };
  const byLocation = new Map<string, Place>([[bucketLocationOf(cfg.defaultBucket), def]]);
  const own: Place[] = [];
  for (const t of cfg.tenants.values()) {
    if (tenant !== undefined && t.id !== tenant) continue;
    if (t.bucket === null) {
      def.tenants.push(t.id);
      continue;
    }
    if (t.partitions !== null) {
      const id = t.id;
      own.push({ where: `${describeBucket(t.bucket)} (partitions)`, tenants: [id], isDefault: false, open: async () => Promise.all((await r.partitionsOf(id)).map((p) => r.partitionBucket(id, p.name))) });
      continue;
    }
    const loc = bucketLocationOf(t.bucket);
    const seen = byLocation.get(loc);
    if (seen) {
      seen.tenants.push(t.id);
      continue;
    }
    const id = t.id;
    const p: Place = { where: describeBucket(t.bucket), tenants: [id], isDefault: false, open: async () => [await r.bucketFor(id)] };
    byLocation.set(loc, p);
    own.push(p);
  }
  if (tenant !== undefined) return own.length > 0 ? own : [def];
  return [def, ...own];
}

/** The tenants of a place, for messages (at most 5 named). */
function tenantsOf(p: Place): string {
  const named = p.tenants.length > 5 ? `${p.tenants.slice(0, 5).join(', ')} and ${p.tenants.length - 5} more` : p.tenants.join(', ');
  if (p.isDefault) return named ? `default bucket: tenants ${named} and any not in the tenants file` : 'default bucket';
  return `tenant${p.tenants.length > 1 ? 's' : ''} ${named}`;
}

/**
 * Every block of the places of `tenant` (all when undefined), in listing order (a tenant's day
 * is contiguous: its day block and 4-hour blocks share the key prefix up to the day). A place
 * that cannot be opened or listed is reported (stderr, exit status 3) and skipped.
 */
async function* blocksOf(name: string, r: TenantRegistry, tenant: string | undefined, o: Outcome): AsyncGenerator<BlockEntry & { readonly reader: Bucket }> {
  for (const place of placesOf(r, tenant)) {
    try {
      for (const bucket of await place.open()) {
        for await (const info of bucket.list(tenant !== undefined ? `blocks/${tenant}/` : 'blocks/')) {
          const p = parseBlockKey(info.key);
          // day blocks too (src/lifecycle/README.md, "Day blocks"): listed, measured and verified like the others
          const d = p ? null : parseDayKey(info.key);
          if (p) yield { bucket: bucket.name, key: info.key, tenant: p.tenant, shard: p.shard, windowStartMs: Number(p.windowStartMs), bytes: info.size, kind: '4h', reader: bucket };
          else if (d?.kind === 'block') yield { bucket: bucket.name, key: info.key, tenant: d.tenant, shard: d.shard, windowStartMs: Number(d.dayStartMs), bytes: info.size, kind: 'day', reader: bucket };
        }
      }
    } catch (err) {
      o.bucketsFailed++;
      process.stderr.write(`strata bucket ${name}: cannot list ${place.where} (${tenantsOf(place)}): ${(err as Error).message}; its blocks are not in this output\n`);
    }
  }
}

const out = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

/** Blocks, bytes and samples of one tenant (see `usage`). */
interface Usage {
  blocks: number;
  bytes: number;
  samples: number;
  series: number;
  /** 4-hour blocks of a (shard, day) that has a day block holding their samples, and their bytes. */
  supersededBlocks: number;
  supersededBytes: number;
  /** Blocks whose footer could not be read (their samples are not counted). */
  unreadableBlocks: number;
}

/** The footers read of one (tenant, shard, day): its day block's and its 4-hour blocks'. */
interface ShardDay {
  /** The day block's counts; null: none, or unreadable. */
  day: { samples: number; series: number } | null;
  sources: { blocks: number; bytes: number; samples: number; series: number };
}

/**
 * Sums blocks per tenant, each sample once: the blocks of one (tenant, day) arrive together
 * ({@link blocksOf}), and when the day is complete a shard with a readable day block counts its
 * samples, its 4-hour blocks only as superseded storage; a shard without one counts its 4-hour
 * blocks' samples.
 */
class UsageCounter {
  readonly per = new Map<string, Usage>();
  private dayKey = '';
  private tenant = '';
  private shards = new Map<number, ShardDay>();

  add(b: BlockEntry, footer: { samples: number; series: number } | null): void {
    const dayKey = `${b.bucket}\n${b.tenant}\n${b.kind === 'day' ? b.windowStartMs : dayStartOf(BigInt(b.windowStartMs))}`;
    if (dayKey !== this.dayKey) this.settle();
    this.dayKey = dayKey;
    this.tenant = b.tenant;
    const u = this.usage(b.tenant);
    u.blocks++;
    u.bytes += b.bytes;
    if (footer === null) u.unreadableBlocks++;
    let sd = this.shards.get(b.shard);
    if (!sd) this.shards.set(b.shard, (sd = { day: null, sources: { blocks: 0, bytes: 0, samples: 0, series: 0 } }));
    if (b.kind === 'day') sd.day = footer;
    else {
      sd.sources.blocks++;
      sd.sources.bytes += b.bytes;
      sd.sources.samples += footer?.samples ?? 0;
      sd.sources.series += footer?.series ?? 0;
    }
  }

  /** Adds the day in progress to its tenant's totals. */
  settle(): void {
    if (this.shards.size === 0) return;
    const u = this.usage(this.tenant);
    for (const sd of this.shards.values()) {
      if (sd.day !== null) {
        u.samples += sd.day.samples;
        u.series += sd.day.series;
        u.supersededBlocks += sd.sources.blocks;
        u.supersededBytes += sd.sources.bytes;
      } else {
        u.samples += sd.sources.samples;
        u.series += sd.sources.series;
      }
    }
    this.shards = new Map();
  }

  private usage(tenant: string): Usage {
    let u = this.per.get(tenant);
    if (!u) this.per.set(tenant, (u = { blocks: 0, bytes: 0, samples: 0, series: 0, supersededBlocks: 0, supersededBytes: 0, unreadableBlocks: 0 }));
    return u;
  }
}

/** Registers `strata bucket ...`. */
export function registerBucketCommands(program: Command): void {
  const bucket = program
    .command('bucket')
    .description('list, measure and verify the blocks in the buckets; show what retention would delete')
    // a flag commander refuses is a usage error (2), not corrupt data (1, commander's own status);
    // inherited by the commands below
    .exitOverride((err) => process.exit(err.exitCode === 1 ? BucketExit.USAGE : err.exitCode));
  addBucketsOptions(
    bucket
      .command('ls')
      .description('one line per block: tenant, window start, shard, bytes, bucket, key')
      .option('--tenant <id>', "only this tenant (only its bucket is read)")
      .option('--json', 'JSON lines (kind: "4h" or "day")')
      .addHelpText('after', EXIT_STATUS_HELP),
  ).action(async (f: BucketsFlags) => {
    await withBuckets('ls', f, async (r, o) => {
      for await (const b of blocksOf('ls', r, f.tenant, o)) {
        const { reader: _r, ...e } = b;
        if (f.json) out(JSON.stringify({ ...e, windowStart: new Date(e.windowStartMs).toISOString() }));
        else out(`${e.tenant}\t${new Date(e.windowStartMs).toISOString()}\tshard ${e.shard}\t${e.bytes}\t${e.bucket}\t${e.key}`);
      }
    });
  });
  addBucketsOptions(
    bucket
      .command('usage')
      .description(
        'per tenant: blocks, bytes, samples (from the block footers, each sample once: where a day block exists, its 4-hour blocks are counted as superseded bytes, not samples), unreadable blocks',
      )
      .option('--tenant <id>', 'only this tenant (only its bucket is read)')
      .option('--json', 'JSON lines')
      .addHelpText('after', EXIT_STATUS_HELP),
  ).action(async (f: BucketsFlags) => {
    await withBuckets('usage', f, async (r, o) => {
      const counter = new UsageCounter();
      for await (const b of blocksOf('usage', r, f.tenant, o)) {
        let footer: { samples: number; series: number } | null = null;
        try {
          const reader = await BlockReader.open(bucketSource(b.reader, b.key));
          footer = { samples: reader.footer.sampleCount, series: reader.footer.seriesCount };
        } catch (err) {
          // deleted since it was listed (a lifecycle pass running meanwhile): no longer stored
          if (hasCode(err, ErrorCode.NOT_FOUND)) continue;
          if (isNewerFormat(err)) o.newer++;
          else o.corrupt++;
          process.stderr.write(`strata bucket usage: cannot read block ${b.bucket} ${b.key}: ${(err as Error).message}\n`);
        }
        counter.add(b, footer);
      }
      counter.settle();
      for (const [tenant, u] of [...counter.per].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
        if (f.json) out(JSON.stringify({ tenant, ...u }));
        else {
          out(
            `${tenant}\t${u.blocks} blocks\t${u.bytes} bytes\t${u.samples} samples\t${u.supersededBlocks} superseded blocks\t${u.supersededBytes} superseded bytes\t${u.unreadableBlocks} unreadable blocks`,
          );
        }
      }
      const unread = o.corrupt + o.newer;
      if (unread > 0) process.stderr.write(`strata bucket usage: ${unread} block${unread === 1 ? '' : 's'} could not be read; ${unread === 1 ? 'its' : 'their'} samples are not counted\n`);
    });
  });
  addBucketsOptions(
    bucket
      .command('verify')
      .description('read every block and check every checksum (exit status 1 if one is corrupt)')
      .option('--tenant <id>', 'only this tenant (only its bucket is read)')
      .addOption(new Option('--progress', 'progress on stderr (default: when stderr is a terminal)'))
      .option('--no-progress', 'no progress')
      .addHelpText('after', EXIT_STATUS_HELP),
  ).action(async (f: BucketsFlags & { progress?: boolean }) => {
    const progress = f.progress ?? process.stderr.isTTY === true;
    await withBuckets('verify', f, async (r, o) => {
      let checked = 0;
      let bytes = 0;
      let gone = 0;
      for await (const b of blocksOf('verify', r, f.tenant, o)) {
        try {
          const reader = await BlockReader.open(bucketSource(b.reader, b.key));
          // a block stored under another block's key is refused by every reader (DATA_LOSS): so here
          const f = reader.footer;
          if (f.tenant !== b.tenant || f.shard !== b.shard || f.windowStart !== BigInt(b.windowStartMs)) {
            throw new Error(`the footer names tenant ${f.tenant}, shard ${f.shard}, window ${f.windowStart}; the key names tenant ${b.tenant}, shard ${b.shard}, window ${b.windowStartMs}`);
          }
          await reader.verify();
        } catch (err) {
          if (progress) process.stderr.write('\n');
          if (hasCode(err, ErrorCode.NOT_FOUND)) {
            // deleted since it was listed (a lifecycle pass deletes 4-hour blocks of merged days
            // and expired ones): not damage
            gone++;
            out(`GONE\t${b.bucket}\t${b.key}\tdeleted since it was listed`);
            continue;
          }
          if (isNewerFormat(err)) {
            // written by a newer build: not damage, and not checked either
            o.newer++;
            out(`NEWER\t${b.bucket}\t${b.key}\t${(err as Error).message}; not checked: verify it with a build that reads that version`);
            continue;
          }
          o.corrupt++;
          out(`CORRUPT\t${b.bucket}\t${b.key}\t${(err as Error).message}`);
        }
        checked++;
        bytes += b.bytes;
        if (progress) process.stderr.write(`\rverified ${checked} blocks, ${bytes} bytes, ${o.corrupt} corrupt`);
      }
      if (progress) process.stderr.write('\n');
      const unlisted = o.bucketsFailed > 0 ? `; ${o.bucketsFailed} bucket${o.bucketsFailed === 1 ? '' : 's'} could not be listed` : '';
      const deleted = gone > 0 ? `; ${gone} deleted since they were listed` : '';
      const newer = o.newer > 0 ? `; ${o.newer} of a newer format, not checked` : '';
      out(`${checked} blocks checked, ${bytes} bytes, ${o.corrupt} corrupt${newer}${deleted}${unlisted}`);
    });
  });
  addBucketsOptions(
    bucket
      .command('retention')
      .description('what the lifecycle role would delete now: expired blocks, blocks of deleted tenants, old incomplete uploads')
      .requiredOption('--dry-run', 'only show (required: deletions are the lifecycle role\'s job)')
      .option('--block-duration-ms <ms>', 'window length of the blocks', String(DEFAULT_BLOCK_DURATION_MS))
      .option('--retention-grace-ms <ms>', 'as the lifecycle role\'s retentionGraceMs', '3600000')
      .option('--incomplete-upload-max-age-ms <ms>', 'as the lifecycle role\'s incompleteUploadMaxAgeMs', '86400000')
      .option('--at <time>', 'as of this time (ISO 8601, or ms since the epoch) instead of now: what a pass would delete then')
      .option('--json', 'JSON lines')
      .addHelpText('after', EXIT_STATUS_HELP),
  ).action(async (f: BucketsFlags & { blockDurationMs: string; retentionGraceMs: string; incompleteUploadMaxAgeMs: string; at?: string }) => {
    await withBuckets('retention', f, async (r, o) => {
      const num = (name: string, v: string): number => {
        if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`--${name}`, `"${v}" is not a non-negative integer`);
        return Number(v);
      };
      let at = Date.now();
      if (f.at !== undefined) {
        at = /^\d+$/.test(f.at) ? Number(f.at) : Date.parse(f.at);
        if (!Number.isSafeInteger(at)) throw new InvalidArgumentError('--at', `"${f.at}" is neither an ISO 8601 time nor ms since the epoch`);
      }
      const res = await runLifecyclePass(r, at, {
        blockDurationMs: num('block-duration-ms', f.blockDurationMs),
        retentionGraceMs: num('retention-grace-ms', f.retentionGraceMs),
        incompleteUploadMaxAgeMs: num('incomplete-upload-max-age-ms', f.incompleteUploadMaxAgeMs),
        deleteConcurrency: 1,
        dryRun: true,
        onBlock: (d) => out(f.json ? JSON.stringify({ ...d, windowStart: new Date(d.windowStartMs).toISOString() }) : `delete\t${d.reason}\t${d.tenant}\t${new Date(d.windowStartMs).toISOString()}\tshard ${d.shard}\t${d.bytes}\t${d.bucket}\t${d.key}`),
        onDebris: (d) => out(f.json ? JSON.stringify(d) : `discard\tincomplete upload\t${d.upload.key}\t${new Date(d.upload.startedMs).toISOString()}\t${d.bucket}`),
        onBucketDropped: (d) =>
          out(f.json ? JSON.stringify({ drop: 'bucket', ...d, start: new Date(d.startMs).toISOString(), end: new Date(d.endMs).toISOString() }) : `drop\t${d.reason}\t${d.tenant}\t${new Date(d.startMs).toISOString()}..${new Date(d.endMs).toISOString()}\t${d.objects} objects\t${d.bytes}\t${d.bucket}\t(whole bucket)`),
        // a bucket (or a tenant's buckets) that cannot be listed: the pass goes on with the others
        onError: (e) => {
          o.bucketsFailed++;
          process.stderr.write(`strata bucket retention: ${e.bucket}${e.key ? ` ${e.key}` : ''}: ${(e.err as Error).message}; what it holds is not in this output\n`);
        },
      });
      const n = res.blocksDeleted.retention + res.blocksDeleted.tenant_deleted;
      const b = res.bytesDeleted.retention + res.bytesDeleted.tenant_deleted;
      const dropped = res.bucketsDropped > 0 ? `, ${res.bucketsDropped} partition buckets dropped whole` : '';
      process.stderr.write(`dry run: ${n} blocks (${b} bytes) and ${res.debrisRemoved} incomplete uploads would be removed${dropped}\n`);
    });
  });
}
