/**
 * zstd for qcow2 images with compression_type=zstd, through the system libzstd (src/sys/zstd.ts,
 * loaded on first use, so images that never touch a zstd cluster work on hosts without it).
 *
 * qcow2 records only how many 512-byte sectors a compressed cluster touches, not its exact length,
 * so the bytes handed to decompress() run on past the end of the compressed data: up to the end of
 * the last sector, where there may be garbage or the start of the next compressed cluster. We
 * therefore size each frame with ZSTD_findFrameCompressedSize and decompress exactly that frame.
 */
import { StorageError } from '../../src/core/errors.js';
import { libzstd } from '../../src/sys/zstd.js';

export { isZstdAvailable, zstdVersion } from '../../src/sys/zstd.js';

/** The default level; also what QEMU uses (it never sets one). */
export const ZSTD_DEFAULT_LEVEL = 3;

/** Largest compressed size of `srcSize` bytes: an output buffer this big never runs short. */
export function compressBound(srcSize: number): number {
  if (!Number.isSafeInteger(srcSize) || srcSize < 0) {
    throw new StorageError('INVALID_ARGUMENT', `zstd: invalid source size ${srcSize}`);
  }
  const zstd = libzstd();
  const bound = zstd.compressBound(srcSize);
  if (zstd.isError(bound)) throw new StorageError('INVALID_ARGUMENT', `zstd: source of ${srcSize} bytes is too large`);
  return Number(bound);
}

/**
 * Compresses `src` into one zstd frame (with the content size in its header, no checksum) and
 * returns it. The result may be larger than `src` for incompressible data.
 */
export function compress(src: Uint8Array, level: number = ZSTD_DEFAULT_LEVEL): Uint8Array {
  const zstd = libzstd();
  if (!Number.isInteger(level) || level < zstd.minCLevel() || level > zstd.maxCLevel()) {
    throw new StorageError(
      'INVALID_ARGUMENT',
      `zstd: compression level ${level} is outside ${zstd.minCLevel()}..${zstd.maxCLevel()}`,
    );
  }
  const dst = new Uint8Array(compressBound(src.length));
  const written = zstd.compressCCtx(zstd.cctx, dst, dst.length, src, src.length, level);
  if (zstd.isError(written)) {
    // With a compressBound-sized output this does not happen short of allocation failure.
    throw new StorageError('IO_ERROR', `zstd compression failed: ${zstd.getErrorName(written)}`);
  }
  return dst.subarray(0, Number(written));
}

/**
 * Decompresses zstd data into `out`, filling exactly out.length bytes, and ignores whatever follows
 * the frame that completes the output (sector padding, the next compressed cluster).
 *
 * Like QEMU, which decompresses with the streaming API until the cluster is full, this accepts the
 * output split over several consecutive frames (QEMU itself always writes one). Throws CORRUPT,
 * with zstd's error name, when a frame is damaged or truncated, when the data decompresses to more
 * than out.length bytes, or when it ends before producing out.length bytes.
 */
export function decompress(src: Uint8Array, out: Uint8Array): void {
  const zstd = libzstd();
  let inPos = 0;
  let outPos = 0;
  while (outPos < out.length) {
    if (inPos >= src.length) {
      throw new StorageError(
        'CORRUPT',
        `zstd compressed data ends after producing ${outPos} of ${out.length} bytes`,
      );
    }
    const input = src.subarray(inPos);
    const frameSize = zstd.findFrameCompressedSize(input, input.length);
    if (zstd.isError(frameSize)) {
      throw new StorageError(
        'CORRUPT',
        `zstd frame at byte ${inPos} of the compressed data is invalid: ${zstd.getErrorName(frameSize)}`,
      );
    }
    const frameBytes = Number(frameSize);
    const output = out.subarray(outPos);
    const produced = zstd.decompressDCtx(zstd.dctx, output, output.length, input, frameBytes);
    if (zstd.isError(produced)) {
      const name = zstd.getErrorName(produced);
      throw new StorageError(
        'CORRUPT',
        /too small/i.test(name)
          ? `zstd data decompresses to more than ${out.length} bytes (${name})`
          : `zstd frame at byte ${inPos} of the compressed data does not decompress: ${name}`,
      );
    }
    // frameBytes > 0 always (a frame has at least a header), so this loop ends.
    inPos += frameBytes;
    outPos += Number(produced);
  }
}
