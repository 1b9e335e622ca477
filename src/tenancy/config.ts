/**
 * The tenants file (YAML or JSON; documented in docs/config.md): the default bucket, and per
 * tenant an optional own bucket with credentials given by reference (environment variable names or
 * file paths, e.g. a mounted Kubernetes Secret), auth token hashes and limits. Validated once per
 * load with the offending path named in the error; secret values are never part of an error.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ErrorCode, StrataError } from '../errors.js';
import { TENANT_PATTERN } from '../format/key.js';
import { bucketSchema, parseBucketConfig, type BucketConfig } from '../objstore/index.js';
import { isBucketTemplate, parseBucketTemplate, parsePartitionName, type BucketTemplate } from './partitions.js';

/** A reference to a secret: an environment variable or a file (trailing newline trimmed). */
const secretRef = z.union([z.strictObject({ env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name') }), z.strictObject({ file: z.string().min(1) })], {
  // zod's own message for a failed union is "Invalid input"; a secret given inline is the usual case
  error: 'must be { env: VARIABLE } or { file: PATH } (secrets are never written in the tenants file itself)',
});

const credentialsRef = z.strictObject({
  accessKeyId: secretRef,
  secretAccessKey: secretRef,
  sessionToken: secretRef.optional(),
});

const bucketRef = bucketSchema(credentialsRef);

/** `sha256:` followed by 64 lowercase hex digits: the SHA-256 of a token. */
export const TOKEN_HASH_PATTERN = /^sha256:[0-9a-f]{64}$/;

const limits = z.strictObject({
  maxSamplesPerWrite: z.number().int().positive().optional(),
  maxSeriesPerRead: z.number().int().positive().optional(),
});

/** A retention period: whole milliseconds, at least one minute. */
const retentionMsSchema = z.number().int().min(60_000, 'must be an integer of at least 60000 ms (one minute)').max(Number.MAX_SAFE_INTEGER);

const tenant = z.strictObject({
  /** Blocks of windows that ended longer ago are deleted (and not served); overrides the default. */
  retentionMs: retentionMsSchema.optional(),
  tokens: z.array(z.string().regex(TOKEN_HASH_PATTERN, 'must be "sha256:<64 hex digits>" (see `strata tenant token`)')).default([]),
  bucket: bucketRef.optional(),
  limits: limits.default({}),
});

export const tenantsFileSchema = z.strictObject({
  /** When false, calls need no token (local development only). */
  authRequired: z.boolean().default(true),
  /** Retention of every tenant without its own `retentionMs`; none: data is kept. */
  retentionMs: retentionMsSchema.optional(),
  defaultBucket: bucketRef,
  tenants: z
    .record(z.string(), tenant)
    .default({})
    .superRefine((rec, ctx) => {
      for (const id of Object.keys(rec)) {
        if (!TENANT_PATTERN.test(id)) ctx.addIssue({ code: 'custom', path: [id], message: 'tenant id must be 1-64 characters of a-z, 0-9, "_" and "-", starting with a letter or digit' });
      }
    }),
});

type BucketRef = z.output<typeof bucketRef>;

/** A tenant after loading: resolved bucket config (secrets in memory only), token hashes, limits. */
export interface TenantEntry {
  readonly id: string;
  /** SHA-256 digests of the tenant's tokens. */
  readonly tokenDigests: readonly Buffer[];
  /** The tenant's own bucket, or null for the default bucket. */
  readonly bucket: BucketConfig | null;
  readonly limits: { readonly maxSamplesPerWrite?: number; readonly maxSeriesPerRead?: number };
  /** The tenant's own retention (ms), or null for the file's default. */
  readonly retentionMs: number | null;
  /**
   * The template of the tenant's time-partitioned buckets (src/tenancy/partitions.ts), or null.
   * When set, `bucket.bucket` is the template as written, never a bucket name.
   */
  readonly partitions: BucketTemplate | null;
}

/** A loaded, validated tenants file. */
export interface TenantsConfig {
  readonly authRequired: boolean;
  readonly defaultBucket: BucketConfig;
  readonly tenants: ReadonlyMap<string, TenantEntry>;
  /** Retention (ms) of tenants without their own, or null: data is kept forever. */
  readonly retentionMs: number | null;
  /** Files the secrets were read from (watched for changes by TenantRegistry.watch). */
  readonly secretFiles: readonly string[];
}

function configError(source: string, message: string, cause?: unknown): StrataError {
  return new StrataError(ErrorCode.CONFIG, `invalid tenants config ${source}: ${message}`, cause === undefined ? undefined : { cause });
}

async function resolveSecret(ref: z.output<typeof secretRef>, path: string, source: string, env: NodeJS.ProcessEnv, files: string[]): Promise<string> {
  if ('env' in ref) {
    const v = env[ref.env];
    if (!v) throw configError(source, `${path}: environment variable ${ref.env} is not set`);
    return v;
  }
  files.push(ref.file);
  try {
    const v = (await readFile(ref.file, 'utf8')).replace(/\r?\n$/, '');
    if (!v) throw configError(source, `${path}: file ${ref.file} is empty`);
    return v;
  } catch (err) {
    if (err instanceof StrataError) throw err;
    throw configError(source, `${path}: cannot read file ${ref.file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

async function resolveBucket(ref: BucketRef, path: string, source: string, env: NodeJS.ProcessEnv, files: string[]): Promise<BucketConfig> {
  let resolved: unknown = ref;
  if (ref.type === 's3' && ref.credentials) {
    const c = ref.credentials;
    resolved = {
      ...ref,
      credentials: {
        accessKeyId: await resolveSecret(c.accessKeyId, `${path}.credentials.accessKeyId`, source, env, files),
        secretAccessKey: await resolveSecret(c.secretAccessKey, `${path}.credentials.secretAccessKey`, source, env, files),
        ...(c.sessionToken ? { sessionToken: await resolveSecret(c.sessionToken, `${path}.credentials.sessionToken`, source, env, files) } : {}),
      },
    };
  }
  try {
    return parseBucketConfig(resolved);
  } catch (err) {
    throw configError(source, `${path}: ${(err as Error).message}`);
  }
}

/**
 * Validates `raw` (the parsed file) and resolves secret references. `source` names the file in
 * errors. Throws StrataError CONFIG naming the offending path.
 */
export async function parseTenantsConfig(raw: unknown, source: string, env: NodeJS.ProcessEnv = process.env): Promise<TenantsConfig> {
  const res = tenantsFileSchema.safeParse(raw);
  if (!res.success) {
    const problems = res.error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`);
    throw configError(source, problems.join('; '));
  }
  const f = res.data;
  const tenants = new Map<string, TenantEntry>();
  const seen = new Map<string, string>();
  const files: string[] = [];
  for (const [id, t] of Object.entries(f.tenants)) {
    const tokenDigests = t.tokens.map((h) => Buffer.from(h.slice('sha256:'.length), 'hex'));
    for (const h of t.tokens) {
      const other = seen.get(h);
      if (other) throw configError(source, `tenants.${id}.tokens: a token hash is also listed for tenant ${other}`);
      seen.set(h, id);
    }
    let partitions: BucketTemplate | null = null;
    if (t.bucket?.type === 's3' && isBucketTemplate(t.bucket.bucket)) {
      try {
        partitions = parseBucketTemplate(t.bucket.bucket, id);
      } catch (err) {
        throw configError(source, `tenants.${id}.bucket.bucket: ${(err as Error).message}`);
      }
      if (t.bucket.prefix !== undefined) throw configError(source, `tenants.${id}.bucket.prefix: not allowed with a bucket name template (time-partitioned buckets hold one tenant's blocks only and are dropped whole)`);
    }
    tenants.set(id, {
      id,
      tokenDigests,
      partitions,
      bucket: t.bucket ? await resolveBucket(t.bucket, `tenants.${id}.bucket`, source, env, files) : null,
      limits: {
        ...(t.limits.maxSamplesPerWrite !== undefined ? { maxSamplesPerWrite: t.limits.maxSamplesPerWrite } : {}),
        ...(t.limits.maxSeriesPerRead !== undefined ? { maxSeriesPerRead: t.limits.maxSeriesPerRead } : {}),
      },
      retentionMs: t.retentionMs ?? null,
    });
  }
  if (f.defaultBucket.type === 's3' && isBucketTemplate(f.defaultBucket.bucket)) {
    throw configError(source, 'defaultBucket.bucket: a bucket name template ("{") is only allowed in a tenant\'s bucket');
  }
  const defaultBucket = await resolveBucket(f.defaultBucket, 'defaultBucket', source, env, files);
  checkPartitionsApart(tenants, defaultBucket, source);
  return { authRequired: f.authRequired, defaultBucket, tenants, retentionMs: f.retentionMs ?? null, secretFiles: [...new Set(files)] };
}

/**
 * Two tenants' templates must not render the same names, and no fixed bucket may look like a
 * partition of a template on the same server: the lifecycle role drops partitions whole.
 */
function checkPartitionsApart(tenants: ReadonlyMap<string, TenantEntry>, defaultBucket: BucketConfig, source: string): void {
  const server = (c: BucketConfig): string => (c.type === 's3' ? c.endpoint ?? `aws:${c.region}` : 'fs');
  const fixed: { what: string; cfg: BucketConfig }[] = [{ what: 'defaultBucket.bucket', cfg: defaultBucket }];
  for (const t of tenants.values()) if (t.bucket && !t.partitions) fixed.push({ what: `tenants.${t.id}.bucket.bucket`, cfg: t.bucket });
  const seen = new Map<string, string>();
  for (const t of tenants.values()) {
    if (!t.partitions || !t.bucket) continue;
    const where = `tenants.${t.id}.bucket.bucket`;
    const same = `${server(t.bucket)} ${JSON.stringify(t.partitions.parts)}`;
    const other = seen.get(same);
    if (other) throw configError(source, `${where}: renders the same bucket names as ${other}`);
    seen.set(same, where);
    for (const f of fixed) {
      if (f.cfg.type === 's3' && server(f.cfg) === server(t.bucket) && parsePartitionName(t.partitions, f.cfg.bucket)) {
        throw configError(source, `${where}: "${t.partitions.source}" renders "${f.cfg.bucket}", the bucket of ${f.what}`);
      }
    }
  }
}

/** Reads and validates a tenants file (`.json`, else YAML). */
export async function loadTenantsFile(path: string, env: NodeJS.ProcessEnv = process.env): Promise<TenantsConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw configError(path, `cannot read the file (${(err as NodeJS.ErrnoException).code ?? 'error'})`, err);
  }
  let raw: unknown;
  try {
    if (path.endsWith('.json')) {
      raw = JSON.parse(text);
      // JSON.parse keeps the last of duplicate keys (a tenant given twice would lose the first
      // entry's tokens silently); the YAML parser, which reads JSON too, refuses them
      parseYaml(text);
    } else raw = parseYaml(text);
  } catch (err) {
    // first line only, and without the snippet of the file V8 quotes in JSON errors (it could hold a secret)
    const reason = ((err as Error).message.split('\n')[0] ?? '').replace(/, ".*$/, '');
    throw configError(path, `not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${reason}`);
  }
  return parseTenantsConfig(raw, path, env);
}

/** The config used when no tenants file is given: any valid tenant id, no tokens, one bucket. */
export function openTenantsConfig(defaultBucket: BucketConfig): TenantsConfig {
  return { authRequired: false, defaultBucket, tenants: new Map(), retentionMs: null, secretFiles: [] };
}

/**
 * The retention of `tenant` under `cfg` (ms): its own `retentionMs`, else the file's default, or
 * null when its data is kept forever.
 */
export function retentionOf(cfg: TenantsConfig, tenant: string): number | null {
  return cfg.tenants.get(tenant)?.retentionMs ?? cfg.retentionMs;
}

/** SHA-256 of a token, in the form the tenants file stores. */
export function hashToken(token: string): string {
  return `sha256:${createHash('sha256').update(token, 'utf8').digest('hex')}`;
}

/** A new random token (256 bits, URL-safe). */
export function newToken(): string {
  return `strata_${randomBytes(32).toString('base64url')}`;
}
