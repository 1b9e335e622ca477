/**
 * Strict structural check of a JSON/YAML value against a protobuf message type, the way Envoy's
 * config loader reads it (proto3 JSON mapping), but stricter than `Type.fromObject` of protobufjs,
 * which silently drops unknown fields:
 *
 * - every key must be a field of the message, by proto name or JSON (lowerCamel) name, and not
 *   both; deprecated fields and fields Envoy disallows by default are refused;
 * - scalars must have the right JSON type and range; enums must name (or number) a defined value;
 * - `google.protobuf.Any` must carry `@type: type.googleapis.com/<loaded message>` and is checked
 *   recursively; Duration must be a proto3 JSON duration string (`"5s"`, `"0.25s"`); wrappers take
 *   the bare value; Struct/Value take any JSON;
 * - at most one member of a oneof is set, and exactly one when the oneof is `(validate.required)`;
 * - a subset of Envoy's protoc-gen-validate rules: `message.required`, string `min_len`/`max_len`/
 *   `well_known_regex` (header names and values), number `gt`/`gte`/`lt`/`lte`/`const`/`in`,
 *   duration `required`/`gt`/`gte`/`lt`/`lte`, `repeated.min_items`/`max_items`, `map.min_pairs`,
 *   `enum.defined_only`/`not_in`, `any.required`.
 *
 * `checkMessage` also returns a normalized copy using proto field names only, so later semantic
 * checks need not care which spelling the file used.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import protobuf from 'protobufjs';

/** One finding: where (a JSON path like `static_resources.clusters[2].lb_policy`) and what. */
export interface Problem {
  readonly path: string;
  readonly message: string;
}

/** `path: message` lines. */
export function formatProblems(problems: readonly Problem[]): string {
  return problems.map((p) => `${p.path || '(root)'}: ${p.message}`).join('\n');
}

const TYPE_URL_PREFIX = 'type.googleapis.com/';

/** Include directories for Envoy's API protos as shipped by @grpc/grpc-js-xds, plus protobufjs' own google/protobuf. */
export function envoyProtoIncludeDirs(): string[] {
  const require = createRequire(import.meta.url);
  // package.json of either package may be hidden by an `exports` map; the main entry is not
  const xdsMain = require.resolve('@grpc/grpc-js-xds');
  let xdsRoot = dirname(xdsMain);
  while (!existsSync(join(xdsRoot, 'package.json'))) xdsRoot = dirname(xdsRoot);
  const pbRoot = dirname(require.resolve('protobufjs'));
  const deps = join(xdsRoot, 'deps');
  return [join(deps, 'envoy-api'), join(deps, 'xds'), join(deps, 'protoc-gen-validate'), join(deps, 'googleapis'), pbRoot];
}

/**
 * Loads `files` (paths relative to the include dirs) into a fresh Root, field names as in the
 * .proto files.
 * @throws Error when a file or an import is missing.
 */
export function loadProtoRoot(files: readonly string[], includeDirs: readonly string[] = envoyProtoIncludeDirs()): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin: string, target: string): string => {
    for (const d of includeDirs) {
      const p = join(d, target);
      if (existsSync(p)) return p;
    }
    return target; // protobufjs' bundled google/protobuf/*.proto, or a clear ENOENT
  };
  root.loadSync([...files], { keepCase: true });
  root.resolveAll();
  return root;
}

type Rules = Record<string, unknown>;

/** Merged options of a field or oneof: `parsedOptions` (nested) plus flattened `options` keys. */
function optionsOf(obj: protobuf.ReflectionObject): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const parsed = (obj as unknown as { parsedOptions?: Record<string, unknown>[] | null }).parsedOptions ?? [];
  for (const o of parsed) Object.assign(out, o);
  for (const [k, v] of Object.entries(obj.options ?? {})) {
    const m = /^(\([^)]+\))\.(.+)$/.exec(k);
    if (!m) {
      out[k] ??= v;
      continue;
    }
    // "(validate.rules).string.min_len" -> out["(validate.rules)"].string.min_len
    let node = (out[m[1]!] ??= {}) as Record<string, unknown>;
    const parts = m[2]!.split('.');
    parts.slice(0, -1).forEach((p) => (node = (node[p] ??= {}) as Record<string, unknown>));
    node[parts.at(-1)!] ??= v;
  }
  return out;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** proto3 JSON name of a field: lowerCamelCase of the proto name unless `json_name` says otherwise. */
export function jsonNameOf(field: protobuf.Field): string {
  const explicit = (field.options as Record<string, unknown> | undefined)?.['json_name'];
  if (typeof explicit === 'string') return explicit;
  return field.name.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

const DURATION_RE = /^(-)?(\d+)(?:\.(\d{1,9}))?s$/;
const MAX_DURATION_SECONDS = 315_576_000_000n;

/** Duration string → nanoseconds, or null when malformed. */
export function parseDuration(s: string): bigint | null {
  const m = DURATION_RE.exec(s);
  if (!m) return null;
  const secs = BigInt(m[2]!);
  if (secs > MAX_DURATION_SECONDS) return null;
  const nanos = BigInt((m[3] ?? '').padEnd(9, '0'));
  const total = secs * 1_000_000_000n + nanos;
  return m[1] ? -total : total;
}

function durationRuleNanos(v: unknown): bigint {
  if (!isPlainObject(v)) return 0n;
  const seconds = BigInt(Number(v['seconds'] ?? 0));
  const nanos = BigInt(Number(v['nanos'] ?? 0));
  return seconds * 1_000_000_000n + nanos;
}

const INT_RANGES: Record<string, [bigint, bigint]> = {
  int32: [-(2n ** 31n), 2n ** 31n - 1n],
  sint32: [-(2n ** 31n), 2n ** 31n - 1n],
  sfixed32: [-(2n ** 31n), 2n ** 31n - 1n],
  uint32: [0n, 2n ** 32n - 1n],
  fixed32: [0n, 2n ** 32n - 1n],
  int64: [-(2n ** 63n), 2n ** 63n - 1n],
  sint64: [-(2n ** 63n), 2n ** 63n - 1n],
  sfixed64: [-(2n ** 63n), 2n ** 63n - 1n],
  uint64: [0n, 2n ** 64n - 1n],
  fixed64: [0n, 2n ** 64n - 1n],
};

const WRAPPERS: Record<string, string> = {
  'google.protobuf.DoubleValue': 'double',
  'google.protobuf.FloatValue': 'float',
  'google.protobuf.Int64Value': 'int64',
  'google.protobuf.UInt64Value': 'uint64',
  'google.protobuf.Int32Value': 'int32',
  'google.protobuf.UInt32Value': 'uint32',
  'google.protobuf.BoolValue': 'bool',
  'google.protobuf.StringValue': 'string',
  'google.protobuf.BytesValue': 'bytes',
};

const HEADER_NAME_RE = /^:?[0-9a-zA-Z!#$%&'*+\-.^_|~`]+$/;
const HEADER_VALUE_RE = /^[^\u0000\u000A\u000D]*$/;

/** Walks one value; see the module comment. Collects problems instead of stopping at the first. */
export class ProtoChecker {
  readonly problems: Problem[] = [];

  constructor(private readonly root: protobuf.Root) {}

  private report(path: string, message: string): void {
    this.problems.push({ path, message });
  }

  /** Checks `value` as message `typeName` (fully qualified, no leading dot) and returns its normalized copy. */
  checkMessage(typeName: string, value: unknown, path = ''): unknown {
    let type: protobuf.Type;
    try {
      type = this.root.lookupType(typeName);
    } catch {
      this.report(path, `message type ${typeName} is not loaded`);
      return value;
    }
    return this.message(type, value, path);
  }

  private message(type: protobuf.Type, value: unknown, path: string): unknown {
    const full = type.fullName.replace(/^\./, '');
    const special = this.wellKnown(full, value, path);
    if (special !== undefined) return special.value;
    if (!isPlainObject(value)) {
      this.report(path, `expected an object for ${full}, got ${describe(value)}`);
      return value;
    }
    const out: Record<string, unknown> = {};
    const byName = new Map<string, protobuf.Field>();
    for (const f of type.fieldsArray) {
      byName.set(f.name, f);
      byName.set(jsonNameOf(f), f);
    }
    const seen = new Map<string, string>(); // proto name -> spelling used
    for (const [key, v] of Object.entries(value)) {
      const field = byName.get(key);
      const at = join2(path, key);
      if (!field) {
        this.report(at, `unknown field "${key}" in ${full}${suggest(key, type)}`);
        continue;
      }
      const prev = seen.get(field.name);
      if (prev !== undefined) {
        this.report(at, `field ${field.name} of ${full} given twice (as "${prev}" and "${key}")`);
        continue;
      }
      seen.set(field.name, key);
      const opts = optionsOf(field);
      if (opts['deprecated'] === true) this.report(at, `field ${field.name} of ${full} is deprecated`);
      if (opts['(envoy.annotations.disallowed_by_default)'] === true) this.report(at, `field ${field.name} of ${full} is disallowed by default`);
      if (v === null) {
        out[field.name] = null; // proto3 JSON: null means "default"
        continue;
      }
      out[field.name] = this.field(field, v, at, (opts['(validate.rules)'] ?? {}) as Rules);
    }
    // required messages (a oneof member's rules apply only when that member is the one set)
    for (const f of type.fieldsArray) {
      if (f.partOf && !f.partOf.name.startsWith('_')) continue;
      const rules = (optionsOf(f)['(validate.rules)'] ?? {}) as Rules;
      const msgRules = rules['message'] as Rules | undefined;
      const durRules = rules['duration'] as Rules | undefined;
      const anyRules = rules['any'] as Rules | undefined;
      const required = msgRules?.['required'] === true || durRules?.['required'] === true || anyRules?.['required'] === true;
      if (required && (out[f.name] === undefined || out[f.name] === null)) this.report(join2(path, f.name), `required field ${f.name} of ${full} is missing`);
    }
    // oneofs
    for (const oneof of type.oneofsArray) {
      const set = oneof.fieldsArray.filter((f) => out[f.name] !== undefined && out[f.name] !== null).map((f) => f.name);
      if (set.length > 1) this.report(path, `oneof ${oneof.name} of ${full} has ${set.length} members set (${set.join(', ')}); at most one is allowed`);
      if (set.length === 0 && optionsOf(oneof)['(validate.required)'] === true) {
        this.report(path, `oneof ${oneof.name} of ${full} requires one of: ${oneof.fieldsArray.map((f) => f.name).join(', ')}`);
      }
    }
    return out;
  }

  /** Special JSON forms of well-known types; undefined when `full` is an ordinary message. */
  private wellKnown(full: string, value: unknown, path: string): { value: unknown } | undefined {
    switch (full) {
      case 'google.protobuf.Duration':
        if (typeof value !== 'string' || parseDuration(value) === null) {
          this.report(path, `expected a duration string like "5s" or "0.25s", got ${describe(value)}`);
        }
        return { value };
      case 'google.protobuf.Timestamp':
        if (typeof value !== 'string' || Number.isNaN(Date.parse(value))) this.report(path, `expected an RFC 3339 timestamp, got ${describe(value)}`);
        return { value };
      case 'google.protobuf.Struct':
        if (!isPlainObject(value)) this.report(path, `expected an object (Struct), got ${describe(value)}`);
        return { value };
      case 'google.protobuf.Value':
        return { value };
      case 'google.protobuf.ListValue':
        if (!Array.isArray(value)) this.report(path, `expected a list (ListValue), got ${describe(value)}`);
        return { value };
      case 'google.protobuf.FieldMask':
        if (typeof value !== 'string') this.report(path, `expected a field mask string, got ${describe(value)}`);
        return { value };
      case 'google.protobuf.Any':
        return { value: this.any(value, path) };
      default: {
        const scalar = WRAPPERS[full];
        if (scalar === undefined) return undefined;
        this.scalar(scalar, value, path);
        return { value };
      }
    }
  }

  private any(value: unknown, path: string): unknown {
    if (!isPlainObject(value)) {
      this.report(path, `expected an object with "@type" (Any), got ${describe(value)}`);
      return value;
    }
    const url = value['@type'];
    if (typeof url !== 'string' || !url.startsWith(TYPE_URL_PREFIX)) {
      this.report(join2(path, '@type'), `Any needs "@type": "${TYPE_URL_PREFIX}<message>", got ${describe(url)}`);
      return value;
    }
    const name = url.slice(TYPE_URL_PREFIX.length);
    let type: protobuf.Type;
    try {
      type = this.root.lookupType(name);
    } catch {
      this.report(join2(path, '@type'), `Any "@type" names ${name}, which is not a loaded message type`);
      return value;
    }
    const { '@type': _t, ...rest } = value;
    const inner = type.fullName.replace(/^\./, '');
    // well-known types inside an Any are wrapped in {"value": ...}
    const special = inner.startsWith('google.protobuf.') && (inner in WRAPPERS || ['google.protobuf.Duration', 'google.protobuf.Timestamp', 'google.protobuf.Struct', 'google.protobuf.Value', 'google.protobuf.ListValue', 'google.protobuf.FieldMask', 'google.protobuf.Any'].includes(inner));
    const normalized = special ? { value: this.message(type, rest['value'], join2(path, 'value')) } : this.message(type, rest, path);
    return { '@type': url, ...(normalized as Record<string, unknown>) };
  }

  private field(field: protobuf.Field, v: unknown, path: string, rules: Rules): unknown {
    if (field.map) {
      if (!isPlainObject(v)) {
        this.report(path, `expected an object (map) for ${field.name}, got ${describe(v)}`);
        return v;
      }
      const mapRules = (rules['map'] ?? {}) as Rules;
      const minPairs = mapRules['min_pairs'];
      if (typeof minPairs === 'number' && Object.keys(v).length < minPairs) this.report(path, `${field.name} needs at least ${minPairs} entries`);
      const keyType = (field as unknown as protobuf.MapField).keyType;
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) {
        if (keyType !== 'string') this.scalar(keyType, /^-?\d+$/.test(k) ? k : Number.NaN, join2(path, k));
        out[k] = this.single(field, x, join2(path, k), (mapRules['values'] ?? {}) as Rules);
      }
      return out;
    }
    if (field.repeated) {
      if (!Array.isArray(v)) {
        this.report(path, `expected a list for ${field.name}, got ${describe(v)}`);
        return v;
      }
      const rep = (rules['repeated'] ?? {}) as Rules;
      if (typeof rep['min_items'] === 'number' && v.length < rep['min_items']) this.report(path, `${field.name} needs at least ${rep['min_items']} items`);
      if (typeof rep['max_items'] === 'number' && v.length > rep['max_items']) this.report(path, `${field.name} allows at most ${rep['max_items']} items`);
      return v.map((x, i) => this.single(field, x, `${path}[${i}]`, (rep['items'] ?? {}) as Rules));
    }
    return this.single(field, v, path, rules);
  }

  private single(field: protobuf.Field, v: unknown, path: string, rules: Rules): unknown {
    const rt = field.resolvedType;
    if (rt instanceof protobuf.Enum) {
      this.enumValue(rt, v, path, (rules['enum'] ?? {}) as Rules);
      return v;
    }
    if (rt instanceof protobuf.Type) {
      const normalized = this.message(rt, v, path);
      const full = rt.fullName.replace(/^\./, '');
      if (full === 'google.protobuf.Duration' && typeof v === 'string') this.durationRules(v, path, (rules['duration'] ?? {}) as Rules);
      const wrapped = WRAPPERS[full];
      if (wrapped !== undefined) this.scalarRules(wrapped, v, path, rules);
      return normalized;
    }
    this.scalar(field.type, v, path);
    this.scalarRules(field.type, v, path, rules);
    return v;
  }

  private enumValue(e: protobuf.Enum, v: unknown, path: string, rules: Rules): void {
    const name = e.fullName.replace(/^\./, '');
    let num: number | undefined;
    if (typeof v === 'string') {
      num = e.values[v];
      if (num === undefined) {
        this.report(path, `"${v}" is not a value of enum ${name} (one of ${Object.keys(e.values).join(', ')})`);
        return;
      }
      const valueOptions = (e as unknown as { valuesOptions?: Record<string, Record<string, unknown>> }).valuesOptions?.[v];
      if (valueOptions?.['deprecated'] === true) this.report(path, `value ${v} of enum ${name} is deprecated`);
    } else if (typeof v === 'number' && Number.isInteger(v)) {
      num = v;
      if (!Object.values(e.values).includes(v)) {
        this.report(path, `${v} is not a defined value of enum ${name}`);
        return;
      }
    } else {
      this.report(path, `expected a value name of enum ${name}, got ${describe(v)}`);
      return;
    }
    const notIn = rules['not_in'];
    if (Array.isArray(notIn) && notIn.includes(num)) this.report(path, `value ${String(v)} of enum ${name} is not allowed here`);
    const within = rules['in'];
    if (Array.isArray(within) && within.length > 0 && !within.includes(num)) this.report(path, `value ${String(v)} of enum ${name} is not allowed here`);
  }

  private scalar(type: string, v: unknown, path: string): void {
    const range = INT_RANGES[type];
    if (range) {
      let n: bigint | null = null;
      if (typeof v === 'number' && Number.isInteger(v)) n = BigInt(v);
      else if (typeof v === 'string' && /^-?\d+$/.test(v)) n = BigInt(v);
      if (n === null) this.report(path, `expected an integer (${type}), got ${describe(v)}`);
      else if (n < range[0] || n > range[1]) this.report(path, `${n} is out of range for ${type}`);
      return;
    }
    switch (type) {
      case 'double':
      case 'float':
        if (typeof v !== 'number' && !(typeof v === 'string' && ['NaN', 'Infinity', '-Infinity'].includes(v))) this.report(path, `expected a number (${type}), got ${describe(v)}`);
        return;
      case 'bool':
        if (typeof v !== 'boolean') this.report(path, `expected true or false, got ${describe(v)}`);
        return;
      case 'string':
        if (typeof v !== 'string') this.report(path, `expected a string, got ${describe(v)}`);
        return;
      case 'bytes':
        if (typeof v !== 'string' || !/^[A-Za-z0-9+/_-]*={0,2}$/.test(v)) this.report(path, `expected base64 bytes, got ${describe(v)}`);
        return;
      default:
        this.report(path, `unsupported scalar type ${type}`);
    }
  }

  private scalarRules(type: string, v: unknown, path: string, rules: Rules): void {
    if (typeof v === 'string' && type === 'string') {
      const r = (rules['string'] ?? {}) as Rules;
      const len = [...v].length;
      if (typeof r['min_len'] === 'number' && len < r['min_len']) this.report(path, `must be at least ${r['min_len']} characters`);
      if (typeof r['max_len'] === 'number' && len > r['max_len']) this.report(path, `must be at most ${r['max_len']} characters`);
      if (typeof r['min_bytes'] === 'number' && Buffer.byteLength(v) < r['min_bytes']) this.report(path, `must be at least ${r['min_bytes']} bytes`);
      const wkr = r['well_known_regex'];
      if ((wkr === 'HTTP_HEADER_NAME' || wkr === 1) && !HEADER_NAME_RE.test(v)) this.report(path, `"${v}" is not a valid HTTP header name`);
      if ((wkr === 'HTTP_HEADER_VALUE' || wkr === 2) && !HEADER_VALUE_RE.test(v)) this.report(path, 'is not a valid HTTP header value');
      if (Array.isArray(r['in']) && r['in'].length > 0 && !r['in'].includes(v)) this.report(path, `"${v}" is not one of ${r['in'].join(', ')}`);
      return;
    }
    const ruleKey = type === 'float' ? 'float' : type;
    const r = rules[ruleKey] as Rules | undefined;
    if (!r) return;
    const n = typeof v === 'number' ? v : typeof v === 'string' && /^-?\d+(\.\d+)?$/.test(v) ? Number(v) : null;
    if (n === null) return;
    const cmp: [string, (a: number, b: number) => boolean, string][] = [
      ['gt', (a, b) => a > b, '>'],
      ['gte', (a, b) => a >= b, '>='],
      ['lt', (a, b) => a < b, '<'],
      ['lte', (a, b) => a <= b, '<='],
      ['const', (a, b) => a === b, '=='],
    ];
    for (const [k, ok, sym] of cmp) {
      const bound = r[k];
      if (typeof bound === 'number' && !ok(n, bound)) this.report(path, `${n} must be ${sym} ${bound}`);
    }
    if (Array.isArray(r['in']) && r['in'].length > 0 && !r['in'].includes(n)) this.report(path, `${n} is not one of ${r['in'].join(', ')}`);
  }

  private durationRules(v: string, path: string, r: Rules): void {
    const n = parseDuration(v);
    if (n === null) return;
    const checks: [string, (a: bigint, b: bigint) => boolean, string][] = [
      ['gt', (a, b) => a > b, '>'],
      ['gte', (a, b) => a >= b, '>='],
      ['lt', (a, b) => a < b, '<'],
      ['lte', (a, b) => a <= b, '<='],
    ];
    for (const [k, ok, sym] of checks) {
      if (r[k] === undefined) continue;
      const bound = durationRuleNanos(r[k]);
      if (!ok(n, bound)) this.report(path, `duration ${v} must be ${sym} ${Number(bound) / 1e9}s`);
    }
  }
}

function join2(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** ` (did you mean "x"?)` for a near miss, else empty. */
function suggest(key: string, type: protobuf.Type): string {
  const k = key.toLowerCase().replace(/_/g, '');
  for (const f of type.fieldsArray) {
    const n = f.name.replace(/_/g, '');
    if (n === k || levenshtein(n, k) <= 2) return ` (did you mean "${f.name}"?)`;
  }
  return '';
}

function levenshtein(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0]!;
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = d[j]!;
      d[j] = Math.min(d[j]! + 1, d[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return d[b.length]!;
}
