/**
 * QoS with a real guest over vhost-user-blk (issue 15): the daemon serves a volume limited to 200
 * read IOPS; the guest (QEMU TCG, test/vhost-user/guest.ts) reads 2000 blocks of 4 KiB with
 * O_DIRECT, one at a time, and times them with its own clock: about 10 s, the rate within 10% of
 * the limit. The same LiveDevice throttle serves NBD (test/e2e/qos.test.ts).
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir } from '../support/tmp.js';
import { requireTool } from '../support/tools.js';
import { bootGuest } from '../vhost-user/guest.js';
import { assertBuilt, startDaemon, type Daemon } from './harness.js';

assertBuilt();

const LIMIT_IOPS = 200;
const READS = 2000;

describe.skipIf(!requireTool('qemu-system-x86_64'))('QoS with a real guest over vhost-user-blk', () => {
  let d: Daemon;
  let tmp: { path: string; cleanup: () => void };

  beforeAll(async () => {
    // Not /dev/shm: the unix socket path must stay short.
    tmp = makeTempDir();
    d = await startDaemon(path.join(tmp.path, 'data'));
  });
  afterAll(async () => {
    await d?.stop();
    tmp?.cleanup();
  });

  it(`the guest reads at ${LIMIT_IOPS} IOPS, within 10%`, async () => {
    d.cliOk(['volume', 'create', 'vm', '16M', '--read-iops', String(LIMIT_IOPS)]);
    const socket = path.join(tmp.path, 'vm.sock');
    d.cliOk(['volume', 'attach', 'vm', '--vhost-user', socket]);
    const r = await bootGuest({
      socketPath: socket,
      timeoutMs: 180_000,
      script: `set -e
start=$(cut -d' ' -f1 /proc/uptime)
dd if=/dev/vda of=/dev/null bs=4k count=${READS} iflag=direct 2>/dev/null
end=$(cut -d' ' -f1 /proc/uptime)
echo "timed $start $end"`,
    });
    expect(r.exitCode, r.consoleTail).toBe(0);
    const line = r.lines.find((l) => l.startsWith('timed '));
    expect(line, r.consoleTail).toBeDefined();
    const [start, end] = line!.split(' ').slice(1).map(Number) as [number, number];
    const iops = READS / (end - start);
    console.log(`QoS guest: ${READS} reads in ${(end - start).toFixed(2)} s: ${iops.toFixed(1)} IOPS (limit ${LIMIT_IOPS})`);
    expect(iops).toBeGreaterThanOrEqual(LIMIT_IOPS * 0.9);
    expect(iops).toBeLessThanOrEqual(LIMIT_IOPS * 1.1);
    const metrics = await (await d.api('GET', '/metrics')).text();
    expect(metrics).toMatch(/^strata_volume_qos_throttled_requests_total\{pool="default",volume="vm"\} [1-9]/m);
  }, 240_000);
});
