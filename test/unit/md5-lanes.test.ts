import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { LaneMd5, Md5Lanes, MD5_BLOCK_BYTES, MD5_LANE_BYTES_MAX, MD5_LANES_MAX } from '../../src/objects/md5-lanes.js';

const lanes = new Md5Lanes();

/** Runs `bodies` side by side through the lanes (whole blocks, at most a lane's bytes a call), each in `pieceBytes` pieces; returns the hex digests. */
function laneDigests(bodies: readonly Buffer[], pieceBytes: number): string[] {
  const states = bodies.map(() => new LaneMd5());
  const wholeBytes = bodies.map((body) => body.length - (body.length % MD5_BLOCK_BYTES));
  const done = bodies.map(() => 0);
  for (;;) {
    const active = bodies.map((_, i) => i).filter((i) => done[i]! < wholeBytes[i]!);
    if (active.length === 0) break;
    const lengthBytes = Math.min(MD5_LANE_BYTES_MAX, ...active.map((i) => wholeBytes[i]! - done[i]!));
    lanes.hash(
      active.map((i) => {
        const pieces: Buffer[] = [];
        for (let at = done[i]!; at < done[i]! + lengthBytes; at += pieceBytes) pieces.push(bodies[i]!.subarray(at, Math.min(at + pieceBytes, done[i]! + lengthBytes)));
        done[i]! += lengthBytes;
        return { md5: states[i]!, pieces };
      }),
    );
  }
  return bodies.map((body, i) => Buffer.from(lanes.finish(states[i]!, body.subarray(wholeBytes[i]!))).toString('hex'));
}

const md5Hex = (data: Uint8Array): string => createHash('md5').update(data).digest('hex');

describe('MD5 in SIMD lanes', () => {
  it('gives node:crypto MD5 for every lane count, around every padding boundary, whole calls and pieces', () => {
    for (const streams of [1, 2, 4, 5, MD5_LANES_MAX]) {
      for (const sizeBytes of [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 4096 + 17, MD5_LANE_BYTES_MAX + 8, 3 * MD5_LANE_BYTES_MAX + 100]) {
        // Lanes of different lengths in one run: each stream its own size near this one.
        const bodies = Array.from({ length: streams }, (_, i) => randomBytes(sizeBytes + i * 64 * (sizeBytes % 3)));
        for (const pieceBytes of [MD5_LANE_BYTES_MAX, 1000]) expect(laneDigests(bodies, pieceBytes)).toEqual(bodies.map(md5Hex));
      }
    }
  });

  it('encodes the length of a body past 512 MiB (the bit count past 32 bits) as RFC 1321 does', () => {
    const zeros = Buffer.alloc(MD5_LANE_BYTES_MAX);
    const total = 9000 * MD5_LANE_BYTES_MAX + 7; // ~590 MiB: 4.7e9 bits
    const state = new LaneMd5();
    const reference = createHash('md5');
    for (let i = 0; i < 9000; i++) {
      lanes.hash([{ md5: state, pieces: [zeros] }]);
      reference.update(zeros);
    }
    reference.update(Buffer.alloc(7));
    expect(Buffer.from(lanes.finish(state, Buffer.alloc(7))).toString('hex')).toBe(reference.digest('hex'));
    expect(total * 8).toBeGreaterThan(2 ** 32);
  });

  it('refuses calls whose streams differ in length, are not whole blocks or are too many', () => {
    const block = Buffer.alloc(MD5_BLOCK_BYTES);
    expect(() => lanes.hash([{ md5: new LaneMd5(), pieces: [block] }, { md5: new LaneMd5(), pieces: [block, block] }])).toThrow(/same number of bytes/);
    expect(() => lanes.hash([{ md5: new LaneMd5(), pieces: [block.subarray(1)] }])).toThrow(/whole blocks/);
    expect(() => lanes.hash(Array.from({ length: MD5_LANES_MAX + 1 }, () => ({ md5: new LaneMd5(), pieces: [block] })))).toThrow(/at most/);
    expect(() => lanes.finish(new LaneMd5(), block)).toThrow(/shorter than a block/);
  });
});
