/**
 * `strata tenant token`: makes a new random bearer token for a tenant and prints it with its
 * `sha256:` hash. The hash goes into the tenant's `tokens` list in the tenants file
 * (docs/config.md); the token goes to the tenant, and is not stored anywhere by Strata.
 *
 * `strata tenant hash`: prints the hash of an existing token read from standard input (so that it
 * does not appear in the process list or the shell history).
 *
 * `strata tenant delete <tenant> --yes`: marks the tenant for deletion in the default bucket
 * (src/tenancy/deletion-marks.ts); the lifecycle role then deletes its blocks. `strata tenant
 * deletion <tenant>` prints the mark and what the role has removed so far.
 */
import type { Command } from 'commander';
import { ErrorCode, ObjectStoreError } from '../errors.js';
import { describeBucket, type Bucket } from '../objstore/index.js';
import { hashToken, newToken } from '../tenancy/config.js';
import { deletionMarkKey, markTenantDeleted, readDeletionReport } from '../tenancy/deletion-marks.js';
import { validateTenant } from '../format/key.js';
import { bucketLocationOf, type TenantRegistry } from '../tenancy/tenants.js';
import { addBucketsOptions, registryFromFlags, type BucketsFlags } from './bucket.js';

/** Reads all of standard input as text. */
async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Runs `fn` on the default bucket of the flags; a failure goes to stderr with exit status 1. */
async function onDefaultBucket(name: string, tenant: string, f: BucketsFlags, fn: (b: Bucket, registry: TenantRegistry) => Promise<void>): Promise<void> {
  try {
    validateTenant(tenant);
  } catch (err) {
    process.stderr.write(`strata tenant ${name}: ${(err as Error).message}\n`);
    process.exitCode = 2;
    return;
  }
  let registry;
  try {
    registry = await registryFromFlags(f);
    await fn(await registry.defaultBucket(), registry);
  } catch (err) {
    process.stderr.write(`strata tenant ${name}: ${(err as Error).message}\n`);
    process.exitCode = 1;
  } finally {
    await registry?.close();
  }
}

/** Registers `strata tenant token`, `hash`, `delete` and `deletion`. */
export function registerTenantCommands(program: Command): void {
  const tenant = program.command('tenant').description('tenant credentials for the tenants file; tenant deletion');
  tenant
    .command('token')
    .description('print a new random bearer token and the sha256 hash to list under tenants.<id>.tokens')
    .option('--json', 'print {"token": ..., "hash": ...} as JSON')
    .action((flags: { json?: boolean }) => {
      const token = newToken();
      const hash = hashToken(token);
      if (flags.json) {
        process.stdout.write(`${JSON.stringify({ token, hash })}\n`);
        return;
      }
      process.stdout.write(`token: ${token}\nhash:  ${hash}\n`);
      process.stderr.write('give the token to the tenant (it is shown only now); add the hash to tenants.<id>.tokens in the tenants file\n');
    });
  tenant
    .command('hash')
    .description('print the sha256 hash of a token read from standard input (surrounding whitespace ignored)')
    .action(async () => {
      const token = (await readStdin()).trim();
      if (!token) {
        process.stderr.write('strata tenant hash: no token on standard input\n');
        process.exitCode = 2;
        return;
      }
      process.stdout.write(`${hashToken(token)}\n`);
    });
  addBucketsOptions(
    tenant
      .command('delete <tenant>')
      .description('mark a tenant for deletion: aggregators refuse its writes, the lifecycle role deletes all its blocks (irreversible)')
      .option('--yes', 'confirm'),
  ).action(async (id: string, f: BucketsFlags & { yes?: boolean }) => {
    if (!f.yes) {
      process.stderr.write(`strata tenant delete: this deletes every block of tenant "${id}" for good; add --yes to confirm\n`);
      process.exitCode = 2;
      return;
    }
    await onDefaultBucket('delete', id, f, async (b, registry) => {
      const entry = registry.config.tenants.get(id);
      const ownBucket = entry?.bucket ? { location: bucketLocationOf(entry.bucket), where: `${describeBucket(entry.bucket)}${entry.partitions ? ' (partitions)' : ''}` } : undefined;
      if (f.tenantsFile !== undefined && entry === undefined) {
        process.stderr.write(`strata tenant delete: tenant "${id}" is not in ${f.tenantsFile}: only its blocks in the default bucket will be deleted\n`);
      }
      const { mark, created } = await markTenantDeleted(b, id, Date.now(), ownBucket);
      process.stdout.write(`${JSON.stringify({ tenant: id, mark: `${b.name}/${deletionMarkKey(id)}`, markedAt: new Date(mark.markedMs).toISOString(), created })}\n`);
      process.stderr.write(
        created
          ? `tenant "${id}" marked for deletion; the lifecycle role removes its blocks at its next pass (\`strata tenant deletion ${id}\` shows progress)\n`
          : `tenant "${id}" was already marked for deletion\n`,
      );
    });
  });
  addBucketsOptions(tenant.command('deletion <tenant>').description("show a tenant's deletion mark and what the lifecycle role has removed so far")).action(
    async (id: string, f: BucketsFlags) => {
      await onDefaultBucket('deletion', id, f, async (b) => {
        const marks = await listMarkOf(b, id);
        const report = await readDeletionReport(b, id);
        process.stdout.write(`${JSON.stringify({ tenant: id, marked: marks, report })}\n`);
      });
    },
  );
}

async function listMarkOf(b: Bucket, id: string): Promise<boolean> {
  try {
    await b.head(deletionMarkKey(id));
    return true;
  } catch (err) {
    if (err instanceof ObjectStoreError && err.code === ErrorCode.NOT_FOUND) return false;
    throw err;
  }
}
