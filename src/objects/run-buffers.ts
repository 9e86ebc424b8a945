/**
 * Reused arrays for a GET's chunk runs (data-reader.ts). Each run used to be read into a new MiB,
 * and at hundreds of MiB/s those arrays drove a full garbage collection every ~30 MiB served,
 * about half the daemon's CPU on a large GET (issue 14 profile). A run is now read into an array
 * taken from here, and the response gives it back once the socket has written its bytes
 * (releaseRunBuffer from the write's callback), never earlier: an array still queued for the socket
 * must not be read into again.
 *
 * Only arrays this module handed out are taken back, each once per taking: a piece that is not
 * one (a zero chunk, a cached chunk, the slow path's own buffer) is ignored, and an array never
 * given back (a consumer that stopped early, a socket that closed) is simply collected.
 */

/** Arrays kept for reuse: enough for 16 concurrent GETs with their runs in flight. */
const FREE_BUFFERS_MAX = 64;

/** Free arrays by size (one size per chunk size in use). */
const free = new Map<number, ArrayBuffer[]>();
/** Arrays handed out and not yet given back (a second release of one is ignored). */
const lent = new WeakSet<ArrayBuffer>();

/** An array of `sizeBytes` for one run's read (a reused one when one is free). */
export function takeRunBuffer(sizeBytes: number): Uint8Array {
  const buffer = free.get(sizeBytes)?.pop() ?? new ArrayBuffer(sizeBytes);
  lent.add(buffer);
  return new Uint8Array(buffer);
}

/** Gives back the array `piece` views when this module lent it: call only once nothing reads `piece` any more. */
export function releaseRunBuffer(piece: Uint8Array): void {
  const buffer = piece.buffer;
  if (!(buffer instanceof ArrayBuffer) || !lent.has(buffer)) return;
  lent.delete(buffer);
  let kept = free.get(buffer.byteLength);
  if (kept === undefined) free.set(buffer.byteLength, (kept = []));
  if (kept.length < FREE_BUFFERS_MAX) kept.push(buffer);
}

/** Arrays of `sizeBytes` kept for reuse now (for tests). */
export function freeRunBufferCount(sizeBytes: number): number {
  return free.get(sizeBytes)?.length ?? 0;
}
