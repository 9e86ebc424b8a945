import { StorageError } from './errors.js';

/**
 * Validates a guest range against a device size, once, for every BlockDevice implementation
 * (nbdkit's lesson: the core checks requests so formats stay small).
 */
export function checkGuestRange(deviceName: string, sizeBytes: number, guestOffset: number, lengthBytes: number): void {
  if (
    !Number.isSafeInteger(guestOffset) ||
    !Number.isSafeInteger(lengthBytes) ||
    guestOffset < 0 ||
    lengthBytes < 0 ||
    guestOffset + lengthBytes > sizeBytes
  ) {
    throw new StorageError(
      'INVALID_ARGUMENT',
      `${deviceName}: range [${guestOffset}, +${lengthBytes}) lies outside the image (${sizeBytes} bytes)`,
    );
  }
}
