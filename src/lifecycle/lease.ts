/**
 * The lifecycle role's lease: which replica does the work, and when the last run was, kept in the
 * default bucket so that both survive restarts.
 *
 * Each term of the lease is one object, `lifecycle/lease/<term as 12 digits>.json`, holding
 * `{ term, holder, expiresMs, lastRunMs }`. Only the holder of the newest term writes that object
 * (to renew it or record a run). Another replica takes over only after `expiresMs` has passed, by
 * creating the next term's object with `ifNoneMatch`: the bucket lets exactly one replica create
 * it, so two replicas never both win a term. A holder that renewed checks that no newer term
 * exists, and stops working when its own lease time runs out (renewals happen every third of the
 * duration).
 *
 * Lease times are the bucket's clock: each replica measures how far its clock is from the
 * bucket's from the modification time of the lease object it writes ({@link clockSkewMs}), and
 * once that is {@link SKEW_APPLIED_MS} or more it takes it off. A replica whose clock ran 12
 * minutes ahead of a 5-minute lease saw every term of the others as expired, took a new one each
 * round, and two replicas held the lease at once. Until its first write a replica knows no skew:
 * a replica started with a clock far ahead may take one term early, once.
 *
 * The work itself (deleting expired blocks, blocks of deleted tenants, old debris) is idempotent:
 * should two replicas ever overlap (a paused process waking after its lease ran out), both delete
 * only objects that are due for deletion, so nothing is lost and nothing is deleted twice with a
 * different outcome.
 */
import { ErrorCode, ObjectStoreError, StrataError } from '../errors.js';
import type { Bucket } from '../objstore/index.js';

/**
 * A measured clock skew this large or larger is taken off the lease's times; smaller ones are the
 * measure's own error (the bucket's 1 s resolution and the request's latency).
 */
export const SKEW_APPLIED_MS = 2000;

/** Where the lease's terms live in the default bucket. */
export const LEASE_PREFIX = 'lifecycle/lease/';

/** One term of the lease as stored. */
export interface LeaseRecord {
  readonly term: number;
  readonly holder: string;
  readonly expiresMs: number;
  /** When the last complete run started, or null before the first. */
  readonly lastRunMs: number | null;
}

/** The key of a term. */
export function leaseKey(term: number): string {
  return `${LEASE_PREFIX}${String(term).padStart(12, '0')}.json`;
}

function parseRecord(key: string, data: Buffer): LeaseRecord {
  let v: Partial<LeaseRecord> | null;
  try {
    v = JSON.parse(data.toString('utf8')) as Partial<LeaseRecord> | null;
  } catch (err) {
    throw new StrataError(ErrorCode.CORRUPT, `reading the lifecycle lease "${key}": not JSON`, { cause: err });
  }
  if (v === null || typeof v.term !== 'number' || typeof v.holder !== 'string' || typeof v.expiresMs !== 'number' || leaseKey(v.term) !== key) {
    throw new StrataError(ErrorCode.CORRUPT, `reading the lifecycle lease "${key}": expected {"term", "holder", "expiresMs", "lastRunMs"} of the term its key names`);
  }
  return { term: v.term, holder: v.holder, expiresMs: v.expiresMs, lastRunMs: typeof v.lastRunMs === 'number' ? v.lastRunMs : null };
}

/** What {@link Lease.acquire} found. */
export type LeaseState = { readonly held: true; readonly record: LeaseRecord } | { readonly held: false; readonly record: LeaseRecord | null };

/** One replica's side of the lease; see the module comment. */
export class Lease {
  #mine: LeaseRecord | null = null;
  /** Writes of the lease object one at a time (a renewal must not undo a recorded run). */
  #queue: Promise<unknown> = Promise.resolve();

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(fn, fn);
    this.#queue = next.catch(() => undefined);
    return next;
  }

  /**
   * `bucket` gives the default bucket's client for each operation (the registry's current one): a
   * client kept from the start would be closed by a tenants-file reload that changes the default
   * bucket (rotated credentials, say), and no replica could take or renew the lease until a
   * restart.
   */
  constructor(
    private readonly bucket: () => Promise<Bucket>,
    readonly holder: string,
    private readonly durationMs: number,
    private readonly now: () => number,
    /** The host clock the bucket's is compared with (see {@link clockSkewMs}). */
    private readonly hostClock: () => number = Date.now,
  ) {
    if (!Number.isSafeInteger(durationMs) || durationMs < 1) throw new RangeError(`lease duration must be a positive integer, got ${durationMs}`);
  }

  /** The newest term in the bucket, or null when there is none. */
  async newest(): Promise<LeaseRecord | null> {
    let last: string | null = null;
    for await (const info of (await this.bucket()).list(LEASE_PREFIX)) if (info.key.endsWith('.json')) last = info.key;
    if (last === null) return null;
    try {
      return parseRecord(last, await (await this.bucket()).get(last));
    } catch (err) {
      if (err instanceof ObjectStoreError && err.code === ErrorCode.NOT_FOUND) return this.newest(); // pruned meanwhile
      throw err;
    }
  }

  #skewMs: number | null = null;

  /**
   * How far this host's clock is ahead of the bucket's (negative: behind), from the last
   * modification time the bucket gave the lease object this replica just wrote (to within the
   * request's latency and the bucket's 1 s resolution); null until measured. Retention decides by
   * the clock, so the service runs no pass while this is large (service.ts).
   */
  get clockSkewMs(): number | null {
    return this.#skewMs;
  }

  async #measureSkew(key: string): Promise<void> {
    try {
      const info = await (await this.bucket()).head(key);
      this.#skewMs = this.hostClock() - info.lastModifiedMs;
    } catch {
      // unknown this time: the last measure stands
    }
  }

  /** Now on the bucket's clock, as far as it is known (see the module comment). */
  #bucketNow(): number {
    const s = this.#skewMs;
    return this.now() - (s !== null && Math.abs(s) >= SKEW_APPLIED_MS ? s : 0);
  }

  /** Whether this replica holds the lease now, by the bucket's clock. */
  held(): boolean {
    return this.#mine !== null && this.#bucketNow() < this.#mine.expiresMs;
  }

  /** The term this replica holds (null when none). */
  get record(): LeaseRecord | null {
    return this.#mine;
  }

  /** Renews the lease held, or takes it when it is free or expired. */
  acquire(): Promise<LeaseState> {
    return this.#serial(() => this.#acquire());
  }

  async #acquire(): Promise<LeaseState> {
    const newest = await this.newest();
    const now = this.#bucketNow();
    if (newest !== null && this.#mine !== null && newest.term === this.#mine.term && newest.holder === this.holder) {
      if (now >= this.#mine.expiresMs) {
        // ran out before renewing: another replica may take over at any moment; take the next term like anyone else
        this.#mine = null;
      } else {
        const renewed = { ...newest, lastRunMs: this.#mine.lastRunMs, expiresMs: now + this.durationMs };
        await (await this.bucket()).put(leaseKey(renewed.term), Buffer.from(`${JSON.stringify(renewed)}\n`));
        await this.#measureSkew(leaseKey(renewed.term));
        const after = await this.newest();
        if (after === null || after.term !== renewed.term) {
          this.#mine = null;
          return { held: false, record: after };
        }
        this.#mine = renewed;
        return { held: true, record: renewed };
      }
    }
    this.#mine = null;
    // a term that expires further ahead than a lease is ever granted for (twice this replica's
    // duration, for replicas configured apart) was written by a clock that ran ahead: it is no
    // lease, or the replicas would wait for as long as that clock was ahead
    const plausible = newest !== null && newest.expiresMs - now <= 2 * this.durationMs;
    if (newest !== null && now < newest.expiresMs && plausible && newest.holder !== this.holder) return { held: false, record: newest };
    const next: LeaseRecord = { term: (newest?.term ?? 0) + 1, holder: this.holder, expiresMs: now + this.durationMs, lastRunMs: newest?.lastRunMs ?? null };
    try {
      await (await this.bucket()).put(leaseKey(next.term), Buffer.from(`${JSON.stringify(next)}\n`), { ifNoneMatch: true });
    } catch (err) {
      if (err instanceof ObjectStoreError && err.code === ErrorCode.ALREADY_EXISTS) return { held: false, record: await this.newest() };
      throw err;
    }
    this.#mine = next;
    await this.#measureSkew(leaseKey(next.term));
    // terms before the previous one are history nobody reads
    if (newest !== null && newest.term > 1) await (await this.bucket()).delete(leaseKey(newest.term - 1));
    return { held: true, record: next };
  }

  /** Records that a run started at `startedMs` finished (only while the lease is held). */
  recordRun(startedMs: number): Promise<boolean> {
    return this.#serial(() => this.#recordRun(startedMs));
  }

  async #recordRun(startedMs: number): Promise<boolean> {
    if (!this.held() || this.#mine === null) return false;
    const rec = { ...this.#mine, lastRunMs: startedMs };
    await (await this.bucket()).put(leaseKey(rec.term), Buffer.from(`${JSON.stringify(rec)}\n`));
    this.#mine = rec;
    return true;
  }

  /** Gives the lease up (at shutdown) so another replica need not wait for it to expire. */
  release(): Promise<void> {
    return this.#serial(() => this.#release());
  }

  async #release(): Promise<void> {
    if (!this.held() || this.#mine === null) return;
    const rec = { ...this.#mine, expiresMs: this.#bucketNow() };
    this.#mine = null;
    await (await this.bucket()).put(leaseKey(rec.term), Buffer.from(`${JSON.stringify(rec)}\n`));
  }
}
