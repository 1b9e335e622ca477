import t from 'tap';
import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const golden = join(root, 'test', 'fixtures', 'golden-v1.block');
const run = (...args: string[]) => promisify(execFile)(process.execPath, ['--import', 'tsx', join(root, 'src', 'cli', 'main.ts'), ...args], { cwd: root });

t.test('strata block inspect prints metadata, index statistics and bytes per sample', async (t) => {
  const { stdout } = await run('block', 'inspect', golden, '--runs', '--json');
  const r = JSON.parse(stdout) as Record<string, any>;
  t.equal(r['blockId'], '0123456789abcdef0123456789abcdef');
  t.equal(r['tenant'], 'golden');
  t.equal(r['series'], 40);
  t.equal(r['index'].pages, 7);
  t.equal(r['sections'].total.bytes, r['sizeBytes']);
  t.equal(r['sections'].total.bytesPerSample, r['sizeBytes'] / r['samples']);
  t.same(r['runs'].verified, { series: 40, samples: r['samples'] });
  const text = await run('block', 'inspect', golden);
  t.match(text.stdout, /tenant\s+golden, shard 3 of 8/);
});

t.test('strata block inspect --runs names the version 2 layouts', async (t) => {
  const { stdout } = await run('block', 'inspect', join(root, 'test', 'fixtures', 'golden-v2.block'), '--runs', '--json');
  const r = JSON.parse(stdout) as { version?: number; runs: { layouts: Record<string, number> } };
  const names = Object.keys(r.runs.layouts);
  t.ok(names.some((k) => k.startsWith('shared/')), `runs with shared timestamps among ${names.join(', ')}`);
  t.ok(names.some((k) => k.endsWith('+exceptions')), 'runs with exceptions');
  t.notOk(names.some((k) => /\?|\d/.test(k)), 'every layout has a name');
});

t.test('strata block dump prints exact values, NaN payloads included', async (t) => {
  const { stdout } = await run('block', 'dump', golden, '--series', '18446744073709551611');
  t.equal(stdout, '1795219200000\tNaN(0x7ff0000000000002)\n1795219200001\t-0\n1795233599999\tInfinity\n');
  const json = await run('block', 'dump', golden, '--series', '18446744073709551611', '--json', '--start', '1795219200001');
  t.same(json.stdout.trim().split('\n').map((l) => JSON.parse(l).bits), ['8000000000000000', '7ff0000000000000']);
  const missing = await run('block', 'dump', golden, '--series', '4').then(() => null, (e: { code: number; stderr: string }) => e);
  t.equal(missing?.code, 1);
  t.match(missing?.stderr, /series 4 is not in/);
});

t.test('strata serve on an address another process holds exits 2 with a message naming it, whichever service cannot listen', async (t) => {
  const net = await import('node:net');
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const busy = net.createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
  t.teardown(() => busy.close());
  const taken = `127.0.0.1:${(busy.address() as { port: number }).port}`;
  for (const [flag, other] of [['--write-listen', '--read-listen'], ['--read-listen', '--write-listen']] as const) {
    const dir = mkdtempSync(join(tmpdir(), 'strata-cli-busy-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const args = ['serve', '--data-dir', dir, flag, taken, other, '127.0.0.1:0', '--write-metrics-listen', '127.0.0.1:0', '--read-metrics-listen', '127.0.0.1:0'];
    const failed = await run(...args).then(
      () => null,
      (e: { code: number; stderr: string }) => e,
    );
    t.equal(failed?.code, 2, `${flag} taken: exit status 2`);
    t.match(failed?.stderr ?? '', new RegExp(`strata serve: cannot listen on ${taken} \\(grpcListen\\): the address is in use by another process`));
    // what grpc-js prints of it goes to the JSON log like everything else, not to stderr as it is
    t.notMatch(failed?.stderr ?? '', /No address added/, `${flag} taken: no bare library line on stderr`);
  }
});

t.test('a directory option that names a file stops the role at start with exit status 2 naming the option', async (t) => {
  const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'strata-cli-notdir-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'a-file');
  writeFileSync(file, 'not a directory');
  const listen = ['--listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0'];
  const cases: [string, string[], RegExp][] = [
    ['the gateway with --bucket-dir a file', ['gateway', '--bucket-dir', file, '--cache-dir', join(dir, 'cache'), ...listen], /the bucket directory .*a-file \(bucket\.path, --bucket-dir\) is not a directory/],
    ['the gateway with --cache-dir a file', ['gateway', '--bucket-dir', join(dir, 'bucket'), '--cache-dir', file, ...listen], /a-file \(cacheDir\)/],
    ['the aggregator with --wal-dir a file', ['aggregator', '--bucket-dir', join(dir, 'bucket'), '--wal-dir', file, '--num-shards', '1', ...listen], /walDir .*a-file/],
  ];
  for (const [what, args, message] of cases) {
    const failed = await run(...args).then(
      () => null,
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    t.equal(failed?.code, 2, `${what}: exit status 2`);
    t.match(`${failed?.stderr ?? ''}${failed?.stdout ?? ''}`, message, `${what}: names the option`);
  }
});
