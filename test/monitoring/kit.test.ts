/**
 * The monitoring kit (monitoring/): the rules pass `promtool check rules` and their unit tests
 * (`promtool test rules`), the committed dashboards are what scripts/monitoring/dashboards.ts
 * renders, every alert links to a section of docs/runbook.md that exists, and every metric a
 * dashboard or rule queries is exported by a running aggregator, gateway and lifecycle role (or
 * recorded by a rule of the kit).
 *
 * Needs promtool (Debian: apt-get install prometheus; .ci/run installs it when missing).
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { createLogger } from '../../src/common/logger.js';
import { buildInfo } from '../../src/common/version.js';
import { parseAggregatorConfig } from '../../src/shard-aggregator/config.js';
import { startAggregatorServer } from '../../src/shard-aggregator/server.js';
import { parseGatewayConfig } from '../../src/storage-gateway/config.js';
import { startGateway } from '../../src/storage-gateway/gateway.js';
import { parseLifecycleConfig } from '../../src/lifecycle/config.js';
import { startLifecycle } from '../../src/lifecycle/service.js';
import { DASHBOARDS, dashboardJson } from '../../scripts/monitoring/dashboards.js';
import { scrape } from '../support/tenancy.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const KIT = join(ROOT, 'monitoring');
const RULE_FILES = readdirSync(join(KIT, 'rules')).filter((f) => f.endsWith('.yaml')).map((f) => join(KIT, 'rules', f));

interface Rule {
  readonly record?: string;
  readonly alert?: string;
  readonly expr: string;
  readonly annotations?: Record<string, string>;
}
const rulesOf = (f: string): Rule[] => (parse(readFileSync(f, 'utf8')) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);
const rules: Rule[] = RULE_FILES.flatMap(rulesOf);
const TEST_FILES = readdirSync(join(KIT, 'tests')).filter((f) => f.endsWith('.test.yaml')).map((f) => join(KIT, 'tests', f));

async function promtool(...args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await promisify(execFile)('promtool', args, { cwd: ROOT });
    return stdout + stderr;
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stdout?: string; stderr?: string };
    if (e.code === 'ENOENT') throw new Error('promtool is not installed: apt-get install prometheus (.ci/run does it when missing)');
    throw new Error(`promtool ${args.join(' ')} failed:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
}

/** Metric names a PromQL expression reads: `strata_*` names and recorded `level:metric:op` names. */
function metricsOf(expr: string): string[] {
  const bare = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""'); // label values are not names
  return [...new Set([...bare.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)].map((m) => m[0]).filter((n) => n.startsWith('strata_') || n.includes(':')))];
}

/** Every PromQL expression of the kit, with where it is. */
function kitExpressions(): { where: string; expr: string }[] {
  const out = rules.map((r) => ({ where: `rule ${r.record ?? r.alert}`, expr: r.expr }));
  for (const [file, d] of Object.entries(DASHBOARDS)) {
    const json = JSON.parse(dashboardJson(d)) as { panels: { title: string; targets?: { expr: string }[] }[]; templating: { list: { definition?: string }[] } };
    for (const p of json.panels) for (const target of p.targets ?? []) out.push({ where: `${file}: ${p.title}`, expr: target.expr });
    for (const v of json.templating.list) if (v.definition !== undefined) out.push({ where: `${file}: variable`, expr: v.definition });
  }
  return out;
}

/** GitHub's anchor of a Markdown heading. */
function anchorOf(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\w\- ]/g, '')
    .replace(/ /g, '-');
}

t.test('promtool check rules and promtool test rules pass', async (t) => {
  const checked = await promtool('check', 'rules', ...RULE_FILES);
  t.match(checked, /SUCCESS: 11 rules found/, 'the alerting rules');
  t.match(checked, /SUCCESS: 14 rules found/, 'the recording rules');
  t.match(checked, /strata-lifecycle\.rules\.yaml\n\s+SUCCESS: 5 rules found/, 'the lifecycle role\'s alerting rules');
  const tested = await promtool('test', 'rules', join(KIT, 'tests', 'strata-alerts.test.yaml'));
  t.match(tested, /SUCCESS/);
  const testedAll = await promtool('test', 'rules', ...TEST_FILES);
  t.notMatch(testedAll, /FAILED/, 'every test file passes');
  t.equal(TEST_FILES.length, 2);
  // every alert has a unit test
  const tests = TEST_FILES.map((f) => readFileSync(f, 'utf8')).join('\n');
  for (const r of rules) if (r.alert !== undefined) t.match(tests, new RegExp(`alertname: ${r.alert}\\n`), `${r.alert} is tested`);
});

t.test('the committed dashboards are what the generator renders', (t) => {
  for (const [file, d] of Object.entries(DASHBOARDS)) t.equal(readFileSync(join(KIT, 'dashboards', file), 'utf8'), dashboardJson(d), file);
  t.end();
});

t.test('every alert links to a section of docs/runbook.md', (t) => {
  const runbook = readFileSync(join(ROOT, 'docs', 'runbook.md'), 'utf8');
  const anchors = new Set([...runbook.matchAll(/^#{2,3} (.+)$/gm)].map((m) => anchorOf(m[1]!)));
  const alerts = rules.filter((r) => r.alert !== undefined);
  t.equal(rulesOf(join(KIT, 'rules', 'strata-alerts.rules.yaml')).filter((r) => r.alert !== undefined).length, 11);
  t.equal(rulesOf(join(KIT, 'rules', 'strata-lifecycle.rules.yaml')).filter((r) => r.alert !== undefined).length, 5);
  t.equal(alerts.length, 16);
  for (const r of alerts) {
    const url = r.annotations?.['runbook_url'] ?? '';
    const m = /^docs\/runbook\.md#([a-z0-9-]+)$/.exec(url);
    t.ok(m, `${r.alert}: runbook_url ${url} points into docs/runbook.md`);
    t.ok(m && anchors.has(m[1]!), `${r.alert}: section #${m?.[1]} exists`);
    t.ok(r.annotations?.['summary'], `${r.alert}: has a summary`);
  }
  t.end();
});

t.test('every metric the dashboards and rules use is exported by a running aggregator, gateway and lifecycle role', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'strata-kit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const bucket = { type: 'filesystem', path: join(dir, 'bucket') };
  const logger = createLogger({ level: 'silent' });
  const aggregator = await startAggregatorServer({
    config: parseAggregatorConfig({ walDir: join(dir, 'wal'), bucket, numShards: 1, grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0' }),
    logger,
  });
  t.teardown(() => aggregator.shutdown());
  await aggregator.ready;
  const gateway = await startGateway({
    config: parseGatewayConfig({ bucket, cacheType: 'memory', grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0' }),
    logger,
  });
  t.teardown(() => gateway.shutdown());
  const lifecycle = await startLifecycle({
    config: parseLifecycleConfig({ bucket, metricsListen: '127.0.0.1:0', logLevel: 'silent', dayWorkDir: join(dir, 'day-work') }),
    logger,
    timer: false,
  });
  t.teardown(() => lifecycle.shutdown());

  // a metric is exported when /metrics declares its type (labelled counters show no sample before their first event)
  const exported = new Map<string, string>();
  const texts = [await scrape(aggregator.metricsPort), await scrape(gateway.metricsPort), await scrape(lifecycle.metricsPort)];
  for (const text of texts) for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) exported.set(m[1]!, m[2]!);
  const { version, commit } = buildInfo();
  for (const text of texts) t.match(text, `\nstrata_build_info{version="${version}",commit="${commit}"} 1\n`, 'strata_build_info on /metrics');

  const recorded = new Set(rules.flatMap((r) => (r.record !== undefined ? [r.record] : [])));
  const used = new Set<string>();
  const missing: string[] = [];
  for (const { where, expr } of kitExpressions()) {
    for (const name of metricsOf(expr)) {
      used.add(name);
      if (name.includes(':')) {
        if (!recorded.has(name)) missing.push(`${where}: ${name} is recorded by no rule`);
        continue;
      }
      const histogram = /^(.*)_(bucket|sum|count)$/.exec(name);
      const ok = exported.has(name) || (histogram !== null && exported.get(histogram[1]!) === 'histogram');
      if (!ok) missing.push(`${where}: ${name} is not exported`);
    }
  }
  t.same(missing, [], 'every name is exported or recorded');
  t.ok(used.size > 50, `${used.size} names checked`);
  for (const name of ['strata_aggregator_wal_disk_bytes', 'strata_aggregator_wal_disk_free_bytes', 'strata_aggregator_flush_errors_total', 'strata_gateway_cache_hits_total', 'strata_gateway_requests_total', 'strata_build_info', 'strata_lifecycle_lease_held', 'strata_lifecycle_day_merges_total']) {
    t.ok(used.has(name), `the kit uses ${name}`);
  }
});
