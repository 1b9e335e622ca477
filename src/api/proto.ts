/**
 * Loads Strata's `.proto` files (under `proto/`) with @grpc/proto-loader. 64-bit integers are
 * kept as strings so no series id or timestamp passes through a lossy `number`; bytes stay Buffers.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadPackageDefinition, type GrpcObject } from '@grpc/grpc-js';
import { loadSync, type PackageDefinition } from '@grpc/proto-loader';

/** The repository's proto directory (works from src/ and from dist/src/). */
export const PROTO_DIR = (() => {
  const here = dirname(fileURLToPath(import.meta.url));
  const up = here.includes(`${join('dist', 'src')}`) ? ['..', '..', '..'] : ['..', '..'];
  return join(here, ...up, 'proto');
})();

/** Loads `file` (relative to proto/) and returns the grpc-js object tree. */
export function loadProto(file: string): GrpcObject {
  return loadPackageDefinition(loadDefinition(file));
}

/** Loads `file` (relative to proto/) as proto-loader's package definition (message descriptors by full name). */
export function loadDefinition(file: string): PackageDefinition {
  return loadSync(join(PROTO_DIR, file), {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [PROTO_DIR],
  });
}
