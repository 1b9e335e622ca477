/**
 * Prometheus metrics of the shard aggregator (prom-client), all prefixed `strata_aggregator_`.
 * One registry per aggregator, so tests can run several in one process.
 *
 * Per-tenant metrics carry a `tenant` label from TenantRegistry.label(): the tenants of the tenants
 * file by id, every other tenant pooled as `_other`, so the label set stays bounded.
 */
import { registerBuildInfo } from '../common/metrics-server.js';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** The aggregator's metrics. */
export class AggregatorMetrics {
  readonly registry = new Registry();
  readonly samplesIngested: Counter<'tenant'>;
  readonly bytesIngested: Counter<'tenant'>;
  readonly requests: Counter<'method' | 'code'>;
  readonly requestDuration: Histogram<'method'>;
  readonly walBytes: Gauge;
  readonly openWindows: Gauge;
  readonly walSyncs: Counter;
  readonly walGroupRequests: Histogram;
  readonly walSyncDuration: Histogram;
  readonly flushes: Counter<'result'>;
  readonly flushDuration: Histogram;
  readonly flushBytes: Counter<'tenant'>;
  readonly flushSamples: Counter<'tenant'>;
  readonly flushErrors: Counter<'tenant' | 'reason'>;
  readonly tenantReloads: Counter<'result'>;
  readonly flushSeries: Counter;
  readonly inflightBytes: Gauge;
  readonly walDiskBytes: Gauge;
  readonly walMinFreeBytes: Gauge;
  readonly walQuotaBytes: Gauge;
  /** Where the WAL disk gauge reads its value at scrape time (set once the WAL store exists). */
  walDiskSource: (() => { readonly usedBytes: number; readonly freeBytes: number }) | null = null;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    const p = 'strata_aggregator_';
    this.samplesIngested = new Counter({ name: `${p}samples_ingested_total`, help: 'Samples acknowledged (durable in a WAL), by tenant.', labelNames: ['tenant'], registers });
    this.bytesIngested = new Counter({ name: `${p}bytes_ingested_total`, help: 'Payload bytes (timestamps + values) of acknowledged requests, by tenant.', labelNames: ['tenant'], registers });
    this.requests = new Counter({ name: `${p}requests_total`, help: 'gRPC requests by method and status code.', labelNames: ['method', 'code'], registers });
    this.requestDuration = new Histogram({
      name: `${p}request_duration_seconds`,
      help: 'gRPC request latency by method.',
      labelNames: ['method'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.walBytes = new Gauge({ name: `${p}wal_bytes`, help: 'Bytes of run keys and values held by the WALs.', registers });
    this.openWindows = new Gauge({ name: `${p}open_windows`, help: 'WAL generations not yet flushed.', registers });
    this.walSyncs = new Counter({ name: `${p}wal_syncs_total`, help: 'Synced WAL group writes (fsyncs).', registers });
    this.walGroupRequests = new Histogram({
      name: `${p}wal_group_requests`,
      help: 'Requests carried by one synced WAL write (group commit).',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128],
      registers,
    });
    this.walSyncDuration = new Histogram({
      name: `${p}wal_sync_duration_seconds`,
      help: 'Time of one synced WAL group write.',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    });
    this.flushes = new Counter({ name: `${p}flushes_total`, help: 'Flush attempts by result (ok, error; dropped: the WAL of a tenant marked for deletion, not flushed).', labelNames: ['result'], registers });
    this.flushDuration = new Histogram({
      name: `${p}flush_duration_seconds`,
      help: 'Time from flush start to a verified block.',
      buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
      registers,
    });
    this.flushBytes = new Counter({ name: `${p}flush_bytes_total`, help: 'Bytes of uploaded blocks, by tenant.', labelNames: ['tenant'], registers });
    this.flushSamples = new Counter({ name: `${p}flush_samples_total`, help: 'Samples in uploaded blocks, by tenant.', labelNames: ['tenant'], registers });
    this.flushErrors = new Counter({
      name: `${p}flush_errors_total`,
      help: 'Failed flush attempts by tenant and reason (the error code: access_denied, no_such_bucket, unavailable, storage, corrupt, config, ... or other).',
      labelNames: ['tenant', 'reason'],
      registers,
    });
    this.tenantReloads = new Counter({ name: `${p}tenants_reloads_total`, help: 'Reloads of the tenants file by result (ok, refused).', labelNames: ['result'], registers });
    this.flushSeries = new Counter({ name: `${p}flush_series_total`, help: 'Series in uploaded blocks.', registers });
    this.inflightBytes = new Gauge({ name: `${p}inflight_bytes`, help: 'Payload bytes of requests being processed.', registers });
    const walDisk = (): { readonly usedBytes: number; readonly freeBytes: number } | null => this.walDiskSource?.() ?? null;
    this.walDiskBytes = new Gauge({
      name: `${p}wal_disk_bytes`,
      help: 'Bytes the WALs take on disk, as checked against walQuotaBytes (writes are refused at the quota).',
      registers,
      collect() {
        this.set(walDisk()?.usedBytes ?? 0);
      },
    });
    this.walQuotaBytes = new Gauge({ name: `${p}wal_quota_bytes`, help: 'The configured walQuotaBytes.', registers });
    new Gauge({
      name: `${p}wal_disk_free_bytes`,
      help: 'Bytes free on the disk of walDir, as checked against walMinFreeBytes (writes are refused below it).',
      registers,
      collect() {
        const d = walDisk();
        if (d === null) this.reset();
        else this.set(d.freeBytes);
      },
    });
    this.walMinFreeBytes = new Gauge({ name: `${p}wal_min_free_bytes`, help: 'The configured walMinFreeBytes.', registers });
    registerBuildInfo(this.registry);
    if (opts.defaultMetrics) collectDefaultMetrics({ register: this.registry, prefix: p });
  }
}
