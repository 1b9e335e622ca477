/**
 * A strict walk over protobuf wire bytes, run before protobufjs decodes a Writer request.
 *
 * protobufjs (behind @grpc/proto-loader) is lenient where the protobuf encoding spec is not: it
 * accepts field number 0 and decodes a known field from a wire type that cannot carry it (a
 * SealRequest whose `window_start_ms` came as a group start was read as 12). Such bytes are no
 * message of the .proto; this walk refuses them, naming the message and field, so the request is
 * answered INVALID_ARGUMENT and nothing of it is used. Unknown fields with a valid wire type stay
 * allowed (proto3 skips them).
 */
import type { PackageDefinition } from '@grpc/proto-loader';
import { ProtoDecodeError } from './read-codec.js';

const VARINT = 0;
const I64 = 1;
const LEN = 2;
const I32 = 5;

/** The wire type each scalar type is written with (packed repeated scalars also come as LEN). */
const WIRE_OF: Record<string, number> = {
  TYPE_DOUBLE: I64, TYPE_FIXED64: I64, TYPE_SFIXED64: I64,
  TYPE_FLOAT: I32, TYPE_FIXED32: I32, TYPE_SFIXED32: I32,
  TYPE_INT64: VARINT, TYPE_UINT64: VARINT, TYPE_INT32: VARINT, TYPE_UINT32: VARINT,
  TYPE_SINT64: VARINT, TYPE_SINT32: VARINT, TYPE_BOOL: VARINT, TYPE_ENUM: VARINT,
  TYPE_STRING: LEN, TYPE_BYTES: LEN, TYPE_MESSAGE: LEN,
};

interface FieldRule {
  readonly name: string;
  readonly wire: number;
  /** A repeated scalar: LEN (packed) is accepted too. */
  readonly packable: boolean;
  /** For message fields, the nested message's rules (resolved lazily: types may recurse). */
  readonly message: string | null;
}

/** The wire rules of one message type. */
export interface MessageRules {
  readonly name: string;
  readonly fields: ReadonlyMap<number, FieldRule>;
}

interface DescriptorField {
  name: string;
  number: number;
  label: string;
  type: string;
  typeName: string;
}

/** Builds the rules of every message of a proto-loader package definition. */
export function messageRules(def: PackageDefinition): ReadonlyMap<string, MessageRules> {
  const out = new Map<string, MessageRules>();
  for (const [fullName, entry] of Object.entries(def)) {
    const type = (entry as { type?: { field?: DescriptorField[] } }).type;
    if (type === undefined || !Array.isArray(type.field)) continue;
    const pkg = fullName.slice(0, fullName.lastIndexOf('.'));
    const fields = new Map<number, FieldRule>();
    for (const f of type.field) {
      const wire = WIRE_OF[f.type];
      if (wire === undefined) throw new Error(`${fullName}.${f.name}: unsupported type ${f.type}`);
      fields.set(f.number, {
        name: f.name,
        wire,
        packable: f.label === 'LABEL_REPEATED' && wire !== LEN,
        message: f.type === 'TYPE_MESSAGE' ? (f.typeName.includes('.') ? f.typeName.replace(/^\./, '') : `${pkg}.${f.typeName}`) : null,
      });
    }
    out.set(fullName, { name: fullName.slice(pkg.length + 1), fields });
  }
  return out;
}

/**
 * Walks `buf` as a message of `type`, recursing into message fields.
 * @throws ProtoDecodeError naming the message and field, for bytes that are no such message.
 */
export function checkWire(buf: Uint8Array, type: string, rules: ReadonlyMap<string, MessageRules>, depth = 0): void {
  const msg = rules.get(type);
  if (msg === undefined) throw new Error(`no wire rules for ${type}`);
  if (depth > 32) throw new ProtoDecodeError(`${msg.name}: messages nested deeper than 32`);
  let pos = 0;
  const varint = (what: string): number => {
    let v = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (pos >= buf.length) throw new ProtoDecodeError(`${msg.name}: truncated varint (${what})`);
      const b = buf[pos++]!;
      v += (b & 127) * mul;
      if (b < 128) {
        if (i === 9 && b > 1) throw new ProtoDecodeError(`${msg.name}: varint longer than 64 bits (${what})`);
        return v;
      }
      mul *= 128;
    }
    throw new ProtoDecodeError(`${msg.name}: varint longer than 10 bytes (${what})`);
  };
  while (pos < buf.length) {
    const tag = varint('tag');
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    const rule = msg.fields.get(field);
    const label = rule ? `field ${field} (${rule.name})` : `field ${field}`;
    if (field === 0 || field > 536_870_911) throw new ProtoDecodeError(`${msg.name}: ${label}: invalid field number`);
    if (rule !== undefined && wire !== rule.wire && !(rule.packable && wire === LEN)) {
      throw new ProtoDecodeError(`${msg.name}: ${label} has wire type ${wire}, expected ${rule.wire}`);
    }
    if (wire === VARINT) varint(label);
    else if (wire === I64 || wire === I32) {
      pos += wire === I64 ? 8 : 4;
      if (pos > buf.length) throw new ProtoDecodeError(`${msg.name}: ${label} runs past the message`);
    } else if (wire === LEN) {
      const n = varint(label);
      const end = pos + n;
      if (end > buf.length) throw new ProtoDecodeError(`${msg.name}: ${label} of ${n} bytes runs past the message`);
      if (rule?.message != null) checkWire(buf.subarray(pos, end), rule.message, rules, depth + 1);
      pos = end;
    } else throw new ProtoDecodeError(`${msg.name}: ${label} has wire type ${wire}, which proto3 never writes`);
  }
}
