/**
 * Kubernetes manifests: the committed kustomization validates (kubernetes-models + unknown
 * fields + wiring + Strata's own config and CLI + the Envoy config it ships), describes the
 * default topology the Envoy config was generated for, and every deliberate breakage of a copy in
 * a temp dir is reported.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parseQuantity, validateK8sDir, validateModel } from '../../scripts/deploy/k8s-validate.js';
import { formatProblems } from '../../scripts/deploy/proto-check.js';
import { DEFAULT_TOPOLOGY } from '../../scripts/deploy/topology.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const K8S = join(ROOT, 'k8s');

t.test('k8s/ validates and describes the topology envoy/strata.yaml was generated for', async (t) => {
  const r = await validateK8sDir(K8S, { numShards: DEFAULT_TOPOLOGY.numShards });
  t.equal(formatProblems(r.problems), '', 'no problems');
  t.same(r.topology, DEFAULT_TOPOLOGY, 'namespace, names, replicas, ports and numShards agree with the generator default');
  t.equal(r.configMaps.get('strata-envoy')?.get('envoy.yaml'), readFileSync(join(ROOT, 'envoy', 'strata.yaml'), 'utf8'), 'the Envoy ConfigMap carries envoy/strata.yaml');
  const kinds = r.objects.map((o) => `${String(o.data['kind'])}/${String((o.data['metadata'] as Record<string, unknown>)['name'])}`).sort();
  t.same(kinds, [
    'Deployment/strata-envoy',
    'Deployment/strata-lifecycle',
    'Namespace/strata',
    'PodDisruptionBudget/strata-aggregator',
    'PodDisruptionBudget/strata-envoy',
    'PodDisruptionBudget/strata-gateway',
    'Service/strata-aggregator',
    'Service/strata-envoy',
    'Service/strata-gateway',
    'ServiceAccount/strata',
    'StatefulSet/strata-aggregator',
    'StatefulSet/strata-gateway',
  ]);
});

t.test('validateModel() finds unknown fields at any depth, which .validate() alone misses', async (t) => {
  const svc = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 's', labels: { 'any-label': 'x' }, annotatons: {} },
    spec: { selector: { a: 'b' }, ports: [{ port: 1, targetPrt: 2 }] },
  };
  const problems = formatProblems(await validateModel(svc, 'svc'));
  t.match(problems, /metadata\.annotatons: unknown field "annotatons" in Service/);
  t.match(problems, /spec\.ports\[0\]\.targetPrt: unknown field "targetPrt"/);
  t.notMatch(problems, /any-label|selector\.a/, 'free-form maps are not flagged');
  t.match(formatProblems(await validateModel({ apiVersion: 'v1', kind: 'Servic', metadata: { name: 'x' } }, 'x')), /unknown kind Servic/);
  t.equal(parseQuantity('100Gi'), 100 * 2 ** 30);
  t.equal(parseQuantity('500m'), 0.5);
  t.equal(parseQuantity('2'), 2);
  t.equal(parseQuantity('2 Gi'), null);
});

/** A breakage: edit one file of a copy (text replaced must exist) and expect a problem. */
interface Breakage {
  readonly name: string;
  readonly file: string;
  readonly from: string | RegExp;
  readonly to: string;
  readonly expect: RegExp;
}

const breakages: Breakage[] = [
  { name: 'unknown field in a container', file: 'aggregator.yaml', from: 'imagePullPolicy: IfNotPresent', to: 'imagePullPolicyy: IfNotPresent', expect: /unknown field "imagePullPolicyy" in StatefulSet/ },
  { name: 'unknown field in a Service spec', file: 'gateway.yaml', from: 'publishNotReadyAddresses: true', to: 'publishNotReady: true', expect: /unknown field "publishNotReady" in Service/ },
  { name: 'unknown field in a PDB', file: 'envoy.yaml', from: 'minAvailable: 1', to: 'minAvailable: 1\n  maxUnavailble: 1', expect: /unknown field "maxUnavailble" in PodDisruptionBudget/ },
  { name: 'unknown field in a claim template', file: 'gateway.yaml', from: '        accessModes:', to: '        storageClass: fast\n        accessModes:', expect: /unknown field "storageClass"/ },
  { name: 'wrong enum value', file: 'aggregator.yaml', from: 'podManagementPolicy: Parallel', to: 'podManagementPolicy: Sequential', expect: /StatefulSet does not validate: .*podManagementPolicy must be equal to one of the allowed values/ },
  { name: 'wrong type', file: 'gateway.yaml', from: 'replicas: 4', to: 'replicas: four', expect: /StatefulSet does not validate: .*replicas must be integer/ },
  { name: 'unknown kind', file: 'namespace.yaml', from: 'kind: ServiceAccount', to: 'kind: ServiceAcount', expect: /unknown kind ServiceAcount of v1/ },
  { name: 'Service selector mismatch', file: 'gateway.yaml', from: /(kind: Service\n[\s\S]*?selector:\n\s+app.kubernetes.io\/name: strata\n\s+app.kubernetes.io\/component:) gateway/, to: '$1 gw', expect: /Service\/strata-gateway: selector .* matches no pod template/ },
  { name: 'StatefulSet selector mismatch', file: 'aggregator.yaml', from: /(matchLabels:\n\s+app.kubernetes.io\/name: strata\n\s+app.kubernetes.io\/component:) aggregator\n(\s+template:)/, to: '$1 aggregators\n$2', expect: /spec\.selector\.matchLabels .* does not match the pod template labels/ },
  { name: 'PDB selector mismatch', file: 'envoy.yaml', from: /(minAvailable: 1\n\s+selector:\n\s+matchLabels:\n\s+app.kubernetes.io\/name: strata\n\s+app.kubernetes.io\/component:) envoy/, to: '$1 proxy', expect: /PodDisruptionBudget\/strata-envoy: selector .* matches no pod template/ },
  { name: 'Service targetPort missing', file: 'envoy.yaml', from: 'targetPort: grpc-read', to: 'targetPort: grpc-reads', expect: /targetPort grpc-reads is not a container port of Deployment\/strata-envoy/ },
  { name: 'named probe port missing', file: 'aggregator.yaml', from: /(livenessProbe:\n\s+httpGet:\n\s+path: \/healthz\n\s+port:) metrics/, to: '$1 metric', expect: /livenessProbe\.httpGet\.port metric is not a container port/ },
  { name: 'gRPC probe port not the config\'s', file: 'gateway.yaml', from: /(grpc:\n\s+port:) 7402/, to: '$1 9402', expect: /readinessProbe\.grpc\.port 9402 is not the gRPC port 7402 of the config/ },
  { name: 'gRPC probe asks the wrong service', file: 'aggregator.yaml', from: 'service: strata.write.v1.Writer', to: 'service: strata.write.v1.Write', expect: /readinessProbe\.grpc\.service must be "strata\.write\.v1\.Writer"/ },
  { name: 'config gRPC port changed but not the pod', file: 'config/gateway.json', from: '"0.0.0.0:7402"', to: '"0.0.0.0:7412"', expect: /container port "grpc" must be 7412 \(grpcListen\), is 7402/ },
  { name: 'unknown Secret', file: 'gateway.yaml', from: 'name: strata-bucket-credentials', to: 'name: strata-bucket-creds', expect: /Secret strata-bucket-creds has no template under secrets\// },
  { name: 'unknown Secret key', file: 'aggregator.yaml', from: 'key: secret-access-key', to: 'key: secret-key', expect: /Secret strata-bucket-credentials has no key secret-key in its template/ },
  { name: 'unknown Secret volume', file: 'aggregator.yaml', from: 'secretName: strata-tenant-credentials', to: 'secretName: strata-tenants-credentials', expect: /volume tenant-credentials: Secret strata-tenants-credentials has no template/ },
  { name: 'Secret template with a value', file: 'secrets/bucket-credentials.example.yaml', from: 'access-key-id: ""', to: 'access-key-id: AKIAEXAMPLE', expect: /secret templates must not hold values/ },
  { name: 'ConfigMap that does not exist', file: 'envoy.yaml', from: 'name: strata-envoy\n        - name: tmp', to: 'name: strata-envoy-config\n        - name: tmp', expect: /ConfigMap strata-envoy-config is neither generated nor defined/ },
  { name: 'volumeMount without a volume', file: 'gateway.yaml', from: '- name: cache\n              mountPath', to: '- name: lmdb\n              mountPath', expect: /volumeMount lmdb names no volume or claim template[\s\S]*claim template cache is not mounted/ },
  { name: 'file not listed in the kustomization', file: 'kustomization.yaml', from: '  - envoy.yaml\n', to: '', expect: /envoy\.yaml: file is not listed in kustomization\.yaml/ },
  { name: 'listed file missing', file: 'kustomization.yaml', from: '  - envoy.yaml\n', to: '  - envoy.yaml\n  - networkpolicy.yaml\n', expect: /networkpolicy\.yaml does not exist/ },
  { name: 'unknown kustomization field', file: 'kustomization.yaml', from: 'namespace: strata', to: 'namespace: strata\ncommonLabel:\n  a: b', expect: /unknown or unsupported kustomization field "commonLabel"/ },
  { name: 'object in another namespace', file: 'gateway.yaml', from: 'name: strata-gateway\n  labels', to: 'name: strata-gateway\n  namespace: default\n  labels', expect: /namespace default differs from the kustomization's strata/ },
  { name: 'missing limits', file: 'envoy.yaml', from: '            limits:\n              cpu: "2"\n              memory: 1Gi\n', to: '', expect: /container envoy: resources\.limits\.cpu is missing/ },
  { name: 'requests above limits', file: 'aggregator.yaml', from: 'memory: 3Gi', to: 'memory: 5Gi', expect: /resources\.requests\.memory exceeds its limit/ },
  { name: 'aggregator replicas differ from the config', file: 'aggregator.yaml', from: 'replicas: 4', to: 'replicas: 5', expect: /config replicas 4 differs from the StatefulSet's replicas 5/ },
  { name: 'config replicas below the StatefulSet\'s', file: 'config/aggregator.json', from: '"replicas": 4', to: '"replicas": 2', expect: /config replicas 2 differs from the StatefulSet's replicas 4[\s\S]*rejects its config in pod strata-aggregator-2: .*ordinal: 2 is not below replicas \(2\)/ },
  { name: 'gateways scaled without regenerating Envoy', file: 'gateway.yaml', from: 'replicas: 4', to: 'replicas: 5', expect: /gateway pod strata-gateway-4\.strata-gateway\.strata\.svc\.cluster\.local is missing from strata_gateway/ },
  { name: 'unknown key in the Strata config', file: 'config/aggregator.json', from: '"walDir"', to: '"walDirectory"', expect: /strata aggregator rejects its config: .*walDirectory/ },
  { name: 'unknown CLI flag', file: 'gateway.yaml', from: '- --config\n            - /etc/strata/config/gateway.json', to: '- --configuration\n            - /etc/strata/config/gateway.json', expect: /unknown option '--configuration'/ },
  { name: 'config path not mounted', file: 'gateway.yaml', from: '- /etc/strata/config/gateway.json', to: '- /etc/strata/gateway.json', expect: /\/etc\/strata\/gateway\.json is not a file of a mounted ConfigMap/ },
  { name: 'WAL not on the claim', file: 'config/aggregator.json', from: '"/var/lib/strata/wal"', to: '"/data/wal"', expect: /walDir \/data\/wal is not on a volumeClaimTemplate/ },
  { name: 'cache budget whose LMDB file may outgrow its volume', file: 'config/gateway.json', from: '"cacheMaxBytes": 51539607552', to: '"cacheMaxBytes": 53687091200', expect: /cacheMaxBytes \(53687091200 bytes\): the LMDB file at its largest .* take 107508400128 bytes, more than the cacheDir volume \(107374182400 bytes\)/ },
  { name: 'grace period shorter than the drain', file: 'aggregator.yaml', from: 'terminationGracePeriodSeconds: 90', to: 'terminationGracePeriodSeconds: 30', expect: /terminationGracePeriodSeconds 30 does not cover shutdownGraceMs 45000/ },
  { name: 'service links on', file: 'gateway.yaml', from: '      enableServiceLinks: false\n', to: '', expect: /enableServiceLinks must be false/ },
  { name: 'ordinal not from the host name', file: 'aggregator.yaml', from: '            - --ordinal-from-hostname\n', to: '', expect: /rejects its config: .*ordinal and replicas go together/ },
  { name: 'two Strata images', file: 'gateway.yaml', from: 'image: strata', to: 'image: strata:0.0.9', expect: /all Strata containers must run the same image/ },
  { name: 'different tenants files', file: 'config/gateway.json', from: '"tenantsFile": "/etc/strata/tenants/tenants.yaml"', to: '"tenantsFile": "/etc/strata/config/tenants.yaml"', expect: /the aggregators and the gateways must use the same bucket or tenants file/ },
  { name: 'tenants file not mounted', file: 'config/aggregator.json', from: '"tenantsFile": "/etc/strata/tenants/tenants.yaml"', to: '"tenantsFile": "/etc/strata/tenants.yaml"', expect: /tenantsFile \/etc\/strata\/tenants\.yaml is not a file of a mounted ConfigMap/ },
  { name: 'tenants file references an unset variable', file: 'config/tenants.yaml', from: '{ env: AWS_SECRET_ACCESS_KEY }', to: '{ env: AWS_SECRET_KEY }', expect: /rejects its tenants file: .*defaultBucket\.credentials\.secretAccessKey: environment variable AWS_SECRET_KEY is not set/ },
  { name: 'tenants file with an invalid key', file: 'config/tenants.yaml', from: 'authRequired: true', to: 'authRequired: true\nauthRequire: true', expect: /rejects its tenants file: .*authRequire/ },
  { name: 'root pod', file: 'envoy.yaml', from: 'runAsNonRoot: true', to: 'runAsNonRoot: false', expect: /runAsNonRoot must be true/ },
  { name: 'StatefulSet without a headless Service', file: 'aggregator.yaml', from: 'clusterIP: None', to: 'clusterIP: 10.0.0.10', expect: /must be headless/ },
  { name: 'config file that is not YAML', file: 'config/tenants.yaml', from: 'tenants: {}', to: 'tenants: {', expect: /config\/tenants\.yaml: not valid YAML/ },
  { name: 'lifecycle config with an unknown key', file: 'config/lifecycle.json', from: '"logLevel": "info"', to: '"logLevl": "info"', expect: /strata lifecycle rejects its config: .*logLevl/ },
  { name: 'lifecycle role on another tenants file', file: 'config/lifecycle.json', from: '/etc/strata/tenants/tenants.yaml', to: '/etc/strata/tenants/other.yaml', expect: /Deployment\/strata-lifecycle: the lifecycle role must use the same bucket or tenants file as the aggregators and gateways/ },
  { name: 'lifecycle metrics port not the config\'s', file: 'lifecycle.yaml', from: 'containerPort: 9403', to: 'containerPort: 9404', expect: /container lifecycle: container port "metrics" must be 9403 \(metricsListen\), is 9404/ },
  { name: 'lifecycle day work dir on the read-only root', file: 'config/lifecycle.json', from: '/var/lib/strata-lifecycle/day', to: '/var/lib/elsewhere/day', expect: /dayWorkDir \/var\/lib\/elsewhere\/day must be on a writable emptyDir or claim/ },
  { name: 'lifecycle as a StatefulSet', file: 'lifecycle.yaml', from: 'kind: Deployment', to: 'kind: StatefulSet', expect: /the lifecycle role runs as a Deployment/ },
  { name: 'stale Envoy ConfigMap', file: 'generated/envoy.yaml', from: 'header_name: x-strata-block', to: 'header_name: x-strata-tenant', expect: /hashes "x-strata-tenant", but the query client sends "x-strata-block"/ },
];

t.test('the validator reports each deliberate breakage of a copy of k8s/', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'strata-k8s-broken-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const [i, br] of breakages.entries()) {
    const copy = join(dir, String(i));
    cpSync(K8S, copy, { recursive: true });
    const file = join(copy, br.file);
    const before = readFileSync(file, 'utf8');
    const after = before.replace(br.from, br.to);
    t.not(after, before, `${br.name}: the edit applies`);
    writeFileSync(file, after);
    const r = await validateK8sDir(copy);
    t.match(formatProblems(r.problems), br.expect, br.name);
  }
  const extra = join(dir, 'extra');
  cpSync(K8S, extra, { recursive: true });
  writeFileSync(join(extra, 'networkpolicy.yaml'), 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: x\nspec:\n  podSelector: {}\n');
  t.match(formatProblems((await validateK8sDir(extra)).problems), /networkpolicy\.yaml: file is not listed in kustomization\.yaml/, 'a new file must be listed');
  writeFileSync(join(extra, 'secret.yaml'), 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  k: v\n');
  writeFileSync(join(extra, 'kustomization.yaml'), readFileSync(join(extra, 'kustomization.yaml'), 'utf8').replace('  - envoy.yaml\n', '  - envoy.yaml\n  - networkpolicy.yaml\n  - secret.yaml\n'));
  const p = formatProblems((await validateK8sDir(extra)).problems);
  t.match(p, /Secrets with values must not be committed/, 'a Secret with values in the resources');
  t.notMatch(p, /networkpolicy/, 'a listed, valid NetworkPolicy is fine');
});
