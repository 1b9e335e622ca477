/**
 * Layered service configuration shared by the aggregator and the gateway: a JSON file, then
 * `<PREFIX>_<KEY>` environment variables, then command-line flags, validated once by the
 * service's zod schema. This module turns the file and the string-valued layers into typed input
 * by each option's kind; unknown options are errors that name the option and where it came from.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { ErrorCode, StrataError } from '../errors.js';
import { parseBucketConfig, type BucketConfig } from '../objstore/index.js';

/** `host:port` or `[v6]:port` with a port in 0..65535 (0: any free port). */
export const listenSchema = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'must be host:port')
  .refine((v) => Number(v.slice(v.lastIndexOf(':') + 1)) <= 65535, 'the port must be in 0..65535');

/** Longest delay a timer takes (2^31 - 1 ms, about 24.8 days); a longer one would fire at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A positive duration in ms that a timer waits for: 1..{@link MAX_TIMER_MS}. */
export const timerMsSchema = z.number().int().min(1).max(MAX_TIMER_MS, `must be at most ${MAX_TIMER_MS} ms (about 24.8 days)`);

/** A service's `bucket` option: validated (every numeric option range-checked) by parseBucketConfig. */
export const bucketOptionSchema = z.unknown().transform((v, ctx): BucketConfig => {
  try {
    return parseBucketConfig(v);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: err instanceof Error ? err.message : String(err) });
    return z.NEVER;
  }
});

/** How a string (flag or environment variable) becomes an option's value. */
export type OptionKind = 'string' | 'int' | 'bool' | 'intList' | 'json';

/** `cacheMaxBytes` → `CACHE_MAX_BYTES`. */
export function constantCase(key: string): string {
  return key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
}

/** The layer readers of one service's configuration. */
export interface ConfigLayers {
  /** A CONFIG error with the service's prefix (`invalid gateway config: ...`). */
  error(message: string): StrataError;
  /** Parses a string given on the command line or in the environment for `key`. */
  parseValue(key: string, raw: string, source: string): unknown;
  /** Values from `<envPrefix><KEY>` variables (the config-file variable excepted); unknown ones are an error. */
  fromEnv(env: NodeJS.ProcessEnv): Record<string, unknown>;
  /** Reads a JSON config file holding an object. */
  fromFile(path: string): Promise<Record<string, unknown>>;
  /** Merges layers (later wins per top-level key) and validates them with `schema`. */
  validate<S extends z.ZodType>(schema: S, layers: readonly Record<string, unknown>[]): z.output<S>;
  /** `key=value` pairs given with a repeatable flag (`--set`), parsed by the options' kinds. */
  parseSet(pairs: readonly string[], flag?: string): Record<string, unknown>;
  /**
   * The layers of a service command, lowest precedence first: the config file (`--config` or the
   * config-file variable), the environment, then the flags (`named` maps flag properties to
   * options; `--bucket-dir`, `--tls-*` and `--set` are common to all services).
   */
  commandLine(
    flags: ServiceFlags,
    named: readonly (readonly [string, string])[],
    env: NodeJS.ProcessEnv,
  ): Promise<[fromFile: Record<string, unknown>, fromEnv: Record<string, unknown>, fromFlags: Record<string, unknown>]>;
}

/** Flags every service command has. */
export interface ServiceFlags {
  readonly config?: string;
  readonly bucketDir?: string;
  readonly tlsCert?: string;
  readonly tlsKey?: string;
  readonly tlsClientCa?: string;
  readonly set: readonly string[];
}

/** Layer readers for a service (`what` names it in messages). */
export function configLayers(spec: { what: string; kinds: Readonly<Record<string, OptionKind>>; envPrefix: string; envConfigFile: string }): ConfigLayers {
  const error = (message: string) => new StrataError(ErrorCode.CONFIG, `invalid ${spec.what} config: ${message}`);
  const parseValue = (key: string, raw: string, source: string): unknown => {
    const kind = spec.kinds[key];
    if (kind === undefined) throw error(`${source}: unknown option "${key}"`);
    const int = (s: string): number => {
      if (!/^-?\d+$/.test(s.trim())) throw error(`${source}: ${key}: "${s}" is not an integer`);
      return Number(s.trim());
    };
    switch (kind) {
      case 'string':
        return raw;
      case 'int':
        return int(raw);
      case 'bool':
        if (raw === 'true' || raw === '1') return true;
        if (raw === 'false' || raw === '0') return false;
        throw error(`${source}: ${key}: "${raw}" is not true/false`);
      case 'intList':
        return raw
          .split(',')
          .filter((s) => s.trim() !== '')
          .flatMap((part) => {
            const m = /^\s*(\d+)\s*-\s*(\d+)\s*$/.exec(part);
            if (!m) return [int(part)];
            if (Number(m[1]) > Number(m[2])) throw error(`${source}: ${key}: the range "${part.trim()}" is reversed (write ${m[2]}-${m[1]})`);
            const out: number[] = [];
            for (let i = Number(m[1]); i <= Number(m[2]); i++) out.push(i);
            return out;
          });
      case 'json':
        try {
          return JSON.parse(raw) as unknown;
        } catch {
          throw error(`${source}: ${key}: not valid JSON`);
        }
    }
  };
  const parseSet = (pairs: readonly string[], flag = '--set'): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    for (const kv of pairs) {
      const i = kv.indexOf('=');
      if (i <= 0) throw error(`${flag} ${kv}: expected key=value`);
      const key = kv.slice(0, i);
      out[key] = parseValue(key, kv.slice(i + 1), `${flag} ${key}`);
    }
    return out;
  };
  const layers: ConfigLayers = {
    error,
    parseValue,
    parseSet,
    async commandLine(flags, named, env) {
      const file = flags.config ?? env[spec.envConfigFile];
      const fromFile = file ? await layers.fromFile(file) : {};
      const fromFlags: Record<string, unknown> = {};
      for (const [flag, key] of named) {
        const v = (flags as unknown as Record<string, unknown>)[flag];
        if (typeof v === 'string') fromFlags[key] = parseValue(key, v, `--${flag.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`);
      }
      if (flags.bucketDir !== undefined) fromFlags['bucket'] = { type: 'filesystem', path: flags.bucketDir };
      if (flags.tlsCert !== undefined || flags.tlsKey !== undefined || flags.tlsClientCa !== undefined) {
        fromFlags['tls'] = {
          ...(flags.tlsCert !== undefined ? { certFile: flags.tlsCert } : {}),
          ...(flags.tlsKey !== undefined ? { keyFile: flags.tlsKey } : {}),
          ...(flags.tlsClientCa !== undefined ? { clientCaFile: flags.tlsClientCa } : {}),
        };
      }
      return [fromFile, layers.fromEnv(env), { ...fromFlags, ...parseSet(flags.set) }];
    },
    fromEnv(env) {
      const byVar = new Map(Object.keys(spec.kinds).map((k) => [spec.envPrefix + constantCase(k), k]));
      const out: Record<string, unknown> = {};
      for (const [name, value] of Object.entries(env)) {
        if (!name.startsWith(spec.envPrefix) || name === spec.envConfigFile || value === undefined) continue;
        const key = byVar.get(name);
        if (key === undefined) throw error(`unknown environment variable ${name}`);
        out[key] = parseValue(key, value, `environment variable ${name}`);
      }
      return out;
    },
    async fromFile(path) {
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (err) {
        throw error(`cannot read config file ${path}: ${(err as Error).message}`);
      }
      let v: unknown;
      try {
        v = JSON.parse(text);
      } catch (err) {
        // without the snippet of the file V8 quotes in the message (it could hold a credential)
        throw error(`config file ${path} is not valid JSON: ${(err as Error).message.replace(/, ".*$/s, '')}`);
      }
      if (v === null || typeof v !== 'object' || Array.isArray(v)) throw error(`config file ${path} must hold a JSON object`);
      return v as Record<string, unknown>;
    },
    validate(schema, layers) {
      const res = schema.safeParse(Object.assign({}, ...layers));
      if (!res.success) {
        throw error(res.error.issues.map((i) => `${i.path.length > 0 ? i.path.join('.') : '(root)'}: ${i.message}`).join('; '));
      }
      return res.data;
    },
  };
  return layers;
}

/** `host:port` or `[v6]:port` → host and port. */
export function splitListen(listen: string): { host: string; port: number } {
  const i = listen.lastIndexOf(':');
  return { host: listen.slice(0, i).replace(/^\[(.*)\]$/, '$1'), port: Number(listen.slice(i + 1)) };
}

/** A service needs exactly one of a `bucket` and a `tenantsFile` (whose defaultBucket is the bucket). */
export function checkBucketSource(cfg: { readonly bucket?: unknown; readonly tenantsFile?: unknown }, error: (message: string) => Error): void {
  if (cfg.bucket === undefined && cfg.tenantsFile === undefined) throw error('bucket: give a bucket, or a tenantsFile (whose defaultBucket is used)');
  if (cfg.bucket !== undefined && cfg.tenantsFile !== undefined) {
    throw error("bucket: give either a bucket or a tenantsFile, not both (the tenants file's defaultBucket is the bucket)");
  }
}

/** A copy of a config with every credential field replaced, for printing. */
export function redactSecrets(cfg: unknown): unknown {
  return JSON.parse(JSON.stringify(cfg, (k, v: unknown) => (k === 'accessKeyId' || k === 'secretAccessKey' || k === 'sessionToken' ? '[redacted]' : v))) as unknown;
}
