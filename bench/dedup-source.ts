/**
 * Seeded sources for the dedup benches, written as raw files: a "realistic" disk image (file
 * data, holes, blocks repeated across the image) and incompressible unique data. The same seed
 * gives the same bytes, so a run can be reproduced and both sides of a cell import one file.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { SeededRandom } from '../src/store/seeded-random.js';
import { KiB, MiB } from '../src/core/units.js';

/** Each MiB of the realistic source is one of these, drawn with the seed. */
const EXTENT_BYTES = MiB;
/** Repeated content: 64 KiB blocks drawn from this many distinct ones (shared libraries, zeroed pages of a format). */
const REPEATED_BLOCK_BYTES = 64 * KiB;
const REPEATED_BLOCK_KINDS = 32;
/** Shares of the realistic source's extents: unique file data, holes, repeated blocks (the rest). */
const FILE_DATA_SHARE = 0.55;
const HOLE_SHARE = 0.2;

/** An endless stream of seeded pseudo-random bytes (AES-128-CTR over zeros: GB/s, incompressible). */
export class SeededBytes {
  private readonly cipher;
  private readonly zeros = Buffer.alloc(4 * MiB);

  constructor(seed: string) {
    const key = createHash('sha256').update(`strata-bench:${seed}`).digest();
    this.cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
  }

  /** The next `bytes` bytes of the stream (at most 4 MiB per call). */
  next(bytes: number): Buffer {
    return this.cipher.update(this.zeros.subarray(0, bytes));
  }
}

export interface SourceShape {
  fileDataBytes: number;
  holeBytes: number;
  repeatedBytes: number;
}

/**
 * A raw image of `sizeBytes` (a multiple of 1 MiB) at `file`: each MiB is unique pseudo-random data
 * (55%), a hole (20%), or 64 KiB blocks drawn from 32 fixed ones (25%), placed by the seed.
 */
export function writeRealisticSource(file: string, sizeBytes: number, seed: number): SourceShape {
  const pick = new SeededRandom(seed);
  const unique = new SeededBytes(`realistic-${seed}`);
  // The repeated blocks do not depend on the seed: images in one pool share them, as images of
  // one OS share their files.
  const blockSource = new SeededBytes('repeated-blocks');
  const blocks = Array.from({ length: REPEATED_BLOCK_KINDS }, () => Buffer.from(blockSource.next(REPEATED_BLOCK_BYTES)));
  const shape: SourceShape = { fileDataBytes: 0, holeBytes: 0, repeatedBytes: 0 };
  const fd = openSync(file, 'w');
  try {
    const extent = Buffer.alloc(EXTENT_BYTES);
    for (let offset = 0; offset < sizeBytes; offset += EXTENT_BYTES) {
      const draw = pick.next();
      if (draw < FILE_DATA_SHARE) {
        writeSync(fd, unique.next(EXTENT_BYTES), 0, EXTENT_BYTES, offset);
        shape.fileDataBytes += EXTENT_BYTES;
      } else if (draw < FILE_DATA_SHARE + HOLE_SHARE) {
        shape.holeBytes += EXTENT_BYTES;
      } else {
        for (let at = 0; at < EXTENT_BYTES; at += REPEATED_BLOCK_BYTES) blocks[pick.int(REPEATED_BLOCK_KINDS)]!.copy(extent, at);
        writeSync(fd, extent, 0, EXTENT_BYTES, offset);
        shape.repeatedBytes += EXTENT_BYTES;
      }
    }
    ftruncateSync(fd, sizeBytes);
  } finally {
    closeSync(fd);
  }
  return shape;
}

/** A raw file of `sizeBytes` of unique pseudo-random data (no chunk of it repeats, none is zero). */
export function writeUniqueSource(file: string, sizeBytes: number, seed: string): void {
  const bytes = new SeededBytes(`unique-${seed}`);
  const fd = openSync(file, 'w');
  try {
    for (let offset = 0; offset < sizeBytes; offset += 4 * MiB) {
      const length = Math.min(4 * MiB, sizeBytes - offset);
      writeSync(fd, bytes.next(length), 0, length, offset);
    }
  } finally {
    closeSync(fd);
  }
}
