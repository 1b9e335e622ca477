#!/usr/bin/env node
// Builds the client package in packages/client/ (run by its `prepack`, so `npm pack` there
// always packs a fresh build): compiles src/client/index.ts and what it imports, with type
// declarations, into packages/client/dist/; copies proto/*.proto (the writer client loads
// write.proto at run time) and LICENSE; records the commit (scripts/build-info.mjs).
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = join(root, 'packages', 'client');
for (const d of ['dist', 'proto']) rmSync(join(pkg, d), { recursive: true, force: true });
const tsc = createRequire(join(root, 'package.json')).resolve('typescript/bin/tsc');
execFileSync(process.execPath, [tsc, '-p', join(pkg, 'tsconfig.json')], { stdio: 'inherit' });
mkdirSync(join(pkg, 'proto'));
for (const f of readdirSync(join(root, 'proto'))) if (f.endsWith('.proto')) copyFileSync(join(root, 'proto', f), join(pkg, 'proto', f));
copyFileSync(join(root, 'LICENSE'), join(pkg, 'LICENSE'));
execFileSync(process.execPath, [join(root, 'scripts', 'build-info.mjs'), pkg], { stdio: 'inherit' });
