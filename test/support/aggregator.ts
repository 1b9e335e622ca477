/**
 * Test helpers for the shard aggregator: runs `strata aggregator` as a real child process (WAL on
 * disk, blocks in the test S3 server), raw gRPC calls for malformed requests, and readers that
 * pull a block's series back out of the bucket for exact comparisons.
 *
 * Not a test file by itself (imported by the *.test.ts files next to it).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, credentials, Metadata, type MethodDefinition, type ServiceError } from '@grpc/grpc-js';
import type { Test } from 'tap';
import { BlockReader } from '../../src/block/reader.js';
import { bucketSource } from '../../src/block/source.js';
import { loadProto } from '../../src/api/proto.js';
import type { Samples } from '../../src/format/run.js';
import type { Bucket } from '../../src/objstore/bucket.js';
import { S3Bucket, type S3BucketConfig } from '../../src/objstore/s3/index.js';
import { s3BucketConfig, s3TestEnv } from './s3env.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** A running aggregator child process. */
export interface AggProcess {
  readonly proc: ChildProcess;
  readonly port: number;
  readonly metricsPort: number;
  readonly address: string;
  /** Every JSON log line so far. */
  readonly logs: Record<string, unknown>[];
  /** Everything the process wrote so far, unparsed (for greps over all output). */
  readonly output: { stdout: string; stderr: string };
  /** Resolves with the exit code / signal. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** A temporary directory removed... never: tap's fixture dirs are not needed, tmp is wiped by the OS. */
export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `strata-${prefix}-`));
}

/** S3 bucket config (as the aggregator's `bucket` option) for a test bucket. */
export function s3ConfigFor(bucket: string, overrides: Partial<S3BucketConfig> = {}): Record<string, unknown> {
  return { type: 's3', ...s3BucketConfig(s3TestEnv(), bucket, overrides) };
}

/** Opens the test bucket from the test process (closed at `t`'s teardown). */
export function openTestBucket(t: Test, bucket: string): Bucket {
  const b = new S3Bucket(s3BucketConfig(s3TestEnv(), bucket));
  t.teardown(() => b.close());
  return b;
}

/**
 * Starts `strata aggregator` with `config` (written to a file) and waits until it serves.
 * The process is SIGKILLed at `t`'s teardown if still running.
 */
export async function startAggregator(
  t: Test,
  config: Record<string, unknown>,
  opts: { waitServing?: boolean; env?: Record<string, string>; args?: string[] } = {},
): Promise<AggProcess> {
  const dir = tempDir('aggcfg');
  const file = join(dir, 'config.json');
  writeFileSync(file, JSON.stringify({ grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0', logLevel: 'info', ...config }));
  const proc = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), 'aggregator', '--config', file, ...(opts.args ?? [])], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', ...opts.env },
  });
  const logs: Record<string, unknown>[] = [];
  const output = { stdout: '', stderr: '' };
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL');
      await exited;
    }
  });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    output.stderr += d.toString();
  });
  const listening = new Promise<{ port: number; metricsPort: number }>((resolve, reject) => {
    let buf = '';
    let serving = false;
    let ports: { port: number; metricsPort: number } | null = null;
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      output.stdout += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let rec: Record<string, unknown>;
        try {
          rec = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        logs.push(rec);
        if (typeof rec.msg === 'string' && rec.msg.startsWith('aggregator listening')) ports = { port: rec.grpcPort as number, metricsPort: rec.metricsPort as number };
        if (rec.msg === 'aggregator serving') serving = true;
        if (ports && (serving || opts.waitServing === false)) resolve(ports);
      }
    });
    void exited.then(({ code, signal }) => reject(new Error(`aggregator exited (${code ?? signal}) before serving: ${stderr}\n${logs.map((l) => JSON.stringify(l)).join('\n')}`)));
  });
  const { port, metricsPort } = await listening;
  return { proc, port, metricsPort, address: `127.0.0.1:${port}`, logs, output, exited };
}

/** SIGKILLs the process and waits for it to be gone. */
export async function kill9(a: AggProcess): Promise<void> {
  if (a.proc.exitCode === null && a.proc.signalCode === null) a.proc.kill('SIGKILL');
  await a.exited;
}

type Methods = Record<'Write' | 'Seal' | 'Status', MethodDefinition<unknown, unknown>>;
const methods = (loadProto('write.proto') as unknown as { strata: { write: { v1: { Writer: { service: Methods } } } } }).strata.write.v1.Writer.service;
const healthDef = (loadProto('health.proto') as unknown as { grpc: { health: { v1: { Health: { service: Record<'Check', MethodDefinition<unknown, unknown>> } } } } }).grpc.health.v1.Health.service.Check;

/** A raw gRPC connection to an aggregator (closed at `t`'s teardown). */
export class RawClient {
  private readonly c: Client;
  constructor(t: Test, address: string) {
    this.c = new Client(address, credentials.createInsecure(), { 'grpc.max_send_message_length': -1 });
    t.teardown(() => this.c.close());
  }

  /** Calls `method` with `headers`; resolves with the response or the ServiceError. */
  call(method: keyof Methods, req: unknown, headers: Record<string, string> = {}): Promise<{ err: ServiceError | null; res: Record<string, unknown> | null }> {
    const md = new Metadata();
    for (const [k, v] of Object.entries(headers)) md.set(k, v);
    const def = methods[method];
    return new Promise((resolve) => {
      this.c.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, req, md, { deadline: Date.now() + 60_000 }, (err, res) =>
        resolve({ err: err ?? null, res: (res as Record<string, unknown> | undefined) ?? null }),
      );
    });
  }

  /** grpc.health.v1 Check of the whole server. */
  health(): Promise<string> {
    return new Promise((resolve, reject) => {
      this.c.makeUnaryRequest(healthDef.path, healthDef.requestSerialize, healthDef.responseDeserialize, { service: '' }, new Metadata(), {}, (err, res) =>
        err ? reject(err) : resolve((res as { status: string }).status),
      );
    });
  }

  async status(): Promise<StatusResponse> {
    const r = await this.call('Status', {});
    if (r.err) throw r.err;
    return r.res as unknown as StatusResponse;
  }
}

/** The Status RPC's response as proto-loader decodes it. */
export interface StatusResponse {
  num_shards: number;
  owned_shards: number[];
  windows: { tenant: string; shard: number; window_start_ms: string; generation: number; state: string; wal_bytes: string; samples: string }[];
  wal_bytes: string;
  last_flushes: { block: { key: string; samples: string } | null; error: string }[];
  wal_syncs: string;
  wal_requests: string;
  state: string;
  block_duration_ms: string;
  min_timestamp_ms: string;
  max_timestamp_ms: string;
}

/** Little-endian bytes of int64 timestamps. */
export function tsBytes(ts: readonly bigint[]): Buffer {
  const b = Buffer.alloc(8 * ts.length);
  ts.forEach((v, i) => b.writeBigInt64LE(v, 8 * i));
  return b;
}

/** Little-endian bytes of float64 values given as 64-bit patterns. */
export function bitsBytes(bits: readonly bigint[]): Buffer {
  const b = Buffer.alloc(8 * bits.length);
  bits.forEach((v, i) => b.writeBigUInt64LE(v, 8 * i));
  return b;
}

/** Bit pattern of a float64. */
export function bitsOf(v: number): bigint {
  const b = Buffer.alloc(8);
  b.writeDoubleLE(v, 0);
  return b.readBigUInt64LE(0);
}

/** Every series of the block at `key` with its samples as timestamps and value bit patterns. */
export async function readBlock(bucket: Bucket, key: string): Promise<Map<bigint, { ts: bigint[]; bits: bigint[] }>> {
  const r = await BlockReader.open(bucketSource(bucket, key));
  await r.verify();
  const out = new Map<bigint, { ts: bigint[]; bits: bigint[] }>();
  for await (const loc of r.series()) {
    const s: Samples = await r.readRun(loc);
    const words = new BigUint64Array(s.values.buffer, s.values.byteOffset, s.values.length);
    out.set(loc.id, { ts: [...s.timestamps], bits: [...words] });
  }
  return out;
}

/** Polls `fn` until it returns a non-null value (test deadline: `timeoutMs`). */
export async function eventually<T>(what: string, fn: () => Promise<T | null>, timeoutMs = 30_000, everyMs = 50): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== null) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
