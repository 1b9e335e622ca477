/**
 * Connection hygiene on both services (in-process servers, real HTTP/2 connections): the server
 * advertises maxConcurrentStreams, and closes a connection that stays idle for idleTimeoutMs.
 */
import { connect, type ClientHttp2Session } from 'node:http2';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { createLogger } from '../../src/common/logger.js';
import { parseAggregatorConfig } from '../../src/shard-aggregator/config.js';
import { startAggregatorServer } from '../../src/shard-aggregator/server.js';
import { startTestGateway, tempDir, testConfig } from '../storage-gateway/helpers.js';

const hygiene = { idleTimeoutMs: 300, maxConcurrentStreams: 7, keepaliveTimeMs: 60_000, keepaliveTimeoutMs: 5_000 };

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
