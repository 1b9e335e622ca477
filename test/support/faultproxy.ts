/**
 * A loopback HTTP proxy in front of the test S3 server that injects failures by request number:
 * it answers 5xx, resets the connection, or stalls, and otherwise forwards the request untouched
 * (the Host header is kept, so SigV4 signatures stay valid). It exercises the retry policy of the
 * S3 bucket against real sockets; the S3 semantics still come from the real server behind it.
 */
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Test } from 'tap';

/** What to do with one request. */
export type Fault =
  | { readonly kind: 'forward' }
  | { readonly kind: 'status'; readonly status: number; readonly code: string }
  | { readonly kind: 'reset' }
  | { readonly kind: 'stall' }
  /**
   * Forwarded at once, but its answer is held: the whole upstream response is read (then
   * `fetched` is called), and sent only once `release` resolves. The client gets what the server
   * held when the request came, however late it arrives.
   */
  | { readonly kind: 'hold'; readonly fetched: () => void; readonly release: Promise<void> };

/** One request the proxy saw. */
export interface SeenRequest {
  readonly n: number;
  readonly method: string;
  readonly url: string;
  readonly fault: Fault['kind'];
}

export interface FaultProxy {
  /** `http://127.0.0.1:PORT` */
  readonly endpoint: string;
  /** Every request so far, in arrival order. */
  readonly seen: readonly SeenRequest[];
  /** Replaces the fault policy (called with the 1-based request number). */
  setPolicy(policy: (n: number, req: IncomingMessage) => Fault): void;
}

export const FORWARD: Fault = { kind: 'forward' };

/** Starts a proxy to `upstream` (an `http://host:port` endpoint); it is closed at `t`'s teardown. */
export async function startFaultProxy(t: Test, upstream: string, policy: (n: number, req: IncomingMessage) => Fault): Promise<FaultProxy> {
  const target = new URL(upstream);
  const seen: SeenRequest[] = [];
  let current = policy;
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const n = seen.length + 1;
    const fault = current(n, req);
    seen.push({ n, method: req.method ?? '', url: req.url ?? '', fault: fault.kind });
    switch (fault.kind) {
      case 'reset':
        req.socket.destroy();
        return;
      case 'stall':
        req.resume(); // read and drop the body, never answer; the client's socket timeout fires
        return;
      case 'status':
        req.resume();
        req.on('end', () => {
          const body = `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${fault.code}</Code><Message>injected by the test proxy</Message></Error>`;
          res.writeHead(fault.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
          res.end(body);
        });
        return;
      case 'hold': {
        const up = request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (upRes) => {
          const chunks: Buffer[] = [];
          upRes.on('data', (c: Buffer) => chunks.push(c));
          upRes.on('end', () => {
            fault.fetched();
            void fault.release.then(() => {
              res.writeHead(upRes.statusCode ?? 502, upRes.headers);
              res.end(Buffer.concat(chunks));
            });
          });
        });
        up.on('error', (err) => res.destroy(err));
        req.pipe(up);
        return;
      }
      case 'forward': {
        const up = request(
          { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
          (upRes) => {
            res.writeHead(upRes.statusCode ?? 502, upRes.headers);
            upRes.pipe(res);
          },
        );
        up.on('error', (err) => {
          res.destroy(err);
        });
        req.pipe(up);
        return;
      }
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  t.teardown(
    () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  );
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    seen,
    setPolicy: (p) => {
      current = p;
    },
  };
}
