/**
 * Helpers for the tenancy integration tests: tenants files written atomically (as editors and
 * Kubernetes do), S3 bucket entries of the tenants file whose credentials are references to the
 * test users' environment variables, raw HTTP/2 gRPC calls (to send header bytes grpc-js refuses
 * to send, such as non-ASCII tenant ids), /metrics scraping and a grep for leaked secrets.
 */
import { randomBytes } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import { connect } from 'node:http2';
import { s3TestEnv, type TestUser } from './s3env.js';
import { encodeFrame } from '../../src/api/grpc-frame.js';

/** Writes `text` to `path` through a temp file and a rename (one atomic replace). */
export function replaceFile(path: string, text: string): void {
  const tmp = `${path}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

/** Names of the environment variables holding the test users' keys (as the harness exports them). */
export function credentialEnvRefs(user: TestUser): { accessKeyId: { env: string }; secretAccessKey: { env: string } } {
  const suffix = user === 1 ? '' : '_2';
  return { accessKeyId: { env: `STRATA_TEST_S3_ACCESS_KEY${suffix}` }, secretAccessKey: { env: `STRATA_TEST_S3_SECRET_KEY${suffix}` } };
}

/** A tenants-file bucket entry for `bucket` on the test server; credentials by reference. */
export function s3TenantBucket(bucket: string, credentials: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const env = s3TestEnv();
  return {
    type: 's3',
    endpoint: env.endpoint,
    region: env.region,
    bucket,
    forcePathStyle: true,
    credentials,
    retry: { maxAttempts: 2, baseDelayMs: 10, maxDelayMs: 100 },
    ...extra,
  };
}

/** Every secret of the test S3 users (access key ids included). */
export function s3Secrets(): string[] {
  const env = s3TestEnv();
  return [env.accessKeyId, env.secretAccessKey, env.accessKeyId2, env.secretAccessKey2];
}

/** The secrets (among `secrets`) that occur in `text`. */
export function leakedSecrets(text: string, secrets: readonly string[]): string[] {
  return secrets.filter((s) => s.length > 0 && text.includes(s));
}

/** GET /metrics of a server. */
export async function scrape(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  return res.text();
}

/** The value of one sample of a metric in Prometheus text (`name{labels}`), or 0 if absent. */
export function metricValue(text: string, series: string): number {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return 0;
}

/**
 * One unary gRPC call over plain HTTP/2 with `headers` given as latin1 strings (each character one
 * byte on the wire). Resolves with the grpc-status and grpc-message of the answer.
 */
export async function rawGrpcCall(address: string, path: string, headers: Record<string, string>, message: Buffer): Promise<{ code: number; details: string }> {
  const session = connect(`http://${address}`);
  session.on('error', () => undefined);
  try {
    const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...headers });
    req.end(encodeFrame(message));
    return await new Promise((resolve, reject) => {
      let meta: Record<string, unknown> = {};
      req.on('response', (h) => (meta = { ...meta, ...h }));
      req.on('trailers', (h) => (meta = { ...meta, ...h }));
      req.on('data', () => undefined);
      req.on('error', reject);
      req.on('end', () => resolve({ code: Number(meta['grpc-status']), details: decodeURIComponent(String(meta['grpc-message'] ?? '')) }));
    });
  } finally {
    session.close();
  }
}
