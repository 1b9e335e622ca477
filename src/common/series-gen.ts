/**
 * The one seeded generator of sample data, for the demo, the tests and the benches that need no
 * dataset: a seeded PRNG and series shaped like real monitoring data (counters, 2-decimal gauges,
 * constants, full-entropy floats, hit ratios) on a jittered grid. Deterministic: the same
 * arguments give the same samples, bit for bit. (The benches' datasets come from
 * bench/gen-samples.mjs, the shared generator the published figures were measured with.)
 */
import type { Samples } from '../format/run.js';

/** mulberry32: small seeded PRNG returning floats in [0, 1). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export type Kind = 'counter' | 'gauge' | 'const' | 'float' | 'ratio';
export const KINDS: readonly Kind[] = ['counter', 'gauge', 'const', 'float', 'ratio'];

/** n samples of `kind` starting at `startMs`, `intervalMs` apart with ±1..5 ms jitter on ~10 %. */
export function makeSeries(kind: Kind, n: number, startMs: bigint, seed: number, intervalMs = 15_000): Samples {
  const r = prng(seed);
  const timestamps = new BigInt64Array(n);
  const values = new Float64Array(n);
  const phase = BigInt(5 + Math.floor(r() * 1000));
  let v = kind === 'counter' ? Math.floor(r() * 1e6) : 20 + r() * 50;
  for (let i = 0; i < n; i++) {
    const jitter = r() < 0.1 ? Math.floor(r() * 5 + 1) * (r() < 0.5 ? -1 : 1) : 0;
    timestamps[i] = startMs + phase + BigInt(i * intervalMs + jitter);
    switch (kind) {
      case 'counter':
        v += Math.floor(r() * 500);
        if (r() < 0.003) v = 0;
        values[i] = v;
        break;
      case 'gauge':
        v = Math.round((v + (r() - 0.5) * 4) * 100) / 100;
        values[i] = v;
        break;
      case 'const':
        values[i] = r() < 0.002 ? 0 : 1;
        break;
      case 'float':
        v *= Math.exp((r() - 0.5) * 0.2);
        values[i] = v;
        break;
      case 'ratio': {
        const total = 500 + Math.floor(r() * 100);
        values[i] = Math.floor(total * (0.9 + r() * 0.09)) / total;
        break;
      }
    }
  }
  return { timestamps, values };
}

/**
 * Series as one scrape target exposes them: `count` series of every kind (counters, gauges, ...)
 * that share one vector of timestamps, 15 s apart with ±1..5 ms jitter on `jitterShare` of the
 * scrapes (in Prometheus every series of one scrape carries that scrape's timestamp).
 */
export function scrapeTarget(count: number, n: number, startMs: bigint, seed: number, jitterShare = 0.5): Samples[] {
  const r = prng(seed);
  const timestamps = new BigInt64Array(n);
  const phase = BigInt(5 + Math.floor(r() * 1000));
  for (let i = 0; i < n; i++) {
    const jitter = r() < jitterShare ? Math.floor(r() * 5 + 1) * (r() < 0.5 ? -1 : 1) : 0;
    timestamps[i] = startMs + phase + BigInt(i * 15000 + jitter);
  }
  return Array.from({ length: count }, (_, k) => ({ timestamps, values: makeSeries(KINDS[k % KINDS.length]!, n, startMs, seed * 1000 + k).values }));
}

/** Synthetic series number `i`: kind `i` modulo the kinds, seeded by `i` (demo, writer bench). */
export function synth(i: number, n: number, start: bigint, intervalMs = 15_000): Samples {
  return makeSeries(KINDS[i % KINDS.length]!, n, start, i + 1, intervalMs);
}
