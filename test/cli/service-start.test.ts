/**
 * `strata aggregator` and `strata gateway` share their start-up: a config problem found while
 * starting (here an unreadable TLS certificate) exits with status 2 and a message naming the
 * option, for both services alike.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

function run(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', join(root, 'src', 'cli', 'main.ts'), ...args], { cwd: root, timeout: 60_000 }, (err, _stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stderr }),
    );
  });
}

t.test('an unreadable TLS certificate: exit status 2 naming the option, for both services', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'strata-service-start-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const common = ['--bucket-dir', join(dir, 'bucket'), '--listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0', '--tls-cert', join(dir, 'missing.pem'), '--tls-key', join(dir, 'missing.key'), '--log-level', 'silent'];
  const gateway = await run(['gateway', '--cache-dir', join(dir, 'cache'), ...common]);
  t.equal(gateway.code, 2, 'gateway: status 2');
  t.match(gateway.stderr, /^strata gateway: invalid TLS config: tls\.certFile: cannot read .*missing\.pem \(ENOENT\)/m);
  const aggregator = await run(['aggregator', '--wal-dir', join(dir, 'wal'), '--num-shards', '1', '--shards', '0', ...common]);
  t.equal(aggregator.code, 2, 'aggregator: status 2');
  t.match(aggregator.stderr, /^strata aggregator: invalid TLS config: tls\.certFile: cannot read .*missing\.pem \(ENOENT\)/m);
  // --print-config prints only what the service would start with
  const printed = await run(['gateway', '--cache-dir', join(dir, 'cache'), ...common, '--print-config']);
  t.equal(printed.code, 2, '--print-config: status 2');
  t.match(printed.stderr, /^strata gateway: invalid TLS config: tls\.certFile: cannot read .*missing\.pem \(ENOENT\)/m);
});

t.test('an out-of-range bucket option (partSizeBytes: 1024): exit status 2 naming it, at start-up and in --print-config, for both services', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'strata-service-range-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const bucket = { type: 's3', region: 'us-east-1', bucket: 'strata-range', endpoint: 'http://127.0.0.1:9', forcePathStyle: true, partSizeBytes: 1024 };
  const tenantsFile = join(dir, 'tenants.json');
  writeFileSync(tenantsFile, JSON.stringify({ authRequired: false, defaultBucket: bucket }));
  const services: [string, string[]][] = [
    ['gateway', ['--cache-dir', join(dir, 'cache')]],
    ['aggregator', ['--wal-dir', join(dir, 'wal'), '--num-shards', '1', '--shards', '0']],
  ];
  for (const [svc, own] of services) {
    const common = [svc, ...own, '--listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0', '--log-level', 'silent'];
    for (const where of ['the service config', 'the tenants file']) {
      const source = where === 'the service config' ? ['--set', `bucket=${JSON.stringify(bucket)}`] : ['--tenants-file', tenantsFile];
      for (const print of [true, false]) {
        const r = await run([...common, ...source, ...(print ? ['--print-config'] : [])]);
        const what = `${svc}, bucket in ${where}${print ? ', --print-config' : ''}`;
        t.equal(r.code, 2, `${what}: status 2`);
        t.match(r.stderr, /partSizeBytes: must be an integer in \[5242880, 5368709120\]/, `${what}: names the option and its range`);
      }
    }
  }
});

t.test('a metrics port in use: exit status 2 naming the address and metricsListen, for both services; a JSON tenants file with a tenant twice is refused', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'strata-service-metrics-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { createServer } = await import('node:net');
  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  t.teardown(() => taken.close());
  const port = (taken.address() as { port: number }).port;
  const common = ['--bucket-dir', join(dir, 'bucket'), '--listen', '127.0.0.1:0', '--metrics-listen', `127.0.0.1:${port}`, '--log-level', 'silent'];
  const gateway = await run(['gateway', '--cache-dir', join(dir, 'cache'), ...common]);
  t.equal(gateway.code, 2, 'gateway: status 2');
  t.match(gateway.stderr, `strata gateway: cannot listen on 127.0.0.1:${port} (metricsListen): the address is in use by another process`);
  const aggregator = await run(['aggregator', '--wal-dir', join(dir, 'wal'), '--num-shards', '1', '--shards', '0', ...common]);
  t.equal(aggregator.code, 2, 'aggregator: status 2');
  t.match(aggregator.stderr, `strata aggregator: cannot listen on 127.0.0.1:${port} (metricsListen)`);

  const tenantsFile = join(dir, 'tenants.json');
  writeFileSync(tenantsFile, `{"authRequired": false, "defaultBucket": {"type": "filesystem", "path": ${JSON.stringify(join(dir, 'b'))}}, "tenants": {"acme": {"tokens": []}, "acme": {}}}`);
  const dup = await run(['aggregator', '--wal-dir', join(dir, 'wal'), '--num-shards', '1', '--shards', '0', '--listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0', '--log-level', 'silent', '--tenants-file', tenantsFile]);
  t.equal(dup.code, 2, 'duplicate tenant: status 2');
  t.match(dup.stderr, /not valid JSON: Map keys must be unique/);
});
