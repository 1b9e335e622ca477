#!/usr/bin/env node
/**
 * `node scripts/with-rgw.mjs [--quiet] -- <cmd> [args...]`
 *
 * Starts a throwaway Ceph RADOS Gateway on loopback (scripts/rgw/rgw.mjs), runs the command with
 * the STRATA_TEST_S3_* variables in its environment, stops the gateway (also when the command
 * fails or this script gets SIGINT/SIGTERM/SIGHUP) and exits with the command's exit status
 * (128 + signal number when the command was killed by a signal). The project's node_modules/.bin
 * is put first on PATH, as `npm run` does, so `-- tap test/objstore` works from a plain shell.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startRgw } from './rgw/rgw.mjs';

const projectBin = join(dirname(dirname(fileURLToPath(import.meta.url))), 'node_modules', '.bin');

function usage(msg) {
  process.stderr.write(`with-rgw: ${msg}\nusage: node scripts/with-rgw.mjs [--quiet] -- <cmd> [args...]\n`);
  process.exit(2);
}

const argv = process.argv.slice(2);
const sep = argv.indexOf('--');
if (sep < 0) usage('missing `--` before the command');
const flags = argv.slice(0, sep);
const command = argv.slice(sep + 1);
if (command.length === 0) usage('missing command after `--`');
let quiet = false;
for (const f of flags) {
  if (f === '--quiet') quiet = true;
  else usage(`unknown option ${f}`);
}
const log = (msg) => {
  if (!quiet) process.stderr.write(`with-rgw: ${msg}\n`);
};

// The AWS SDK warns once per process that future releases need Node 22; it adds noise to every
// test file's output, so it is silenced for the tests (not for the services).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

let rgw;
let child;
const starting = new AbortController();
let stopping;
let received;

/** Stops the gateway once, whatever calls first. */
function stopRgw() {
  stopping ??= rgw ? rgw.stop() : Promise.resolve();
  return stopping;
}

function onSignal(sig) {
  received ??= sig;
  if (child && child.exitCode === null && child.signalCode === null) {
    child.kill(sig); // the exit handler below stops RGW and exits
    return;
  }
  if (!rgw) {
    starting.abort(new Error(`interrupted by ${sig}`)); // startRgw stops what it started, then rejects
    return;
  }
  // The child is already gone: stop RGW and leave.
  stopRgw().then(
    () => process.exit(128 + constants.signals[sig]),
    (err) => {
      process.stderr.write(`with-rgw: stopping RGW after ${sig}: ${err.message}\n`);
      process.exit(128 + constants.signals[sig]);
    },
  );
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, onSignal);

try {
  rgw = await startRgw({ signal: starting.signal, log: (m) => log(m.replace(/^rgw: /, '')) });
} catch (err) {
  if (received) process.exit(128 + constants.signals[received]);
  process.stderr.write(`with-rgw: starting RGW: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}

const [cmd, ...args] = command;
// Like `npm run`, put the project's node_modules/.bin first so `-- tap ...` works from a shell.
const PATH = [projectBin, process.env.PATH].filter(Boolean).join(delimiter);
child = spawn(cmd, args, { stdio: 'inherit', env: { ...process.env, ...rgw.env, PATH } });
const status = await new Promise((resolveStatus) => {
  child.on('error', (err) => {
    process.stderr.write(`with-rgw: running ${cmd}: ${err.message}\n`);
    resolveStatus(127);
  });
  child.on('exit', (code, sig) => {
    resolveStatus(code ?? 128 + (sig ? constants.signals[sig] : 0));
  });
});
try {
  await stopRgw();
  log('stopped RGW');
} catch (err) {
  process.stderr.write(`with-rgw: stopping RGW: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(status === 0 ? 1 : status);
}
process.exit(status);
