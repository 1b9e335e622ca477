/**
 * Validates the Kubernetes manifests of k8s/ offline, as kustomize would assemble them:
 *
 * - kustomization.yaml: known fields only; every resource and generator file exists; every file
 *   under the directory is listed (secret templates under secrets/*.example.yaml excepted);
 * - each object: the `kubernetes-models` class for its apiVersion/kind, `.validate()`, plus a check
 *   for unknown field names (the models ignore them): the same generated schema validator is run
 *   over a proxy of the object that records which properties it reads, and a key it never reads
 *   is not in the schema;
 * - wiring: selectors match pod labels (Services, StatefulSets, PDBs), Service target ports and
 *   probe ports exist, StatefulSets name a headless Service, volume mounts name a volume or a
 *   claim template, ConfigMaps and Secrets referenced exist (Secrets as templates with empty
 *   values; no Secret values are committed), requests and limits on every container;
 * - Strata: the container args are parsed by the real CLI (`strata aggregator|gateway`) and the
 *   mounted config file by the real config parser; the gRPC readiness probe uses the config's
 *   gRPC port and the service's health name; the WAL and the cache sit on claim templates with
 *   room for walQuotaBytes / cacheMaxBytes; the StatefulSet's replicas are the aggregators'
 *   `replicas`; termination grace covers shutdownGraceMs; both services use the same bucket or
 *   tenants file; a tenants file is a file of a mounted ConfigMap, is validated by the real
 *   tenants parser, and its `{ env: ... }` secret references name variables the pod sets;
 * - Envoy: the bootstrap in its ConfigMap passes envoy-validate.ts against the topology these
 *   manifests describe (names, namespace, replicas, ports, numShards).
 */
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join, posix, relative } from 'node:path';
import { Command } from 'commander';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { aggregatorConfigFrom, registerAggregatorCommands } from '../../src/cli/aggregator.js';
import { gatewayConfigFrom, registerGatewayCommands } from '../../src/cli/gateway.js';
import { lifecycleConfigFrom, registerLifecycleCommands } from '../../src/cli/lifecycle.js';
import type { LifecycleConfig } from '../../src/lifecycle/config.js';
import { lmdbMapSize } from '../../src/storage-gateway/cache/lmdb.js';
import type { AggregatorConfig } from '../../src/shard-aggregator/config.js';
import type { GatewayConfig } from '../../src/storage-gateway/config.js';
import { parseTenantsConfig } from '../../src/tenancy/config.js';
import { validateEnvoyYaml } from './envoy-validate.js';
import type { Problem } from './proto-check.js';
import { READ_SERVICE_NAME, WRITE_SERVICE_NAME, type Topology } from './topology.js';

type Obj = Record<string, unknown>;

function obj(v: unknown): Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {};
}
function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}
function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}
function num(v: unknown): number | undefined {
  return typeof v === 'number' ? v : undefined;
}

/** An object of the kustomization with where it came from. */
export interface LoadedObject {
  readonly file: string;
  readonly index: number;
  readonly data: Obj;
}

/** The result: problems, plus what was understood (for tests and tools). */
export interface K8sReport {
  readonly problems: Problem[];
  readonly objects: LoadedObject[];
  /** ConfigMaps built by configMapGenerator: name -> key -> text. */
  readonly configMaps: Map<string, Map<string, string>>;
  /** The deployment shape the manifests describe (null when it could not be derived). */
  readonly topology: Topology | null;
}

/** Fields of kustomization.yaml this project uses (anything else is flagged). */
const KUSTOMIZATION_FIELDS: Record<string, readonly string[]> = {
  '': ['apiVersion', 'kind', 'namespace', 'labels', 'resources', 'configMapGenerator', 'images'],
  labels: ['pairs', 'includeSelectors', 'includeTemplates'],
  configMapGenerator: ['name', 'files', 'literals', 'envs', 'behavior', 'options'],
  'configMapGenerator.options': ['disableNameSuffixHash', 'labels', 'annotations', 'immutable'],
  images: ['name', 'newName', 'newTag', 'digest'],
};

/** Directory (relative to the kustomization) of Secret templates, which must hold no values. */
export const SECRET_TEMPLATE_DIR = 'secrets';
const SECRET_TEMPLATE_RE = /^secrets\/[^/]+\.example\.ya?ml$/;

/** Image name that marks a container running Strata (before kustomize's images: rewrite). */
export const STRATA_IMAGE = 'strata';

const QUANTITY_RE = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$/;
const QUANTITY_MULT: Record<string, number> = {
  '': 1,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

/** A Kubernetes quantity ("100Gi", "500m", "2") as a number, or null. */
export function parseQuantity(q: unknown): number | null {
  const s = typeof q === 'number' ? String(q) : q;
  if (typeof s !== 'string') return null;
  const m = QUANTITY_RE.exec(s);
  return m ? Number(m[1]) * QUANTITY_MULT[m[2] ?? '']! : null;
}

function portOf(listen: string): number {
  return Number(listen.slice(listen.lastIndexOf(':') + 1));
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

async function listFiles(dir: string, base = dir): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await listFiles(p, base)));
    else out.push(relative(base, p).split('\\').join('/'));
  }
  return out.sort();
}

// ---------------------------------------------------------------------------------------------
// kubernetes-models

interface ModelClass {
  new (data: Obj): { validate(): void };
  prototype: { validate(this: unknown): void };
}

const modelModules = new Map<string, Promise<Record<string, unknown> | null>>();

async function modelClass(apiVersion: string, kind: string): Promise<ModelClass | null> {
  if (!/^[a-z0-9.]*\/?v\d+[a-z0-9]*$/.test(apiVersion)) return null;
  let mod = modelModules.get(apiVersion);
  if (!mod) {
    const spec = `kubernetes-models/${apiVersion}`;
    mod = (import(spec) as Promise<Record<string, unknown>>).catch(() => null);
    modelModules.set(apiVersion, mod);
  }
  const m = await mod;
  const cls = m?.[kind];
  return typeof cls === 'function' ? (cls as ModelClass) : null;
}

interface Tracked {
  readonly path: string;
  readonly target: Obj;
  readonly read: Set<string>;
}

/** A deep proxy of `v` recording, per object, which keys are read. */
function track(v: unknown, path: string, out: Tracked[]): unknown {
  if (Array.isArray(v)) return v.map((x, i) => track(x, `${path}[${i}]`, out));
  if (v !== null && typeof v === 'object') {
    const read = new Set<string>();
    const copy: Obj = {};
    for (const [k, x] of Object.entries(v)) copy[k] = track(x, path === '' ? k : `${path}.${k}`, out);
    out.push({ path, target: v as Obj, read });
    return new Proxy(copy, {
      get(t, p, r) {
        if (typeof p === 'string') read.add(p);
        return Reflect.get(t, p, r) as unknown;
      },
    });
  }
  return v;
}

/**
 * Validates one object with kubernetes-models and reports unknown fields; see the module comment.
 * Fields of free-form maps (labels, annotations, ConfigMap data) are read by the schema's
 * additionalProperties loop and so never reported.
 */
export async function validateModel(o: Obj, where: string): Promise<Problem[]> {
  const apiVersion = str(o['apiVersion']);
  const kind = str(o['kind']);
  if (apiVersion === undefined || kind === undefined) return [{ path: where, message: 'object without apiVersion and kind' }];
  const Cls = await modelClass(apiVersion, kind);
  if (!Cls) return [{ path: where, message: `unknown kind ${kind} of ${apiVersion} (not in kubernetes-models)` }];
  const problems: Problem[] = [];
  try {
    new Cls(o).validate();
  } catch (err) {
    problems.push({ path: where, message: `${kind} does not validate: ${(err as Error).message}` });
  }
  const tracked: Tracked[] = [];
  const proxy = track(o, '', tracked);
  try {
    Cls.prototype.validate.call(proxy);
  } catch {
    // reported above
  }
  for (const t of tracked) {
    for (const k of Object.keys(t.target)) {
      if (!t.read.has(k)) problems.push({ path: `${where}: ${t.path === '' ? k : `${t.path}.${k}`}`, message: `unknown field "${k}" in ${kind}` });
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------

interface Workload {
  readonly o: LoadedObject;
  readonly kind: 'StatefulSet' | 'Deployment';
  readonly name: string;
  readonly spec: Obj;
  readonly podSpec: Obj;
  readonly labels: Record<string, string>;
  readonly where: string;
}

function labelsOf(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(obj(v))) if (typeof x === 'string') out[k] = x;
  return out;
}

function selects(selector: Record<string, string>, labels: Record<string, string>): boolean {
  const entries = Object.entries(selector);
  return entries.length > 0 && entries.every(([k, v]) => labels[k] === v);
}

function whereOf(o: LoadedObject): string {
  const name = str(obj(o.data['metadata'])['name']) ?? '?';
  return `${o.file}#${o.index} ${String(o.data['kind'])}/${name}`;
}

/** Options of {@link validateK8sDir}. */
export interface K8sValidateOptions {
  /** Expected total shard count (e.g. from the committed Envoy config); checked when given. */
  readonly numShards?: number;
}

/** Validates the kustomization in `dir`; see the module comment. */
export async function validateK8sDir(dir: string, opts: K8sValidateOptions = {}): Promise<K8sReport> {
  const problems: Problem[] = [];
  const report = (path: string, message: string): void => void problems.push({ path, message });
  const objects: LoadedObject[] = [];
  const configMaps = new Map<string, Map<string, string>>();
  const fail = (): K8sReport => ({ problems, objects, configMaps, topology: null });

  // ---- kustomization ----
  const kPath = join(dir, 'kustomization.yaml');
  let k: Obj;
  try {
    const docs = parseAllDocuments(await readFile(kPath, 'utf8'));
    const list = Array.isArray(docs) ? docs : [docs];
    for (const d of list) for (const e of d.errors) report('kustomization.yaml', e.message);
    k = obj(list[0]?.toJS());
  } catch (err) {
    report('kustomization.yaml', `cannot read: ${(err as Error).message}`);
    return fail();
  }
  const checkKeys = (v: unknown, section: string, path: string): void => {
    const allowed = KUSTOMIZATION_FIELDS[section] ?? [];
    for (const key of Object.keys(obj(v))) if (!allowed.includes(key)) report(`kustomization.yaml: ${path}${key}`, `unknown or unsupported kustomization field "${key}"`);
  };
  checkKeys(k, '', '');
  arr(k['labels']).forEach((l, i) => checkKeys(l, 'labels', `labels[${i}].`));
  arr(k['images']).forEach((l, i) => checkKeys(l, 'images', `images[${i}].`));
  arr(k['configMapGenerator']).forEach((g, i) => {
    checkKeys(g, 'configMapGenerator', `configMapGenerator[${i}].`);
    checkKeys(obj(g)['options'], 'configMapGenerator.options', `configMapGenerator[${i}].options.`);
  });
  if (k['apiVersion'] !== 'kustomize.config.k8s.io/v1beta1' || k['kind'] !== 'Kustomization') {
    report('kustomization.yaml', 'must be apiVersion kustomize.config.k8s.io/v1beta1, kind Kustomization');
  }
  const namespace = str(k['namespace']);
  if (namespace === undefined) report('kustomization.yaml', 'namespace is not set');

  const listed = new Set<string>(['kustomization.yaml']);
  const norm = (p: string): string => posix.normalize(p);
  for (const r of arr(k['resources'])) {
    const rel = str(r);
    if (rel === undefined) continue;
    listed.add(norm(rel));
    const text = await readFile(join(dir, rel), 'utf8').catch(() => null);
    if (text === null) {
      report('kustomization.yaml: resources', `${rel} does not exist`);
      continue;
    }
    const docs = parseAllDocuments(text);
    const list = Array.isArray(docs) ? docs : [docs];
    list.forEach((d, i) => {
      for (const e of d.errors) report(`${rel}#${i}`, e.message);
      const data = d.toJS() as unknown;
      if (data === null || data === undefined) return;
      objects.push({ file: rel, index: i, data: obj(data) });
    });
  }
  for (const [gi, g] of arr(k['configMapGenerator']).entries()) {
    const name = str(obj(g)['name']);
    if (name === undefined) {
      report(`kustomization.yaml: configMapGenerator[${gi}]`, 'generator without a name');
      continue;
    }
    const data = new Map<string, string>();
    for (const f of arr(obj(g)['files'])) {
      const spec = str(f) ?? '';
      const eq = spec.indexOf('=');
      const key = eq > 0 ? spec.slice(0, eq) : basename(spec);
      const rel = eq > 0 ? spec.slice(eq + 1) : spec;
      listed.add(norm(rel));
      const text = await readFile(join(dir, rel), 'utf8').catch(() => null);
      if (text === null) {
        report(`kustomization.yaml: configMapGenerator ${name}`, `${rel} does not exist`);
        continue;
      }
      data.set(key, text);
      if (/\.json$/.test(rel)) {
        try {
          JSON.parse(text);
        } catch (err) {
          report(rel, `not valid JSON: ${(err as Error).message}`);
        }
      } else if (/\.ya?ml$/.test(rel)) {
        const docs = parseAllDocuments(text);
        for (const d of Array.isArray(docs) ? docs : [docs]) for (const e of d.errors) report(rel, `not valid YAML: ${e.message}`);
      }
    }
    for (const l of arr(obj(g)['literals'])) {
      const s = str(l) ?? '';
      const eq = s.indexOf('=');
      if (eq > 0) data.set(s.slice(0, eq), s.slice(eq + 1));
    }
    if (configMaps.has(name)) report(`kustomization.yaml: configMapGenerator ${name}`, 'generated twice');
    configMaps.set(name, data);
  }
  const secretTemplates = new Map<string, Set<string>>();
  const files = await listFiles(dir);
  for (const f of files) {
    if (SECRET_TEMPLATE_RE.test(f)) continue;
    if (!listed.has(f)) report(f, 'file is not listed in kustomization.yaml (resources or configMapGenerator)');
  }

  // ---- secret templates: exist by name, hold no values ----
  for (const f of files.filter((x) => SECRET_TEMPLATE_RE.test(x))) {
    const docs = parseAllDocuments(await readFile(join(dir, f), 'utf8'));
    const list = Array.isArray(docs) ? docs : [docs];
    for (const [i, d] of list.entries()) {
      for (const e of d.errors) report(`${f}#${i}`, e.message);
      const s = obj(d.toJS());
      if (s['kind'] !== 'Secret') {
        report(`${f}#${i}`, 'a secret template must be a Secret');
        continue;
      }
      problems.push(...(await validateModel(s, `${f}#${i} Secret`)));
      const keys = new Set<string>();
      for (const field of ['data', 'stringData']) {
        for (const [key, value] of Object.entries(obj(s[field]))) {
          keys.add(key);
          if (value !== '' && value !== null) report(`${f}#${i}: ${field}.${key}`, 'secret templates must not hold values (create the Secret with kubectl)');
        }
      }
      const name = str(obj(s['metadata'])['name']);
      if (name !== undefined) secretTemplates.set(name, keys);
    }
  }

  // ---- each object ----
  const seen = new Map<string, string>();
  for (const o of objects) {
    const where = whereOf(o);
    problems.push(...(await validateModel(o.data, where)));
    const kind = str(o.data['kind']) ?? '?';
    const md = obj(o.data['metadata']);
    const name = str(md['name']) ?? '';
    const id = `${kind}/${name}`;
    const prev = seen.get(id);
    if (prev !== undefined) report(where, `${id} is also defined in ${prev}`);
    seen.set(id, where);
    const ns = str(md['namespace']);
    if (ns !== undefined && namespace !== undefined && ns !== namespace) report(where, `namespace ${ns} differs from the kustomization's ${namespace}`);
    if (kind === 'Secret' && (Object.keys(obj(o.data['data'])).length > 0 || Object.keys(obj(o.data['stringData'])).length > 0)) {
      report(where, 'Secrets with values must not be committed; keep a template under secrets/*.example.yaml');
    }
  }
  if (namespace !== undefined && !objects.some((o) => o.data['kind'] === 'Namespace' && str(obj(o.data['metadata'])['name']) === namespace)) {
    report('kustomization.yaml', `no Namespace object named ${namespace}`);
  }
  for (const [name, data] of configMaps) {
    problems.push(...(await validateModel({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name }, data: Object.fromEntries(data) }, `configMapGenerator ${name}`)));
  }
  const resourceConfigMaps = new Map<string, Set<string>>();
  for (const o of objects) {
    if (o.data['kind'] === 'ConfigMap') resourceConfigMaps.set(str(obj(o.data['metadata'])['name']) ?? '', new Set(Object.keys(obj(o.data['data']))));
  }
  const configMapKeys = (name: string): Set<string> | undefined => {
    const g = configMaps.get(name);
    return g ? new Set(g.keys()) : resourceConfigMaps.get(name);
  };

  // ---- workloads ----
  const workloads: Workload[] = [];
  for (const o of objects) {
    const kind = o.data['kind'];
    if (kind !== 'StatefulSet' && kind !== 'Deployment') continue;
    const spec = obj(o.data['spec']);
    const template = obj(spec['template']);
    const w: Workload = {
      o,
      kind,
      name: str(obj(o.data['metadata'])['name']) ?? '',
      spec,
      podSpec: obj(template['spec']),
      labels: labelsOf(obj(template['metadata'])['labels']),
      where: whereOf(o),
    };
    workloads.push(w);
    const sel = labelsOf(obj(spec['selector'])['matchLabels']);
    if (!selects(sel, w.labels)) report(w.where, `spec.selector.matchLabels ${JSON.stringify(sel)} does not match the pod template labels ${JSON.stringify(w.labels)}`);
  }
  const containersOf = (w: Workload): Obj[] => arr(w.podSpec['containers']).map(obj);
  const portsOf = (c: Obj): { name: string | undefined; port: number | undefined }[] =>
    arr(c['ports']).map((p) => ({ name: str(obj(p)['name']), port: num(obj(p)['containerPort']) }));

  // Services, PDBs
  for (const o of objects) {
    const kind = o.data['kind'];
    const where = whereOf(o);
    if (kind === 'Service') {
      const spec = obj(o.data['spec']);
      const sel = labelsOf(spec['selector']);
      const targets = workloads.filter((w) => selects(sel, w.labels));
      if (targets.length === 0) {
        report(where, `selector ${JSON.stringify(sel)} matches no pod template`);
        continue;
      }
      for (const p of arr(spec['ports']).map(obj)) {
        const tp = p['targetPort'] ?? p['port'];
        for (const w of targets) {
          const ok = containersOf(w).some((c) => portsOf(c).some((cp) => (typeof tp === 'string' ? cp.name === tp : cp.port === tp)));
          if (!ok) report(where, `targetPort ${String(tp)} is not a container port of ${w.kind}/${w.name}`);
        }
      }
    }
    if (kind === 'PodDisruptionBudget') {
      const sel = labelsOf(obj(obj(o.data['spec'])['selector'])['matchLabels']);
      if (!workloads.some((w) => selects(sel, w.labels))) report(where, `selector ${JSON.stringify(sel)} matches no pod template`);
    }
  }

  for (const w of workloads) {
    // StatefulSet -> headless Service that selects it
    const vcts = new Map<string, Obj>();
    if (w.kind === 'StatefulSet') {
      const svcName = str(w.spec['serviceName']);
      const svc = objects.find((o) => o.data['kind'] === 'Service' && str(obj(o.data['metadata'])['name']) === svcName);
      if (!svc) report(w.where, `serviceName ${String(svcName)} is not a Service here`);
      else {
        const spec = obj(svc.data['spec']);
        if (spec['clusterIP'] !== 'None') report(whereOf(svc), `Service ${String(svcName)} of StatefulSet ${w.name} must be headless (clusterIP: None) for per-pod DNS names`);
        if (!selects(labelsOf(spec['selector']), w.labels)) report(whereOf(svc), `Service ${String(svcName)} does not select the pods of StatefulSet ${w.name}`);
      }
      for (const t of arr(w.spec['volumeClaimTemplates']).map(obj)) vcts.set(str(obj(t['metadata'])['name']) ?? '', t);
    }
    const volumes = new Map<string, Obj>();
    for (const v of arr(w.podSpec['volumes']).map(obj)) volumes.set(str(v['name']) ?? '', v);
    for (const [vn, v] of volumes) {
      const cm = obj(v['configMap']);
      if (v['configMap'] !== undefined) {
        const keys = configMapKeys(str(cm['name']) ?? '');
        if (!keys) report(w.where, `volume ${vn}: ConfigMap ${String(cm['name'])} is neither generated nor defined`);
        else for (const it of arr(cm['items']).map(obj)) if (!keys.has(str(it['key']) ?? '')) report(w.where, `volume ${vn}: ConfigMap ${String(cm['name'])} has no key ${String(it['key'])}`);
      }
      if (v['secret'] !== undefined) {
        const sn = str(obj(v['secret'])['secretName']) ?? '';
        if (!secretTemplates.has(sn)) report(w.where, `volume ${vn}: Secret ${sn} has no template under ${SECRET_TEMPLATE_DIR}/`);
      }
      if (vcts.has(vn)) report(w.where, `volume ${vn} shadows the claim template of the same name`);
    }
    const mounted = new Set<string>();
    for (const c of arr(w.podSpec['initContainers']).concat(arr(w.podSpec['containers'])).map(obj)) {
      const cname = str(c['name']) ?? '?';
      const at = `${w.where} container ${cname}`;
      for (const m of arr(c['volumeMounts']).map(obj)) {
        const vn = str(m['name']) ?? '';
        mounted.add(vn);
        if (!volumes.has(vn) && !vcts.has(vn)) report(at, `volumeMount ${vn} names no volume or claim template`);
      }
      for (const e of arr(c['env']).map(obj)) {
        const vf = obj(e['valueFrom']);
        const sk = obj(vf['secretKeyRef']);
        if (vf['secretKeyRef'] !== undefined) {
          const keys = secretTemplates.get(str(sk['name']) ?? '');
          if (!keys) report(at, `env ${String(e['name'])}: Secret ${String(sk['name'])} has no template under ${SECRET_TEMPLATE_DIR}/`);
          else if (!keys.has(str(sk['key']) ?? '')) report(at, `env ${String(e['name'])}: Secret ${String(sk['name'])} has no key ${String(sk['key'])} in its template`);
        }
        const ck = obj(vf['configMapKeyRef']);
        if (vf['configMapKeyRef'] !== undefined && !configMapKeys(str(ck['name']) ?? '')?.has(str(ck['key']) ?? '')) {
          report(at, `env ${String(e['name'])}: ConfigMap key ${String(ck['name'])}/${String(ck['key'])} does not exist`);
        }
      }
      for (const ef of arr(c['envFrom']).map(obj)) {
        const sn = str(obj(ef['secretRef'])['name']);
        if (sn !== undefined && !secretTemplates.has(sn)) report(at, `envFrom: Secret ${sn} has no template under ${SECRET_TEMPLATE_DIR}/`);
        const cn = str(obj(ef['configMapRef'])['name']);
        if (cn !== undefined && !configMapKeys(cn)) report(at, `envFrom: ConfigMap ${cn} does not exist`);
      }
      // probes
      const ports = portsOf(c);
      for (const probeName of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
        const probe = obj(c[probeName]);
        for (const handler of ['httpGet', 'tcpSocket', 'grpc']) {
          if (probe[handler] === undefined) continue;
          const p = obj(probe[handler])['port'];
          const ok = typeof p === 'string' ? ports.some((x) => x.name === p) : ports.some((x) => x.port === p);
          if (!ok) report(at, `${probeName}.${handler}.port ${String(p)} is not a container port`);
        }
      }
      // resources
      const res = obj(c['resources']);
      for (const kindOf of ['cpu', 'memory']) {
        const req = parseQuantity(obj(res['requests'])[kindOf]);
        const lim = parseQuantity(obj(res['limits'])[kindOf]);
        if (req === null) report(at, `resources.requests.${kindOf} is missing`);
        if (lim === null) report(at, `resources.limits.${kindOf} is missing`);
        if (req !== null && lim !== null && req > lim) report(at, `resources.requests.${kindOf} exceeds its limit`);
      }
      if (obj(c['securityContext'])['allowPrivilegeEscalation'] !== false) report(at, 'securityContext.allowPrivilegeEscalation must be false');
    }
    for (const vn of vcts.keys()) if (!mounted.has(vn)) report(w.where, `claim template ${vn} is not mounted`);
    if (obj(w.podSpec['securityContext'])['runAsNonRoot'] !== true) report(w.where, 'pod securityContext.runAsNonRoot must be true');
  }

  // ---- Strata containers ----
  const images = new Set<string>();
  const kImages = arr(k['images']).map((i) => str(obj(i)['name']));
  interface StrataPod {
    w: Workload;
    c: Obj;
    role: 'aggregator' | 'gateway' | 'lifecycle';
    config: AggregatorConfig | GatewayConfig | LifecycleConfig;
  }
  const strataPods: StrataPod[] = [];
  const tmp = await mkdtemp(join(tmpdir(), 'strata-k8s-validate-'));
  try {
    for (const w of workloads) {
      for (const c of containersOf(w)) {
        const image = str(c['image']) ?? '';
        const imageName = image.replace(/[:@].*$/, '');
        if (imageName !== STRATA_IMAGE) continue;
        images.add(image);
        const at = `${w.where} container ${String(c['name'])}`;
        if (!kImages.includes(imageName)) report(at, `image ${imageName} has no images: entry in kustomization.yaml (tag and registry)`);
        const args = arr(c['args']).map((a) => String(a));
        if (c['command'] !== undefined) report(at, 'Strata containers use the image entrypoint (node bin/strata.js); give args only');
        const role = args[0];
        if (role !== 'aggregator' && role !== 'gateway' && role !== 'lifecycle') {
          report(at, `args must start with "aggregator", "gateway" or "lifecycle", got ${JSON.stringify(role)}`);
          continue;
        }
        const envConfigVar = `STRATA_${role.toUpperCase()}_CONFIG`;
        if (w.podSpec['enableServiceLinks'] !== false) report(w.where, `enableServiceLinks must be false: Service variables would land in the STRATA_${role.toUpperCase()}_ namespace of config variables`);
        const parsed = await parseStrataArgs(args, at, report);
        if (!parsed) continue;
        // env as the pod would see it; secret values replaced by placeholders
        const env: Record<string, string> = {};
        for (const e of arr(c['env']).map(obj)) env[str(e['name']) ?? ''] = str(e['value']) ?? 'placeholder-from-secret';
        const mountFile = async (containerPath: string): Promise<string | null> => {
          const text = mountedFileText(containerPath, c, w, configMapKeys, configMaps);
          if (text === null) {
            report(at, `${containerPath} is not a file of a mounted ConfigMap`);
            return null;
          }
          const p = join(tmp, `${w.name}-${basename(containerPath)}`);
          await writeFile(p, text);
          return p;
        };
        const envFile = env[envConfigVar];
        const flags = parsed as Record<string, unknown> & { config?: string };
        if (flags.config !== undefined) {
          const p = await mountFile(flags.config);
          if (p === null) continue;
          flags.config = p;
        } else if (envFile !== undefined) {
          const p = await mountFile(envFile);
          if (p === null) continue;
          env[envConfigVar] = p;
        }
        const podFlags = flags as unknown as Parameters<typeof aggregatorConfigFrom>[0] & Parameters<typeof gatewayConfigFrom>[0];
        let config: AggregatorConfig | GatewayConfig | LifecycleConfig;
        try {
          config =
            role === 'aggregator'
              ? await aggregatorConfigFrom(podFlags, env, `${w.name}-0`)
              : role === 'gateway'
                ? await gatewayConfigFrom(podFlags, env)
                : await lifecycleConfigFrom(podFlags as unknown as Parameters<typeof lifecycleConfigFrom>[0], env);
        } catch (err) {
          report(at, `strata ${role} rejects its config: ${(err as Error).message}`);
          continue;
        }
        if (config.tenantsFile !== undefined) {
          const text = mountedFileText(config.tenantsFile, c, w, configMapKeys, configMaps);
          if (text === null) report(at, `tenantsFile ${config.tenantsFile} is not a file of a mounted ConfigMap`);
          else {
            // secret references: env ones must be set in the pod (placeholders stand in for the
            // values); file ones are not read here
            const fileRefs = (v: unknown): unknown =>
              Array.isArray(v)
                ? v.map(fileRefs)
                : v !== null && typeof v === 'object'
                  ? 'file' in v && Object.keys(v).length === 1
                    ? { env: 'STRATA_K8S_VALIDATE_FILE_REF' }
                    : Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fileRefs(x)]))
                  : v;
            try {
              await parseTenantsConfig(fileRefs(parseYaml(text) as unknown), config.tenantsFile, { ...env, STRATA_K8S_VALIDATE_FILE_REF: 'placeholder-from-file' });
            } catch (err) {
              report(at, `strata ${role} rejects its tenants file: ${(err as Error).message}`);
            }
          }
        }
        strataPods.push({ w, c, role, config });
        if (role === 'lifecycle') checkLifecyclePod(w, c, config as LifecycleConfig, at, report);
        else checkStrataPod(w, c, role, config as AggregatorConfig | GatewayConfig, at, report, opts);
        // every pod's config must be valid (each takes its own ordinal from its name)
        for (let o = 1; role === 'aggregator' && o < (num(w.spec['replicas']) ?? 1); o++) {
          try {
            await aggregatorConfigFrom(podFlags, env, `${w.name}-${o}`);
          } catch (err) {
            report(at, `strata aggregator rejects its config in pod ${w.name}-${o}: ${(err as Error).message}`);
          }
        }
      }
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  if (images.size > 1) report('(strata containers)', `all Strata containers must run the same image, found ${[...images].join(', ')}`);
  const aggs = strataPods.filter((p) => p.role === 'aggregator');
  const gws = strataPods.filter((p) => p.role === 'gateway');
  if (aggs.length !== 1) report('(strata containers)', `expected one aggregator StatefulSet, found ${aggs.length}`);
  if (gws.length !== 1) report('(strata containers)', `expected one gateway StatefulSet, found ${gws.length}`);
  const agg = aggs[0];
  const gw = gws[0];
  if (agg && gw && (JSON.stringify(agg.config.bucket) !== JSON.stringify(gw.config.bucket) || agg.config.tenantsFile !== gw.config.tenantsFile)) {
    report('(strata containers)', 'the aggregators and the gateways must use the same bucket or tenants file');
  }
  // the lifecycle role (optional) deletes what the others write: it must see the same buckets
  const lcs = strataPods.filter((p) => p.role === 'lifecycle');
  if (lcs.length > 1) report('(strata containers)', `expected at most one lifecycle workload (its replicas share a lease), found ${lcs.length}`);
  for (const lc of lcs) {
    if (agg && (JSON.stringify(agg.config.bucket) !== JSON.stringify(lc.config.bucket) || agg.config.tenantsFile !== lc.config.tenantsFile)) {
      report(lc.w.where, 'the lifecycle role must use the same bucket or tenants file as the aggregators and gateways');
    }
  }

  // ---- Envoy ----
  let topology: Topology | null = null;
  const envoys = workloads.flatMap((w) => containersOf(w).filter((c) => (str(c['image']) ?? '').replace(/[:@].*$/, '').endsWith('envoyproxy/envoy')).map((c) => ({ w, c })));
  if (envoys.length !== 1) report('(envoy)', `expected one Envoy container, found ${envoys.length}`);
  if (agg && gw && namespace !== undefined && envoys.length === 1) {
    const { w, c } = envoys[0]!;
    const at = `${w.where} container ${String(c['name'])}`;
    const ports = new Map(portsOf(c).map((p) => [p.name, p.port]));
    const aggCfg = agg.config as AggregatorConfig;
    const gwCfg = gw.config as GatewayConfig;
    topology = {
      namespace,
      clusterDomain: 'cluster.local',
      numShards: aggCfg.numShards,
      aggregator: { name: agg.w.name, service: str(agg.w.spec['serviceName']) ?? '', replicas: num(agg.w.spec['replicas']) ?? 1, grpcPort: portOf(aggCfg.grpcListen) },
      gateway: { name: gw.w.name, service: str(gw.w.spec['serviceName']) ?? '', replicas: num(gw.w.spec['replicas']) ?? 1, grpcPort: portOf(gwCfg.grpcListen) },
      envoy: { writePort: ports.get('grpc-write') ?? -1, readPort: ports.get('grpc-read') ?? -1, adminPort: 9901, statsPort: ports.get('metrics') ?? -1 },
    };
    for (const p of ['grpc-write', 'grpc-read', 'metrics']) if (!ports.has(p)) report(at, `Envoy needs a container port named ${p}`);
    const args = arr(c['args']).map((a) => String(a));
    const ci = args.findIndex((a) => a === '-c' || a === '--config-path');
    const configPath = ci >= 0 ? args[ci + 1] : undefined;
    if (configPath === undefined) report(at, 'Envoy args must give --config-path');
    else {
      const text = mountedFileText(configPath, c, w, configMapKeys, configMaps);
      if (text === null) report(at, `${configPath} is not a file of a mounted ConfigMap`);
      else for (const p of validateEnvoyCached(text, topology)) report(`${at} ${configPath}: ${p.path}`, p.message);
    }
  }
  return { problems, objects, configMaps, topology };
}

const envoyResults = new Map<string, readonly Problem[]>();

/** {@link validateEnvoyYaml}, remembered per (text, topology): it is pure and the config is big. */
function validateEnvoyCached(text: string, topology: Topology): readonly Problem[] {
  const key = `${createHash('sha256').update(text).digest('hex')} ${JSON.stringify(topology)}`;
  let r = envoyResults.get(key);
  if (!r) {
    r = validateEnvoyYaml(text, { topology });
    if (envoyResults.size > 64) envoyResults.clear();
    envoyResults.set(key, r);
  }
  return r;
}

/** The text of `containerPath` from the ConfigMap volume mounted over it, or null. */
function mountedFileText(containerPath: string, c: Obj, w: Workload, configMapKeys: (n: string) => Set<string> | undefined, generated: Map<string, Map<string, string>>): string | null {
  for (const m of arr(c['volumeMounts']).map(obj)) {
    const mp = str(m['mountPath']) ?? '';
    const sub = str(m['subPath']);
    let key: string | undefined;
    if (sub !== undefined && containerPath === mp) key = sub;
    else if (sub === undefined && containerPath.startsWith(`${mp.replace(/\/$/, '')}/`)) key = containerPath.slice(mp.replace(/\/$/, '').length + 1);
    if (key === undefined) continue;
    const vol = arr(w.podSpec['volumes']).map(obj).find((v) => v['name'] === m['name']);
    const cmName = str(obj(vol?.['configMap'])['name']);
    if (cmName === undefined || !configMapKeys(cmName)?.has(key)) return null;
    return generated.get(cmName)?.get(key) ?? null;
  }
  return null;
}

/** Parses a Strata container's args with the real CLI definition; null (and a problem) when rejected. */
async function parseStrataArgs(args: string[], at: string, report: (p: string, m: string) => void): Promise<Record<string, unknown> | null> {
  const program = new Command('strata').exitOverride();
  registerAggregatorCommands(program);
  registerGatewayCommands(program);
  registerLifecycleCommands(program);
  let captured: Record<string, unknown> | null = null;
  let errors = '';
  for (const sub of program.commands) {
    sub.exitOverride();
    sub.configureOutput({ writeErr: (s) => void (errors += s), writeOut: () => undefined });
    sub.action((flags: Record<string, unknown>) => {
      captured = { ...flags };
    });
  }
  program.configureOutput({ writeErr: (s) => void (errors += s), writeOut: () => undefined });
  try {
    await program.parseAsync(args, { from: 'user' });
  } catch (err) {
    report(at, `strata ${args.join(' ')}: ${errors.trim() || (err as Error).message}`);
    return null;
  }
  if (captured === null) report(at, `strata ${args.join(' ')}: no command ran`);
  return captured;
}

function checkStrataPod(w: Workload, c: Obj, role: 'aggregator' | 'gateway', config: AggregatorConfig | GatewayConfig, at: string, report: (p: string, m: string) => void, opts: K8sValidateOptions): void {
  const grpcPort = portOf(config.grpcListen);
  const metricsPort = portOf(config.metricsListen);
  const ports = arr(c['ports']).map(obj);
  const named = (n: string): number | undefined => num(ports.find((p) => p['name'] === n)?.['containerPort']);
  if (named('grpc') !== grpcPort) report(at, `container port "grpc" must be ${grpcPort} (grpcListen), is ${String(named('grpc'))}`);
  if (named('metrics') !== metricsPort) report(at, `container port "metrics" must be ${metricsPort} (metricsListen), is ${String(named('metrics'))}`);
  const service = role === 'aggregator' ? WRITE_SERVICE_NAME : READ_SERVICE_NAME;
  const readiness = obj(obj(c['readinessProbe'])['grpc']);
  if (obj(c['readinessProbe'])['grpc'] === undefined) report(at, 'readinessProbe must be a grpc probe (grpc.health.v1)');
  else {
    if (readiness['port'] !== grpcPort) report(at, `readinessProbe.grpc.port ${String(readiness['port'])} is not the gRPC port ${grpcPort} of the config`);
    if (readiness['service'] !== service) report(at, `readinessProbe.grpc.service must be "${service}", is ${JSON.stringify(readiness['service'])}`);
  }
  const lp = obj(obj(c['livenessProbe'])['httpGet']);
  if (lp['port'] !== undefined && lp['port'] !== 'metrics' && lp['port'] !== metricsPort) report(at, 'livenessProbe.httpGet must target the metrics port (/healthz)');

  const tgp = num(w.podSpec['terminationGracePeriodSeconds']) ?? 30;
  if (tgp * 1000 < config.shutdownGraceMs + 10_000) {
    report(w.where, `terminationGracePeriodSeconds ${tgp} does not cover shutdownGraceMs ${config.shutdownGraceMs} plus 10 s to close the ${role === 'aggregator' ? 'WALs' : 'cache'}`);
  }

  // a data directory on a claim template with room for its budget
  const vcts = new Map(arr(w.spec['volumeClaimTemplates']).map(obj).map((t) => [str(obj(t['metadata'])['name']) ?? '', t]));
  const onClaim = (dirPath: string, what: string, budget: number, key: string, need?: { readonly bytes: number; readonly why: string }): void => {
    const m = arr(c['volumeMounts'])
      .map(obj)
      .find((x) => {
        const mp = (str(x['mountPath']) ?? '').replace(/\/$/, '');
        return dirPath === mp || dirPath.startsWith(`${mp}/`);
      });
    const t = m ? vcts.get(str(m['name']) ?? '') : undefined;
    if (!t) {
      report(at, `${what} ${dirPath} is not on a volumeClaimTemplate (it would be lost with the pod)`);
      return;
    }
    const size = parseQuantity(obj(obj(obj(t['spec'])['resources'])['requests'])['storage']);
    if (size === null) report(w.where, `claim template ${String(m!['name'])} has no storage request`);
    else if (need !== undefined) {
      if (need.bytes > size) report(at, `${key} (${budget} bytes): ${need.why} take ${need.bytes} bytes, more than the ${what} volume (${size} bytes)`);
    } else if (budget > size * 0.9) report(at, `${key} (${budget} bytes) leaves less than 10% of the ${what} volume (${size} bytes) free`);
  };
  if (role === 'aggregator') {
    const a = config as AggregatorConfig;
    onClaim(a.walDir, 'walDir', a.walQuotaBytes, 'walQuotaBytes');
    const replicas = num(w.spec['replicas']) ?? 1;
    if (w.kind !== 'StatefulSet') report(w.where, 'aggregators must run as a StatefulSet (stable names and volumes)');
    if (a.shards !== undefined) report(at, 'aggregators in a StatefulSet take their shards from ordinal + replicas, not a fixed shards list');
    else if (a.replicas !== replicas) report(at, `config replicas ${String(a.replicas)} differs from the StatefulSet's replicas ${replicas}: shards would be owned twice or not at all`);
    if (!arr(c['args']).includes('--ordinal-from-hostname')) report(at, 'aggregators must take their ordinal from the pod name (--ordinal-from-hostname)');
    if (opts.numShards !== undefined && a.numShards !== opts.numShards) report(at, `numShards ${a.numShards} differs from the expected ${opts.numShards}`);
  } else {
    const g = config as GatewayConfig;
    // LMDB keeps freed pages in its file and never shrinks it: the file may grow to the map
    if (g.cacheType === 'lmdb') {
      onClaim(g.cacheDir ?? '', 'cacheDir', g.cacheMaxBytes, 'cacheMaxBytes', {
        bytes: lmdbMapSize(g.cacheMaxBytes) + g.cacheMinFreeBytes,
        why: `the LMDB file at its largest (the map: twice cacheMaxBytes plus 64 MiB) and cacheMinFreeBytes (${g.cacheMinFreeBytes})`,
      });
    }
    if (w.kind !== 'StatefulSet') report(w.where, 'gateways must run as a StatefulSet (stable names for Maglev, cache volumes)');
  }
}

/**
 * The lifecycle role: its metrics port and liveness probe, and its day work directory on a
 * writable volume (the root filesystem is read-only).
 */
function checkLifecyclePod(w: Workload, c: Obj, config: LifecycleConfig, at: string, report: (p: string, m: string) => void): void {
  const metricsPort = portOf(config.metricsListen);
  const ports = arr(c['ports']).map(obj);
  const named = num(ports.find((p) => p['name'] === 'metrics')?.['containerPort']);
  if (named !== metricsPort) report(at, `container port "metrics" must be ${metricsPort} (metricsListen), is ${String(named)}`);
  const lp = obj(obj(c['livenessProbe'])['httpGet']);
  if (lp['port'] === undefined || (lp['port'] !== 'metrics' && lp['port'] !== metricsPort)) report(at, 'livenessProbe.httpGet must target the metrics port (/healthz)');
  if (w.kind !== 'Deployment') report(w.where, 'the lifecycle role runs as a Deployment (no state of its own: the lease and the schedule are in the bucket)');
  if (config.dayBlocks) {
    const dir = config.dayWorkDir;
    const m =
      dir === undefined
        ? undefined
        : arr(c['volumeMounts'])
            .map(obj)
            .find((x) => {
              const mp = (str(x['mountPath']) ?? '').replace(/\/$/, '');
              return dir === mp || dir.startsWith(`${mp}/`);
            });
    const vol = m ? arr(w.podSpec['volumes']).map(obj).find((v) => v['name'] === m['name']) : undefined;
    if (!vol || (vol['emptyDir'] === undefined && vol['persistentVolumeClaim'] === undefined && vol['ephemeral'] === undefined) || m?.['readOnly'] === true) {
      report(at, `dayWorkDir ${String(dir)} must be on a writable emptyDir or claim (a day block of one shard is built there)`);
    }
  }
}
