/**
 * Prometheus metrics of the lifecycle role (prom-client), all prefixed `strata_lifecycle_`. One
 * registry per role, so tests can run several in one process.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { registerBuildInfo } from '../common/metrics-server.js';

export class LifecycleMetrics {
  readonly registry = new Registry();
  readonly blocksDeleted: Counter<'reason'>;
  readonly bytesDeleted: Counter<'reason'>;
  readonly incompleteUploadsRemoved: Counter<string>;
  readonly bucketsDropped: Counter<'reason'>;
  readonly deleteErrors: Counter<string>;
  readonly passes: Counter<'result'>;
  readonly passDuration: Histogram<string>;
  readonly leaseHeld: Gauge<string>;
  readonly lastPassTimestamp: Gauge<string>;
  readonly tenantBlocksLeft: Gauge<'tenant'>;
  readonly dayMerges: Counter<'result'>;
  readonly dayMergeDuration: Histogram<string>;
  readonly dayMergedSamples: Counter<string>;
  readonly dayBytesWritten: Counter<string>;
  readonly daySourcesDeleted: Counter<string>;
  readonly dayIndexWrites: Counter<string>;
  readonly daySourcesChanged: Counter<string>;

  constructor(opts: { readonly defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry });
    registerBuildInfo(this.registry);
    this.blocksDeleted = new Counter({ name: 'strata_lifecycle_blocks_deleted_total', help: 'Blocks deleted, by reason (retention, tenant_deleted).', labelNames: ['reason'], registers });
    this.bytesDeleted = new Counter({ name: 'strata_lifecycle_bytes_deleted_total', help: 'Bytes of the objects deleted (blocks, and the day manifests beside day blocks), by reason.', labelNames: ['reason'], registers });
    this.incompleteUploadsRemoved = new Counter({ name: 'strata_lifecycle_incomplete_uploads_removed_total', help: 'Abandoned multipart uploads and temp files discarded.', registers });
    this.bucketsDropped = new Counter({ name: 'strata_lifecycle_buckets_dropped_total', help: 'Time-partitioned tenant buckets dropped whole, by reason (retention, tenant_deleted).', labelNames: ['reason'], registers });
    this.deleteErrors = new Counter({ name: 'strata_lifecycle_delete_errors_total', help: 'Deletions that failed (retried by the next pass).', registers });
    this.passes = new Counter({ name: 'strata_lifecycle_passes_total', help: 'Passes run, by result (ok, failed, stopped: the lease was lost; clock_skew: not run, this clock is far from the bucket clock).', labelNames: ['result'], registers });
    this.passDuration = new Histogram({ name: 'strata_lifecycle_pass_duration_seconds', help: 'Duration of a pass.', buckets: [0.1, 1, 10, 60, 300, 1800, 7200], registers });
    this.leaseHeld = new Gauge({ name: 'strata_lifecycle_lease_held', help: '1 while this replica holds the lease.', registers });
    this.lastPassTimestamp = new Gauge({ name: 'strata_lifecycle_last_pass_timestamp_seconds', help: 'When the last successful pass of this replica started.', registers });
    this.dayMerges = new Counter({ name: 'strata_lifecycle_day_merges_total', help: 'Day block merges, by result (new: a first day block; late: late data folded into one; failed).', labelNames: ['result'], registers });
    this.dayMergeDuration = new Histogram({ name: 'strata_lifecycle_day_merge_duration_seconds', help: 'Duration of a day merge (read, merge, verify, publish).', buckets: [0.1, 0.5, 1, 5, 30, 120, 600, 3600], registers });
    this.dayMergedSamples = new Counter({ name: 'strata_lifecycle_day_merged_samples_total', help: 'Samples in the day blocks written.', registers });
    this.dayBytesWritten = new Counter({ name: 'strata_lifecycle_day_bytes_written_total', help: 'Bytes of the day blocks written.', registers });
    this.dayIndexWrites = new Counter({ name: 'strata_lifecycle_day_index_writes_total', help: 'Day-block indexes written (one per bucket per pass; gateways read closed days without a day block from their 4-hour blocks directly).', registers });
    this.daySourcesDeleted = new Counter({ name: 'strata_lifecycle_day_sources_deleted_total', help: '4-hour blocks deleted because a day block has held them for daySourceGraceMs.', registers });
    this.daySourcesChanged = new Counter({ name: 'strata_lifecycle_day_sources_changed_total', help: '4-hour blocks due for deletion found replaced by late data just before the DELETE (kept; docs/decisions/0008-day-source-delete-race.md).', registers });
    this.tenantBlocksLeft = new Gauge({ name: 'strata_lifecycle_deleted_tenant_blocks_left', help: 'Blocks of a tenant marked for deletion left after the last pass (0: deleted).', labelNames: ['tenant'], registers });
  }
}
