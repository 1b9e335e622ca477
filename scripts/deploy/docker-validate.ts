/**
 * Static checks of the Dockerfile and .dockerignore (no Docker daemon needed): a multi-stage
 * build, a numeric non-root USER in the final stage, production dependencies installed from the
 * lock with `npm install --omit=dev` (not `npm ci`, which the registry mirror's lock refuses),
 * every COPY source present in the repository and not excluded by .dockerignore, and an exec-form
 * ENTRYPOINT running the CLI.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Problem } from './proto-check.js';

/** One instruction with its (continuation-joined) arguments. */
export interface DockerInstruction {
  readonly line: number;
  readonly op: string;
  readonly args: string;
}

/** Splits a Dockerfile into instructions (comments dropped, `\` continuations joined). */
export function parseDockerfile(text: string): DockerInstruction[] {
  const out: DockerInstruction[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let l = lines[i]!.trim();
    const start = i + 1;
    if (l === '' || l.startsWith('#')) continue;
    while (l.endsWith('\\') && i + 1 < lines.length) {
      l = `${l.slice(0, -1).trim()} ${lines[++i]!.trim()}`;
    }
    const m = /^(\S+)\s*(.*)$/.exec(l);
    if (m) out.push({ line: start, op: m[1]!.toUpperCase(), args: m[2]! });
  }
  return out;
}

/**
 * Whether `.dockerignore` excludes `path` (relative to the context root). Patterns are relative
 * to the root as in Docker: `*` and `?` stay within one path segment, `**` spans any depth, a
 * matched directory excludes everything under it, and a later `!pattern` re-includes.
 */
export function dockerIgnored(path: string, ignoreText: string): boolean {
  const patterns = ignoreText
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  let ignored = false;
  for (const p of patterns) {
    const negate = p.startsWith('!');
    const pat = (negate ? p.slice(1) : p).replace(/^\/+|\/+$/g, '');
    const body = pat
      .split('**')
      .map((part) => part.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]'))
      .join('.*');
    if (new RegExp(`^${body}(/.*)?$`).test(path)) ignored = !negate;
  }
  return ignored;
}

/** Problems of the Dockerfile `text` for the repository at `root`; empty when fine. */
export function validateDockerfile(text: string, ignoreText: string, root: string): Problem[] {
  const problems: Problem[] = [];
  const report = (line: number, message: string): void => void problems.push({ path: `Dockerfile:${line}`, message });
  const ins = parseDockerfile(text);
  const froms = ins.filter((i) => i.op === 'FROM');
  if (froms.length < 2) report(froms[0]?.line ?? 1, 'the build must be multi-stage (build tools and dev dependencies stay out of the image)');
  const lastFrom = ins.lastIndexOf(froms.at(-1)!);
  const final = ins.slice(lastFrom + 1);
  const users = final.filter((i) => i.op === 'USER');
  const user = users.at(-1);
  if (!user) report(froms.at(-1)?.line ?? 1, 'the final stage must set USER to a non-root user');
  else {
    const uid = user.args.split(':')[0] ?? '';
    if (!/^\d+$/.test(uid)) report(user.line, `USER ${user.args}: give a numeric UID so Kubernetes can verify runAsNonRoot`);
    else if (Number(uid) === 0) report(user.line, 'USER must not be root');
  }
  const runs = ins.filter((i) => i.op === 'RUN');
  if (runs.some((r) => /\bnpm ci\b/.test(r.args))) report(runs.find((r) => /\bnpm ci\b/.test(r.args))!.line, 'use `npm install` with the lock, not `npm ci` (the mirror lacks optional packages the lock records)');
  if (!runs.some((r) => /\bnpm install\b.*--omit=dev/.test(r.args))) report(1, 'production dependencies must be installed with `npm install --omit=dev`');
  for (const c of ins.filter((i) => i.op === 'COPY' || i.op === 'ADD')) {
    const parts = c.args.split(/\s+/).filter((p) => !p.startsWith('--'));
    if (/--from=/.test(c.args)) continue;
    for (const src of parts.slice(0, -1)) {
      const clean = src.replace(/^\.\//, '').replace(/\/$/, '');
      if (!existsSync(join(root, clean))) report(c.line, `COPY source ${src} does not exist`);
      else if (dockerIgnored(clean, ignoreText)) report(c.line, `COPY source ${src} is excluded by .dockerignore`);
    }
  }
  const entry = final.filter((i) => i.op === 'ENTRYPOINT').at(-1);
  if (!entry) report(froms.at(-1)?.line ?? 1, 'the final stage needs an ENTRYPOINT');
  else {
    let argv: unknown;
    try {
      argv = JSON.parse(entry.args);
    } catch {
      argv = null;
    }
    if (!Array.isArray(argv)) report(entry.line, 'ENTRYPOINT must use the exec form (JSON array) so signals reach node');
    else if (argv[0] !== 'node' || typeof argv[1] !== 'string' || !existsSync(join(root, argv[1]))) report(entry.line, 'ENTRYPOINT must run node with the CLI script (bin/strata.js)');
  }
  for (const must of ['node_modules', 'dist', '.git', 'data']) {
    if (!dockerIgnored(must, ignoreText)) problems.push({ path: '.dockerignore', message: `${must} must be excluded from the build context` });
  }
  return problems;
}
