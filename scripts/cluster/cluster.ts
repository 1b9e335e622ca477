/**
 * The local multi-process cluster: K `strata aggregator` processes (aggregator i owns the shards
 * s with s % K == i, as a StatefulSet pod with ordinal i would), G `strata gateway` processes
 * (each with its own LMDB cache), nginx routing writes by `x-strata-shard` to the owning
 * aggregator, and HAProxy hashing reads by `x-strata-block` over the gateways. Everything listens
 * on loopback; everything lives in one directory (configs, WALs, caches, logs, proxy state).
 *
 * Used by `scripts/cluster.ts` (the command) and `test/e2e/cluster.test.ts` (the end-to-end
 * test), so the test runs exactly what a developer runs. The bucket is the caller's: the
 * command starts Ceph RGW through the harness (scripts/rgw/rgw.mjs), the test uses the one
 * `scripts/with-rgw.mjs` started.
 *
 * Services bind port 0 and report their ports in their first log line; the proxies get free
 * ports picked just before they start (retried when another process took the port meanwhile).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { BucketConfig } from '../../src/objstore/index.js';
import { ownedShards } from '../../src/shard-aggregator/config.js';
import { HAPROXY_NAMES, renderHaproxyConfig, renderNginxConfig, type HostPort } from './proxy-config.js';
import { haproxyServerStates, waitServing } from './observe.js';
import { formatExit, spawnProcess, tailFile, type ExitStatus, type ManagedProcess } from './process.js';
import { findProxyTools, type ProxyToolPaths } from './tools.js';

/** Repository root (scripts/cluster/ → ../..). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Defaults of the command and the test. */
export const CLUSTER_DEFAULTS = {
  aggregators: 2,
  gateways: 3,
  numShards: 16,
  host: '127.0.0.1',
  startTimeoutMs: 60_000,
} as const;

/** Options of {@link startCluster}. */
export interface ClusterOptions {
  /** Where blocks are written and read (an S3 bucket normally; a filesystem bucket works too). */
  readonly bucket: BucketConfig;
  readonly aggregators?: number;
  readonly gateways?: number;
  readonly numShards?: number;
  /** Cluster directory (created if missing); default a fresh `$TMPDIR/strata-cluster-XXXXXX`. */
  readonly dir?: string;
  /** Keep the directory at stop (it is always kept when start-up fails, for its logs). */
  readonly keepDir?: boolean;
  /**
   * Extra config keys of every aggregator / gateway (e.g. `{ stalenessMs: 600000 }`). Not
   * `logLevel`: the services log at `info`, whose "listening" line gives their ports.
   */
  readonly aggregatorConfig?: Readonly<Record<string, unknown>>;
  readonly gatewayConfig?: Readonly<Record<string, unknown>>;
  /** How to run `strata` (default: this checkout's sources through tsx). */
  readonly strataCommand?: readonly string[];
  /** Progress messages. */
  readonly log?: (msg: string) => void;
  /** Called when a process exits while the cluster is not stopping. */
  readonly onUnexpectedExit?: (name: string, status: ExitStatus, logFile: string) => void;
  readonly startTimeoutMs?: number;
  /** Where nginx and haproxy are (default: looked up, see tools.ts). */
  readonly tools?: ProxyToolPaths;
}

/** One Strata service process. */
export interface ServiceNode {
  /** `aggregator-<i>` / `gateway-<i>` (the gateway's name is also its HAProxy server name). */
  readonly name: string;
  readonly ordinal: number;
  /** gRPC `host:port`. */
  readonly grpc: string;
  readonly metricsUrl: string;
  readonly configFile: string;
  readonly process: ManagedProcess;
}

/** An aggregator and the shards it owns. */
export interface AggregatorNode extends ServiceNode {
  readonly shards: readonly number[];
}

/** A running cluster. */
export interface Cluster {
  readonly dir: string;
  readonly numShards: number;
  /** nginx: the write endpoint (`host:port`) for WriterClient / `strata push --target`. */
  readonly writeEndpoint: string;
  /** HAProxy: the read endpoint for QueryClient / `strata query --endpoint`. */
  readonly readEndpoint: string;
  /** HAProxy's stats page (append `;csv` for CSV). */
  readonly haproxyStatsUrl: string;
  readonly aggregators: readonly AggregatorNode[];
  readonly gateways: readonly ServiceNode[];
  readonly nginx: ManagedProcess;
  readonly haproxy: ManagedProcess;
  /** HAProxy's status of each gateway by name (`UP`, `DOWN`, ...). */
  gatewayStates(): Promise<Map<string, string>>;
  /**
   * Waits until HAProxy reports `gateway`'s status as `want` (`UP` / `DOWN`).
   * @throws Error after `timeoutMs`.
   */
  waitGatewayState(gateway: string, want: 'UP' | 'DOWN', timeoutMs?: number): Promise<void>;
  /** Stops every process (SIGTERM, then SIGKILL), removes the directory unless kept. Idempotent. */
  stop(): Promise<void>;
}

/** A free TCP port on `host` (released before use: a race the proxy start-up retries). */
export function freePort(host: string): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close((err) => (err ? reject(err) : resolvePort(port)));
    });
  });
}

/** The environment of the Strata children: no loader hooks of the parent, no stray config variables. */
function childEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k === 'NODE_OPTIONS' || k.startsWith('STRATA_AGGREGATOR_') || k.startsWith('STRATA_GATEWAY_')) continue;
    env[k] = v;
  }
  return env;
}

/** Ports from the service's "listening" log line: `{"grpcPort":N,"metricsPort":M,...}`. */
function listeningPorts(line: string): { grpcPort: number; metricsPort: number } | undefined {
  if (!line.startsWith('{')) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined; // not a log record
  }
  const r = v as { grpcPort?: unknown; metricsPort?: unknown };
  return typeof r.grpcPort === 'number' && typeof r.metricsPort === 'number' ? { grpcPort: r.grpcPort, metricsPort: r.metricsPort } : undefined;
}

function checkCount(name: string, v: number, min: number): void {
  if (!Number.isInteger(v) || v < min) throw new RangeError(`${name} must be an integer >= ${min}, got ${v}`);
}

/**
 * Starts the cluster and resolves once every service is SERVING, and nginx and HAProxy route to
 * them (a health check through each proxy answered; HAProxy reports every gateway UP).
 * @throws Error naming the process that failed and the end of its log; everything started is
 *   stopped and the directory kept.
 */
export async function startCluster(opts: ClusterOptions): Promise<Cluster> {
  const K = opts.aggregators ?? CLUSTER_DEFAULTS.aggregators;
  const G = opts.gateways ?? CLUSTER_DEFAULTS.gateways;
  const numShards = opts.numShards ?? CLUSTER_DEFAULTS.numShards;
  checkCount('aggregators', K, 1);
  checkCount('gateways', G, 1);
  checkCount('numShards', numShards, K);
  const host = CLUSTER_DEFAULTS.host;
  const log = opts.log ?? ((): void => undefined);
  const timeoutMs = opts.startTimeoutMs ?? CLUSTER_DEFAULTS.startTimeoutMs;
  const tools = opts.tools ?? findProxyTools();
  const strata = opts.strataCommand ?? [process.execPath, '--import', 'tsx', join(REPO_ROOT, 'src', 'cli', 'main.ts')];
  const [strataExe, ...strataArgs] = strata;
  if (strataExe === undefined) throw new RangeError('strataCommand must not be empty');

  const dir = opts.dir !== undefined ? resolve(opts.dir) : await mkdtemp(join(tmpdir(), 'strata-cluster-'));
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const t0 = performance.now();
  const elapsed = (): string => `${((performance.now() - t0) / 1000).toFixed(1)} s`;
  const procs: ManagedProcess[] = [];
  let stopping = false;
  const watch = (p: ManagedProcess): ManagedProcess => {
    procs.push(p);
    void p.exited.then((st) => {
      if (!stopping) opts.onUnexpectedExit?.(p.name, st, p.logFile);
    });
    return p;
  };
  const stopAll = async (): Promise<void> => {
    stopping = true;
    await Promise.all(procs.map((p) => p.stop(p.name.startsWith('aggregator') ? 15_000 : 5000)));
  };
  const env = childEnv();

  async function startService(role: 'aggregator' | 'gateway', ordinal: number): Promise<ServiceNode> {
    const name = `${role}-${ordinal}`;
    const home = join(dir, name);
    await mkdir(home, { recursive: true });
    const base = { grpcListen: `${host}:0`, metricsListen: `${host}:0`, bucket: opts.bucket };
    const config =
      role === 'aggregator'
        ? { ...base, walDir: join(home, 'wal'), numShards, ordinal, replicas: K, ...opts.aggregatorConfig, logLevel: 'info' }
        : { ...base, cacheType: 'lmdb', cacheDir: join(home, 'cache'), cacheMaxBytes: 1024 * 1024 * 1024, ...opts.gatewayConfig, logLevel: 'info' };
    const configFile = join(home, 'config.json');
    // the bucket credentials are in it: readable by the owner only
    await writeFile(configFile, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
    const p = watch(await spawnProcess(name, strataExe!, [...strataArgs, role, '--config', configFile], { cwd: REPO_ROOT, env, logFile: join(home, `${role}.log`) }));
    const ports = await p.waitForLine('its "listening" log line', listeningPorts, timeoutMs);
    const grpc = `${host}:${ports.grpcPort}`;
    await waitServing(name, grpc, { timeoutMs, abort: () => (p.running() ? null : new Error(`${name} exited (${formatExit(p.status()!)}); log ${p.logFile}`)) });
    return { name, ordinal, grpc, metricsUrl: `http://${host}:${ports.metricsPort}/metrics`, configFile, process: p };
  }

  /** Starts a proxy on fresh ports, again with new ports when one was taken meanwhile. */
  async function startProxy<T>(name: string, attempt: (ports: number[]) => Promise<{ p: ManagedProcess; value: T }>, portCount: number): Promise<{ p: ManagedProcess; value: T }> {
    for (let i = 1; ; i++) {
      const ports: number[] = [];
      while (ports.length < portCount) {
        const port = await freePort(host);
        if (!ports.includes(port)) ports.push(port);
      }
      try {
        return await attempt(ports);
      } catch (err) {
        const text = (err as Error).message;
        if (i < 3 && /address already in use|cannot bind socket|bind\(\) to .* failed/i.test(text)) {
          log(`cluster: ${name}: port taken, retrying with others`);
          continue;
        }
        throw err;
      }
    }
  }

  try {
    log(`cluster: starting ${K} aggregators and ${G} gateways in ${dir}`);
    // all settled before going on, so a failure does not leave a service starting unobserved
    const started = await Promise.allSettled([
      ...Array.from({ length: K }, (_, i) => startService('aggregator', i)),
      ...Array.from({ length: G }, (_, i) => startService('gateway', i)),
    ]);
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    const nodes = started.map((r) => (r as PromiseFulfilledResult<ServiceNode>).value);
    const aggs = nodes.slice(0, K);
    const gws = nodes.slice(K);
    const aggregators: AggregatorNode[] = aggs.map((a) => ({ ...a, shards: ownedShards({ numShards, ordinal: a.ordinal, replicas: K }) }));
    log(`cluster: services serving after ${elapsed()}`);

    const hp = (address: string): HostPort => {
      const i = address.lastIndexOf(':');
      return { host: address.slice(0, i), port: Number(address.slice(i + 1)) };
    };

    const nginxDir = join(dir, 'nginx');
    await mkdir(nginxDir, { recursive: true });
    const nginx = await startProxy(
      'nginx',
      async ([port]) => {
        const conf = join(nginxDir, 'nginx.conf');
        await writeFile(
          conf,
          renderNginxConfig({
            dir: nginxDir,
            listen: { host, port: port! },
            numShards,
            aggregators: aggregators.map((a) => hp(a.grpc)),
            // as root, nginx would run its workers as `nobody`, which cannot enter this directory
            ...(process.getuid?.() === 0 ? { workerUser: 'root' } : {}),
          }),
        );
        // fresh log per attempt, so a retry's error check does not see the previous attempt
        const p = watch(await spawnProcess('nginx', tools.nginx, ['-p', `${nginxDir}/`, '-c', conf, '-e', 'stderr', '-g', 'daemon off;'], { env, logFile: join(nginxDir, `nginx-${port}.out`) }));
        const endpoint = `${host}:${port}`;
        try {
          // no shard header: nginx's default route, any aggregator answers
          await waitServing('the aggregators through nginx', endpoint, { timeoutMs, abort: () => (p.running() ? null : new Error(`nginx exited (${formatExit(p.status()!)})`)) });
        } catch (err) {
          await p.stop();
          throw new Error(`${(err as Error).message}\n${await tailFile(p.logFile)}\n${await tailFile(join(nginxDir, 'error.log'))}`, { cause: err });
        }
        return { p, value: endpoint };
      },
      1,
    );
    log(`cluster: nginx routing writes at ${nginx.value} after ${elapsed()}`);

    const haproxyDir = join(dir, 'haproxy');
    await mkdir(haproxyDir, { recursive: true });
    const haproxy = await startProxy(
      'haproxy',
      async ([port, statsPort]) => {
        const conf = join(haproxyDir, 'haproxy.cfg');
        await writeFile(
          conf,
          renderHaproxyConfig({
            listen: { host, port: port! },
            statsListen: { host, port: statsPort! },
            gateways: gws.map((g) => ({ grpc: hp(g.grpc), metricsPort: Number(new URL(g.metricsUrl).port) })),
          }),
        );
        const p = watch(await spawnProcess('haproxy', tools.haproxy, ['-f', conf, '-db'], { env, logFile: join(haproxyDir, `haproxy-${port}.log`) }));
        const endpoint = `${host}:${port}`;
        const statsUrl = `http://${host}:${statsPort}/stats`;
        try {
          const abort = (): Error | null => (p.running() ? null : new Error(`haproxy exited (${formatExit(p.status()!)})`));
          await waitAllUp(statsUrl, gws.map((g) => g.name), timeoutMs, abort);
          await waitServing('the gateways through HAProxy', endpoint, { timeoutMs, abort });
        } catch (err) {
          await p.stop();
          throw new Error(`${(err as Error).message}\n${await tailFile(p.logFile)}`, { cause: err });
        }
        return { p, value: { endpoint, statsUrl } };
      },
      2,
    );
    log(`cluster: HAProxy hashing reads at ${haproxy.value.endpoint} after ${elapsed()}`);

    const gatewayStates = async (): Promise<Map<string, string>> => {
      const states = await haproxyServerStates(haproxy.value.statsUrl);
      return new Map(states.filter((s) => s.backend === HAPROXY_NAMES.backend).map((s) => [s.server, s.status]));
    };
    const cluster: Cluster = {
      dir,
      numShards,
      writeEndpoint: nginx.value,
      readEndpoint: haproxy.value.endpoint,
      haproxyStatsUrl: haproxy.value.statsUrl,
      aggregators,
      gateways: gws,
      nginx: nginx.p,
      haproxy: haproxy.p,
      gatewayStates,
      async waitGatewayState(gateway, want, waitMs = 15_000) {
        const deadline = Date.now() + waitMs;
        let last: string | undefined;
        for (;;) {
          last = (await gatewayStates()).get(gateway);
          if (last === want) return;
          if (Date.now() > deadline) throw new Error(`waiting for HAProxy to see ${gateway} ${want}: still ${last ?? 'unknown'} after ${waitMs} ms`);
          await sleep(100);
        }
      },
      stop: once(async () => {
        await stopAll();
        if (!opts.keepDir) await rm(dir, { recursive: true, force: true });
      }),
    };
    await writeFile(join(dir, 'cluster.json'), `${JSON.stringify(describeCluster(cluster), null, 2)}\n`);
    return cluster;
  } catch (err) {
    await stopAll();
    const msg = (err as Error).message;
    throw new Error(`starting the local cluster: ${msg}\n(cluster directory kept: ${dir})`, { cause: err });
  }
}

async function waitAllUp(statsUrl: string, servers: readonly string[], timeoutMs: number, abort: () => Error | null): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer yet';
  for (;;) {
    const stop = abort();
    if (stop) throw stop;
    try {
      const states = new Map((await haproxyServerStates(statsUrl)).filter((s) => s.backend === HAPROXY_NAMES.backend).map((s) => [s.server, s.status]));
      const notUp = servers.filter((s) => states.get(s) !== 'UP');
      if (notUp.length === 0) return;
      last = notUp.map((s) => `${s} ${states.get(s) ?? 'missing'}`).join(', ');
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`waiting for HAProxy to report every gateway UP: timed out; last: ${last}`);
    await sleep(100);
  }
}

function once(fn: () => Promise<void>): () => Promise<void> {
  let p: Promise<void> | null = null;
  return () => (p ??= fn());
}

/** The cluster's endpoints as plain data (written to DIR/cluster.json; printed by the command). */
export function describeCluster(c: Cluster): Record<string, unknown> {
  return {
    dir: c.dir,
    numShards: c.numShards,
    writeEndpoint: c.writeEndpoint,
    readEndpoint: c.readEndpoint,
    haproxyStatsUrl: c.haproxyStatsUrl,
    aggregators: c.aggregators.map((a) => ({ name: a.name, grpc: a.grpc, metricsUrl: a.metricsUrl, shards: a.shards, pid: a.process.pid, log: a.process.logFile })),
    gateways: c.gateways.map((g) => ({ name: g.name, grpc: g.grpc, metricsUrl: g.metricsUrl, pid: g.process.pid, log: g.process.logFile })),
    nginx: { pid: c.nginx.pid, config: join(c.dir, 'nginx', 'nginx.conf'), log: c.nginx.logFile },
    haproxy: { pid: c.haproxy.pid, config: join(c.dir, 'haproxy', 'haproxy.cfg'), log: c.haproxy.logFile },
  };
}
