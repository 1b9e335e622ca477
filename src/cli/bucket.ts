/**
 * `strata bucket ls | usage | verify | retention --dry-run`: what is in the buckets, block by
 * block. With `--tenants-file`, every bucket of the file (the default bucket and each distinct
 * tenant bucket); otherwise the one bucket the bucket flags name (as for `strata block`).
 *
 * - `ls`: one line per block: tenant, window start, shard, size, bucket and key.
 * - `usage`: per tenant, blocks, bytes and samples (samples from each block's footer).
 * - `verify`: reads every block whole and checks every checksum; progress on stderr when it is a
 *   terminal; exit status 1 when a block is corrupt.
 * - `retention --dry-run`: the blocks the lifecycle role would delete now (retention and deleted
 *   tenants) and the incomplete uploads it would discard.
 */
import { Command, Option } from 'commander';
import { BlockReader } from '../block/reader.js';
import { bucketSource } from '../block/source.js';
import { DEFAULT_BLOCK_DURATION_MS, parseBlockKey } from '../format/key.js';
import { parseDayKey } from '../format/day-key.js';
import { distinctBuckets, runLifecyclePass, type BlockDeletion } from '../lifecycle/job.js';
import { openBucket, type Bucket } from '../objstore/index.js';
import { loadTenantsFile, openTenantsConfig } from '../tenancy/config.js';
import { ALL_PARTITION_CLIENTS, TenantRegistry } from '../tenancy/tenants.js';
import { addBucketOptions, bucketConfigFromFlags, type BucketFlags } from './block.js';

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
  const cfg = f.tenantsFile !== undefined ? await loadTenantsFile(f.tenantsFile) : openTenantsConfig(bucketConfigFromFlags(f));
  return new TenantRegistry(cfg, { openBucket: (c) => openBucket(c), maxPartitionClients: ALL_PARTITION_CLIENTS });
}

/** Runs `fn` with the registry of the flags, closing it afterwards; errors go to stderr (exit 1). */
async function withBuckets(name: string, f: BucketsFlags, fn: (r: TenantRegistry) => Promise<void>): Promise<void> {
  let registry: TenantRegistry | null = null;
  try {
    registry = await registryFromFlags(f);
    await fn(registry);
  } catch (err) {
    process.stderr.write(`strata bucket ${name}: ${(err as Error).message}\n`);
    process.exitCode = 1;
  } finally {
    await registry?.close();
  }
}

/** A block as listed: what a deletion names, but no reason. */
type BlockEntry = Omit<BlockDeletion, 'reason'>;

/** Every block of the registry's buckets (of one tenant when `tenant` is given). */
async function* blocksOf(r: TenantRegistry, tenant: string | undefined): AsyncGenerator<BlockEntry & { readonly reader: Bucket }> {
  for (const { name, bucket } of await distinctBuckets(r)) {
    for await (const info of bucket.list(tenant !== undefined ? `blocks/${tenant}/` : 'blocks/')) {
      const p = parseBlockKey(info.key);
      // day blocks too (src/lifecycle/README.md, "Day blocks"): listed, measured and verified like the others
      const d = p ? null : parseDayKey(info.key);
      if (p) yield { bucket: name, key: info.key, tenant: p.tenant, shard: p.shard, windowStartMs: Number(p.windowStartMs), bytes: info.size, reader: bucket };
      else if (d?.kind === 'block') yield { bucket: name, key: info.key, tenant: d.tenant, shard: d.shard, windowStartMs: Number(d.dayStartMs), bytes: info.size, reader: bucket };
    }
  }
}

const out = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

/** Registers `strata bucket ...`. */
export function registerBucketCommands(program: Command): void {
  const bucket = program.command('bucket').description('list, measure and verify the blocks in the buckets; show what retention would delete');
  addBucketsOptions(
    bucket
      .command('ls')
      .description('one line per block: tenant, window start, shard, bytes, bucket, key')
      .option('--tenant <id>', 'only this tenant')
      .option('--json', 'JSON lines'),
  ).action(async (f: BucketsFlags) => {
    await withBuckets('ls', f, async (r) => {
      for await (const b of blocksOf(r, f.tenant)) {
        const { reader: _r, ...e } = b;
        if (f.json) out(JSON.stringify({ ...e, windowStart: new Date(e.windowStartMs).toISOString(), kind: '4h' }));
        else out(`${e.tenant}\t${new Date(e.windowStartMs).toISOString()}\tshard ${e.shard}\t${e.bytes}\t${e.bucket}\t${e.key}`);
      }
    });
  });
  addBucketsOptions(
    bucket
      .command('usage')
      .description('per tenant: blocks, bytes, samples (from the block footers)')
      .option('--tenant <id>', 'only this tenant')
      .option('--json', 'JSON lines'),
  ).action(async (f: BucketsFlags) => {
    await withBuckets('usage', f, async (r) => {
      const per = new Map<string, { blocks: number; bytes: number; samples: number; series: number }>();
      for await (const b of blocksOf(r, f.tenant)) {
        const reader = await BlockReader.open(bucketSource(b.reader, b.key));
        const u = per.get(b.tenant) ?? { blocks: 0, bytes: 0, samples: 0, series: 0 };
        u.blocks++;
        u.bytes += b.bytes;
        u.samples += reader.footer.sampleCount;
        u.series += reader.footer.seriesCount;
        per.set(b.tenant, u);
      }
      for (const [tenant, u] of [...per].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
        if (f.json) out(JSON.stringify({ tenant, ...u }));
        else out(`${tenant}\t${u.blocks} blocks\t${u.bytes} bytes\t${u.samples} samples`);
      }
    });
  });
  addBucketsOptions(
    bucket
      .command('verify')
      .description('read every block and check every checksum (exit status 1 if one is corrupt)')
      .option('--tenant <id>', 'only this tenant')
      .addOption(new Option('--progress', 'progress on stderr (default: when stderr is a terminal)'))
      .option('--no-progress', 'no progress'),
  ).action(async (f: BucketsFlags & { progress?: boolean }) => {
    const progress = f.progress ?? process.stderr.isTTY === true;
    await withBuckets('verify', f, async (r) => {
      let checked = 0;
      let bad = 0;
      let bytes = 0;
      for await (const b of blocksOf(r, f.tenant)) {
        try {
          const reader = await BlockReader.open(bucketSource(b.reader, b.key));
          await reader.verify();
        } catch (err) {
          bad++;
          if (progress) process.stderr.write('\n');
          out(`CORRUPT\t${b.bucket}\t${b.key}\t${(err as Error).message}`);
        }
        checked++;
        bytes += b.bytes;
        if (progress) process.stderr.write(`\rverified ${checked} blocks, ${bytes} bytes, ${bad} corrupt`);
      }
      if (progress) process.stderr.write('\n');
      out(`${checked} blocks checked, ${bytes} bytes, ${bad} corrupt`);
      if (bad > 0) process.exitCode = 1;
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
      .option('--json', 'JSON lines'),
  ).action(async (f: BucketsFlags & { blockDurationMs: string; retentionGraceMs: string; incompleteUploadMaxAgeMs: string; at?: string }) => {
    await withBuckets('retention', f, async (r) => {
      const num = (name: string, v: string): number => {
        if (!/^\d+$/.test(v)) throw new Error(`--${name}: "${v}" is not a non-negative integer`);
        return Number(v);
      };
      let at = Date.now();
      if (f.at !== undefined) {
        at = /^\d+$/.test(f.at) ? Number(f.at) : Date.parse(f.at);
        if (!Number.isSafeInteger(at)) throw new Error(`--at: "${f.at}" is neither an ISO 8601 time nor ms since the epoch`);
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
      });
      const n = res.blocksDeleted.retention + res.blocksDeleted.tenant_deleted;
      const b = res.bytesDeleted.retention + res.bytesDeleted.tenant_deleted;
      const dropped = res.bucketsDropped > 0 ? `, ${res.bucketsDropped} partition buckets dropped whole` : '';
      process.stderr.write(`dry run: ${n} blocks (${b} bytes) and ${res.debrisRemoved} incomplete uploads would be removed${dropped}\n`);
    });
  });
}
