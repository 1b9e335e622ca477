/**
 * The gateway's config: defaults, validation naming the option, environment variables
 * (src/storage-gateway/config.ts), and `strata serve`'s two configs.
 */
import t from 'tap';
import { ENV_PREFIX, configFromEnv, parseGatewayConfig } from '../../src/storage-gateway/config.js';
import { serveConfigs } from '../../src/cli/serve.js';

t.test('gateway config: defaults, validation naming the option, environment variables', async (t) => {
  const bucket = { type: 'filesystem', path: '/tmp/x' };
  const cfg = parseGatewayConfig({ bucket, cacheDir: '/tmp/c' });
  t.equal(cfg.cacheType, 'lmdb');
  t.equal(cfg.stalenessMs, 60_000);
  t.equal(cfg.grpcListen, '0.0.0.0:7402');
  t.throws(() => parseGatewayConfig({ bucket, cacheDir: '/tmp/c', cacheMaxByte: 5 }), /invalid gateway config: .*cacheMaxByte/, 'unknown keys are rejected');
  t.throws(() => parseGatewayConfig({ bucket, cacheDir: '/tmp/c', maxMessageBytes: 100 }), /maxMessageBytes/);
  t.throws(() => parseGatewayConfig({ bucket }), /cacheDir: required/);
  t.equal(parseGatewayConfig({ bucket, cacheType: 'memory' }).cacheDir, undefined);
  t.throws(() => parseGatewayConfig({ bucket: { type: 'ftp' }, cacheType: 'memory' }), /bucket/);
  t.throws(() => parseGatewayConfig({ bucket, cacheType: 'memory', grpcListen: 'nope' }), /grpcListen: must be host:port/);
  // a timer longer than Node's timers hold fired at once: every re-check served stale
  t.throws(() => parseGatewayConfig({ bucket, cacheType: 'memory', recheckTimeoutMs: 3_000_000_000 }), /recheckTimeoutMs: .*2147483647/);
  t.same(configFromEnv({ [`${ENV_PREFIX}CACHE_MAX_BYTES`]: '1024', [`${ENV_PREFIX}BUCKET`]: '{"type":"filesystem","path":"/b"}', HOME: '/root' }), {
    cacheMaxBytes: 1024,
    bucket: { type: 'filesystem', path: '/b' },
  });
  t.throws(() => configFromEnv({ [`${ENV_PREFIX}CACHE_SIZE`]: '1' }), /unknown environment variable STRATA_GATEWAY_CACHE_SIZE/);
  t.throws(() => configFromEnv({ [`${ENV_PREFIX}STALENESS_MS`]: 'soon' }), /stalenessMs: "soon" is not an integer/);
});

t.test('parseGatewayConfig() wants exactly one of bucket and tenantsFile', async (t) => {
  const base = { cacheType: 'memory' };
  t.throws(() => parseGatewayConfig(base), /bucket: give a bucket, or a tenantsFile/);
  t.throws(() => parseGatewayConfig({ ...base, bucket: { type: 'filesystem', path: '/tmp/x' }, tenantsFile: '/etc/t.yaml' }), /either a bucket or a tenantsFile, not both/);
  t.equal(parseGatewayConfig({ ...base, tenantsFile: '/etc/t.yaml' }).tenantsFile, '/etc/t.yaml');
  t.same(parseGatewayConfig({ ...base, tenantsFile: '/etc/t.yaml', tls: { certFile: 'c', keyFile: 'k' } }).tls, { certFile: 'c', keyFile: 'k' });
  t.throws(() => parseGatewayConfig({ ...base, tenantsFile: '/etc/t.yaml', tls: { certFile: 'c' } }), /tls\.keyFile/);
  t.same(configFromEnv({ [`${ENV_PREFIX}TENANTS_FILE`]: '/t.yaml', [`${ENV_PREFIX}TLS`]: '{"certFile":"c","keyFile":"k"}' }), { tenantsFile: '/t.yaml', tls: { certFile: 'c', keyFile: 'k' } });
});

t.test('serveConfigs() gives both services the tenants file instead of the bucket', async (t) => {
  const flags = {
    dataDir: '/tmp/strata-serve',
    numShards: '4',
    writeListen: '127.0.0.1:0',
    readListen: '127.0.0.1:0',
    writeMetricsListen: '127.0.0.1:0',
    readMetricsListen: '127.0.0.1:0',
    logLevel: 'silent',
    aggregatorSet: [],
    gatewaySet: [],
  };
  const plain = serveConfigs(flags);
  t.same(plain.gateway.bucket, { type: 'filesystem', path: '/tmp/strata-serve/bucket' });
  t.equal(plain.gateway.tenantsFile, undefined);
  const tenanted = serveConfigs({ ...flags, tenantsFile: '/etc/strata/tenants.yaml' });
  for (const cfg of [tenanted.aggregator, tenanted.gateway]) {
    t.equal(cfg.tenantsFile, '/etc/strata/tenants.yaml');
    t.equal(cfg.bucket, undefined);
  }
});
