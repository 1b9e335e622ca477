/**
 * Loads a dataset made by bench/gen-samples.mjs (`samples.bin` + `dataset.json`) into per-series
 * columns, generating it first when missing.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Series {
  readonly id: bigint;
  readonly type: string;
  readonly timestamps: BigInt64Array;
  readonly values: Float64Array;
}

export interface Dataset {
  readonly dir: string;
  readonly series: Series[];
  readonly sampleCount: number;
  readonly startMs: number;
  readonly endMs: number;
}

const here = dirname(fileURLToPath(import.meta.url));
/** The generator, copied from the shared tools (deterministic, no dependencies). */
export const GENERATOR = join(here, '..', '..', 'bench', 'gen-samples.mjs');

/** Generates (if needed) and loads a dataset. `args` are extra generator flags. */
export function loadDataset(dir: string, args: string[] = []): Dataset {
  if (!existsSync(join(dir, 'samples.bin')) || !existsSync(join(dir, 'dataset.json'))) {
    execFileSync(process.execPath, [GENERATOR, '--formats=bin', `--out=${dir}`, ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
  const meta = JSON.parse(readFileSync(join(dir, 'dataset.json'), 'utf8')) as {
    series: { id: number; type: string }[];
    start_ms: number;
    end_ms: number;
  };
  const buf = readFileSync(join(dir, 'samples.bin'));
  const n = buf.length / 24;
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  // count samples per series, then fill columns (the file is sorted by time, then id)
  const counts = new Map<bigint, number>();
  for (let off = 0; off < buf.length; off += 24) {
    const id = dv.getBigUint64(off, true);
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  const types = new Map(meta.series.map((s) => [BigInt(s.id), s.type]));
  const ids = [...counts.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const cols = new Map<bigint, { ts: BigInt64Array; vs: Float64Array; n: number }>();
  for (const id of ids) {
    const c = counts.get(id)!;
    cols.set(id, { ts: new BigInt64Array(c), vs: new Float64Array(c), n: 0 });
  }
  for (let off = 0; off < buf.length; off += 24) {
    const col = cols.get(dv.getBigUint64(off, true))!;
    col.ts[col.n] = dv.getBigInt64(off + 8, true);
    col.vs[col.n++] = dv.getFloat64(off + 16, true);
  }
  const series = ids.map((id) => {
    const c = cols.get(id)!;
    return { id, type: types.get(id) ?? 'unknown', timestamps: c.ts, values: c.vs };
  });
  return { dir, series, sampleCount: n, startMs: meta.start_ms, endMs: meta.end_ms };
}

/** Median of a list of numbers. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
