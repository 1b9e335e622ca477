/**
 * Structured JSON logs (pino). Lowercase messages, the same field name for the same thing
 * (`tenant`, `shard`, `window`, `key`, `err`). Secrets are redacted by path as a second line of
 * defence; code must not log them in the first place.
 */
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

/** Creates the process logger. `level` defaults to `info`; `dest` to stdout. */
export function createLogger(opts: { level?: string; name?: string; dest?: DestinationStream } = {}): Logger {
  return pino(
    {
      level: opts.level ?? 'info',
      base: { svc: opts.name ?? 'strata', pid: process.pid },
      redact: {
        paths: ['*.secretAccessKey', '*.sessionToken', '*.token', '*.authorization', 'credentials', 'headers.authorization'],
        censor: '[redacted]',
      },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    opts.dest,
  );
}
