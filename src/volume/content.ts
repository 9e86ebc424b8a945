/**
 * Content pieces (sparse-stream.ts) from and into images: what an export reads (an opened chain,
 * or a file), and what an import writes. Holes are found in the allocation map (qcow2) or with
 * SEEK_DATA/SEEK_HOLE (files) and never read; zeroes are never written.
 */
import { allocAligned } from '../sys/aligned-buffer.js';
import { StorageError } from '../core/errors.js';
import { formatSizeHuman } from '../core/units.js';
import type { HostFile } from '../core/host-file.js';
import type { LayerRef, LayerStore } from '../core/layer-store.js';
import type { Qcow2Image } from '../../formats/qcow2/index.js';
import { isSeekableHostFile } from '../../formats/raw/index.js';
import { chainMap, COPY_CHUNK_BYTES, MAP_WINDOW_BYTES, writeSparse } from './extents.js';
import type { JobContext } from './jobs.js';
import { openLayerAlone } from './layers.js';
import { pieceLength, type ContentPiece } from './sparse-stream.js';

/** The offset of the next COPY_CHUNK_BYTES boundary after pos, capped at end. */
function chunkEnd(pos: number, end: number): number {
  return Math.min(end, Math.floor(pos / COPY_CHUNK_BYTES) * COPY_CHUNK_BYTES + COPY_CHUNK_BYTES);
}

/**
 * What the chain from `image` down reads, in order: zero runs (unallocated or zero clusters, in
 * whole map extents) and data in chunks of at most COPY_CHUNK_BYTES.
 */
export async function* chainPieces(image: Qcow2Image): AsyncGenerator<ContentPiece, void, undefined> {
  const size = image.sizeBytes;
  for (let windowStart = 0; windowStart < size; ) {
    const windowEnd = Math.min(size, windowStart + MAP_WINDOW_BYTES);
    for (const extent of await chainMap(image, windowStart, windowEnd)) {
      const end = extent.offset + extent.length;
      if (extent.kind === 'zero') {
        yield { kind: 'zero', offset: extent.offset, length: extent.length };
        continue;
      }
      for (let pos = extent.offset; pos < end; ) {
        const n = chunkEnd(pos, end) - pos;
        // A fresh buffer per chunk: the consumer may keep it (a socket's write queue does).
        const bytes = allocAligned(n);
        await image.read(pos, bytes);
        yield { kind: 'data', offset: pos, bytes };
        pos += n;
      }
    }
    windowStart = windowEnd;
  }
}

/**
 * A file's bytes [0, sizeBytes) in order: its holes (SEEK_HOLE) as zero runs, the rest read in
 * chunks of at most COPY_CHUNK_BYTES. Where the file cannot report holes, all of it is data.
 */
export async function* filePieces(file: HostFile, sizeBytes: number): AsyncGenerator<ContentPiece, void, undefined> {
  const seekable = isSeekableHostFile(file) ? file : undefined;
  for (let pos = 0; pos < sizeBytes; ) {
    const dataStart = seekable === undefined ? pos : Math.min(sizeBytes, (await seekable.seekData(pos)) ?? sizeBytes);
    if (dataStart > pos) {
      yield { kind: 'zero', offset: pos, length: dataStart - pos };
      pos = dataStart;
      continue;
    }
    const dataEnd = seekable === undefined ? sizeBytes : Math.min(sizeBytes, (await seekable.seekHole(pos)) ?? sizeBytes);
    for (; pos < dataEnd; ) {
      const n = chunkEnd(pos, dataEnd) - pos;
      const bytes = allocAligned(n);
      const got = await file.pread(bytes, pos);
      if (got < n) throw new StorageError('IO_ERROR', `${file.name} ended at ${pos + got}, before ${sizeBytes} bytes`);
      yield { kind: 'data', offset: pos, bytes };
      pos += n;
    }
  }
}

/**
 * Writes the pieces into a fresh image (which reads zeroes everywhere): data is gathered into
 * chunks aligned to COPY_CHUNK_BYTES and written without its zero blocks; zero runs are skipped.
 * onBytes hears every piece's length, zero runs included.
 */
export async function writePieces(image: Qcow2Image, pieces: AsyncIterable<ContentPiece>, onBytes: (n: number) => void): Promise<void> {
  const buffer = allocAligned(COPY_CHUNK_BYTES);
  let bufferOffset = 0;
  let fill = 0;
  const flush = async () => {
    if (fill > 0) await writeSparse(image, bufferOffset, buffer.subarray(0, fill), 'skip');
    fill = 0;
  };
  for await (const piece of pieces) {
    if (piece.kind === 'zero') {
      await flush();
      onBytes(piece.length);
      continue;
    }
    const { bytes } = piece;
    for (let pos = 0; pos < bytes.length; ) {
      const at = piece.offset + pos;
      if (fill > 0 && bufferOffset + fill !== at) await flush();
      if (fill === 0) bufferOffset = at;
      const n = Math.min(chunkEnd(at, at + bytes.length - pos) - at, buffer.length - fill);
      buffer.set(bytes.subarray(pos, pos + n), fill);
      fill += n;
      pos += n;
      if ((bufferOffset + fill) % COPY_CHUNK_BYTES === 0) await flush();
    }
    onBytes(bytes.length);
  }
  await flush();
}

/** Writes the pieces into a new (empty) layer file. */
export async function writePiecesToLayer(store: LayerStore, ref: LayerRef, pieces: AsyncIterable<ContentPiece>, onBytes: (n: number) => void): Promise<void> {
  const image = await openLayerAlone(store, ref, { writable: true });
  try {
    await writePieces(image, pieces, onBytes);
  } finally {
    await image.close();
  }
}

/** An import's per-piece callback: stops a cancelled job, counts the bytes for the job and the caller. */
export function importProgress(ctx: JobContext, onProgress: ((doneBytes: number) => void) | undefined): (n: number) => void {
  let received = 0;
  return (n) => {
    ctx.throwIfCancelled();
    received += n;
    ctx.addDone(n);
    onProgress?.(received);
  };
}

/** The refusal of an import stream longer than the size given for the volume. */
export function streamLongerThan(sizeBytes: number): StorageError {
  return new StorageError('INVALID_ARGUMENT', `the import stream holds more than the ${formatSizeHuman(sizeBytes)} given as the volume's size`, {
    fix: { option: 'sizeBytes', text: 'give a larger size with {}, or none to take the stream length' },
  });
}

/**
 * Writes an uploaded image to a new file (the owner's alone: mode 0600 locally): plain bytes in
 * order, or a sparse stream's data at its offsets (its zero runs stay holes; the file is sized at
 * the end). Resolves to the bytes the image holds. onBytes hears each piece first (and may throw
 * to stop).
 */
export async function spoolToFile(
  store: LayerStore,
  spool: LayerRef,
  source: AsyncIterable<Uint8Array> | { sizeBytes: number; pieces: AsyncIterable<ContentPiece> },
  onBytes: (n: number) => void,
): Promise<number> {
  const handle = await store.create(spool, { ownerOnly: true });
  let received = 0;
  const count = (n: number) => {
    onBytes(n);
    received += n;
  };
  try {
    if (Symbol.asyncIterator in source) {
      for await (const chunk of source) {
        const at = received;
        count(chunk.length);
        await handle.pwrite(chunk, at);
      }
    } else {
      for await (const piece of source.pieces) {
        count(pieceLength(piece));
        if (piece.kind === 'data') await handle.pwrite(piece.bytes, piece.offset);
      }
      await handle.truncate(source.sizeBytes);
    }
  } finally {
    await handle.close();
  }
  return received;
}
