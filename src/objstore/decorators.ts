/**
 * Bucket decorators, the way thanos-io/objstore wraps its buckets: each implements {@link Bucket}
 * around another one and adds one concern.
 * - {@link withMetrics}: the same metrics for every provider (S3, filesystem) and every service;
 * - {@link nonClosing}: a bucket shared with its owner, whose `close()` is left to that owner.
 * A decorated bucket keeps the inner one's incomplete-upload methods when it has them.
 */
import type { Readable } from 'node:stream';
import { Counter, Histogram, type Registry } from 'prom-client';
import { StrataError } from '../errors.js';
import {
  hasIncompleteUploads,
  type Bucket,
  type ByteRange,
  type GetRangeOptions,
  type IncompleteUpload,
  type IncompleteUploads,
  type ObjectInfo,
  type ObjectUpload,
  type PutOptions,
  type RangeResult,
} from './bucket.js';
import type { S3Hooks } from './s3/index.js';

/** Forwards every call to `inner`; the base of the decorators. */
class ForwardingBucket implements Bucket {
  constructor(protected readonly inner: Bucket) {}
  get name(): string {
    return this.inner.name;
  }
  get(key: string, opts?: { signal?: AbortSignal }): Promise<Buffer> {
    return this.inner.get(key, opts);
  }
  getRange(key: string, range: ByteRange, opts?: GetRangeOptions): Promise<RangeResult> {
    return this.inner.getRange(key, range, opts);
  }
  head(key: string): Promise<ObjectInfo> {
    return this.inner.head(key);
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }
  put(key: string, body: Uint8Array | Readable | { readonly file: string }, opts?: PutOptions): Promise<ObjectInfo> {
    return this.inner.put(key, body, opts);
  }
  upload(key: string, opts?: PutOptions): ObjectUpload {
    return this.inner.upload(key, opts);
  }
  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** `decorated`, with `inner`'s incomplete-upload methods when it has them. */
function keepIncompleteUploads(decorated: Bucket, inner: Bucket, wrap: <T>(op: string, p: () => Promise<T>) => Promise<T>): Bucket {
  if (!hasIncompleteUploads(inner)) return decorated;
  const extra: IncompleteUploads = {
    listIncompleteUploads: (prefix: string) => inner.listIncompleteUploads(prefix),
    discardIncompleteUpload: (u: IncompleteUpload) => wrap('discard_upload', () => inner.discardIncompleteUpload(u)),
  };
  return Object.assign(decorated, extra);
}

/** A bucket shared with its owner: `close()` does nothing, the owner closes it. */
export function nonClosing(inner: Bucket): Bucket {
  const b = new (class extends ForwardingBucket {
    override close(): Promise<void> {
      return Promise.resolve();
    }
  })(inner);
  return keepIncompleteUploads(b, inner, (_op, p) => p());
}

/** Operation names of {@link BucketMetrics}. */
export type BucketOperation = 'get' | 'get_range' | 'head' | 'list' | 'put' | 'upload' | 'delete' | 'discard_upload';

/**
 * Bucket metrics of a service, the same for every provider and role (names after
 * thanos-io/objstore's): operations, failures by error code, and latency, by operation; and for
 * S3 buckets the HTTP attempts and retries under them ({@link BucketMetrics.s3Hooks}).
 */
export class BucketMetrics {
  readonly operations: Counter<'operation'>;
  readonly failures: Counter<'operation' | 'code'>;
  readonly duration: Histogram<'operation'>;
  readonly s3Requests: Counter<'operation' | 'outcome'>;
  readonly s3Retries: Counter<'operation'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.operations = new Counter({ name: 'strata_bucket_operations_total', help: 'Bucket operations started, by operation.', labelNames: ['operation'], registers });
    this.failures = new Counter({
      name: 'strata_bucket_operation_failures_total',
      help: 'Bucket operations that failed (after retries), by operation and ERR_STRATA_* code; NOT_FOUND included.',
      labelNames: ['operation', 'code'],
      registers,
    });
    this.duration = new Histogram({
      name: 'strata_bucket_operation_duration_seconds',
      help: 'Bucket operation latency, retries included (a list: until its last page; an upload: until complete or abort).',
      labelNames: ['operation'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.s3Requests = new Counter({ name: 'strata_bucket_s3_requests_total', help: 'HTTP attempts to S3, by operation and outcome (ok, retry, error).', labelNames: ['operation', 'outcome'], registers });
    this.s3Retries = new Counter({ name: 'strata_bucket_s3_retries_total', help: 'S3 attempts that were retried, by operation.', labelNames: ['operation'], registers });
  }

  /** The hooks that feed the S3 metrics (pass to openBucket). */
  get s3Hooks(): S3Hooks {
    return {
      onRequest: (e) => this.s3Requests.inc({ operation: e.operation, outcome: e.outcome }),
      onRetry: (e) => this.s3Retries.inc({ operation: e.operation }),
    };
  }

  /** Counts and times one operation. */
  observe<T>(operation: BucketOperation | string, run: () => Promise<T>): Promise<T> {
    this.operations.inc({ operation });
    const end = this.duration.startTimer({ operation });
    return run().then(
      (v) => {
        end();
        return v;
      },
      (err: unknown) => {
        end();
        this.failures.inc({ operation, code: err instanceof StrataError ? err.code : 'ERR_STRATA_INTERNAL' });
        throw err;
      },
    );
  }
}

/** `inner` with every operation counted and timed in `metrics`. */
export function withMetrics(inner: Bucket, metrics: BucketMetrics): Bucket {
  const m = metrics;
  const b = new (class extends ForwardingBucket {
    override get(key: string, opts?: { signal?: AbortSignal }): Promise<Buffer> {
      return m.observe('get', () => this.inner.get(key, opts));
    }
    override getRange(key: string, range: ByteRange, opts?: GetRangeOptions): Promise<RangeResult> {
      return m.observe('get_range', () => this.inner.getRange(key, range, opts));
    }
    override head(key: string): Promise<ObjectInfo> {
      return m.observe('head', () => this.inner.head(key));
    }
    override list(prefix: string): AsyncIterable<ObjectInfo> {
      const inner = this.inner;
      return {
        [Symbol.asyncIterator]: () => {
          const it = inner.list(prefix)[Symbol.asyncIterator]();
          let done: ((err?: unknown) => void) | null = null;
          const started = new Promise<void>((resolve, reject) => {
            done = (err) => (err === undefined ? resolve() : reject(err));
          });
          void m.observe('list', () => started).catch(() => undefined);
          const finish = (err?: unknown): void => {
            done?.(err);
            done = null;
          };
          return {
            next: async () => {
              try {
                const r = await it.next();
                if (r.done) finish();
                return r;
              } catch (err) {
                finish(err);
                throw err;
              }
            },
            return: async (v?: unknown) => {
              finish();
              return (await it.return?.(v)) ?? { done: true as const, value: undefined };
            },
          };
        },
      };
    }
    override put(key: string, body: Uint8Array | Readable | { readonly file: string }, opts?: PutOptions): Promise<ObjectInfo> {
      return m.observe('put', () => this.inner.put(key, body, opts));
    }
    override upload(key: string, opts?: PutOptions): ObjectUpload {
      const u = this.inner.upload(key, opts);
      let settle: ((err?: unknown) => void) | null = null;
      const finished = new Promise<void>((resolve, reject) => {
        settle = (err) => (err === undefined ? resolve() : reject(err));
      });
      void m.observe('upload', () => finished).catch(() => undefined);
      const end = (err?: unknown): void => {
        settle?.(err);
        settle = null;
      };
      return {
        write: (chunk) =>
          u.write(chunk).catch((err: unknown) => {
            end(err);
            throw err;
          }),
        complete: () =>
          u.complete().then(
            (info) => {
              end();
              return info;
            },
            (err: unknown) => {
              end(err);
              throw err;
            },
          ),
        abort: () => {
          end();
          return u.abort();
        },
      };
    }
    override delete(key: string): Promise<void> {
      return m.observe('delete', () => this.inner.delete(key));
    }
  })(inner);
  return keepIncompleteUploads(b, inner, (op, p) => m.observe(op, p));
}
