/**
 * Runs a `strata` service command (`aggregator`, `gateway`, `serve`) as a real child process and
 * waits until it serves: its JSON log line carrying `grpcPort` (and, for an aggregator,
 * "aggregator serving" once its WAL is recovered; for `serve`, "strata is serving" with its
 * write and read addresses). The process is SIGKILLed at `t`'s teardown if still running.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** A running service process. */
export interface ServiceProcess {
  readonly proc: ChildProcess;
  /** gRPC port (`serve`: the write API's). */
  readonly grpcPort: number;
  /** /metrics port (`serve`: the aggregator's). */
  readonly metricsPort: number;
  /** `serve` only: the read API's port. */
  readonly readPort?: number;
  /** Every JSON log line so far. */
  readonly logs: Record<string, unknown>[];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `strata <args...>` with `env` added to the environment. */
export async function startServiceProcess(t: Test, args: readonly string[], env: Record<string, string> = {}): Promise<ServiceProcess> {
  const proc = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts'), ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', ...env },
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL');
      await exited;
    }
  });
  const logs: Record<string, unknown>[] = [];
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => void (stderr += d.toString()));
  type Ports = { grpcPort: number; metricsPort: number; readPort?: number };
  const portOf = (address: unknown): number => Number(String(address).slice(String(address).lastIndexOf(':') + 1));
  const ports = await new Promise<Ports>((resolve, reject) => {
    let buf = '';
    let found: Ports | null = null;
    let aggregatorServing = false;
    proc.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!line.startsWith('{')) continue;
        const rec = JSON.parse(line) as Record<string, unknown>;
        logs.push(rec);
        if (typeof rec['grpcPort'] === 'number') found = { grpcPort: rec['grpcPort'], metricsPort: rec['metricsPort'] as number };
        if (rec['msg'] === 'aggregator serving') aggregatorServing = true;
        if (args[0] === 'serve') {
          if (rec['msg'] === 'strata is serving') resolve({ grpcPort: portOf(rec['write']), metricsPort: (rec['metrics'] as number[])[0]!, readPort: portOf(rec['read']) });
        } else if (found && (args[0] !== 'aggregator' || aggregatorServing)) resolve(found); // a gateway logs its ports once it serves
      }
    });
    void exited.then(({ code, signal }) => reject(new Error(`strata ${args.join(' ')} exited (${code ?? signal}) before serving: ${stderr}`)));
  });
  return { proc, ...ports, logs, exited };
}
