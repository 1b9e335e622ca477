/**
 * What build of Strata this is: the version of package.json and the git commit the build was
 * made from. `npm run build` writes the commit into `dist/build-info.json`
 * (scripts/build-info.mjs: `STRATA_COMMIT`, else `git rev-parse HEAD`, else none); running from
 * the sources (tsx) or from a build made without git, the commit is `unknown`.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Version and commit of this build. */
export interface BuildInfo {
  /** package.json `version`, e.g. `0.1.0`. */
  readonly version: string;
  /** Full git commit hash, or `unknown` when the build did not know it. */
  readonly commit: string;
}

const HERE = dirname(fileURLToPath(import.meta.url));
/** True when running the compiled build (dist/src/...), not the sources. */
const COMPILED = HERE.includes(join('dist', 'src'));
/** The package root. */
const ROOT = join(HERE, ...(COMPILED ? ['..', '..', '..'] : ['..', '..']));

function readJson(path: string): Record<string, unknown> | null {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

let cached: BuildInfo | null = null;

/** This build's version and commit (read once). */
export function buildInfo(): BuildInfo {
  if (cached) return cached;
  const pkg = readJson(join(ROOT, 'package.json'));
  // only a build knows its commit: the sources may have moved on since dist/ was built
  const built = COMPILED ? readJson(join(ROOT, 'dist', 'build-info.json')) : null;
  const version = typeof pkg?.['version'] === 'string' ? pkg['version'] : 'unknown';
  const commit = typeof built?.['commit'] === 'string' && built['commit'] !== '' ? built['commit'] : 'unknown';
  cached = { version, commit };
  return cached;
}

/** `0.1.0 (commit 1a2b3c4d5e6f)` or `0.1.0 (commit unknown)`: what `strata --version` prints. */
export function versionLine(info: BuildInfo = buildInfo()): string {
  return `${info.version} (commit ${info.commit === 'unknown' ? 'unknown' : info.commit.slice(0, 12)})`;
}
