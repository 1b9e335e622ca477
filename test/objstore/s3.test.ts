/**
 * S3Bucket against a real S3 server (Ceph RGW started by scripts/with-rgw.mjs): the acceptance
 * suite, credentials and bucket errors, tenancy between two users, multipart clean-up, and the
 * retry policy (through a loopback fault-injecting proxy in front of RGW).
 *
 * Run alone: node scripts/with-rgw.mjs -- tap test/objstore/s3.test.ts
 */
import t, { type Test } from 'tap';
import { ErrorCode, ObjectStoreError } from '../../src/errors.js';
import { openBucket } from '../../src/objstore/index.js';
import { S3_MIN_PART_BYTES, S3Bucket, type S3BucketConfig, type S3RequestEvent, type S3RetryEvent } from '../../src/objstore/s3/index.js';
import { collect } from '../support/async.js';
import { sameBytes, seededBytes } from '../support/bytes.js';
import { FORWARD, startFaultProxy } from '../support/faultproxy.js';
import { adminClient, createTestBucket, pendingMultipartUploads, s3BucketConfig, s3TestEnv, uniqueBucketName } from '../support/s3env.js';
import { bucketAcceptance, expectCode } from '../support/bucket-acceptance.js';

const env = s3TestEnv(); // fails this file with instructions when the RGW env is missing
const PART = S3_MIN_PART_BYTES;
const PAGE = 250;

/** An S3Bucket on `bucket` that is closed at the end of `tt`. */
function openS3(tt: Test, config: S3BucketConfig): S3Bucket {
  const b = new S3Bucket(config);
  tt.teardown(() => b.close());
  return b;
}

t.test('S3Bucket passes the bucket acceptance suite', async (t) => {
  bucketAcceptance(t, {
    create: async (tt) => {
      const bucket = await createTestBucket(tt);
      return {
        open: (prefix) =>
          openS3(tt, s3BucketConfig(env, bucket, { partSizeBytes: PART, listPageSize: PAGE, ...(prefix !== undefined ? { prefix } : {}) })),
      };
    },
    partSizeBytes: PART,
    listPageSize: PAGE,
    requestCount: (b) => (b as S3Bucket).stats.requests,
  });
});

t.test('a wrong secret key is ACCESS_DENIED and the message holds no secret', async (t) => {
  const bucket = await createTestBucket(t);
  const good = openS3(t, s3BucketConfig(env, bucket));
  await good.put('k', Buffer.from('v'));
  const wrongSecret = 'definitely-not-the-secret';
  const bad = openS3(
    t,
    s3BucketConfig(env, bucket, { credentials: { accessKeyId: env.accessKeyId, secretAccessKey: wrongSecret } }),
  );
  const checks: [string, () => Promise<unknown>][] = [
    ['get', () => bad.get('k')],
    ['getRange', () => bad.getRange('k', { offset: 0, length: 1 })],
    ['head', () => bad.head('k')],
    ['put', () => bad.put('k2', Buffer.from('x'))],
    ['list', () => collect(bad.list(''))],
    ['delete', () => bad.delete('k')],
  ];
  for (const [name, op] of checks) {
    const err = await expectCode(t, op, ErrorCode.ACCESS_DENIED, name);
    const msg = err instanceof Error ? err.message : '';
    t.notMatch(msg, wrongSecret, `${name}: message does not contain the secret used`);
    t.notMatch(msg, env.secretAccessKey, `${name}: message does not contain the real secret`);
    if (err instanceof ObjectStoreError) t.equal(err.bucket, good.name, `${name}: error names the bucket`);
  }
  t.equal(bad.stats.requests, checks.length, 'access errors are not retried');
  const unknownKey = openS3(
    t,
    s3BucketConfig(env, bucket, { credentials: { accessKeyId: 'NOSUCHACCESSKEY00000', secretAccessKey: wrongSecret } }),
  );
  await expectCode(t, unknownKey.get('k'), ErrorCode.ACCESS_DENIED, 'unknown access key');
  sameBytes(t, await good.get('k'), Buffer.from('v'), 'the object is untouched');
});

t.test('a missing bucket is NO_SUCH_BUCKET', async (t) => {
  const b = openS3(t, s3BucketConfig(env, uniqueBucketName('missing')));
  const err = await expectCode(t, b.get('k'), ErrorCode.NO_SUCH_BUCKET, 'get');
  t.match(String((err as Error).message), b.name.slice('s3://'.length), 'message names the bucket');
  await expectCode(t, b.getRange('k', { suffix: 3 }), ErrorCode.NO_SUCH_BUCKET, 'getRange');
  await expectCode(t, b.put('k', Buffer.from('x')), ErrorCode.NO_SUCH_BUCKET, 'put');
  await expectCode(t, collect(b.list('')), ErrorCode.NO_SUCH_BUCKET, 'list');
  await expectCode(t, b.delete('k'), ErrorCode.NO_SUCH_BUCKET, 'delete');
  const up = b.upload('k');
  await up.write(seededBytes(PART + 1, 1));
  await expectCode(t, up.complete(), ErrorCode.NO_SUCH_BUCKET, 'multipart upload');
  // A 404 HEAD carries no body: a missing bucket looks like a missing key (documented).
  await expectCode(t, b.head('k'), ErrorCode.NOT_FOUND, 'head');
});

t.test('two users do not see each other\'s buckets', async (t) => {
  const bucket1 = await createTestBucket(t, { user: 1 });
  const bucket2 = await createTestBucket(t, { user: 2 });
  const u1 = openS3(t, s3BucketConfig(env, bucket1, {}, 1));
  const u2 = openS3(t, s3BucketConfig(env, bucket2, {}, 2));
  await u1.put('secret', Buffer.from('user 1 data'));
  await u2.put('mine', Buffer.from('user 2 data'));
  sameBytes(t, await u2.get('mine'), Buffer.from('user 2 data'), 'user 2 uses its own bucket');
  const u2on1 = openS3(t, s3BucketConfig(env, bucket1, {}, 2));
  await expectCode(t, u2on1.get('secret'), ErrorCode.ACCESS_DENIED, 'user 2 reading user 1\'s bucket');
  await expectCode(t, u2on1.put('intruder', Buffer.from('x')), ErrorCode.ACCESS_DENIED, 'user 2 writing user 1\'s bucket');
  await expectCode(t, collect(u2on1.list('')), ErrorCode.ACCESS_DENIED, 'user 2 listing user 1\'s bucket');
  t.same((await collect(u1.list(''))).map((i) => i.key), ['secret'], 'user 1\'s bucket unchanged');
});

t.test('aborted and failed multipart uploads leave no pending upload', async (t) => {
  const bucket = await createTestBucket(t);
  const admin = adminClient(env);
  t.teardown(() => admin.destroy());
  let created!: () => void;
  const mpuCreated = new Promise<void>((resolve) => (created = resolve));
  const b = openS3(
    t,
    s3BucketConfig(env, bucket, {
      partSizeBytes: PART,
      hooks: { onRequest: (e) => e.operation === 'createMultipart' && e.outcome === 'ok' && created() },
    }),
  );
  const up = b.upload('mp/aborted');
  await up.write(seededBytes(2 * PART + 10, 2)); // two parts started
  await mpuCreated; // write() does not wait for the parts it started
  t.same(await pendingMultipartUploads(admin, bucket), ['mp/aborted'], 'a multipart upload is in progress');
  await up.abort();
  t.same(await pendingMultipartUploads(admin, bucket), [], 'abort() aborted it');

  // A part that fails for good (the signal is aborted mid-upload) aborts the whole upload.
  const ac = new AbortController();
  const failing = b.upload('mp/failing', { signal: ac.signal });
  await failing.write(seededBytes(PART + 10, 3));
  ac.abort();
  await t.rejects(failing.write(seededBytes(PART, 4)), { name: 'AbortError' }, 'the next write fails');
  await failing.abort();
  t.same(await pendingMultipartUploads(admin, bucket), [], 'nothing left pending');
  t.same(await collect(b.list('')), [], 'nothing visible');
});

t.test('a large buffer put() goes multipart above the threshold', async (t) => {
  const bucket = await createTestBucket(t);
  const events: S3RequestEvent[] = [];
  const b = openS3(
    t,
    s3BucketConfig(env, bucket, {
      partSizeBytes: PART,
      multipartThresholdBytes: PART,
      hooks: { onRequest: (e) => events.push(e) },
    }),
  );
  const data = seededBytes(2 * PART + 5, 5);
  const info = await b.put('big', data);
  t.equal(info.size, data.length, 'size');
  t.same(
    events.map((e) => e.operation),
    ['createMultipart', 'uploadPart', 'uploadPart', 'uploadPart', 'completeMultipart', 'head'],
    'one multipart upload of three parts (RGW returns no ETag on complete, so one HEAD)',
  );
  t.ok(info.etag.length > 0, 'etag filled in');
  sameBytes(t, await b.get('big'), data, 'bytes');
  events.length = 0;
  await b.put('small', data.subarray(0, PART));
  t.same(events.map((e) => e.operation), ['put'], 'at the threshold: one PutObject');
});

t.test('openBucket() builds an S3 bucket from config', async (t) => {
  const bucket = await createTestBucket(t);
  const b = await openBucket({
    type: 's3',
    endpoint: env.endpoint,
    region: env.region,
    bucket,
    prefix: 'tenant/x',
    forcePathStyle: true,
    credentials: { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey },
  });
  t.teardown(() => b.close());
  t.equal(b.name, `s3://${bucket}/tenant/x`, 'name');
  await b.put('k', Buffer.from('v'));
  const raw = openS3(t, s3BucketConfig(env, bucket));
  sameBytes(t, await raw.get('tenant/x/k'), Buffer.from('v'), 'stored under the prefix');
});

t.test('retries', async (t) => {
  const bucket = await createTestBucket(t);
  const direct = openS3(t, s3BucketConfig(env, bucket));
  const data = seededBytes(70_000, 6);
  await direct.put('obj', data);

  const viaProxy = async (
    policy: Parameters<typeof startFaultProxy>[2],
    overrides: Partial<S3BucketConfig> = {},
  ): Promise<{ b: S3Bucket; proxy: Awaited<ReturnType<typeof startFaultProxy>>; retries: S3RetryEvent[] }> => {
    const proxy = await startFaultProxy(t, env.endpoint, policy);
    const retries: S3RetryEvent[] = [];
    const b = openS3(
      t,
      s3BucketConfig(env, bucket, {
        endpoint: proxy.endpoint,
        retry: { maxAttempts: 4, baseDelayMs: 5, maxDelayMs: 50 },
        hooks: { onRetry: (e) => retries.push(e) },
        ...overrides,
      }),
    );
    return { b, proxy, retries };
  };

  await t.test('503 SlowDown twice, then success', async (t) => {
    const { b, proxy, retries } = await viaProxy((n) => (n <= 2 ? { kind: 'status', status: 503, code: 'SlowDown' } : FORWARD));
    sameBytes(t, await b.get('obj'), data, 'the third attempt returns the object');
    t.equal(proxy.seen.length, 3, 'the server saw exactly three requests (the SDK does not retry on its own)');
    t.same(b.stats, { requests: 3, retries: 2, failures: 0, socketErrors: 0 }, 'stats');
    t.same(
      retries.map((r) => [r.operation, r.attempt, r.httpStatus, r.errorName]),
      [
        ['get', 1, 503, 'SlowDown'],
        ['get', 2, 503, 'SlowDown'],
      ],
      'onRetry saw both failures',
    );
    t.ok(retries.every((r) => r.delayMs >= 0 && r.delayMs <= 50), 'delays are within the backoff ceiling');
  });

  await t.test('connection resets and 500s are retried for writes, parts included', async (t) => {
    const { b, proxy } = await viaProxy(
      (n, req) => {
        if (n === 1) return { kind: 'reset' };
        if (req.url?.includes('partNumber=2') === true && !proxy.seen.some((s) => s.url.includes('partNumber=2'))) {
          return { kind: 'status', status: 500, code: 'InternalError' };
        }
        return FORWARD;
      },
      { partSizeBytes: PART },
    );
    await b.put('small', Buffer.from('after a reset'));
    sameBytes(t, await direct.get('small'), Buffer.from('after a reset'), 'put survived a reset');
    const big = seededBytes(2 * PART + 1, 7);
    const up = b.upload('big');
    await up.write(big);
    await up.complete();
    sameBytes(t, await direct.get('big'), big, 'multipart upload survived a failed part');
    t.equal(b.stats.retries, 2, 'two retries');
  });

  await t.test('a stalled response times out and is retried', async (t) => {
    const { b, retries } = await viaProxy((n) => (n === 1 ? { kind: 'stall' } : FORWARD), { socketTimeoutMs: 300 });
    sameBytes(t, (await b.getRange('obj', { offset: 5, length: 10 })).data, data.subarray(5, 15), 'range read after a timeout');
    t.equal(retries.length, 1, 'one retry');
    t.comment(`timeout surfaced as ${retries[0]?.errorName}`);
  });

  await t.test('retryable failures past the last attempt are UNAVAILABLE', async (t) => {
    const { b, proxy } = await viaProxy(() => ({ kind: 'status', status: 503, code: 'ServiceUnavailable' }), {
      retry: { maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 5 },
    });
    const err = await expectCode(t, b.get('obj'), ErrorCode.UNAVAILABLE, 'get');
    t.match(String((err as Error).message), /"obj"/, 'message names the key');
    t.match(String((err as Error).message), /3 attempts/, 'message says how often it tried');
    t.equal(proxy.seen.length, 3, 'exactly maxAttempts requests');
    t.same(b.stats, { requests: 3, retries: 2, failures: 1, socketErrors: 0 }, 'stats');
  });

  await t.test('client errors are not retried', async (t) => {
    const { b, proxy } = await viaProxy(() => ({ kind: 'status', status: 400, code: 'InvalidArgument' }));
    await expectCode(t, b.get('obj'), ErrorCode.STORAGE, 'a 400');
    t.equal(proxy.seen.length, 1, 'one request');
  });
});
