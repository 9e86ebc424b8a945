/**
 * BLAKE3 from the @napi-rs/blake-hash package (prebuilt Rust binaries per platform, no build on
 * install), loaded on first use: OpenSSL, so node:crypto, has no BLAKE3, and Debian 12 ships no
 * libblake3 for koffi. ~2.8 GiB/s on 64 KiB here (bench/RESULTS.md, "Chunk hash (issue 12)").
 * Loading is lazy, so a host without the package only fails when something needs BLAKE3.
 */
import { createRequire } from 'node:module';
import { StorageError } from '../core/errors.js';

const PACKAGE = '@napi-rs/blake-hash';
/** BLAKE3's default output length. */
export const BLAKE3_DIGEST_BYTES = 32;

type Blake3 = (input: Uint8Array) => Buffer;

/** undefined: not tried yet. A StorageError: loading failed, and every call rethrows it. */
let binding: Blake3 | StorageError | undefined;

function blake3(): Blake3 {
  if (binding instanceof StorageError) throw binding;
  if (binding !== undefined) return binding;
  try {
    // A CommonJS native module: required, not imported, so it loads only when asked for.
    const mod = createRequire(import.meta.url)(PACKAGE) as { blake3?: unknown };
    if (typeof mod.blake3 !== 'function') throw new Error(`${PACKAGE} has no blake3 function`);
    binding = mod.blake3 as Blake3;
    return binding;
  } catch (err) {
    binding = new StorageError('UNSUPPORTED', `BLAKE3 needs the npm package ${PACKAGE}, which could not be loaded (${err instanceof Error ? err.message : String(err)}); install it`, {
      cause: err,
    });
    throw binding;
  }
}

/** BLAKE3 of `data` (32 bytes) as 64 lower-case hex digits. */
export function blake3Hex(data: Uint8Array): string {
  return blake3()(data).toString('hex');
}

/** Whether BLAKE3 can be loaded here (loads it if it was not yet). Never throws. */
export function isBlake3Available(): boolean {
  try {
    blake3();
    return true;
  } catch {
    return false;
  }
}
