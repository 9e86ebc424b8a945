/**
 * A group snapshot of a real guest's two vhost-user disks (docs/groups.md): a TCG guest
 * (test/vhost-user/guest.ts) with volumes default/a and q/b attached through `strata volume
 * attach --vhost-user` writes numbered records, each to vdb only after the same record completed
 * on vda (O_DIRECT + flush); 20 group snapshots are taken with `strata group snap create` while it
 * runs; in every one, B's last record is not ahead of A's.
 */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkGroupSnapshots, guestRecordWrite } from '../support/ordered-records.js';
import { makeTempDir } from '../support/tmp.js';
import { REPO_ROOT, STRATA_BIN, requireTool } from '../support/tools.js';
import { startGuest } from '../vhost-user/guest.js';
import { assertBuilt, snapshotContent, startDaemon, type Daemon } from './harness.js';

assertBuilt();

const MiB = 1 << 20;
const DISK_BYTES = MiB;
const SNAPSHOTS = 20;
/** More records than the test waits for: the guest is killed once the snapshots are taken. */
const GUEST_RECORDS = 1_000_000;

describe.skipIf(!requireTool('qemu-system-x86_64', 'qemu-img', 'apt-get', 'dpkg-deb'))('group snapshots of a guest with two vhost-user disks', () => {
  let d: Daemon;
  let tmp: { path: string; cleanup: () => void };
  const f = (name: string) => path.join(tmp.path, name);

  beforeAll(async () => {
    tmp = makeTempDir(); // not /dev/shm: the sockets' paths stay short
    writeFileSync(f('strata.json'), JSON.stringify({ maxChainDepth: 40 }));
    d = await startDaemon(f('data'), { args: ['--config', f('strata.json')] });
  });
  afterAll(async () => {
    await d?.stop();
    tmp?.cleanup();
  });

  it('in each of 20 group snapshots taken while the guest writes A-then-B, B is not ahead of A', async () => {
    d.cliOk(['pool', 'create', 'q']);
    d.cliOk(['volume', 'create', 'a', '1M']);
    d.cliOk(['volume', 'create', 'q/b', '1M']);
    d.cliOk(['group', 'create', 'g']);
    d.cliOk(['group', 'add', 'g', 'a']);
    d.cliOk(['group', 'add', 'g', 'q/b']);
    d.cliOk(['volume', 'attach', 'a', '--vhost-user', f('a.sock')]);
    d.cliOk(['volume', 'attach', 'q/b', '--vhost-user', f('b.sock')]);
    const idA = d.json<{ id: string }>(['volume', 'info', 'a']).id;

    const guest = startGuest({
      socketPath: f('a.sock'),
      qemuArgs: ['-chardev', `socket,id=vhost1,path=${f('b.sock')}`, '-device', 'vhost-user-blk-pci,chardev=vhost1'],
      timeoutMs: 600_000,
      script: `set -e
echo "vda $(cat /sys/block/vda/serial)"
n=1
while [ $n -le ${GUEST_RECORDS} ]; do
  ${guestRecordWrite('/dev/vda', DISK_BYTES).replace(/\n/g, '\n  ')} || { echo "write A $n failed"; exit 1; }
  ${guestRecordWrite('/dev/vdb', DISK_BYTES).replace(/\n/g, '\n  ')} || { echo "write B $n failed"; exit 1; }
  echo "rec $n"
  n=$((n+1))
done`,
    });
    const ended = guest.result.then(
      (r) => `the guest ended (exit ${r.exitCode}):\n${r.consoleTail}`,
      (err: unknown) => String(err),
    );
    expect(await guest.waitForMarker('vda ')).toBe(`vda ${idA}`);
    const recordsSeen = () => guest.lines.filter((l) => l.startsWith('rec ')).length;
    try {
      for (let i = 1; i <= SNAPSHOTS; i++) {
        // The guest completes two more records (on both disks) between snapshots.
        await Promise.race([guest.waitForMarker(`rec ${recordsSeen() + 2}`), ended.then((why) => Promise.reject(new Error(why)))]);
        await promisify(execFile)(process.execPath, [STRATA_BIN, 'group', 'snap', 'create', `g@s${i}`], { cwd: REPO_ROOT, env: d.env() as NodeJS.ProcessEnv });
      }
    } finally {
      guest.kill();
      await ended;
    }

    await checkGroupSnapshots(SNAPSHOTS, async (i) => [
      await snapshotContent(d, 'default', 'a', `group.g.s${i}`),
      await snapshotContent(d, 'q', 'b', `group.g.s${i}`),
    ]);
    d.cliOk(['volume', 'detach', 'a']);
    d.cliOk(['volume', 'detach', 'q/b']);
  });
});
