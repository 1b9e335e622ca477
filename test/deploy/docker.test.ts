/**
 * Dockerfile and .dockerignore, checked statically (there is no Docker daemon in CI): multi-stage,
 * numeric non-root user that matches the pods' runAsUser, production install from the lock,
 * COPY sources present and not ignored, the CLI as exec-form entrypoint, the services' ports
 * exposed; and each deliberate breakage is reported.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { parseAllDocuments } from 'yaml';
import { dockerIgnored, parseDockerfile, validateDockerfile } from '../../scripts/deploy/docker-validate.js';
import { formatProblems } from '../../scripts/deploy/proto-check.js';
import { AGGREGATOR_GRPC_PORT, GATEWAY_GRPC_PORT } from '../../scripts/deploy/topology.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const ignore = readFileSync(join(ROOT, '.dockerignore'), 'utf8');

t.test('the Dockerfile passes the static checks', (t) => {
  t.equal(formatProblems(validateDockerfile(dockerfile, ignore, ROOT)), '');
  t.end();
});

t.test('the image user is the runAsUser of the Strata pods, and the gRPC ports are exposed', (t) => {
  const ins = parseDockerfile(dockerfile);
  const user = ins.filter((i) => i.op === 'USER').at(-1)!.args.split(':')[0];
  for (const file of ['aggregator.yaml', 'gateway.yaml']) {
    const docs = parseAllDocuments(readFileSync(join(ROOT, 'k8s', file), 'utf8')) as unknown as { toJS(): Record<string, any> }[]; // eslint-disable-line @typescript-eslint/no-explicit-any
    const sts = docs.map((d) => d.toJS()).find((o) => o['kind'] === 'StatefulSet');
    t.equal(String(sts?.['spec'].template.spec.securityContext.runAsUser), user, `${file} runs as the image's user`);
  }
  const exposed = ins.filter((i) => i.op === 'EXPOSE').flatMap((i) => i.args.split(/\s+/).map(Number));
  t.ok(exposed.includes(AGGREGATOR_GRPC_PORT) && exposed.includes(GATEWAY_GRPC_PORT), `EXPOSE ${exposed.join(' ')}`);
  const bin = readFileSync(join(ROOT, 'bin', 'strata.js'), 'utf8');
  t.match(bin, /\.\.\/dist\/src\/cli\/main\.js/, 'bin/strata.js runs the compiled CLI the build stage produces (dist/src)');
  t.end();
});

t.test('.dockerignore patterns', (t) => {
  t.ok(dockerIgnored('node_modules', ignore));
  t.ok(dockerIgnored('test/deploy/docker.test.ts', ignore));
  t.ok(dockerIgnored('README.md', ignore));
  t.notOk(dockerIgnored('src/cli/main.ts', ignore));
  t.notOk(dockerIgnored('package-lock.json', ignore));
  t.end();
});

t.test('each deliberate breakage of the Dockerfile is reported', (t) => {
  const cases: [string, (s: string) => string, RegExp][] = [
    ['single stage', (s) => s.replace(/FROM \$\{NODE_IMAGE\} AS build[\s\S]*?(?=FROM \$\{NODE_IMAGE\}\nENV)/, ''), /multi-stage/],
    ['no USER', (s) => s.replace(/^USER .*$/m, ''), /must set USER to a non-root user/],
    ['root USER', (s) => s.replace(/^USER .*$/m, 'USER 0'), /must not be root/],
    ['named USER', (s) => s.replace(/^USER .*$/m, 'USER node'), /numeric UID/],
    ['npm ci', (s) => s.replace('npm install --omit=dev', 'npm ci --omit=dev'), /not `npm ci`[\s\S]*npm install --omit=dev/],
    ['COPY of a missing path', (s) => s.replace('COPY proto ./proto', 'COPY protos ./proto'), /COPY source protos does not exist/],
    ['COPY of an ignored path', (s) => s.replace('COPY bin ./bin', 'COPY bin ./bin\nCOPY test ./test'), /COPY source test is excluded by \.dockerignore/],
    ['shell-form ENTRYPOINT', (s) => s.replace('ENTRYPOINT ["node", "bin/strata.js"]', 'ENTRYPOINT node bin/strata.js'), /exec form/],
  ];
  for (const [name, edit, expect] of cases) {
    const broken = edit(dockerfile);
    t.not(broken, dockerfile, `${name}: the edit applies`);
    t.match(formatProblems(validateDockerfile(broken, ignore, ROOT)), expect, name);
  }
  t.match(formatProblems(validateDockerfile(dockerfile, ignore.replace(/^node_modules$/m, ''), ROOT)), /node_modules must be excluded/, '.dockerignore without node_modules');
  t.end();
});
