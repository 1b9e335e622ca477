/**
 * Graceful shutdown for the service commands: on the first SIGTERM or SIGINT, run `shutdown`
 * (stop accepting, finish in-flight work, sync, close) and exit 0, or 1 if it failed.
 */
import type { Logger } from './logger.js';

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
