/**
 * Memory the machine has used before, for every side of a bench. On a fresh virtual machine
 * (this one is a Firecracker microVM) guest memory the kernel hands out for the first time is
 * backed by the host on first touch: the same 4 MiB tmpfs writes cost 0.88 CPU s/GiB of kernel
 * copy on a fresh machine and 0.31 once its memory had been used (bench/RESULTS.md, "memory the
 * machine had not touched yet"). A side whose data grows into new memory first (a pool in
 * /dev/shm) would pay what the other side, run later or reusing its heap, does not. So a bench
 * first writes and removes a tmpfs file of all the free memory but a spare: its pages are touched once,
 * freed, and handed out again to whichever side asks next. Not for good: this machine's balloon
 * device reports free pages to the host (VIRTIO_BALLOON_F_REPORTING, feature bit 5 in
 * /sys/bus/virtio/drivers/virtio_balloon/virtio0/features), which may take them back; measured,
 * the img bench's runs after this warm-up no longer alternated slow and fast (bench/RESULTS.md).
 */
import { closeSync, existsSync, openSync, rmSync, writeSync } from 'node:fs';
import { freemem } from 'node:os';
import { join } from 'node:path';

const PIECE_BYTES = 16 * 1024 * 1024;
const GiB = 1024 * 1024 * 1024;
/** Left untouched: what the kernel and the bench's processes need meanwhile. */
const SPARE_BYTES = 3 * GiB;
/** At most this much is touched (a large machine's memory is not all handed out by one bench). */
export const WARM_BYTES_MAX = 24 * GiB;

/**
 * Writes `bytes` (default: the free memory but SPARE_BYTES, at most WARM_BYTES_MAX) into a file in
 * `dir` (a tmpfs) and removes it; a full tmpfs ends the writing early. Returns what was touched and
 * how long it took. Not half the free memory: with half warmed, the img bench's 1 MiB allocating
 * runs still alternated slow and fast by their place in the sequence, for both tools (RESULTS.md).
 */
export function warmMemory(dir = '/dev/shm', bytes = Math.min(WARM_BYTES_MAX, Math.max(0, freemem() - SPARE_BYTES))): { bytes: number; seconds: number } {
  const started = performance.now();
  const path = join(dir, `strata-bench-warm-${process.pid}`);
  const piece = Buffer.alloc(PIECE_BYTES, 0x5a);
  let written = 0;
  const fd = openSync(path, 'w');
  try {
    while (written < bytes) written += writeSync(fd, piece, 0, Math.min(PIECE_BYTES, bytes - written), written);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err; // the tmpfs is full: what was written is warmed
  } finally {
    closeSync(fd);
    rmSync(path, { force: true });
  }
  return { bytes: written, seconds: (performance.now() - started) / 1000 };
}

/** warmMemory in /dev/shm, told on stderr (the benches' progress stream); nothing where there is no /dev/shm. */
export function warmMemoryNoted(): void {
  if (!existsSync('/dev/shm')) return;
  const { bytes, seconds } = warmMemory();
  process.stderr.write(`warmed ${(bytes / 1024 ** 3).toFixed(1)} GiB of memory in ${seconds.toFixed(1)} s (written to tmpfs and freed: no side meets memory the machine never used)\n`);
}
