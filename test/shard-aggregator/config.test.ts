/**
 * Aggregator config: defaults, unknown keys rejected (file, env, --set), typed env parsing,
 * ownership from a list or an ordinal, and the CLI's layering (file < env < flags).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { aggregatorConfigFrom } from '../../src/cli/aggregator.js';
import { ErrorCode, StrataError } from '../../src/errors.js';
import { configFromEnv, constantCase, ordinalFromHostname, ownedShards, parseAggregatorConfig } from '../../src/shard-aggregator/config.js';
import { tempDir } from '../support/aggregator.js';

const base = { walDir: '/tmp/wal', bucket: { type: 'filesystem', path: '/tmp/b' }, numShards: 8 };
const configError = { constructor: StrataError, code: ErrorCode.CONFIG };

t.test('parseAggregatorConfig() fills defaults and rejects bad or unknown options by name', (t) => {
  const c = parseAggregatorConfig(base);
  t.equal(c.blockDurationMs, 4 * 3600 * 1000);
  t.equal(c.walSync, true);
  t.equal(c.verifyUpload, 'full');
  t.same(c.bucket, { type: 'filesystem', path: '/tmp/b' });
  const bad: [string, Record<string, unknown>, RegExp][] = [
    ['unknown key', { ...base, walDirr: 'x' }, /Unrecognized key.*walDirr/],
    ['missing walDir', { ...base, walDir: undefined }, /walDir/],
    ['bad numShards', { ...base, numShards: 0 }, /numShards/],
    ['bad bucket', { ...base, bucket: { type: 'filesystem', path: '/x', extra: 1 } }, /bucket.*extra/],
    ['bad listen', { ...base, grpcListen: 'nope' }, /grpcListen: must be host:port/],
    ['shard out of range', { ...base, shards: [8] }, /shards: shard 8 is not below numShards/],
    ['list and ordinal', { ...base, shards: [1], ordinal: 0, replicas: 2 }, /either/],
    ['ordinal alone', { ...base, ordinal: 0 }, /go together/],
    ['ordinal too big', { ...base, ordinal: 2, replicas: 2 }, /ordinal: 2 is not below replicas/],
    ['negative delay', { ...base, flushDelayMs: -1 }, /flushDelayMs/],
    ['bad enum', { ...base, verifyUpload: 'some' }, /verifyUpload/],
    ['port above 65535', { ...base, metricsListen: '127.0.0.1:70000' }, /metricsListen: the port must be in 0\.\.65535/],
    ['timer beyond 2^31-1 ms', { ...base, flushRetryMaxMs: 2 ** 31 }, /flushRetryMaxMs: must be at most 2147483647 ms/],
    // beyond it the accepted range would leave the +-2^53 ms the write path checks exactly: Status advertised bounds Write refused
    ['future beyond 2^52 ms', { ...base, maxSampleFutureMs: 2 ** 52 + 1 }, /maxSampleFutureMs/],
    ['age beyond 2^52 ms', { ...base, maxSampleAgeMs: 2 ** 53 - 1 }, /maxSampleAgeMs/],
    ['bucket option out of range', { ...base, bucket: { type: 's3', region: 'r', bucket: 'bkt', retry: { maxAttempts: 0 } } }, /bucket: invalid bucket config: retry\.maxAttempts: must be an integer in \[1, 100\]/],
  ];
  for (const [name, input, msg] of bad) t.throws(() => parseAggregatorConfig(input), { ...configError, message: msg }, name);
  t.end();
});

t.test('ownedShards(): all, an explicit list, or an ordinal out of replicas', (t) => {
  t.same(ownedShards({ numShards: 3 }), [0, 1, 2]);
  t.same(ownedShards({ numShards: 8, shards: [5, 1, 5] }), [1, 5]);
  t.same(ownedShards({ numShards: 8, ordinal: 1, replicas: 3 }), [1, 4, 7]);
  t.equal(ordinalFromHostname('strata-aggregator-12'), 12);
  t.equal(ordinalFromHostname('strata-aggregator-3.svc.cluster.local'), 3);
  t.equal(ordinalFromHostname('laptop'), null);
  t.end();
});

t.test('configFromEnv() parses typed values and rejects unknown variables', (t) => {
  t.equal(constantCase('walWriteBufferBytes'), 'WAL_WRITE_BUFFER_BYTES');
  t.same(
    configFromEnv({
      STRATA_AGGREGATOR_NUM_SHARDS: '16',
      STRATA_AGGREGATOR_SHARDS: '0-2,7',
      STRATA_AGGREGATOR_WAL_SYNC: 'false',
      STRATA_AGGREGATOR_BUCKET: '{"type":"filesystem","path":"/x"}',
      STRATA_AGGREGATOR_CONFIG: '/ignored/here',
      OTHER: 'x',
    }),
    { numShards: 16, shards: [0, 1, 2, 7], walSync: false, bucket: { type: 'filesystem', path: '/x' } },
  );
  t.throws(() => configFromEnv({ STRATA_AGGREGATOR_WALDIR: '/x' }), { ...configError, message: /unknown environment variable STRATA_AGGREGATOR_WALDIR/ });
  t.throws(() => configFromEnv({ STRATA_AGGREGATOR_NUM_SHARDS: 'many' }), { ...configError, message: /NUM_SHARDS.*not an integer/ });
  t.throws(() => configFromEnv({ STRATA_AGGREGATOR_WAL_SYNC: 'yes' }), configError);
  t.throws(() => configFromEnv({ STRATA_AGGREGATOR_SHARDS: '5-3' }), { ...configError, message: /shards: the range "5-3" is reversed \(write 3-5\)/ });
  t.end();
});

t.test('aggregatorConfigFrom(): file < environment < flags', async (t) => {
  const dir = tempDir('aggcfg');
  const file = join(dir, 'c.json');
  writeFileSync(file, JSON.stringify({ ...base, flushConcurrency: 3, logLevel: 'warn' }));
  const c = await aggregatorConfigFrom(
    { config: file, numShards: '4', set: ['maxOpenWals=5', 'walSync=false'], ordinalFromHostname: true, replicas: '2' },
    { STRATA_AGGREGATOR_NUM_SHARDS: '6', STRATA_AGGREGATOR_FLUSH_CONCURRENCY: '4' },
    'strata-aggregator-1',
  );
  t.equal(c.numShards, 4, 'flag beats env and file');
  t.equal(c.flushConcurrency, 4, 'env beats file');
  t.equal(c.logLevel, 'warn', 'file beats default');
  t.equal(c.maxOpenWals, 5);
  t.equal(c.walSync, false);
  t.same(ownedShards(c), [1, 3]);
  await t.rejects(aggregatorConfigFrom({ config: file, set: ['nope=1'] }, {}), { ...configError, message: /unknown option "nope"/ });
  writeFileSync(file, '[1]');
  await t.rejects(aggregatorConfigFrom({ config: file, set: [] }, {}), { ...configError, message: /JSON object/ });
  await t.rejects(aggregatorConfigFrom({ config: join(dir, 'missing.json'), set: [] }, {}), { ...configError, message: /cannot read config file/ });
});

t.test('bucket or tenantsFile, not both; tls needs certFile and keyFile; the CLI maps the tenancy and TLS flags', async (t) => {
  const { bucket: _bucket, ...noBucket } = base;
  t.throws(() => parseAggregatorConfig(noBucket), { ...configError, message: /bucket: give a bucket, or a tenantsFile/ });
  t.throws(() => parseAggregatorConfig({ ...base, tenantsFile: '/etc/t.yaml' }), { ...configError, message: /either a bucket or a tenantsFile, not both/ });
  t.equal(parseAggregatorConfig({ ...noBucket, tenantsFile: '/etc/t.yaml' }).tenantsFile, '/etc/t.yaml');
  t.throws(() => parseAggregatorConfig({ ...base, tls: { certFile: '/c' } }), { ...configError, message: /tls\.keyFile/ });
  t.throws(() => parseAggregatorConfig({ ...base, tls: { certFile: '/c', keyFile: '/k', caFile: '/x' } }), { ...configError, message: /tls.*caFile/ });
  t.same(configFromEnv({ STRATA_AGGREGATOR_TENANTS_FILE: '/t.yaml', STRATA_AGGREGATOR_TLS: '{"certFile":"/c","keyFile":"/k"}' }), { tenantsFile: '/t.yaml', tls: { certFile: '/c', keyFile: '/k' } });
  const c = await aggregatorConfigFrom(
    { walDir: '/w', numShards: '2', tenantsFile: '/etc/strata/tenants.yaml', tlsCert: '/tls/crt', tlsKey: '/tls/key', tlsClientCa: '/tls/ca', set: [] },
    {},
  );
  t.equal(c.tenantsFile, '/etc/strata/tenants.yaml');
  t.same(c.tls, { certFile: '/tls/crt', keyFile: '/tls/key', clientCaFile: '/tls/ca' });
  t.equal(c.bucket, undefined);
});
