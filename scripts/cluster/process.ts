/**
 * Child processes of the local cluster: not daemonized, each in its own process group (so a stop
 * reaches what it started, like nginx's workers), stdout and stderr appended to one log file per
 * process, stopped with SIGTERM then SIGKILL. Lines of stdout can be watched (the Strata services
 * log their bound ports as JSON there).
 *
 * Every process started here is also recorded in a module-wide set that an `exit` handler
 * SIGKILLs, so a crash of the parent (an uncaught error, `process.exit`) does not leave proxies
 * and services behind. A SIGKILL of the parent still does: `docs/cluster.md` says how to clean up.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';

/** How a process ended. */
export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** Options of {@link spawnProcess}. */
export interface SpawnOptions {
  readonly cwd?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** File receiving stdout and stderr (appended). */
  readonly logFile: string;
}

const live = new Set<ManagedProcess>();
/** Lines of stdout kept for {@link ManagedProcess.waitForLine}. */
const RECENT_LINES = 200;
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const p of live) p.kill('SIGKILL');
  });
}

/** A child process with its log file. */
export class ManagedProcess {
  readonly name: string;
  readonly pid: number;
  readonly logFile: string;
  /** Resolves when the process has exited (never rejects). */
  readonly exited: Promise<ExitStatus>;
  private exitStatus: ExitStatus | null = null;
  private readonly child: ChildProcess;
  private readonly lineWatchers = new Set<(line: string) => void>();
  private readonly recentLines: string[] = [];

  /** @internal use {@link spawnProcess} */
  constructor(name: string, child: ChildProcess, logFile: string, log: WriteStream) {
    if (child.pid === undefined) throw new Error(`starting ${name}: no pid`);
    this.name = name;
    this.pid = child.pid;
    this.logFile = logFile;
    this.child = child;
    let pending = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      log.write(chunk);
      pending += chunk.toString('utf8');
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        this.recentLines.push(line);
        if (this.recentLines.length > RECENT_LINES) this.recentLines.shift();
        for (const w of [...this.lineWatchers]) w(line);
      }
    });
    child.stderr?.on('data', (chunk: Buffer) => log.write(chunk));
    child.on('error', (err) => log.write(`[cluster] ${name}: ${err.message}\n`));
    this.exited = new Promise<ExitStatus>((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitStatus = { code, signal };
        live.delete(this);
        // Whatever the leader left in its group (an nginx worker whose master was SIGKILLed)
        // goes too. The group id cannot have been reused: a pid stays allocated while it names
        // a live group.
        signalGroup(this.pid, 'SIGKILL');
        // the pipes may still hold output: close the log once both ended (or after a second,
        // should a straggler we could not kill still hold them)
        const ends = [child.stdout, child.stderr]
          .filter((s) => s !== null)
          .map((s) => (s.readableEnded || s.closed ? Promise.resolve() : once(s, 'close').then(() => undefined)));
        void Promise.race([Promise.all(ends), sleep(1000)]).then(() => log.end(() => resolve({ code, signal })));
      });
    });
  }

  /** True until the process has exited. */
  running(): boolean {
    return this.exitStatus === null;
  }

  /** How it exited, or null while running. */
  status(): ExitStatus | null {
    return this.exitStatus;
  }

  /** Sends a signal to the process and its process group (nothing when already gone). */
  kill(signal: NodeJS.Signals): void {
    if (this.exitStatus !== null) return;
    signalGroup(this.pid, signal);
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
  async stop(graceMs = 5000): Promise<ExitStatus> {
    if (this.exitStatus !== null) return this.exitStatus;
    this.kill('SIGTERM');
    const timer = setTimeout(() => this.kill('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Resolves with the first value `match` returns for a line of stdout (non-undefined), looking
   * at the last lines already written first. Rejects when the process exits first or after
   * `timeoutMs`, with the end of its log.
   */
  waitForLine<T>(what: string, match: (line: string) => T | undefined, timeoutMs: number): Promise<T> {
    for (const line of this.recentLines) {
      const v = match(line);
      if (v !== undefined) return Promise.resolve(v);
    }
    return new Promise<T>((resolve, reject) => {
      let done = false;
      let timer: NodeJS.Timeout | undefined;
      const finish = (err: Error | null, value?: T): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.lineWatchers.delete(watcher);
        if (err) reject(err);
        else resolve(value as T);
      };
      const watcher = (line: string): void => {
        let v: T | undefined;
        try {
          v = match(line);
        } catch (err) {
          finish(err as Error);
          return;
        }
        if (v !== undefined) finish(null, v);
      };
      this.lineWatchers.add(watcher);
      timer = setTimeout(() => {
        void this.describeFailure(`timed out after ${timeoutMs} ms waiting for ${what}`).then((e) => finish(e));
      }, timeoutMs);
      void this.exited.then((st) => {
        if (!done) void this.describeFailure(`exited (${formatExit(st)}) before ${what}`).then((e) => finish(e));
      });
    });
  }

  /** An Error naming this process, `what` happened, and the end of its log. */
  async describeFailure(what: string, lines = 30): Promise<Error> {
    return new Error(`${this.name} (pid ${this.pid}) ${what}; log ${this.logFile}:\n${await tailFile(this.logFile, lines)}`);
  }
}

/** Signals process group `pgid`; a group that is already gone is not an error. */
function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** `code 1` / `signal SIGKILL`. */
export function formatExit(st: ExitStatus): string {
  return st.signal !== null ? `signal ${st.signal}` : `code ${st.code}`;
}

/** The last `lines` lines of a file (or why it cannot be read). */
export async function tailFile(file: string, lines = 30): Promise<string> {
  try {
    const text = await readFile(file, 'utf8');
    return text.trimEnd().split('\n').slice(-lines).join('\n');
  } catch (err) {
    return `(cannot read ${file}: ${(err as Error).message})`;
  }
}

/**
 * Starts `command args` with stdin closed and output to `opts.logFile`.
 * @throws Error when the program cannot be started (ENOENT, EACCES).
 */
export async function spawnProcess(name: string, command: string, args: readonly string[], opts: SpawnOptions): Promise<ManagedProcess> {
  installExitHook();
  const log = createWriteStream(opts.logFile, { flags: 'a' });
  await once(log, 'open');
  log.on('error', (err) => process.stderr.write(`cluster: writing the log of ${name} (${opts.logFile}): ${err.message}\n`));
  // its own process group: stopping it stops what it started (nginx workers), and a Ctrl-C in
  // the terminal reaches only the parent, which stops the children in order
  const child = spawn(command, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  try {
    await new Promise<void>((resolve, reject) => {
      const onSpawn = (): void => {
        child.off('error', onError);
        resolve();
      };
      const onError = (err: Error): void => {
        child.off('spawn', onSpawn);
        reject(err);
      };
      child.once('spawn', onSpawn);
      child.once('error', onError);
    });
  } catch (err) {
    log.end();
    throw new Error(`starting ${name} (${command}): ${(err as Error).message}`, { cause: err });
  }
  const p = new ManagedProcess(name, child, opts.logFile, log);
  live.add(p);
  return p;
}
