/**
 * Serves a prom-client registry at `GET /metrics` (and `GET /healthz`) on a small HTTP server.
 */
import { ErrorCode, StrataError } from '../errors.js';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Gauge, type Registry } from 'prom-client';
import { buildInfo } from './version.js';

/**
 * Registers `strata_build_info{version,commit}` (always 1) on `registry`: the build a service
 * runs, for dashboards and for joining onto other series (`* on(instance) group_left(version)`).
 */
export function registerBuildInfo(registry: Registry): void {
  const info = buildInfo();
  const g = new Gauge({ name: 'strata_build_info', help: 'Version and git commit of the running build (always 1).', labelNames: ['version', 'commit'], registers: [registry] });
  g.set({ version: info.version, commit: info.commit }, 1);
}

export interface MetricsServer {
  readonly port: number;
  close(): Promise<void>;
}

/** Starts the HTTP server on `host:port` (port 0 picks a free one). */
export async function startMetricsServer(registry: Registry, host: string, port: number): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/metrics') {
      registry.metrics().then(
        (body) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(body);
        },
        (err: unknown) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(`cannot collect metrics: ${(err as Error).message}\n`);
        },
      );
      return;
    }
    if (req.method === 'GET' && req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok\n');
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      // as for grpcListen: a CONFIG error naming the address and the key, so the service exits 2 with it
      const why = err.code === 'EADDRINUSE' ? 'the address is in use by another process' : err.message;
      reject(new StrataError(ErrorCode.CONFIG, `cannot listen on ${host.includes(':') ? `[${host}]` : host}:${port} (metricsListen): ${why}`, { cause: err }));
    });
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve()))),
  };
}
