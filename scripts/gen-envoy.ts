/**
 * Writes Strata's Envoy bootstrap for a topology (see scripts/deploy/envoy-gen.ts):
 *
 *   node --import tsx scripts/gen-envoy.ts                      # the committed default
 *   node --import tsx scripts/gen-envoy.ts --shards 64 --aggregators 8 --gateways 6
 *   node --import tsx scripts/gen-envoy.ts --check              # exit 1 if the files are stale
 *
 * Writes envoy/strata.yaml and its copy k8s/generated/envoy.yaml (the Kubernetes ConfigMap is
 * generated from the copy; kustomize cannot read files outside k8s/). The result is validated
 * (Envoy API protos + routing semantics) before anything is written.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { generatorCommand, renderEnvoyYaml } from './deploy/envoy-gen.js';
import { validateEnvoyYaml } from './deploy/envoy-validate.js';
import { formatProblems } from './deploy/proto-check.js';
import { DEFAULT_TOPOLOGY, type Topology } from './deploy/topology.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
/** Files the generator owns, relative to the repository root. */
export const ENVOY_OUTPUTS = ['envoy/strata.yaml', 'k8s/generated/envoy.yaml'] as const;

const { values } = parseArgs({
  options: {
    shards: { type: 'string' },
    aggregators: { type: 'string' },
    gateways: { type: 'string' },
    namespace: { type: 'string' },
    'cluster-domain': { type: 'string' },
    check: { type: 'boolean', default: false },
    stdout: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});

if (values.help) {
  process.stdout.write(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]!.replace(/^\/\*\*\n/, '').replace(/^ \* ?/gm, '') + '\n');
  process.exit(0);
}

function int(name: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!/^[1-9]\d*$/.test(v)) {
    process.stderr.write(`gen-envoy: --${name} must be a positive integer, got "${v}"\n`);
    process.exit(2);
  }
  return Number(v);
}

const d = DEFAULT_TOPOLOGY;
const topo: Topology = {
  ...d,
  namespace: values.namespace ?? d.namespace,
  clusterDomain: values['cluster-domain'] ?? d.clusterDomain,
  numShards: int('shards', values.shards, d.numShards),
  aggregator: { ...d.aggregator, replicas: int('aggregators', values.aggregators, d.aggregator.replicas) },
  gateway: { ...d.gateway, replicas: int('gateways', values.gateways, d.gateway.replicas) },
};

const command = generatorCommand(topo, d);

let text: string;
try {
  text = renderEnvoyYaml(topo, command);
} catch (err) {
  process.stderr.write(`gen-envoy: ${(err as Error).message}\n`);
  process.exit(2);
}
const problems = validateEnvoyYaml(text, { topology: topo });
if (problems.length > 0) {
  process.stderr.write(`gen-envoy: the generated config does not validate:\n${formatProblems(problems)}\n`);
  process.exit(1);
}

if (values.stdout) {
  process.stdout.write(text);
} else if (values.check) {
  const stale = ENVOY_OUTPUTS.filter((f) => {
    try {
      return readFileSync(join(ROOT, f), 'utf8') !== text;
    } catch {
      return true;
    }
  });
  if (stale.length > 0) {
    process.stderr.write(`gen-envoy: out of date: ${stale.join(', ')}; run: ${command}\n`);
    process.exit(1);
  }
  process.stdout.write(`gen-envoy: ${ENVOY_OUTPUTS.join(' and ')} are up to date\n`);
} else {
  for (const f of ENVOY_OUTPUTS) writeFileSync(join(ROOT, f), text);
  process.stdout.write(`gen-envoy: wrote ${ENVOY_OUTPUTS.join(' and ')} (${topo.numShards} shards, ${topo.aggregator.replicas} aggregators, ${topo.gateway.replicas} gateways)\n`);
}
