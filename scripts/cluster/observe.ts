/**
 * Looking at a running cluster from outside, the way an operator would: gRPC health checks,
 * Prometheus `/metrics` scrapes, and HAProxy's view of its gateways (its stats page as CSV).
 */
import { Client, credentials, Metadata, type MethodDefinition, type ServiceError } from '@grpc/grpc-js';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadProto } from '../../src/api/proto.js';

type HealthMethods = Record<'Check', MethodDefinition<{ service: string }, { status: string }>>;
let healthMethods: HealthMethods | null = null;

function health(): HealthMethods {
  if (!healthMethods) {
    const pkg = loadProto('health.proto') as unknown as { grpc: { health: { v1: { Health: { service: HealthMethods } } } } };
    healthMethods = pkg.grpc.health.v1.Health.service;
  }
  return healthMethods;
}

/**
 * One grpc.health.v1 Check of `service` ('' = the whole server) at `address`, with optional
 * request headers (to steer a proxy). Resolves with the status name (`SERVING`, ...); rejects with
 * the gRPC error.
 */
export async function grpcHealthCheck(address: string, service = '', headers: Record<string, string> = {}, timeoutMs = 2000): Promise<string> {
  const client = new Client(address, credentials.createInsecure());
  const md = new Metadata();
  for (const [k, v] of Object.entries(headers)) md.set(k, v);
  const def = health().Check;
  try {
    return await new Promise<string>((resolve, reject) => {
      client.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, { service }, md, { deadline: Date.now() + timeoutMs }, (err, res) =>
        err ? reject(err) : resolve(res!.status),
      );
    });
  } finally {
    client.close();
  }
}

/**
 * Polls {@link grpcHealthCheck} until it answers SERVING; rejects after `timeoutMs` with the last
 * answer or error. `abort` is checked between attempts (e.g. the process died).
 */
export async function waitServing(
  what: string,
  address: string,
  opts: { service?: string; headers?: Record<string, string>; timeoutMs?: number; abort?: () => Error | null } = {},
): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  let last = 'no answer yet';
  for (;;) {
    const stop = opts.abort?.();
    if (stop) throw stop;
    try {
      const s = await grpcHealthCheck(address, opts.service ?? '', opts.headers ?? {}, 1000);
      if (s === 'SERVING') return;
      last = `status ${s}`;
    } catch (err) {
      last = (err as Partial<ServiceError>).details ?? (err as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`waiting for ${what} (${address}) to be SERVING: timed out; last answer: ${last}`);
    await sleep(100);
  }
}

/** One sample of a Prometheus text exposition. */
export interface MetricSample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

const SAMPLE_LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?\s*/y;

/**
 * Parses the Prometheus text format (version 0.0.4) into samples; comments are skipped.
 * @throws Error naming the first line that is not a sample.
 */
export function parsePrometheusText(text: string): MetricSample[] {
  const out: MetricSample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = SAMPLE_LINE.exec(line);
    if (!m) throw new Error(`not a Prometheus sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    const body = m[2] ?? '';
    LABEL.lastIndex = 0;
    while (LABEL.lastIndex < body.length) {
      const at = LABEL.lastIndex;
      const l = LABEL.exec(body);
      if (!l) throw new Error(`cannot parse the labels at offset ${at} of ${JSON.stringify(line)}`);
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    }
    // Go's ParseFloat rules: NaN and Inf in any case (prom-client writes `Nan`)
    const v = m[3]!.toLowerCase();
    const value = v === 'nan' ? NaN : v === '+inf' || v === 'inf' ? Infinity : v === '-inf' ? -Infinity : Number(v);
    if (Number.isNaN(value) && v !== 'nan') throw new Error(`bad sample value in ${JSON.stringify(line)}`);
    out.push({ name: m[1]!, labels, value });
  }
  return out;
}

/** Sum of the samples of `name` whose labels include `labels`. */
export function sumMetric(samples: readonly MetricSample[], name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const s of samples) {
    if (s.name !== name) continue;
    if (Object.entries(labels).every(([k, v]) => s.labels[k] === v)) sum += s.value;
  }
  return sum;
}

/** GETs a `/metrics` URL and parses it. */
export async function scrapeMetrics(url: string, timeoutMs = 5000): Promise<MetricSample[]> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  const body = await res.text();
  if (!res.ok) throw new Error(`scraping ${url}: HTTP ${res.status}: ${body.slice(0, 200)}`);
  return parsePrometheusText(body);
}

/** One server of HAProxy's stats: its name and status (`UP`, `DOWN`, `UP 1/2`, `MAINT`, ...). */
export interface HaproxyServerState {
  readonly backend: string;
  readonly server: string;
  readonly status: string;
}

/** The servers (not the FRONTEND/BACKEND rows) of HAProxy's `/stats;csv`. */
export function parseHaproxyStatsCsv(csv: string): HaproxyServerState[] {
  const lines = csv.split('\n').filter((l) => l.trim() !== '');
  const header = lines[0];
  if (header === undefined || !header.startsWith('# ')) throw new Error('HAProxy stats CSV without its "# pxname,..." header');
  const cols = header.slice(2).split(',');
  const px = cols.indexOf('pxname');
  const sv = cols.indexOf('svname');
  const st = cols.indexOf('status');
  if (px < 0 || sv < 0 || st < 0) throw new Error('HAProxy stats CSV without pxname, svname or status');
  const out: HaproxyServerState[] = [];
  for (const line of lines.slice(1)) {
    const f = line.split(',');
    const server = f[sv] ?? '';
    if (server === 'FRONTEND' || server === 'BACKEND') continue;
    out.push({ backend: f[px] ?? '', server, status: f[st] ?? '' });
  }
  return out;
}

/** HAProxy's current view of its servers (from `<statsUrl>;csv`). */
export async function haproxyServerStates(statsUrl: string): Promise<HaproxyServerState[]> {
  const res = await fetch(`${statsUrl};csv`, { signal: AbortSignal.timeout(5000) });
  const body = await res.text();
  if (!res.ok) throw new Error(`reading HAProxy stats ${statsUrl}: HTTP ${res.status}`);
  return parseHaproxyStatsCsv(body);
}
