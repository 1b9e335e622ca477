/**
 * exitOnSignals in a real child process: a shutdown that never ends is cut short by a second
 * signal (exit 1 at once) or by its hard limit (exit 1), and each says why in the log; a shutdown
 * that ends exits 0.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** A child that installs exitOnSignals with `shutdown` (JS source of an async function) and says "ready". */
function child(shutdown: string, hardLimitMs?: number) {
  const src = `
    import { createLogger } from ${JSON.stringify(join(ROOT, 'src', 'common', 'logger.ts'))};
    import { exitOnSignals } from ${JSON.stringify(join(ROOT, 'src', 'common', 'signals.ts'))};
    exitOnSignals(createLogger({ level: 'info' }), ${shutdown}, ${hardLimitMs === undefined ? '{}' : `{ hardLimitMs: ${hardLimitMs} }`});
    setInterval(() => undefined, 1000);
    process.stdout.write('ready\\n');
  `;
  const p = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', src], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  p.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const ready = new Promise<void>((resolve) => {
    const check = (): void => {
      if (out.includes('ready\n')) resolve();
      else p.stdout.once('data', check);
    };
    check();
  });
  const exited = once(p, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const logs = (): Record<string, unknown>[] =>
    out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { p, ready, exited, logs };
}

t.test('a second signal exits at once when the shutdown does not end', async (t) => {
  const c = child('() => new Promise(() => undefined)');
  t.teardown(() => void c.p.kill('SIGKILL'));
  await c.ready;
  c.p.kill('SIGTERM');
  // the first signal is logged before the second is sent
  await new Promise<void>((resolve) => {
    const check = (): void => (c.logs().some((l) => l.msg === 'shutdown requested') ? resolve() : void c.p.stdout.once('data', check));
    check();
  });
  c.p.kill('SIGTERM');
  const [code] = await c.exited;
  t.equal(code, 1, 'exit 1');
  t.ok(c.logs().some((l) => l.msg === 'second signal: exiting now without finishing the shutdown (acknowledged writes are in the WAL)'), 'says why');
});

t.test('a shutdown still running at its hard limit exits with 1', async (t) => {
  const c = child('() => new Promise(() => undefined)', 200);
  t.teardown(() => void c.p.kill('SIGKILL'));
  await c.ready;
  c.p.kill('SIGTERM');
  const [code] = await c.exited;
  t.equal(code, 1, 'exit 1');
  t.match(c.logs().find((l) => l.msg === 'shutdown did not finish in time: exiting now (acknowledged writes are in the WAL)'), { level: 'error', limitMs: 200 });
});

t.test('a shutdown that ends exits 0', async (t) => {
  const c = child('async () => undefined', 60_000);
  t.teardown(() => void c.p.kill('SIGKILL'));
  await c.ready;
  c.p.kill('SIGINT');
  const [code] = await c.exited;
  t.equal(code, 0);
});
