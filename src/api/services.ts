/**
 * Strata's two gRPC services as grpc-js definitions, for servers and clients alike:
 * - the Writer (proto/write.proto), through proto-loader (64-bit integers as strings);
 * - the Read service (proto/read.proto), with the read API's own codec as serializers
 *   (read-codec.ts; test/api/read-codec.test.ts checks it against the .proto).
 */
import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';
import { loadProto } from './proto.js';
import { READ_METHOD } from './read-codec.js';

/** Full name of the write service (also its health service name). */
export const WRITER_SERVICE = 'strata.write.v1.Writer';

/** Full name of the read service (also its health service name). */
export const READ_SERVICE = 'strata.read.v1.Read';

/** The Writer's methods. */
export type WriterMethods = Record<'Write' | 'Seal' | 'Status', MethodDefinition<unknown, unknown>>;

let writer: WriterMethods | null = null;

/** The Writer service definition, loaded once from proto/write.proto. */
export function writerServiceDefinition(): ServiceDefinition & WriterMethods {
  if (writer === null) {
    const pkg = loadProto('write.proto') as unknown as { strata: { write: { v1: { Writer: { service: WriterMethods } } } } };
    writer = pkg.strata.write.v1.Writer.service;
  }
  return writer as ServiceDefinition & WriterMethods;
}

/** The Read service definition. */
export function readServiceDefinition(): ServiceDefinition {
  return { Read: READ_METHOD } as ServiceDefinition;
}
