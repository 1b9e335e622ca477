/**
 * Single flight: concurrent callers asking for the same key share one execution of the work.
 */

/** Shares in-flight promises by key. */
export class SingleFlight<K, V> {
  private readonly inflight = new Map<K, Promise<V>>();

  /** Number of keys being worked on. */
  get size(): number {
    return this.inflight.size;
  }

  /** The promise in flight for `key`, if any. */
  get(key: K): Promise<V> | undefined {
    return this.inflight.get(key);
  }

  /**
   * Runs `fn` for `key` unless a run is in flight, in which case its promise is returned and
   * `shared` is true. The key is released when the run settles.
   */
  do(key: K, fn: () => Promise<V>): { promise: Promise<V>; shared: boolean } {
    const running = this.inflight.get(key);
    if (running) return { promise: running, shared: true };
    const promise = (async () => {
      try {
        return await fn();
      } finally {
        this.inflight.delete(key);
      }
    })();
    this.inflight.set(key, promise);
    return { promise, shared: false };
  }
}

/**
 * Resolves like `p` unless `signal` aborts first, then rejects with the signal's reason. `p` is
 * observed either way: work it stands for (a shared GET, a tail read) goes on without this waiter,
 * and its failure must not become an unhandled rejection.
 */
export function raceSignal<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) {
    p.catch(() => undefined);
    return Promise.reject(signal.reason as Error);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err as Error);
      },
    );
  });
}
