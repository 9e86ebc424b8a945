/** Validation of user-chosen names and sizes, with INVALID_ARGUMENT errors that say what is allowed. */
import { StorageError } from '../core/errors.js';
import { PiB, SECTOR_SIZE_BYTES, formatSizeHuman } from '../core/units.js';

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Largest volume Strata creates (qcow2 with 64 KiB clusters reaches 2 PiB; keep a margin). */
export const MAX_VOLUME_BYTES = PiB;

export function checkName(what: 'pool' | 'volume' | 'snapshot' | 'group' | 'QoS policy', name: unknown): string {
  if (typeof name !== 'string' || !NAME_PATTERN.test(name)) {
    throw new StorageError(
      'INVALID_ARGUMENT',
      `invalid ${what} name ${JSON.stringify(name)}: use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit`,
    );
  }
  return name;
}

export function checkVolumeSize(sizeBytes: unknown): number {
  if (typeof sizeBytes !== 'number' || !Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) {
    throw new StorageError('INVALID_ARGUMENT', `invalid size ${String(sizeBytes)}: give a positive whole number of bytes`);
  }
  if (sizeBytes % SECTOR_SIZE_BYTES !== 0) {
    throw new StorageError('INVALID_ARGUMENT', `invalid size ${sizeBytes} bytes: it must be a multiple of ${SECTOR_SIZE_BYTES} bytes`);
  }
  if (sizeBytes > MAX_VOLUME_BYTES) {
    throw new StorageError('INVALID_ARGUMENT', `invalid size ${formatSizeHuman(sizeBytes)}: volumes are at most ${formatSizeHuman(MAX_VOLUME_BYTES)}`);
  }
  return sizeBytes;
}

export function checkQuota(quotaBytes: unknown): number | undefined {
  if (quotaBytes === undefined || quotaBytes === null) return undefined;
  if (typeof quotaBytes !== 'number' || !Number.isSafeInteger(quotaBytes) || quotaBytes < 0) {
    throw new StorageError('INVALID_ARGUMENT', `invalid quota ${String(quotaBytes)}: give a non-negative whole number of bytes`);
  }
  return quotaBytes;
}

export function checkLimit(what: string, limit: unknown): number | undefined {
  if (limit === undefined || limit === null) return undefined;
  if (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 0) {
    throw new StorageError('INVALID_ARGUMENT', `invalid ${what} ${String(limit)}: give a non-negative whole number`);
  }
  return limit;
}
