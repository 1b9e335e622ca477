/**
 * The gateway's pure parts: coalescing plans, message chunking, the byte LRU, single flight, and
 * config validation.
 */
import t from 'tap';
import fc from 'fast-check';
import { decodeReadResponse } from '../../src/api/read-codec.js';
import { planGets } from '../../src/storage-gateway/coalesce.js';
import { ENV_PREFIX, configFromEnv, parseGatewayConfig } from '../../src/storage-gateway/config.js';
import { serveConfigs } from '../../src/cli/serve.js';
import { ByteLru } from '../../src/storage-gateway/lru.js';
import { SingleFlight, raceSignal } from '../../src/storage-gateway/single-flight.js';
import { MESSAGE_OVERHEAD_BYTES, planMessages, rawMessages, runMessages } from '../../src/storage-gateway/wire.js';

t.test('planGets() coalesces ranges by gap and size', async (t) => {
  const cases: { name: string; ranges: [number, number][]; gap: number; max: number; want: [number, number, number[]][] }[] = [
    { name: 'nothing', ranges: [], gap: 10, max: 100, want: [] },
    { name: 'one', ranges: [[5, 3]], gap: 10, max: 100, want: [[5, 3, [0]]] },
    { name: 'adjacent', ranges: [[0, 10], [10, 10]], gap: 0, max: 100, want: [[0, 20, [0, 1]]] },
    { name: 'gap at the limit joins', ranges: [[0, 10], [20, 5]], gap: 10, max: 100, want: [[0, 25, [0, 1]]] },
    { name: 'gap over the limit splits', ranges: [[0, 10], [21, 5]], gap: 10, max: 100, want: [[0, 10, [0]], [21, 5, [1]]] },
    { name: 'unsorted input', ranges: [[50, 10], [0, 10], [12, 3]], gap: 5, max: 100, want: [[0, 15, [1, 2]], [50, 10, [0]]] },
    { name: 'size cap', ranges: [[0, 40], [40, 40], [80, 40]], gap: 0, max: 100, want: [[0, 80, [0, 1]], [80, 40, [2]]] },
    { name: 'a range over the cap alone', ranges: [[0, 500], [500, 1]], gap: 10, max: 100, want: [[0, 500, [0]], [500, 1, [1]]] },
    { name: 'duplicates and overlaps', ranges: [[0, 10], [0, 10], [5, 20]], gap: 0, max: 100, want: [[0, 25, [0, 1, 2]]] },
  ];
  for (const c of cases) {
    const got = planGets(c.ranges.map(([offset, length]) => ({ offset, length })), { maxGapBytes: c.gap, maxGetBytes: c.max });
    t.same(got.map((g) => [g.offset, g.length, [...g.members]]), c.want, c.name);
  }
});

t.test('planGets() covers every range exactly once, inside its GET', async (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ offset: fc.integer({ min: 0, max: 1e6 }), length: fc.integer({ min: 1, max: 5e4 }) }), { maxLength: 50 }),
      fc.integer({ min: 0, max: 1e5 }),
      fc.integer({ min: 1, max: 2e5 }),
      (ranges, gap, max) => {
        const plan = planGets(ranges, { maxGapBytes: gap, maxGetBytes: max });
        const seen = plan.flatMap((g) => [...g.members]).sort((a, b) => a - b);
        if (seen.join() !== ranges.map((_, i) => i).join()) return false;
        for (const g of plan) {
          if (g.members.length > 1 && g.length > max) return false;
          for (const m of g.members) {
            const r = ranges[m]!;
            if (r.offset < g.offset || r.offset + r.length > g.offset + g.length) return false;
          }
        }
        return true;
      },
    ),
  );
  t.pass('property holds');
});

t.test('planMessages() keeps every message within the budget and every unit once, in order', async (t) => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 0, max: 3000 }), { maxLength: 30 }),
      fc.constantFrom([16, 12], [1, 16]),
      fc.integer({ min: 160, max: 20_000 }),
      (sizes, [unit, frag], max) => {
        const plan = planMessages(sizes, unit!, frag!, max);
        if (plan.length === 0) return false;
        const next = sizes.map(() => 0);
        let lastItem = -1;
        for (const msg of plan) {
          let bytes = MESSAGE_OVERHEAD_BYTES;
          for (const f of msg) {
            if (f.item < lastItem || f.from !== next[f.item] || f.to <= f.from) return false;
            next[f.item] = f.to;
            lastItem = f.item;
            bytes += frag! + (f.to - f.from) * unit!;
          }
          if (bytes > max) return false;
        }
        return next.every((n, i) => n === sizes[i]);
      },
    ),
  );
  t.throws(() => planMessages([1], 16, 12, 100), RangeError, 'a budget with no room for one unit');
  t.pass('property holds');
});

t.test('rawMessages() and runMessages() split series across messages as planned', async (t) => {
  const ts = BigInt64Array.from({ length: 100 }, (_, i) => BigInt(i));
  const vs = Float64Array.from({ length: 100 }, (_, i) => i / 3);
  const max = MESSAGE_OVERHEAD_BYTES + 12 + 16 * 40;
  const encoded = rawMessages('ab'.repeat(16), [{ id: 7n, samples: { timestamps: ts, values: vs } }], max);
  t.ok(encoded.every((b) => b.length <= max), 'every message within the budget');
  const msgs = encoded.map(decodeReadResponse);
  t.equal(msgs.length, 3);
  t.equal(msgs[0]!.blockId, 'ab'.repeat(16));
  t.equal(msgs[1]!.blockId, '', 'only the first message names the block');
  t.same(msgs.map((m) => m.sampleCounts.readUInt32LE(0)), [40, 40, 20]);
  t.same(msgs.map((m) => m.seriesIds.readBigUInt64LE(0)), [7n, 7n, 7n]);
  t.equal(Buffer.compare(Buffer.concat(msgs.map((m) => m.values)), Buffer.from(vs.buffer)), 0);
  t.equal(Buffer.compare(Buffer.concat(msgs.map((m) => m.timestamps)), Buffer.from(ts.buffer)), 0);
  const runs = runMessages('', [{ id: 1n, run: Buffer.alloc(10, 1), crc: 5 }, { id: 2n, run: Buffer.alloc(30, 2), crc: 6 }], MESSAGE_OVERHEAD_BYTES + 2 * 16 + 25).map(decodeReadResponse);
  t.same(runs.map((m) => m.runs.length), [25, 15]);
  t.same(runs.map((m) => m.runCrcs.readUInt32LE(0)), [5, 6]);
  const empty = rawMessages('', [], 1 << 20);
  t.equal(empty.length, 1, 'an empty answer is one message');
  t.equal(empty[0]!.length, 0);
});

t.test('ByteLru evicts least recently used entries beyond its byte budget', async (t) => {
  const evicted: string[] = [];
  const lru = new ByteLru<string, number>(100, (k) => evicted.push(k));
  lru.set('a', 1, 40);
  lru.set('b', 2, 40);
  t.equal(lru.get('a'), 1);
  lru.set('c', 3, 40);
  t.same(evicted, ['b']);
  t.equal(lru.bytes, 80);
  lru.set('d', 4, 101);
  t.equal(lru.get('d'), undefined, 'an entry larger than the budget is not kept');
  lru.set('a', 5, 10);
  t.equal(lru.bytes, 50, 'replacing an entry replaces its size');
  t.equal(lru.peek('c'), 3);
  t.ok(lru.delete('c'));
  t.equal(lru.size, 1);
});

t.test('SingleFlight shares one run per key and releases the key when it settles', async (t) => {
  const sf = new SingleFlight<string, number>();
  let runs = 0;
  let release!: (v: number) => void;
  const work = (): Promise<number> => {
    runs++;
    return new Promise((r) => (release = r));
  };
  const a = sf.do('k', work);
  const b = sf.do('k', work);
  t.equal(a.shared, false);
  t.equal(b.shared, true);
  release(7);
  t.same(await Promise.all([a.promise, b.promise]), [7, 7]);
  t.equal(runs, 1);
  t.equal(sf.size, 0);
  const c = sf.do('k', () => Promise.reject(new Error('boom')));
  await t.rejects(c.promise, /boom/);
  t.equal(sf.size, 0, 'released after a failure too');
  const ac = new AbortController();
  const never = new Promise<number>(() => undefined);
  const raced = raceSignal(never, ac.signal);
  ac.abort(new Error('gone'));
  await t.rejects(raced, /gone/);
});

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
