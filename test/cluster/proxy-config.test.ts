/**
 * The local cluster's proxy configs (scripts/cluster/proxy-config.ts): the nginx map sends every
 * shard to the aggregator that owns it by the aggregator's own ownedShards(), the HAProxy backend
 * hashes the header the query client sends, nothing points outside the cluster directory, and the
 * real nginx (`nginx -t`) and HAProxy (`haproxy -c`) accept both files. Also the parsers the
 * cluster uses to observe itself (Prometheus text, HAProxy stats CSV).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { ownedShards } from '../../src/shard-aggregator/config.js';
import { BLOCK_HEADER, SHARD_HEADER } from '../../src/api/headers.js';
import { parseHaproxyStatsCsv, parsePrometheusText, sumMetric } from '../../scripts/cluster/observe.js';
import { HAPROXY_NAMES, nginxHeaderVariable, NGINX_UPSTREAM, renderHaproxyConfig, renderNginxConfig } from '../../scripts/cluster/proxy-config.js';
import { findExecutable, findProxyTools } from '../../scripts/cluster/tools.js';

const run = promisify(execFile);
const loop = (port: number): { host: string; port: number } => ({ host: '127.0.0.1', port });

/** nginx map entries: shard → upstream. */
function nginxMap(conf: string): Map<string, string> {
  const body = /map \$http_x_strata_shard \$strata_write_upstream \{\n([\s\S]*?)\n {4}\}/.exec(conf)?.[1] ?? '';
  return new Map(
    body
      .split('\n')
      .map((l) => l.trim().replace(/;$/, '').split(/\s+/))
      .map(([k, v]) => [k!.replace(/"/g, ''), v!]),
  );
}

/** nginx upstream blocks: name → server addresses. */
function nginxUpstreams(conf: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const m of conf.matchAll(/upstream (\S+) \{\n([\s\S]*?)\n {4}\}/g)) {
    out.set(m[1]!, [...m[2]!.matchAll(/server (\S+);/g)].map((s) => s[1]!));
  }
  return out;
}

t.test('renderNginxConfig() routes every shard to its owner, by ownedShards()', async (t) => {
  for (const [numShards, replicas] of [
    [16, 2],
    [7, 3],
    [5, 5],
    [64, 4],
  ] as const) {
    const aggregators = Array.from({ length: replicas }, (_, i) => loop(20000 + i));
    const conf = renderNginxConfig({ dir: '/tmp/x', listen: loop(19999), numShards, aggregators });
    t.equal(nginxHeaderVariable(SHARD_HEADER), '$http_x_strata_shard', 'the map reads the header the aggregator checks');
    const map = nginxMap(conf);
    const ups = nginxUpstreams(conf);
    t.equal(map.get('default'), NGINX_UPSTREAM.anyAggregator, `${numShards}/${replicas}: an unknown shard goes to any aggregator`);
    t.same(ups.get(NGINX_UPSTREAM.anyAggregator), aggregators.map((a) => `${a.host}:${a.port}`), 'which is all of them');
    for (let ordinal = 0; ordinal < replicas; ordinal++) {
      const routed = [...map].filter(([, u]) => u === NGINX_UPSTREAM.aggregator(ordinal)).map(([s]) => Number(s));
      t.same(routed, ownedShards({ numShards, ordinal, replicas }), `${numShards}/${replicas}: aggregator ${ordinal} gets exactly its shards`);
      t.same(ups.get(NGINX_UPSTREAM.aggregator(ordinal)), [`127.0.0.1:${20000 + ordinal}`], `and its upstream is that aggregator`);
    }
    t.equal(map.size, numShards + 1, 'one entry per shard plus the default');
  }
});

t.test('renderNginxConfig() keeps every path in its directory, and rejects what cannot work', async (t) => {
  const conf = renderNginxConfig({ dir: '/tmp/c/nginx/', listen: loop(1), numShards: 2, aggregators: [loop(2)] });
  const paths = [...conf.matchAll(/^\s*(?:pid|lock_file|error_log|access_log|\w+_temp_path) (\S+)/gm)].map((m) => m[1]!);
  t.equal(paths.length, 9, 'pid, lock, two logs, five temp paths');
  t.ok(paths.every((p) => p.startsWith('/tmp/c/nginx/') && !p.includes('//')), 'all under the directory', { paths });
  t.notMatch(conf, /^user /m, 'no user directive unless asked');
  t.match(renderNginxConfig({ dir: '/d', listen: loop(1), numShards: 1, aggregators: [loop(2)], workerUser: 'root' }), /^user root;$/m);
  t.match(conf, /listen 127\.0\.0\.1:1 http2;/, 'HTTP/2 cleartext listener (gRPC)');
  t.match(conf, /grpc_pass grpc:\/\/\$strata_write_upstream;/);
  t.throws(() => renderNginxConfig({ dir: '/d', listen: loop(1), numShards: 2, aggregators: [loop(2), loop(3), loop(4)] }), RangeError, 'more aggregators than shards');
  t.throws(() => renderNginxConfig({ dir: '/d', listen: loop(1), numShards: 2, aggregators: [] }), RangeError, 'no aggregator');
  t.throws(() => renderNginxConfig({ dir: 'relative', listen: loop(1), numShards: 2, aggregators: [loop(2)] }), RangeError, 'relative directory');
  t.throws(() => renderNginxConfig({ dir: '/a b;', listen: loop(1), numShards: 2, aggregators: [loop(2)] }), RangeError, 'directory nginx would misparse');
});

t.test('renderHaproxyConfig() hashes the block header consistently over every gateway', async (t) => {
  const conf = renderHaproxyConfig({ listen: loop(1), statsListen: loop(2), gateways: [0, 1, 2].map((i) => ({ grpc: loop(3000 + i), metricsPort: 4000 + i })) });
  t.match(conf, new RegExp(`^    balance hdr\\(${BLOCK_HEADER}\\)$`, 'm'), 'hashes the header the gateway checks and the query client sets');
  t.match(conf, /^    hash-type consistent$/m, 'consistent hashing: only a dead gateway\'s blocks move');
  t.match(conf, /^    bind 127\.0\.0\.1:1 proto h2$/m, 'h2 frontend');
  t.match(conf, /^    default-server proto h2 check /m, 'h2 to the gateways, health-checked');
  const servers = [...conf.matchAll(/^    server (\S+) (\S+) id (\d+) port (\d+)$/gm)].map((m) => m.slice(1));
  t.same(
    servers,
    [0, 1, 2].map((i) => [HAPROXY_NAMES.server(i), `127.0.0.1:${3000 + i}`, String(i + 1), String(4000 + i)]),
    'one server per gateway, hashed by its ordinal (id), checked on its metrics port',
  );
  t.throws(() => renderHaproxyConfig({ listen: loop(1), statsListen: loop(2), gateways: [] }), RangeError);
});

t.test('nginx and HAProxy accept the generated configs', async (t) => {
  const tools = findProxyTools(); // fails naming the packages when missing
  const dir = await mkdtemp(join(tmpdir(), 'strata-proxy-conf-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const nginxConf = join(dir, 'nginx.conf');
  await writeFile(
    nginxConf,
    renderNginxConfig({ dir, listen: loop(1), numShards: 16, aggregators: [loop(2), loop(3)], ...(process.getuid?.() === 0 ? { workerUser: 'root' } : {}) }),
  );
  const n = await run(tools.nginx, ['-p', `${dir}/`, '-c', nginxConf, '-e', 'stderr', '-t']).catch((err: { stderr?: string; message: string }) => ({ stderr: `FAILED: ${err.stderr ?? err.message}` }));
  t.match(n.stderr, /test is successful/, 'nginx -t', { output: n.stderr });
  const haproxyConf = join(dir, 'haproxy.cfg');
  await writeFile(haproxyConf, renderHaproxyConfig({ listen: loop(1), statsListen: loop(2), gateways: [{ grpc: loop(3), metricsPort: 4 }] }));
  const h = await run(tools.haproxy, ['-c', '-f', haproxyConf]).catch((err: { stdout?: string; stderr?: string; message: string }) => ({
    stdout: `FAILED: ${err.stdout ?? ''} ${err.stderr ?? err.message}`,
    stderr: '',
  }));
  t.match(h.stdout, /Configuration file is valid/, 'haproxy -c', { output: `${h.stdout}${h.stderr}` });
  t.notMatch(h.stderr, /WARNING|ALERT/, 'without warnings', { output: h.stderr });
});

t.test('findProxyTools() names the missing programs and their packages', async (t) => {
  t.match(findExecutable('sh', '/nonexistent:/usr/bin:/bin', []), /^\/(usr\/)?bin\/sh$/, 'finds a program on PATH');
  t.equal(findExecutable('sh', '', ['/bin']), '/bin/sh', 'or in the extra directories');
  t.equal(findExecutable('strata-no-such-program', '/nonexistent', ['/nonexistent2']), null);
  t.throws(
    () => findProxyTools('/nonexistent', []),
    { message: /needs nginx and haproxy, not found .*apt-get install --no-install-recommends nginx-light haproxy/ },
    'the error says what to install',
  );
});

t.test('parsePrometheusText() reads samples, labels and special values', async (t) => {
  const text = [
    '# HELP strata_gateway_cache_hits_total Cache hits by layer.',
    '# TYPE strata_gateway_cache_hits_total counter',
    'strata_gateway_cache_hits_total{layer="open_block"} 3',
    'strata_gateway_cache_hits_total{layer="range"} 4.5',
    'weird{a="x\\"y",b="line\\nbreak",c="back\\\\slash"} 1 1700000000000',
    'lag Nan',
    'up +Inf',
    'down -inf',
    'plain 0',
    '',
  ].join('\n');
  const s = parsePrometheusText(text);
  t.equal(s.length, 7);
  t.equal(sumMetric(s, 'strata_gateway_cache_hits_total'), 7.5, 'sum over label sets');
  t.equal(sumMetric(s, 'strata_gateway_cache_hits_total', { layer: 'range' }), 4.5, 'filtered by label');
  t.equal(sumMetric(s, 'missing'), 0);
  t.same(s[2]!.labels, { a: 'x"y', b: 'line\nbreak', c: 'back\\slash' }, 'escapes in label values');
  t.ok(Number.isNaN(s[3]!.value), 'Nan (as prom-client writes it)');
  t.equal(s[4]!.value, Infinity);
  t.equal(s[5]!.value, -Infinity);
  t.throws(() => parsePrometheusText('not a sample line at all'), /not a Prometheus sample line/);
  t.throws(() => parsePrometheusText('x{a=unquoted} 1'), /cannot parse the labels/);
  t.throws(() => parsePrometheusText('x one'), /bad sample value/);
});

t.test('parseHaproxyStatsCsv() lists the servers and their status', async (t) => {
  const csv = [
    '# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight',
    'strata_read,FRONTEND,,,0,1,4096,3,0,0,0,0,0,,,,,OPEN,',
    'strata_gateway,gateway-0,0,0,0,1,,2,0,0,,0,,0,0,0,0,UP,1',
    'strata_gateway,gateway-1,0,0,0,1,,2,0,0,,0,,0,0,0,0,DOWN,1',
    'strata_gateway,BACKEND,0,0,0,1,410,3,0,0,0,0,,0,0,0,0,UP,2',
    '',
  ].join('\n');
  t.same(parseHaproxyStatsCsv(csv), [
    { backend: 'strata_gateway', server: 'gateway-0', status: 'UP' },
    { backend: 'strata_gateway', server: 'gateway-1', status: 'DOWN' },
  ]);
  t.throws(() => parseHaproxyStatsCsv('pxname,svname\n'), /header/);
});
