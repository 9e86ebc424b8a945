/**
 * Discard and unmapping write-zeroes return space to the host: the freed clusters are punched out
 * of the image file, and qemu-img still finds the image clean and reading zeroes there.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import { MiB } from '../../src/core/units.js';
import { LocalHostFile } from '../../src/store/local-file.js';
import { requireTool, run } from '../support/tools.js';
import { tempDir } from '../support/tmp.js';

const hasQemu = requireTool('qemu-img', 'qemu-io');

async function freshImage(file: string, sizeBytes: number): Promise<Qcow2Image> {
  const created = await LocalHostFile.open(file, { create: true });
  await Qcow2Image.create(created, { sizeBytes });
  await created.close();
  return Qcow2Image.open(await LocalHostFile.open(file));
}

describe.skipIf(!hasQemu)('qcow2 space reclamation', () => {
  for (const how of ['discard', 'write-zeroes with unmap'] as const) {
    it(`${how} punches freed clusters out of the host file`, async () => {
      const file = path.join(tempDir(), 'space.qcow2');
      const image = await freshImage(file, 64 * MiB);
      await image.write(0, new Uint8Array(16 * MiB).fill(0x5a));
      await image.flush();
      const before = await image.file.allocatedBytes();
      expect(before).toBeGreaterThanOrEqual(16 * MiB);
      if (how === 'discard') await image.discard(0, 16 * MiB);
      else await image.writeZeroes(0, 16 * MiB, { mayUnmap: true });
      await image.flush();
      const after = await image.file.allocatedBytes();
      // All 256 data clusters (16 MiB) come back; metadata stays.
      expect(before - after).toBeGreaterThanOrEqual(16 * MiB - 64 * 1024);
      await image.close();
      expect(run('qemu-img', ['check', file]).code).toBe(0);
      expect(run('qemu-io', ['-c', 'read -P 0 0 16M', file]).code).toBe(0);
    });
  }

  it('write-zeroes without unmap keeps the clusters allocated but reading zeroes', async () => {
    const file = path.join(tempDir(), 'keep.qcow2');
    const image = await freshImage(file, 8 * MiB);
    await image.write(0, new Uint8Array(4 * MiB).fill(1));
    await image.flush();
    const before = await image.file.allocatedBytes();
    await image.writeZeroes(0, 4 * MiB, { mayUnmap: false });
    await image.close();
    const map = JSON.parse(run('qemu-img', ['map', '--output=json', file]).stdout) as { start: number; zero: boolean; offset?: number }[];
    const first = map.find((e) => e.start === 0)!;
    expect(first.zero).toBe(true);
    expect(first.offset).toBeDefined();
    expect(before).toBeGreaterThanOrEqual(4 * MiB);
    expect(run('qemu-img', ['check', file]).code).toBe(0);
    expect(run('qemu-io', ['-c', 'read -P 0 0 4M', file]).code).toBe(0);
  });
});
