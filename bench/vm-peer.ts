/**
 * VictoriaMetrics as the read benchmark's peer, in the same run: Debian's `victoria-metrics`
 * started on a loopback port (stopped by PID), loaded with the benchmark's full dataset through
 * `/api/v1/import`, flushed and merged (`/internal/force_flush`, `/internal/force_merge`), then
 * queried for the read bench's warm cases:
 *
 * - `1x4h`: series `full.series[5000]` over the 4 hours;
 * - `100x4h`: the 100 series of one scrape target (`full.series[k*100 .. k*100+100)`, k = i % 10).
 *
 * Each series carries `id` and `target` (k) labels, so a case is one request. Two exports per
 * case: `/api/v1/export/native` (VictoriaMetrics' stored blocks, as our RUNS) and
 * `/api/v1/export` (decoded JSON lines, as our RAW). Keys: `vm_native_<case>_p50_ms`, `_p99_ms`,
 * `vm_export_<case>_p50_ms`, `_p99_ms`, and `vm_samples_checked` (samples of the 1x4h answer,
 * compared with the dataset's count).
 */
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Dataset } from './dataset.js';
import { quantile } from './proc.js';

const round = (x: number): number => Number(x.toFixed(3));

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

function which(bin: string): string | null {
  try {
    return execFileSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

/** Options of {@link vmPeer}. */
export interface VmPeerOptions {
  /** Queries per case (as the read bench's warm repetitions). */
  readonly reps: { readonly '1x4h': number; readonly '100x4h': number };
  /** A floor exchange `width` wide, run before each query so both see the same neighbours. */
  readonly floor?: (width: number) => Promise<number>;
}

/** Runs the peer; returns its figures ({} with a notice when the binary is not installed). */
export async function vmPeer(full: Dataset, opts: VmPeerOptions): Promise<Record<string, number>> {
  const bin = which('victoria-metrics');
  if (!bin) {
    console.log('peer: victoria-metrics is not installed (Debian package victoria-metrics); no vm_* figures');
    return {};
  }
  const dir = mkdtempSync(join(tmpdir(), 'strata-bench-vm-'));
  const port = await freePort();
  const proc = spawn(bin, [`-storageDataPath=${dir}`, `-httpListenAddr=127.0.0.1:${port}`, '-retentionPeriod=100y', '-loggerLevel=ERROR'], { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const base = `http://127.0.0.1:${port}`;
  try {
    for (let i = 0; ; i++) {
      try {
        if ((await fetch(`${base}/health`)).ok) break;
      } catch {
        // not listening yet
      }
      if (i > 300) throw new Error('victoria-metrics did not start within 30 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    // load: one JSON line per series, 500 series per request
    const t0 = performance.now();
    const lines: string[] = [];
    const post = async (): Promise<void> => {
      const res = await fetch(`${base}/api/v1/import`, { method: 'POST', body: lines.join('\n') });
      if (!res.ok) throw new Error(`import: HTTP ${res.status} ${await res.text()}`);
      lines.length = 0;
    };
    for (let i = 0; i < full.series.length; i++) {
      const s = full.series[i]!;
      const values: number[] = [];
      const timestamps: number[] = [];
      for (let j = 0; j < s.values.length; j++) {
        if (!Number.isFinite(s.values[j]!)) continue; // JSON has no NaN; the generator's data has none
        values.push(s.values[j]!);
        timestamps.push(Number(s.timestamps[j]!));
      }
      lines.push(JSON.stringify({ metric: { __name__: 'strata_bench', id: String(s.id), target: String(Math.floor(i / 100)) }, values, timestamps }));
      if (lines.length === 500) await post();
    }
    if (lines.length > 0) await post();
    await fetch(`${base}/internal/force_flush`);
    const month = new Date(full.startMs).toISOString().slice(0, 7).replace('-', '_');
    await fetch(`${base}/internal/force_merge?partition_prefix=${month}`);
    console.log(`peer: victoria-metrics loaded ${full.sampleCount} samples in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    const start = full.startMs / 1000;
    const end = full.endMs / 1000;
    const match = (c: '1x4h' | '100x4h', i: number): string =>
      c === '1x4h' ? `{__name__="strata_bench",id="${full.series[5000]!.id}"}` : `{__name__="strata_bench",target="${i % 10}"}`;
    const url = (kind: 'native' | 'export', c: '1x4h' | '100x4h', i: number): string =>
      `${base}/api/v1/export${kind === 'native' ? '/native' : ''}?match[]=${encodeURIComponent(match(c, i))}&start=${start}&end=${end}`;
    const get = async (u: string): Promise<Buffer> => {
      const res = await fetch(u);
      const body = Buffer.from(await res.arrayBuffer());
      if (!res.ok) throw new Error(`${u}: HTTP ${res.status}`);
      return body;
    };
    const out: Record<string, number> = {};
    // the 1x4h answer holds the series' samples
    const one = (await get(url('export', '1x4h', 0))).toString('utf8').trim();
    out['vm_samples_checked'] = (JSON.parse(one) as { values: number[] }).values.length;
    for (const kind of ['native', 'export'] as const) {
      for (const c of ['1x4h', '100x4h'] as const) {
        for (let i = 0; i < 10; i++) await get(url(kind, c, i)); // warm its caches
        const lat: number[] = [];
        for (let i = 0; i < opts.reps[c]; i++) {
          if (opts.floor) await opts.floor(c === '1x4h' ? 1 : 8);
          const t = performance.now();
          await get(url(kind, c, i));
          lat.push(performance.now() - t);
        }
        out[`vm_${kind}_${c}_p50_ms`] = round(quantile(lat, 0.5));
        out[`vm_${kind}_${c}_p99_ms`] = round(quantile(lat, 0.99));
        console.log(`peer: victoria-metrics ${kind.padEnd(6)} ${c.padEnd(6)}: p50 ${quantile(lat, 0.5).toFixed(2)} ms, p99 ${quantile(lat, 0.99).toFixed(2)} ms (${opts.reps[c]} queries)`);
      }
    }
    return out;
  } finally {
    proc.kill('SIGTERM');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
}
