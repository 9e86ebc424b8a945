/**
 * Strata's sparse stream: an image's bytes with its runs of zeroes named instead of sent, the
 * transfer encoding of content exports and imports over HTTP (docs/daemon.md, "Content"). A line
 * of JSON
 *   {"format":"strata-sparse","version":1,"sizeBytes":N}\n
 * then the records of the diff stream (diff-stream.ts: 'd' data, 'z' zeroes, 'e' end) in order,
 * each starting where the previous one ended, covering [0, sizeBytes) exactly, then 'e'. A reader
 * writes the data records and seeks over the zero records (a sparse file), or writes zeroes from
 * memory (a pipe): an empty 10 GiB volume is a few dozen bytes on the wire.
 *
 * Producers and consumers meet in ContentPiece: the bytes of an image in order, as data (bytes
 * to write) or a run of zeroes (a length).
 */
import { MiB } from '../core/units.js';
import { ByteReader, encodeRecordHeader, readRecordHeader, readStreamHeader } from './diff-stream.js';
import { COPY_CHUNK_BYTES, isZero } from './extents.js';

export const SPARSE_FORMAT = 'strata-sparse';
export const SPARSE_VERSION = 1;
export const SPARSE_STREAM_NAME = 'sparse stream';

/** How content travels: every byte ('bytes'), or a sparse stream ('sparse'). */
export const TRANSFER_ENCODINGS = ['bytes', 'sparse'] as const;
export type TransferEncoding = (typeof TRANSFER_ENCODINGS)[number];

/** One run of an image's bytes, in order: data, or `length` zeroes. */
export type ContentPiece = { kind: 'data'; offset: number; bytes: Uint8Array } | { kind: 'zero'; offset: number; length: number };

export function pieceLength(piece: ContentPiece): number {
  return piece.kind === 'data' ? piece.bytes.length : piece.length;
}

/** Zero runs of a plain byte stream go out as slices of one buffer this large. */
const ZERO_SLICE_BYTES = 4 * MiB;
let zeroSlice: Uint8Array | undefined;

/**
 * One shared buffer of zeroes, allocated once. Every holder only reads it (sockets and pipes keep
 * a reference while they send): nothing may write into it.
 */
export function sharedZeroes(): Uint8Array {
  zeroSlice ??= new Uint8Array(ZERO_SLICE_BYTES);
  return zeroSlice;
}

/** The pieces as plain bytes: data as it is, zero runs as slices of the shared zero buffer. */
export async function* plainBytes(pieces: AsyncIterable<ContentPiece>): AsyncGenerator<Uint8Array, void, undefined> {
  for await (const piece of pieces) {
    if (piece.kind === 'data') {
      yield piece.bytes;
      continue;
    }
    const zeroes = sharedZeroes();
    for (let left = piece.length; left > 0; ) {
      const n = Math.min(left, zeroes.length);
      yield zeroes.subarray(0, n);
      left -= n;
    }
  }
}

export function encodeSparseHeader(sizeBytes: number): Uint8Array {
  return new TextEncoder().encode(`${JSON.stringify({ format: SPARSE_FORMAT, version: SPARSE_VERSION, sizeBytes })}\n`);
}

/**
 * The pieces as a sparse stream. Data pieces that are all zeroes (allocated but zero) travel as
 * zero records too, and adjacent zero runs become one record.
 */
export async function* sparseRecords(pieces: AsyncIterable<ContentPiece>, sizeBytes: number): AsyncGenerator<Uint8Array, void, undefined> {
  yield encodeSparseHeader(sizeBytes);
  let pos = 0;
  let zeroRunBytes = 0;
  for await (const piece of pieces) {
    const length = pieceLength(piece);
    if (piece.offset !== pos) throw new Error(`content piece at ${piece.offset} does not follow the previous one (ending at ${pos})`);
    if (piece.kind === 'zero' || isZero(piece.bytes)) {
      zeroRunBytes += length;
    } else {
      if (zeroRunBytes > 0) yield encodeRecordHeader('z', pos - zeroRunBytes, zeroRunBytes);
      zeroRunBytes = 0;
      yield encodeRecordHeader('d', pos, length);
      yield piece.bytes;
    }
    pos += length;
  }
  if (pos !== sizeBytes) throw new Error(`the content ended at ${pos}, not at its size ${sizeBytes}`);
  if (zeroRunBytes > 0) yield encodeRecordHeader('z', pos - zeroRunBytes, zeroRunBytes);
  yield encodeRecordHeader('e', 0, 0);
}

/** The pieces in the given transfer encoding. */
export function encodeContent(pieces: AsyncIterable<ContentPiece>, sizeBytes: number, encoding: TransferEncoding): AsyncGenerator<Uint8Array, void, undefined> {
  return encoding === 'sparse' ? sparseRecords(pieces, sizeBytes) : plainBytes(pieces);
}

/** A sparse stream read from `source`: its size, and its pieces (checked as they arrive). */
export async function readSparseStream(source: AsyncIterable<Uint8Array>): Promise<{ sizeBytes: number; pieces: AsyncGenerator<ContentPiece, void, undefined> }> {
  const reader = new ByteReader(source, SPARSE_STREAM_NAME);
  const { sizeBytes } = await readStreamHeader(reader, SPARSE_FORMAT, SPARSE_VERSION);
  return { sizeBytes, pieces: sparsePieces(reader, sizeBytes) };
}

/**
 * The pieces of a sparse stream after its header: records must follow each other and end exactly
 * at sizeBytes. Data comes as the source delivers it, in pieces of at most maxPieceBytes.
 */
async function* sparsePieces(reader: ByteReader, sizeBytes: number, maxPieceBytes = COPY_CHUNK_BYTES): AsyncGenerator<ContentPiece, void, undefined> {
  let pos = 0;
  for (;;) {
    const record = await readRecordHeader(reader, sizeBytes);
    if (record.kind === 'e') break;
    if (record.offset !== pos) throw reader.invalid(`the record at ${record.offset} does not start where the previous one ended (${pos})`);
    if (record.kind === 'z') {
      if (record.length > 0) yield { kind: 'zero', offset: pos, length: record.length };
      pos += record.length;
      continue;
    }
    for (const end = pos + record.length; pos < end; ) {
      const bytes = await reader.readSome(Math.min(maxPieceBytes, end - pos));
      if (bytes === undefined) throw reader.invalid('the stream ends inside a data record');
      yield { kind: 'data', offset: pos, bytes };
      pos += bytes.length;
    }
  }
  if (pos !== sizeBytes) throw reader.invalid(`the records end at ${pos}, short of the size ${sizeBytes}`);
  if (!(await reader.atEnd())) throw reader.invalid("bytes follow the end record ('e')");
}
