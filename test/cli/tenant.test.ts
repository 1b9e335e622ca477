/**
 * `strata tenant token` prints a fresh random token and the hash the tenants file stores (and the
 * hash authenticates the token); `strata tenant hash` hashes a token read from stdin.
 */
import { execFile, spawn } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { hashToken, parseTenantsConfig, TOKEN_HASH_PATTERN } from '../../src/tenancy/config.js';
import { TenantRegistry } from '../../src/tenancy/tenants.js';

const root = join(import.meta.dirname, '..', '..');
const main = join(root, 'src', 'cli', 'main.ts');
const run = (...args: string[]) => promisify(execFile)(process.execPath, ['--import', 'tsx', main, ...args], { cwd: root });

t.test('strata tenant token prints a new token and its sha256 hash', async (t) => {
  const a = await run('tenant', 'token');
  const m = /^token: (strata_[A-Za-z0-9_-]{43})\nhash: {2}(sha256:[0-9a-f]{64})\n$/.exec(a.stdout);
  t.ok(m, `text output: ${a.stdout}`);
  t.equal(m![2], hashToken(m![1]!), 'the hash is the hash of the token');
  t.match(a.stderr, /tenants\.<id>\.tokens/, 'says where the hash goes (on stderr)');
  const b = JSON.parse((await run('tenant', 'token', '--json')).stdout) as { token: string; hash: string };
  t.match(b.hash, TOKEN_HASH_PATTERN);
  t.not(b.token, m![1], 'a new token every time');
  // the printed hash, put in a tenants file, authenticates the printed token
  const reg = new TenantRegistry(await parseTenantsConfig({ defaultBucket: { type: 'filesystem', path: '/tmp/unused' }, tenants: { acme: { tokens: [b.hash] } } }, 'test', {}));
  t.equal(reg.authenticate('acme', b.token).tenant, 'acme');
});

t.test('strata tenant hash hashes a token read from stdin', async (t) => {
  const hashOf = (input: string) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const p = spawn(process.execPath, ['--import', 'tsx', main, 'tenant', 'hash'], { cwd: root });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      p.on('close', (code) => resolve({ code, stdout, stderr }));
      p.stdin.end(input);
    });
  const r = await hashOf('strata_abc\n');
  t.same(r, { code: 0, stdout: `${hashToken('strata_abc')}\n`, stderr: '' });
  const empty = await hashOf('  \n');
  t.equal(empty.code, 2);
  t.match(empty.stderr, /no token on standard input/);
});
