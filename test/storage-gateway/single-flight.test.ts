/**
 * Single flight: concurrent misses of one key share one fetch
 * (src/storage-gateway/single-flight.ts).
 */
import t from 'tap';
import { SingleFlight, raceSignal } from '../../src/storage-gateway/single-flight.js';

t.test('SingleFlight shares one run per key and releases the key when it settles', async (t) => {
  const sf = new SingleFlight<string, number>();
  let runs = 0;
  let release!: (v: number) => void;
  const work = (): Promise<number> => {
    runs++;
    return new Promise((r) => (release = r));
  };
  const a = sf.do('k', work);
  const b = sf.do('k', work);
  t.equal(a.shared, false);
  t.equal(b.shared, true);
  release(7);
  t.same(await Promise.all([a.promise, b.promise]), [7, 7]);
  t.equal(runs, 1);
  t.equal(sf.size, 0);
  const c = sf.do('k', () => Promise.reject(new Error('boom')));
  await t.rejects(c.promise, /boom/);
  t.equal(sf.size, 0, 'released after a failure too');
  const ac = new AbortController();
  const never = new Promise<number>(() => undefined);
  const raced = raceSignal(never, ac.signal);
  ac.abort(new Error('gone'));
  await t.rejects(raced, /gone/);
});
