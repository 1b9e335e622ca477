/**
 * Bucket decorators (src/objstore/decorators.ts) around a real filesystem bucket and a real S3
 * bucket on RGW: withMetrics counts, times and fails every operation the same way for both
 * providers; nonClosing leaves the inner bucket open.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { BucketMetrics, nonClosing, withMetrics } from '../../src/objstore/decorators.js';
import { hasIncompleteUploads, type Bucket } from '../../src/objstore/bucket.js';
import { openBucket } from '../../src/objstore/index.js';
import { ErrorCode, hasCode } from '../../src/errors.js';
import { S3Bucket } from '../../src/objstore/s3/index.js';
import { createTestBucket, s3BucketConfig, s3TestEnv } from '../support/s3env.js';

async function counts(reg: Registry, name: string): Promise<Record<string, number>> {
  const m = (await reg.getMetricsAsJSON()).find((x) => x.name === name);
  const out: Record<string, number> = {};
  for (const v of (m?.values ?? []) as { labels: Record<string, string>; value: number; metricName?: string }[]) {
    if (v.metricName !== undefined && !v.metricName.endsWith('_count') && name.endsWith('_seconds')) continue;
    out[Object.values(v.labels).join(',')] = v.value;
  }
  return out;
}

async function exercise(t: Test, inner: Bucket): Promise<void> {
  const reg = new Registry();
  const metrics = new BucketMetrics(reg);
  const b = withMetrics(inner, metrics);
  t.equal(b.name, inner.name, 'the name is the inner bucket\'s');
  await b.put('a/1', Buffer.from('one'));
  const up = b.upload('a/2');
  await up.write(Buffer.from('two'));
  await up.complete();
  t.equal((await b.get('a/1')).toString(), 'one');
  t.equal((await b.getRange('a/2', { offset: 1, length: 2 })).data.toString(), 'wo');
  t.equal((await b.head('a/2')).size, 3);
  const keys: string[] = [];
  for await (const o of b.list('a/')) keys.push(o.key);
  t.same(keys, ['a/1', 'a/2']);
  const missing = await b.get('a/none').catch((e: unknown) => e);
  t.ok(hasCode(missing, ErrorCode.NOT_FOUND), 'errors pass through unchanged');
  await b.delete('a/1');
  t.same(await counts(reg, 'strata_bucket_operations_total'), { put: 1, upload: 1, get: 2, get_range: 1, head: 1, list: 1, delete: 1 });
  t.same(await counts(reg, 'strata_bucket_operation_failures_total'), { 'get,ERR_STRATA_NOT_FOUND': 1 });
  t.same(await counts(reg, 'strata_bucket_operation_duration_seconds'), { put: 1, upload: 1, get: 2, get_range: 1, head: 1, list: 1, delete: 1 }, 'every operation timed once');
  t.equal(hasIncompleteUploads(b), hasIncompleteUploads(inner), 'incomplete-upload methods are kept');
  await b.delete('a/2');
}

t.test('withMetrics over the filesystem bucket', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'strata-deco-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const inner = await openBucket({ type: 'filesystem', path: dir });
  t.teardown(() => inner.close());
  await exercise(t, inner);
});

t.test('withMetrics over an S3 bucket (RGW)', async (t) => {
  const inner = new S3Bucket(s3BucketConfig(s3TestEnv(), await createTestBucket(t, { tag: 'deco' })));
  t.teardown(() => inner.close());
  await exercise(t, inner);
});

t.test('nonClosing: close() leaves the inner bucket usable', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'strata-deco-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  let closed = 0;
  const inner = await openBucket({ type: 'filesystem', path: dir });
  const innerClose = inner.close.bind(inner);
  inner.close = () => ((closed += 1), innerClose());
  const shared = nonClosing(inner);
  await shared.put('k', Buffer.from('v'));
  await shared.close();
  t.equal(closed, 0, 'the owner\'s bucket is not closed');
  t.equal((await inner.get('k')).toString(), 'v');
  await inner.close();
  t.equal(closed, 1);
});
