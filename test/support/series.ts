/**
 * Sample data for tests: the seeded generator (src/common/series-gen.ts) and bit-exact comparison.
 */
import type { Samples } from '../../src/format/run.js';

export { KINDS, makeSeries, prng, scrapeTarget, type Kind } from '../../src/common/series-gen.js';

/** True when both sample sets are identical bit for bit. */
export function sameSamples(a: Samples, b: Samples): boolean {
  if (a.timestamps.length !== b.timestamps.length) return false;
  for (let i = 0; i < a.timestamps.length; i++) if (a.timestamps[i] !== b.timestamps[i]) return false;
  return Buffer.compare(bytesOf(a.values), bytesOf(b.values)) === 0;
}

export function bytesOf(v: Float64Array): Buffer {
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}
