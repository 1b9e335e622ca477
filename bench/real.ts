/**
 * Loads the shared real dataset (`samples.bin.gz`: the `strata push` records, gzipped, and
 * `series.json.gz`: labels per series id; see its README) into per-series columns, as it is.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import type { Series } from './dataset.js';

/** The real dataset: the raw records (time, then id order) and the same samples per series. */
export interface RealDataset {
  readonly dir: string;
  /** 24-byte records: u64 series id, i64 timestamp ms, f64 value (little-endian). */
  readonly records: Buffer;
  readonly series: Series[];
  readonly labels: Map<bigint, Record<string, string>>;
  readonly sampleCount: number;
}

/** Default location of the real dataset. */
export const REAL_DATA_DIR = '/work/shared/data/real-node-2h';

export function loadReal(dir: string): RealDataset {
  const records = gunzipSync(readFileSync(join(dir, 'samples.bin.gz')));
  if (records.length % 24 !== 0) throw new Error(`${dir}/samples.bin.gz: ${records.length} bytes is not a whole number of 24-byte records`);
  const list = JSON.parse(gunzipSync(readFileSync(join(dir, 'series.json.gz'))).toString('utf8')) as { id: number; labels: Record<string, string> }[];
  const labels = new Map(list.map((s) => [BigInt(s.id), s.labels]));
  const counts = new Map<bigint, number>();
  for (let off = 0; off < records.length; off += 24) {
    const id = records.readBigUInt64LE(off);
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  const ids = [...counts.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const cols = new Map(ids.map((id) => [id, { ts: new BigInt64Array(counts.get(id)!), bits: new BigUint64Array(counts.get(id)!), n: 0 }]));
  for (let off = 0; off < records.length; off += 24) {
    const col = cols.get(records.readBigUInt64LE(off))!;
    col.ts[col.n] = records.readBigInt64LE(off + 8);
    // the value's bits, copied as an integer so NaN payloads stay as they are
    col.bits[col.n++] = records.readBigUInt64LE(off + 16);
  }
  const series = ids.map((id) => {
    const c = cols.get(id)!;
    if (!labels.has(id)) throw new Error(`${dir}/series.json.gz has no labels for series ${id}`);
    return { id, type: 'real', timestamps: c.ts, values: new Float64Array(c.bits.buffer) };
  });
  return { dir, records, series, labels, sampleCount: records.length / 24 };
}
