/**
 * grpc.health.v1 for Strata servers: NOT_SERVING while starting or draining, SERVING otherwise.
 * The empty service name reports the whole server.
 */
import { status, type Server, type ServerUnaryCall, type ServerWritableStream, type sendUnaryData, type ServiceDefinition } from '@grpc/grpc-js';
import { loadProto } from '../api/proto.js';

export type ServingStatus = 'SERVING' | 'NOT_SERVING';

interface HealthRequest {
  service: string;
}
interface HealthResponse {
  status: ServingStatus | 'SERVICE_UNKNOWN';
}

/** Health state shared by a server's handlers; register it with {@link addHealthService}. */
export class HealthState {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly watchers = new Set<{ service: string; call: ServerWritableStream<HealthRequest, HealthResponse> }>();

  constructor(services: readonly string[]) {
    for (const s of ['', ...services]) this.statuses.set(s, 'NOT_SERVING');
  }

  /** Sets every service (and the server as a whole) to `s`. */
  setAll(s: ServingStatus): void {
    for (const k of this.statuses.keys()) this.statuses.set(k, s);
    for (const w of this.watchers) w.call.write({ status: s });
  }

  get(service: string): ServingStatus | undefined {
    return this.statuses.get(service);
  }

  /** Ends all Watch streams (at shutdown). */
  close(): void {
    for (const w of this.watchers) w.call.end();
    this.watchers.clear();
  }

  /** @internal */
  watch(service: string, call: ServerWritableStream<HealthRequest, HealthResponse>): void {
    const entry = { service, call };
    this.watchers.add(entry);
    call.write({ status: this.statuses.get(service) ?? 'SERVICE_UNKNOWN' });
    call.on('cancelled', () => this.watchers.delete(entry));
  }
}

/** Adds grpc.health.v1.Health to `server`, answering from `state`. */
export function addHealthService(server: Server, state: HealthState): ServiceDefinition {
  const pkg = loadProto('health.proto') as unknown as { grpc: { health: { v1: { Health: { service: ServiceDefinition } } } } };
  const def = pkg.grpc.health.v1.Health.service;
  server.addService(def, {
    Check(call: ServerUnaryCall<HealthRequest, HealthResponse>, cb: sendUnaryData<HealthResponse>) {
      const s = state.get(call.request.service);
      if (!s) cb({ code: status.NOT_FOUND, details: `unknown service "${call.request.service}"` });
      else cb(null, { status: s });
    },
    Watch(call: ServerWritableStream<HealthRequest, HealthResponse>) {
      state.watch(call.request.service, call);
    },
  });
  return def;
}
