/**
 * `strata tenant token`: makes a new random bearer token for a tenant and prints it with its
 * `sha256:` hash. The hash goes into the tenant's `tokens` list in the tenants file
 * (docs/config.md); the token goes to the tenant, and is not stored anywhere by Strata.
 *
 * `strata tenant hash`: prints the hash of an existing token read from standard input (so that it
 * does not appear in the process list or the shell history).
 */
import type { Command } from 'commander';
import { hashToken, newToken } from '../tenancy/config.js';

/** Reads all of standard input as text. */
async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Registers `strata tenant token` and `strata tenant hash`. */
export function registerTenantCommands(program: Command): void {
  const tenant = program.command('tenant').description('tenant credentials for the tenants file');
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
}
