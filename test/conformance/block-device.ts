/**
 * The BlockDevice conformance suite: every implementation runs it (block-device.test.ts). A
 * seeded sequence of writes, zero writes (with and without unmap), discards and flushes is applied
 * to the device and to a byte model; after each step the device must read what the model says,
 * and blockStatus must tile the asked range in order, with 'zero' extents reading as zeroes and,
 * when the device says so (capabilities.unallocatedReadsZero), 'unallocated' ones too; the
 * optional segment calls (readSegments/writeSegments) move the same bytes as read and write.
 */
import { expectCode } from '../support/expect-error.js';
import { describe, expect, it } from 'vitest';
import type { BlockDevice, Extent } from '../../src/core/block-device.js';
import { SeededRandom } from '../../src/store/seeded-random.js';

export interface BlockDeviceSubject {
  /** A writable device of `sizeBytes` whose every byte reads as `initial` (a backing pattern or zeroes). */
  create(sizeBytes: number): Promise<{ device: BlockDevice; initial: Uint8Array }>;
  /** A read-only device over the same kind of data. */
  createReadOnly?(sizeBytes: number): Promise<BlockDevice>;
}

const KiB = 1024;
const SIZE_BYTES = 4 * 1024 * KiB;
/** Discard makes contents unspecified: the model stops checking those bytes until rewritten. */
const UNSPECIFIED = -1;

function sameBytes(actual: Uint8Array, expected: Int16Array, offset: number): string | undefined {
  for (let i = 0; i < actual.length; i++) {
    const want = expected[offset + i] as number;
    if (want !== UNSPECIFIED && actual[i] !== want) return `byte ${offset + i}: ${actual[i]} instead of ${want}`;
  }
  return undefined;
}

async function readsZero(device: BlockDevice, extent: Extent): Promise<boolean> {
  const bytes = new Uint8Array(extent.lengthBytes);
  await device.read(extent.guestOffset, bytes);
  return bytes.every((b) => b === 0);
}

export function blockDeviceConformance(name: string, subject: BlockDeviceSubject): void {
  describe(`BlockDevice conformance: ${name}`, () => {
    it('reads what a random mix of writes, zero writes, discards and flushes leaves', async () => {
      const { device, initial } = await subject.create(SIZE_BYTES);
      expect(device.sizeBytes).toBe(SIZE_BYTES);
      const model = Int16Array.from(initial);
      const rng = new SeededRandom(0x5eed);
      const alignedRange = (maxBytes: number): [number, number] => {
        const sectors = SIZE_BYTES / 512;
        const length = 512 * (1 + rng.int(maxBytes / 512));
        const offset = 512 * rng.int(sectors - length / 512 + 1);
        return [offset, length];
      };
      for (let step = 0; step < 120; step++) {
        const op = rng.int(10);
        if (op < 5) {
          const [offset, length] = alignedRange(256 * KiB);
          const data = new Uint8Array(length).fill(1 + rng.int(255));
          data[0] = step & 0xff;
          await device.write(offset, data, { fua: rng.int(4) === 0 });
          model.set(data, offset);
        } else if (op < 7) {
          const [offset, length] = alignedRange(512 * KiB);
          await device.writeZeroes(offset, length, { mayUnmap: rng.int(2) === 0 });
          model.fill(0, offset, offset + length);
        } else if (op < 8) {
          const [offset, length] = alignedRange(512 * KiB);
          await device.discard(offset, length);
          model.fill(UNSPECIFIED, offset, offset + length);
        } else {
          await device.flush();
        }
        if (step % 10 === 9) {
          const all = new Uint8Array(SIZE_BYTES);
          await device.read(0, all);
          expect(sameBytes(all, model, 0), `after step ${step}`).toBeUndefined();
        }
      }
      await device.close();
    });

    it('blockStatus tiles any range in order, and its zero extents read as zeroes', async () => {
      const { device } = await subject.create(SIZE_BYTES);
      await device.write(64 * KiB, new Uint8Array(128 * KiB).fill(9));
      await device.writeZeroes(512 * KiB, 256 * KiB, {});
      await device.write(1024 * KiB + 512, new Uint8Array(4 * KiB).fill(3));
      for (const [offset, length] of [
        [0, SIZE_BYTES],
        [100 * KiB, 700 * KiB],
        [1024 * KiB + 512, 512],
        [SIZE_BYTES - 4 * KiB, 4 * KiB],
      ] as const) {
        const extents = await device.blockStatus(offset, length);
        expect(extents.length).toBeGreaterThan(0);
        let position = offset;
        for (const extent of extents) {
          expect(extent.guestOffset, `${name}: extents tile [${offset}, +${length})`).toBe(position);
          expect(extent.lengthBytes).toBeGreaterThan(0);
          if (extent.kind === 'zero') {
            expect(await readsZero(device, extent), `zero extent at ${extent.guestOffset}`).toBe(true);
          }
          position += extent.lengthBytes;
        }
        // An implementation may answer for less than asked (the caller asks again), never more.
        expect(position).toBeLessThanOrEqual(offset + length);
      }
      const written = await device.blockStatus(64 * KiB, 64 * KiB);
      expect(written[0]?.kind).toBe('data');
      await device.close();
    });

    it("'unallocated' reads as zeroes exactly when the device claims it (capabilities.unallocatedReadsZero)", async () => {
      const { device, initial } = await subject.create(SIZE_BYTES);
      await device.write(256 * KiB, new Uint8Array(64 * KiB).fill(7));
      await device.writeZeroes(1024 * KiB, 128 * KiB, { mayUnmap: true });
      await device.discard(2048 * KiB, 256 * KiB);
      const claims = device.capabilities.unallocatedReadsZero === true;
      for (let offset = 0; offset < SIZE_BYTES; ) {
        const extents = await device.blockStatus(offset, SIZE_BYTES - offset);
        for (const extent of extents) {
          if (extent.kind !== 'unallocated') continue;
          const zero = await readsZero(device, extent);
          if (claims) expect(zero, `${name}: unallocated extent at ${extent.guestOffset} reads data`).toBe(true);
          // A device over data it does not store (a backing image) must not claim it.
          const untouched = extent.guestOffset + extent.lengthBytes <= 256 * KiB;
          const initialZero = initial.subarray(extent.guestOffset, extent.guestOffset + extent.lengthBytes).every((b) => b === 0);
          if (untouched && !initialZero) expect(claims, `${name}: claims unallocatedReadsZero over a backing pattern`).toBe(false);
        }
        const last = extents[extents.length - 1];
        expect(last).toBeDefined();
        offset = last!.guestOffset + last!.lengthBytes;
      }
      await device.close();
    });

    it('readSegments/writeSegments, where a device has them, move the same bytes as read and write', async () => {
      const { device } = await subject.create(SIZE_BYTES);
      if (device.readSegments === undefined && device.writeSegments === undefined) return device.close();
      const offset = 64 * KiB;
      const lengths = [128 * KiB, 4 * KiB, 64 * KiB + 512];
      const totalBytes = lengths.reduce((a, b) => a + b, 0);
      const data = new Uint8Array(totalBytes);
      new SeededRandom(0x5e65).fill(data);
      const pieces = (bytes: Uint8Array, sizes: readonly number[]): Uint8Array[] => {
        let at = 0;
        return sizes.map((n) => bytes.subarray(at, (at += n)));
      };
      if (device.writeSegments !== undefined) {
        await device.writeSegments(offset, pieces(data, lengths));
        const back = new Uint8Array(totalBytes);
        await device.read(offset, back);
        expect(Buffer.compare(back, data), 'writeSegments then read').toBe(0);
      } else {
        await device.write(offset, data);
      }
      if (device.readSegments !== undefined) {
        const back = new Uint8Array(totalBytes);
        await device.readSegments(offset, pieces(back, [...lengths].reverse()));
        expect(Buffer.compare(back, data), 'readSegments after a write').toBe(0);
      }
      await device.close();
      if (subject.createReadOnly === undefined) return;
      const readOnly = await subject.createReadOnly(SIZE_BYTES);
      if (readOnly.writeSegments !== undefined) await expectCode(readOnly.writeSegments(0, [new Uint8Array(512), new Uint8Array(512)]), 'READ_ONLY');
      await readOnly.close();
    });

    it('a read-only device reads and refuses every change with READ_ONLY', async () => {
      if (subject.createReadOnly === undefined) return;
      const device = await subject.createReadOnly(SIZE_BYTES);
      expect(device.capabilities.readOnly).toBe(true);
      await device.read(0, new Uint8Array(4 * KiB));
      for (const change of [
        () => device.write(0, new Uint8Array(512)),
        () => device.writeZeroes(0, 512, {}),
        () => device.discard(0, 512),
      ]) {
        await expectCode(change(), 'READ_ONLY');
      }
      await device.close();
    });
  });
}
