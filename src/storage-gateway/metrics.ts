/**
 * Prometheus metrics of the storage gateway (prom-client), all prefixed `strata_gateway_`.
 * One registry per gateway, so tests can run several in one process. The tests and the benchmark
 * read the S3 and cache counters from here: they are the gateway's own account of its work.
 *
 * Counters on the read path are bumped several times per call. prom-client hashes the label set
 * on every `inc` (a child from `labels()` too), so those sites take a {@link Counted} from
 * {@link GatewayMetrics.counted} instead: a plain number, added to the prom-client counter when
 * the registry is collected (every scrape, and {@link GatewayMetrics.total}). Names, labels and
 * values on /metrics are the same.
 */
import { registerBuildInfo } from '../common/metrics-server.js';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry, type CounterConfiguration } from 'prom-client';

/** One counter (one label set of it) counted in memory; see the module comment. */
export interface Counted {
  /** Adds `n` (default 1; must be >= 0). */
  inc(n?: number): void;
}

/** A {@link Counted} and where its count goes at collection. */
class PendingCount implements Counted {
  private pending = 0;

  constructor(
    private readonly counter: Counter<string>,
    private readonly labels: Readonly<Record<string, string>> | null,
  ) {}

  inc(n = 1): void {
    this.pending += n;
  }

  /** Moves the pending count into the prom-client counter. */
  flush(): void {
    if (this.pending === 0) return;
    const n = this.pending;
    this.pending = 0;
    if (this.labels) this.counter.inc(this.labels, n);
    else this.counter.inc(n);
  }
}

/** The gateway's metrics. */
export class GatewayMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'code'>;
  readonly requestDuration: Histogram<'code'>;
  readonly samplesServed: Counter;
  /** Per tenant (bounded label: configured tenants, else `_other`). */
  readonly tenantRequests: Counter<'tenant' | 'code'>;
  readonly tenantSamplesServed: Counter<'tenant'>;
  /** Reloads of the tenants file by result (ok, refused). */
  readonly tenantReloads: Counter<'result'>;
  readonly seriesServed: Counter;
  readonly bytesServed: Counter<'encoding'>;
  readonly blocksMissing: Counter;
  /** Reads of closed days' windows by the source that answered (day: the day block; blocks: its 4-hour blocks). */
  readonly dayReads: Counter<'source'>;
  readonly dayIndexLoads: Counter<'result'>;
  /**
   * Hits and misses per layer: `open_block`, `page` and `hot_range` (memory), `range` and `tail`
   * (byte cache). A range is looked up in `hot_range` first, then (a hot miss) in `range`.
   */
  readonly cacheHits: Counter<'layer'>;
  readonly cacheMisses: Counter<'layer'>;
  readonly cacheCorrupt: Counter;
  readonly cacheBytes: Gauge;
  readonly cacheBlocks: Gauge;
  readonly cacheEvictions: Counter;
  readonly cacheWritesSkipped: Counter;
  readonly cacheWriteFailures: Counter;
  readonly cacheDiskLow: Gauge;
  readonly cacheEvictedBytes: Counter;
  readonly negativeHits: Counter;
  /** Bytes charged to each in-memory budget, read at scrape time ({@link watchMemory}). */
  readonly memoryBytes: Gauge;
  private readonly memoryPools = new Map<string, () => number>();
  /** Bytes of built answers held until clients take them (maxBytesInFlight). */
  readonly bytesInFlight: Gauge;
  /** Reads served from a block past its staleness because the bucket could not be reached. */
  readonly staleServes: Counter;
  readonly blockReplacements: Counter;
  /** GETs the gateway issued (`suffix`: footer + index of index; `range`: pages and runs). */
  readonly s3Gets: Counter<'kind'>;
  readonly s3GetBytes: Counter<'kind'>;
  readonly s3GetErrors: Counter<'code'>;
  readonly coalescedRanges: Counter;
  readonly singleFlightJoins: Counter;
  /** Where the cache gauges read their values at scrape time (set once the store exists). */
  cacheSource: { readonly usedBytes: number; readonly blockCount: number } | null = null;

  /** Pending counts per counter, flushed by the counter's collect hook. */
  private readonly pending = new Map<Counter<string>, Map<string, PendingCount>>();

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    const p = 'strata_gateway_';
    const pending = this.pending;
    // every counter moves its pending in-memory counts into itself when it is collected
    function collect(this: Counter<string>): void {
      const counts = pending.get(this);
      if (counts) for (const c of counts.values()) c.flush();
    }
    const counter = <T extends string>(cfg: CounterConfiguration<T>): Counter<T> => new Counter<T>({ ...cfg, collect } as CounterConfiguration<T>);
    this.requests = counter({ name: `${p}requests_total`, help: 'Read calls by gRPC status code.', labelNames: ['code'], registers });
    this.requestDuration = new Histogram({
      name: `${p}request_duration_seconds`,
      help: 'Read call latency, from arrival to the last message, by gRPC status code.',
      labelNames: ['code'],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.samplesServed = counter({ name: `${p}samples_served_total`, help: 'Samples sent (RAW) or in runs sent (RUNS).', registers });
    this.tenantRequests = counter({
      name: `${p}tenant_requests_total`,
      help: 'Read calls per tenant (configured tenants by name, others as _other) by gRPC status code.',
      labelNames: ['tenant', 'code'],
      registers,
    });
    this.tenantSamplesServed = counter({ name: `${p}tenant_samples_served_total`, help: 'Samples served per tenant (as samples_served_total).', labelNames: ['tenant'], registers });
    this.tenantReloads = counter({ name: `${p}tenant_reloads_total`, help: 'Reloads of the tenants file by result (ok, refused).', labelNames: ['result'], registers });
    this.seriesServed = counter({ name: `${p}series_served_total`, help: 'Series with samples sent.', registers });
    this.bytesServed = counter({ name: `${p}bytes_served_total`, help: 'Payload bytes of responses by encoding.', labelNames: ['encoding'], registers });
    this.blocksMissing = counter({ name: `${p}blocks_missing_total`, help: 'Reads of a window that has no block (a day block looked for before the 4-hour blocks is not counted).', registers });
    this.dayIndexLoads = counter({ name: `${p}day_index_loads_total`, help: 'Loads of a bucket\'s day-block index by result: ok, missing (none written yet), error (the previous one is kept while it is trusted).', labelNames: ['result'], registers });
    this.dayReads = counter({ name: `${p}day_reads_total`, help: 'Reads of a closed day (or a window of one) by the source that answered: day (the day block) or blocks (its 4-hour blocks, no day block yet).', labelNames: ['source'], registers });
    this.cacheHits = counter({ name: `${p}cache_hits_total`, help: 'Cache hits by layer (open_block, page, hot_range: memory; tail, range: LMDB).', labelNames: ['layer'], registers });
    this.cacheMisses = counter({ name: `${p}cache_misses_total`, help: 'Cache misses by layer.', labelNames: ['layer'], registers });
    this.cacheCorrupt = counter({ name: `${p}cache_corrupt_total`, help: 'Cached ranges that failed their checksum (deleted and refetched).', registers });
    const source = (): GatewayMetrics['cacheSource'] => this.cacheSource;
    this.cacheBytes = new Gauge({
      name: `${p}cache_bytes`,
      help: 'Bytes charged in the byte cache.',
      registers,
      collect() {
        this.set(source()?.usedBytes ?? 0);
      },
    });
    this.cacheBlocks = new Gauge({
      name: `${p}cache_blocks`,
      help: 'Blocks with ranges in the byte cache.',
      registers,
      collect() {
        this.set(source()?.blockCount ?? 0);
      },
    });
    this.cacheEvictions = counter({ name: `${p}cache_evictions_total`, help: 'Blocks evicted from the byte cache to fit its budget.', registers });
    this.cacheWritesSkipped = counter({
      name: `${p}cache_writes_skipped_total`,
      help: 'Ranges not cached because cachePendingMaxBytes of writes were waiting for the disk, or the cache disk had less than cacheMinFreeBytes free.',
      registers,
    });
    this.cacheWriteFailures = counter({
      name: `${p}cache_write_failures_total`,
      help: 'Byte-cache writes whose LMDB commit failed (a full disk, an I/O error): the ranges were served and not cached.',
      registers,
    });
    this.cacheDiskLow = new Gauge({
      name: `${p}cache_disk_low`,
      help: '1 while the cache disk has less than cacheMinFreeBytes free (reads are served and not cached), else 0.',
      registers,
    });
    this.cacheEvictedBytes = counter({ name: `${p}cache_evicted_bytes_total`, help: 'Bytes evicted from the byte cache.', registers });
    const pools = this.memoryPools;
    this.memoryBytes = new Gauge({
      name: `${p}memory_bytes`,
      help: 'Bytes charged to each in-memory budget: open_blocks (openBlocksMaxBytes), pages (pagesMaxBytes), hot_ranges (hotRangesMaxBytes), cache_pending (byte-cache writes not yet committed).',
      labelNames: ['pool'],
      registers,
      collect() {
        for (const [pool, read] of pools) this.set({ pool }, read());
      },
    });
    this.bytesInFlight = new Gauge({ name: `${p}bytes_in_flight`, help: 'Bytes of built answers held until their clients take them (bounded by maxBytesInFlight).', registers });
    this.negativeHits = counter({ name: `${p}negative_cache_hits_total`, help: 'Reads answered "no block" from the negative cache.', registers });
    this.staleServes = counter({ name: `${p}stale_serves_total`, help: 'Blocks served as last read, or windows answered "no block" as last found, past their staleness, because the bucket could not be reached (maxStaleMs).', registers });
    this.blockReplacements = counter({ name: `${p}block_replacements_total`, help: 'Objects found holding a new block id (late data).', registers });
    this.s3Gets = counter({ name: `${p}s3_gets_total`, help: 'GETs issued to the bucket by kind (suffix, range).', labelNames: ['kind'], registers });
    this.s3GetBytes = counter({ name: `${p}s3_get_bytes_total`, help: 'Bytes received from the bucket by kind.', labelNames: ['kind'], registers });
    this.s3GetErrors = counter({ name: `${p}s3_get_errors_total`, help: 'Failed GETs by error code (not found included).', labelNames: ['code'], registers });
    this.coalescedRanges = counter({ name: `${p}coalesced_ranges_total`, help: 'Ranges fetched by a GET shared with another range.', registers });
    this.singleFlightJoins = counter({ name: `${p}single_flight_joins_total`, help: 'Misses that joined a fetch already in flight.', registers });
    registerBuildInfo(this.registry);
    if (opts.defaultMetrics) collectDefaultMetrics({ register: this.registry });
  }

  /** Reports `read()` as `memory_bytes{pool}` at every scrape. */
  watchMemory(pool: string, read: () => number): void {
    this.memoryPools.set(pool, read);
  }

  /**
   * A {@link Counted} for one label set of `counter` (one of this object's counters): cheap to
   * bump, visible in the counter from its next collection on. Keep it; asking again for the same
   * labels returns the same one.
   */
  counted<T extends string>(counter: Counter<T>, labels?: Readonly<Record<T, string>>): Counted {
    const c = counter as unknown as Counter<string>;
    let counts = this.pending.get(c);
    if (!counts) {
      counts = new Map();
      this.pending.set(c, counts);
    }
    const key = labels ? JSON.stringify(Object.entries(labels).sort()) : '';
    let pc = counts.get(key);
    if (!pc) {
      pc = new PendingCount(c, labels ?? null);
      counts.set(key, pc);
    }
    return pc;
  }

  /** Current total of a metric over all its label sets (for tests and the benchmark). */
  async total(name: string, labels: Record<string, string> = {}): Promise<number> {
    const m = this.registry.getSingleMetric(name);
    if (!m) throw new RangeError(`no metric ${name}`);
    const v = await m.get();
    let sum = 0;
    for (const x of v.values) {
      if (Object.entries(labels).every(([k, want]) => String((x.labels as Record<string, unknown>)[k]) === want)) sum += x.value;
    }
    return sum;
  }
}
