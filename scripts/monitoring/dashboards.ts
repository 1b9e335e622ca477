/**
 * The Grafana dashboards of the monitoring kit, as data: write path (aggregators), read path
 * (gateways) and a tenant overview. `scripts/gen-dashboards.ts` renders them to
 * monitoring/dashboards/*.json (what ships); test/monitoring/kit.test.ts checks that the committed
 * files are what this renders and that every metric they query is exported by a running Strata.
 *
 * Every panel is a Grafana `timeseries` over the `datasource` variable (any Prometheus); the
 * `instance` (and on the tenant dashboard `tenant`) variables filter the series.
 */

/** One query of a panel. */
interface Query {
  readonly expr: string;
  readonly legend: string;
}

/** A panel: title, unit (Grafana unit id), queries; `w` of 24 columns (default 12). */
interface Panel {
  readonly title: string;
  readonly unit: string;
  readonly queries: readonly Query[];
  readonly description?: string;
  readonly w?: number;
}

/** A dashboard: rows of panels. */
interface Dashboard {
  readonly uid: string;
  readonly title: string;
  readonly description: string;
  /** Variables besides `datasource`: name → the metric whose label values it lists. */
  readonly variables: readonly { readonly name: string; readonly metric: string }[];
  readonly rows: readonly { readonly title: string; readonly panels: readonly Panel[] }[];
}

const q = (expr: string, legend: string): Query => ({ expr, legend });
const RATE = '$__rate_interval';
const I = 'instance=~"$instance"';
const T = 'tenant=~"$tenant"';
/** Which versions and commits run (strata_build_info). */
const BUILDS_PANEL: Panel = { title: 'Running builds', unit: 'short', queries: [q(`count by (version, commit) (strata_build_info{${I}})`, '{{version}} {{commit}}')] };
/** A panel of the summed rates of several counters, one query each: [metric, legend]. */
const ratesPanel = (title: string, unit: string, counters: readonly (readonly [string, string])[]): Panel => ({ title, unit, queries: counters.map(([m, legend]) => q(sumRate(m), legend)) });
/** `sum [by (labels)] (rate(metric{filter}[$__rate_interval]))`. */
const sumRate = (metric: string, by = '', filter = I): string => `sum ${by ? `by (${by}) ` : ''}(rate(${metric}{${filter}}[${RATE}]))`;

const writePath: Dashboard = {
  uid: 'strata-write-path',
  title: 'Strata / Write path',
  description: 'Shard aggregators: ingest, WAL, flushes and uploads.',
  variables: [{ name: 'instance', metric: 'strata_aggregator_requests_total' }],
  rows: [
    {
      title: 'Ingest',
      panels: [
        { title: 'Samples acknowledged /s', unit: 'short', queries: [q(sumRate('strata_aggregator_samples_ingested_total', 'instance'), '{{instance}}')] },
        { title: 'Payload bytes acknowledged /s', unit: 'Bps', queries: [q(sumRate('strata_aggregator_bytes_ingested_total', 'instance'), '{{instance}}')] },
        { title: 'Write calls /s by method and code', unit: 'reqps', queries: [q(sumRate('strata_aggregator_requests_total', 'method, code'), '{{method}} {{code}}')] },
        {
          title: 'Call latency',
          unit: 's',
          queries: [
            q(`histogram_quantile(0.5, sum by (method, le) (rate(strata_aggregator_request_duration_seconds_bucket{${I}}[${RATE}])))`, 'p50 {{method}}'),
            q(`histogram_quantile(0.99, sum by (method, le) (rate(strata_aggregator_request_duration_seconds_bucket{${I}}[${RATE}])))`, 'p99 {{method}}'),
          ],
        },
        { title: 'Payload bytes in flight', unit: 'bytes', queries: [q(`strata_aggregator_inflight_bytes{${I}}`, '{{instance}}')] },
      ],
    },
    {
      title: 'WAL',
      panels: [
        {
          title: 'WAL on disk and its quota',
          unit: 'bytes',
          description: 'Writes are refused (RESOURCE_EXHAUSTED) when the WALs reach walQuotaBytes.',
          queries: [q(`strata_aggregator_wal_disk_bytes{${I}}`, 'on disk {{instance}}'), q(`strata_aggregator_wal_quota_bytes{${I}}`, 'quota {{instance}}'), q(`strata_aggregator_wal_bytes{${I}}`, 'run bytes {{instance}}')],
        },
        { title: 'Windows not yet flushed', unit: 'short', queries: [q(`strata_aggregator_open_windows{${I}}`, '{{instance}}')] },
        {
          title: 'Group commit: fsync latency p99 and requests per fsync',
          unit: 's',
          queries: [
            q(`histogram_quantile(0.99, sum by (instance, le) (rate(strata_aggregator_wal_sync_duration_seconds_bucket{${I}}[${RATE}])))`, 'fsync p99 {{instance}}'),
            q(`sum by (instance) (rate(strata_aggregator_wal_group_requests_sum{${I}}[${RATE}])) / sum by (instance) (rate(strata_aggregator_wal_group_requests_count{${I}}[${RATE}]))`, 'requests per fsync {{instance}}'),
          ],
        },
        { title: 'fsyncs /s', unit: 'ops', queries: [q(sumRate('strata_aggregator_wal_syncs_total', 'instance'), '{{instance}}')] },
      ],
    },
    {
      title: 'Flushes and uploads',
      panels: [
        { title: 'Flushes by result', unit: 'short', queries: [q(`sum by (result) (increase(strata_aggregator_flushes_total{${I}}[${RATE}]))`, '{{result}}')] },
        { title: 'Failed flushes by reason', unit: 'short', queries: [q(`sum by (reason) (increase(strata_aggregator_flush_errors_total{${I}}[${RATE}]))`, '{{reason}}')] },
        { title: 'Flush duration p99', unit: 's', queries: [q(`histogram_quantile(0.99, sum by (le) (rate(strata_aggregator_flush_duration_seconds_bucket{${I}}[${RATE}])))`, 'p99')] },
        ratesPanel('Uploaded blocks: bytes, samples and series /s', 'short', [['strata_aggregator_flush_bytes_total', 'bytes'], ['strata_aggregator_flush_samples_total', 'samples'], ['strata_aggregator_flush_series_total', 'series']]),
        {
          title: 'Object store retries and failures /s',
          unit: 'ops',
          queries: [
            q(sumRate('strata_bucket_s3_retries_total', 'operation'), 'retry {{operation}}'),
            q(sumRate('strata_bucket_operation_failures_total', 'operation', `${I}, code!="ERR_STRATA_NOT_FOUND"`), 'failed {{operation}}'),
          ],
        },
        BUILDS_PANEL,
      ],
    },
  ],
};

const readPath: Dashboard = {
  uid: 'strata-read-path',
  title: 'Strata / Read path',
  description: 'Storage gateways: reads, caches and the bucket behind them.',
  variables: [{ name: 'instance', metric: 'strata_gateway_requests_total' }],
  rows: [
    {
      title: 'Reads',
      panels: [
        { title: 'Block reads /s by code', unit: 'reqps', queries: [q(sumRate('strata_gateway_requests_total', 'code'), '{{code}}')] },
        {
          title: 'Block read latency',
          unit: 's',
          queries: [
            q(`histogram_quantile(0.5, sum by (le) (rate(strata_gateway_request_duration_seconds_bucket{${I}}[${RATE}])))`, 'p50'),
            q(`histogram_quantile(0.99, sum by (le) (rate(strata_gateway_request_duration_seconds_bucket{${I}}[${RATE}])))`, 'p99'),
          ],
        },
        {
          title: 'Samples and series served /s',
          unit: 'short',
          queries: [q(sumRate('strata_gateway_samples_served_total'), 'samples'), q(sumRate('strata_gateway_series_served_total'), 'series')],
        },
        { title: 'Payload bytes served /s by encoding', unit: 'Bps', queries: [q(sumRate('strata_gateway_bytes_served_total', 'encoding'), '{{encoding}}')] },
        { title: 'Answers held for slow clients', unit: 'bytes', queries: [q(`strata_gateway_bytes_in_flight{${I}}`, '{{instance}}')] },
        ratesPanel('Windows without a block, stale serves /s', 'ops', [['strata_gateway_blocks_missing_total', 'no block'], ['strata_gateway_negative_cache_hits_total', 'no block (negative cache)'], ['strata_gateway_stale_serves_total', 'stale serves']]),
      ],
    },
    {
      title: 'Caches',
      panels: [
        {
          title: 'Hit ratio by layer',
          unit: 'percentunit',
          queries: [
            q(
              `sum by (layer) (rate(strata_gateway_cache_hits_total{${I}}[${RATE}])) / (sum by (layer) (rate(strata_gateway_cache_hits_total{${I}}[${RATE}])) + sum by (layer) (rate(strata_gateway_cache_misses_total{${I}}[${RATE}])))`,
              '{{layer}}',
            ),
          ],
        },
        { title: 'Byte cache size', unit: 'bytes', queries: [q(`strata_gateway_cache_bytes{${I}}`, '{{instance}}')] },
        { title: 'Blocks in the byte cache', unit: 'short', queries: [q(`strata_gateway_cache_blocks{${I}}`, '{{instance}}')] },
        ratesPanel('Evictions and damaged entries /s', 'short', [['strata_gateway_cache_evicted_bytes_total', 'evicted bytes'], ['strata_gateway_cache_evictions_total', 'evicted blocks'], ['strata_gateway_cache_corrupt_total', 'damaged entries']]),
      ],
    },
    {
      title: 'Bucket',
      panels: [
        { title: 'GETs /s by kind', unit: 'ops', queries: [q(sumRate('strata_gateway_s3_gets_total', 'kind'), '{{kind}}')] },
        { title: 'GET bytes /s by kind', unit: 'Bps', queries: [q(sumRate('strata_gateway_s3_get_bytes_total', 'kind'), '{{kind}}')] },
        { title: 'Failed GETs /s by code', unit: 'ops', queries: [q(sumRate('strata_gateway_s3_get_errors_total', 'code'), '{{code}}')] },
        { title: 'S3 attempts /s by outcome', unit: 'ops', queries: [q(sumRate('strata_bucket_s3_requests_total', 'operation, outcome'), '{{operation}} {{outcome}}')] },
        {
          title: 'GETs saved /s',
          unit: 'ops',
          queries: [q(sumRate('strata_gateway_coalesced_ranges_total'), 'ranges sharing a GET'), q(sumRate('strata_gateway_single_flight_joins_total'), 'misses joining a fetch')],
        },
        BUILDS_PANEL,
      ],
    },
  ],
};

const tenants: Dashboard = {
  uid: 'strata-tenants',
  title: 'Strata / Tenants',
  description: 'Per tenant: what it writes, what is uploaded for it, what it reads. Tenants of the tenants file by id, all others as _other.',
  variables: [{ name: 'tenant', metric: 'strata_aggregator_samples_ingested_total' }],
  rows: [
    {
      title: 'Writes',
      panels: [
        { title: 'Samples acknowledged /s', unit: 'short', queries: [q(sumRate('strata_aggregator_samples_ingested_total', 'tenant', T), '{{tenant}}')] },
        { title: 'Payload bytes acknowledged /s', unit: 'Bps', queries: [q(sumRate('strata_aggregator_bytes_ingested_total', 'tenant', T), '{{tenant}}')] },
        { title: 'Uploaded block bytes /s', unit: 'Bps', queries: [q(sumRate('strata_aggregator_flush_bytes_total', 'tenant', T), '{{tenant}}')] },
        {
          title: 'Bytes per sample in blocks',
          unit: 'short',
          queries: [q(`sum by (tenant) (rate(strata_aggregator_flush_bytes_total{${T}}[1h])) / sum by (tenant) (rate(strata_aggregator_flush_samples_total{${T}}[1h]))`, '{{tenant}}')],
        },
        { title: 'Failed flushes by reason', unit: 'short', queries: [q(`sum by (tenant, reason) (increase(strata_aggregator_flush_errors_total{${T}}[${RATE}]))`, '{{tenant}} {{reason}}')] },
      ],
    },
    {
      title: 'Reads',
      panels: [
        { title: 'Block reads /s by code', unit: 'reqps', queries: [q(sumRate('strata_gateway_tenant_requests_total', 'tenant, code', T), '{{tenant}} {{code}}')] },
        { title: 'Samples served /s', unit: 'short', queries: [q(sumRate('strata_gateway_tenant_samples_served_total', 'tenant', T), '{{tenant}}')] },
        {
          title: 'Refused reads /s (limits, auth)',
          unit: 'reqps',
          queries: [q(`sum by (tenant, code) (rate(strata_gateway_tenant_requests_total{${T}, code=~"RESOURCE_EXHAUSTED|UNAUTHENTICATED|PERMISSION_DENIED"}[${RATE}]))`, '{{tenant}} {{code}}')],
        },
        {
          title: 'Tenants file reloads',
          unit: 'short',
          queries: [
            q(`sum by (result) (increase(strata_aggregator_tenants_reloads_total[${RATE}]))`, 'aggregators {{result}}'),
            q(`sum by (result) (increase(strata_gateway_tenant_reloads_total[${RATE}]))`, 'gateways {{result}}'),
          ],
        },
      ],
    },
  ],
};

/** Every dashboard of the kit, by file name under monitoring/dashboards/. */
export const DASHBOARDS: Readonly<Record<string, Dashboard>> = {
  'strata-write-path.json': writePath,
  'strata-read-path.json': readPath,
  'strata-tenants.json': tenants,
};

const DS = { type: 'prometheus', uid: '${datasource}' };

/** The Grafana JSON model of `d` (schemaVersion 39, Grafana 10/11). */
export function renderDashboard(d: Dashboard): Record<string, unknown> {
  const panels: Record<string, unknown>[] = [];
  let id = 1;
  let y = 0;
  for (const row of d.rows) {
    panels.push({ type: 'row', id: id++, title: row.title, collapsed: false, gridPos: { h: 1, w: 24, x: 0, y }, panels: [] });
    y += 1;
    let x = 0;
    for (const p of row.panels) {
      const w = p.w ?? 12;
      if (x + w > 24) {
        x = 0;
        y += 8;
      }
      panels.push({
        type: 'timeseries',
        id: id++,
        title: p.title,
        ...(p.description !== undefined ? { description: p.description } : {}),
        datasource: DS,
        gridPos: { h: 8, w, x, y },
        fieldConfig: { defaults: { unit: p.unit }, overrides: [] },
        options: { legend: { displayMode: 'list', placement: 'bottom', showLegend: true }, tooltip: { mode: 'multi', sort: 'desc' } },
        targets: p.queries.map((t, i) => ({ datasource: DS, expr: t.expr, legendFormat: t.legend, refId: String.fromCharCode(65 + i) })),
      });
      x += w;
    }
    y += 8;
  }
  return {
    uid: d.uid,
    title: d.title,
    description: d.description,
    tags: ['strata'],
    editable: true,
    schemaVersion: 39,
    timezone: 'utc',
    time: { from: 'now-6h', to: 'now' },
    refresh: '30s',
    templating: {
      list: [
        { name: 'datasource', label: 'Data source', type: 'datasource', query: 'prometheus', current: {}, hide: 0 },
        ...d.variables.map((v) => ({
          name: v.name,
          label: v.name,
          type: 'query',
          datasource: DS,
          query: { query: `label_values(${v.metric}, ${v.name})`, refId: 'StandardVariableQuery' },
          definition: `label_values(${v.metric}, ${v.name})`,
          includeAll: true,
          allValue: '.*',
          multi: true,
          current: {},
          refresh: 2,
          sort: 1,
          hide: 0,
        })),
      ],
    },
    annotations: { list: [] },
    panels,
  };
}

/** The file text of dashboard `d`. */
export function dashboardJson(d: Dashboard): string {
  return `${JSON.stringify(renderDashboard(d), null, 2)}\n`;
}
