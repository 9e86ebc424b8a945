/**
 * Strata's diff stream (docs/daemon.md): a line of JSON
 *   {"format":"strata-diff","version":1,"sizeBytes":N,"from":A|null,"to":B|null}\n
 * then records: 1 byte kind ('d' data, 'z' zeroes, 'e' end), u64 big-endian offset, u64 big-endian
 * length, and for 'd' the bytes. Nothing may follow the 'e' record.
 */
import { StorageError } from '../core/errors.js';

export const DIFF_FORMAT = 'strata-diff';
export const DIFF_VERSION = 1;
const MAX_HEADER_BYTES = 4096;
export const RECORD_HEADER_BYTES = 17;

export interface DiffHeader {
  sizeBytes: number;
  from: string | null;
  to: string | null;
}

export type DiffRecordKind = 'd' | 'z' | 'e';

export function encodeDiffHeader(header: DiffHeader): Uint8Array {
  const line = JSON.stringify({ format: DIFF_FORMAT, version: DIFF_VERSION, sizeBytes: header.sizeBytes, from: header.from, to: header.to });
  return new TextEncoder().encode(`${line}\n`);
}

export function encodeRecordHeader(kind: DiffRecordKind, offset: number, length: number): Uint8Array {
  const bytes = new Uint8Array(RECORD_HEADER_BYTES);
  const view = new DataView(bytes.buffer);
  bytes[0] = kind.charCodeAt(0);
  view.setBigUint64(1, BigInt(offset));
  view.setBigUint64(9, BigInt(length));
  return bytes;
}

function invalid(message: string, streamName = 'diff stream'): StorageError {
  return new StorageError('INVALID_ARGUMENT', `invalid ${streamName}: ${message}`);
}

/** Reads an AsyncIterable of byte chunks as a sequence of exact-length pieces. */
export class ByteReader {
  private readonly iterator: AsyncIterator<Uint8Array>;
  private pending: Uint8Array = new Uint8Array(0);
  private ended = false;
  /** Bytes handed out so far. */
  consumed = 0;

  /** streamName: what its errors call the stream ("diff stream", "sparse stream"). */
  constructor(
    source: AsyncIterable<Uint8Array>,
    readonly streamName = 'diff stream',
  ) {
    this.iterator = source[Symbol.asyncIterator]();
  }

  /** An INVALID_ARGUMENT error about this stream. */
  invalid(message: string): StorageError {
    return invalid(message, this.streamName);
  }

  /** Fills `pending` with at least one byte; false at the end of the stream. */
  private async fill(): Promise<boolean> {
    while (this.pending.length === 0) {
      if (this.ended) return false;
      const next = await this.iterator.next();
      if (next.done) {
        this.ended = true;
        return false;
      }
      this.pending = next.value instanceof Uint8Array ? next.value : new Uint8Array(next.value as ArrayBufferLike);
    }
    return true;
  }

  /** Up to max bytes (at least one), or undefined at the end of the stream. */
  async readSome(max: number): Promise<Uint8Array | undefined> {
    if (!(await this.fill())) return undefined;
    const n = Math.min(max, this.pending.length);
    const out = this.pending.subarray(0, n);
    this.pending = this.pending.subarray(n);
    this.consumed += n;
    return out;
  }

  /** Exactly n bytes (copied), or undefined if the stream ends before the first byte; a partial read throws. */
  async readExact(n: number, what: string): Promise<Uint8Array | undefined> {
    const out = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      const piece = await this.readSome(n - got);
      if (piece === undefined) {
        if (got === 0) return undefined;
        throw this.invalid(`the stream ends inside ${what}`);
      }
      out.set(piece, got);
      got += piece.length;
    }
    return out;
  }

  /** A line ending in '\n' (without it), at most max bytes. */
  async readLine(max: number): Promise<string> {
    const bytes: number[] = [];
    for (;;) {
      const piece = await this.readSome(1);
      if (piece === undefined) throw this.invalid('the stream ends inside its header line');
      if (piece[0] === 0x0a) break;
      bytes.push(piece[0]!);
      if (bytes.length > max) throw this.invalid(`the header line is longer than ${max} bytes`);
    }
    return new TextDecoder().decode(new Uint8Array(bytes));
  }

  /** True when nothing more follows. */
  async atEnd(): Promise<boolean> {
    return !(await this.fill());
  }

  async close(): Promise<void> {
    await this.iterator.return?.();
  }
}

/**
 * Reads a stream's JSON header line and checks its format name, version and sizeBytes (the
 * fields every Strata stream header has); returns the parsed header for the caller's own fields.
 */
export async function readStreamHeader(
  reader: ByteReader,
  format: string,
  version: number,
): Promise<Record<string, unknown> & { sizeBytes: number }> {
  const line = await reader.readLine(MAX_HEADER_BYTES);
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    throw reader.invalid('the first line is not JSON');
  }
  const h = parsed as Record<string, unknown> | null;
  if (h === null || typeof h !== 'object' || h.format !== format) throw reader.invalid(`the header's format is not "${format}"`);
  if (h.version !== version) throw reader.invalid(`version ${String(h.version)} is not supported (this Strata reads ${version})`);
  const sizeBytes = h.sizeBytes;
  if (typeof sizeBytes !== 'number' || !Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) throw reader.invalid('sizeBytes must be a positive integer');
  return { ...h, sizeBytes };
}

export async function readDiffHeader(reader: ByteReader): Promise<DiffHeader> {
  const h = await readStreamHeader(reader, DIFF_FORMAT, DIFF_VERSION);
  const point = (v: unknown, name: string): string | null => {
    if (v === null || v === undefined) return null;
    if (typeof v !== 'string') throw reader.invalid(`${name} must be a snapshot name or null`);
    return v;
  };
  return { sizeBytes: h.sizeBytes, from: point(h.from, 'from'), to: point(h.to, 'to') };
}

export interface DiffRecordHeader {
  kind: DiffRecordKind;
  offset: number;
  length: number;
}

/** The next record's header, checked against the volume size; the caller then reads 'd' data. */
export async function readRecordHeader(reader: ByteReader, sizeBytes: number): Promise<DiffRecordHeader> {
  const bytes = await reader.readExact(RECORD_HEADER_BYTES, 'a record header');
  if (bytes === undefined) throw reader.invalid("the stream ends without its end record ('e')");
  const view = new DataView(bytes.buffer);
  const kindByte = String.fromCharCode(bytes[0]!);
  if (kindByte !== 'd' && kindByte !== 'z' && kindByte !== 'e') throw reader.invalid(`unknown record kind byte 0x${bytes[0]!.toString(16)}`);
  const offset = view.getBigUint64(1);
  const length = view.getBigUint64(9);
  if (kindByte !== 'e') {
    if (offset + length > BigInt(sizeBytes)) throw reader.invalid(`record at ${offset} of ${length} bytes lies past the end (${sizeBytes})`);
  }
  return { kind: kindByte, offset: Number(offset), length: kindByte === 'e' ? 0 : Number(length) };
}
