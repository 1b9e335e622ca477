/**
 * FilesystemBucket: a bucket in a local directory, the embedded default.
 *
 * Object `k` lives at `<path>/<prefix>/<k>`. Writes go to a temp file (`.strata-tmp-<random>`)
 * in the object's own directory, are fsynced, then published with rename(2) (or link(2) for
 * `ifNoneMatch`, which fails atomically when the name exists), and the directory is fsynced, so a
 * reader sees the whole old object or the whole new one and an acknowledged write survives a crash.
 * `ifMatch` compares the object's ETag just before the rename: two steps, not one, so it stops a
 * writer that read an older version (a paused process), not two writes in the same instant.
 *
 * Differences from S3, inherent to a file tree: an object `a` and an object `a/b` cannot both
 * exist (the second write fails with STORAGE); key segments starting with `.strata-tmp-` are
 * reserved (InvalidArgumentError); temp files left by a crash are skipped by `list` and found by
 * `listIncompleteUploads` (the lifecycle role sweeps old ones). Empty directories are removed after
 * `delete`.
 *
 * An aborted `signal` rejects with its reason (an AbortError), not with an ObjectStoreError.
 */
import { randomBytes } from 'node:crypto';
import type { Stats } from 'node:fs';
import { link, lstat, mkdir, open, readdir, readFile, rename, rmdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { ErrorCode, InvalidArgumentError, ObjectStoreError } from '../errors.js';
import { errorMessage, isAbortError, putViaUpload, withSecondaryError } from './body.js';
import { readTarget, writeCondition, type WriteCondition, type Bucket, type ByteRange, type GetRangeOptions, type IncompleteUpload, type IncompleteUploads, type ObjectInfo, type ObjectUpload, type PutOptions, type RangeResult } from './bucket.js';
import { compareUtf8, formatRange, normalizeKeyPrefix, resolveRange, validateKey, validateListPrefix, validateRange } from './keys.js';
import { fsyncDir, writeFully } from '../common/durable-fs.js';

/** Name prefix of in-flight temp files; key segments may not start with it. */
export const FS_TEMP_PREFIX = '.strata-tmp-';

/** How often a write retries creating its temp file when a concurrent delete removed the directory. */
const CREATE_ATTEMPTS = 5;

/** Configuration of a {@link FilesystemBucket}. */
export interface FilesystemBucketConfig {
  /** Root directory. Created (with parents) by the first write if missing. */
  readonly path: string;
  /** Optional key prefix (`a/b` or `a/b/`): every key is stored under it. */
  readonly prefix?: string;
}

/** A {@link Bucket} on a local directory. See the module comment for the on-disk contract. */
export class FilesystemBucket implements Bucket, IncompleteUploads {
  readonly name: string;
  readonly #root: string;
  readonly #prefix: string;
  #closed = false;

  /** @throws InvalidArgumentError when `prefix` is not a valid key path. */
  constructor(config: FilesystemBucketConfig) {
    if (typeof config.path !== 'string' || config.path === '') {
      throw new InvalidArgumentError('path', 'filesystem bucket path is empty');
    }
    this.#root = resolve(config.path);
    this.#prefix = normalizeKeyPrefix(config.prefix);
    if (this.#prefix.split('/').some((s) => s.startsWith(FS_TEMP_PREFIX))) {
      throw new InvalidArgumentError('prefix', `segments starting with ${FS_TEMP_PREFIX} are reserved`);
    }
    const url = pathToFileURL(this.#root).href;
    this.name = this.#prefix === '' ? url : `${url}/${this.#prefix.slice(0, -1)}`;
  }

  async get(key: string, opts?: { signal?: AbortSignal }): Promise<Buffer> {
    const path = this.#pathOf(key);
    const signal = opts?.signal;
    try {
      return await readFile(path, signal ? { signal } : {});
    } catch (err) {
      throw this.#readError(`reading "${key}" from ${this.name}`, key, err, signal);
    }
  }

  async getRange(key: string, range: ByteRange, opts?: GetRangeOptions): Promise<RangeResult> {
    const path = this.#pathOf(key);
    validateRange(range);
    const signal = opts?.signal;
    const doing = `reading ${formatRange(range)} of "${key}" from ${this.name}`;
    try {
      signal?.throwIfAborted();
      return await withFile(path, 'r', async (fh) => {
        const { size } = await fh.stat();
        const span = resolveRange(range, size);
        if (span === undefined) {
          throw new ObjectStoreError(
            ErrorCode.INVALID_RANGE,
            this.name,
            key,
            `${doing}: range starts at or beyond the end of the ${size}-byte object`,
          );
        }
        const data = readTarget(span.end - span.start, opts?.into);
        let filled = 0;
        while (filled < data.length) {
          signal?.throwIfAborted();
          const { bytesRead } = await fh.read(data, filled, data.length - filled, span.start + filled);
          if (bytesRead === 0) break; // cannot happen for a published (immutable) file; keep what was read
          filled += bytesRead;
        }
        return { data: filled === data.length ? data : data.subarray(0, filled), offset: span.start, size };
      });
    } catch (err) {
      throw this.#readError(doing, key, err, signal);
    }
  }

  async head(key: string): Promise<ObjectInfo> {
    const path = this.#pathOf(key);
    let st: Stats;
    try {
      st = await stat(path);
    } catch (err) {
      throw this.#readError(`looking up "${key}" in ${this.name}`, key, err, undefined);
    }
    if (!st.isFile()) {
      throw new ObjectStoreError(ErrorCode.NOT_FOUND, this.name, key, `looking up "${key}" in ${this.name}: no such object`);
    }
    return infoOf(key, st);
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    validateListPrefix(prefix);
    this.#checkOpen(prefix);
    const full = this.#prefix + prefix;
    const slash = full.lastIndexOf('/');
    yield* this.#walk(slash < 0 ? '' : full.slice(0, slash), full.slice(slash + 1), prefix);
  }

  async put(key: string, body: Uint8Array | Readable | { readonly file: string }, opts?: PutOptions): Promise<ObjectInfo> {
    const upload = this.upload(key, opts);
    return putViaUpload(upload, body, { bucket: this.name, key, signal: opts?.signal });
  }

  upload(key: string, opts?: PutOptions): ObjectUpload {
    const path = this.#pathOf(key);
    return new FsUpload(this.name, key, path, writeCondition(opts), opts?.signal);
  }

  async delete(key: string): Promise<void> {
    const path = this.#pathOf(key);
    const doing = `deleting "${key}" from ${this.name}`;
    try {
      await unlink(path);
    } catch (err) {
      const code = errnoOf(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      if ((code === 'EISDIR' || code === 'EPERM') && (await isDirectory(path))) return; // a key prefix, not an object
      throw fsError(doing, this.name, key, err);
    }
    await this.#pruneEmptyDirs(dirname(path), doing, key);
  }

  async close(): Promise<void> {
    this.#closed = true;
  }

  /** Temp files (`.strata-tmp-*`) in the directories under `prefix`; `startedMs` is their mtime. */
  async *listIncompleteUploads(prefix: string): AsyncIterable<IncompleteUpload> {
    validateListPrefix(prefix);
    this.#checkOpen(prefix);
    const full = this.#prefix + prefix;
    const slash = full.lastIndexOf('/');
    yield* this.#walkTemps(slash < 0 ? '' : full.slice(0, slash), full.slice(slash + 1));
  }

  async discardIncompleteUpload(upload: IncompleteUpload): Promise<void> {
    const segs = upload.id.split('/');
    const last = segs[segs.length - 1] ?? '';
    validateKey(segs.slice(0, -1).concat(['x']).join('/'), 'upload.id');
    if (!last.startsWith(FS_TEMP_PREFIX) || last.includes('\\') || last.includes('\0')) {
      throw new InvalidArgumentError('upload.id', `${JSON.stringify(upload.id)} is not a temp file of this bucket`);
    }
    this.#checkOpen(upload.id);
    const path = join(this.#root, this.#prefix + upload.id);
    const doing = `removing the temp file "${upload.id}" from ${this.name}`;
    try {
      await unlink(path);
    } catch (err) {
      const code = errnoOf(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw fsError(doing, this.name, upload.id, err);
    }
    await this.#pruneEmptyDirs(dirname(path), doing, upload.id);
  }

  /** Yields the temp files under `<root>/<dirRel>` (first level: names starting with `namePrefix`). */
  async *#walkTemps(dirRel: string, namePrefix: string): AsyncGenerator<IncompleteUpload> {
    const dir = dirRel === '' ? this.#root : join(this.#root, dirRel);
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      const code = errnoOf(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw fsError(`listing temp files in ${this.name}: reading directory ${dir}`, this.name, dirRel, err);
    }
    for (const e of entries) {
      const rel = dirRel === '' ? e.name : `${dirRel}/${e.name}`;
      if (e.isDirectory() && e.name.startsWith(namePrefix) && !e.name.startsWith(FS_TEMP_PREFIX)) {
        yield* this.#walkTemps(rel, '');
        continue;
      }
      if (!e.isFile() || !e.name.startsWith(FS_TEMP_PREFIX)) continue;
      let st: Stats;
      try {
        st = await stat(join(this.#root, rel));
      } catch (err) {
        if (errnoOf(err) === 'ENOENT') continue; // published or removed meanwhile
        throw fsError(`listing temp files in ${this.name}: reading ${rel}`, this.name, rel, err);
      }
      const key = rel.slice(this.#prefix.length);
      yield { key, id: key, startedMs: Math.floor(st.mtimeMs) };
    }
  }

  /** Removes now-empty directories from `dir` up to (not including) the bucket's own directory. */
  async #pruneEmptyDirs(dir: string, doing: string, key: string): Promise<void> {
    const stop = join(this.#root, this.#prefix);
    for (let d = dir; d.length > stop.length && d.startsWith(stop); d = dirname(d)) {
      try {
        await rmdir(d);
      } catch (err) {
        const code = errnoOf(err);
        if (code === 'ENOTEMPTY' || code === 'EEXIST' || code === 'ENOENT' || code === 'EBUSY') return;
        throw fsError(`${doing}: removing empty directory ${d}`, this.name, key, err);
      }
    }
  }

  /** Yields regular files under `<root>/<dirRel>` whose first name starts with `namePrefix`, in key order. */
  async *#walk(dirRel: string, namePrefix: string, listPrefix: string): AsyncGenerator<ObjectInfo> {
    const dir = dirRel === '' ? this.#root : join(this.#root, dirRel);
    let names: { name: string; isDir: boolean; sortKey: string }[];
    try {
      const entries = await readdir(dir, { withFileTypes: true });
      names = [];
      for (const e of entries) {
        if (!e.name.startsWith(namePrefix) || e.name.startsWith(FS_TEMP_PREFIX) || e.name.includes('\\')) continue;
        const isDir = e.isDirectory();
        if (!isDir && !e.isFile()) continue; // symlinks, sockets, ...: not objects this bucket wrote
        names.push({ name: e.name, isDir, sortKey: isDir ? `${e.name}/` : e.name });
      }
    } catch (err) {
      const code = errnoOf(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') return; // nothing under this prefix (or removed meanwhile)
      throw fsError(`listing "${listPrefix}" in ${this.name}: reading directory ${dir}`, this.name, listPrefix, err);
    }
    // Sorting directories as "name/" makes a depth-first walk yield keys in byte order.
    names.sort((a, b) => compareUtf8(a.sortKey, b.sortKey));
    for (const { name, isDir } of names) {
      const rel = dirRel === '' ? name : `${dirRel}/${name}`;
      if (isDir) {
        yield* this.#walk(rel, '', listPrefix);
        continue;
      }
      let st: Stats;
      try {
        st = await stat(join(this.#root, rel));
      } catch (err) {
        if (errnoOf(err) === 'ENOENT') continue; // deleted while listing
        throw fsError(`listing "${listPrefix}" in ${this.name}: reading ${rel}`, this.name, listPrefix, err);
      }
      yield infoOf(rel.slice(this.#prefix.length), st);
    }
  }

  #pathOf(key: string): string {
    validateKey(key);
    if (key.split('/').some((s) => s.startsWith(FS_TEMP_PREFIX))) {
      throw new InvalidArgumentError('key', `object key ${JSON.stringify(key)} uses the reserved ${FS_TEMP_PREFIX} prefix`);
    }
    this.#checkOpen(key);
    const path = join(this.#root, this.#prefix + key);
    if (!path.startsWith(this.#root + sep)) {
      throw new InvalidArgumentError('key', `object key ${JSON.stringify(key)} escapes the bucket directory`);
    }
    return path;
  }

  #checkOpen(key: string): void {
    if (this.#closed) throw new ObjectStoreError(ErrorCode.STORAGE, this.name, key, `using ${this.name}: bucket is closed`);
  }

  #readError(doing: string, key: string, err: unknown, signal: AbortSignal | undefined): unknown {
    if (err instanceof ObjectStoreError || signal?.aborted === true || isAbortError(err)) return err;
    const code = errnoOf(err);
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') {
      return new ObjectStoreError(ErrorCode.NOT_FOUND, this.name, key, `${doing}: no such object`, { cause: err });
    }
    return fsError(doing, this.name, key, err);
  }
}

/** One piecewise write to a temp file; see {@link ObjectUpload}. */
class FsUpload implements ObjectUpload {
  readonly #bucket: string;
  readonly #key: string;
  readonly #path: string;
  readonly #cond: WriteCondition;
  readonly #signal: AbortSignal | undefined;
  #state: 'open' | 'busy' | 'done' | 'failed' | 'aborted' = 'open';
  #fh: FileHandle | undefined;
  #tmp: string | undefined;
  /** First directory this upload created (its parent needs an fsync too), if any. */
  #createdDir: string | undefined;

  constructor(bucket: string, key: string, path: string, cond: WriteCondition, signal: AbortSignal | undefined) {
    this.#bucket = bucket;
    this.#key = key;
    this.#path = path;
    this.#cond = cond;
    this.#signal = signal;
  }

  async write(chunk: Uint8Array): Promise<void> {
    this.#enter('write');
    try {
      this.#signal?.throwIfAborted();
      await writeFully(await this.#file(), chunk);
      this.#state = 'open';
    } catch (err) {
      throw await this.#fail(`writing "${this.#key}" to ${this.#bucket}`, err);
    }
  }

  async complete(): Promise<ObjectInfo> {
    this.#enter('complete');
    const doing = `publishing "${this.#key}" in ${this.#bucket}`;
    try {
      this.#signal?.throwIfAborted();
      const fh = await this.#file();
      await fh.sync();
      const st = await fh.stat();
      this.#fh = undefined;
      await fh.close();
      const tmp = this.#tmp as string;
      if (this.#cond.ifNoneMatch) {
        await this.#linkNew(tmp, doing);
      } else {
        if (this.#cond.ifMatch !== undefined) await this.#checkVersion(this.#cond.ifMatch, doing);
        await rename(tmp, this.#path);
      }
      this.#tmp = undefined;
      await this.#syncDirs();
      this.#state = 'done';
      return infoOf(this.#key, st);
    } catch (err) {
      throw await this.#fail(doing, err);
    }
  }

  async abort(): Promise<void> {
    if (this.#state === 'done' || this.#state === 'failed' || this.#state === 'aborted') return;
    this.#state = 'aborted';
    await this.#discard(`aborting the upload of "${this.#key}" to ${this.#bucket}`);
  }

  #enter(op: string): void {
    if (this.#state === 'busy') throw new TypeError(`ObjectUpload.${op}() called while another call is pending`);
    if (this.#state !== 'open') {
      throw new ObjectStoreError(ErrorCode.STORAGE, this.#bucket, this.#key, `${op} on the upload of "${this.#key}": upload is ${this.#state}`);
    }
    this.#state = 'busy';
  }

  /** The temp file, created on first use next to the target (creating directories as needed). */
  async #file(): Promise<FileHandle> {
    if (this.#fh) return this.#fh;
    const dir = dirname(this.#path);
    for (let attempt = 1; ; attempt++) {
      const created = await mkdir(dir, { recursive: true });
      this.#createdDir ??= created;
      const tmp = join(dir, `${FS_TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
      try {
        this.#fh = await open(tmp, 'wx', 0o644);
        this.#tmp = tmp;
        return this.#fh;
      } catch (err) {
        // A concurrent delete may have pruned the freshly made directory: make it again.
        if (errnoOf(err) !== 'ENOENT' || attempt >= CREATE_ATTEMPTS) throw err;
      }
    }
  }

  /** Fails with ALREADY_EXISTS unless the object at the target is the version `etag`. */
  async #checkVersion(etag: string, doing: string): Promise<void> {
    const st = await stat(this.#path).catch((err: unknown) => {
      if (errnoOf(err) === 'ENOENT') return null;
      throw err;
    });
    const now = st === null ? null : infoOf(this.#key, st).etag;
    if (now !== etag) {
      throw new ObjectStoreError(ErrorCode.ALREADY_EXISTS, this.#bucket, this.#key, `${doing}: the object is ${now === null ? 'gone' : `version ${now}`}, not version ${etag} (ifMatch): not replaced`);
    }
  }

  /** Publishes `tmp` under the target name only if that name is free, then drops `tmp`. */
  async #linkNew(tmp: string, doing: string): Promise<void> {
    try {
      await link(tmp, this.#path);
    } catch (err) {
      if (errnoOf(err) !== 'EEXIST') throw err;
      if (await isDirectory(this.#path)) throw err; // a key prefix: reported as STORAGE by #fail
      throw new ObjectStoreError(ErrorCode.ALREADY_EXISTS, this.#bucket, this.#key, `${doing}: object already exists`, {
        cause: err,
      });
    }
    await unlink(tmp);
  }

  /** fsyncs the target's directory and, if this upload created directories, their parents. */
  async #syncDirs(): Promise<void> {
    const dirs = [dirname(this.#path)];
    if (this.#createdDir !== undefined) {
      for (let d = dirname(this.#path); d !== this.#createdDir && d.startsWith(this.#createdDir); ) {
        d = dirname(d);
        dirs.push(d);
      }
      dirs.push(dirname(this.#createdDir));
    }
    for (const d of dirs) await fsyncDir(d);
  }

  /** Cleans up after an error and returns the error to throw. */
  async #fail(doing: string, err: unknown): Promise<unknown> {
    this.#state = 'failed';
    const mapped =
      err instanceof ObjectStoreError || this.#signal?.aborted === true || isAbortError(err)
        ? err
        : fsError(doing, this.#bucket, this.#key, err);
    try {
      await this.#discard(`cleaning up after a failed upload of "${this.#key}" to ${this.#bucket}`);
    } catch (cleanupErr) {
      return withSecondaryError(mapped, cleanupErr, 'removing the temp file also failed');
    }
    return mapped;
  }

  /** Closes and removes the temp file, if any. */
  async #discard(doing: string): Promise<void> {
    const fh = this.#fh;
    const tmp = this.#tmp;
    this.#fh = undefined;
    this.#tmp = undefined;
    try {
      if (fh) await fh.close();
      if (tmp !== undefined) await unlink(tmp);
    } catch (err) {
      if (errnoOf(err) === 'ENOENT') return;
      throw fsError(doing, this.#bucket, this.#key, err);
    }
  }
}

/** Runs `fn` on an open file and closes it; a failing close is an error, never dropped. */
async function withFile<T>(path: string, flags: string, fn: (fh: FileHandle) => Promise<T>): Promise<T> {
  const fh = await open(path, flags);
  let out: T;
  try {
    out = await fn(fh);
  } catch (err) {
    try {
      await fh.close();
    } catch (closeErr) {
      throw withSecondaryError(err, closeErr, `closing ${path} also failed`);
    }
    throw err;
  }
  await fh.close();
  return out;
}

function infoOf(key: string, st: Stats): ObjectInfo {
  return {
    key,
    size: st.size,
    lastModifiedMs: Math.floor(st.mtimeMs),
    // A replaced object gets a new inode (rename of a new file), so this changes on every write.
    etag: `${st.ino.toString(16)}-${st.size.toString(16)}-${Math.round(st.mtimeMs * 1000).toString(16)}`,
  };
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await lstat(path)).isDirectory();
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return false;
    throw err;
  }
}

function errnoOf(err: unknown): string | undefined {
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' ? code : undefined;
}

/** Maps a filesystem error to an ObjectStoreError (permission errors to ACCESS_DENIED). */
function fsError(doing: string, bucket: string, key: string, err: unknown): ObjectStoreError {
  if (err instanceof ObjectStoreError) return err;
  const code = errnoOf(err);
  if (code === 'EACCES' || code === 'EPERM') {
    return new ObjectStoreError(ErrorCode.ACCESS_DENIED, bucket, key, `${doing}: ${errorMessage(err)}`, { cause: err });
  }
  const hint = code === 'ENOTDIR' || code === 'EISDIR' || code === 'ENOTEMPTY' || code === 'EEXIST' ? ' (an object and a key prefix share this name)' : '';
  return new ObjectStoreError(ErrorCode.STORAGE, bucket, key, `${doing}: ${errorMessage(err)}${hint}`, { cause: err });
}
