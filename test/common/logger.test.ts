/**
 * What libraries print reaches the log as JSON lines (src/common/logger.ts, routeLibraryOutput),
 * in a child process set up as the services set themselves up: console.error at error level, and
 * Node's process warnings (the AWS SDK's Node-version notice among them) at warn level, once, not
 * printed on stderr by Node's own handler.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';

const logger = pathToFileURL(join(import.meta.dirname, '..', '..', 'src', 'common', 'logger.ts')).href;

function run(code: string, env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: join(import.meta.dirname, '..', '..'), env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (c) => resolve({ code: c, stdout, stderr }));
  });
}

t.test('process warnings are logged at warn level and console.error at error level, as JSON lines naming the library', async (t) => {
  const r = await run(`
    const { createLogger, routeLibraryOutput } = await import(${JSON.stringify(logger)});
    const log = createLogger({ name: 'test' });
    routeLibraryOutput(log);
    process.emitWarning('NodeVersionSupportWarning: The AWS SDK for JavaScript (v3) will require node >=22.');
    console.error('a library error');
    await new Promise((r) => setImmediate(r));
  `);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr, '', 'nothing printed by Node itself');
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  // Node emits a warning on the next tick: after the console.error line
  t.same(
    lines.map((l) => [l['level'], l['from'], l['warning'], l['msg']]),
    [
      ['error', 'library', undefined, 'a library error'],
      ['warn', 'library', 'Warning', 'NodeVersionSupportWarning: The AWS SDK for JavaScript (v3) will require node >=22.'],
    ],
  );
});

t.test('with NODE_NO_WARNINGS=1 process warnings stay unlogged, as Node leaves them', async (t) => {
  const r = await run(
    `
    const { createLogger, routeLibraryOutput } = await import(${JSON.stringify(logger)});
    routeLibraryOutput(createLogger({ name: 'test' }));
    process.emitWarning('a warning nobody wants');
    await new Promise((r) => setImmediate(r));
  `,
    { NODE_NO_WARNINGS: '1' },
  );
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, '', 'no line');
  t.equal(r.stderr, '');
});
