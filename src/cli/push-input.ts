/**
 * The sample files `strata push` reads, each turned into chunks of per-series columns (the same
 * chunks `readSampleFile` yields for the binary format), with bounded memory whatever the size:
 *
 * - `bin`: 24-byte little-endian records `u64 id | i64 ts | f64 value` (src/client/writer-samples.ts);
 * - `prom`: Prometheus text exposition with timestamps, `name{labels} value timestamp_ms`;
 * - `openmetrics`: OpenMetrics text, `name{labels} value timestamp_seconds` (fraction up to ms);
 * - `csv`: a header line naming the columns, then one sample per line.
 *
 * In the text formats the series id is the value of a label (`--id-label`) or a column
 * (`--id-column`) that the user names: a decimal uint64. Values are decimal floats, `NaN`,
 * `+Inf` / `Inf` / `-Inf`. Lines that cannot be read stop the push with an error naming the file
 * and line: nothing is guessed (a sample without a timestamp has no window).
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import type { SeriesData } from '../client/writer.js';
import { groupedChunks, readSampleFile, SAMPLE_RECORD_BYTES } from '../client/writer-samples.js';
import { InvalidArgumentError } from '../errors.js';

/** Formats `strata push` reads. */
export const PUSH_FORMATS = ['bin', 'prom', 'openmetrics', 'csv'] as const;
export type PushFormat = (typeof PUSH_FORMATS)[number];

/** The format of `path` by its extension: .csv, .prom / .txt, .om / .openmetrics, else bin. */
export function formatOfPath(path: string): PushFormat {
  const ext = /\.([a-z]+)$/i.exec(path)?.[1]?.toLowerCase();
  if (ext === 'csv') return 'csv';
  if (ext === 'prom' || ext === 'txt') return 'prom';
  if (ext === 'om' || ext === 'openmetrics') return 'openmetrics';
  return 'bin';
}

/** How to read a file. */
export interface PushInput {
  readonly path: string;
  readonly format: PushFormat;
  /** Text formats: the label (prom, openmetrics) or column (csv) holding the series id. */
  readonly idField?: string;
  /** csv: the timestamp (int64 ms) and value columns; default `timestamp`, `value`. */
  readonly timestampColumn?: string;
  readonly valueColumn?: string;
  /** Samples per chunk. */
  readonly chunkSamples: number;
  /** Distinct series regrouped at a time, at most (default 65,536). */
  readonly chunkSeries?: number;
  /** Called with the bytes of the file read so far (for progress). */
  readonly onBytes?: (bytes: number) => void;
}

const U64_MAX = (1n << 64n) - 1n;
const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;

function bad(input: PushInput, line: number, what: string): InvalidArgumentError {
  return new InvalidArgumentError('samples file', `${input.path}:${line}: ${what}`);
}

/** A decimal uint64 series id. */
function parseId(s: string | undefined, input: PushInput, line: number): bigint {
  if (s === undefined || !/^\d{1,20}$/.test(s) || BigInt(s) > U64_MAX) throw bad(input, line, `series id ${JSON.stringify(s ?? null)} is not a decimal uint64`);
  return BigInt(s);
}

/** A decimal int64 millisecond timestamp. */
function parseMs(s: string | undefined, input: PushInput, line: number): bigint {
  if (s === undefined || !/^-?\d{1,19}$/.test(s)) throw bad(input, line, `timestamp ${JSON.stringify(s ?? null)} is not an integer of milliseconds`);
  const v = BigInt(s);
  if (v < I64_MIN || v > I64_MAX) throw bad(input, line, `timestamp ${s} is outside int64`);
  return v;
}

/** OpenMetrics seconds (`1795219200`, `1795219200.5`, at most millisecond precision) → ms. */
function parseSeconds(s: string | undefined, input: PushInput, line: number): bigint {
  const m = s === undefined ? null : /^(-?)(\d{1,16})(?:\.(\d{1,9}))?$/.exec(s);
  if (!m) throw bad(input, line, `timestamp ${JSON.stringify(s ?? null)} is not a number of seconds`);
  const frac = (m[3] ?? '').padEnd(3, '0');
  if (/[^0]/.test(frac.slice(3))) throw bad(input, line, `timestamp ${s} is finer than a millisecond`);
  const ms = BigInt(m[2]!) * 1000n + BigInt(frac.slice(0, 3));
  return m[1] === '-' ? -ms : ms;
}

/** A sample value: a decimal float, NaN, +Inf / Inf / -Inf. */
function parseValue(s: string | undefined, input: PushInput, line: number): number {
  switch (s) {
    case 'NaN':
      return NaN;
    case '+Inf':
    case 'Inf':
      return Infinity;
    case '-Inf':
      return -Infinity;
  }
  if (s === undefined || !/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(s)) throw bad(input, line, `value ${JSON.stringify(s ?? null)} is not a number`);
  const v = Number(s);
  // as Prometheus' parser (Go's ParseFloat) does: a decimal beyond the float64 range is an error,
  // not an infinity nobody wrote (those are spelled +Inf / -Inf)
  if (!Number.isFinite(v)) throw bad(input, line, `value ${s} is beyond the float64 range (write +Inf or -Inf for an infinity)`);
  return v;
}

/**
 * One exposition line `name{l="v",...} value timestamp` → its labels, value and timestamp
 * strings; null for comments and blank lines.
 */
export function splitExpositionLine(text: string): { labels: Map<string, string>; value: string; timestamp: string | undefined } | null | string {
  const s = text.trim();
  if (s === '' || s.startsWith('#')) return null;
  let i = 0;
  while (i < s.length && /[A-Za-z0-9_:]/.test(s[i]!)) i++;
  if (i === 0) return 'no metric name';
  const labels = new Map<string, string>();
  if (s[i] === '{') {
    i++;
    for (;;) {
      while (s[i] === ' ' || s[i] === ',') i++;
      if (s[i] === '}') {
        i++;
        break;
      }
      const start = i;
      while (i < s.length && /[A-Za-z0-9_]/.test(s[i]!)) i++;
      const name = s.slice(start, i);
      if (name === '' || s[i] !== '=' || s[i + 1] !== '"') return 'malformed labels';
      i += 2;
      let value = '';
      for (;;) {
        const c = s[i++];
        if (c === undefined) return 'unterminated label value';
        if (c === '"') break;
        if (c === '\\') {
          const e = s[i++];
          value += e === 'n' ? '\n' : (e ?? '');
        } else value += c;
      }
      if (labels.has(name)) return `the label "${name}" appears twice`;
      labels.set(name, value);
    }
  }
  const rest = s.slice(i).trim().split(/\s+/);
  if (rest.length < 1 || rest[0] === '') return 'no value';
  if (rest.length > 2) return 'more than a value and a timestamp (exemplars are not read)';
  return { labels, value: rest[0]!, timestamp: rest[1] };
}

/** Splits one CSV line (RFC 4180 quoting: "a,b" and "" inside quotes). */
export function splitCsvLine(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') {
        cur += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cur += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out.map((f) => f.trim());
}

/** Parses the lines of a text file into (id, ts, value) samples. */
type LineParser = (line: string, n: number) => { id: bigint; ts: bigint; value: number } | null;

function textParser(input: PushInput): LineParser {
  const idField = input.idField;
  if (idField === undefined) throw new InvalidArgumentError(input.format === 'csv' ? '--id-column' : '--id-label', `the ${input.format} format needs the ${input.format === 'csv' ? 'column' : 'label'} that holds the series id`);
  if (input.format === 'csv') {
    let cols: { id: number; ts: number; value: number; width: number } | null = null;
    return (line, n) => {
      if (line.trim() === '') return null;
      const fields = splitCsvLine(line);
      if (!cols) {
        const at = (name: string, flag: string): number => {
          const i = fields.indexOf(name);
          if (i < 0) throw bad(input, n, `the header has no column "${name}" (${flag}); it has ${fields.map((f) => JSON.stringify(f)).join(', ')}`);
          return i;
        };
        cols = { id: at(idField, '--id-column'), ts: at(input.timestampColumn ?? 'timestamp', '--timestamp-column'), value: at(input.valueColumn ?? 'value', '--value-column'), width: fields.length };
        return null;
      }
      if (fields.length !== cols.width) throw bad(input, n, `${fields.length} columns, the header has ${cols.width}`);
      return { id: parseId(fields[cols.id], input, n), ts: parseMs(fields[cols.ts], input, n), value: parseValue(fields[cols.value], input, n) };
    };
  }
  const seconds = input.format === 'openmetrics';
  /** Line of the OpenMetrics `# EOF`: the exposition ends there, nothing may follow. */
  let eofLine = 0;
  return (line, n) => {
    if (eofLine > 0) {
      if (line.trim() === '') return null;
      throw bad(input, n, `content after "# EOF" (line ${eofLine} ends the exposition)`);
    }
    if (seconds && line.trim() === '# EOF') {
      eofLine = n;
      return null;
    }
    const parts = splitExpositionLine(line);
    if (parts === null) return null;
    if (typeof parts === 'string') throw bad(input, n, parts);
    if (parts.timestamp === undefined) throw bad(input, n, 'the sample has no timestamp (push needs the time of every sample)');
    const id = parts.labels.get(idField);
    if (id === undefined) throw bad(input, n, `the sample has no label "${idField}" (--id-label)`);
    return { id: parseId(id, input, n), ts: seconds ? parseSeconds(parts.timestamp, input, n) : parseMs(parts.timestamp, input, n), value: parseValue(parts.value, input, n) };
  };
}

/**
 * Yields the samples of `input.path`, at most `chunkSamples` (and `chunkSeries` series) at a
 * time, as per-series columns
 * (ascending id, file order within a series).
 * @throws InvalidArgumentError naming the file and line of anything that does not parse.
 */
export async function* readPushInput(input: PushInput): AsyncGenerator<SeriesData[]> {
  if (input.format === 'bin') {
    const { size } = await stat(input.path);
    let read = 0;
    for await (const chunk of readSampleFile(input.path, input.chunkSamples, input.chunkSeries)) {
      for (const s of chunk) read += s.timestamps.length * SAMPLE_RECORD_BYTES;
      input.onBytes?.(Math.min(read, size));
      yield chunk;
    }
    return;
  }
  const parse = textParser(input);
  const stream = createReadStream(input.path);
  let bytes = 0;
  stream.on('data', (d) => {
    bytes += d.length;
    input.onBytes?.(bytes);
  });
  const records = Buffer.allocUnsafe(input.chunkSamples * SAMPLE_RECORD_BYTES);
  let n = 0;
  let lineNo = 0;
  for await (const line of createInterface({ input: stream, crlfDelay: Infinity })) {
    lineNo++;
    const s = parse(line, lineNo);
    if (!s) continue;
    const off = n * SAMPLE_RECORD_BYTES;
    records.writeBigUInt64LE(s.id, off);
    records.writeBigInt64LE(s.ts, off + 8);
    records.writeDoubleLE(s.value, off + 16);
    if (++n === input.chunkSamples) {
      yield* groupedChunks(records.subarray(0, n * SAMPLE_RECORD_BYTES), input.chunkSeries);
      n = 0;
    }
  }
  if (n > 0) yield* groupedChunks(records.subarray(0, n * SAMPLE_RECORD_BYTES), input.chunkSeries);
}
