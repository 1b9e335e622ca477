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
export function drainServer(server: Server, graceMs: number, onOverdue: () => unknown): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      // the overdue hook may answer calls still waiting (with a status the client can retry)
      // before their streams are cut
      void Promise.resolve()
        .then(onOverdue)
        .catch(() => undefined)
        .finally(() => {
          server.forceShutdown();
          resolve();
        });
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/**
 * On the first SIGTERM or SIGINT, runs `shutdown` and exits 0 (1 if it failed). The handlers are
 * meant to be installed before the service starts, so a signal during a long start (WAL recovery)
 * waits for the start and then shuts down cleanly, instead of killing the process where it stands.
 * A second signal, or a shutdown still running `hardLimitMs` after the first signal, exits at once
 * with status 1: every acknowledged write is in a synced WAL by then, so this is no worse than a
 * crash, which the services recover from.
 */
export function exitOnSignals(logger: Logger, shutdown: () => Promise<unknown>, opts: { readonly hardLimitMs?: number } = {}): void {
  let exiting = false;
  const stop = (signal: string): void => {
    if (exiting) {
      logger.warn({ signal }, 'second signal: exiting now without finishing the shutdown (acknowledged writes are in the WAL)');
      process.exit(1);
    }
    exiting = true;
    logger.info({ signal }, 'shutdown requested');
    if (opts.hardLimitMs !== undefined) {
      const limit = opts.hardLimitMs;
      setTimeout(() => {
        logger.error({ limitMs: limit }, 'shutdown did not finish in time: exiting now (acknowledged writes are in the WAL)');
        process.exit(1);
      }, limit).unref();
    }
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

/** How long a shutdown may take beyond its service's drain grace before the process exits anyway. */
export const SHUTDOWN_HARD_LIMIT_EXTRA_MS = 30_000;
