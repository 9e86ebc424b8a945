/** Anonymous shared memory files (memfd_create), e.g. guest RAM for the test front-end. */
import { fail, libc, MFD_CLOEXEC } from './libc.js';
import { closeFd } from './fd.js';

/** A new close-on-exec memfd of sizeBytes (zero-filled, sparse). The caller owns the descriptor. */
export function memfdCreate(name: string, sizeBytes: number): number {
  const fd = libc().memfdCreate(name, MFD_CLOEXEC);
  if (fd < 0) throw fail('memfd_create', `"${name}"`);
  if (libc().ftruncate(fd, sizeBytes) < 0) {
    const err = fail('ftruncate', `of memfd "${name}" to ${sizeBytes} bytes`);
    closeFd(fd);
    throw err;
  }
  return fd;
}
