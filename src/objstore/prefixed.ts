/**
 * PrefixedBucket: a decorator that stores every key of a Bucket under a fixed prefix, e.g. one
 * tenant's area of a shared bucket. Keys and list prefixes are validated before the prefix is
 * added, so no key can reach outside it; `list` strips the prefix from returned keys.
 */
import type { Readable } from 'node:stream';
import { hasIncompleteUploads, type Bucket, type ByteRange, type GetRangeOptions, type IncompleteUpload, type IncompleteUploads, type ObjectInfo, type ObjectUpload, type PutOptions, type RangeResult } from './bucket.js';
import { normalizeKeyPrefix, validateKey, validateListPrefix } from './keys.js';

/** A {@link Bucket} view of `inner` under `prefix` (`a/b` or `a/b/`; must be a valid key path). */
export class PrefixedBucket implements Bucket, IncompleteUploads {
  readonly name: string;
  readonly #inner: Bucket;
  readonly #prefix: string;
  readonly #closeInner: boolean;

  /**
   * `opts.closeInner`: whether `close()` closes `inner` too (default false: the inner bucket is
   * usually shared by several prefixed views).
   * @throws InvalidArgumentError when `prefix` is empty or not a valid key path.
   */
  constructor(inner: Bucket, prefix: string, opts?: { readonly closeInner?: boolean }) {
    this.#inner = inner;
    this.#closeInner = opts?.closeInner ?? false;
    this.#prefix = normalizeKeyPrefix(prefix);
    if (this.#prefix === '') validateKey('', 'prefix'); // throws: an empty prefix is a mistake here
    this.name = `${inner.name.replace(/\/+$/, '')}/${this.#prefix.slice(0, -1)}`;
  }

  async get(key: string, opts?: { signal?: AbortSignal }): Promise<Buffer> {
    return this.#inner.get(this.#key(key), opts);
  }

  async getRange(key: string, range: ByteRange, opts?: GetRangeOptions): Promise<RangeResult> {
    return this.#inner.getRange(this.#key(key), range, opts);
  }

  async head(key: string): Promise<ObjectInfo> {
    const info = await this.#inner.head(this.#key(key));
    return { ...info, key };
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    validateListPrefix(prefix);
    for await (const info of this.#inner.list(this.#prefix + prefix)) {
      yield { ...info, key: info.key.slice(this.#prefix.length) };
    }
  }

  async put(key: string, body: Uint8Array | Readable | { readonly file: string }, opts?: PutOptions): Promise<ObjectInfo> {
    const info = await this.#inner.put(this.#key(key), body, opts);
    return { ...info, key };
  }

  upload(key: string, opts?: PutOptions): ObjectUpload {
    const inner = this.#inner.upload(this.#key(key), opts);
    return {
      write: (chunk) => inner.write(chunk),
      complete: async () => ({ ...(await inner.complete()), key }),
      abort: () => inner.abort(),
    };
  }

  async delete(key: string): Promise<void> {
    return this.#inner.delete(this.#key(key));
  }

  /** The inner bucket's incomplete writes under the prefix (none if it cannot list them). */
  async *listIncompleteUploads(prefix: string): AsyncIterable<IncompleteUpload> {
    validateListPrefix(prefix);
    if (!hasIncompleteUploads(this.#inner)) return;
    for await (const u of this.#inner.listIncompleteUploads(this.#prefix + prefix)) {
      yield { ...u, key: u.key.slice(this.#prefix.length), id: u.id.startsWith(this.#prefix) ? u.id.slice(this.#prefix.length) : u.id };
    }
  }

  async discardIncompleteUpload(upload: IncompleteUpload): Promise<void> {
    if (!hasIncompleteUploads(this.#inner)) return;
    const id = upload.id === upload.key || upload.id.includes('/') ? this.#prefix + upload.id : upload.id;
    await this.#inner.discardIncompleteUpload({ ...upload, key: this.#key(upload.key), id });
  }

  async close(): Promise<void> {
    if (this.#closeInner) await this.#inner.close();
  }

  #key(key: string): string {
    validateKey(key);
    return this.#prefix + key;
  }
}
