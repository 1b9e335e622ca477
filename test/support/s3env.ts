/**
 * The S3 test environment: the RGW started by `scripts/with-rgw.mjs` (or by hand with
 * `node scripts/rgw/rgw.mjs start`, then `. DIR/env.sh`) exports STRATA_TEST_S3_* variables;
 * tests read them only through this module. A missing variable FAILS the test file with a message
 * saying how to run it; S3 tests are never skipped.
 *
 * `createTestBucket(t)` makes a uniquely named bucket for one test (files run in parallel) and
 * registers a teardown that empties it (objects and unfinished multipart uploads) and deletes it.
 */
import { randomBytes } from 'node:crypto';
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';
import type { Test } from 'tap';
import type { S3BucketConfig } from '../../src/objstore/s3/index.js';
import { inBatches } from './async.js';

/** Connection facts of the test S3 server and its two users. */
export interface S3TestEnv {
  readonly endpoint: string;
  readonly region: string;
  /** User 1. */
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  /** User 2 (a different tenant: cannot see user 1's buckets). */
  readonly accessKeyId2: string;
  readonly secretAccessKey2: string;
  /** A bucket of user 1 that exists for the whole run (prefer createTestBucket). */
  readonly sharedBucket: string;
}

const VARS = {
  endpoint: 'STRATA_TEST_S3_ENDPOINT',
  region: 'STRATA_TEST_S3_REGION',
  accessKeyId: 'STRATA_TEST_S3_ACCESS_KEY',
  secretAccessKey: 'STRATA_TEST_S3_SECRET_KEY',
  accessKeyId2: 'STRATA_TEST_S3_ACCESS_KEY_2',
  secretAccessKey2: 'STRATA_TEST_S3_SECRET_KEY_2',
  sharedBucket: 'STRATA_TEST_S3_BUCKET',
} as const;

/**
 * Reads the S3 test environment.
 * @throws Error naming the missing variables and how to provide them.
 */
export function s3TestEnv(): S3TestEnv {
  const missing = Object.values(VARS).filter((v) => (process.env[v] ?? '') === '');
  if (missing.length > 0) {
    throw new Error(
      `S3 integration tests need a test S3 server, but ${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} not set. ` +
        'Run them through the RGW harness: `npm test`, or for one file ' +
        '`node scripts/with-rgw.mjs -- tap test/objstore/s3.test.ts` (see DEVELOPERS.md).',
    );
  }
  const get = (k: keyof typeof VARS): string => process.env[VARS[k]] as string;
  return {
    endpoint: get('endpoint'),
    region: get('region'),
    accessKeyId: get('accessKeyId'),
    secretAccessKey: get('secretAccessKey'),
    accessKeyId2: get('accessKeyId2'),
    secretAccessKey2: get('secretAccessKey2'),
    sharedBucket: get('sharedBucket'),
  };
}

/** Which of the two test users to act as. */
export type TestUser = 1 | 2;

/** Credentials of a test user. */
export function credentialsOf(env: S3TestEnv, user: TestUser = 1): { accessKeyId: string; secretAccessKey: string } {
  return user === 1
    ? { accessKeyId: env.accessKeyId, secretAccessKey: env.secretAccessKey }
    : { accessKeyId: env.accessKeyId2, secretAccessKey: env.secretAccessKey2 };
}

/**
 * S3Bucket config for `bucket` on the test server as `user`, with test-friendly retries (fast
 * backoff) unless overridden.
 */
export function s3BucketConfig(
  env: S3TestEnv,
  bucket: string,
  overrides: Partial<S3BucketConfig> = {},
  user: TestUser = 1,
): S3BucketConfig {
  return {
    endpoint: env.endpoint,
    region: env.region,
    bucket,
    forcePathStyle: true,
    credentials: credentialsOf(env, user),
    retry: { maxAttempts: 4, baseDelayMs: 10, maxDelayMs: 200 },
    ...overrides,
  };
}

/** A raw SDK client for test set-up and inspection (not the code under test). */
export function adminClient(env: S3TestEnv, user: TestUser = 1): S3Client {
  return new S3Client({
    endpoint: env.endpoint,
    region: env.region,
    forcePathStyle: true,
    credentials: credentialsOf(env, user),
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

let counter = 0;

/** A bucket name no other test (file, process or run) uses. */
export function uniqueBucketName(tag = 't'): string {
  counter++;
  return `strata-${tag}-${process.pid}-${counter}-${randomBytes(3).toString('hex')}`.toLowerCase().slice(0, 63);
}

/**
 * Creates a fresh bucket owned by `user` and registers a teardown on `t` that deletes every
 * object and unfinished multipart upload in it, then the bucket. Returns the bucket name.
 */
export async function createTestBucket(t: Test, opts: { user?: TestUser; tag?: string } = {}): Promise<string> {
  const env = s3TestEnv();
  const user = opts.user ?? 1;
  const bucket = uniqueBucketName(opts.tag);
  const client = adminClient(env, user);
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  t.teardown(async () => {
    try {
      await emptyAndDeleteBucket(client, bucket);
    } finally {
      client.destroy();
    }
  });
  return bucket;
}

/** Keys of unfinished multipart uploads in `bucket` (to check that aborts really aborted). */
export async function pendingMultipartUploads(client: S3Client, bucket: string): Promise<string[]> {
  const res = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
  return (res.Uploads ?? []).map((u) => u.Key ?? '');
}

async function emptyAndDeleteBucket(client: S3Client, bucket: string): Promise<void> {
  for (;;) {
    const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    for (const u of uploads.Uploads ?? []) {
      await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId }));
    }
    if (uploads.IsTruncated !== true) break;
  }
  for (;;) {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket }));
    const keys = (page.Contents ?? []).map((o) => o.Key ?? '');
    if (keys.length === 0) break;
    await inBatches(keys, 32, (k) => client.send(new DeleteObjectCommand({ Bucket: bucket, Key: k })));
  }
  await client.send(new DeleteBucketCommand({ Bucket: bucket }));
}
