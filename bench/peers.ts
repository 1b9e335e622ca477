/**
 * The peers measured on the same data in the same benchmark run (the Debian packages
 * `prometheus` and `victoria-metrics`):
 *
 * - Prometheus: `promtool tsdb create-blocks-from openmetrics` on the samples as OpenMetrics text;
 *   the bytes of its `chunks/` files and of its whole block directories.
 * - VictoriaMetrics: a `victoria-metrics` process on a loopback port with its own data directory,
 *   fed through `/api/v1/import` (JSON lines, one per series), then `/internal/force_flush` and
 *   `/internal/force_merge`; the bytes of its data parts (`data/`, without the index), and how many
 *   of the samples it returns through `/api/v1/export` differ from what was imported (bit for
 *   bit) or are missing. It is stopped by its PID.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Series } from './dataset.js';

const run = promisify(execFile);

/** Bytes of the regular files under `dir`, recursively; `filter` picks by relative path. */
export function dirBytes(dir: string, filter: (rel: string) => boolean = () => true, rel = ''): number {
  let total = 0;
  for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) total += dirBytes(dir, filter, r);
    else if (e.isFile() && filter(r)) total += statSync(join(dir, r)).size;
  }
  return total;
}

/** A float as Prometheus' text formats spell it (shortest round-trip decimal). */
function promValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function labelText(labels: Record<string, string>): { name: string; rest: string } {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(labels)) {
    if (k === '__name__') continue;
    parts.push(`${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  }
  return { name: labels['__name__'] ?? 'unnamed', rest: parts.length ? `{${parts.join(',')}}` : '' };
}

async function writeLines(path: string, lines: Iterable<string>): Promise<void> {
  const out = createWriteStream(path);
  let chunk = '';
  for (const line of lines) {
    chunk += line;
    if (chunk.length >= 1 << 20) {
      if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
      chunk = '';
    }
  }
  out.end(chunk);
  await new Promise<void>((resolve, reject) => {
    out.once('finish', resolve);
    out.once('error', reject);
  });
}

/** Prometheus' sizes for the records (24-byte `strata push` records, time then id order). */
export interface PrometheusSizes {
  readonly chunksBytes: number;
  readonly blocksBytes: number;
}

/** Imports the records with promtool into fresh blocks and measures them. */
export async function measurePrometheus(records: Buffer, labels: Map<bigint, Record<string, string>>): Promise<PrometheusSizes> {
  const tmp = mkdtempSync(join(tmpdir(), 'strata-bench-prom-'));
  try {
    const text = new Map([...labels].map(([id, l]) => {
      const { name, rest } = labelText(l);
      return [id, `${name}${rest} `];
    }));
    function* lines(): Generator<string> {
      for (let off = 0; off < records.length; off += 24) {
        const t = records.readBigInt64LE(off + 8);
        const sec = t / 1000n;
        const ms = t % 1000n;
        yield `${text.get(records.readBigUInt64LE(off))}${promValue(records.readDoubleLE(off + 16))} ${sec}.${ms.toString().padStart(3, '0')}\n`;
      }
      yield '# EOF\n';
    }
    const om = join(tmp, 'samples.om');
    await writeLines(om, lines());
    const out = join(tmp, 'blocks');
    await run('promtool', ['tsdb', 'create-blocks-from', 'openmetrics', '--quiet', om, out], { maxBuffer: 64 << 20 });
    return { chunksBytes: dirBytes(out, (r) => r.split('/').includes('chunks')), blocksBytes: dirBytes(out) };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** VictoriaMetrics' size for the series and what it changed. */
export interface VictoriaMetricsSizes {
  /** Bytes of its data parts (`<storageDataPath>/data`). */
  readonly dataBytes: number;
  /** Samples returned with other bits than imported. */
  readonly valuesChanged: number;
  /** Samples not returned at all (it drops NaN, so stale markers). */
  readonly samplesDropped: number;
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

async function waitHealthy(base: string, proc: ChildProcess): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (proc.exitCode !== null) throw new Error(`victoria-metrics exited with ${proc.exitCode}`);
    try {
      const r = await fetch(`${base}/health`);
      if (r.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('victoria-metrics did not become healthy in 60 s');
}

async function call(url: string, init?: RequestInit): Promise<string> {
  const r = await fetch(url, init);
  const body = await r.text();
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}: ${body.slice(0, 300)}`);
  return body;
}

/** Waits until the bytes under `dir` stop changing (a background merge finished). */
async function settle(dir: string): Promise<number> {
  let last = -1;
  for (let i = 0; i < 120; i++) {
    const now = dirBytes(dir, (r) => !r.includes('/tmp/') && !r.startsWith('tmp/'));
    if (now === last) return now;
    last = now;
    await new Promise((r) => setTimeout(r, 1000));
  }
  return last;
}

function vmNumber(v: number): string | number {
  // VictoriaMetrics' JSON reader takes NaN and Inf spelled as bare words
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return 'Inf';
  if (v === -Infinity) return '-Inf';
  return v;
}

/** Imports every series into a fresh VictoriaMetrics, merges, measures, exports and compares. */
export async function measureVictoriaMetrics(series: readonly Series[], labels: Map<bigint, Record<string, string>>): Promise<VictoriaMetricsSizes> {
  const tmp = mkdtempSync(join(tmpdir(), 'strata-bench-vm-'));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const proc = spawn('victoria-metrics', [`-storageDataPath=${join(tmp, 'vm')}`, `-httpListenAddr=127.0.0.1:${port}`, '-retentionPeriod=100y', '-loggerLevel=ERROR'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  try {
    await waitHealthy(base, proc);
    const ids = new Map<string, Series>();
    const lines: string[] = [];
    for (const s of series) {
      const metric = { ...labels.get(s.id)!, strata_id: String(s.id) };
      ids.set(String(s.id), s);
      const values = Array.from(s.values, vmNumber);
      lines.push(`${JSON.stringify({ metric, values, timestamps: Array.from(s.timestamps, Number) }).replace(/"(NaN|-?Inf)"/g, '$1')}\n`);
    }
    // in pieces of about 8 MB, as a scraper or vmagent would send them
    for (let i = 0; i < lines.length; ) {
      let body = '';
      while (i < lines.length && body.length < 8 << 20) body += lines[i++];
      await call(`${base}/api/v1/import`, { method: 'POST', body });
    }
    await call(`${base}/internal/force_flush`);
    await call(`${base}/internal/force_merge`);
    const dataBytes = await settle(join(tmp, 'vm', 'data'));
    const exported = await call(`${base}/api/v1/export?match[]=${encodeURIComponent('{strata_id!=""}')}`);
    let changed = 0;
    let returned = 0;
    const bits = new Float64Array(2);
    const u = new BigUint64Array(bits.buffer);
    for (const line of exported.split('\n')) {
      if (!line) continue;
      const rec = JSON.parse(line.replace(/\b(NaN|-?Inf)\b/g, '"$1"')) as { metric: Record<string, string>; values: (number | string)[]; timestamps: number[] };
      const s = ids.get(rec.metric['strata_id']!);
      if (!s) throw new Error(`victoria-metrics exported a series that was not imported: ${line.slice(0, 200)}`);
      let j = 0;
      for (let k = 0; k < rec.timestamps.length; k++) {
        const t = BigInt(rec.timestamps[k]!);
        while (j < s.timestamps.length && s.timestamps[j]! < t) j++;
        if (s.timestamps[j] !== t) throw new Error(`victoria-metrics returned a sample at ${t} that series ${s.id} does not have`);
        returned++;
        const v = rec.values[k]!;
        bits[0] = typeof v === 'number' ? v : v === 'NaN' ? NaN : v === 'Inf' ? Infinity : -Infinity;
        if (u[0] !== new BigUint64Array(s.values.buffer, s.values.byteOffset + 8 * j, 1)[0]) changed++;
      }
    }
    const imported = series.reduce((a, s) => a + s.timestamps.length, 0);
    return { dataBytes, valuesChanged: changed, samplesDropped: imported - returned };
  } finally {
    if (proc.exitCode === null && proc.signalCode === null) {
      const gone = new Promise((r) => proc.once('exit', r));
      process.kill(proc.pid!, 'SIGTERM');
      await gone;
    }
    rmSync(tmp, { recursive: true, force: true });
  }
}
