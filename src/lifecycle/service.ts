/**
 * The lifecycle role (`strata lifecycle`): runs the lifecycle pass (src/lifecycle/job.ts) every
 * `intervalMs` on the one replica holding the lease (src/lifecycle/lease.ts). The time of the last
 * pass is kept in the lease object, so a restart or a change of replica does not restart the
 * schedule. Every deletion and discarded upload is logged (one line each) and counted.
 *
 * The lease is renewed every third of `leaseDurationMs`, also while a pass runs; the pass asks the
 * lease before each batch of deletions and stops once it is lost (or at shutdown). Shutdown stops
 * the pass, gives the lease up and closes the bucket clients.
 */
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { splitListen } from '../common/config.js';
import { createLogger, type Logger } from '../common/logger.js';
import { startMetricsServer, type MetricsServer } from '../common/metrics-server.js';
import type { Bucket } from '../objstore/index.js';
import { describeBucket } from '../objstore/index.js';
import { BucketMetrics } from '../objstore/decorators.js';
import { openTenantRegistry } from '../common/service-runtime.js';
import type { LifecycleConfig } from './config.js';
import { cleanWorkDir } from './day.js';
import { isBlockObject, LifecyclePassStopped, runLifecyclePass, type LifecyclePassResult } from './job.js';
import { Lease } from './lease.js';
import { LifecycleMetrics } from './metrics.js';
import { ALL_PARTITION_CLIENTS } from '../tenancy/tenants.js';

export interface LifecycleOptions {
  readonly config: LifecycleConfig;
  readonly logger?: Logger;
  /** The clock (ms since the epoch); default Date.now. */
  readonly now?: () => number;
  /**
   * The host's clock, compared with the bucket's to find a skew (default Date.now; tests that
   * move `now` keep this real, tests of the skew check move it).
   */
  readonly hostClock?: () => number;
  /** Without a tenants file: use this bucket instead of opening `config.bucket` (not closed at shutdown). */
  readonly bucket?: Bucket;
  /** Run the timer (default true); tests drive {@link RunningLifecycle.tick} themselves. */
  readonly timer?: boolean;
  readonly defaultMetrics?: boolean;
}

/** What one {@link RunningLifecycle.tick} did. */
export interface TickResult {
  readonly held: boolean;
  /** The pass run by this tick (null: see `skipped`). */
  readonly pass: LifecyclePassResult | null;
  /**
   * Why no pass ran, or none ran to its end: none was due (intervalMs), another replica holds the
   * lease, the lease could not be asked for (the bucket: `error` says why), this clock is off the
   * bucket's, the pass stopped because the lease was lost, or it failed (`error`).
   */
  readonly skipped?: 'not_due' | 'lease_elsewhere' | 'lease_error' | 'clock_skew' | 'stopped' | 'failed';
  readonly error?: string;
}

export interface RunningLifecycle {
  readonly metricsPort: number;
  readonly metrics: LifecycleMetrics;
  readonly lease: Lease;
  /** Renews or takes the lease and, when a pass is due, runs it to the end. */
  tick(): Promise<TickResult>;
  /** Stops (see the module comment); idempotent. */
  shutdown(): Promise<void>;
}

/** Starts the role. */
export async function startLifecycle(opts: LifecycleOptions): Promise<RunningLifecycle> {
  const { config } = opts;
  const logger = opts.logger ?? createLogger({ level: config.logLevel, name: 'lifecycle' });
  const now = opts.now ?? Date.now;
  const metrics = new LifecycleMetrics({ defaultMetrics: opts.defaultMetrics ?? true });
  const given = opts.bucket;
  const registry = await openTenantRegistry({ role: 'lifecycle', config, logger, bucketMetrics: new BucketMetrics(metrics.registry), given, maxPartitionClients: ALL_PARTITION_CLIENTS });
  const closeRegistry = (): Promise<void> => registry.close();
  let metricsServer: MetricsServer;
  let lease: Lease;
  const dayWorkDir = config.dayWorkDir ?? join(tmpdir(), 'strata-lifecycle');
  try {
    if (config.dayBlocks) await cleanWorkDir(dayWorkDir, Date.now()); // files of merges a crash interrupted (file times are the system's)
    const holder = config.instanceId ?? `${hostname()}-${process.pid}`;
    lease = new Lease(() => registry.defaultBucket(), holder, config.leaseDurationMs, now, opts.hostClock ?? Date.now);
    const m = splitListen(config.metricsListen);
    metricsServer = await startMetricsServer(metrics.registry, m.host, m.port);
  } catch (err) {
    await closeRegistry();
    throw err;
  }
  if (config.tenantsFile !== undefined) registry.watch(config.tenantsFile);

  let stopping = false;
  let pass: Promise<LifecyclePassResult | null> | null = null;
  /** Why the last step ran no pass (for tick). */
  let skipped: { readonly why: NonNullable<TickResult['skipped']>; readonly error?: string } | null = null;

  /** When this replica last started a pass (null: never). */
  let lastAttemptMs: number | null = null;
  const runPass = async (): Promise<LifecyclePassResult | null> => {
    const started = now();
    lastAttemptMs = started;
    skipped = null;
    // retention, day merges and the lease all decide by this clock: one far from the bucket's
    // (a host clock a day ahead deleted every block of the tenants with a retention, and merged
    // the open day) runs no pass until it is right
    const skew = lease.clockSkewMs;
    const maxSkew = maxClockSkewMs(config.retentionGraceMs);
    if (skew !== null && Math.abs(skew) > maxSkew) {
      metrics.passes.inc({ result: 'clock_skew' });
      skipped = { why: 'clock_skew', error: `this clock differs from the bucket's by ${skew} ms, more than half of retentionGraceMs (${maxSkew} ms)` };
      logger.error({ clockSkewMs: skew, maxClockSkewMs: maxSkew }, "no lifecycle pass: this clock differs from the bucket's by more than half of retentionGraceMs; set the clock right");
      return null;
    }
    const endTimer = metrics.passDuration.startTimer();
    logger.info({ term: lease.record?.term, holder: lease.holder }, 'lifecycle pass starting');
    try {
      if (config.dayBlocks) await cleanWorkDir(dayWorkDir, Date.now());
      const result = await runLifecyclePass(registry, started, {
        blockDurationMs: config.blockDurationMs,
        retentionGraceMs: config.retentionGraceMs,
        incompleteUploadMaxAgeMs: config.incompleteUploadMaxAgeMs,
        deleteConcurrency: config.deleteConcurrency,
        shouldContinue: () => !stopping && lease.held(),
        onBlock: (d) => {
          if (isBlockObject(d.key)) metrics.blocksDeleted.inc({ reason: d.reason });
          metrics.bytesDeleted.inc({ reason: d.reason }, d.bytes);
          // a day manifest goes with its day block: its own line, not one more "block deleted"
          logger.info({ bucket: d.bucket, key: d.key, tenant: d.tenant, shard: d.shard, windowStart: new Date(d.windowStartMs).toISOString(), bytes: d.bytes, reason: d.reason }, isBlockObject(d.key) ? 'block deleted' : 'day manifest deleted');
        },
        onDebris: (d) => {
          metrics.incompleteUploadsRemoved.inc();
          logger.info({ bucket: d.bucket, key: d.upload.key, uploadId: d.upload.id, started: new Date(d.upload.startedMs).toISOString() }, 'incomplete upload discarded');
        },
        onBucketDropped: (d) => {
          metrics.bucketsDropped.inc({ reason: d.reason });
          logger.info({ bucket: d.bucket, tenant: d.tenant, start: new Date(d.startMs).toISOString(), end: new Date(d.endMs).toISOString(), reason: d.reason, objects: d.objects, bytes: d.bytes, existed: d.existed }, 'partition bucket dropped');
        },
        onError: (e) => {
          metrics.deleteErrors.inc();
          logger.warn({ bucket: e.bucket, ...(e.tenants !== undefined ? { tenants: e.tenants } : {}), key: e.key, err: (e.err as Error).message }, e.key === '' ? 'a bucket could not be served; the next pass retries it' : 'deletion failed; the next pass retries it');
        },
        ...(config.dayBlocks
          ? {
              days: {
                dayMergeAfterMs: config.dayMergeAfterMs,
                daySourceGraceMs: config.daySourceGraceMs,
                workDir: dayWorkDir,
                now,
                onMergeStart: (d) => logger.info({ ...d, day: new Date(d.dayStartMs).toISOString() }, 'day merge started'),
                onMerge: (d) => {
                  metrics.dayMerges.inc({ result: d.replaced ? 'late' : 'new' });
                  metrics.dayMergeDuration.observe(d.durationMs / 1000);
                  metrics.dayMergedSamples.inc(d.samples);
                  metrics.dayBytesWritten.inc(d.bytes);
                  logger.info(
                    { bucket: d.bucket, key: d.key, tenant: d.tenant, shard: d.shard, day: new Date(d.dayStartMs).toISOString(), blockId: d.blockId, series: d.series, samples: d.samples, bytes: d.bytes, sourcesMerged: d.sourcesMerged, seriesCopied: d.seriesCopied, replaced: d.replaced, durationMs: Math.round(d.durationMs) },
                    'day block published',
                  );
                },
                onMergeError: (e) => {
                  metrics.dayMerges.inc({ result: 'failed' });
                  logger.warn({ bucket: e.bucket, key: e.key, tenant: e.tenant, shard: e.shard, day: new Date(e.dayStartMs).toISOString(), err: (e.err as Error).message }, 'day merge or deletion failed; the next pass retries it');
                },
                onSourceDeleted: (d) => {
                  metrics.daySourcesDeleted.inc();
                  logger.info({ bucket: d.bucket, key: d.key, etag: d.etag, tenant: d.tenant, shard: d.shard, day: new Date(d.dayStartMs).toISOString(), bytes: d.bytes }, 'day source deleted');
                },
                onSourceChanged: (d) => {
                  metrics.daySourcesChanged.inc();
                  logger.warn({ bucket: d.bucket, key: d.key, listedEtag: d.etag, tenant: d.tenant, shard: d.shard, day: new Date(d.dayStartMs).toISOString() }, 'day source replaced by late data before its deletion; kept, merged by the next pass');
                },
                onDayIndex: (d) => {
                  metrics.dayIndexWrites.inc();
                  logger.debug({ bucket: d.bucket, key: d.key }, 'day-block index written');
                },
              },
            }
          : {}),
      });
      for (const r of result.reports) {
        metrics.tenantBlocksLeft.set({ tenant: r.tenant }, r.blocksLeft);
        logger.info({ ...r, marked: new Date(r.markedMs).toISOString() }, r.blocksLeft === 0 ? 'tenant deletion complete' : 'tenant deletion incomplete; the next pass continues');
      }
      await lease.recordRun(started);
      metrics.passes.inc({ result: 'ok' });
      metrics.lastPassTimestamp.set(started / 1000);
      logger.info(
        { blocksDeleted: result.blocksDeleted, bytesDeleted: result.bytesDeleted, bucketsDropped: result.bucketsDropped, incompleteUploadsRemoved: result.debrisRemoved, dayMerges: result.dayMerges, daySourcesDeleted: result.daySourcesDeleted, failures: result.failures, buckets: result.buckets },
        'lifecycle pass done',
      );
      return result;
    } catch (err) {
      const stopped = err instanceof LifecyclePassStopped;
      metrics.passes.inc({ result: stopped ? 'stopped' : 'failed' });
      if (stopped) logger.warn('lifecycle pass stopped: the lease is no longer held');
      else logger.error({ err }, 'lifecycle pass failed; retried at the next tick');
      skipped = stopped ? { why: 'stopped' } : { why: 'failed', error: (err as Error).message };
      return null;
    } finally {
      endTimer();
    }
  };

  const step = async (): Promise<boolean> => {
    let held = false;
    // a renewal while a pass runs leaves the pass's outcome alone
    if (pass === null) skipped = null;
    try {
      const state = await lease.acquire();
      held = state.held;
      if (state.held) logger.debug({ term: state.record.term, expires: new Date(state.record.expiresMs).toISOString() }, 'lifecycle lease held');
      else skipped = { why: 'lease_elsewhere' };
    } catch (err) {
      logger.warn({ err: (err as Error).message }, 'cannot renew or take the lifecycle lease');
      held = lease.held();
      if (!held) skipped = { why: 'lease_error', error: (err as Error).message };
    }
    metrics.leaseHeld.set(held ? 1 : 0);
    if (!held || stopping || pass !== null) return held;
    const last = lease.record?.lastRunMs ?? null;
    // a last run "in the future" was recorded by a clock that ran ahead: not a reason to wait
    if (last !== null && last <= now() && now() < last + config.intervalMs) {
      skipped = { why: 'not_due' };
      return held;
    }
    pass = runPass().finally(() => {
      pass = null;
      // the next pass may be due before the next renewal: wait for it, not for the renewal
      if (timer !== null && !stepping) {
        clearTimeout(timer);
        schedule();
      }
    });
    return held;
  };

  /**
   * Until the next step: the lease is renewed every third of its duration, and a pass starts
   * `intervalMs` after the start of the last one, not at the renewal after that.
   */
  const renewEveryMs = (): number => Math.max(1000, Math.floor(config.leaseDurationMs / 3));
  const untilNextStep = (): number => {
    const renew = renewEveryMs();
    const last = lease.record?.lastRunMs ?? null;
    if (pass !== null || !lease.held() || last === null) return renew;
    // the last attempt recorded no run (it failed, or the clocks disagreed): retry at the renewals
    if (lastAttemptMs !== null && lastAttemptMs > last) return renew;
    return Math.max(100, Math.min(renew, last + config.intervalMs - now()));
  };
  let timer: NodeJS.Timeout | null = null;
  let stepping = false;
  /** One step, then the timer for the next. */
  const stepThenSchedule = (): void => {
    stepping = true;
    void step().then(() => {
      stepping = false;
      schedule();
    });
  };
  const schedule = (): void => {
    if (stopping) return;
    timer = setTimeout(stepThenSchedule, untilNextStep());
  };
  if (opts.timer ?? true) stepThenSchedule();

  logger.info(
    {
      metricsPort: metricsServer.port,
      bucket: given ? given.name : describeBucket(registry.config.defaultBucket),
      tenantsFile: config.tenantsFile ?? null,
      holder: lease.holder,
      intervalMs: config.intervalMs,
      leaseDurationMs: config.leaseDurationMs,
    },
    'lifecycle role started',
  );

  let stopped: Promise<void> | null = null;
  return {
    metricsPort: metricsServer.port,
    metrics,
    lease,
    async tick() {
      const held = await step();
      const p = pass;
      // without the timer (`strata lifecycle --once`), this tick renews the lease while its pass
      // runs, every third of leaseDurationMs as the timer does: else a pass longer than the lease
      // lost it and stopped part-way
      let renewal: NodeJS.Timeout | null = null;
      let renewing: Promise<void> | null = null;
      let running = p !== null && !(opts.timer ?? true);
      const renewLater = (): void => {
        renewal = setTimeout(() => {
          // a renewal only: no pass is started from here
          renewing = lease
            .acquire()
            .then(
              (state) => void metrics.leaseHeld.set(state.held ? 1 : 0),
              (err: unknown) => logger.warn({ err: (err as Error).message }, 'cannot renew the lifecycle lease'),
            )
            .finally(() => {
              renewing = null;
              if (running) renewLater();
            });
        }, renewEveryMs());
      };
      if (running) renewLater();
      let result: LifecyclePassResult | null = null;
      try {
        result = p ? await p : null;
      } finally {
        running = false;
        if (renewal) clearTimeout(renewal);
        await renewing;
      }
      const s = skipped as { why: NonNullable<TickResult['skipped']>; error?: string } | null;
      return { held, pass: result, ...(result === null && s !== null ? { skipped: s.why, ...(s.error !== undefined ? { error: s.error } : {}) } : {}) };
    },
    shutdown: () =>
      (stopped ??= (async () => {
        stopping = true;
        if (timer) clearTimeout(timer);
        await pass;
        try {
          await lease.release();
        } catch (err) {
          logger.warn({ err: (err as Error).message }, 'cannot give the lifecycle lease up; it expires by itself');
        }
        try {
          await closeRegistry();
        } finally {
          await metricsServer.close();
        }
        logger.info('lifecycle role stopped');
      })()),
  };
}

/** The clock skew against the bucket beyond which no pass runs: half of `retentionGraceMs`, at least a minute. */
export function maxClockSkewMs(retentionGraceMs: number): number {
  return Math.max(60_000, Math.floor(retentionGraceMs / 2));
}
