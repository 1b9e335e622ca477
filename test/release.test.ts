/**
 * Release basics: the license and project files ship, `strata --version` names the package
 * version, logs name their level and the build, and a build records its commit.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { createLogger } from '../src/common/logger.js';
import { buildInfo, versionLine } from '../src/common/version.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string; license: string };

t.test('LICENSE is the Apache License 2.0 and package.json says so', (t) => {
  const license = readFileSync(join(root, 'LICENSE'), 'utf8');
  t.match(license, /Apache License\s+Version 2\.0, January 2004/);
  t.match(license, /END OF TERMS AND CONDITIONS/, 'the full text');
  t.equal(pkg.license, 'Apache-2.0');
  for (const f of ['CHANGELOG.md', 'CONTRIBUTING.md', 'SECURITY.md']) t.ok(existsSync(join(root, f)), f);
  t.end();
});

t.test('strata --version prints the package version and the commit', async (t) => {
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', join(root, 'src', 'cli', 'main.ts'), '--version'], { cwd: root });
  // run from the sources, the commit is not known (only a build records it)
  t.equal(stdout, `strata ${pkg.version} (commit unknown)\n`);
  t.same(buildInfo(), { version: pkg.version, commit: 'unknown' });
  t.equal(versionLine({ version: '1.2.3', commit: '0123456789abcdef0123456789abcdef01234567' }), '1.2.3 (commit 0123456789ab)');
});

t.test('log lines name their level and carry the service and the build', (t) => {
  const lines: string[] = [];
  const logger = createLogger({ name: 'gateway', dest: { write: (line: string) => void lines.push(line) } });
  logger.warn({ tenant: 'acme' }, 'cache is full');
  logger.child({ role: 'x' }).error('cannot read block');
  const [a, b] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  t.match(a, { level: 'warn', svc: 'gateway', version: pkg.version, commit: 'unknown', tenant: 'acme', msg: 'cache is full' });
  t.match(b, { level: 'error', svc: 'gateway', version: pkg.version, role: 'x', msg: 'cannot read block' });
  t.end();
});
