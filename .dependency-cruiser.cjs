/**
 * The layering rules of ../shared/STYLE.md, checked on every `npm test`
 * (test/layering.test.ts; by hand: `npm run check:layers`).
 *
 *   api                  the wire protocol: a leaf (only errors.ts besides itself)
 *   format, index        pure: bytes in, bytes out; no I/O, no Node core modules, no other layer
 *   block, objstore, tenancy, common
 *                        shared parts; they never import a service, the client or the CLI
 *   shard-aggregator, storage-gateway, lifecycle
 *                        the service roles; they never import each other, the client or the CLI
 *   client               the query and write clients; they import no service
 *   cli                  composes everything
 */
const SERVICES = ['shard-aggregator', 'storage-gateway', 'lifecycle'];

/** One rule per service: it imports no other service. */
const servicesIndependent = SERVICES.map((s) => ({
  name: `service-${s}-independent`,
  comment: `${s} imports no other service (services talk over the wire or through the bucket)`,
  severity: 'error',
  from: { path: `^src/${s}/` },
  to: { path: `^src/(${SERVICES.filter((o) => o !== s).join('|')})/` },
}));

module.exports = {
  forbidden: [
    {
      name: 'api-is-a-leaf',
      comment: 'src/api/ is the wire protocol shared by clients and services: it imports only errors.ts',
      severity: 'error',
      from: { path: '^src/api/' },
      to: { path: '^src/', pathNot: ['^src/api/', '^src/errors\\.ts$'] },
    },
    {
      name: 'format-index-pure',
      comment: 'src/format/ and src/index/ are pure: they import only each other and errors.ts',
      severity: 'error',
      from: { path: '^src/(format|index)/' },
      to: { path: '^src/', pathNot: ['^src/(format|index)/', '^src/errors\\.ts$'] },
    },
    {
      name: 'format-index-no-io',
      comment: 'src/format/ and src/index/ do no I/O: no Node core module',
      severity: 'error',
      from: { path: '^src/(format|index)/' },
      to: { dependencyTypes: ['core'] },
    },
    ...servicesIndependent,
    {
      name: 'no-client-in-services',
      comment: 'nothing but the CLI imports a client: services and shared parts never do',
      severity: 'error',
      from: { path: '^src/', pathNot: ['^src/client/', '^src/cli/'] },
      to: { path: '^src/client/' },
    },
    {
      name: 'shared-parts-import-no-service',
      comment: 'api, format, index, block, objstore, tenancy, common and client import no service role',
      severity: 'error',
      from: { path: '^src/(api|format|index|block|objstore|tenancy|common|client)/' },
      to: { path: `^src/(${SERVICES.join('|')})/` },
    },
    {
      name: 'no-cli-below',
      comment: 'only the CLI imports the CLI',
      severity: 'error',
      from: { path: '^src/', pathNot: '^src/cli/' },
      to: { path: '^src/cli/' },
    },
    {
      name: 'src-imports-no-tests-or-benches',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|bench|scripts)/' },
    },
    {
      name: 'not-to-unresolvable',
      comment: 'every import resolves (a typo or a moved file)',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      conditionNames: ['import', 'require', 'node', 'default'],
    },
  },
};
