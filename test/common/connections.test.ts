/**
 * Connection hygiene on both services (in-process servers, real HTTP/2 connections): the server
 * advertises maxConcurrentStreams, closes a connection that stays idle for idleTimeoutMs, and one
 * that stops mid-handshake (TLS, or before its HTTP/2 preface) after handshakeTimeoutMs.
 */
import { connect, type ClientHttp2Session } from 'node:http2';
import net from 'node:net';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { createLogger } from '../../src/common/logger.js';
import { parseAggregatorConfig } from '../../src/shard-aggregator/config.js';
import { startAggregatorServer } from '../../src/shard-aggregator/server.js';
import { startTestGateway, tempDir, testConfig } from '../support/gateway.js';
import { makeTestCerts } from '../support/certs.js';

const hygiene = { idleTimeoutMs: 300, maxConcurrentStreams: 7, keepaliveTimeMs: 60_000, keepaliveTimeoutMs: 5_000, handshakeTimeoutMs: 400 };

/** Connects, waits for the server's SETTINGS, then for the server to close the idle connection. */
async function check(t: Test, port: number): Promise<void> {
  const session: ClientHttp2Session = connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.destroy());
  const closed = new Promise<string>((resolve) => {
    session.on('goaway', (code) => resolve(`goaway ${code}`));
    session.on('close', () => resolve('close'));
  });
  const settings = await new Promise<{ maxConcurrentStreams?: number }>((resolve) => session.once('remoteSettings', resolve));
  t.equal(settings.maxConcurrentStreams, 7, 'maxConcurrentStreams is advertised');
  // a guard, not a wait: a server that never closes fails here instead of hanging the file
  let guard: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([closed, new Promise<string>((resolve) => (guard = setTimeout(() => resolve('still open after 30 s'), 30_000)))]);
  clearTimeout(guard);
  t.match(outcome, /goaway|close/, 'an idle connection is closed by the server');
}

t.test('the aggregator advertises its stream limit and closes idle connections', async (t) => {
  const dir = tempDir(t, 'conn-agg');
  const config = parseAggregatorConfig({ walDir: join(dir, 'wal'), bucket: { type: 'filesystem', path: join(dir, 'bucket') }, numShards: 1, grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0', ...hygiene });
  const running = await startAggregatorServer({ config, logger: createLogger({ level: 'silent' }) });
  t.teardown(() => running.shutdown());
  await running.ready;
  await check(t, running.grpcPort);
});

t.test('the gateway advertises its stream limit and closes idle connections', async (t) => {
  const dir = tempDir(t, 'conn-gw');
  const gw = await startTestGateway(t, testConfig({ type: 'filesystem', path: join(dir, 'bucket') }, join(dir, 'cache'), hygiene));
  await check(t, gw.grpcPort);
});

/**
 * Opens TCP connections that stop mid-handshake: one sends nothing, one half of the HTTP/2
 * preface; with `afterPreface`, one more sends the whole preface and its SETTINGS and must stay.
 * Resolves with how each ended (a guard reports one still open after 30 s instead of hanging).
 */
async function stalled(t: Test, port: number, afterPreface: boolean): Promise<string[]> {
  const sends = [Buffer.alloc(0), Buffer.from('PRI * HTTP/2.0\r\n')];
  const outcomes = sends.map(
    (bytes) =>
      new Promise<string>((resolve) => {
        const s = net.connect(port, '127.0.0.1', () => s.write(bytes));
        t.teardown(() => s.destroy());
        s.on('error', () => undefined);
        s.resume();
        const guard = setTimeout(() => resolve('still open after 30 s'), 30_000);
        s.on('close', () => {
          clearTimeout(guard);
          resolve('closed');
        });
      }),
  );
  if (afterPreface) {
    // a real HTTP/2 client that sends its preface, then idles: still open when the others are closed
    const session = connect(`http://127.0.0.1:${port}`);
    t.teardown(() => session.destroy());
    await new Promise((r) => session.once('remoteSettings', r));
    const got = await Promise.all(outcomes);
    got.push(session.closed || session.destroyed ? 'closed' : 'open');
    return got;
  }
  return Promise.all(outcomes);
}

t.test('a connection that stops before its HTTP/2 preface is closed after handshakeTimeoutMs, on both services', async (t) => {
  const dir = tempDir(t, 'conn-hs');
  const config = parseAggregatorConfig({ walDir: join(dir, 'wal'), bucket: { type: 'filesystem', path: join(dir, 'bucket') }, numShards: 1, grpcListen: '127.0.0.1:0', metricsListen: '127.0.0.1:0', ...hygiene, idleTimeoutMs: 600_000 });
  const running = await startAggregatorServer({ config, logger: createLogger({ level: 'silent' }) });
  t.teardown(() => running.shutdown());
  await running.ready;
  t.same(await stalled(t, running.grpcPort, true), ['closed', 'closed', 'open'], 'aggregator: the stalled ones closed, the client past its preface kept');
  const gw = await startTestGateway(t, testConfig({ type: 'filesystem', path: join(dir, 'bucket') }, join(dir, 'cache'), { ...hygiene, idleTimeoutMs: 600_000 }));
  t.same(await stalled(t, gw.grpcPort, true), ['closed', 'closed', 'open'], 'gateway: likewise');
});

t.test('a connection that stops mid-TLS-handshake is closed after handshakeTimeoutMs', async (t) => {
  const certs = makeTestCerts(t);
  const dir = tempDir(t, 'conn-tls');
  const gw = await startTestGateway(
    t,
    testConfig({ type: 'filesystem', path: join(dir, 'bucket') }, join(dir, 'cache'), { ...hygiene, idleTimeoutMs: 600_000, tls: { certFile: certs.serverCert, keyFile: certs.serverKey } }),
  );
  t.same(await stalled(t, gw.grpcPort, false), ['closed', 'closed'], 'a TLS client that sends nothing, or no valid ClientHello, is closed');
});
