#!/usr/bin/env node
// Writes dist/build-info.json ({"commit": "..."}) after `tsc`: the commit the build was made from,
// from STRATA_COMMIT (e.g. a Docker build argument) or `git rev-parse HEAD`; empty when neither
// is known (src/common/version.ts then reports "unknown"). An argument names another package
// directory to write it under (the client package: packages/client).
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
let commit = process.env.STRATA_COMMIT ?? '';
if (commit === '') {
  try {
    commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    commit = ''; // no git or not a checkout: the build does not know its commit
  }
}
if (commit !== '' && !/^[0-9a-f]{7,40}$/.test(commit)) {
  process.stderr.write(`build-info: STRATA_COMMIT "${commit}" is not a git commit hash\n`);
  process.exit(2);
}
const out = join(process.argv[2] ?? root, 'dist');
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'build-info.json'), `${JSON.stringify({ commit })}\n`);
