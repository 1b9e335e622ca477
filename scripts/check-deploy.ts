/**
 * Checks the deployment files offline, as the tests do, for use while editing them:
 *
 *   node --import tsx scripts/check-deploy.ts [k8s-dir]
 *
 * 1. k8s/ (or the given kustomization directory): kubernetes-models validation, unknown fields,
 *    wiring, Strata's CLI args and config files, and the Envoy config in its ConfigMap against
 *    the topology the manifests describe;
 * 2. envoy/strata.yaml against that same topology;
 * 3. Dockerfile and .dockerignore.
 * Prints every problem and exits 1 if there is any.
 */
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { validateDockerfile } from './deploy/docker-validate.js';
import { validateEnvoyYaml } from './deploy/envoy-validate.js';
import { validateK8sDir } from './deploy/k8s-validate.js';
import { formatProblems, type Problem } from './deploy/proto-check.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const k8sDir = resolve(process.argv[2] ?? join(ROOT, 'k8s'));

const sections: [string, Problem[]][] = [];
const k8s = await validateK8sDir(k8sDir);
sections.push([k8sDir, k8s.problems]);
if (k8s.topology) sections.push(['envoy/strata.yaml', validateEnvoyYaml(readFileSync(join(ROOT, 'envoy', 'strata.yaml'), 'utf8'), { topology: k8s.topology })]);
sections.push(['Dockerfile', validateDockerfile(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'), readFileSync(join(ROOT, '.dockerignore'), 'utf8'), ROOT)]);

let failed = false;
for (const [name, problems] of sections) {
  if (problems.length === 0) {
    process.stdout.write(`ok   ${name}\n`);
    continue;
  }
  failed = true;
  process.stdout.write(`FAIL ${name} (${problems.length} problem${problems.length === 1 ? '' : 's'})\n${formatProblems(problems).replace(/^/gm, '  ')}\n`);
}
if (k8s.topology) {
  const tp = k8s.topology;
  process.stdout.write(`topology: ${tp.numShards} shards, ${tp.aggregator.replicas} aggregators, ${tp.gateway.replicas} gateways, namespace ${tp.namespace}\n`);
}
process.exit(failed ? 1 : 0);
