/**
 * Graceful shutdown: {@link drainServer} for the services' gRPC servers; {@link exitOnSignals}
 * for the service commands: on the first SIGTERM or SIGINT, run `shutdown` (stop accepting,
 * finish in-flight work, sync, close) and exit 0, or 1 if it failed.
 */
import type { Server } from '@grpc/grpc-js';
import type { Logger } from './logger.js';

/**
 * Lets `server` finish its calls for up to `graceMs` (new calls are refused), then cancels what is
 * left, calling `onOverdue` first; resolves once the server is closed either way.
 */
export function drainServer(server: Server, graceMs: number, onOverdue: () => void): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      onOverdue();
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

export function exitOnSignals(logger: Logger, shutdown: () => Promise<unknown>): void {
  let exiting = false;
  const stop = (signal: string): void => {
    if (exiting) return;
    exiting = true;
    logger.info({ signal }, 'shutdown requested');
    shutdown().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
