import t from 'tap';
import { blockKey, parseBlockKey, validateTenant, windowStartOf } from '../../src/format/key.js';
import { InvalidArgumentError } from '../../src/errors.js';

t.test('validateTenant() accepts safe ids and rejects everything that could escape a prefix', (t) => {
  for (const ok of ['a', 'acme', 'team-7', 'x_y', '0', 'a'.repeat(64)]) t.doesNotThrow(() => validateTenant(ok), ok);
  for (const bad of ['', '../a', 'a/b', 'A', '-a', '_a', 'a.b', 'a b', 'ü', 'a\u0000', 'a'.repeat(65), 'x'.repeat(300), '..', '%2e%2e']) {
    t.throws(() => validateTenant(bad), InvalidArgumentError, JSON.stringify(bad));
  }
  t.end();
});

t.test('blockKey() and parseBlockKey() are inverse and sort by window', (t) => {
  const k = blockKey('acme', 7, 1_795_219_200_000n);
  t.equal(k, 'blocks/acme/0001795219200000/00007.block');
  t.same(parseBlockKey(k), { tenant: 'acme', shard: 7, windowStartMs: 1_795_219_200_000n });
  t.ok(blockKey('acme', 0, 14_400_000n) < blockKey('acme', 0, 1_795_219_200_000n));
  t.equal(parseBlockKey('blocks/../x/0001795219200000/00007.block'), null);
  t.throws(() => blockKey('acme', -1, 0n), InvalidArgumentError);
  t.throws(() => blockKey('acme', 1.5, 0n), InvalidArgumentError);
  t.throws(() => blockKey('acme', 0, -1n), InvalidArgumentError);
  t.end();
});

t.test('windowStartOf() aligns to the epoch, also before it', (t) => {
  const d = 14_400_000;
  t.equal(windowStartOf(1_795_219_200_000n, d), 1_795_219_200_000n);
  t.equal(windowStartOf(1_795_219_200_000n + 14_399_999n, d), 1_795_219_200_000n);
  t.equal(windowStartOf(-1n, d), -14_400_000n);
  t.equal(windowStartOf(0n, d), 0n);
  t.end();
});
