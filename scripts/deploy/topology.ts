/**
 * The shape of a Strata deployment that the Envoy config and the Kubernetes manifests must agree
 * on: shard count, pod counts, names, namespace and ports. The generator (envoy-gen.ts) turns a
 * topology into an Envoy bootstrap; the validators check the committed files against the
 * topology that the Kubernetes manifests describe.
 *
 * Ports and gRPC service names come from the services' own defaults and constants, so a change
 * there shows up here instead of drifting.
 */
import { parseAggregatorConfig } from '../../src/shard-aggregator/config.js';
import { READ_SERVICE, WRITER_SERVICE } from '../../src/api/services.js';
import { BLOCK_HEADER, SHARD_HEADER } from '../../src/api/headers.js';
import { parseGatewayConfig } from '../../src/storage-gateway/config.js';

/** Everything the Envoy config depends on. */
export interface Topology {
  /** Kubernetes namespace of the pods (part of their DNS names). */
  readonly namespace: string;
  /** Cluster DNS domain (`cluster.local` unless the cluster was set up otherwise). */
  readonly clusterDomain: string;
  /** Total number of shards (`numShards` of the aggregators and of the query clients). */
  readonly numShards: number;
  readonly aggregator: StatefulSetTopology;
  readonly gateway: StatefulSetTopology;
  readonly envoy: EnvoyPorts;
}

/** One StatefulSet behind a headless Service of the same name. */
export interface StatefulSetTopology {
  /** StatefulSet name; pods are `<name>-<ordinal>`. */
  readonly name: string;
  /** Headless Service giving each pod the DNS name `<pod>.<service>.<namespace>.svc.<domain>`. */
  readonly service: string;
  readonly replicas: number;
  /** gRPC port of each pod. */
  readonly grpcPort: number;
}

/** Ports Envoy listens on. */
export interface EnvoyPorts {
  /** Write listener (clients' `x-strata-shard` requests). */
  readonly writePort: number;
  /** Read listener (query clients' `x-strata-block` requests). */
  readonly readPort: number;
  /** Envoy's admin interface, bound to loopback only. */
  readonly adminPort: number;
  /** Listener exposing only `/ready` and `/stats/prometheus` of the admin interface. */
  readonly statsPort: number;
}

function portOf(listen: string): number {
  return Number(listen.slice(listen.lastIndexOf(':') + 1));
}

const dummyBucket = { type: 'filesystem', path: '/nonexistent' };

/** Default gRPC port of `strata aggregator` (its config's `grpcListen` default). */
export const AGGREGATOR_GRPC_PORT = portOf(parseAggregatorConfig({ walDir: '/nonexistent', bucket: dummyBucket, numShards: 1 }).grpcListen);
/** Default gRPC port of `strata gateway` (its config's `grpcListen` default). */
export const GATEWAY_GRPC_PORT = portOf(parseGatewayConfig({ bucket: dummyBucket, cacheType: 'memory' }).grpcListen);

/** Header the write path routes on (the aggregator reads it; the writer client sets it). */
export const WRITE_ROUTING_HEADER = SHARD_HEADER;
/** Header the read path hashes on (the gateway checks it; the query client sets it). */
export const READ_HASH_HEADER = BLOCK_HEADER;
/** gRPC service of the aggregators (routes' path prefix and health-check service name). */
export const WRITE_SERVICE_NAME = WRITER_SERVICE;
/** gRPC service of the gateways. */
export const READ_SERVICE_NAME = READ_SERVICE;

/** The topology of the committed default (envoy/strata.yaml and k8s/). */
export const DEFAULT_TOPOLOGY: Topology = {
  namespace: 'strata',
  clusterDomain: 'cluster.local',
  numShards: 64,
  aggregator: { name: 'strata-aggregator', service: 'strata-aggregator', replicas: 4, grpcPort: AGGREGATOR_GRPC_PORT },
  gateway: { name: 'strata-gateway', service: 'strata-gateway', replicas: 4, grpcPort: GATEWAY_GRPC_PORT },
  envoy: { writePort: AGGREGATOR_GRPC_PORT, readPort: GATEWAY_GRPC_PORT, adminPort: 9901, statsPort: 9902 },
};

/** Stable DNS name of pod `ordinal` of a StatefulSet (via its headless Service). */
export function podDnsName(t: Pick<Topology, 'namespace' | 'clusterDomain'>, s: Pick<StatefulSetTopology, 'name' | 'service'>, ordinal: number): string {
  return `${s.name}-${ordinal}.${s.service}.${t.namespace}.svc.${t.clusterDomain}`;
}
