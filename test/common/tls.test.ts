/**
 * TLS and mTLS of the aggregator's gRPC server and the writer client, with certificates made by
 * `openssl` at test time, on loopback: unreadable or mismatched files are CONFIG errors naming the
 * option; a TLS server refuses plaintext and untrusted clients; an mTLS server refuses clients
 * without a certificate or with one of another CA; `strata push` connects with --tls-ca,
 * --tls-cert/--tls-key and a token from STRATA_TOKEN or --token-file. (Filesystem bucket: no S3.)
 */
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { status } from '@grpc/grpc-js';
import t, { type Test } from 'tap';
import { BlockReader } from '../../src/block/reader.js';
import { bucketSource } from '../../src/block/source.js';
import { WriterClient, type SeriesData } from '../../src/client/writer.js';
import { createLogger } from '../../src/common/logger.js';
import { clientChannelSecurity, serverCredentials } from '../../src/common/tls.js';
import { ErrorCode } from '../../src/errors.js';
import { blockKey, DEFAULT_BLOCK_DURATION_MS } from '../../src/format/key.js';
import { FilesystemBucket } from '../../src/objstore/fs.js';
import { parseAggregatorConfig } from '../../src/shard-aggregator/config.js';
import { startAggregatorServer, type RunningAggregator } from '../../src/shard-aggregator/server.js';
import { hashToken, newToken } from '../../src/tenancy/config.js';
import { makeTestCerts } from '../support/certs.js';
import { tempDir } from '../support/aggregator.js';

const ROOT = join(import.meta.dirname, '..', '..');
const H = BigInt(DEFAULT_BLOCK_DURATION_MS);
const W = ((BigInt(Date.now()) - 24n * 3600n * 1000n) / H) * H;
const certs = makeTestCerts(t);
const TOKEN = newToken();

function series(id: bigint, n: number): SeriesData {
  const ts = new BigInt64Array(n);
  const vs = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    ts[i] = W + BigInt(i) * 1000n;
    vs[i] = Number(id) * 1000 + i / 8;
  }
  return { id, timestamps: ts, values: vs };
}

/** An in-process aggregator with a tenants file (tenant `tls`, filesystem bucket) and `tls`. */
async function server(t: Test, tls: Record<string, unknown>): Promise<{ running: RunningAggregator; bucketDir: string }> {
  const dir = tempDir('tls-agg');
  const tenantsFile = join(dir, 'tenants.json');
  writeFileSync(tenantsFile, JSON.stringify({ defaultBucket: { type: 'filesystem', path: join(dir, 'bucket') }, tenants: { tls: { tokens: [hashToken(TOKEN)] } } }));
  const config = parseAggregatorConfig({ walDir: join(dir, 'wal'), tenantsFile, tls, numShards: 1, grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0', flushIdleMs: 3600_000 });
  const running = await startAggregatorServer({ config, logger: createLogger({ level: 'silent' }) });
  t.teardown(() => running.shutdown());
  await running.ready;
  return { running, bucketDir: join(dir, 'bucket') };
}

/** Writes one series with `client`; resolves 'OK' or the gRPC status name. */
async function tryWrite(c: WriterClient, id: bigint): Promise<string> {
  try {
    await c.write([series(id, 10)]);
    return 'OK';
  } catch (err) {
    const code = (err as { code?: number }).code;
    if (typeof code === 'number') return status[code] ?? String(code);
    throw err;
  } finally {
    c.close();
  }
}

function client(port: number, extra: Partial<ConstructorParameters<typeof WriterClient>[0]> = {}): WriterClient {
  return new WriterClient({ tenant: 'tls', numShards: 1, target: `127.0.0.1:${port}`, authToken: TOKEN, retry: { maxAttempts: 1 }, writeDeadlineMs: 5000, ...extra });
}

t.test('unreadable, non-PEM or mismatched files are CONFIG errors naming the option, without key material', (t) => {
  const dir = tempDir('tls-bad');
  const notPem = join(dir, 'not.pem');
  writeFileSync(notPem, 'hello');
  const keyText = readFileSync(certs.serverKey, 'utf8');
  const cases: [string, () => unknown, RegExp][] = [
    ['missing server cert', () => serverCredentials({ certFile: join(dir, 'nope.crt'), keyFile: certs.serverKey }), /tls\.certFile: cannot read .*nope\.crt \(ENOENT\)/],
    ['server key not PEM', () => serverCredentials({ certFile: certs.serverCert, keyFile: notPem }), /tls\.keyFile: .*holds no PEM data/],
    ['key of another certificate', () => serverCredentials({ certFile: certs.serverCert, keyFile: certs.clientKey }), /tls: the certificate, key or CA file cannot be used/],
    ['missing client CA', () => serverCredentials({ certFile: certs.serverCert, keyFile: certs.serverKey, clientCaFile: join(dir, 'ca.crt') }), /tls\.clientCaFile: cannot read/],
    ['client cert without key', () => clientChannelSecurity({ certFile: certs.clientCert }), /tls: a client certificate needs both certFile and keyFile/],
    ['client CA missing', () => clientChannelSecurity({ caFile: join(dir, 'x.crt') }), /tls\.caFile: cannot read/],
  ];
  for (const [name, fn, re] of cases) {
    let err: unknown = null;
    try {
      fn();
    } catch (e) {
      err = e;
    }
    t.match(err, { code: ErrorCode.CONFIG, message: re }, name);
    t.notMatch((err as Error | null)?.message ?? '', /PRIVATE KEY|BEGIN/, `${name}: no PEM in the message`);
    t.notOk(((err as Error | null)?.message ?? '').includes(keyText.split('\n')[1]!), `${name}: no key bytes in the message`);
  }
  t.ok(serverCredentials(undefined)._isSecure() === false, 'no tls: plaintext');
  t.ok(serverCredentials({ certFile: certs.serverCert, keyFile: certs.serverKey })._isSecure(), 'tls');
  t.end();
});

t.test('a TLS server refuses plaintext and untrusted clients and serves trusted ones', async (t) => {
  const { running, bucketDir } = await server(t, { certFile: certs.serverCert, keyFile: certs.serverKey });
  const port = running.grpcPort;
  t.equal(await tryWrite(client(port), 1n), 'UNAVAILABLE', 'plaintext client');
  t.equal(await tryWrite(client(port, { tls: {} }), 1n), 'UNAVAILABLE', 'TLS client trusting only the system roots');
  t.equal(await tryWrite(client(port, { tls: { caFile: certs.rogueCaCert } }), 1n), 'UNAVAILABLE', 'TLS client trusting another CA');
  t.equal(await tryWrite(client(port, { tls: { caFile: certs.caCert, serverName: 'other.example' } }), 1n), 'UNAVAILABLE', 'certificate for another name');
  t.equal(await tryWrite(client(port, { tls: { caFile: certs.caCert }, authToken: 'strata_wrong' }), 1n), 'UNAUTHENTICATED', 'TLS does not replace the token');
  const c = client(port, { tls: { caFile: certs.caCert } });
  t.teardown(() => c.close());
  const input = series(2n, 300);
  t.same(await c.write([input]), { requests: 1, samples: 300, series: 1, retries: 0 });
  const blocks = await c.seal(W);
  t.same(blocks.map((b) => [b.key, b.samples]), [[blockKey('tls', 0, W), 300]]);
  const reader = await BlockReader.open(bucketSource(new FilesystemBucket({ path: bucketDir }), blockKey('tls', 0, W)));
  const got = await reader.readSeries(2n);
  t.same(Buffer.from(got!.values.buffer, got!.values.byteOffset, got!.values.byteLength), Buffer.from(input.values.buffer), 'values bit-exact');
  t.equal(await tryWrite(client(port, { tls: { caFile: certs.caCert, serverName: 'localhost' } }), 3n), 'OK', 'serverName override');
});

t.test('an mTLS server refuses clients without a certificate of its CA; strata push connects with flags and STRATA_TOKEN', async (t) => {
  const { running } = await server(t, { certFile: certs.serverCert, keyFile: certs.serverKey, clientCaFile: certs.caCert });
  const port = running.grpcPort;
  t.equal(await tryWrite(client(port, { tls: { caFile: certs.caCert } }), 1n), 'UNAVAILABLE', 'no client certificate');
  t.equal(await tryWrite(client(port, { tls: { caFile: certs.caCert, certFile: certs.rogueClientCert, keyFile: certs.rogueClientKey } }), 1n), 'UNAVAILABLE', 'client certificate of another CA');
  t.equal(await tryWrite(client(port, { tls: { caFile: certs.caCert, certFile: certs.clientCert, keyFile: certs.clientKey } }), 1n), 'OK', 'client certificate of the CA');

  const dir = tempDir('tls-push');
  const file = join(dir, 'samples.bin');
  const recs = Buffer.alloc(24 * 40);
  for (let i = 0; i < 40; i++) {
    recs.writeBigUInt64LE(BigInt(100 + (i % 4)), 24 * i);
    recs.writeBigInt64LE(W + BigInt(Math.floor(i / 4)) * 1000n, 24 * i + 8);
    recs.writeDoubleLE(i, 24 * i + 16);
  }
  writeFileSync(file, recs);
  const run = (args: string[], env: Record<string, string>) =>
    promisify(execFile)(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), 'push', file, '--tenant', 'tls', '--num-shards', '1', '--target', `127.0.0.1:${port}`, '--retries', '1', ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
    }).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
    );
  const mtls = ['--tls-ca', certs.caCert, '--tls-cert', certs.clientCert, '--tls-key', certs.clientKey];
  let r = await run([...mtls, '--seal'], { STRATA_TOKEN: TOKEN });
  t.equal(r.code, 0, `push over mTLS with STRATA_TOKEN: ${r.stderr}`);
  t.same((JSON.parse(r.stdout) as { samples: number; blocks: { key: string }[] }).blocks.map((b) => b.key), [blockKey('tls', 0, W)]);
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, `${TOKEN}\n`);
  r = await run(['--tls-ca', certs.caCert, '--tls-cert', certs.clientCert, '--tls-key', certs.clientKey, '--token-file', tokenFile], {});
  t.equal(r.code, 0, `push with --token-file: ${r.stderr}`);
  r = await run(mtls, { STRATA_TOKEN: '' });
  t.equal(r.code, 1, 'no token: refused');
  t.match(r.stderr, /UNAUTHENTICATED: missing bearer token/);
  r = await run(['--tls-ca', certs.caCert], { STRATA_TOKEN: TOKEN });
  t.equal(r.code, 1, 'no client certificate: refused');
  t.match(r.stderr, /UNAVAILABLE/);
  r = await run(['--tls-ca', join(dir, 'missing.crt')], { STRATA_TOKEN: TOKEN });
  t.equal(r.code, 2, 'unreadable CA file: usage error');
  t.match(r.stderr, /tls\.caFile: cannot read/);
  t.notOk(`${r.stdout}${r.stderr}`.includes(TOKEN), 'the token is never printed');
});
