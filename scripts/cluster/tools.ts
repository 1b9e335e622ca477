/**
 * The external programs the local cluster runs: nginx (write routing) and HAProxy (read hashing).
 * They are looked up on PATH and in the sbin directories, which a non-root user's PATH often
 * lacks on Debian (`/usr/sbin/nginx`, `/usr/sbin/haproxy`).
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** The proxies the cluster needs, with the Debian packages that provide them. */
export const PROXY_TOOLS = {
  nginx: 'nginx-light',
  haproxy: 'haproxy',
} as const;

export type ProxyTool = keyof typeof PROXY_TOOLS;

/** Searched after PATH. */
export const SBIN_DIRS: readonly string[] = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/** Absolute path of an executable named `name` on `path` or in `extraDirs`, or null. */
export function findExecutable(name: string, path = process.env.PATH ?? '', extraDirs: readonly string[] = SBIN_DIRS): string | null {
  const dirs = [...path.split(delimiter).filter((d) => d !== ''), ...extraDirs];
  for (const dir of dirs) {
    const file = join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not in this directory; try the next
    }
  }
  return null;
}

/** Paths of nginx and HAProxy. */
export type ProxyToolPaths = Record<ProxyTool, string>;

/**
 * Finds nginx and HAProxy.
 * @throws Error naming the missing programs and how to install them.
 */
export function findProxyTools(path = process.env.PATH ?? '', extraDirs: readonly string[] = SBIN_DIRS): ProxyToolPaths {
  const found: Partial<ProxyToolPaths> = {};
  const missing: ProxyTool[] = [];
  for (const tool of Object.keys(PROXY_TOOLS) as ProxyTool[]) {
    const file = findExecutable(tool, path, extraDirs);
    if (file === null) missing.push(tool);
    else found[tool] = file;
  }
  if (missing.length > 0) {
    const packages = missing.map((t) => PROXY_TOOLS[t]).join(' ');
    throw new Error(
      `the local cluster needs ${missing.join(' and ')}, not found on PATH or in ${extraDirs.join(', ') || '(no other directory)'}; ` +
        `install with \`apt-get install --no-install-recommends ${packages}\` (.ci/run does this; see docs/cluster.md)`,
    );
  }
  return found as ProxyToolPaths;
}
