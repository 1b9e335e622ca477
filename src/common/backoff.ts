/**
 * The one backoff of Strata (S3 requests, the query client's reconnects, the write client's
 * retries, failed flushes): exponential backoff with full jitter
 * (delay = random(0, min(maxDelayMs, baseDelayMs * 2^(attempt-1)))), bounded attempts.
 * Pure apart from the injected random source.
 */

/** How often and how patiently to retry a request that failed in a retryable way. */
export interface RetryPolicy {
  /** Total attempts including the first; 1 disables retries. */
  readonly maxAttempts: number;
  /** Backoff ceiling of the first retry. */
  readonly baseDelayMs: number;
  /** Backoff ceiling never exceeds this. */
  readonly maxDelayMs: number;
}

/** Defaults: 6 attempts, first backoff up to 100 ms, then doubling up to 5 s (about 8 s worst case in all). */
export const DEFAULT_RETRY_POLICY: RetryPolicy = { maxAttempts: 6, baseDelayMs: 100, maxDelayMs: 5_000 };

/**
 * The delay before retry number `retry` (1 for the first retry): jitter over the exponential
 * ceiling `min(maxDelayMs, baseDelayMs * 2^(retry-1))`. `full` jitter draws from [0, ceiling)
 * (requests: spreads retries best); `equal` from [ceiling/2, ceiling) (background jobs that must
 * not come back at once, such as failed flushes). `random` returns a number in [0, 1).
 */
export function backoffDelayMs(policy: RetryPolicy, retry: number, random: () => number = Math.random, jitter: 'full' | 'equal' = 'full'): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.min(Math.max(0, retry - 1), 52));
  return jitter === 'full' ? Math.floor(random() * ceiling) : Math.floor(ceiling / 2 + (random() * ceiling) / 2);
}
