/**
 * Buffers that new packs are assembled in, reused between packs. A pack was a fresh zero-filled
 * buffer of its whole size (~1 MiB for a 1 MiB S3 PUT, ~4 MiB per step of a large one); that much
 * external memory per request drove V8 to a full GC every few PUTs.
 *
 * Ownership: the repository takes a buffer, finishes a pack into it, and gives it back only once
 * the chunk store's put of that pack has resolved (ChunkStore.put: the bytes are the caller's again
 * then). A put that failed may still be read by an aborted request: its buffer is dropped, not given back.
 */

/** Capacity is rounded up to this, so that packs of nearby sizes share buffers. */
const PACK_BUFFER_GRAIN_BYTES = 256 * 1024;
/** The most bytes kept in spare buffers (what a few PUTs at once hold in flight). */
const SPARE_PACK_BUFFER_BYTES_MAX = 24 * 1024 * 1024;

const spares: Uint8Array[] = [];
let spareBytes = 0;

/** A buffer of at least `sizeBytes` (its contents are whatever the last pack left). */
export function takePackBuffer(sizeBytes: number): Uint8Array {
  const at = spares.findIndex((buffer) => buffer.length >= sizeBytes);
  if (at >= 0) {
    const [buffer] = spares.splice(at, 1);
    spareBytes -= buffer!.length;
    return buffer!;
  }
  return new Uint8Array(Math.ceil(sizeBytes / PACK_BUFFER_GRAIN_BYTES) * PACK_BUFFER_GRAIN_BYTES);
}

/** Gives back a buffer from takePackBuffer that nothing reads any more. */
export function giveBackPackBuffer(buffer: Uint8Array): void {
  if (spareBytes + buffer.length > SPARE_PACK_BUFFER_BYTES_MAX) return;
  spares.push(buffer);
  spareBytes += buffer.length;
}
