/**
 * NBD wire protocol (fixed newstyle handshake, simple and structured replies): constants and codecs.
 * Every constant of the protocol is named here once; server.ts uses only these names.
 * Reference: the NBD protocol document (NetworkBlockDevice/nbd, doc/proto.md). All integers are
 * big-endian (network byte order).
 */

// --- handshake ---------------------------------------------------------------------------------
export const NBD_MAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
export const NBD_IHAVEOPT = 0x49484156454f5054n; // "IHAVEOPT"
export const NBD_OPTION_REPLY_MAGIC = 0x3e889045565a9n;

/** Handshake flags (server -> client, 16 bits). */
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
/** Client flags (client -> server, 32 bits). */
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;
export const NBD_CLIENT_FLAGS_KNOWN = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

/** Options (client -> server). */
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;

/** Option reply types. Errors have bit 31 set. */
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = (NBD_REP_FLAG_ERROR | 1) >>> 0;
export const NBD_REP_ERR_POLICY = (NBD_REP_FLAG_ERROR | 2) >>> 0;
export const NBD_REP_ERR_INVALID = (NBD_REP_FLAG_ERROR | 3) >>> 0;
export const NBD_REP_ERR_PLATFORM = (NBD_REP_FLAG_ERROR | 4) >>> 0;
export const NBD_REP_ERR_TLS_REQD = (NBD_REP_FLAG_ERROR | 5) >>> 0;
export const NBD_REP_ERR_UNKNOWN = (NBD_REP_FLAG_ERROR | 6) >>> 0;
export const NBD_REP_ERR_SHUTDOWN = (NBD_REP_FLAG_ERROR | 7) >>> 0;
export const NBD_REP_ERR_TOO_BIG = (NBD_REP_FLAG_ERROR | 9) >>> 0;

/** NBD_INFO_* items of NBD_REP_INFO (NBD_OPT_INFO / NBD_OPT_GO). */
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

/** Transmission flags (16 bits, per export). */
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

/** The one metadata context this server offers. */
export const NBD_META_NAMESPACE_BASE = 'base:';
export const NBD_META_BASE_ALLOCATION = 'base:allocation';
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;

// --- transmission ------------------------------------------------------------------------------
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;
export const NBD_REQUEST_HEADER_BYTES = 28;
export const NBD_SIMPLE_REPLY_BYTES = 16;
export const NBD_STRUCTURED_HEADER_BYTES = 20;

/** Command flags. */
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;

/** Commands. */
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;

/** Structured reply chunk flags and types. */
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;

/** Error values on the wire (Linux errno numbers, as the protocol fixes them). */
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;
/** The errors' names, for log lines that say what a client was told. */
export const NBD_ERRNO_NAMES: Readonly<Record<number, string>> = {
  [NBD_EPERM]: 'EPERM',
  [NBD_EIO]: 'EIO',
  [NBD_ENOMEM]: 'ENOMEM',
  [NBD_EINVAL]: 'EINVAL',
  [NBD_ENOSPC]: 'ENOSPC',
  [NBD_EOVERFLOW]: 'EOVERFLOW',
  [NBD_ENOTSUP]: 'ENOTSUP',
  [NBD_ESHUTDOWN]: 'ESHUTDOWN',
};

// --- codecs ------------------------------------------------------------------------------------

/** The server's first message: NBDMAGIC, IHAVEOPT, handshake flags. */
export function encodeServerGreeting(handshakeFlags: number): Buffer {
  const b = Buffer.allocUnsafe(18);
  b.writeBigUInt64BE(NBD_MAGIC, 0);
  b.writeBigUInt64BE(NBD_IHAVEOPT, 8);
  b.writeUInt16BE(handshakeFlags, 16);
  return b;
}

export const OPTION_HEADER_BYTES = 16;

export interface OptionHeader {
  magic: bigint;
  option: number;
  lengthBytes: number;
}

export function decodeOptionHeader(b: Buffer): OptionHeader {
  return { magic: b.readBigUInt64BE(0), option: b.readUInt32BE(8), lengthBytes: b.readUInt32BE(12) };
}

/** One option reply: magic, option, reply type, length, data. */
export function encodeOptionReply(option: number, replyType: number, data?: Uint8Array): Buffer {
  const len = data?.length ?? 0;
  const b = Buffer.allocUnsafe(20 + len);
  b.writeBigUInt64BE(NBD_OPTION_REPLY_MAGIC, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(replyType >>> 0, 12);
  b.writeUInt32BE(len, 16);
  if (data) b.set(data, 20);
  return b;
}

/** Data of NBD_REP_SERVER: u32 name length, name, description. */
export function encodeRepServer(name: string, description: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const d = Buffer.from(description, 'utf8');
  const b = Buffer.allocUnsafe(4 + n.length + d.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  d.copy(b, 4 + n.length);
  return b;
}

export function encodeInfoExport(sizeBytes: number, transmissionFlags: number): Buffer {
  const b = Buffer.allocUnsafe(12);
  b.writeUInt16BE(NBD_INFO_EXPORT, 0);
  b.writeBigUInt64BE(BigInt(sizeBytes), 2);
  b.writeUInt16BE(transmissionFlags, 10);
  return b;
}

/** NBD_INFO_NAME or NBD_INFO_DESCRIPTION: u16 type, string. */
export function encodeInfoString(infoType: number, text: string): Buffer {
  const t = Buffer.from(text, 'utf8');
  const b = Buffer.allocUnsafe(2 + t.length);
  b.writeUInt16BE(infoType, 0);
  t.copy(b, 2);
  return b;
}

export function encodeInfoBlockSize(minimum: number, preferred: number, maximum: number): Buffer {
  const b = Buffer.allocUnsafe(14);
  b.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
  b.writeUInt32BE(minimum, 2);
  b.writeUInt32BE(preferred, 6);
  b.writeUInt32BE(maximum, 10);
  return b;
}

/** Data of NBD_REP_META_CONTEXT: u32 context id, name. */
export function encodeRepMetaContext(contextId: number, name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.allocUnsafe(4 + n.length);
  b.writeUInt32BE(contextId, 0);
  n.copy(b, 4);
  return b;
}

/** Reply to NBD_OPT_EXPORT_NAME: u64 size, u16 flags, 124 zero bytes unless NO_ZEROES. */
export function encodeExportNameReply(sizeBytes: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(noZeroes ? 10 : 134);
  b.writeBigUInt64BE(BigInt(sizeBytes), 0);
  b.writeUInt16BE(transmissionFlags, 8);
  return b;
}

/** A strict reader over option data: every read checks bounds; `ok` turns false on overrun. */
export class OptionReader {
  private pos = 0;
  ok = true;
  constructor(private readonly data: Buffer) {}

  get remaining(): number {
    return this.data.length - this.pos;
  }

  u16(): number {
    if (this.remaining < 2) return this.fail();
    const v = this.data.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  u32(): number {
    if (this.remaining < 4) return this.fail();
    const v = this.data.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  /** A string of `lengthBytes` bytes; fails on overrun, on more than 4096 bytes and on NUL. */
  string(lengthBytes: number): string {
    if (!this.ok || lengthBytes > this.remaining || lengthBytes > NBD_STRING_MAX_BYTES) {
      this.fail();
      return '';
    }
    const s = this.data.toString('utf8', this.pos, this.pos + lengthBytes);
    this.pos += lengthBytes;
    if (s.includes('\0')) this.fail();
    return s;
  }

  private fail(): number {
    this.ok = false;
    this.pos = this.data.length;
    return 0;
  }
}

export const NBD_STRING_MAX_BYTES = 4096;

export interface RequestHeader {
  magic: number;
  flags: number;
  type: number;
  /** The client's 64-bit cookie (handle), kept as raw bytes and echoed back unchanged. */
  cookieHi: number;
  cookieLo: number;
  /** Offset as a number; values above 2^53 come out imprecise but are rejected as out of range. */
  offset: number;
  lengthBytes: number;
}

export function decodeRequestHeader(b: Buffer): RequestHeader {
  return {
    magic: b.readUInt32BE(0),
    flags: b.readUInt16BE(4),
    type: b.readUInt16BE(6),
    cookieHi: b.readUInt32BE(8),
    cookieLo: b.readUInt32BE(12),
    offset: b.readUInt32BE(16) * 0x1_0000_0000 + b.readUInt32BE(20),
    lengthBytes: b.readUInt32BE(24),
  };
}

export function encodeRequestHeader(h: Omit<RequestHeader, 'magic'> & { magic?: number }): Buffer {
  const b = Buffer.allocUnsafe(NBD_REQUEST_HEADER_BYTES);
  b.writeUInt32BE((h.magic ?? NBD_REQUEST_MAGIC) >>> 0, 0);
  b.writeUInt16BE(h.flags, 4);
  b.writeUInt16BE(h.type, 6);
  b.writeUInt32BE(h.cookieHi >>> 0, 8);
  b.writeUInt32BE(h.cookieLo >>> 0, 12);
  b.writeUInt32BE(Math.floor(h.offset / 0x1_0000_0000) >>> 0, 16);
  b.writeUInt32BE(h.offset >>> 0, 20);
  b.writeUInt32BE(h.lengthBytes >>> 0, 24);
  return b;
}

/** Simple reply: magic, error, cookie. `into` may be a larger buffer (data follows at byte 16). */
export function encodeSimpleReply(error: number, cookieHi: number, cookieLo: number, into?: Buffer): Buffer {
  const b = into ?? Buffer.allocUnsafe(NBD_SIMPLE_REPLY_BYTES);
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  b.writeUInt32BE(cookieHi, 8);
  b.writeUInt32BE(cookieLo, 12);
  return b;
}

/** Structured reply chunk header: magic, flags, type, cookie, payload length. */
export function encodeStructuredHeader(
  into: Buffer,
  flags: number,
  type: number,
  cookieHi: number,
  cookieLo: number,
  payloadBytes: number,
): Buffer {
  into.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  into.writeUInt16BE(flags, 4);
  into.writeUInt16BE(type, 6);
  into.writeUInt32BE(cookieHi, 8);
  into.writeUInt32BE(cookieLo, 12);
  into.writeUInt32BE(payloadBytes, 16);
  return into;
}

function writeU64(b: Buffer, value: number, at: number): void {
  b.writeUInt32BE(Math.floor(value / 0x1_0000_0000), at);
  b.writeUInt32BE(value >>> 0, at + 4);
}

/** Header of an NBD_REPLY_TYPE_OFFSET_DATA chunk (20 + 8 bytes); `dataBytes` follow it. */
export const OFFSET_DATA_HEADER_BYTES = NBD_STRUCTURED_HEADER_BYTES + 8;
export function encodeOffsetDataHeader(
  into: Buffer,
  flags: number,
  cookieHi: number,
  cookieLo: number,
  offset: number,
  dataBytes: number,
): Buffer {
  encodeStructuredHeader(into, flags, NBD_REPLY_TYPE_OFFSET_DATA, cookieHi, cookieLo, 8 + dataBytes);
  writeU64(into, offset, 20);
  return into;
}

/** A whole NBD_REPLY_TYPE_OFFSET_HOLE chunk: u64 offset, u32 hole size. */
export function encodeOffsetHole(flags: number, cookieHi: number, cookieLo: number, offset: number, holeBytes: number): Buffer {
  const b = Buffer.allocUnsafe(NBD_STRUCTURED_HEADER_BYTES + 12);
  encodeStructuredHeader(b, flags, NBD_REPLY_TYPE_OFFSET_HOLE, cookieHi, cookieLo, 12);
  writeU64(b, offset, 20);
  b.writeUInt32BE(holeBytes, 28);
  return b;
}

/** A whole NBD_REPLY_TYPE_BLOCK_STATUS chunk: u32 context id, then (u32 length, u32 flags) each. */
export function encodeBlockStatus(
  flags: number,
  cookieHi: number,
  cookieLo: number,
  contextId: number,
  descriptors: readonly { lengthBytes: number; status: number }[],
): Buffer {
  const payload = 4 + 8 * descriptors.length;
  const b = Buffer.allocUnsafe(NBD_STRUCTURED_HEADER_BYTES + payload);
  encodeStructuredHeader(b, flags, NBD_REPLY_TYPE_BLOCK_STATUS, cookieHi, cookieLo, payload);
  b.writeUInt32BE(contextId, 20);
  let at = 24;
  for (const d of descriptors) {
    b.writeUInt32BE(d.lengthBytes, at);
    b.writeUInt32BE(d.status, at + 4);
    at += 8;
  }
  return b;
}

/** A whole NBD_REPLY_TYPE_ERROR chunk: u32 error, u16 message length, message. */
export function encodeErrorChunk(flags: number, cookieHi: number, cookieLo: number, error: number, message: string): Buffer {
  const m = Buffer.from(message.slice(0, 1024), 'utf8');
  const payload = 6 + m.length;
  const b = Buffer.allocUnsafe(NBD_STRUCTURED_HEADER_BYTES + payload);
  encodeStructuredHeader(b, flags, NBD_REPLY_TYPE_ERROR, cookieHi, cookieLo, payload);
  b.writeUInt32BE(error, 20);
  b.writeUInt16BE(m.length, 24);
  m.copy(b, 26);
  return b;
}

/** A whole NBD_REPLY_TYPE_NONE chunk (used with the DONE flag to end a reply). */
export function encodeNoneChunk(flags: number, cookieHi: number, cookieLo: number): Buffer {
  return encodeStructuredHeader(Buffer.allocUnsafe(NBD_STRUCTURED_HEADER_BYTES), flags, NBD_REPLY_TYPE_NONE, cookieHi, cookieLo, 0);
}
