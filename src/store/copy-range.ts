/**
 * The portable copyRange: read the source, write the target, a bounded buffer at a time. Every
 * HostFile that has no cheaper way (or that must see each write, like the fault-injecting file)
 * uses it, so all of them check arguments alike.
 */
import { StorageError } from '../core/errors.js';
import type { HostFile } from '../core/host-file.js';
import { allocAligned } from '../sys/aligned-buffer.js';

/** Large enough to amortise each call, small enough to stay out of the way of other I/O. */
export const COPY_RANGE_BUFFER_BYTES = 1024 * 1024;

/** Throws INVALID_ARGUMENT for negative or unsafe numbers and for overlapping ranges of one file. */
export function checkCopyRange(source: HostFile, target: HostFile, sourceOffset: number, targetOffset: number, lengthBytes: number): void {
  for (const [what, value] of [
    ['source offset', sourceOffset],
    ['target offset', targetOffset],
    ['length', lengthBytes],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new StorageError('INVALID_ARGUMENT', `copyRange into ${target.name}: ${what} ${value} is not a byte count`);
    }
  }
  if (source === target && sourceOffset < targetOffset + lengthBytes && targetOffset < sourceOffset + lengthBytes && lengthBytes > 0) {
    throw new StorageError('INVALID_ARGUMENT', `copyRange within ${target.name}: ranges at ${sourceOffset} and ${targetOffset} overlap`);
  }
  if (target.readOnly) throw new StorageError('READ_ONLY', `copyRange into ${target.name}: opened read-only`);
}

export async function copyRangeByBytes(
  source: HostFile,
  target: HostFile,
  sourceOffset: number,
  targetOffset: number,
  lengthBytes: number,
): Promise<void> {
  checkCopyRange(source, target, sourceOffset, targetOffset, lengthBytes);
  if (lengthBytes === 0) return;
  const buffer = allocAligned(Math.min(lengthBytes, COPY_RANGE_BUFFER_BYTES));
  for (let done = 0; done < lengthBytes; ) {
    const part = buffer.subarray(0, Math.min(buffer.length, lengthBytes - done));
    await source.pread(part, sourceOffset + done);
    await target.pwrite(part, targetOffset + done);
    done += part.length;
  }
}
