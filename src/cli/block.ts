/**
 * `strata block inspect <file-or-key>` and `strata block dump <file-or-key> --series ID`.
 * The argument is a local file when one exists at that path, else a key in the bucket chosen by
 * the bucket flags (the embedded filesystem bucket under ./data/bucket by default). S3
 * credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, never from flags.
 */
import { existsSync } from 'node:fs';
import { Command, Option } from 'commander';
import { BlockReader } from '../block/reader.js';
import { bucketSource, fileSource, type RangeSource } from '../block/source.js';
import { ErrorCode, InvalidArgumentError, StrataError } from '../errors.js';
import { openBucket, type Bucket, type BucketConfig } from '../objstore/index.js';
import { RUN_LZ4 } from '../format/run.js';

/** The flags of {@link addBucketOptions}. */
export interface BucketFlags {
  bucketPath: string;
  s3Endpoint?: string;
  s3Bucket?: string;
  s3Region: string;
  s3Prefix?: string;
  s3PathStyle?: boolean;
}

/** Adds the flags that choose a bucket to `cmd`. */
export function addBucketOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--bucket-path <dir>', 'filesystem bucket directory').default('./data/bucket'))
    .addOption(new Option('--s3-endpoint <url>', 'S3 endpoint (selects the S3 bucket with --s3-bucket)'))
    .addOption(new Option('--s3-bucket <name>', 'S3 bucket name'))
    .addOption(new Option('--s3-region <region>', 'S3 region').default('us-east-1'))
    .addOption(new Option('--s3-prefix <prefix>', 'key prefix inside the S3 bucket'))
    .addOption(new Option('--s3-path-style', 'path-style S3 addressing (local servers)'));
}

/** The bucket the flags name. */
export function bucketConfigFromFlags(f: BucketFlags): BucketConfig {
  if (!f.s3Bucket) {
    const s3 = [f.s3Endpoint !== undefined && '--s3-endpoint', f.s3Prefix !== undefined && '--s3-prefix', f.s3PathStyle === true && '--s3-path-style'].filter(Boolean);
    if (s3.length > 0) throw new StrataError(ErrorCode.CONFIG, `${s3.join(', ')} need --s3-bucket (without it the filesystem bucket of --bucket-path is used)`);
    return { type: 'filesystem', path: f.bucketPath };
  }
  const id = process.env['AWS_ACCESS_KEY_ID'];
  const secret = process.env['AWS_SECRET_ACCESS_KEY'];
  return {
    type: 's3',
    region: f.s3Region,
    bucket: f.s3Bucket,
    ...(f.s3Endpoint ? { endpoint: f.s3Endpoint } : {}),
    ...(f.s3Prefix ? { prefix: f.s3Prefix } : {}),
    ...(f.s3PathStyle ? { forcePathStyle: true } : {}),
    ...(id && secret ? { credentials: { accessKeyId: id, secretAccessKey: secret } } : {}),
  };
}

async function openSource(target: string, flags: BucketFlags): Promise<{ source: RangeSource; bucket?: Bucket }> {
  if (existsSync(target)) return { source: fileSource(target) };
  const bucket = await openBucket(bucketConfigFromFlags(flags), { create: false });
  return { source: bucketSource(bucket, target), bucket };
}

function iso(ms: bigint): string {
  const n = Number(ms);
  return Number.isFinite(n) && Math.abs(n) < 8.64e15 ? new Date(n).toISOString() : `${ms}`;
}

const TS_NAMES = ['shared', 'grid', 'dod', 'raw'];
const VAL_NAMES = ['?', 'const', 'scaled', 'ratio', 'float', 'near'];

/** `timestamps/values` layout names of a run's encoding byte (docs/format/chunk.md). */
function layoutName(enc: number): string {
  const v = (enc >> 3) & 15;
  const values = `${VAL_NAMES[v & 7] ?? v & 7}${v & 8 ? '+exceptions' : ''}`;
  return `${TS_NAMES[enc & 7] ?? enc & 7}/${values}`;
}

async function inspect(target: string, opts: BucketFlags & { runs?: boolean; json?: boolean }): Promise<void> {
  const { source, bucket } = await openSource(target, opts);
  try {
    const r = await BlockReader.open(source);
    const f = r.footer;
    const perPage: number[] = [];
    const pageBytes: number[] = [];
    for (let p = 0; p < r.ioi.pageCount; p++) {
      perPage.push(r.ioi.seriesCounts[p]!);
      pageBytes.push(r.ioi.lengths[p]!);
    }
    const stats = (xs: number[]) => (xs.length ? { min: Math.min(...xs), avg: Math.round(xs.reduce((a, b) => a + b, 0) / xs.length), max: Math.max(...xs) } : { min: 0, avg: 0, max: 0 });
    const per = (bytes: number) => (f.sampleCount ? bytes / f.sampleCount : 0);
    const report: Record<string, unknown> = {
      object: source.name,
      sizeBytes: r.size,
      version: f.version,
      blockId: f.blockId,
      tenant: f.tenant,
      shard: f.shard,
      numShards: f.numShards,
      window: { start: f.windowStart.toString(), end: f.windowEnd.toString(), startIso: iso(f.windowStart), endIso: iso(f.windowEnd) },
      createdAt: new Date(f.createdAtMs).toISOString(),
      series: f.seriesCount,
      samples: f.sampleCount,
      minTime: f.minTime.toString(),
      maxTime: f.maxTime.toString(),
      sections: {
        samples: { offset: f.samples.offset, bytes: f.samples.length, bytesPerSample: per(f.samples.length) },
        indexPages: { offset: f.index.offset, bytes: f.index.length, bytesPerSample: per(f.index.length) },
        indexOfIndex: { offset: f.ioi.offset, bytes: f.ioi.length, bytesPerSample: per(f.ioi.length) },
        footer: { bytes: r.size - f.ioi.offset - f.ioi.length, bytesPerSample: per(r.size - f.ioi.offset - f.ioi.length) },
        total: { bytes: r.size, bytesPerSample: per(r.size) },
      },
      index: { pages: f.pageCount, seriesPerPage: stats(perPage), pageBytes: stats(pageBytes), openReads: r.reads },
    };
    if (opts.runs) {
      const layouts: Record<string, number> = {};
      let lz4 = 0;
      const checked = await r.verify();
      for await (const loc of r.series()) {
        const head = await source.read({ offset: loc.offset, length: 1 });
        const enc = head.data[0]!;
        const k = layoutName(enc);
        layouts[k] = (layouts[k] ?? 0) + 1;
        if (enc & RUN_LZ4) lz4++;
      }
      report['runs'] = { verified: checked, layouts, lz4 };
    }
    if (opts.json) {
      console.log(JSON.stringify(report, null, 2));
      return;
    }
    const sec = report['sections'] as Record<string, { offset?: number; bytes: number; bytesPerSample: number }>;
    const lines = [
      `object      ${source.name} (${r.size} bytes, format v${f.version})`,
      `block id    ${f.blockId}, created ${new Date(f.createdAtMs).toISOString()}`,
      `tenant      ${f.tenant}, shard ${f.shard} of ${f.numShards}`,
      `window      [${f.windowStart}, ${f.windowEnd}) = ${iso(f.windowStart)} .. ${iso(f.windowEnd)}`,
      `contents    ${f.seriesCount} series, ${f.sampleCount} samples, time ${f.minTime} .. ${f.maxTime}`,
      'sections    bytes        bytes/sample',
      ...Object.entries(sec).map(([name, s]) => `  ${name.padEnd(13)} ${String(s.bytes).padStart(11)}  ${s.bytesPerSample.toFixed(4)}`),
      `index       ${f.pageCount} pages; series/page ${JSON.stringify(stats(perPage))}; page bytes ${JSON.stringify(stats(pageBytes))}`,
    ];
    if (report['runs']) lines.push(`runs        ${JSON.stringify(report['runs'])}`);
    console.log(lines.join('\n'));
  } finally {
    await bucket?.close();
  }
}

function formatValue(v: number, bits: bigint): string {
  if (Number.isNaN(v)) return `NaN(0x${bits.toString(16).padStart(16, '0')})`;
  if (Object.is(v, -0)) return '-0';
  return String(v);
}

async function dump(target: string, opts: BucketFlags & { series: string; start?: string; end?: string; json?: boolean }): Promise<void> {
  if (!/^\d+$/.test(opts.series)) throw new InvalidArgumentError('series', `"${opts.series}" is not an unsigned integer`);
  const id = BigInt(opts.series);
  const range = opts.start !== undefined || opts.end !== undefined ? { start: BigInt(opts.start ?? -(2n ** 63n)), end: BigInt(opts.end ?? 2n ** 63n - 1n) } : undefined;
  const { source, bucket } = await openSource(target, opts);
  try {
    const r = await BlockReader.open(source);
    const s = await r.readSeries(id, range);
    if (!s) {
      console.error(`series ${id} is not in ${source.name}`);
      process.exitCode = 1;
      return;
    }
    const bits = new BigUint64Array(s.values.buffer, s.values.byteOffset, s.values.length);
    const out: string[] = [];
    for (let i = 0; i < s.timestamps.length; i++) {
      const v = s.values[i]!;
      if (opts.json) {
        out.push(JSON.stringify({ series: id.toString(), t: s.timestamps[i]!.toString(), v: Number.isFinite(v) ? v : formatValue(v, bits[i]!), bits: bits[i]!.toString(16).padStart(16, '0') }));
      } else out.push(`${s.timestamps[i]}\t${formatValue(v, bits[i]!)}`);
    }
    if (out.length) console.log(out.join('\n'));
  } finally {
    await bucket?.close();
  }
}

/** Registers `strata block ...`. */
export function registerBlockCommands(program: Command): void {
  const block = program.command('block').description('look inside block files and objects');
  addBucketOptions(
    block
      .command('inspect <file-or-key>')
      .description('print block metadata, index statistics and bytes per sample per section')
      .option('--runs', 'also verify every checksum and count run layouts (reads the whole block)')
      .option('--json', 'print JSON'),
  ).action(inspect);
  addBucketOptions(
    block
      .command('dump <file-or-key>')
      .description("print one series' samples as `timestamp<TAB>value` lines (or JSON lines)")
      .requiredOption('--series <id>', 'series id (uint64)')
      .option('--start <ms>', 'first timestamp included')
      .option('--end <ms>', 'first timestamp excluded')
      .option('--json', 'print JSON lines with the exact value bits'),
  ).action(dump);
}
