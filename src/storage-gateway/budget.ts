/**
 * The bytes-in-flight budget of the Read service: bytes of answer messages that calls have made
 * but the transport has not yet handed to their clients, bounded gateway-wide
 * (`maxBytesInFlight`) and per tenant (`maxBytesInFlightPerTenant`, a tenant's fair share).
 *
 * A holder that holds nothing may always take one message, even one larger than a bound: a
 * message is at most `maxMessageBytes`, and refusing it would make such an answer impossible. A
 * call streaming its answer waits for room here ({@link wait}); waiters are woken in arrival order
 * among those that fit.
 */
import { GrpcError } from '../common/grpc-status.js';
import { status } from '@grpc/grpc-js';

/**
 * The retry pushback of a refusal by a read budget (sent as `grpc-retry-pushback-ms`): such a
 * budget frees up as other calls' clients take their answers or the calls end, well within this
 * on a gateway that is serving; a client that honours it (the query client does) retries after
 * it, with exponential backoff if refused again.
 */
export const READ_RETRY_PUSHBACK_MS = 100;

interface Waiter {
  readonly tenant: string;
  readonly bytes: number;
  readonly resolve: () => void;
}

/** See the module comment. */
export class InFlightBudget {
  private used = 0;
  private readonly byTenant = new Map<string, number>();
  private waiters: Waiter[] = [];

  constructor(
    readonly max: number,
    readonly maxPerTenant: number,
    /** Told the gateway-wide bytes held after every change (the metric). */
    private readonly onChange: (used: number) => void = () => undefined,
  ) {}

  /** Bytes held now, gateway-wide. */
  get bytes(): number {
    return this.used;
  }

  /** Bytes held now by `tenant`. */
  bytesOf(tenant: string): number {
    return this.byTenant.get(tenant) ?? 0;
  }

  /** Whether `bytes` more of `tenant` fit (see the module comment). */
  private fits(tenant: string, bytes: number): boolean {
    if (this.used > 0 && this.used + bytes > this.max) return false;
    const mine = this.bytesOf(tenant);
    return !(mine > 0 && mine + bytes > this.maxPerTenant);
  }

  /** Null when `bytes` more of `tenant` fit; otherwise the refusal, naming the bound. */
  refusal(tenant: string, bytes: number): GrpcError | null {
    if (this.fits(tenant, bytes)) return null;
    if (this.used > 0 && this.used + bytes > this.max) {
      return new GrpcError(
        status.RESOURCE_EXHAUSTED,
        `maxBytesInFlight (${this.max}) is used up by answers clients have not taken yet (${this.used} bytes); this answer needs ${bytes} more; retry shortly`,
        { retryAfterMs: READ_RETRY_PUSHBACK_MS },
      );
    }
    const mine = this.bytesOf(tenant);
    if (mine > 0 && mine + bytes > this.maxPerTenant) {
      return new GrpcError(
        status.RESOURCE_EXHAUSTED,
        `tenant "${tenant}" has used up maxBytesInFlightPerTenant (${this.maxPerTenant}) with answers its clients have not taken yet (${mine} bytes); retry shortly`,
        { retryAfterMs: READ_RETRY_PUSHBACK_MS },
      );
    }
    return null;
  }

  /** Takes `bytes` for `tenant` (whether or not they fit: see {@link refusal} and {@link wait}). */
  take(tenant: string, bytes: number): void {
    this.used += bytes;
    this.byTenant.set(tenant, this.bytesOf(tenant) + bytes);
    this.onChange(this.used);
  }

  /** Gives back `bytes` of `tenant` and wakes the waiters that now fit. */
  give(tenant: string, bytes: number): void {
    if (bytes === 0) return;
    this.used -= bytes;
    const left = this.bytesOf(tenant) - bytes;
    if (left > 0) this.byTenant.set(tenant, left);
    else this.byTenant.delete(tenant);
    this.onChange(this.used);
    if (this.waiters.length === 0) return;
    const still: Waiter[] = [];
    for (const w of this.waiters) {
      if (this.fits(w.tenant, w.bytes)) {
        this.take(w.tenant, w.bytes);
        w.resolve();
      } else still.push(w);
    }
    this.waiters = still;
  }

  /**
   * Takes `bytes` for `tenant` once they fit (at once when they do). Rejects with the signal's
   * reason when it aborts first; nothing is taken then.
   */
  wait(tenant: string, bytes: number, signal: AbortSignal): Promise<void> {
    if (this.fits(tenant, bytes)) {
      this.take(tenant, bytes);
      return Promise.resolve();
    }
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        this.waiters = this.waiters.filter((x) => x !== w);
        reject(signal.reason);
      };
      const w: Waiter = {
        tenant,
        bytes,
        resolve: () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      this.waiters.push(w);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}
