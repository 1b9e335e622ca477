/**
 * The packages as a user gets them:
 * - the client package (packages/client, `npm pack`) installs into a fresh project from its
 *   tarball, pulls in none of the server's dependencies (LMDB, LevelDB, AWS SDK), type-checks
 *   with its declarations, and writes, seals and queries a running `strata serve` bit for bit;
 * - the server package's tarball holds what its `strata` bin runs (dist/), and runs from it.
 *
 * Uses the npm registry (the fresh project's `npm install`). Run alone:
 *   npx tap test/client/package.test.ts
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { blockKey, DEFAULT_BLOCK_DURATION_MS } from '../../src/format/key.js';
import { startServiceProcess } from '../support/service-process.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const run = promisify(execFile);
const npm = (cwd: string, ...args: string[]) => run('npm', [...args, '--no-audit', '--no-fund'], { cwd, maxBuffer: 64 * 1024 * 1024 });
const rootPkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string; dependencies: Record<string, string> };

interface Packed {
  filename: string;
  files: { path: string }[];
}

/** `npm pack` of the package in `dir` into `dest` (its prepack builds it); the tarball's path and files. */
async function pack(dir: string, dest: string): Promise<{ tarball: string; files: string[] }> {
  const { stdout } = await npm(dir, 'pack', '--json', '--pack-destination', dest);
  const p = (JSON.parse(stdout.slice(stdout.indexOf('['))) as Packed[])[0]!;
  return { tarball: join(dest, p.filename), files: p.files.map((f) => f.path) };
}

const APP = `import { QueryClient, QueryError, WriterClient, ErrorCode, ERROR_CODE_TRAILER } from 'strata-client';

const [write, read, window] = process.argv.slice(2);
const W = BigInt(window);
const id = 18446744073709551615n;
const bits = ['7ff0000000000002', '8000000000000000', '3ff0000000000000'];
const values = new Float64Array(bits.length);
const view = new DataView(values.buffer);
bits.forEach((b, i) => view.setBigUint64(i * 8, BigInt('0x' + b), true));
const timestamps = BigInt64Array.from(bits, (_, i) => W + BigInt(i) * 1000n);

const writer = new WriterClient({ tenant: 'app', numShards: 4, target: write });
await writer.write([{ id, timestamps, values }]);
const blocks = await writer.seal(W);
writer.close();

const client = new QueryClient({ futureHorizonMs: null, endpoints: [read], numShards: 4 });
const r = await client.query('app', [id], { start: W, end: W + 14400000n });
const s = r.series[0];
const got = new DataView(s.values.buffer, s.values.byteOffset, s.values.byteLength);
const wrong = new QueryClient({ futureHorizonMs: null, endpoints: [read], numShards: 12 }); // the id's shard is 3 of 12 too: the block's numShards differs
const refused = await wrong.query('app', [id], { start: W, end: W + 14400000n }).catch((e) => e);
client.close();
wrong.close();
console.log(JSON.stringify({
  blocks: blocks.map((b) => b.key),
  id: String(s.id),
  timestamps: Array.from(s.timestamps, String),
  bits: Array.from({ length: s.values.length }, (_, i) => got.getBigUint64(i * 8, true).toString(16)),
  refused: { isQueryError: refused instanceof QueryError, code: refused.code, strataCode: refused.strataCode },
  codes: [ErrorCode.CORRUPT, ERROR_CODE_TRAILER],
}));
`;

const TYPED = `import { QueryClient, type QueryResult, type WriteCallError, ErrorCode } from 'strata-client';
const c: QueryClient = new QueryClient({ endpoints: ['127.0.0.1:1'], numShards: 1 });
const r: Promise<QueryResult> = c.query('t', [1n], { start: 0n, end: 1n });
const code: string = ErrorCode.UNAUTHENTICATED;
function onError(e: WriteCallError): string | undefined { return e.strataCode; }
// @ts-expect-error series ids are bigint, never number
void c.query('t', [1], { start: 0n, end: 1n });
void r; void code; void onError;
`;

t.test('the client package installs from its tarball into a fresh project and queries a running Strata', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'strata-client-pkg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { tarball, files } = await pack(join(ROOT, 'packages', 'client'), dir);
  for (const f of ['package.json', 'README.md', 'LICENSE', 'dist/src/client/index.js', 'dist/src/client/index.d.ts', 'proto/write.proto', 'proto/read.proto']) t.ok(files.includes(f), `the tarball has ${f}`);
  t.same(files.filter((f) => /(^|\/)test\/|\.test\.|src\/(shard-aggregator|storage-gateway|objstore\/s3)/.test(f)), [], 'no tests, no server code');
  const clientPkg = JSON.parse(readFileSync(join(ROOT, 'packages', 'client', 'package.json'), 'utf8')) as { version: string; dependencies: Record<string, string> };
  t.equal(clientPkg.version, rootPkg.version, 'released with the same version as the server');
  for (const [dep, range] of Object.entries(clientPkg.dependencies)) t.equal(range, rootPkg.dependencies[dep], `${dep}: the server's range`);

  // a fresh project installs the tarball
  const app = join(dir, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true, type: 'module' }));
  await npm(app, 'install', tarball);
  for (const heavy of ['lmdb', 'classic-level', '@aws-sdk/client-s3', 'pino']) t.notOk(existsSync(join(app, 'node_modules', heavy)), `${heavy} is not installed`);

  // its declarations type-check a consumer (strict, NodeNext resolution through `exports`)
  writeFileSync(join(app, 'typed.ts'), TYPED);
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  await run(process.execPath, [tsc, '--noEmit', '--strict', '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--typeRoots', join(ROOT, 'node_modules', '@types'), '--types', 'node', 'typed.ts'], { cwd: app });

  // and it writes, seals and reads back through a running `strata serve`
  const strata = await startServiceProcess(t, ['serve', '--data-dir', join(dir, 'data'), '--num-shards', '4', '--write-listen', '127.0.0.1:0', '--read-listen', '127.0.0.1:0', '--write-metrics-listen', '127.0.0.1:0', '--read-metrics-listen', '127.0.0.1:0']);
  const D = BigInt(DEFAULT_BLOCK_DURATION_MS);
  const window = (BigInt(Date.now()) / D - 6n) * D; // a day ago: accepted whatever the date
  writeFileSync(join(app, 'app.mjs'), APP);
  const { stdout } = await run(process.execPath, ['app.mjs', `127.0.0.1:${strata.grpcPort}`, `127.0.0.1:${strata.readPort}`, String(window)], { cwd: app });
  const out = JSON.parse(stdout) as Record<string, unknown>;
  t.same(out, {
    blocks: [blockKey('app', 3, window)],
    id: '18446744073709551615',
    timestamps: [String(window), String(window + 1000n), String(window + 2000n)],
    bits: ['7ff0000000000002', '8000000000000000', '3ff0000000000000'],
    refused: { isQueryError: true, code: 9, strataCode: 'ERR_STRATA_FAILED_PRECONDITION' },
    codes: ['ERR_STRATA_CORRUPT', 'strata-error-code'],
  });
});

t.test("the server package's tarball holds the compiled CLI its bin runs", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'strata-server-pkg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { tarball, files } = await pack(ROOT, dir);
  for (const f of ['bin/strata.js', 'dist/src/cli/main.js', 'dist/build-info.json', 'proto/write.proto', 'LICENSE', 'monitoring/rules/strata-alerts.rules.yaml']) t.ok(files.includes(f), `the tarball has ${f}`);
  t.same(files.filter((f) => f.startsWith('test/') || f.startsWith('src/') || /\.test\.ts$/.test(f)), [], 'no tests and no TypeScript sources');
  // unpacked, with the dependencies beside it, its bin runs
  await run('tar', ['-xzf', tarball, '-C', dir]);
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'package', 'node_modules'));
  const { stdout } = await run(process.execPath, [join(dir, 'package', 'bin', 'strata.js'), '--version']);
  t.match(stdout, new RegExp(`^strata ${rootPkg.version.replace(/\./g, '\\.')} \\(commit [0-9a-f]{12}\\)\\n$`), 'the build recorded its commit');
});
