/**
 * docs/config.md documents every option: each key of the aggregator and gateway config schemas
 * and of the tenants-file schema (bucket options and secret references included) has a row in the
 * right table, each top-level service option names its environment variable, and no row names a
 * key that does not exist. The keys are taken from the zod schemas themselves, so a new option fails this test until
 * it is documented.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { aggregatorConfigSchema, constantCase, ENV_PREFIX } from '../src/shard-aggregator/config.js';
import { gatewayConfigSchema, ENV_PREFIX as GATEWAY_ENV_PREFIX } from '../src/storage-gateway/config.js';
import { tenantsFileSchema } from '../src/tenancy/config.js';
import { lifecycleConfigSchema, ENV_PREFIX as LIFECYCLE_ENV_PREFIX } from '../src/lifecycle/config.js';

const doc = readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', 'docs', 'config.md'), 'utf8');

interface Def {
  type: string;
  shape?: Record<string, unknown>;
  innerType?: unknown;
  options?: unknown[];
  valueType?: unknown;
  element?: unknown;
  in?: unknown;
}

/** Every key path of a zod schema (`a`, `a.b`, records as `<id>`). */
function keyPaths(schema: unknown, path = '', out: string[] = []): string[] {
  const def = (schema as { _zod: { def: Def } })._zod.def;
  switch (def.type) {
    case 'object':
      for (const [k, v] of Object.entries(def.shape ?? {})) {
        const p = path ? `${path}.${k}` : k;
        if (!out.includes(p)) out.push(p);
        keyPaths(v, p, out);
      }
      break;
    case 'optional':
    case 'default':
    case 'nullable':
    case 'prefault':
      keyPaths(def.innerType, path, out);
      break;
    case 'union':
      for (const o of def.options ?? []) keyPaths(o, path, out);
      break;
    case 'record':
      keyPaths(def.valueType, `${path}.<id>`, out);
      break;
    case 'array':
      keyPaths(def.element, path, out);
      break;
    case 'pipe':
      keyPaths(def.in, path, out);
      break;
    default:
      break;
  }
  return out;
}

/** The text of the `## ` section whose heading starts with `title`. */
function section(title: string): string {
  const parts = doc.split(/^## /m);
  const found = parts.find((p) => p.startsWith(title));
  if (!found) throw new Error(`docs/config.md has no "## ${title}" section`);
  return found;
}

/** Keys in the first column of the tables of `text`, with their rows. */
function rows(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of text.matchAll(/^\| `([^`]+)` \|(.*)$/gm)) out.set(m[1]!, m[2]!);
  return out;
}

t.test('every aggregator option has a row with its environment variable, and nothing else does', (t) => {
  const documented = rows(section('Shard aggregator'));
  const keys = keyPaths(aggregatorConfigSchema);
  t.ok(keys.length > 25, `${keys.length} keys found in the schema`);
  for (const k of keys) {
    t.ok(documented.has(k), `${k} is documented`);
    if (!k.includes('.')) t.match(documented.get(k) ?? '', `\`${ENV_PREFIX}${constantCase(k)}\``, `${k}: environment variable named`);
  }
  t.same([...documented.keys()].filter((k) => !keys.includes(k)), [], 'no documented key outside the schema');
  t.end();
});

t.test('every tenants-file key has a row (tenant keys, bucket options, secret references), and nothing else does', (t) => {
  const paths = keyPaths(tenantsFileSchema);
  const bucketPrefix = /^(defaultBucket|tenants\.<id>\.bucket)\./;
  const tenantKeys = new Set(paths.filter((p) => !bucketPrefix.test(p)));
  const bucketKeys = new Set<string>();
  const refKeys = new Set<string>();
  for (const p of paths.filter((x) => bucketPrefix.test(x))) {
    const rel = p.replace(bucketPrefix, '');
    const ref = /^credentials\.[A-Za-z]+\.(env|file)$/.exec(rel);
    if (ref) refKeys.add(ref[1]!);
    else bucketKeys.add(rel);
  }
  t.ok(tenantKeys.size >= 7 && bucketKeys.size >= 20 && refKeys.size === 2, 'schema walked');
  const tenantsDoc = rows(section('Tenants file'));
  const bucketsDoc = section('Buckets');
  const [bucketTable, refTable] = bucketsDoc.split(/^### Secret references/m) as [string, string];
  const bucketDoc = rows(bucketTable);
  const refDoc = rows(refTable);
  for (const k of tenantKeys) t.ok(tenantsDoc.has(k), `${k} is documented`);
  for (const k of bucketKeys) t.ok(bucketDoc.has(k), `bucket option ${k} is documented`);
  for (const k of refKeys) t.ok(refDoc.has(k), `secret reference ${k} is documented`);
  t.same([...tenantsDoc.keys()].filter((k) => !tenantKeys.has(k)), [], 'no documented tenant key outside the schema');
  t.same([...bucketDoc.keys()].filter((k) => !bucketKeys.has(k)), [], 'no documented bucket option outside the schema');
  t.same([...refDoc.keys()].filter((k) => !refKeys.has(k)), [], 'no documented secret reference outside the schema');
  t.end();
});

t.test('every gateway option has a row with its environment variable, and nothing else does', (t) => {
  const gateway = section('Storage gateway');
  const documented = rows(gateway.split(/^### /m).find((p) => p.startsWith('Options')) ?? '');
  const keys = keyPaths(gatewayConfigSchema);
  t.ok(keys.length > 25, `${keys.length} keys found in the schema`);
  for (const k of keys) {
    t.ok(documented.has(k), `${k} is documented`);
    if (!k.includes('.')) t.match(documented.get(k) ?? '', `\`${GATEWAY_ENV_PREFIX}${constantCase(k)}\``, `${k}: environment variable named`);
  }
  t.same([...documented.keys()].filter((k) => !keys.includes(k)), [], 'no documented key outside the schema');
  t.end();
});

t.test('every lifecycle option has a row with its environment variable, and nothing else does', (t) => {
  const lifecycle = section('Lifecycle role');
  const documented = rows(lifecycle.split(/^### /m).find((p) => p.startsWith('Lifecycle options')) ?? '');
  const keys = keyPaths(lifecycleConfigSchema);
  t.ok(keys.length >= 11, `${keys.length} keys found in the schema`);
  for (const k of keys) {
    t.ok(documented.has(k), `${k} is documented`);
    if (!k.includes('.')) t.match(documented.get(k) ?? '', `\`${LIFECYCLE_ENV_PREFIX}${constantCase(k)}\``, `${k}: environment variable named`);
  }
  t.same([...documented.keys()].filter((k) => !keys.includes(k)), [], 'no documented key outside the schema');
  t.end();
});
