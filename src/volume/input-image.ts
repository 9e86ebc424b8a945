/**
 * Reading an uploaded qcow2 image (import): damage the engine finds in it (CORRUPT, from the open
 * or from any read) is the upload's, so it becomes InvalidImageError, worded for the uploader.
 * Everything else (the pool's own I/O errors, an unsupported feature) keeps its code.
 */
import { isStorageError, StorageError } from '../core/errors.js';
import { InvalidImageError } from '../core/input-errors.js';
import type { LayerRef, LayerStore } from '../core/layer-store.js';
import type { Qcow2Image } from '../../formats/qcow2/index.js';
import { layerLocation, openLayerAlone } from './layers.js';

const WHAT = 'the uploaded qcow2 image';
const ADVICE = "check the source with 'qemu-img check' or 'strata img check'";

/**
 * The error to report for a failure while opening or reading the upload spooled at spoolPath (its
 * location, which the engine's messages start with).
 */
export function uploadedImageError(err: unknown, spoolPath: string): unknown {
  if (!isStorageError(err)) return err;
  // The engine names the file; the uploader knows nothing of the spool file.
  const reason = err.message.startsWith(`${spoolPath}: `) ? err.message.slice(spoolPath.length + 2) : err.message;
  if (err.code === 'CORRUPT') return new InvalidImageError(`${WHAT} is damaged: ${reason}; ${ADVICE}`, { cause: err });
  return err;
}

/** Opens the spooled upload read-only; a damaged one fails with InvalidImageError. */
export async function openUploadedImage(store: LayerStore, spool: LayerRef): Promise<Qcow2Image> {
  try {
    return await openLayerAlone(store, spool, { writable: false });
  } catch (err) {
    const mapped = uploadedImageError(err, layerLocation(store, spool));
    if (mapped === err && isStorageError(err)) {
      throw new StorageError(err.code, `${WHAT} cannot be opened: ${err.message}`, { cause: err });
    }
    throw mapped;
  }
}
