/**
 * The gRPC frame decoder (src/api/grpc-frame.ts): any split of a stream into chunks, down to one
 * byte at a time, gives the same messages; bad frames are refused with the reason.
 */
import t from 'tap';
import fc from 'fast-check';
import { encodeFrame, FrameDecoder, FrameError } from '../../src/api/grpc-frame.js';

function feed(d: FrameDecoder, stream: Buffer, cuts: number[]): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (const c of [...cuts, stream.length]) {
    d.push(stream.subarray(at, c), (m) => out.push(Buffer.from(m)));
    at = c;
  }
  return out;
}

t.test('any split of a stream gives its messages, in order', async (t) => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 12 }), (msgs, rawCuts) => {
      const stream = Buffer.concat(msgs.map((m) => encodeFrame(m)));
      const cuts = [...new Set(rawCuts.map((c) => c % (stream.length + 1)))].sort((a, b) => a - b);
      const d = new FrameDecoder(1 << 20);
      const got = feed(d, stream, cuts);
      return got.length === msgs.length && got.every((g, i) => Buffer.compare(g, Buffer.from(msgs[i]!)) === 0) && !d.partial;
    }),
  );
});

t.test('byte at a time: each message appears when its last byte arrives; a cut stream is partial', async (t) => {
  const msgs = [Buffer.from('hello'), Buffer.alloc(0), Buffer.from([0, 1, 2, 3, 4, 5, 6, 7, 8])];
  const stream = Buffer.concat(msgs.map((m) => encodeFrame(m)));
  const d = new FrameDecoder(100);
  const seen: [number, string][] = [];
  for (let i = 0; i < stream.length; i++) d.push(stream.subarray(i, i + 1), (m) => seen.push([i, m.toString('hex')]));
  t.same(seen, [
    [9, Buffer.from('hello').toString('hex')],
    [14, ''],
    [28, '000102030405060708'],
  ]);
  t.equal(d.partial, false);
  const cut = new FrameDecoder(100);
  cut.push(stream.subarray(0, 7), () => t.fail('no message in 7 bytes'));
  t.equal(cut.partial, true, 'a stream cut inside a message is partial');
});

t.test('a compressed frame is refused unless compression was agreed', async (t) => {
  const frame = encodeFrame(Buffer.from('x'), 1);
  const err = t.throws(() => new FrameDecoder(100).push(frame, () => t.fail('not delivered'))) as FrameError;
  t.ok(err instanceof FrameError);
  t.equal(err.reason, 'compressed');
  t.match(err.message, /flag 1/);
  const got: boolean[] = [];
  new FrameDecoder(100, true).push(frame, (_m, compressed) => got.push(compressed));
  t.same(got, [true], 'with compression agreed the flag is passed on');
  const bad = encodeFrame(Buffer.from('x'), 2);
  t.throws(() => new FrameDecoder(100, true).push(bad, () => undefined), /flag 2/, 'a flag other than 0 or 1 is refused');
});

t.test('a message over the limit is refused from its prefix alone', async (t) => {
  const d = new FrameDecoder(4);
  const got: string[] = [];
  d.push(encodeFrame(Buffer.from('abcd')), (m) => got.push(m.toString()));
  t.same(got, ['abcd'], 'at the limit: delivered');
  const prefix = encodeFrame(Buffer.alloc(5)).subarray(0, 5);
  const err = t.throws(() => d.push(prefix, () => undefined)) as FrameError;
  t.equal(err.reason, 'too_large');
  t.match(err.message, /5 bytes .* limit of 4/);
});
