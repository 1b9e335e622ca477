import t from 'tap';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { status } from '@grpc/grpc-js';
import { ErrorCode, StrataError } from '../src/errors.js';
import { grpcStatusOf } from '../src/common/grpc-status.js';

const doc = readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', 'docs', 'errors.md'), 'utf8');

t.test('docs/errors.md lists exactly the codes of src/errors.ts with their gRPC status', (t) => {
  const rows = [...doc.matchAll(/^\| `(ERR_STRATA_[A-Z_]+)` \|.*\| `([A-Z_]+)` \|$/gm)].map((m) => [m[1]!, m[2]!] as const);
  const documented = new Map(rows);
  t.same([...documented.keys()].sort(), Object.values(ErrorCode).sort(), 'same set of codes');
  for (const code of Object.values(ErrorCode)) {
    const mapped = status[grpcStatusOf(new StrataError(code, 'x'))];
    t.equal(documented.get(code), mapped, `${code} maps to ${mapped}`);
  }
  t.equal(rows.length, documented.size, 'no code documented twice');
  t.end();
});
