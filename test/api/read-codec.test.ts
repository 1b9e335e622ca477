/**
 * The read API's own protobuf codec (src/api/read-codec.ts) against the reference: the
 * serializers @grpc/proto-loader generates from proto/read.proto. Both directions, random
 * messages (negative and 64-bit times, empty and large byte fields), unknown fields skipped,
 * malformed input refused.
 */
import t from 'tap';
import fc from 'fast-check';
import { join } from 'node:path';
import { loadSync, type MethodDefinition } from '@grpc/proto-loader';
import { PROTO_DIR } from '../../src/api/proto.js';
import {
  decodeReadRequest,
  decodeReadResponse,
  encodeReadRequest,
  encodeReadResponse,
  ProtoDecodeError,
  READ_METHOD,
  type ReadRequestFields,
} from '../../src/api/read-codec.js';

const def = loadSync(join(PROTO_DIR, 'read.proto'), { keepCase: true, longs: String, enums: Number, defaults: true, includeDirs: [PROTO_DIR] });
const ref = (def['strata.read.v1.Read'] as Record<string, MethodDefinition<object, object>>)['Read']!;

// the whole range, and every varint length's edges: the decoder adds the first 7 bytes (49 bits)
// in a Number and the rest in a BigInt
const int64 = fc.oneof(
  fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }),
  fc.bigInt({ min: 0n, max: (1n << 56n) - 1n }),
  fc.constantFrom(...[7n, 14n, 21n, 28n, 35n, 42n, 49n, 56n, 63n].flatMap((b) => [(1n << b) - 1n, 1n << b, -(1n << b), -(1n << b) + 1n]).filter((v) => v >= -(1n << 63n) && v < 1n << 63n), 0n, -1n, 1_700_006_400_000n),
);
const request = fc.record({
  tenant: fc.string({ maxLength: 70 }),
  shard: fc.nat({ max: 2 ** 32 - 1 }),
  numShards: fc.nat({ max: 2 ** 32 - 1 }),
  windowStartMs: int64,
  seriesIds: fc.uint8Array({ maxLength: 300 }),
  startMs: int64,
  endMs: int64,
  encoding: fc.constantFrom(0, 1),
  windowMs: int64,
});
const bytes = fc.uint8Array({ maxLength: 5000 });

t.test('the Read method matches proto/read.proto', async (t) => {
  t.equal(READ_METHOD.path, ref.path);
  t.equal(READ_METHOD.requestStream, ref.requestStream);
  t.equal(READ_METHOD.responseStream, ref.responseStream);
});

t.test('ReadRequest: our bytes parse with the reference and the reference bytes parse with ours', async (t) => {
  fc.assert(
    fc.property(request, (r: ReadRequestFields) => {
      const mine = encodeReadRequest(r);
      const theirs = ref.requestSerialize({
        tenant: r.tenant,
        shard: r.shard,
        num_shards: r.numShards,
        window_start_ms: r.windowStartMs.toString(),
        series_ids: Buffer.from(r.seriesIds),
        start_ms: r.startMs.toString(),
        end_ms: r.endMs.toString(),
        encoding: r.encoding,
        window_ms: r.windowMs!.toString(),
      });
      // (protobufjs also writes fields that hold their default value; both forms are valid)
      const back = ref.requestDeserialize(mine) as Record<string, unknown>;
      const ours = decodeReadRequest(theirs);
      return (
        back['tenant'] === r.tenant &&
        back['shard'] === r.shard &&
        back['num_shards'] === r.numShards &&
        back['window_start_ms'] === r.windowStartMs.toString() &&
        back['start_ms'] === r.startMs.toString() &&
        back['end_ms'] === r.endMs.toString() &&
        back['encoding'] === r.encoding &&
        back['window_ms'] === r.windowMs!.toString() &&
        Buffer.compare(back['series_ids'] as Buffer, Buffer.from(r.seriesIds)) === 0 &&
        ours.tenant === r.tenant &&
        ours.shard === r.shard &&
        ours.numShards === r.numShards &&
        ours.windowStartMs === r.windowStartMs &&
        ours.startMs === r.startMs &&
        ours.endMs === r.endMs &&
        ours.encoding === r.encoding &&
        ours.windowMs === r.windowMs &&
        Buffer.compare(Buffer.from(ours.seriesIds), Buffer.from(r.seriesIds)) === 0
      );
    }),
  );
  t.pass('property holds');
});

t.test('ReadResponse: chunks encode to the reference bytes and decode to views', async (t) => {
  fc.assert(
    fc.property(fc.option(fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 32, maxLength: 32 }), { nil: undefined }), fc.array(bytes, { maxLength: 3 }), bytes, bytes, bytes, bytes, (blockId, ts, ids, counts, runs, crcs) => {
      const mine = encodeReadResponse({ ...(typeof blockId === 'string' ? { blockId } : {}), seriesIds: [ids], sampleCounts: [counts], timestamps: ts, runs: [runs], runCrcs: [crcs] });
      const theirs = ref.responseSerialize({ block_id: blockId ?? '', series_ids: Buffer.from(ids), sample_counts: Buffer.from(counts), timestamps: Buffer.concat(ts), runs: Buffer.from(runs), run_crcs: Buffer.from(crcs) });
      const back = ref.responseDeserialize(mine) as Record<string, Buffer | string>;
      if (back['block_id'] !== (blockId ?? '') || !(back['timestamps'] as Buffer).equals(Buffer.concat(ts)) || !(back['run_crcs'] as Buffer).equals(crcs)) return false;
      const v = decodeReadResponse(theirs);
      return (
        v.blockId === (blockId ?? '') &&
        v.seriesIds.equals(ids) &&
        v.sampleCounts.equals(counts) &&
        v.timestamps.equals(Buffer.concat(ts)) &&
        v.values.length === 0 &&
        v.runs.equals(runs) &&
        v.runCrcs.equals(crcs) &&
        v.runLengths.length === 0
      );
    }),
  );
  t.pass('property holds');
});

t.test('unknown fields are skipped; malformed messages are refused', async (t) => {
  // field 15 (varint), field 16 (fixed64), field 17 (bytes), field 18 (fixed32), then tenant
  const extra = Buffer.from([0x78, 0x96, 0x01, 0x81, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 0x8a, 0x01, 2, 9, 9, 0x95, 0x01, 1, 2, 3, 4, 0x0a, 1, 0x61]);
  t.equal(decodeReadRequest(extra).tenant, 'a');
  t.equal(decodeReadResponse(Buffer.concat([Buffer.from([0x78, 0x05]), encodeReadResponse({ blockId: 'x' })])).blockId, 'x');
  const bad: [string, number[]][] = [
    ['truncated varint', [0x10, 0x80]],
    ['length past the end', [0x0a, 0x05, 0x61]],
    ['wrong wire type for a field', [0x08, 0x00]],
    ['wire type 3', [0x0b]],
  ];
  for (const [name, b] of bad) t.throws(() => decodeReadRequest(Buffer.from(b)), ProtoDecodeError, name);
  t.throws(() => decodeReadResponse(Buffer.from([0x12, 0x09, 1])), ProtoDecodeError);
});
