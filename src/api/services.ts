/**
 * Strata's two gRPC services as grpc-js definitions, for servers and clients alike:
 * - the Writer (proto/write.proto), through proto-loader (64-bit integers as strings);
 * - the Read service (proto/read.proto), with the read API's own codec as serializers
 *   (read-codec.ts; test/api/read-codec.test.ts checks it against the .proto).
 */
import { loadPackageDefinition, type MethodDefinition, type ServiceDefinition } from '@grpc/grpc-js';
import { loadDefinition } from './proto.js';
import { checkWire, messageRules } from './wire-check.js';
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
    const def = loadDefinition('write.proto');
    const rules = messageRules(def);
    const service = (loadPackageDefinition(def) as unknown as { strata: { write: { v1: { Writer: { service: WriterMethods } } } } }).strata.write.v1.Writer.service;
    // protobufjs decodes leniently (field 0, a known field in a wrong wire type): a strict walk
    // of the bytes comes first, so such a message is refused as malformed (wire-check.ts)
    const strict = {} as Record<keyof WriterMethods, MethodDefinition<unknown, unknown>>;
    for (const [name, m] of Object.entries(service) as [keyof WriterMethods, MethodDefinition<unknown, unknown>][]) {
      const type = `strata.write.v1.${name}Request`;
      if (!rules.has(type)) throw new Error(`write.proto: no message ${type} for method ${name}`);
      strict[name] = {
        ...m,
        requestDeserialize: (buf: Buffer): unknown => {
          checkWire(buf, type, rules);
          return m.requestDeserialize(buf);
        },
      };
    }
    writer = strict;
  }
  return writer as ServiceDefinition & WriterMethods;
}

/** The Read service definition. */
export function readServiceDefinition(): ServiceDefinition {
  return { Read: READ_METHOD } as ServiceDefinition;
}
