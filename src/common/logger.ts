/**
 * Structured JSON logs (pino). Lowercase messages, the same field name for the same thing
 * (`tenant`, `shard`, `window`, `key`, `err`). Every line names its level by name
 * (`"level":"info"`, not pino's number), the service (`svc`) and the build (`version`, `commit`).
 * Secrets are redacted by path as a second line of defence; code must not log them in the first
 * place.
 */
import { format } from 'node:util';
import { setLogger as setGrpcLogger } from '@grpc/grpc-js';
import { pino, type Logger, type DestinationStream } from 'pino';
import { buildInfo } from './version.js';

export type { Logger };

/** Creates the process logger. `level` defaults to `info`; `dest` to stdout. */
export function createLogger(opts: { level?: string; name?: string; dest?: DestinationStream } = {}): Logger {
  return pino(
    {
      level: opts.level ?? 'info',
      base: { svc: opts.name ?? 'strata', version: buildInfo().version, commit: buildInfo().commit, pid: process.pid },
      formatters: { level: (label) => ({ level: label }) },
      redact: {
        paths: ['*.secretAccessKey', '*.sessionToken', '*.token', '*.authorization', 'credentials', 'headers.authorization'],
        censor: '[redacted]',
      },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    opts.dest,
  );
}

/**
 * Sends what libraries print on the console through `logger`, as JSON lines like the rest of the
 * log (`from: "library"`): lmdb prints its own multi-line errors (a full cache disk), grpc-js its
 * log lines ("No address added out of total 1 resolved" when the port is taken), and Node's process
 * warnings at warn level. For the service processes only: it replaces console.error and
 * console.warn, and the process's warning handler, for the whole process.
 */
export function routeLibraryOutput(logger: Logger): void {
  const lib = logger.child({ from: 'library' });
  const to =
    (level: 'error' | 'warn') =>
    (...args: unknown[]): void => {
      lib[level](format(...args));
    };
  console.error = to('error');
  console.warn = to('warn');
  setGrpcLogger({ error: to('error') });
  // process warnings (the AWS SDK's notice that its releases after January 2027 need Node 22,
  // once per process on Node 20) are warnings: Node's own handler printed them through
  // console.error, as error-level lines at every start. Only when Node prints them at all
  // (--no-warnings and NODE_NO_WARNINGS=1 install no handler; --redirect-warnings is kept)
  if (process.listenerCount('warning') > 0 && process.execArgv.every((a) => !a.startsWith('--redirect-warnings'))) {
    process.removeAllListeners('warning');
    process.on('warning', (w: Error & { code?: string; detail?: string }) =>
      lib.warn({ warning: w.name, ...(w.code !== undefined ? { code: w.code } : {}), ...(w.detail !== undefined ? { detail: w.detail } : {}) }, w.message),
    );
  }
}
