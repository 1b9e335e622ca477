/**
 * Generates Strata's Envoy bootstrap from a {@link Topology}.
 *
 * - Write listener: one route per shard, matching `x-strata-shard: <shard>` exactly and sending it
 *   to a one-host cluster for the aggregator pod that owns the shard (ownership is the
 *   aggregator's own `ownedShards()`, so the map cannot disagree with the pods). Requests without a
 *   valid shard header (and `Status`) go to any aggregator, which answers INVALID_ARGUMENT or
 *   FAILED_PRECONDITION itself instead of Envoy's opaque "route not found".
 * - Read listener: one cluster of all gateway pods, `MAGLEV` over the `x-strata-block` header.
 *   Pods are listed by their stable StatefulSet DNS names and hashed by host name, so a restarted
 *   gateway (new IP, same name, same cache volume) gets its own blocks back.
 * - Every Strata cluster: HTTP/2, active gRPC health checks (grpc.health.v1, service name of the
 *   pod's service), outlier detection, circuit breakers sized for gRPC fan-out; routes retry on
 *   `unavailable` with a per-try timeout and honour the client's `grpc-timeout`.
 * - Admin on loopback only; a separate listener exposes just `/ready` and `/stats/prometheus`.
 *
 * Pure: returns plain data; scripts/gen-envoy.ts writes it.
 */
import { stringify } from 'yaml';
import { ownedShards } from '../../src/shard-aggregator/config.js';
import { podDnsName, READ_HASH_HEADER, READ_SERVICE_NAME, WRITE_ROUTING_HEADER, WRITE_SERVICE_NAME, type Topology } from './topology.js';

/** Envoy's protobuf type URLs of the extensions the bootstrap uses. */
export const TYPE = {
  hcm: 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
  router: 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router',
  httpProtocolOptions: 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
  previousHosts: 'type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate',
  downstreamConnections: 'type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig',
} as const;

/** Key of the upstream HTTP protocol options in `typed_extension_protocol_options`. */
export const HTTP_PROTOCOL_OPTIONS_KEY = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';

/** Cluster names. */
export const CLUSTER = {
  aggregator: (ordinal: number): string => `strata_aggregator_${ordinal}`,
  anyAggregator: 'strata_aggregator_any',
  gateway: 'strata_gateway',
  admin: 'envoy_admin',
} as const;

/** Route and timeout policy; the defaults are what the committed config uses. */
export interface EnvoyPolicy {
  /** Whole-call limit when the client sends no `grpc-timeout`. */
  readonly writeTimeout: string;
  readonly writePerTryTimeout: string;
  readonly readTimeout: string;
  readonly readPerTryTimeout: string;
  /** Largest `grpc-timeout` honoured. */
  readonly maxGrpcTimeout: string;
  readonly healthCheckInterval: string;
}

/** Defaults: writes may carry up to 64 MiB and wait for a group commit; a block read is short. */
export const DEFAULT_POLICY: EnvoyPolicy = {
  writeTimeout: '60s',
  writePerTryTimeout: '30s',
  readTimeout: '30s',
  readPerTryTimeout: '10s',
  maxGrpcTimeout: '120s',
  healthCheckInterval: '5s',
};

type Json = Record<string, unknown>;

function socketAddress(address: string, port: number): Json {
  return { socket_address: { address, port_value: port } };
}

function http2Options(): Json {
  return {
    [HTTP_PROTOCOL_OPTIONS_KEY]: {
      '@type': TYPE.httpProtocolOptions,
      explicit_http_config: {
        http2_protocol_options: {
          // finds a dead peer (pod gone without a FIN) within ~35 s instead of the TCP timeout
          connection_keepalive: { interval: '30s', timeout: '5s' },
        },
      },
    },
  };
}

function grpcHealthCheck(serviceName: string, policy: EnvoyPolicy): Json {
  return {
    timeout: '1s',
    interval: policy.healthCheckInterval,
    interval_jitter: '1s',
    unhealthy_threshold: 2,
    healthy_threshold: 1,
    no_traffic_interval: policy.healthCheckInterval,
    grpc_health_check: { service_name: serviceName },
  };
}

function outlierDetection(maxEjectionPercent: number): Json {
  return {
    consecutive_5xx: 5,
    consecutive_gateway_failure: 3,
    interval: '10s',
    base_ejection_time: '30s',
    max_ejection_percent: maxEjectionPercent,
  };
}

function circuitBreakers(maxRequests: number): Json {
  return {
    thresholds: [
      {
        priority: 'DEFAULT',
        max_connections: 1024,
        max_pending_requests: maxRequests,
        max_requests: maxRequests,
        retry_budget: { budget_percent: { value: 20 }, min_retry_concurrency: 16 },
      },
    ],
  };
}

function strataCluster(name: string, lbPolicy: string, endpoints: { host: string; port: number }[], healthService: string, policy: EnvoyPolicy, extra: Json = {}): Json {
  return {
    name,
    type: 'STRICT_DNS',
    dns_lookup_family: 'V4_ONLY',
    dns_refresh_rate: '5s',
    connect_timeout: '2s',
    lb_policy: lbPolicy,
    ...extra,
    typed_extension_protocol_options: http2Options(),
    health_checks: [grpcHealthCheck(healthService, policy)],
    outlier_detection: outlierDetection(lbPolicy === 'MAGLEV' ? 34 : 100),
    circuit_breakers: circuitBreakers(lbPolicy === 'MAGLEV' ? 16384 : 4096),
    load_assignment: {
      cluster_name: name,
      endpoints: [
        {
          lb_endpoints: endpoints.map((e) => ({ endpoint: { hostname: e.host, address: socketAddress(e.host, e.port) } })),
        },
      ],
    },
  };
}

function retryPolicy(retryOn: string, perTryTimeout: string, numRetries: number, otherHosts: boolean): Json {
  return {
    retry_on: retryOn,
    num_retries: numRetries,
    per_try_timeout: perTryTimeout,
    retry_back_off: { base_interval: '0.05s', max_interval: '1s' },
    ...(otherHosts
      ? {
          retry_host_predicate: [{ name: 'envoy.retry_host_predicates.previous_hosts', typed_config: { '@type': TYPE.previousHosts } }],
          host_selection_retry_max_attempts: 3,
        }
      : {}),
  };
}

function hcm(statPrefix: string, routeName: string, virtualHosts: Json[]): Json {
  return {
    name: 'envoy.filters.network.http_connection_manager',
    typed_config: {
      '@type': TYPE.hcm,
      stat_prefix: statPrefix,
      codec_type: 'AUTO',
      // gRPC streams: no idle cut while a long read streams; the client's deadline governs
      stream_idle_timeout: '300s',
      http2_protocol_options: { max_concurrent_streams: 1024 },
      route_config: { name: routeName, virtual_hosts: virtualHosts },
      http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': TYPE.router } }],
    },
  };
}

function listener(name: string, port: number, filter: Json): Json {
  return {
    name,
    address: socketAddress('0.0.0.0', port),
    filter_chains: [{ filters: [filter] }],
  };
}

/** Which aggregator ordinal owns each shard, by the aggregator's own rule. */
export function shardOwners(numShards: number, replicas: number): number[] {
  const owner = new Array<number>(numShards).fill(-1);
  for (let ordinal = 0; ordinal < replicas; ordinal++) {
    for (const s of ownedShards({ numShards, ordinal, replicas })) owner[s] = ordinal;
  }
  return owner;
}

/**
 * The bootstrap for `topo` as plain JSON-like data (proto field names).
 * @throws RangeError for a topology that cannot work (no shards, no pods, more pods than shards).
 */
export function generateEnvoyBootstrap(topo: Topology, policy: EnvoyPolicy = DEFAULT_POLICY): Json {
  const { numShards, aggregator, gateway } = topo;
  if (!Number.isInteger(numShards) || numShards < 1) throw new RangeError(`numShards must be a positive integer, got ${numShards}`);
  if (!Number.isInteger(aggregator.replicas) || aggregator.replicas < 1) throw new RangeError(`aggregator replicas must be a positive integer, got ${aggregator.replicas}`);
  if (aggregator.replicas > numShards) throw new RangeError(`${aggregator.replicas} aggregators for ${numShards} shards: some would own no shard`);
  if (!Number.isInteger(gateway.replicas) || gateway.replicas < 1) throw new RangeError(`gateway replicas must be a positive integer, got ${gateway.replicas}`);

  const writePrefix = `/${WRITE_SERVICE_NAME}/`;
  const readPrefix = `/${READ_SERVICE_NAME}/`;
  const owners = shardOwners(numShards, aggregator.replicas);
  const aggHost = (o: number): { host: string; port: number } => ({ host: podDnsName(topo, aggregator, o), port: aggregator.grpcPort });

  const writeRetry = retryPolicy('unavailable,connect-failure,refused-stream', policy.writePerTryTimeout, 2, false);
  const writeRoute = (cluster: string): Json => ({
    cluster,
    timeout: policy.writeTimeout,
    max_stream_duration: { grpc_timeout_header_max: policy.maxGrpcTimeout },
    retry_policy: writeRetry,
  });
  const shardRoutes = owners.map((ordinal, shard) => ({
    name: `shard-${shard}`,
    match: { prefix: writePrefix, headers: [{ name: WRITE_ROUTING_HEADER, string_match: { exact: String(shard) } }] },
    route: writeRoute(CLUSTER.aggregator(ordinal)),
  }));
  const writeVhost = {
    name: 'strata-write',
    domains: ['*'],
    routes: [
      ...shardRoutes,
      // no or malformed shard header, or Status: any aggregator answers with a precise status
      { name: 'unrouted-write', match: { prefix: writePrefix }, route: writeRoute(CLUSTER.anyAggregator) },
    ],
  };

  const readVhost = {
    name: 'strata-read',
    domains: ['*'],
    routes: [
      {
        name: 'read',
        match: { prefix: readPrefix },
        route: {
          cluster: CLUSTER.gateway,
          hash_policy: [{ header: { header_name: READ_HASH_HEADER }, terminal: true }],
          timeout: policy.readTimeout,
          max_stream_duration: { grpc_timeout_header_max: policy.maxGrpcTimeout },
          retry_policy: retryPolicy('unavailable,connect-failure,refused-stream,reset', policy.readPerTryTimeout, 2, true),
        },
      },
    ],
  };

  const statsVhost = {
    name: 'envoy-stats',
    domains: ['*'],
    routes: [
      { name: 'ready', match: { path: '/ready' }, route: { cluster: CLUSTER.admin } },
      { name: 'prometheus', match: { path: '/stats/prometheus' }, route: { cluster: CLUSTER.admin } },
      { name: 'other', match: { prefix: '/' }, direct_response: { status: 404 } },
    ],
  };

  const clusters: Json[] = [];
  for (let o = 0; o < aggregator.replicas; o++) {
    clusters.push(strataCluster(CLUSTER.aggregator(o), 'ROUND_ROBIN', [aggHost(o)], WRITE_SERVICE_NAME, policy));
  }
  clusters.push(strataCluster(CLUSTER.anyAggregator, 'ROUND_ROBIN', Array.from({ length: aggregator.replicas }, (_, o) => aggHost(o)), WRITE_SERVICE_NAME, policy));
  clusters.push(
    strataCluster(
      CLUSTER.gateway,
      'MAGLEV',
      Array.from({ length: gateway.replicas }, (_, o) => ({ host: podDnsName(topo, gateway, o), port: gateway.grpcPort })),
      READ_SERVICE_NAME,
      policy,
      {
        maglev_lb_config: { table_size: 65537 },
        common_lb_config: { consistent_hashing_lb_config: { use_hostname_for_hashing: true } },
      },
    ),
  );
  clusters.push({
    name: CLUSTER.admin,
    type: 'STATIC',
    connect_timeout: '1s',
    load_assignment: {
      cluster_name: CLUSTER.admin,
      endpoints: [{ lb_endpoints: [{ endpoint: { address: socketAddress('127.0.0.1', topo.envoy.adminPort) } }] }],
    },
  });

  return {
    node: { id: 'strata-envoy', cluster: 'strata-envoy' },
    admin: { address: socketAddress('127.0.0.1', topo.envoy.adminPort) },
    static_resources: {
      listeners: [
        listener('strata_write', topo.envoy.writePort, hcm('strata_write', 'strata_write', [writeVhost])),
        listener('strata_read', topo.envoy.readPort, hcm('strata_read', 'strata_read', [readVhost])),
        listener('envoy_stats', topo.envoy.statsPort, hcm('envoy_stats', 'envoy_stats', [statsVhost])),
      ],
      clusters,
    },
    overload_manager: {
      resource_monitors: [
        {
          name: 'envoy.resource_monitors.global_downstream_max_connections',
          typed_config: { '@type': TYPE.downstreamConnections, max_active_downstream_connections: 50000 },
        },
      ],
    },
  };
}

/** The command line that regenerates `topo` (flags only where it differs from `defaults`). */
export function generatorCommand(topo: Topology, defaults: Topology): string {
  const flags: [string, string | number, string | number][] = [
    ['--shards', topo.numShards, defaults.numShards],
    ['--aggregators', topo.aggregator.replicas, defaults.aggregator.replicas],
    ['--gateways', topo.gateway.replicas, defaults.gateway.replicas],
    ['--namespace', topo.namespace, defaults.namespace],
    ['--cluster-domain', topo.clusterDomain, defaults.clusterDomain],
  ];
  return ['node --import tsx scripts/gen-envoy.ts', ...flags.filter(([, v, d]) => v !== d).map(([k, v]) => `${k} ${v}`)].join(' ');
}

/** The header written at the top of generated files. */
export function generatedHeader(topo: Topology, command: string): string {
  return [
    '# GENERATED by scripts/gen-envoy.ts - do not edit by hand; change the topology and regenerate:',
    `#   ${command}`,
    `# Topology: ${topo.numShards} shards, ${topo.aggregator.replicas} aggregators (${topo.aggregator.name}), ` +
      `${topo.gateway.replicas} gateways (${topo.gateway.name}), namespace ${topo.namespace}, domain ${topo.clusterDomain}.`,
    '# Checked by test/deploy/envoy.test.ts against Envoy API protos and the aggregators\' shard ownership.',
    '',
  ].join('\n');
}

/** The bootstrap as YAML text with the generated-file header. */
export function renderEnvoyYaml(topo: Topology, command: string, policy: EnvoyPolicy = DEFAULT_POLICY): string {
  return generatedHeader(topo, command) + stringify(generateEnvoyBootstrap(topo, policy), { lineWidth: 0, aliasDuplicateObjects: false });
}
