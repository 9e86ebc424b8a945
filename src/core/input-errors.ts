/**
 * InvalidImageError: an image the caller supplied (an upload to import) is damaged, or is not
 * what it claims to be. The fault is in the input, not in the storage: the request is refused
 * (the REST edge answers 422 with code INVALID_IMAGE), no alarm is logged, and the message says
 * what the parser found. The same damage found in the pool's own layers stays CORRUPT (500, an
 * alarm in the daemon's log).
 *
 * Its StorageError code is INVALID_ARGUMENT (the caller passed something malformed): what edges
 * that do not know this class report.
 */
import { StorageError } from './errors.js';

export class InvalidImageError extends StorageError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('INVALID_ARGUMENT', message, options);
    this.name = 'InvalidImageError';
  }
}
