import { expect } from 'vitest';
import { isStorageError, type StorageErrorCode } from '../../src/core/errors.js';

/**
 * Awaits `promise` and expects it to reject with a StorageError of `code` (and a message matching
 * `message`, if given); resolves to the error's message. A success or another error fails.
 */
export async function expectCode(promise: Promise<unknown>, code: StorageErrorCode, message?: RegExp): Promise<string> {
  try {
    await promise;
  } catch (err) {
    if (!isStorageError(err)) throw err;
    expect(err.code, err.message).toBe(code);
    if (message) expect(err.message).toMatch(message);
    return err.message;
  }
  throw new Error(`expected a ${code} error, but the call succeeded`);
}
