/**
 * `strata push` of the text formats, as a real child process against an in-process aggregator:
 * Prometheus text with ms timestamps, OpenMetrics with second timestamps and CSV, the series id
 * taken from the label or column named on the command line, values bit for bit in the sealed
 * blocks; progress on stderr; a line that cannot be read stops the push naming file and line.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { BlockReader } from '../../src/block/reader.js';
import { bucketSource } from '../../src/block/source.js';
import { createLogger } from '../../src/common/logger.js';
import { blockKey, DEFAULT_BLOCK_DURATION_MS } from '../../src/format/key.js';
import { FilesystemBucket } from '../../src/objstore/fs.js';
import { parseAggregatorConfig } from '../../src/shard-aggregator/config.js';
import { startAggregatorServer } from '../../src/shard-aggregator/server.js';
import { readPushInput, splitCsvLine, splitExpositionLine, type PushInput } from '../../src/cli/push-input.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const D = BigInt(DEFAULT_BLOCK_DURATION_MS);

function push(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), 'push', ...args], { cwd: ROOT }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code) : 0, stdout, stderr }),
    );
  });
}

const bitsOf = (v: number): string => {
  const b = Buffer.alloc(8);
  b.writeDoubleLE(v);
  return b.readBigUInt64LE().toString(16);
};

t.test('splitExpositionLine() and splitCsvLine() read escapes and quotes', (t) => {
  t.same(splitExpositionLine('m{a="x\\"y",id="7",b="l1\\nl2"} -1.5e3 1795219200000'), { labels: new Map([['a', 'x"y'], ['id', '7'], ['b', 'l1\nl2']]), value: '-1.5e3', timestamp: '1795219200000' });
  t.same(splitExpositionLine('up 1'), { labels: new Map(), value: '1', timestamp: undefined });
  t.equal(splitExpositionLine('# HELP up x'), null);
  t.equal(splitExpositionLine('m{a="x} 1 2'), 'unterminated label value');
  t.same(splitCsvLine('7,"a ""quoted"", b",1795219200000, NaN'), ['7', 'a "quoted", b', '1795219200000', 'NaN']);
  t.equal(splitExpositionLine('m{sid="400",sid="401"} 1 2'), 'the label "sid" appears twice');
  t.end();
});

t.test('what Prometheus refuses is refused: content after # EOF, a decimal beyond float64, a label named twice', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'strata-push-input-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const read = async (name: string, format: PushInput['format'], lines: string[]): Promise<unknown> => {
    const path = join(dir, name);
    writeFileSync(path, lines.join('\n'));
    const got: [string, string, number][] = [];
    try {
      for await (const chunk of readPushInput({ path, format, idField: 'sid', chunkSamples: 16 })) {
        for (const s of chunk) for (let i = 0; i < s.timestamps.length; i++) got.push([String(s.id), String(s.timestamps[i]), s.values[i]!]);
      }
    } catch (err) {
      return (err as Error).message;
    }
    return got;
  };
  // blank lines after # EOF are fine; anything else is not read as more samples
  t.same(await read('ok.om', 'openmetrics', ['m{sid="1"} 2.5 1795219200.5', '# EOF', '', '']), [['1', '1795219200500', 2.5]]);
  t.match(await read('after.om', 'openmetrics', ['m{sid="1"} 2.5 1795219200.5', '# EOF', 'm{sid="2"} 1 1795219201']), /after\.om:3: content after "# EOF" \(line 2 ends the exposition\)$/);
  t.match(await read('big.prom', 'prom', ['m{sid="1"} 1e400 1795219200000']), /big\.prom:1: value 1e400 is beyond the float64 range \(write \+Inf or -Inf for an infinity\)$/);
  t.match(await read('small.prom', 'prom', ['m{sid="1"} -1.8e308 1795219200000']), /value -1\.8e308 is beyond the float64 range/);
  t.same(await read('inf.prom', 'prom', ['m{sid="1"} +Inf 1795219200000', 'm{sid="1"} 1.7976931348623157e308 1795219200001']), [['1', '1795219200000', Infinity], ['1', '1795219200001', 1.7976931348623157e308]]);
  t.match(await read('twice.prom', 'prom', ['m{sid="400",sid="401"} 1 1795219200000']), /twice\.prom:1: the label "sid" appears twice$/);
});

t.test('a write past --write-deadline-ms fails with exit 1 and says the data may be stored and what to change', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'strata-push-deadline-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // an endpoint that takes connections and never answers: every attempt runs into the deadline
  const silent = createServer(() => undefined);
  const sockets = new Set<Socket>();
  silent.on('connection', (s) => void sockets.add(s));
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((r) => silent.close(() => r()));
  });
  const file = join(dir, 'one.prom');
  writeFileSync(file, 'm{sid="1"} 2.5 1795219200000\n');
  const port = (silent.address() as AddressInfo).port;
  const r = await push(['--tenant', 'acme', '--num-shards', '1', '--target', `127.0.0.1:${port}`, '--id-label', 'sid', '--write-deadline-ms', '500', '--retries', '1', '--no-progress', file]);
  t.equal(r.code, 1, r.stderr);
  t.match(r.stderr, /answered DEADLINE_EXCEEDED: .*; the aggregator may still have stored it \(writes are idempotent: push the file again\), and a request spanning many windows needs a longer --write-deadline-ms \(now 500\) or a smaller --batch-samples/);
});

t.test('strata push reads Prometheus text, OpenMetrics and CSV with the id from a named label or column', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'strata-push-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const config = parseAggregatorConfig({ walDir: join(dir, 'wal'), bucket: { type: 'filesystem', path: join(dir, 'bucket') }, numShards: 2, grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0', flushIdleMs: 3600_000 });
  const running = await startAggregatorServer({ config, logger: createLogger({ level: 'silent' }) });
  t.teardown(() => running.shutdown());
  await running.ready;
  const target = `127.0.0.1:${running.grpcPort}`;
  const W = (BigInt(Date.now()) / D - 6n) * D; // a day ago: accepted whatever the date
  const bucket = new FilesystemBucket({ path: join(dir, 'bucket') });

  /** The samples of `id` in the block of `tenant`, as [ts, value bits]. */
  const stored = async (tenant: string, id: bigint): Promise<[string, string][]> => {
    const reader = await BlockReader.open(bucketSource(bucket, blockKey(tenant, Number(id % 2n), W)));
    const s = (await reader.readSeries(id))!;
    return Array.from(s.timestamps, (ts, i) => [String(ts), bitsOf(s.values[i]!)]);
  };

  // Prometheus text: ms timestamps, the id in label "sid", other labels ignored, comments skipped
  const prom = join(dir, 'samples.prom');
  writeFileSync(
    prom,
    [
      '# HELP cpu_seconds_total CPU time',
      '# TYPE cpu_seconds_total counter',
      `cpu_seconds_total{sid="18446744073709551615",mode="user",path="a \\"b\\""} 1.5 ${W}`,
      `cpu_seconds_total{mode="user",sid="18446744073709551615"} -0 ${W + 15_000n}`,
      `cpu_seconds_total{sid="4"} NaN ${W + 1n}`,
      `cpu_seconds_total{sid="4"} +Inf ${W + 2n}`,
      '',
    ].join('\n'),
  );
  const p = await push([prom, '--tenant', 'prom', '--num-shards', '2', '--target', target, '--id-label', 'sid', '--seal', '--progress']);
  t.equal(p.code, 0, p.stderr);
  t.match(JSON.parse(p.stdout), { samples: 4, windows: [String(W)], blocks: [{ key: blockKey('prom', 0, W), samples: 2 }, { key: blockKey('prom', 1, W), samples: 2 }] });
  t.match(p.stderr, /^pushed 4 samples \(100% of the file read\), [\d,]+ samples\/s, 2 requests, 0 retries$/m, 'progress on stderr');
  t.match(p.stderr, new RegExp(`^sealing window ${W} \\(1 of 1\\)$`, 'm'));
  t.same(await stored('prom', 2n ** 64n - 1n), [[String(W), bitsOf(1.5)], [String(W + 15_000n), '8000000000000000']]);
  t.same(await stored('prom', 4n), [[String(W + 1n), '7ff8000000000000'], [String(W + 2n), '7ff0000000000000']]);

  // on a terminal (script(1) gives it one) progress is on by default, one line redrawn in place
  const cmd = [process.execPath, '--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), 'push', prom, '--tenant', 'tty', '--num-shards', '2', '--target', target, '--id-label', 'sid'].join(' ');
  const tty = await promisify(execFile)('script', ['-qec', cmd, '/dev/null'], { cwd: ROOT });
  t.match(tty.stdout, /\rpushed 4 samples \(100% of the file read\), [\d,]+ samples\/s, 2 requests, 0 retries\x1b\[K\r?\n/, 'redrawn with \\r on a terminal');

  // OpenMetrics: timestamps in seconds with a fraction, # EOF; the format from the extension
  const om = join(dir, 'samples.om');
  const secs = W / 1000n;
  writeFileSync(om, [`# TYPE m gauge`, `m{series="9"} 2.25 ${secs}.001`, `m{series="9"} 3 ${secs + 1n}.5`, '# EOF', ''].join('\n'));
  const o = await push([om, '--tenant', 'om', '--num-shards', '2', '--target', target, '--id-label', 'series', '--seal', '--no-progress']);
  t.equal(o.code, 0, o.stderr);
  t.equal(o.stderr, '', 'no progress with --no-progress');
  t.same(await stored('om', 9n), [[String(W + 1n), bitsOf(2.25)], [String(W + 1500n), bitsOf(3)]]);

  // CSV: a header, the id column named, other columns ignored, quoted fields
  const csv = join(dir, 'samples.csv');
  writeFileSync(csv, ['host,series_id,ts,v', `"a,b",6,${W + 7n},0.1`, `c,6,${W + 8n},-Inf`, `d,11,${W},123456789.125`, ''].join('\n'));
  const c = await push([csv, '--tenant', 'csv', '--num-shards', '2', '--target', target, '--id-column', 'series_id', '--timestamp-column', 'ts', '--value-column', 'v', '--seal']);
  t.equal(c.code, 0, c.stderr);
  t.match(JSON.parse(c.stdout), { samples: 3 });
  t.same(await stored('csv', 6n), [[String(W + 7n), bitsOf(0.1)], [String(W + 8n), 'fff0000000000000']]);
  t.same(await stored('csv', 11n), [[String(W), bitsOf(123456789.125)]]);

  // what cannot be read stops the push, naming the file and line
  const noTs = join(dir, 'bad.prom');
  writeFileSync(noTs, `m{sid="1"} 1 ${W}\nm{sid="1"} 2\n`);
  const bad = await push([noTs, '--tenant', 'prom', '--num-shards', '2', '--target', target, '--id-label', 'sid']);
  t.equal(bad.code, 2);
  t.equal(bad.stderr, `strata push: invalid samples file: ${noTs}:2: the sample has no timestamp (push needs the time of every sample)\n`);
  const noLabel = await push([prom, '--tenant', 'prom', '--num-shards', '2', '--target', target, '--id-label', 'nope']);
  t.match(noLabel.stderr, /samples\.prom:3: the sample has no label "nope" \(--id-label\)/);
  const noColumn = await push([csv, '--tenant', 'csv', '--num-shards', '2', '--target', target, '--id-column', 'id']);
  t.match(noColumn.stderr, /samples\.csv:1: the header has no column "id" \(--id-column\)/);
  const noId = await push([csv, '--tenant', 'csv', '--num-shards', '2', '--target', target]);
  t.equal(noId.stderr, 'strata push: invalid --id-column: the csv format needs the column that holds the series id\n');
});
