/**
 * The system libzstd, bound through koffi on first use (the npm zstd packages need native builds).
 * Loading is lazy, so a host without libzstd only fails when something needs zstd.
 */
import koffi, { type LibraryHandle } from 'koffi';
import { StorageError } from '../core/errors.js';

/** Tried in order: the soname through the dynamic loader's search path, then Debian's x86-64 path. */
const LIBZSTD_CANDIDATES = ['libzstd.so.1', '/usr/lib/x86_64-linux-gnu/libzstd.so.1'];
/** ZSTD_findFrameCompressedSize and the contexts we use are stable API from 1.4.0 on. */
const MIN_VERSION_NUMBER = 10400;

/** size_t results come back from koffi as a number, or as a bigint when above 2^53 (error codes). */
export type SizeT = number | bigint;
type Pointer = bigint;

export interface LibZstd {
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

/** The bound library; throws StorageError UNSUPPORTED (every time) when it cannot be loaded. */
export function libzstd(): LibZstd {
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
    libzstd();
    return true;
  } catch {
    return false;
  }
}

/** The loaded library's version, e.g. "1.5.4". Throws UNSUPPORTED when libzstd is missing. */
export function zstdVersion(): string {
  return libzstd().versionString();
}

