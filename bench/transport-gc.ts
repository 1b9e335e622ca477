/**
 * `npm run bench -- transport-gc [--exchanges=20000]`: what a request costs the garbage collector
 * in the transports the read path runs on, with no Strata code at all. A server and a client on
 * loopback, one exchange at a time (a 100-byte answer), measured in this process, for:
 * - `http2`: `node:http2`, one stream per exchange (what gRPC does, in the gateway and the query
 *   client alike);
 * - `http2_client` and `http2_server`: the same with the server, or the client, in a child process,
 *   so that the figures are those of one side alone;
 * - `net`: one TCP connection, length-prefixed messages (no per-exchange handle);
 * - `asyncresource_bind` and `asyncresource_run`: no transport, the step of Node 20's
 *   `ClientHttp2Session.request()` that keeps a request's state: `AsyncResource.prototype.bind`,
 *   which gives every bound function a deprecated `asyncResource` accessor made by `deprecate()`,
 *   whose `Object.setPrototypeOf` gives it a new hidden class; that class lives in the old
 *   generation and points at the accessor, so whatever the accessor's scope reaches (the bound
 *   function, and in `request()` the stream with its listeners) outlives young collections.
 *   `runInAsyncScope` does the same work without it (nodejs/node#58218; Node 24 changed
 *   `deprecate()` not to do this here).
 *
 * Each case runs its exchanges three times: under V8's sampling heap profiler keeping every
 * sample (`allocated`: bytes allocated per exchange), then keeping only the samples that young
 * collections did not free (`retained`: bytes per exchange that were still alive at the first young
 * collection after their exchange ended, and stayed until a full one; a young collection is forced
 * before the profile is taken), then without a profiler, counting the collections with their
 * pauses (`perf_hooks` 'gc' entries).
 *
 * Why it is here: the warm tail of `npm run bench -- read` is made of collections (see
 * docs/capacity.md, "The read tail"), and this shows how much of it the transport alone causes.
 *
 * Last line, JSON, per case: `<case>_allocated_bytes_per_exchange`,
 * `<case>_retained_bytes_per_exchange`, `<case>_retained_share`, `<case>_exchanges_per_s`,
 * `<case>_young_gcs_per_10k`, `<case>_young_gc_ms_mean`, `<case>_young_gc_ms_max`,
 * `<case>_full_gcs_per_10k`, `<case>_full_gc_ms_max`.
 */
import { AsyncResource } from 'node:async_hooks';
import { spawn, type ChildProcess } from 'node:child_process';
import http2 from 'node:http2';
import { Session } from 'node:inspector';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { constants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { fileURLToPath } from 'node:url';
import { flag } from './proc.js';

interface Transport {
  /** `n` exchanges, one at a time. */
  run(n: number): Promise<void>;
  close(): Promise<void>;
}

/** The transport of one exchange at a time, from its exchange. */
function sequential(exchange: () => Promise<void>, close: () => Promise<void>): Transport {
  return {
    async run(n) {
      for (let i = 0; i < n; i++) await exchange();
    },
    close,
  };
}

/**
 * This module in a child process, in `role`: `server` prints its port; `client` connects to
 * `port` and, for each line N on its stdin, makes N exchanges and prints a line.
 */
function child(role: 'server' | 'client', port = 0): { proc: ChildProcess; lines: AsyncIterator<string> } {
  const proc = spawn(process.execPath, [fileURLToPath(import.meta.url), CHILD_FLAG, role, String(port)], { stdio: ['pipe', 'pipe', 'inherit'] });
  return { proc, lines: createInterface({ input: proc.stdout! })[Symbol.asyncIterator]() };
}
const CHILD_FLAG = '--transport-gc-child';

/** The child process's side (see {@link child}). */
async function runChild(role: string, port: number): Promise<void> {
  if (role === 'server') {
    const srv = http2Server();
    srv.listen(0, '127.0.0.1', () => console.log((srv.address() as net.AddressInfo).port));
    return;
  }
  const session = http2.connect(`http://127.0.0.1:${port}`);
  for await (const line of createInterface({ input: process.stdin })) {
    for (let i = 0; i < Number(line); i++) await http2Exchange(session);
    console.log('done');
  }
  session.close();
}

async function nextLine(lines: AsyncIterator<string>): Promise<string> {
  const r = await lines.next();
  if (r.done === true) throw new Error('the child process exited');
  return r.value;
}

/** The server in a child process: what the client side alone costs. */
async function http2ClientOnly(): Promise<Transport> {
  const { proc, lines } = child('server');
  const port = Number(await nextLine(lines));
  const session = http2.connect(`http://127.0.0.1:${port}`);
  return sequential(
    () => http2Exchange(session),
    async () => {
      session.close();
      proc.kill();
    },
  );
}

/** The client in a child process, told how many exchanges to make: what the server side alone costs. */
async function http2ServerOnly(): Promise<Transport> {
  const srv = http2Server();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { proc, lines } = child('client', (srv.address() as net.AddressInfo).port);
  return {
    async run(n) {
      proc.stdin!.write(`${n}\n`);
      await nextLine(lines);
    },
    async close() {
      proc.kill();
      await new Promise((r) => srv.close(r));
    },
  };
}

const ANSWER = Buffer.alloc(100, 120);

function http2Server(): http2.Http2Server {
  const srv = http2.createServer();
  srv.on('stream', (s) => {
    s.respond({ ':status': 200 });
    s.end(ANSWER);
  });
  return srv;
}

function http2Exchange(session: http2.ClientHttp2Session): Promise<void> {
  return new Promise((resolve, reject) => {
    const r = session.request({ ':method': 'POST', ':path': '/' });
    r.on('data', () => undefined);
    r.on('end', resolve);
    r.on('error', reject);
    r.end();
  });
}

async function http2Transport(): Promise<Transport> {
  const srv = http2Server();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const session = http2.connect(`http://127.0.0.1:${(srv.address() as net.AddressInfo).port}`);
  return sequential(
    () => http2Exchange(session),
    async () => {
      session.close();
      await new Promise((r) => srv.close(r));
    },
  );
}

/**
 * What `ClientHttp2Session.request()` does for every request in Node 20, alone: bind the request's
 * start to a new `AsyncResource` (`bind`), against running it in that resource's scope (`run`).
 * Each call makes a small object graph (about 2.5 KB) that only the bound function reaches.
 */
function asyncResourceCalls(how: 'bind' | 'run'): Transport {
  // two function literals, so that V8's allocation sites (which may put what survived at one of
  // them straight into the old generation) are not shared between the cases
  const bindCall = (): void => {
    const state = { parts: Array.from({ length: 50 }, (_, i) => ({ i })) };
    new AsyncResource('PendingRequest').bind(() => state.parts.length)();
  };
  const runCall = (): void => {
    const state = { parts: Array.from({ length: 50 }, (_, i) => ({ i })) };
    new AsyncResource('PendingRequest').runInAsyncScope(() => state.parts.length);
  };
  const call = how === 'bind' ? bindCall : runCall;
  return {
    async run(n) {
      for (let i = 0; i < n; i++) {
        call();
        // a turn of the event loop now and then, as between requests
        if (i % 100 === 99) await new Promise((r) => setImmediate(r));
      }
    },
    close: async () => undefined,
  };
}

async function netTransport(): Promise<Transport> {
  // the server answers each 4-byte length-prefixed request with a length-prefixed ANSWER
  const srv = net.createServer((sock) => {
    let held: Buffer = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      held = held.length === 0 ? d : Buffer.concat([held, d]);
      while (held.length >= 4 && held.length >= 4 + held.readUInt32BE(0)) {
        held = held.subarray(4 + held.readUInt32BE(0));
        const out = Buffer.allocUnsafe(4 + ANSWER.length);
        out.writeUInt32BE(ANSWER.length, 0);
        ANSWER.copy(out, 4);
        sock.write(out);
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const sock = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1');
  sock.setNoDelay(true);
  await new Promise((r) => sock.once('connect', r));
  let waiting: (() => void) | null = null;
  let held: Buffer = Buffer.alloc(0);
  sock.on('data', (d: Buffer) => {
    held = held.length === 0 ? d : Buffer.concat([held, d]);
    while (held.length >= 4 && held.length >= 4 + held.readUInt32BE(0)) {
      held = held.subarray(4 + held.readUInt32BE(0));
      const w = waiting;
      waiting = null;
      w?.();
    }
  });
  const request = Buffer.from([0, 0, 0, 1, 0]);
  return sequential(
    () =>
      new Promise((resolve) => {
        waiting = resolve;
        sock.write(request);
      }),
    async () => {
      sock.destroy();
      await new Promise((r) => srv.close(r));
    },
  );
}

interface SamplingNode {
  selfSize: number;
  children: SamplingNode[];
  callFrame: { functionName: string; url: string; lineNumber: number };
}

/** A young collection, now (V8's `gc` function, exposed for this process from here on). */
function minorGc(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as (o: { type: 'minor' }) => void)({ type: 'minor' });
}

/** Bytes sampled over `n` exchanges, with the sites that allocated most of them. */
async function sampled(t: Transport, n: number, keepMinor: boolean): Promise<{ bytes: number; sites: [string, number][] }> {
  const session = new Session();
  session.connect();
  const post = <T>(method: string, params?: object): Promise<T> =>
    new Promise((resolve, reject) => session.post(method, params, (err, res) => (err ? reject(err) : resolve(res as T))));
  await post('HeapProfiler.enable');
  await post('HeapProfiler.startSampling', { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: keepMinor });
  await t.run(n);
  // a young collection first, so that what the last exchanges left and nothing keeps is not
  // counted as kept
  minorGc();
  const { profile } = await post<{ profile: { head: SamplingNode } }>('HeapProfiler.stopSampling');
  session.disconnect();
  const sites = new Map<string, number>();
  let bytes = 0;
  const walk = (node: SamplingNode): void => {
    bytes += node.selfSize;
    if (node.selfSize > 0) {
      const f = node.callFrame;
      const key = `${f.functionName || '(anonymous)'} ${f.url}:${f.lineNumber + 1}`;
      sites.set(key, (sites.get(key) ?? 0) + node.selfSize);
    }
    node.children.forEach(walk);
  };
  walk(profile.head);
  return { bytes, sites: [...sites].sort((a, b) => b[1] - a[1]).slice(0, 5) };
}

/** Collections during `n` exchanges: young and full, with their pauses. */
async function collections(t: Transport, n: number): Promise<{ young: number[]; full: number[]; perS: number }> {
  const young: number[] = [];
  const full: number[] = [];
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind;
      if (kind === constants.NODE_PERFORMANCE_GC_MINOR) young.push(e.duration);
      else if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) full.push(e.duration);
    }
  });
  obs.observe({ entryTypes: ['gc'] });
  const t0 = performance.now();
  await t.run(n);
  const perS = n / ((performance.now() - t0) / 1000);
  // the entries of the last collections are delivered on a later tick
  await new Promise((r) => setTimeout(r, 50));
  obs.disconnect();
  return { young, full, perS };
}

export async function main(argv: string[]): Promise<void> {
  const n = Number(flag(argv, 'exchanges', '20000'));
  const out: Record<string, number> = {};
  const round = (x: number): number => Number(x.toFixed(3));
  for (const [name, make] of [
    ['http2', http2Transport],
    ['http2_client', http2ClientOnly],
    ['http2_server', http2ServerOnly],
    ['net', netTransport],
    ['asyncresource_run', async () => asyncResourceCalls('run')],
    ['asyncresource_bind', async () => asyncResourceCalls('bind')],
  ] as const) {
    const t = await make();
    try {
      await t.run(2000);
      const all = await sampled(t, n, true);
      const kept = await sampled(t, n, false);
      const gc = await collections(t, n);
      const mean = (a: number[]): number => (a.length === 0 ? 0 : a.reduce((s, x) => s + x, 0) / a.length);
      out[`${name}_allocated_bytes_per_exchange`] = Math.round(all.bytes / n);
      out[`${name}_retained_bytes_per_exchange`] = Math.round(kept.bytes / n);
      out[`${name}_retained_share`] = round(kept.bytes / all.bytes);
      out[`${name}_exchanges_per_s`] = Math.round(gc.perS);
      out[`${name}_young_gcs_per_10k`] = round((gc.young.length * 10_000) / n);
      out[`${name}_young_gc_ms_mean`] = round(mean(gc.young));
      out[`${name}_young_gc_ms_max`] = round(Math.max(0, ...gc.young));
      out[`${name}_full_gcs_per_10k`] = round((gc.full.length * 10_000) / n);
      out[`${name}_full_gc_ms_max`] = round(Math.max(0, ...gc.full));
      console.log(
        `${name.padEnd(12)}: ${gc.perS.toFixed(0)} exchanges/s; allocated ${(all.bytes / n).toFixed(0)} B per exchange, ` +
          `${(kept.bytes / n).toFixed(0)} B of it (${((100 * kept.bytes) / all.bytes).toFixed(1)} %) still alive at the next young collection; ` +
          `${gc.young.length} young collections (mean ${mean(gc.young).toFixed(2)} ms, max ${Math.max(0, ...gc.young).toFixed(2)} ms), ` +
          `${gc.full.length} full (max ${Math.max(0, ...gc.full).toFixed(2)} ms) in ${n} exchanges`,
      );
      console.log(`              kept past a young collection, by allocation site: ${kept.sites.map(([k, v]) => `${k} ${((100 * v) / kept.bytes).toFixed(0)} %`).join('; ')}`);
    } finally {
      await t.close();
    }
  }
  console.log(JSON.stringify(out));
}

if (process.argv[2] === CHILD_FLAG) await runChild(process.argv[3]!, Number(process.argv[4]));
