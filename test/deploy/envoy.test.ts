/**
 * Envoy config: the committed bootstrap validates against Envoy's own API protos and against the
 * write/read routing the services need; it is exactly what the generator produces; the generator
 * is valid for other topologies; and the validator reports each kind of deliberate breakage
 * (written to a temp dir and read back like the real file).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parse, stringify } from 'yaml';
import { ownedShards } from '../../src/shard-aggregator/config.js';
import { BLOCK_HEADER, SHARD_HEADER } from '../../src/api/headers.js';
import { CLUSTER, generateEnvoyBootstrap, generatorCommand, HTTP_PROTOCOL_OPTIONS_KEY, renderEnvoyYaml, shardOwners, TYPE } from '../../scripts/deploy/envoy-gen.js';
import { envoyProtoRoot, validateEnvoyBootstrap, validateEnvoyYaml } from '../../scripts/deploy/envoy-validate.js';
import { formatProblems, parseDuration, ProtoChecker } from '../../scripts/deploy/proto-check.js';
import { DEFAULT_TOPOLOGY, podDnsName, type Topology } from '../../scripts/deploy/topology.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const COMMITTED = join(ROOT, 'envoy', 'strata.yaml');
const exp = { topology: DEFAULT_TOPOLOGY };

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const COMMITTED_DATA = parse(readFileSync(COMMITTED, 'utf8')) as Json;

/** A fresh deep copy of the committed bootstrap, to break. */
function committed(): Json {
  return structuredClone(COMMITTED_DATA);
}

const listener = (b: Json, name: string): Json => b.static_resources.listeners.find((l: Json) => l.name === name);
const routesOf = (b: Json, name: string): Json[] => listener(b, name).filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes;
const cluster = (b: Json, name: string): Json => b.static_resources.clusters.find((c: Json) => c.name === name);
const hcm = (b: Json, name: string): Json => listener(b, name).filter_chains[0].filters[0].typed_config;

t.test('envoy/strata.yaml validates against the Envoy API protos and the default topology', (t) => {
  const problems = validateEnvoyYaml(readFileSync(COMMITTED, 'utf8'), exp);
  t.equal(formatProblems(problems), '', 'no problems');
  t.end();
});

t.test('envoy/strata.yaml and k8s/generated/envoy.yaml are what the generator writes (regenerate: node --import tsx scripts/gen-envoy.ts)', (t) => {
  const want = renderEnvoyYaml(DEFAULT_TOPOLOGY, generatorCommand(DEFAULT_TOPOLOGY, DEFAULT_TOPOLOGY));
  t.equal(readFileSync(COMMITTED, 'utf8'), want, 'envoy/strata.yaml is current');
  t.equal(readFileSync(join(ROOT, 'k8s', 'generated', 'envoy.yaml'), 'utf8'), want, 'k8s/generated/envoy.yaml is current');
  t.end();
});

t.test('the committed write routes send every shard to its owner, by the aggregator\'s ownedShards()', (t) => {
  const b = committed();
  const routes = routesOf(b, 'strata_write').filter((r) => r.match.headers);
  t.equal(routes.length, DEFAULT_TOPOLOGY.numShards);
  const { replicas } = DEFAULT_TOPOLOGY.aggregator;
  for (let ordinal = 0; ordinal < replicas; ordinal++) {
    const host = podDnsName(DEFAULT_TOPOLOGY, DEFAULT_TOPOLOGY.aggregator, ordinal);
    const viaEnvoy = routes
      .filter((r) => cluster(b, r.route.cluster).load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address === host)
      .map((r) => Number(r.match.headers[0].string_match.exact))
      .sort((x, y) => x - y);
    t.same(viaEnvoy, ownedShards({ numShards: DEFAULT_TOPOLOGY.numShards, ordinal, replicas }), `${host} gets exactly its shards`);
  }
  const read = routesOf(b, 'strata_read')[0]!;
  t.equal(read.route.hash_policy[0].header.header_name, BLOCK_HEADER, 'reads hash the gateway\'s block header');
  t.equal(routes[0]!.match.headers[0].name, SHARD_HEADER, 'writes match the aggregator\'s shard header');
  t.equal(cluster(b, CLUSTER.gateway).lb_policy, 'MAGLEV');
  t.end();
});

t.test('generateEnvoyBootstrap() is valid for other topologies and refuses impossible ones', (t) => {
  const shapes: [number, number, number][] = [
    [1, 1, 1],
    [16, 3, 7],
    [100, 7, 2],
    [64, 64, 64],
    [1024, 32, 64],
  ];
  for (const [numShards, aggs, gws] of shapes) {
    const topo: Topology = {
      ...DEFAULT_TOPOLOGY,
      namespace: 'metrics',
      numShards,
      aggregator: { ...DEFAULT_TOPOLOGY.aggregator, replicas: aggs },
      gateway: { ...DEFAULT_TOPOLOGY.gateway, replicas: gws },
    };
    const problems = validateEnvoyBootstrap(generateEnvoyBootstrap(topo), { topology: topo });
    t.equal(formatProblems(problems), '', `${numShards} shards, ${aggs} aggregators, ${gws} gateways`);
  }
  const owners = shardOwners(10, 3);
  t.same(owners, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]);
  t.throws(() => generateEnvoyBootstrap({ ...DEFAULT_TOPOLOGY, numShards: 2 }), RangeError, 'more aggregators than shards');
  t.throws(() => generateEnvoyBootstrap({ ...DEFAULT_TOPOLOGY, gateway: { ...DEFAULT_TOPOLOGY.gateway, replicas: 0 } }), RangeError);
  t.end();
});

t.test('the structural check catches what protobufjs fromObject() silently accepts', (t) => {
  const root = envoyProtoRoot();
  const Cluster = root.lookupType('envoy.config.cluster.v3.Cluster');
  const input = { name: 'c', lb_polcy: 'MAGLEV' };
  const decoded = Cluster.toObject(Cluster.fromObject(input), { enums: String }) as Json;
  t.same(decoded, { name: 'c' }, 'fromObject drops the misspelt field without a word');
  const c = new ProtoChecker(root);
  c.checkMessage('envoy.config.cluster.v3.Cluster', input);
  t.match(formatProblems(c.problems), /unknown field "lb_polcy" in envoy\.config\.cluster\.v3\.Cluster \(did you mean "lb_policy"\?\)/);
  t.end();
});

t.test('ProtoChecker accepts JSON names, refuses both spellings at once, and checks durations', (t) => {
  const root = envoyProtoRoot();
  const check = (v: unknown): string => {
    const c = new ProtoChecker(root);
    c.checkMessage('envoy.config.cluster.v3.Cluster', v);
    return formatProblems(c.problems);
  };
  t.equal(check({ name: 'c', connectTimeout: '0.25s', lbPolicy: 'RING_HASH' }), '');
  t.match(check({ name: 'c', connect_timeout: '1s', connectTimeout: '1s' }), /given twice/);
  t.match(check({ name: 'c', connect_timeout: 5 }), /duration string/);
  t.match(check({ name: 'c', connect_timeout: '5 s' }), /duration string/);
  t.match(check({ name: 'c', connect_timeout: '0s' }), /must be > 0s/, 'PGV rule: connect_timeout > 0');
  t.match(check({ name: '' }), /at least 1 characters/, 'PGV rule: name min_len');
  t.match(check({ name: 'c', per_connection_buffer_limit_bytes: 'lots' }), /expected an integer/);
  t.match(check({ name: 'c', lb_policy: 7.5 }), /enum/);
  t.equal(parseDuration('1.5s'), 1_500_000_000n);
  t.equal(parseDuration('-0.000000001s'), -1n);
  t.equal(parseDuration('1m'), null);
  t.end();
});

/** A named breakage of the committed config and what the validator must say about it. */
interface Breakage {
  readonly name: string;
  readonly mutate: (b: Json) => void;
  readonly expect: RegExp;
}

const breakages: Breakage[] = [
  { name: 'unknown top-level field', mutate: (b) => void (b.static_resources.clusterz = []), expect: /unknown field "clusterz"/ },
  { name: 'unknown field inside a typed_config (Any)', mutate: (b) => void (hcm(b, 'strata_read').stat_prefx = 'x'), expect: /unknown field "stat_prefx" in envoy\.extensions\.filters\.network\.http_connection_manager\.v3\.HttpConnectionManager/ },
  { name: 'unknown field in a route action', mutate: (b) => void (routesOf(b, 'strata_read')[0]!.route.retry_polcy = {}), expect: /unknown field "retry_polcy"/ },
  { name: 'wrong enum value', mutate: (b) => void (cluster(b, CLUSTER.gateway).lb_policy = 'MAGLEV_HASH'), expect: /"MAGLEV_HASH" is not a value of enum envoy\.config\.cluster\.v3\.Cluster\.LbPolicy/ },
  { name: 'Any with an unknown @type', mutate: (b) => void (hcm(b, 'strata_read').http_filters[0].typed_config['@type'] = 'type.googleapis.com/envoy.extensions.filters.http.routr.v3.Router'), expect: /not a loaded message type/ },
  { name: 'Any without @type', mutate: (b) => void delete hcm(b, 'strata_read').http_filters[0].typed_config['@type'], expect: /Any needs "@type"/ },
  { name: 'malformed duration', mutate: (b) => void (cluster(b, CLUSTER.gateway).connect_timeout = '2 seconds'), expect: /duration string/ },
  { name: 'two members of a oneof', mutate: (b) => void (routesOf(b, 'strata_read')[0]!.match.path = '/x'), expect: /oneof path_specifier of envoy\.config\.route\.v3\.RouteMatch has 2 members set/ },
  { name: 'port out of range', mutate: (b) => void (listener(b, 'strata_read').address.socket_address.port_value = 70000), expect: /70000 must be <= 65535/ },
  { name: 'deprecated field', mutate: (b) => void (cluster(b, CLUSTER.gateway).http2_protocol_options = {}), expect: /field http2_protocol_options of envoy\.config\.cluster\.v3\.Cluster is deprecated/ },
  { name: 'missing cluster', mutate: (b) => void (routesOf(b, 'strata_read')[0]!.route.cluster = 'strata_gateways'), expect: /route names cluster "strata_gateways", which does not exist/ },
  { name: 'wrong hash header', mutate: (b) => void (routesOf(b, 'strata_read')[0]!.route.hash_policy[0].header.header_name = 'x-strata-blk'), expect: /hashes "x-strata-blk", but the query client sends "x-strata-block"/ },
  { name: 'no hash policy', mutate: (b) => void delete routesOf(b, 'strata_read')[0]!.route.hash_policy, expect: /no hash_policy/ },
  { name: 'read cluster not MAGLEV', mutate: (b) => void (cluster(b, CLUSTER.gateway).lb_policy = 'RING_HASH'), expect: /must use MAGLEV, uses RING_HASH/ },
  { name: 'Maglev hashing pod IPs', mutate: (b) => void delete cluster(b, CLUSTER.gateway).common_lb_config, expect: /use_hostname_for_hashing/ },
  { name: 'gateway pod missing', mutate: (b) => void cluster(b, CLUSTER.gateway).load_assignment.endpoints[0].lb_endpoints.pop(), expect: /gateway pod strata-gateway-3\.strata-gateway\.strata\.svc\.cluster\.local is missing/ },
  { name: 'shard covered twice', mutate: (b) => void (routesOf(b, 'strata_write')[1]!.match.headers[0].string_match.exact = '0'), expect: /shard 0 is routed 2 times/ },
  { name: 'shard missing', mutate: (b) => void routesOf(b, 'strata_write').splice(5, 1), expect: /shard 5 has no write route/ },
  { name: 'shard routed to a pod that does not own it', mutate: (b) => void (routesOf(b, 'strata_write')[0]!.route.cluster = CLUSTER.aggregator(1)), expect: /shard 0 is routed to strata-aggregator-1\.\S+ \(ordinal 1\), but it is owned by strata-aggregator-0\./ },
  { name: 'shard value not as the writer sends it', mutate: (b) => void (routesOf(b, 'strata_write')[7]!.match.headers[0].string_match.exact = '07'), expect: /"07" is not a shard number/ },
  { name: 'shard beyond numShards', mutate: (b) => void (routesOf(b, 'strata_write')[7]!.match.headers[0].string_match.exact = '64'), expect: /"64" is not a shard number in 0\.\.63/ },
  { name: 'shard matched by prefix, not exactly', mutate: (b) => void (routesOf(b, 'strata_write')[3]!.match.headers[0].string_match = { prefix: '3' }), expect: /must match x-strata-shard exactly/ },
  { name: 'catch-all route shadowing the shard routes', mutate: (b) => void routesOf(b, 'strata_write').unshift(routesOf(b, 'strata_write').at(-1)!), expect: /shadows them/ },
  { name: 'aggregator cluster pointing at another pod', mutate: (b) => void (cluster(b, CLUSTER.aggregator(2)).load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address = 'strata-aggregator-9.strata-aggregator.strata.svc.cluster.local'), expect: /not an aggregator pod/ },
  { name: 'HTTP/1 upstream', mutate: (b) => void delete cluster(b, CLUSTER.gateway).typed_extension_protocol_options, expect: /must speak HTTP\/2 upstream/ },
  { name: 'HTTP/1 options instead of HTTP/2', mutate: (b) => void (cluster(b, CLUSTER.aggregator(0)).typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].explicit_http_config = { http_protocol_options: {} }), expect: /strata_aggregator_0 must speak HTTP\/2/ },
  { name: 'no gRPC health check', mutate: (b) => void (cluster(b, CLUSTER.gateway).health_checks = []), expect: /needs an active gRPC health check/ },
  { name: 'health check for the wrong service', mutate: (b) => void (cluster(b, CLUSTER.aggregator(3)).health_checks[0].grpc_health_check.service_name = 'strata.read.v1.Read'), expect: /asks for service "strata\.read\.v1\.Read", the pods serve "strata\.write\.v1\.Writer"/ },
  { name: 'no outlier detection', mutate: (b) => void delete cluster(b, CLUSTER.gateway).outlier_detection, expect: /needs outlier_detection/ },
  { name: 'no retry on unavailable', mutate: (b) => void (routesOf(b, 'strata_read')[0]!.route.retry_policy.retry_on = 'reset'), expect: /retry on "unavailable"/ },
  { name: 'no per-try timeout', mutate: (b) => void delete routesOf(b, 'strata_read')[0]!.route.retry_policy.per_try_timeout, expect: /per-try timeout/ },
  { name: 'per-try timeout above the route timeout', mutate: (b) => void (routesOf(b, 'strata_read')[0]!.route.retry_policy.per_try_timeout = '45s'), expect: /per-try timeout 45s exceeds the route timeout 30s/ },
  { name: 'admin open to the network', mutate: (b) => void (b.admin.address.socket_address.address = '0.0.0.0'), expect: /admin interface bound to 0\.0\.0\.0/ },
  { name: 'router not the last HTTP filter', mutate: (b) => void hcm(b, 'strata_write').http_filters.push({ name: 'extra', typed_config: { '@type': TYPE.httpProtocolOptions } }), expect: /the last HTTP filter must be the router/ },
  { name: 'write listener on the wrong port', mutate: (b) => void (listener(b, 'strata_write').address.socket_address.port_value = 7411), expect: /write routes are on port 7411, expected 7401/ },
  {
    name: 'routes via RDS',
    mutate: (b) => {
      const h = hcm(b, 'strata_read');
      delete h.route_config;
      h.rds = { route_config_name: 'strata_read', config_source: { ads: {} } };
    },
    expect: /routes must be inline/,
  },
  { name: 'both inline routes and RDS', mutate: (b) => void (hcm(b, 'envoy_stats').rds = { route_config_name: 'x', config_source: { ads: {} } }), expect: /oneof route_specifier of \S+HttpConnectionManager has 2 members set/ },
];

t.test('the validator reports each deliberate breakage (broken copies in a temp dir)', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'strata-envoy-broken-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const pristine = join(dir, 'pristine.yaml');
  writeFileSync(pristine, stringify(committed()));
  t.equal(formatProblems(validateEnvoyYaml(readFileSync(pristine, 'utf8'), exp)), '', 'an unmodified copy is clean');
  for (const [i, br] of breakages.entries()) {
    const b = committed();
    br.mutate(b);
    // JSON is YAML (Envoy reads either); it keeps 40 copies fast to write and parse
    const file = join(dir, `broken-${i}.yaml`);
    writeFileSync(file, JSON.stringify(b, null, 1));
    const problems = formatProblems(validateEnvoyYaml(readFileSync(file, 'utf8'), exp));
    t.match(problems, br.expect, br.name);
  }
  t.end();
});

t.test('the validator names both ends of a duplicated shard, a topology mismatch and YAML errors', (t) => {
  const dup = committed();
  routesOf(dup, 'strata_write')[1]!.match.headers[0].string_match.exact = '0';
  const p1 = formatProblems(validateEnvoyBootstrap(dup, exp));
  t.match(p1, /shard 0 is routed 2 times/);
  t.match(p1, /shard 1 has no write route/);

  const wrongTopology = { topology: { ...DEFAULT_TOPOLOGY, aggregator: { ...DEFAULT_TOPOLOGY.aggregator, replicas: 8 } } };
  t.match(formatProblems(validateEnvoyBootstrap(committed(), wrongTopology)), /shard 4 is routed to strata-aggregator-0\.\S+ \(ordinal 0\), but it is owned by strata-aggregator-4/, 'a config generated for 4 aggregators fails for 8');
  const yamlError = validateEnvoyYaml('static_resources: [\n', exp);
  t.ok(yamlError.length > 0 && yamlError[0]!.path === '(yaml)', 'YAML syntax errors are reported');
  t.end();
});
