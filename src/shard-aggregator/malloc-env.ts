/**
 * The glibc malloc settings the aggregator's memory bound assumes (docs/capacity.md, "Aggregator
 * memory"). They can only be given in the environment of the process (glibc reads them at start),
 * so the container image sets them (Dockerfile) and the server warns at start-up when they are
 * missing or different.
 *
 * - `MALLOC_ARENA_MAX=2`: two arenas for all threads, so memory freed by one thread (LevelDB's
 *   memtables on libuv's pool, the encoding and build workers' buffers) is mostly reused by the
 *   others instead of being kept for that thread. With one arena, the two flushes (the default
 *   flushConcurrency) took turns on its lock: `npm run bench -- scale` flushed 17.4 M samples/s
 *   on two cores with 1 arena and 21.7 M with 2 (10.7 and 12.4 M per CPU-second), for about 50-60
 *   MiB more peak RSS (docs/capacity.md).
 * - `MALLOC_MMAP_THRESHOLD_=1048576`: blocks of 1 MiB or more (gRPC's request messages, block
 *   chunks, the workers' request copies) are mapped on their own and unmapped when freed. Without
 *   it glibc raises the threshold to the largest block freed so far (up to 32 MiB), the 4 MiB
 *   messages come from the heap, and the heap keeps the holes between them.
 */
export const MALLOC_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '1048576' };

/** Why `env` does not have {@link MALLOC_ENV} (for a start-up warning), or null when it does. */
export function mallocEnvWarning(env: NodeJS.ProcessEnv): string | null {
  const off = Object.entries(MALLOC_ENV).filter(([k, v]) => env[k] !== v);
  if (off.length === 0) return null;
  return (
    `glibc malloc settings differ from the image's: ${off.map(([k, v]) => `${k} is ${env[k] === undefined ? 'unset' : `"${env[k]}"`} (expected ${v})`).join(', ')}; ` +
    'the peak memory of docs/capacity.md assumes them: set them in the environment of the aggregator'
  );
}
