/**
 * The guest rig's report of a running guest (guest-monitor.ts), which a timed-out guest test
 * carries: it must name the vCPUs' places and the virtio rings' indexes, or a hang seen once in CI
 * leaves nothing to go on. Against qemu-storage-daemon, whose rings need no Strata code to work.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { qemuImg, requireTool, expectSuccess } from '../support/tools.js';
import { tempDir } from '../support/tmp.js';
import { prepareGuestAssets, startGuest } from './guest.js';

const haveTools = requireTool('qemu-system-x86_64', 'qemu-img', 'qemu-storage-daemon', 'apt-get', 'dpkg-deb');
const BOOT_TIMEOUT_MS = 150_000;

describe.skipIf(!haveTools)('guest rig: the monitor report', () => {
  beforeAll(async () => {
    await prepareGuestAssets();
  }, 600_000);

  it('names each vCPU, each queue and the rings\' avail and used indexes of a guest that did I/O', async () => {
    const dir = tempDir();
    const image = path.join(dir, 'disk.qcow2');
    expectSuccess(qemuImg(['create', '-f', 'qcow2', image, '64M']));
    const socketPath = path.join(dir, 'vhost.sock');
    const qsd = spawn(
      'qemu-storage-daemon',
      [
        '--blockdev', `driver=file,node-name=file,filename=${image}`,
        '--blockdev', 'driver=qcow2,node-name=disk,file=file',
        '--export', `type=vhost-user-blk,id=export,node-name=disk,addr.type=unix,addr.path=${socketPath},writable=on,num-queues=2`,
      ],
      { stdio: 'ignore' },
    );
    try {
      for (let i = 0; i < 100 && !existsSync(socketPath); i++) await new Promise((resolve) => setTimeout(resolve, 100));
      const guest = startGuest({ socketPath, queues: 2, smp: 2, timeoutMs: BOOT_TIMEOUT_MS, script: 'dd if=/dev/vda of=/dev/null bs=4k count=16 iflag=direct\necho read\nsleep 600' });
      await guest.waitForMarker('read');
      const report = await guest.monitorReport();
      guest.kill();
      await guest.result.catch(() => undefined);
      expect(report).toContain('VM status: running');
      expect(report.match(/^RIP=/gm), report).toHaveLength(2); // one per vCPU
      for (const queue of [0, 1]) {
        for (const ring of ['avail', 'used']) expect(report, report).toMatch(new RegExp(`queue ${queue} ${ring}\\.idx\\)\\n[0-9a-f]+: 0x[0-9a-f]{4}`));
      }
      // The reads went through one of the queues, and every request made available was used.
      const indexes = [...report.matchAll(/queue (\d) (avail|used)\.idx\)\n[0-9a-f]+: 0x([0-9a-f]{4})/g)].map((m) => ({ queue: m[1], ring: m[2], value: Number.parseInt(m[3]!, 16) }));
      const total = (ring: string): number => indexes.filter((entry) => entry.ring === ring).reduce((sum, entry) => sum + entry.value, 0);
      expect(total('avail'), report).toBeGreaterThan(0);
      expect(total('used'), report).toBe(total('avail'));
    } finally {
      qsd.kill('SIGKILL');
    }
  }, BOOT_TIMEOUT_MS + 30_000);
});
