/**
 * A full garbage collection of the calling thread's V8 heap, asked for at the moments a service
 * knows much of what it allocated is dead and memory is about to be needed elsewhere.
 *
 * Why: V8 frees the buffers behind dead Buffers and typed arrays (external memory) only when its
 * collector runs, and with little JavaScript allocation it runs a full collection only once about
 * 64 MiB more is external than after the last one. The aggregator's request messages (4 MiB each)
 * are such buffers. When ingest stops and a flush starts, up to that much of them stays resident
 * on the main thread, and as much on each encoding worker, while the flush's own workers start:
 * `npm run bench -- scale` (four shards) peaked 60-75 MiB higher without this (docs/capacity.md).
 *
 * How: V8's `--expose-gc` set at run time, and the `gc` function of a fresh context, as Jest does
 * for `--logHeapUsage`; Node has no other way to ask for a collection. The flag is process-wide, so
 * worker threads get the function the same way. When the flag cannot be set, {@link collectGarbage}
 * does nothing (a collection is an optimisation of peak memory, never needed for correctness).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let gc: (() => void) | null | undefined;

function gcFunction(): (() => void) | null {
  if (gc !== undefined) return gc;
  try {
    setFlagsFromString('--expose-gc');
    const f: unknown = runInNewContext('gc');
    gc = typeof f === 'function' ? (f as () => void) : null;
  } catch {
    gc = null;
  }
  return gc;
}

/** Runs a full collection of this thread's heap now (blocking it for the collection's time). */
export function collectGarbage(): void {
  gcFunction()?.();
}

/**
 * A {@link collectGarbage} that runs at most once per `minIntervalMs` (by `now`): several callers
 * at the same moment (the flushes of several shards starting together) share one collection.
 */
export function throttledCollector(minIntervalMs: number, now: () => number = () => performance.now()): () => boolean {
  let last = -Infinity;
  return () => {
    const t = now();
    if (t - last < minIntervalMs) return false;
    last = t;
    collectGarbage();
    return true;
  };
}
