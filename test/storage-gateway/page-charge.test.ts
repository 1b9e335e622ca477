/**
 * The page budget charges what a decoded index page really holds in memory: measured here as the
 * growth of the V8 heap and of ArrayBuffer memory over many pages kept alive, with and without
 * shared timestamp vectors (a page of 1,024 series with 0, 100 and 512 vectors).
 *
 * Run alone: npx tap test/storage-gateway/page-charge.test.ts
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import t from 'tap';
import { FORMAT_VERSION } from '../../src/format/footer.js';
import { TS_GRID } from '../../src/format/timestamps.js';
import { decodePage, PageBuilder } from '../../src/index/page.js';
import { pageCharge } from '../../src/storage-gateway/block-directory.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

function pageBytes(vectors: number): { bytes: Uint8Array; end: number } {
  const pb = new PageBuilder();
  let off = 0;
  for (let i = 0; i < 1024; i++) {
    let ref = 0;
    if (i < 2 * vectors) {
      const section = new Uint8Array(24);
      section[0] = i >> 1;
      section[1] = i >> 9;
      ref = pb.vector(TS_GRID, 240, section, 1000n, 2000n);
    }
    pb.add({ id: BigInt(i + 1), runOffset: off, runLength: 100, sampleCount: 240, minTime: 1000n, maxTime: 2000n, crc: 0, tsRef: ref });
    off += 100;
  }
  return { bytes: pb.finish(), end: off };
}

/** Bytes of the distinct ArrayBuffers behind the typed arrays a value holds (one level down, and in arrays of objects). */
function backingBytes(value: object): number {
  const seen = new Set<ArrayBufferLike>();
  const visit = (v: unknown, depth: number): void => {
    if (ArrayBuffer.isView(v)) seen.add(v.buffer);
    else if (depth < 3 && v !== null && typeof v === 'object') for (const x of Object.values(v)) visit(x, depth + 1);
  };
  visit(value, 0);
  let n = 0;
  for (const b of seen) n += b.byteLength;
  return n;
}

for (const vectors of [0, 100, 512]) {
  t.test(`a page with ${vectors} timestamp vectors is charged what it holds`, async (t) => {
    const { bytes, end } = pageBytes(vectors);
    const origin = { object: 'p', offset: 0 };
    const charge = pageCharge(decodePage(bytes, origin, end, FORMAT_VERSION));
    const K = 300;
    gc();
    const h0 = process.memoryUsage().heapUsed;
    const kept = Array.from({ length: K }, () => decodePage(bytes, origin, end, FORMAT_VERSION));
    gc();
    const h1 = process.memoryUsage().heapUsed;
    // the objects on the V8 heap, measured; the memory behind them (ArrayBuffers), counted
    // exactly from the page itself (process-wide ArrayBuffer figures lag behind the collector)
    const held = (h1 - h0) / K + backingBytes(kept[0]!);
    t.equal(kept[K - 1]!.vectors.length, vectors);
    t.ok(charge >= 0.9 * held, `charged ${charge} bytes for ${held.toFixed(0)} held`);
    t.ok(charge <= 2 * held, 'not more than twice what it holds');
  });
}
