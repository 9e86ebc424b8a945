/**
 * A real Linux guest (QEMU TCG, test/vhost-user/guest.ts) writing with `dd oflag=direct` into a
 * full pool over vhost-user-blk: it gets no I/O error; its write waits (the export counts it, the
 * guest's dd has not finished) and completes once space is freed, and the guest reads back what
 * it wrote. The image is a qcow2 file on a small tmpfs filled up with another file (mounting needs
 * root; skipped where it cannot be mounted); space is freed by deleting that file.
 */
import { createHash, randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import { VhostUserBlkExport } from '../../src/export/vhost-user/export.js';
import { LocalHostFile } from '../../src/store/local-file.js';
import { makeTempDir } from '../support/tmp.js';
import { expectSuccess, qemuImg, requireTool } from '../support/tools.js';
import { guestValues, prepareGuestAssets, startGuest } from './guest.js';
import { fillUp, mountSmallTmpfs, unmountSmallTmpfs } from '../support/fill-filesystem.js';

const TMPFS_BYTES = 8 * 1024 * 1024;
const DATA_BYTES = 1024 * 1024;
const BOOT_TIMEOUT_MS = 150_000;

const haveTools = requireTool('qemu-system-x86_64', 'qemu-img', 'apt-get', 'dpkg-deb', 'mount', 'umount');

describe.skipIf(!haveTools)('vhost-user-blk guest: writing into a full pool', () => {
  const tmp = makeTempDir();
  const mnt = path.join(tmp.path, 'mnt');
  let mounted = false;

  beforeAll(async () => {
    await prepareGuestAssets();
  }, 600_000);

  afterAll(() => {
    if (mounted) unmountSmallTmpfs(mnt);
    tmp.cleanup();
  });

  it(
    "the guest's direct write waits instead of failing, and completes with its data once space is freed",
    async (ctx) => {
      if (!mountSmallTmpfs(mnt, TMPFS_BYTES)) ctx.skip();
      mounted = true;
      const imagePath = path.join(mnt, 'vm.qcow2');
      expectSuccess(qemuImg(['create', '-q', '-f', 'qcow2', imagePath, String(64 * 1024 * 1024)]), 'qemu-img create');
      const image = await Qcow2Image.open(await LocalHostFile.open(imagePath));
      const socketPath = path.join(tmp.path, 'vm.sock');
      const log: string[] = [];
      const exp = new VhostUserBlkExport({ socketPath, queueCount: 1, readOnly: false, serial: 'vm', target: 'p/vm', logger: (line) => log.push(line) });
      await exp.start(image);
      const data = randomBytes(DATA_BYTES);
      // The pool is full before the guest boots: its first write finds no room.
      fillUp(path.join(mnt, 'filler'));
      const guest = startGuest({
        socketPath,
        files: { data },
        timeoutMs: BOOT_TIMEOUT_MS,
        script: [
          'echo start',
          `dd if=/strata/files/data of=/dev/vda bs=64k seek=256 oflag=direct 2>/dev/null; echo "dd=$?"`,
          `echo "sum=$(dd if=/dev/vda bs=64k skip=256 count=${DATA_BYTES / 65536} iflag=direct 2>/dev/null | md5sum | cut -c1-32)"`,
        ].join('\n'),
      });
      try {
        await guest.waitForMarker('start');
        const deadline = Date.now() + BOOT_TIMEOUT_MS;
        const ddDone = (): boolean => guest.lines.some((l) => l.startsWith('dd='));
        while (exp.stats().waitingForSpace === 0 && !ddDone() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        expect(exp.stats().waitingForSpace, `${guest.lines.join('\n')}\n--- backend log ---\n${log.join('\n')}`).toBeGreaterThan(0);
        // The guest's dd has not finished: it waits, with no error.
        expect(ddDone()).toBe(false);
        rmSync(path.join(mnt, 'filler'));
      } catch (e) {
        guest.kill();
        throw e;
      }
      const r = await guest.result.finally(async () => {
        exp.requestShutdown();
        await exp.closed;
        await image.close();
      });
      expect(r.exitCode, `guest script failed:\n${r.lines.join('\n')}\n--- console tail ---\n${r.consoleTail}\n--- backend log ---\n${log.slice(-30).join('\n')}`).toBe(0);
      const v = guestValues(r.lines);
      expect(v.get('dd')).toBe('0');
      expect(v.get('sum')).toBe(createHash('md5').update(data).digest('hex'));
      expect(r.console).not.toMatch(/I\/O error|critical (space|target) error/);
      expect(log.some((l) => /no space for the guest's writes/.test(l))).toBe(true);
      expect(exp.stats().deviceErrors).toBe(0);
    },
    BOOT_TIMEOUT_MS + 60_000,
  );
});
