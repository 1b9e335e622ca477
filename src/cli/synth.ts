/**
 * Deterministic synthetic monitoring series for the demo and the writer benchmark: series
 * `i % 4` is an integer counter, a 2-decimal gauge, a constant or a full-entropy float, on a
 * 15 s grid (or `intervalMs`) with jitter on ~10 % of the samples.
 */
import type { Samples } from '../format/run.js';

/** Synthetic series `i` (deterministic) with `n` samples from `start`. */
export function synth(i: number, n: number, start: bigint, intervalMs = 15000): Samples {
  let seed = (i + 1) * 2654435761;
  const rnd = () => ((seed = (Math.imul(seed ^ (seed >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0) / 4294967296);
  const timestamps = new BigInt64Array(n);
  const values = new Float64Array(n);
  const phase = BigInt(5 + (i % 9990));
  let v = 100 + rnd() * 100;
  for (let k = 0; k < n; k++) {
    timestamps[k] = start + phase + BigInt(k * intervalMs + (rnd() < 0.1 ? 1 + Math.floor(rnd() * 5) : 0));
    switch (i % 4) {
      case 0:
        v += Math.floor(rnd() * 40);
        values[k] = Math.floor(v);
        break;
      case 1:
        v = Math.round((v + (rnd() - 0.5) * 3) * 100) / 100;
        values[k] = v;
        break;
      case 2:
        values[k] = 1;
        break;
      default:
        v *= Math.exp((rnd() - 0.5) * 0.1);
        values[k] = v;
    }
  }
  return { timestamps, values };
}

