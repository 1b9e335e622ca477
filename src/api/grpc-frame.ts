/**
 * gRPC's length-prefixed message framing over HTTP/2 (a 1-byte compressed flag, a 4-byte
 * big-endian length, the message). Pure: the decoder is fed the bytes of a stream in whatever
 * pieces the transport delivers and hands out whole messages, so it can be tested byte at a time.
 * grpc-js frames its own calls; this serves the query client's own HTTP/2 transport and tools that
 * speak gRPC by hand (tests, benches).
 */

/** Bytes of a frame's prefix. */
export const FRAME_PREFIX_BYTES = 5;

/** One message framed: flag 0 (not compressed), its length, its bytes. */
export function encodeFrame(message: Uint8Array, flag = 0): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_PREFIX_BYTES + message.length);
  frame[0] = flag;
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, FRAME_PREFIX_BYTES);
  return frame;
}

/** Why a stream's framing was refused. */
export class FrameError extends Error {
  constructor(
    readonly reason: 'compressed' | 'too_large',
    message: string,
  ) {
    super(message);
    this.name = 'FrameError';
  }
}

/**
 * Splits a stream of frames into messages. Messages are views of the fed chunks when a chunk holds
 * them whole; the bytes of a message split across chunks are joined once it is complete (no
 * quadratic copying).
 */
export class FrameDecoder {
  /** Chunks of an unfinished prefix or message. */
  private parts: Buffer[] = [];
  /** Their total length. */
  private held = 0;
  /** The length that completes them: the prefix, then the prefix and the message. */
  private needed = 0;

  /**
   * @param maxMessageBytes longest message accepted
   * @param compressionAllowed whether a frame may carry the compressed flag (only when the stream
   *   declared an encoding); without it a compressed frame is refused
   */
  constructor(
    readonly maxMessageBytes: number,
    readonly compressionAllowed = false,
  ) {}

  /** True when the bytes fed so far end inside a frame. */
  get partial(): boolean {
    return this.held > 0;
  }

  /**
   * Feeds the next bytes of the stream and calls `onMessage` for every message they complete, in
   * order. An exception of `onMessage` stops the feeding and propagates.
   * @throws FrameError for a compressed frame (when not allowed) or a message over the limit
   */
  push(chunk: Buffer, onMessage: (message: Buffer, compressed: boolean) => void): void {
    let buf: Buffer;
    if (this.held === 0) buf = chunk;
    else {
      this.parts.push(chunk);
      this.held += chunk.length;
      if (this.held < this.needed) return;
      buf = Buffer.concat(this.parts, this.held);
      this.parts = [];
      this.held = 0;
    }
    let at = 0;
    while (buf.length - at >= FRAME_PREFIX_BYTES) {
      const flag = buf[at]!;
      const len = buf.readUInt32BE(at + 1);
      if (flag !== 0 && (flag !== 1 || !this.compressionAllowed)) {
        throw new FrameError('compressed', `a message is flagged as compressed (flag ${flag}), and no compression was agreed`);
      }
      if (len > this.maxMessageBytes) {
        throw new FrameError('too_large', `a message of ${len} bytes is over the limit of ${this.maxMessageBytes}`);
      }
      if (buf.length - at - FRAME_PREFIX_BYTES < len) break;
      const msg = buf.subarray(at + FRAME_PREFIX_BYTES, at + FRAME_PREFIX_BYTES + len);
      at += FRAME_PREFIX_BYTES + len;
      onMessage(msg, flag === 1);
    }
    if (at < buf.length) {
      const rest = buf.subarray(at);
      this.parts = [rest];
      this.held = rest.length;
      this.needed = this.held >= FRAME_PREFIX_BYTES ? FRAME_PREFIX_BYTES + rest.readUInt32BE(1) : FRAME_PREFIX_BYTES;
    }
  }
}
