#!/usr/bin/env node
/**
 * A throwaway single-node Ceph cluster with a RADOS Gateway (S3) on loopback, for integration
 * tests. One monitor, one memstore OSD (data lives in the OSD's memory), no manager, auth none.
 * Everything (config, mon store, logs, pid files, admin sockets) lives in one temp directory;
 * nothing touches /etc/ceph or /var/lib/ceph and no systemd is involved.
 *
 * Library use (scripts/with-rgw.mjs):
 *   const rgw = await startRgw();  // resolves once S3 answers and the test users exist
 *   rgw.env                        // STRATA_TEST_S3_* variables for the tests
 *   await rgw.stop();              // stops the daemons, removes the directory
 *
 * Command line (debugging; the daemons keep running after the command returns):
 *   node scripts/rgw/rgw.mjs start [--dir DIR]   prints `export ...` lines, writes DIR/env.sh and DIR/env.json
 *   node scripts/rgw/rgw.mjs stop DIR            stops the daemons of DIR and removes DIR
 *
 * Environment knobs: STRATA_RGW_DEBUG=1 raises rgw/messenger log levels; STRATA_RGW_KEEP_DIR=1 keeps
 * the directory (logs) after stop. See DEVELOPERS.md.
 */
import { spawn, execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, mkdir, writeFile, readFile, rm, open } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

/** The S3 users the harness creates. Keys are fixed so a failing run can be reproduced by hand. */
export const USERS = [
  { uid: 'strata-test', accessKey: 'STRATATESTACCESSKEY1', secretKey: 'strata-test-secret-key-1' },
  { uid: 'strata-test-2', accessKey: 'STRATATESTACCESSKEY2', secretKey: 'strata-test-secret-key-2' },
];
/** Bucket created for user 1 at start-up (tests normally create their own; see test/support/s3env.ts). */
export const DEFAULT_BUCKET = 'strata-test';
export const REGION = 'us-east-1';

const START_TIMEOUT_MS = 120_000;
/**
 * radosgw first (it hangs on SIGTERM once the cluster is gone), then the OSD (it tells the monitor
 * it is going down, which takes seconds when the monitor is gone), then the monitor.
 */
const STOP_ORDER = ['client.rgw', 'osd.0', 'mon.a'];
const DAEMON_BINARIES = ['ceph-mon', 'ceph-osd', 'radosgw', 'radosgw-admin', 'monmaptool', 'ceph'];

/** A free TCP port on 127.0.0.1 (the port is released again before it is used, so this is racy but fine here). */
async function freePort() {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close((err) => (err ? reject(err) : resolvePort(port)));
    });
  });
}

/** Runs a tool to completion; rejects with its stderr when it exits non-zero. */
function run(cmd, args, { timeoutMs = 60_000 } = {}) {
  return new Promise((resolveRun, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) {
        const e = new Error(`running ${cmd} ${args.join(' ')}: ${err.message}\n${stderr}`.trim(), { cause: err });
        reject(e);
        return;
      }
      resolveRun({ stdout, stderr });
    });
  });
}

function cephConf({ dir, fsid, monPort, rgwPort, debug }) {
  const lines = [
    '[global]',
    `fsid = ${fsid}`,
    `mon_host = v2:127.0.0.1:${monPort}`,
    'public_addr = 127.0.0.1',
    'cluster_addr = 127.0.0.1',
    'auth_cluster_required = none',
    'auth_service_required = none',
    'auth_client_required = none',
    // Without crc modes radosgw keeps retrying authentication forever with auth none.
    'ms_mon_client_mode = crc',
    'ms_client_mode = crc',
    'ms_mon_cluster_mode = crc',
    'ms_cluster_mode = crc',
    'ms_mon_service_mode = crc',
    'ms_service_mode = crc',
    `run_dir = ${dir}/run`,
    `admin_socket = ${dir}/run/$name.asok`,
    `pid_file = ${dir}/run/$name.pid`,
    `log_file = ${dir}/log/$name.log`,
    `crash_dir = ${dir}/crash`,
    `keyring = ${dir}/keyring`,
    'log_to_stderr = false',
    'err_to_stderr = true',
    'osd_objectstore = memstore',
    'memstore_device_bytes = 2147483648',
    'osd_pool_default_size = 1',
    'osd_pool_default_min_size = 1',
    'osd_pool_default_pg_num = 1',
    'osd_pool_default_pgp_num = 1',
    'mon_allow_pool_size_one = true',
    'mon_warn_on_pool_no_redundancy = false',
    'mon_warn_on_insecure_global_id_reclaim_allowed = false',
    'osd_crush_chooseleaf_type = 0',
    'osd_max_object_name_len = 460',
    'osd_max_object_namespace_len = 64',
    'osd_mon_shutdown_timeout = 1',
    // One osdmap epoch per pool change; the default 1 s proposal interval makes radosgw's pool
    // creation at start-up take ~10 s.
    'paxos_propose_interval = 0.01',
    'paxos_min_wait = 0.01',
    '',
    '[mon]',
    `mon_data = ${dir}/mon`,
    '',
    '[osd]',
    `osd_data = ${dir}/osd$id`,
    '',
    '[client.rgw]',
    `rgw_frontends = beast endpoint=127.0.0.1:${rgwPort} tcp_nodelay=1`,
    `rgw_data = ${dir}/rgw`,
    'rgw_dns_name = 127.0.0.1',
    // Collect deleted objects' data soon (default: after 2 h), so a long-lived dev cluster's
    // memstore (2 GiB) does not fill up with garbage.
    'rgw_gc_obj_min_wait = 0',
    'rgw_gc_processor_period = 10',
    ...(debug ? ['debug_rgw = 20', 'debug_ms = 1'] : []),
    '',
  ];
  return lines.join('\n');
}

/**
 * Starts one daemon in the foreground (`-f`) as a child of this process; its stdout/stderr go to
 * DIR/log/NAME.out. With `detached` it gets its own process group and outlives this process.
 */
async function spawnDaemon(dir, name, cmd, args, { detached }) {
  const out = await open(join(dir, 'log', `${name}.out`), 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', out.fd, out.fd], detached });
  await out.close();
  const state = { name, child, exited: null };
  child.on('exit', (code, signal) => {
    state.exited = { code, signal };
  });
  child.on('error', (err) => {
    state.exited = { code: null, signal: null, error: err };
  });
  if (detached) child.unref();
  return state;
}

async function tail(file, lines = 20) {
  try {
    const text = await readFile(file, 'utf8');
    return text.trimEnd().split('\n').slice(-lines).join('\n');
  } catch (err) {
    return `(cannot read ${file}: ${err.message})`;
  }
}

/** Polls `check` until it returns true; fails naming `what` and the logs to look at. */
async function waitFor(what, check, { deadline, daemons, dir, signal }) {
  for (;;) {
    signal?.throwIfAborted();
    for (const d of daemons) {
      if (d.exited) {
        const log = await tail(join(dir, 'log', `${d.name}.log`));
        const out = await tail(join(dir, 'log', `${d.name}.out`));
        throw new Error(
          `waiting for ${what}: ${d.name} exited (${JSON.stringify(d.exited)}); logs in ${dir}/log\n--- ${d.name}.log\n${log}\n--- ${d.name}.out\n${out}`,
        );
      }
    }
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`waiting for ${what}: timed out; logs in ${dir}/log`);
    await sleep(200);
  }
}

async function httpAnswers(url) {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    await res.arrayBuffer();
    return true;
  } catch (err) {
    if (err instanceof Error) return false; // not listening yet
    throw err;
  }
}

async function checkBinaries() {
  const missing = [];
  for (const bin of DAEMON_BINARIES) {
    try {
      await run('sh', ['-c', `command -v ${bin}`]);
    } catch (err) {
      missing.push(bin);
    }
  }
  if (missing.length > 0) {
    throw new Error(
      `starting RGW test cluster: missing ${missing.join(', ')}; install with ` +
        '`apt-get install --no-install-recommends radosgw ceph-mon ceph-osd` (see DEVELOPERS.md)',
    );
  }
}

/**
 * Sends SIGTERM to `pid`, then SIGKILL after `graceMs`; resolves once `isRunning()` is false.
 */
async function stopProcess(pid, isRunning, graceMs) {
  if (!(await isRunning())) return;
  signal(pid, 'SIGTERM');
  const until = Date.now() + graceMs;
  while ((await isRunning()) && Date.now() < until) await sleep(20);
  if (await isRunning()) {
    signal(pid, 'SIGKILL');
    while (await isRunning()) await sleep(20);
  }
}

function signal(pid, sig) {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if (err.code !== 'ESRCH') throw err; // already gone
  }
}

/**
 * True while `pid` is a live (not zombie) process whose command line mentions `conf`, so a
 * recycled pid is never signalled. Linux only (reads /proc).
 */
async function daemonRunning(pid, conf) {
  let stat;
  let cmdline;
  try {
    stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
  } catch (err) {
    if (err.code === 'ENOENT' || err.code === 'ESRCH') return false;
    throw err;
  }
  const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  if (state === 'Z' || state === 'X') return false;
  return cmdline.split('\0').includes(conf);
}

function envFor({ rgwPort, dir }) {
  const [u1, u2] = USERS;
  return {
    STRATA_TEST_S3_ENDPOINT: `http://127.0.0.1:${rgwPort}`,
    STRATA_TEST_S3_REGION: REGION,
    STRATA_TEST_S3_ACCESS_KEY: u1.accessKey,
    STRATA_TEST_S3_SECRET_KEY: u1.secretKey,
    STRATA_TEST_S3_ACCESS_KEY_2: u2.accessKey,
    STRATA_TEST_S3_SECRET_KEY_2: u2.secretKey,
    STRATA_TEST_S3_BUCKET: DEFAULT_BUCKET,
    STRATA_TEST_RGW_DIR: dir,
  };
}

/**
 * Bootstraps the cluster and starts radosgw. Resolves with `{ dir, env, endpoint, stop }` once S3
 * answers on loopback and both test users and the default bucket exist. On failure everything
 * started so far is stopped and the directory is kept for its logs (the error names it).
 *
 * With `signal`, aborting stops the start-up between steps: what was started is stopped, the
 * directory removed, and the promise rejects with the abort reason.
 *
 * @param {{ dir?: string, detached?: boolean, signal?: AbortSignal, log?: (msg: string) => void }} [opts]
 */
export async function startRgw(opts = {}) {
  const log = opts.log ?? (() => {});
  const detached = opts.detached ?? false;
  const debug = process.env.STRATA_RGW_DEBUG === '1';
  const signal = opts.signal;
  await checkBinaries();
  const dir = opts.dir ? resolve(opts.dir) : await mkdtemp(join(tmpdir(), 'strata-rgw-'));
  for (const sub of ['mon', 'osd0', 'run', 'log', 'rgw', 'crash']) await mkdir(join(dir, sub), { recursive: true });
  const fsid = randomUUID();
  const monPort = await freePort();
  let rgwPort = await freePort();
  while (rgwPort === monPort) rgwPort = await freePort();
  const conf = join(dir, 'ceph.conf');
  await writeFile(conf, cephConf({ dir, fsid, monPort, rgwPort, debug }));
  const daemons = [];
  const started = Date.now();
  const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;
  const deadline = started + START_TIMEOUT_MS;
  const ceph = (...args) => run('ceph', ['-c', conf, '--connect-timeout', '10', ...args]);

  const stop = async ({ keepDir = process.env.STRATA_RGW_KEEP_DIR === '1' } = {}) => {
    for (const name of STOP_ORDER) {
      const d = daemons.find((x) => x.name === name);
      if (d && d.child.pid !== undefined) await stopProcess(d.child.pid, () => d.exited === null, 3000);
    }
    if (keepDir) {
      log(`rgw: kept ${dir}`);
      return;
    }
    await rm(dir, { recursive: true, force: true });
  };

  try {
    log(`rgw: bootstrapping in ${dir} (mon 127.0.0.1:${monPort}, s3 127.0.0.1:${rgwPort})`);
    await run('monmaptool', ['--create', '--addv', 'a', `[v2:127.0.0.1:${monPort}]`, '--fsid', fsid, join(dir, 'monmap')]);
    await run('ceph-mon', ['-c', conf, '--mkfs', '-i', 'a', '--monmap', join(dir, 'monmap')]);
    signal?.throwIfAborted();
    daemons.push(await spawnDaemon(dir, 'mon.a', 'ceph-mon', ['-c', conf, '-f', '-i', 'a'], { detached }));

    const osdUuid = randomUUID();
    let osdId = '';
    await waitFor(
      'the monitor to accept `ceph osd new`',
      async () => {
        try {
          osdId = (await ceph('osd', 'new', osdUuid)).stdout.trim();
          return true;
        } catch (err) {
          if (Date.now() > deadline) throw err;
          return false;
        }
      },
      { deadline, daemons, dir, signal },
    );
    if (osdId !== '0') throw new Error(`bootstrapping RGW test cluster: expected osd id 0, got ${JSON.stringify(osdId)}`);
    log(`rgw: monitor up after ${elapsed()}`);
    await run('ceph-osd', ['-c', conf, '-i', '0', '--mkfs', '--osd-uuid', osdUuid]);
    signal?.throwIfAborted();
    daemons.push(await spawnDaemon(dir, 'osd.0', 'ceph-osd', ['-c', conf, '-f', '-i', '0'], { detached }));
    daemons.push(await spawnDaemon(dir, 'client.rgw', 'radosgw', ['-c', conf, '-f', '-n', 'client.rgw'], { detached }));

    const endpoint = `http://127.0.0.1:${rgwPort}`;
    await waitFor('radosgw to answer HTTP', () => httpAnswers(endpoint), { deadline, daemons, dir, signal });
    log(`rgw: radosgw answers after ${elapsed()}`);

    const admin = (...args) => run('radosgw-admin', ['-c', conf, '-n', 'client.admin', ...args]);
    for (const u of USERS) {
      signal?.throwIfAborted();
      await admin('user', 'create', `--uid=${u.uid}`, `--display-name=${u.uid}`, `--access-key=${u.accessKey}`, `--secret-key=${u.secretKey}`);
    }
    const env = envFor({ rgwPort, dir });
    signal?.throwIfAborted();
    log(`rgw: users created after ${elapsed()}`);
    await createBucketRaw(env, DEFAULT_BUCKET);
    signal?.throwIfAborted();
    log(`rgw: ready at ${endpoint} after ${elapsed()}`);
    const pids = Object.fromEntries(daemons.map((d) => [d.name, d.child.pid]));
    return { dir, env, endpoint, stop, pids };
  } catch (err) {
    if (signal?.aborted) {
      await stop({ keepDir: false });
      throw err;
    }
    await stop({ keepDir: true });
    const message = err instanceof Error ? err.message : String(err);
    throw new Error(message.includes(dir) ? message : `${message}\n(cluster directory kept: ${dir})`, { cause: err });
  }
}

/** Creates a bucket as user 1 through the SDK (kept out of the hot path: imported lazily). */
async function createBucketRaw(env, bucket) {
  const { S3Client, CreateBucketCommand } = await import('@aws-sdk/client-s3');
  const client = new S3Client({
    endpoint: env.STRATA_TEST_S3_ENDPOINT,
    region: env.STRATA_TEST_S3_REGION,
    forcePathStyle: true,
    credentials: { accessKeyId: env.STRATA_TEST_S3_ACCESS_KEY, secretAccessKey: env.STRATA_TEST_S3_SECRET_KEY },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  try {
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  } finally {
    client.destroy();
  }
}

/**
 * Stops the daemons of a directory made by `start` (pids from DIR/pids.json: radosgw does not
 * write a pid file in the foreground) and removes the directory.
 */
export async function stopRgwDir(dir) {
  const abs = resolve(dir);
  const pids = JSON.parse(await readFile(join(abs, 'pids.json'), 'utf8'));
  const conf = join(abs, 'ceph.conf');
  for (const name of STOP_ORDER) {
    const pid = pids[name];
    if (Number.isSafeInteger(pid) && pid > 0) await stopProcess(pid, () => daemonRunning(pid, conf), 3000);
  }
  if (process.env.STRATA_RGW_KEEP_DIR !== '1') await rm(abs, { recursive: true, force: true });
}

function shellQuote(s) {
  return `'${String(s).replaceAll("'", `'\\''`)}'`;
}

async function main(argv) {
  const [cmd, ...rest] = argv;
  if (cmd === 'start') {
    let dir;
    for (let i = 0; i < rest.length; i++) {
      if (rest[i] === '--dir' && rest[i + 1] !== undefined) dir = rest[++i];
      else throw new Error(`rgw.mjs start: unknown argument ${rest[i]}`);
    }
    const rgw = await startRgw({ dir, detached: true, log: (m) => process.stderr.write(`${m}\n`) });
    const exports = Object.entries(rgw.env).map(([k, v]) => `export ${k}=${shellQuote(v)}`).join('\n') + '\n';
    await writeFile(join(rgw.dir, 'env.sh'), exports);
    await writeFile(join(rgw.dir, 'pids.json'), JSON.stringify(rgw.pids) + '\n');
    await writeFile(join(rgw.dir, 'env.json'), JSON.stringify({ ...rgw.env, users: USERS }, null, 2) + '\n');
    process.stdout.write(exports);
    process.stderr.write(`rgw: running; stop with: node scripts/rgw/rgw.mjs stop ${rgw.dir}\n`);
    return 0;
  }
  if (cmd === 'stop') {
    if (rest.length !== 1) throw new Error('usage: node scripts/rgw/rgw.mjs stop DIR');
    await stopRgwDir(rest[0]);
    return 0;
  }
  process.stderr.write('usage: node scripts/rgw/rgw.mjs start [--dir DIR] | stop DIR\n');
  return 2;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
