/**
 * The data of the live flatten crash test (shared by the test and its child, which runs outside
 * vitest): the parent's bytes, and write i of the guest.
 */
import { KiB, MiB, pattern } from './patterns.js';

export const LIVE_FLATTEN_SIZE = 96 * MiB;

/** 3 MiB of pattern data in every 4 MiB: something to copy in every window. */
export function liveFlattenParent(): Uint8Array {
  const out = new Uint8Array(LIVE_FLATTEN_SIZE);
  for (let off = 0; off < LIVE_FLATTEN_SIZE; off += 4 * MiB) out.set(pattern(3 * MiB, off / MiB + 1), off);
  return out;
}

/** Write i: 4-64 KiB of its own pattern at a pseudo-random 4 KiB-aligned offset. */
export function liveFlattenWrite(i: number): { offset: number; data: Uint8Array } {
  const a = Math.imul(i + 1, 2654435761) >>> 0;
  const length = (1 + (a % 16)) * 4 * KiB;
  const offset = ((a >>> 4) % ((LIVE_FLATTEN_SIZE - length) / (4 * KiB))) * 4 * KiB;
  return { offset, data: pattern(length, 5000 + i) };
}
