/**
 * Validates a Strata Envoy bootstrap offline:
 *
 * 1. structurally, against Envoy's own API protos (shipped by @grpc/grpc-js-xds under
 *    `deps/envoy-api`), strictly: see proto-check.ts;
 * 2. semantically, against the deployment it must serve ({@link Topology}):
 *    - every cluster a route names exists; routes are inline (no RDS) so they can be checked;
 *    - the write routes match `x-strata-shard` exactly, cover every shard 0..numShards-1 exactly
 *      once with canonical decimal values, are not shadowed by an earlier catch-all, and send
 *      each shard to a one-host cluster whose host is the pod that owns the shard, by the
 *      aggregator's own `ownedShards()` applied to the ordinal in the pod's host name;
 *    - the read route hashes only the header the query client sends, into a MAGLEV cluster of
 *      exactly the gateway pods, hashed by host name;
 *    - every Strata upstream speaks HTTP/2, has an active gRPC health check naming its service,
 *      outlier detection and a connect timeout; every Strata route retries on `unavailable` with
 *      a per-try timeout not above the route timeout;
 *    - listener ports are the topology's; the admin interface is bound to loopback only;
 *      the router is the last HTTP filter.
 */
import { parseAllDocuments } from 'yaml';
import type protobuf from 'protobufjs';
import { ordinalFromHostname, ownedShards } from '../../src/shard-aggregator/config.js';
import { HTTP_PROTOCOL_OPTIONS_KEY, TYPE } from './envoy-gen.js';
import { loadProtoRoot, parseDuration, ProtoChecker, type Problem } from './proto-check.js';
import { podDnsName, READ_HASH_HEADER, READ_SERVICE_NAME, WRITE_ROUTING_HEADER, WRITE_SERVICE_NAME, type Topology } from './topology.js';

/** Envoy API protos loaded for validation: the bootstrap and every extension a config may reference by `@type`. */
export const ENVOY_PROTO_FILES = [
  'envoy/config/bootstrap/v3/bootstrap.proto',
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
  'envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.proto',
  'envoy/extensions/resource_monitors/downstream_connections/v3/downstream_connections.proto',
  'envoy/extensions/access_loggers/stream/v3/stream.proto',
  'envoy/extensions/access_loggers/file/v3/file.proto',
] as const;

/** What the semantic checks hold the config to. */
export interface EnvoyExpectations {
  readonly topology: Topology;
  /** Header the writer client sets and the write routes match (default: the aggregator's). */
  readonly shardHeader?: string;
  /** Header the query client sets and the read route hashes (default: the gateway's). */
  readonly blockHeader?: string;
  readonly writeService?: string;
  readonly readService?: string;
}

let cachedRoot: protobuf.Root | null = null;

/** The Envoy API protos (loaded once per process, ~0.2 s). */
export function envoyProtoRoot(): protobuf.Root {
  cachedRoot ??= loadProtoRoot(ENVOY_PROTO_FILES);
  return cachedRoot;
}

type Obj = Record<string, unknown>;

function obj(v: unknown): Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {};
}
function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}
function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/**
 * Parses YAML text (one document; JSON, being YAML, too) and validates it; syntax errors are
 * problems too.
 */
export function validateEnvoyYaml(text: string, exp: EnvoyExpectations): Problem[] {
  if (text.trimStart().startsWith('{')) {
    // JSON is YAML; JSON.parse is ~20x faster on a big config
    try {
      return validateEnvoyBootstrap(JSON.parse(text) as unknown, exp);
    } catch (err) {
      if (!(err instanceof SyntaxError)) throw err;
    }
  }
  const docs = parseAllDocuments(text);
  const list = Array.isArray(docs) ? docs : [docs];
  const problems: Problem[] = [];
  for (const d of list) for (const e of d.errors) problems.push({ path: '(yaml)', message: e.message });
  if (problems.length > 0) return problems;
  if (list.length !== 1) return [{ path: '(yaml)', message: `expected one YAML document, found ${list.length}` }];
  return validateEnvoyBootstrap(list[0]!.toJS(), exp);
}

/** Structural and semantic problems of a bootstrap given as parsed JSON/YAML data; empty when valid. */
export function validateEnvoyBootstrap(doc: unknown, exp: EnvoyExpectations): Problem[] {
  const checker = new ProtoChecker(envoyProtoRoot());
  const normalized = checker.checkMessage('envoy.config.bootstrap.v3.Bootstrap', doc);
  return [...checker.problems, ...semanticProblems(obj(normalized), exp)];
}

interface RouteRef {
  readonly path: string;
  readonly listener: string;
  readonly port: number | undefined;
  readonly route: Obj;
  readonly index: number;
  readonly vhostPath: string;
}

function semanticProblems(boot: Obj, exp: EnvoyExpectations): Problem[] {
  const problems: Problem[] = [];
  const report = (path: string, message: string): void => void problems.push({ path, message });
  const topo = exp.topology;
  const shardHeader = exp.shardHeader ?? WRITE_ROUTING_HEADER;
  const blockHeader = exp.blockHeader ?? READ_HASH_HEADER;
  const writePrefix = `/${exp.writeService ?? WRITE_SERVICE_NAME}/`;
  const readPrefix = `/${exp.readService ?? READ_SERVICE_NAME}/`;
  const sr = obj(boot['static_resources']);

  // admin on loopback only
  const adminAddr = str(obj(obj(obj(boot['admin'])['address'])['socket_address'])['address']);
  if (adminAddr !== undefined && !['127.0.0.1', '::1', 'localhost'].includes(adminAddr)) {
    report('admin.address', `admin interface bound to ${adminAddr}; bind it to 127.0.0.1 and expose only /ready and /stats through a listener`);
  }

  // clusters
  const clusters = new Map<string, { c: Obj; path: string }>();
  arr(sr['clusters']).forEach((c, i) => {
    const name = str(obj(c)['name']) ?? '';
    const path = `static_resources.clusters[${i}]`;
    if (clusters.has(name)) report(path, `cluster name "${name}" is used twice`);
    clusters.set(name, { c: obj(c), path });
  });

  // listeners and their inline routes
  const routes: RouteRef[] = [];
  const ports = new Map<number, string>();
  arr(sr['listeners']).forEach((l, li) => {
    const lp = `static_resources.listeners[${li}]`;
    const name = str(obj(l)['name']) ?? `#${li}`;
    const port = obj(obj(obj(l)['address'])['socket_address'])['port_value'];
    const portNum = typeof port === 'number' ? port : undefined;
    if (portNum !== undefined) {
      const other = ports.get(portNum);
      if (other !== undefined) report(`${lp}.address`, `port ${portNum} is also used by listener ${other}`);
      ports.set(portNum, name);
    }
    arr(obj(l)['filter_chains']).forEach((fc, fi) => {
      arr(obj(fc)['filters']).forEach((f, ffi) => {
        const fp = `${lp}.filter_chains[${fi}].filters[${ffi}]`;
        const tc = obj(obj(f)['typed_config']);
        if (tc['@type'] !== TYPE.hcm) return;
        if (tc['rds'] !== undefined || tc['scoped_routes'] !== undefined) {
          report(`${fp}.typed_config`, 'routes must be inline (route_config) so they can be checked offline');
        }
        const filters = arr(tc['http_filters']);
        const last = obj(filters.at(-1));
        if (obj(last['typed_config'])['@type'] !== TYPE.router) report(`${fp}.typed_config.http_filters`, 'the last HTTP filter must be the router');
        arr(obj(tc['route_config'])['virtual_hosts']).forEach((vh, vi) => {
          const vp = `${fp}.typed_config.route_config.virtual_hosts[${vi}]`;
          arr(obj(vh)['routes']).forEach((r, ri) => {
            routes.push({ path: `${vp}.routes[${ri}]`, listener: name, port: portNum, route: obj(r), index: ri, vhostPath: vp });
          });
        });
      });
    });
  });

  // every referenced cluster exists
  const referenced = (r: Obj): string[] => {
    const action = obj(r['route']);
    const names: string[] = [];
    const c = str(action['cluster']);
    if (c !== undefined) names.push(c);
    for (const w of arr(obj(action['weighted_clusters'])['clusters'])) {
      const n = str(obj(w)['name']);
      if (n !== undefined) names.push(n);
    }
    for (const m of arr(action['request_mirror_policies'])) {
      const n = str(obj(m)['cluster']);
      if (n !== undefined) names.push(n);
    }
    return names;
  };
  for (const r of routes) {
    const action = obj(r.route['route']);
    if (action['cluster_header'] !== undefined || action['cluster_specifier_plugin'] !== undefined) {
      report(`${r.path}.route`, 'cluster chosen at request time (cluster_header / cluster_specifier_plugin) cannot be checked; name the cluster');
    }
    for (const n of referenced(r.route)) if (!clusters.has(n)) report(`${r.path}.route`, `route names cluster "${n}", which does not exist`);
  }

  const prefixOf = (r: Obj): string | undefined => {
    const m = obj(r['match']);
    return str(m['prefix']) ?? str(m['path']);
  };
  const headerMatchers = (r: Obj): Obj[] => arr(obj(r['match'])['headers']).map(obj);
  const endpointsOf = (c: Obj): { host: string; port: unknown; hostname: string | undefined }[] =>
    arr(obj(c['load_assignment'])['endpoints']).flatMap((e) =>
      arr(obj(e)['lb_endpoints']).map((le) => {
        const ep = obj(obj(le)['endpoint']);
        const sa = obj(obj(ep['address'])['socket_address']);
        return { host: str(sa['address']) ?? '', port: sa['port_value'], hostname: str(ep['hostname']) };
      }),
    );

  // ---- write path ----
  const writeRoutes = routes.filter((r) => {
    const p = prefixOf(r.route);
    return p !== undefined && (p.startsWith(writePrefix) || writePrefix.startsWith(p)) && r.route['route'] !== undefined;
  });
  const shardRoutes = new Map<number, RouteRef[]>();
  const aggSet = topo.aggregator;
  const expectedAggHosts = new Map<string, number>();
  for (let o = 0; o < aggSet.replicas; o++) expectedAggHosts.set(podDnsName(topo, aggSet, o), o);
  const lastShardIndex = new Map<string, number>(); // vhost path -> index of its last shard route
  for (const r of writeRoutes) {
    const hs = headerMatchers(r.route).filter((h) => str(h['name'])?.toLowerCase() === shardHeader);
    if (hs.length === 0) continue;
    const h = hs[0]!;
    if (str(h['name']) !== shardHeader) report(`${r.path}.match.headers`, `header name must be lowercase "${shardHeader}"`);
    const exact = str(obj(h['string_match'])['exact']) ?? str(h['exact_match']);
    if (exact === undefined || h['invert_match'] === true || obj(h['string_match'])['ignore_case'] === true) {
      report(`${r.path}.match.headers`, `shard routes must match ${shardHeader} exactly (string_match.exact)`);
      continue;
    }
    if (!/^(0|[1-9]\d*)$/.test(exact) || Number(exact) >= topo.numShards) {
      report(`${r.path}.match.headers`, `"${exact}" is not a shard number in 0..${topo.numShards - 1} as the writer client sends it`);
      continue;
    }
    const s = Number(exact);
    shardRoutes.set(s, [...(shardRoutes.get(s) ?? []), r]);
    lastShardIndex.set(r.vhostPath, Math.max(lastShardIndex.get(r.vhostPath) ?? -1, r.index));

    const cname = str(obj(r.route['route'])['cluster']);
    const cl = cname === undefined ? undefined : clusters.get(cname);
    if (cname === undefined) {
      report(`${r.path}.route`, `shard ${s} must go to one named cluster`);
      continue;
    }
    if (!cl) continue; // reported above
    const eps = endpointsOf(cl.c);
    if (eps.length !== 1) {
      report(`${cl.path}.load_assignment`, `cluster ${cname} for shard ${s} must have exactly one endpoint (the owning pod), has ${eps.length}`);
      continue;
    }
    const ep = eps[0]!;
    const ordinal = expectedAggHosts.get(ep.host);
    if (ordinal === undefined) {
      report(`${cl.path}.load_assignment`, `cluster ${cname} points at ${ep.host}, which is not an aggregator pod (${podDnsName(topo, aggSet, 0)} ... ${podDnsName(topo, aggSet, aggSet.replicas - 1)})`);
      continue;
    }
    if (ep.port !== aggSet.grpcPort) report(`${cl.path}.load_assignment`, `cluster ${cname} uses port ${String(ep.port)}, the aggregators listen on ${aggSet.grpcPort}`);
    // the pod computes its ordinal from its host name; check with the aggregator's own functions
    const podOrdinal = ordinalFromHostname(ep.host.split('.')[0] ?? '');
    if (podOrdinal !== ordinal) report(`${cl.path}.load_assignment`, `pod ${ep.host} would take ordinal ${String(podOrdinal)} from its host name, expected ${ordinal}`);
    const owned = ownedShards({ numShards: topo.numShards, ordinal, replicas: aggSet.replicas });
    if (!owned.includes(s)) {
      const owner = [...expectedAggHosts.entries()].find(([, o]) => ownedShards({ numShards: topo.numShards, ordinal: o, replicas: aggSet.replicas }).includes(s));
      report(`${r.path}.route`, `shard ${s} is routed to ${ep.host} (ordinal ${ordinal}), but it is owned by ${owner?.[0] ?? 'no pod'}`);
    }
  }
  if (shardRoutes.size === 0) report('static_resources.listeners', `no write route matches ${shardHeader} on ${writePrefix}`);
  for (let s = 0; s < topo.numShards; s++) {
    const rs = shardRoutes.get(s);
    if (!rs) report('static_resources.listeners', `shard ${s} has no write route`);
    else if (rs.length > 1) report(rs[1]!.path, `shard ${s} is routed ${rs.length} times (${rs.map((r) => r.path).join(', ')})`);
  }
  // a route without the shard header before the shard routes would take all their traffic
  for (const r of writeRoutes) {
    const last = lastShardIndex.get(r.vhostPath);
    if (last === undefined || r.index > last) continue;
    if (!headerMatchers(r.route).some((h) => str(h['name'])?.toLowerCase() === shardHeader)) {
      report(r.path, `route matches ${prefixOf(r.route)} without ${shardHeader} before shard routes, so it shadows them`);
    }
  }
  const writeListeners = new Set([...shardRoutes.values()].flat().map((r) => r.port));
  for (const p of writeListeners) if (p !== topo.envoy.writePort) report('static_resources.listeners', `write routes are on port ${String(p)}, expected ${topo.envoy.writePort}`);

  // ---- read path ----
  const readRoutes = routes.filter((r) => {
    const p = prefixOf(r.route);
    return p !== undefined && (p.startsWith(readPrefix) || readPrefix.startsWith(p)) && r.route['route'] !== undefined;
  });
  if (readRoutes.length === 0) report('static_resources.listeners', `no route for ${readPrefix}`);
  const expectedGateways = new Set(Array.from({ length: topo.gateway.replicas }, (_, o) => podDnsName(topo, topo.gateway, o)));
  for (const r of readRoutes) {
    if (r.port !== topo.envoy.readPort) report(r.path, `read route is on port ${String(r.port)}, expected ${topo.envoy.readPort}`);
    const action = obj(r.route['route']);
    const hp = arr(action['hash_policy']).map(obj);
    const headerPolicies = hp.filter((h) => h['header'] !== undefined);
    if (hp.length === 0) report(`${r.path}.route`, `read route has no hash_policy; it must hash ${blockHeader}`);
    else if (hp.length !== 1 || headerPolicies.length !== 1) report(`${r.path}.route.hash_policy`, `read route must hash ${blockHeader} alone (found ${hp.length} policies)`);
    const hashed = str(obj(headerPolicies[0]?.['header'])['header_name']);
    if (headerPolicies.length > 0 && hashed !== blockHeader) {
      report(`${r.path}.route.hash_policy`, `read route hashes "${String(hashed)}", but the query client sends "${blockHeader}"`);
    }
    const cname = str(action['cluster']);
    const cl = cname === undefined ? undefined : clusters.get(cname);
    if (!cl) continue;
    if (cl.c['lb_policy'] !== 'MAGLEV') report(`${cl.path}.lb_policy`, `read cluster ${cname} must use MAGLEV, uses ${String(cl.c['lb_policy'] ?? 'ROUND_ROBIN')}`);
    const eps = endpointsOf(cl.c);
    const hosts = new Set(eps.map((e) => e.host));
    for (const g of expectedGateways) if (!hosts.has(g)) report(`${cl.path}.load_assignment`, `gateway pod ${g} is missing from ${cname}`);
    for (const e of eps) {
      if (!expectedGateways.has(e.host)) report(`${cl.path}.load_assignment`, `${e.host} in ${cname} is not a gateway pod`);
      if (e.port !== topo.gateway.grpcPort) report(`${cl.path}.load_assignment`, `${e.host} uses port ${String(e.port)}, the gateways listen on ${topo.gateway.grpcPort}`);
    }
    if (eps.length !== hosts.size) report(`${cl.path}.load_assignment`, `${cname} lists a gateway twice`);
    if (obj(obj(cl.c['common_lb_config'])['consistent_hashing_lb_config'])['use_hostname_for_hashing'] !== true) {
      report(`${cl.path}.common_lb_config`, 'MAGLEV over pod DNS names must hash host names (use_hostname_for_hashing), or a restarted pod (new IP) loses its blocks');
    }
  }

  // ---- every Strata cluster and route ----
  const strataClusters = new Map<string, string>(); // cluster -> health service expected
  for (const r of writeRoutes) for (const n of referenced(r.route)) strataClusters.set(n, exp.writeService ?? WRITE_SERVICE_NAME);
  for (const r of readRoutes) for (const n of referenced(r.route)) strataClusters.set(n, exp.readService ?? READ_SERVICE_NAME);
  for (const [name, service] of strataClusters) {
    const cl = clusters.get(name);
    if (!cl) continue;
    const h2 = obj(obj(obj(cl.c['typed_extension_protocol_options'])[HTTP_PROTOCOL_OPTIONS_KEY])['explicit_http_config'])['http2_protocol_options'];
    if (h2 === undefined || h2 === null) report(`${cl.path}.typed_extension_protocol_options`, `cluster ${name} must speak HTTP/2 upstream (explicit_http_config.http2_protocol_options)`);
    const grpcChecks = arr(cl.c['health_checks']).map(obj).filter((h) => h['grpc_health_check'] !== undefined);
    if (grpcChecks.length === 0) report(`${cl.path}.health_checks`, `cluster ${name} needs an active gRPC health check (grpc.health.v1)`);
    for (const h of grpcChecks) {
      const sn = str(obj(h['grpc_health_check'])['service_name']);
      if (sn !== service) report(`${cl.path}.health_checks`, `gRPC health check of ${name} asks for service "${sn ?? ''}", the pods serve "${service}"`);
    }
    if (cl.c['outlier_detection'] === undefined) report(cl.path, `cluster ${name} needs outlier_detection`);
    if (cl.c['connect_timeout'] === undefined) report(cl.path, `cluster ${name} needs a connect_timeout`);
  }
  for (const r of [...writeRoutes, ...readRoutes]) {
    const action = obj(r.route['route']);
    const rp = obj(action['retry_policy']);
    const retryOn = (str(rp['retry_on']) ?? '').split(',').map((s) => s.trim());
    if (!retryOn.includes('unavailable')) report(`${r.path}.route`, 'route must retry on "unavailable" (retry_policy.retry_on)');
    const perTry = str(rp['per_try_timeout']);
    if (perTry === undefined) report(`${r.path}.route`, 'route needs a per-try timeout (retry_policy.per_try_timeout)');
    const timeout = str(action['timeout']);
    if (timeout === undefined && obj(action['max_stream_duration'])['grpc_timeout_header_max'] === undefined) {
      report(`${r.path}.route`, 'route needs a timeout or max_stream_duration.grpc_timeout_header_max');
    }
    if (perTry !== undefined && timeout !== undefined) {
      const a = parseDuration(perTry);
      const b = parseDuration(timeout);
      if (a !== null && b !== null && b !== 0n && a > b) report(`${r.path}.route`, `per-try timeout ${perTry} exceeds the route timeout ${timeout}`);
    }
  }
  return problems;
}
