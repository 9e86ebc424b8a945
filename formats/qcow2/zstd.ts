/**
 * zstd for qcow2 images with compression_type=zstd, through the system libzstd (bound with koffi;
 * the npm zstd packages need native builds). The library is loaded on first use, so images that
 * never touch a zstd cluster work on hosts without libzstd.
 *
 * qcow2 records only how many 512-byte sectors a compressed cluster touches, not its exact length,
 * so the bytes handed to decompress() run on past the end of the compressed data: up to the end of
 * the last sector, where there may be garbage or the start of the next compressed cluster. We
 * therefore size each frame with ZSTD_findFrameCompressedSize and decompress exactly that frame.
 */
import koffi, { type LibraryHandle } from 'koffi';
import { StorageError } from '../../src/core/errors.js';

/** Tried in order: the soname through the dynamic loader's search path, then Debian's x86-64 path. */
const LIBZSTD_CANDIDATES = ['libzstd.so.1', '/usr/lib/x86_64-linux-gnu/libzstd.so.1'];
/** ZSTD_findFrameCompressedSize and the contexts we use are stable API from 1.4.0 on. */
const MIN_VERSION_NUMBER = 10400;

/** size_t results come back from koffi as a number, or as a bigint when above 2^53 (error codes). */
type SizeT = number | bigint;
type Pointer = bigint;

interface LibZstd {
  versionString(): string;
  compressBound(srcSize: number): SizeT;
  isError(code: SizeT): number;
  getErrorName(code: SizeT): string;
  minCLevel(): number;
  maxCLevel(): number;
  compressCCtx(
    cctx: Pointer,
    dst: Uint8Array,
    dstCapacity: number,
    src: Uint8Array,
    srcSize: number,
    level: number,
  ): SizeT;
  decompressDCtx(dctx: Pointer, dst: Uint8Array, dstCapacity: number, src: Uint8Array, srcSize: number): SizeT;
  findFrameCompressedSize(src: Uint8Array, srcSize: number): SizeT;
  cctx: Pointer;
  dctx: Pointer;
}

/** undefined: not tried yet. A StorageError: loading failed, and every call rethrows it. */
let binding: LibZstd | StorageError | undefined;

function load(): LibZstd {
  if (binding instanceof StorageError) throw binding;
  if (binding !== undefined) return binding;
  const failures: string[] = [];
  for (const path of LIBZSTD_CANDIDATES) {
    try {
      binding = bind(koffi.load(path));
      return binding;
    } catch (err) {
      failures.push(`${path}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  binding = new StorageError(
    'UNSUPPORTED',
    `zstd compression needs libzstd.so.1 (>= 1.4.0), which could not be loaded (${failures.join('; ')})`,
  );
  throw binding;
}

function bind(lib: LibraryHandle): LibZstd {
  const versionNumber = lib.func('unsigned int ZSTD_versionNumber(void)');
  const version = Number(versionNumber());
  const versionString = lib.func('const char *ZSTD_versionString(void)');
  if (version < MIN_VERSION_NUMBER) throw new Error(`libzstd ${String(versionString())} is older than 1.4.0`);
  const createCCtx = lib.func('void *ZSTD_createCCtx(void)');
  const createDCtx = lib.func('void *ZSTD_createDCtx(void)');
  const compressBound = lib.func('size_t ZSTD_compressBound(size_t srcSize)');
  const isError = lib.func('unsigned int ZSTD_isError(size_t code)');
  const getErrorName = lib.func('const char *ZSTD_getErrorName(size_t code)');
  const minCLevel = lib.func('int ZSTD_minCLevel(void)');
  const maxCLevel = lib.func('int ZSTD_maxCLevel(void)');
  const compressCCtx = lib.func(
    'size_t ZSTD_compressCCtx(void *cctx, void *dst, size_t dstCapacity, const void *src, size_t srcSize, int level)',
  );
  const decompressDCtx = lib.func(
    'size_t ZSTD_decompressDCtx(void *dctx, void *dst, size_t dstCapacity, const void *src, size_t srcSize)',
  );
  const findFrameCompressedSize = lib.func('size_t ZSTD_findFrameCompressedSize(const void *src, size_t srcSize)');
  // One context each for the life of the process: Node runs these calls one at a time per thread,
  // and each worker thread loads its own copy of this module.
  const cctx = createCCtx() as Pointer | null;
  const dctx = createDCtx() as Pointer | null;
  if (!cctx || !dctx) throw new Error('could not allocate a zstd context');
  return {
    versionString: () => String(versionString()),
    compressBound: (n) => compressBound(n) as SizeT,
    isError: (code) => Number(isError(code)),
    getErrorName: (code) => String(getErrorName(code)),
    minCLevel: () => Number(minCLevel()),
    maxCLevel: () => Number(maxCLevel()),
    compressCCtx: (c, dst, cap, src, n, level) => compressCCtx(c, dst, cap, src, n, level) as SizeT,
    decompressDCtx: (d, dst, cap, src, n) => decompressDCtx(d, dst, cap, src, n) as SizeT,
    findFrameCompressedSize: (src, n) => findFrameCompressedSize(src, n) as SizeT,
    cctx,
    dctx,
  };
}

/** Whether libzstd can be loaded here (loads it if it was not yet). Never throws. */
export function isZstdAvailable(): boolean {
  try {
    load();
    return true;
  } catch {
    return false;
  }
}

/** The loaded library's version, e.g. "1.5.4". Throws UNSUPPORTED when libzstd is missing. */
export function zstdVersion(): string {
  return load().versionString();
}

/** The default level; also what QEMU uses (it never sets one). */
export const ZSTD_DEFAULT_LEVEL = 3;

/** Largest compressed size of `srcSize` bytes: an output buffer this big never runs short. */
export function compressBound(srcSize: number): number {
  if (!Number.isSafeInteger(srcSize) || srcSize < 0) {
    throw new StorageError('INVALID_ARGUMENT', `zstd: invalid source size ${srcSize}`);
  }
  const zstd = load();
  const bound = zstd.compressBound(srcSize);
  if (zstd.isError(bound)) throw new StorageError('INVALID_ARGUMENT', `zstd: source of ${srcSize} bytes is too large`);
  return Number(bound);
}

/**
 * Compresses `src` into one zstd frame (with the content size in its header, no checksum) and
 * returns it. The result may be larger than `src` for incompressible data.
 */
export function compress(src: Uint8Array, level: number = ZSTD_DEFAULT_LEVEL): Uint8Array {
  const zstd = load();
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
  const zstd = load();
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
