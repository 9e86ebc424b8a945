/**
 * The system libxxhash (Debian's libxxhash0), bound through koffi on first use: XXH3's 128-bit hash,
 * ~10 GiB/s on 64 KiB, for naming chunks where a byte compare backs it up (it is not collision
 * resistant against someone who crafts inputs). Loading is lazy, so a host without the library
 * only fails when something needs it.
 */
import koffi from 'koffi';
import { StorageError } from '../core/errors.js';

/** Tried in order: the soname through the dynamic loader's search path, then Debian's x86-64 path. */
const LIBXXHASH_CANDIDATES = ['libxxhash.so.0', '/usr/lib/x86_64-linux-gnu/libxxhash.so.0'];
/** XXH3_128bits is stable API from 0.8.0 on (XXH_versionNumber = major*10000 + minor*100 + release). */
const MIN_VERSION_NUMBER = 800;
/** The hex digits of one 64-bit half of the hash. */
const HALF_HEX_DIGITS = 16;

interface Xxh128Result {
  low64: bigint;
  high64: bigint;
}

/** undefined: not tried yet. A StorageError: loading failed, and every call rethrows it. */
let binding: Xxh3128 | StorageError | undefined;

type Xxh3128 = (data: Uint8Array, lengthBytes: number) => Xxh128Result;

function xxh3128(): Xxh3128 {
  if (binding instanceof StorageError) throw binding;
  if (binding !== undefined) return binding;
  const failures: string[] = [];
  for (const path of LIBXXHASH_CANDIDATES) {
    try {
      const lib = koffi.load(path);
      const version = Number(lib.func('unsigned int XXH_versionNumber(void)')());
      if (version < MIN_VERSION_NUMBER) throw new Error(`libxxhash version ${version} is older than 0.8.0`);
      // Returned by value in two registers; koffi gives uint64_t fields as bigints.
      const result = koffi.struct('XXH128_hash_t', { low64: 'uint64_t', high64: 'uint64_t' });
      binding = lib.func('XXH3_128bits', result, ['const void *', 'size_t']) as Xxh3128;
      return binding;
    } catch (err) {
      failures.push(`${path}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  binding = new StorageError('UNSUPPORTED', `xxh128 needs libxxhash.so.0 (>= 0.8.0; Debian: apt install libxxhash0), which could not be loaded (${failures.join('; ')})`);
  throw binding;
}

/** XXH3-128 of `data` as 32 lower-case hex digits in the canonical (big-endian) order, as xxhsum -H2 prints it. */
export function xxh128Hex(data: Uint8Array): string {
  const { low64, high64 } = xxh3128()(data, data.length);
  return high64.toString(16).padStart(HALF_HEX_DIGITS, '0') + low64.toString(16).padStart(HALF_HEX_DIGITS, '0');
}

/** Whether libxxhash can be loaded here (loads it if it was not yet). Never throws. */
export function isXxhashAvailable(): boolean {
  try {
    xxh3128();
    return true;
  } catch {
    return false;
  }
}
