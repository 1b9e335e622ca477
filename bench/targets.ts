/**
 * The targets of the benchmarks' figures, from the issues that set them. docs/figures.md shows
 * each recorded figure beside its target and whether the run met it, so figures and targets are
 * kept in one place (design notes and the README link there instead of quoting figures).
 *
 * A bound is a number, or the key of another figure of the same run (a peer or floor measured
 * beside it, e.g. `real_vm_bytes_per_sample`).
 */

/** One target: the figure must be at most `max` and/or at least `min`. */
export interface Target {
  readonly max?: number | string;
  readonly min?: number | string;
}

export const TARGETS: Readonly<Record<string, Readonly<Record<string, Target>>>> = {
  format: {
    bytes_per_sample: { max: 1.55 },
    jitter50_bytes_per_sample: { max: 1.85 },
    interval48_bytes_per_sample: { max: 1.75 },
    real_bytes_per_sample: { max: 'real_vm_bytes_per_sample' },
    encode_samples_per_s: { min: 10e6 },
    decode_samples_per_s: { min: 60e6 },
    range_reads_cold: { max: 3 },
    range_reads_warm: { max: 1 },
  },
  scale: {
    write_amplification: { max: 2.2 },
    leveldb_compactions: { max: 0 },
    samples_per_cpu_s: { min: 4e6 },
    flush_samples_per_s: { min: 5e6 },
    max_rss_mb: { max: 512 },
    max_rss_mb_any_run: { max: 512 },
    ingest_scaling: { min: 1.7 },
    flush_scaling: { min: 1.7 },
  },
  read: {
    // the event-loop delay: the lag figure (event_loop_p99_ms) less its own 10 ms sampling timer,
    // which an idle gateway shows alone (event_loop_idle_p99_ms, about 10.2 ms)
    event_loop_delay_p99_ms: { max: 20 },
    warm_1x4h_p99_over_floor: { max: 1.5 },
    warm_100x4h_p99_over_floor: { max: 1.5 },
    warm_1x30d_p99_over_floor: { max: 1.5 },
    warm_1x4h_p50_ms: { max: 'vm_native_1x4h_p50_ms' },
    warm_100x4h_p50_ms: { max: 'vm_native_100x4h_p50_ms' },
    warm_1x4h_p50_over_vm_native: { max: 1 },
    warm_100x4h_p50_over_vm_native: { max: 1 },
    warm_1x30d_p50_ms: { max: 15 },
    cold_1x30d_gets: { max: 60 },
    cold_1x30d_p50_ms: { max: 250 },
    gets_per_block_cold: { max: 2 },
    unread_rss_mib: { max: 1024 },
    fs_unread_rss_mib: { max: 1024 },
  },
  'read-scale': {
    rss_over_budgets: { max: 1.2 },
    gets_per_block_cold: { max: 2 },
    bucket_requests_per_warm_query: { max: 0 },
  },
  writer: {
    peak_rss_mib: { max: 512 },
  },
};

/** The bound's value in a run: a number, or the figure it names (undefined when absent). */
function boundOf(b: number | string | undefined, figures: Record<string, unknown>): number | undefined {
  if (b === undefined) return undefined;
  if (typeof b === 'number') return b;
  const v = figures[b];
  return typeof v === 'number' ? v : undefined;
}

/** The target as text ("≤ 1.55", "≥ 10000000", "≤ real_vm_bytes_per_sample (0.543)"). */
export function describeTarget(t: Target, figures: Record<string, unknown>, fmt: (v: number) => string): string {
  const part = (op: string, b: number | string | undefined): string | undefined => {
    if (b === undefined) return undefined;
    if (typeof b === 'number') return `${op} ${fmt(b)}`;
    const v = boundOf(b, figures);
    return `${op} \`${b}\`${v === undefined ? '' : ` (${fmt(v)})`}`;
  };
  return [part('≥', t.min), part('≤', t.max)].filter((s) => s !== undefined).join(', ');
}

/** Whether `value` meets `t` in a run with `figures`; undefined when a bound is missing. */
export function meets(t: Target, value: unknown, figures: Record<string, unknown>): boolean | undefined {
  if (typeof value !== 'number') return undefined;
  const min = boundOf(t.min, figures);
  const max = boundOf(t.max, figures);
  if ((t.min !== undefined && min === undefined) || (t.max !== undefined && max === undefined)) return undefined;
  return (min === undefined || value >= min) && (max === undefined || value <= max);
}
