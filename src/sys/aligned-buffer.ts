/**
 * Page-aligned buffers for host I/O. The kernel copies to and from page-aligned user memory
 * several times faster than to malloc'd memory at page+16 (measured here on tmpfs: 5.1 GB/s vs
 * 1.1 GB/s for 1 MiB preads), and Node's Buffer.alloc lands at page+16 for large sizes. So I/O
 * buffers are over-allocated and sliced at the first aligned address (found through koffi).
 */
import koffi from 'koffi';

export const PAGE_SIZE_BYTES = 4096;

/** The native address of a buffer's first byte (for alignment checks). */
export function addressOf(bytes: Uint8Array): number {
  return Number(koffi.address(bytes) as bigint);
}

export function allocAligned(sizeBytes: number, alignmentBytes = PAGE_SIZE_BYTES): Uint8Array {
  if (sizeBytes < PAGE_SIZE_BYTES) return new Uint8Array(sizeBytes);
  const raw = Buffer.alloc(sizeBytes + alignmentBytes);
  const address = addressOf(raw);
  const skip = (alignmentBytes - (address % alignmentBytes)) % alignmentBytes;
  return new Uint8Array(raw.buffer, raw.byteOffset + skip, sizeBytes);
}
