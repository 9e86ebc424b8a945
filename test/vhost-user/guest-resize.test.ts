/**
 * Online grow seen by a real Linux guest (QEMU TCG, test/vhost-user/guest.ts) on a vhost-user-blk
 * disk served by VhostUserBlkExport from a LocalVolumeService volume (what `strata volume resize`
 * reaches through the REST API: service.resizeVolume).
 *
 * One boot, two grows:
 *  1. while attached: the guest's /sys/block/vda/size follows (CONFIG_CHANGE_MSG, QEMU re-reads
 *     the config and raises the guest's config interrupt), and the guest writes and reads back the
 *     new last sector;
 *  2. while the export is down (a daemon restart; QEMU with reconnect=1): QEMU keeps the config it
 *     read at start, so the back-end has it read the config again once the rings are back.
 * The host then reads both last sectors through the volume.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { VhostUserBlkExport } from '../../src/export/vhost-user/export.js';
import type { BlockDevice } from '../../src/core/block-device.js';
import { requireTool } from '../support/tools.js';
import { tempDir } from '../support/tmp.js';
import { makeEnv, MiB } from '../volume/helpers.js';
import { guestValues, prepareGuestAssets, startGuest } from './guest.js';

const SECTOR_BYTES = 512;
const BOOT_TIMEOUT_MS = 150_000;
const TEST_TIMEOUT_MS = 240_000;
const SIZES_BYTES = [32 * MiB, 48 * MiB, 64 * MiB] as const;

const haveTools = requireTool('qemu-system-x86_64', 'apt-get', 'dpkg-deb');

function sectorOf(fill: string): Buffer {
  return Buffer.alloc(SECTOR_BYTES, fill);
}

function md5(data: Uint8Array): string {
  return createHash('md5').update(data).digest('hex');
}

/** Guest shell: waits until the disk's size (in sectors) differs from $prev, then writes and reads back its last sector. */
function growPhase(n: number): string[] {
  return [
    'prev=$(cat /sys/block/vda/size)',
    `echo "ready${n}"`,
    'i=0',
    'while [ "$(cat /sys/block/vda/size)" = "$prev" ]; do i=$((i+1)); [ $i -lt 1200 ] || { echo "the size stayed $prev"; exit 1; }; sleep 0.1; done',
    `s=$(cat /sys/block/vda/size); echo "size${n}=$s"`,
    `dd if=/strata/files/tail${n} of=/dev/vda bs=${SECTOR_BYTES} seek=$((s-1)) count=1 oflag=direct conv=fsync 2>/dev/null || { echo "dd write tail${n} failed"; exit 1; }`,
    `echo "tail${n}=$(dd if=/dev/vda bs=${SECTOR_BYTES} skip=$((s-1)) count=1 iflag=direct 2>/dev/null | md5sum | cut -c1-32)"`,
  ];
}

describe.skipIf(!haveTools)('vhost-user-blk guest: online grow', () => {
  beforeAll(async () => {
    await prepareGuestAssets();
  }, 600_000);

  it(
    'the guest sees the volume grow, while attached and across a back-end restart, and writes its new last sector',
    async () => {
      const env = await makeEnv();
      const service = env.service;
      await service.createPool('p');
      await service.createVolume('p', 'vm', SIZES_BYTES[0]);
      const device: BlockDevice = await service.openDevice('p', 'vm');
      const socketPath = path.join(tempDir(), 'vm.sock');
      const log: string[] = [];
      const serve = async (): Promise<VhostUserBlkExport> => {
        const e = new VhostUserBlkExport({ socketPath, queueCount: 1, readOnly: false, serial: 'vm', logger: (line) => log.push(line) });
        await e.start(device);
        return e;
      };
      let exp = await serve();
      const tails = { tail1: sectorOf('first grow '), tail2: sectorOf('second grow ') };
      const script = ['set -e', `echo "size0=$(cat /sys/block/vda/size)"`, ...growPhase(1), ...growPhase(2), 'sync'].join('\n');
      const guest = startGuest({ socketPath, script, files: tails, reconnect: true, timeoutMs: BOOT_TIMEOUT_MS });
      try {
        await guest.waitForMarker('ready1');
        await service.resizeVolume('p', 'vm', SIZES_BYTES[1]);
        await guest.waitForMarker('ready2');
        exp.requestShutdown();
        await exp.closed;
        await service.resizeVolume('p', 'vm', SIZES_BYTES[2]);
        exp = await serve();
      } catch (e) {
        guest.kill();
        throw e;
      }
      const r = await guest.result.finally(async () => {
        exp.requestShutdown();
        await exp.closed;
      });
      expect(r.exitCode, `guest script failed:\n${r.lines.join('\n')}\n--- console tail ---\n${r.consoleTail}\n--- backend log ---\n${log.slice(-30).join('\n')}`).toBe(0);
      const v = guestValues(r.lines);
      expect(v.get('size0')).toBe(String(SIZES_BYTES[0] / SECTOR_BYTES));
      expect(v.get('size1')).toBe(String(SIZES_BYTES[1] / SECTOR_BYTES));
      expect(v.get('size2')).toBe(String(SIZES_BYTES[2] / SECTOR_BYTES));
      expect(v.get('tail1')).toBe(md5(tails.tail1));
      expect(v.get('tail2')).toBe(md5(tails.tail2));
      // The bytes landed at the new ends of the volume, read on the host.
      const got = new Uint8Array(SECTOR_BYTES);
      await device.read(SIZES_BYTES[1] - SECTOR_BYTES, got);
      expect(Buffer.from(got)).toEqual(tails.tail1);
      await device.read(SIZES_BYTES[2] - SECTOR_BYTES, got);
      expect(Buffer.from(got)).toEqual(tails.tail2);
      await device.close();
    },
    TEST_TIMEOUT_MS,
  );
});
