/**
 * What the deployment configs ask of the running code is what the code does:
 * - the real writer client's requests, matched against the committed Envoy write routes the way
 *   Envoy matches them (path prefix, exact header), land on the aggregator pod owning their shard;
 * - the real query client's requests carry the header the Envoy read route hashes, with the block
 *   as its value;
 * - the gRPC health service names of Envoy's health checks and of the Kubernetes readiness probes
 *   are SERVING on a real aggregator and a real gateway, and `/healthz` (liveness) answers.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, credentials, Metadata, Server, ServerCredentials, status, type ServerUnaryCall, type ServerWritableStream, type ServiceDefinition, type sendUnaryData } from '@grpc/grpc-js';
import t, { type Test } from 'tap';
import { parse, parseAllDocuments } from 'yaml';
import { QueryClient } from '../../src/client/query.js';
import { WriterClient } from '../../src/client/writer.js';
import { createLogger } from '../../src/common/logger.js';
import { loadProto } from '../../src/api/proto.js';
import { ordinalFromHostname, ownedShards, parseAggregatorConfig } from '../../src/shard-aggregator/config.js';
import { readServiceDefinition, writerServiceDefinition } from '../../src/api/services.js';
import { startAggregatorServer } from '../../src/shard-aggregator/server.js';
import { parseGatewayConfig } from '../../src/storage-gateway/config.js';
import { startGateway } from '../../src/storage-gateway/gateway.js';
import { DEFAULT_TOPOLOGY } from '../../scripts/deploy/topology.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const envoy = parse(readFileSync(join(ROOT, 'envoy', 'strata.yaml'), 'utf8')) as Json;
const listener = (name: string): Json => envoy.static_resources.listeners.find((l: Json) => l.name === name);
const routes = (name: string): Json[] => listener(name).filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes;
const cluster = (name: string): Json => envoy.static_resources.clusters.find((c: Json) => c.name === name);

/** The first route Envoy would pick for a gRPC call (prefix/path and exact/present header matchers). */
function envoyRoute(rs: Json[], path: string, md: Metadata): Json | undefined {
  return rs.find((r) => {
    const m = r.match;
    if (m.prefix !== undefined && !path.startsWith(m.prefix)) return false;
    if (m.path !== undefined && path !== m.path) return false;
    return (m.headers ?? []).every((h: Json) => {
      const v = md.get(h.name);
      if (h.present_match === true) return v.length > 0;
      return v.length > 0 && String(v[0]) === h.string_match?.exact;
    });
  });
}

interface Captured {
  path: string;
  md: Metadata;
}

async function captureServer(t: Test, def: ServiceDefinition, handlers: Record<string, unknown>): Promise<string> {
  const server = new Server();
  server.addService(def, handlers as never);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  t.teardown(() => void server.forceShutdown());
  return `127.0.0.1:${port}`;
}

const H = 4 * 3600 * 1000;
const WINDOW = (BigInt(Date.now() - 24 * 3600 * 1000) / BigInt(H)) * BigInt(H);

t.test('the writer client\'s requests reach the owning aggregator through the committed write routes', async (t) => {
  const seen: Captured[] = [];
  const address = await captureServer(t, writerServiceDefinition(), {
    Write(call: ServerUnaryCall<unknown, unknown>, cb: sendUnaryData<unknown>) {
      seen.push({ path: call.getPath(), md: call.metadata });
      cb({ code: status.INVALID_ARGUMENT, details: 'captured' });
    },
  });
  const { numShards } = DEFAULT_TOPOLOGY;
  const writer = new WriterClient({ tenant: 'acme', numShards, target: address, retry: { maxAttempts: 1 } });
  t.teardown(() => writer.close());
  const ids = [0n, 5n, 63n, 64n + 6n, 2n ** 64n - 1n];
  for (const id of ids) {
    await writer.writeBatch(Number(id % BigInt(numShards)), [{ id, timestamps: new BigInt64Array([WINDOW]), values: new Float64Array([1]) }]).catch(() => undefined);
  }
  t.equal(seen.length, ids.length, 'every write reached the server');
  for (const [i, c] of seen.entries()) {
    const shard = Number(ids[i]! % BigInt(numShards));
    const r = envoyRoute(routes('strata_write'), c.path, c.md);
    t.ok(r, `a route matches ${c.path} for shard ${shard}`);
    if (!r) continue;
    const host: string = cluster(r.route.cluster).load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address;
    const ordinal = ordinalFromHostname(host.split('.')[0]!);
    t.ok(ordinal !== null && ownedShards({ numShards, ordinal, replicas: DEFAULT_TOPOLOGY.aggregator.replicas }).includes(shard), `series ${ids[i]} (shard ${shard}) goes to ${host}, its owner`);
  }
});

t.test('the query client sends the header the committed read route hashes, one value per block', async (t) => {
  const seen: Captured[] = [];
  const address = await captureServer(t, readServiceDefinition(), {
    Read(call: ServerWritableStream<unknown, unknown>) {
      seen.push({ path: call.getPath(), md: call.metadata });
      call.emit('error', { code: status.INVALID_ARGUMENT, details: 'captured' });
    },
  });
  // the client's clock is injected: whether it asks for a block or a closed day depends on it
  const q = new QueryClient({ endpoints: [address], numShards: DEFAULT_TOPOLOGY.numShards, concurrency: 1, now: () => Number(WINDOW) + H });
  t.teardown(() => q.close());
  await q.query('acme', [70n], { start: WINDOW, end: WINDOW + BigInt(H) }).catch(() => undefined);
  t.equal(seen.length, 1, 'one block, one request');
  const c = seen[0]!;
  const r = envoyRoute(routes('strata_read'), c.path, c.md);
  t.ok(r, `a read route matches ${c.path}`);
  const header: string = r?.route.hash_policy[0].header.header_name;
  t.same(c.md.get(header), [`acme/${70 % DEFAULT_TOPOLOGY.numShards}/${WINDOW}`], `${header} names the block (tenant/shard/window)`);

  // a closed day: one request for the day, whose header names the day (the route hashes it alike)
  const DAY = 86_400_000n;
  const dayStart = (WINDOW / DAY) * DAY;
  const later = new QueryClient({ endpoints: [address], numShards: DEFAULT_TOPOLOGY.numShards, concurrency: 1, now: () => Number(dayStart + 3n * DAY) });
  t.teardown(() => later.close());
  await later.query('acme', [70n], { start: WINDOW, end: WINDOW + BigInt(H) }).catch(() => undefined);
  t.equal(seen.length, 2, 'one request for the closed day');
  const d = seen[1]!;
  t.ok(envoyRoute(routes('strata_read'), d.path, d.md), 'the read route matches a day request');
  t.same(d.md.get(header), [`acme/${70 % DEFAULT_TOPOLOGY.numShards}/${dayStart}/${DAY}`], `${header} names the day (tenant/shard/day/length)`);
});

/** grpc.health.v1 Check against `address`. */
async function healthCheck(address: string, service: string): Promise<string> {
  const pkg = loadProto('health.proto') as unknown as { grpc: { health: { v1: { Health: new (a: string, c: ReturnType<typeof credentials.createInsecure>) => Client & { Check: (req: unknown, cb: (e: Error | null, r?: { status: string }) => void) => void } } } } };
  const client = new pkg.grpc.health.v1.Health(address, credentials.createInsecure());
  try {
    return await new Promise<string>((resolve, reject) => client.Check({ service }, (e, r) => (e ? reject(e) : resolve(r!.status))));
  } finally {
    client.close();
  }
}

function k8sProbes(file: string): { grpcService: string; liveness: string } {
  const docs = parseAllDocuments(readFileSync(join(ROOT, 'k8s', file), 'utf8')) as unknown as { toJS(): Json }[];
  const sts = docs.map((d) => d.toJS()).find((o) => o.kind === 'StatefulSet');
  if (!sts) throw new Error(`no StatefulSet in k8s/${file}`);
  const c = sts.spec.template.spec.containers[0];
  return { grpcService: c.readinessProbe.grpc.service, liveness: c.livenessProbe.httpGet.path };
}

t.test('health names asked by Envoy and Kubernetes are SERVING on real servers, and /healthz answers', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'strata-deploy-health-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const logger = createLogger({ level: 'silent', name: 'test' });
  const agg = await startAggregatorServer({
    config: parseAggregatorConfig({ grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0', walDir: join(dir, 'wal'), bucket: { type: 'filesystem', path: join(dir, 'bucket') }, numShards: 4, logLevel: 'silent' }),
    logger,
  });
  t.teardown(() => agg.shutdown());
  await agg.ready;
  const gw = await startGateway({
    config: parseGatewayConfig({ grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0', bucket: { type: 'filesystem', path: join(dir, 'bucket') }, cacheType: 'memory', logLevel: 'silent' }),
    logger,
    defaultMetrics: false,
  });
  t.teardown(() => gw.shutdown());

  const aggAddr = `127.0.0.1:${agg.grpcPort}`;
  const gwAddr = `127.0.0.1:${gw.grpcPort}`;
  const envoyAgg = cluster('strata_aggregator_0').health_checks[0].grpc_health_check.service_name as string;
  const envoyGw = cluster('strata_gateway').health_checks[0].grpc_health_check.service_name as string;
  t.equal(await healthCheck(aggAddr, envoyAgg), 'SERVING', `aggregator serves "${envoyAgg}" (Envoy)`);
  t.equal(await healthCheck(gwAddr, envoyGw), 'SERVING', `gateway serves "${envoyGw}" (Envoy)`);
  const aggProbe = k8sProbes('aggregator.yaml');
  const gwProbe = k8sProbes('gateway.yaml');
  t.equal(await healthCheck(aggAddr, aggProbe.grpcService), 'SERVING', 'aggregator readiness probe service');
  t.equal(await healthCheck(gwAddr, gwProbe.grpcService), 'SERVING', 'gateway readiness probe service');
  for (const [port, path] of [
    [agg.metricsPort, aggProbe.liveness],
    [gw.metricsPort, gwProbe.liveness],
  ] as const) {
    const res = await fetch(`http://127.0.0.1:${port}${path}`);
    t.equal(res.status, 200, `liveness ${path} on ${port}`);
    await res.text();
  }
  agg.health.setAll('NOT_SERVING');
  t.equal(await healthCheck(aggAddr, aggProbe.grpcService), 'NOT_SERVING', 'a draining aggregator drops out of Envoy and the Service');
});
