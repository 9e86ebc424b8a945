/**
 * vhost-user-blk through the daemon: `strata volume attach --vhost-user` and a real QEMU guest
 * (TCG, Debian kernel, busybox initramfs: test/vhost-user/guest.ts). The guest writes and
 * verifies; the daemon is killed with SIGKILL mid-write and restarted (QEMU's reconnect=1 redials
 * the restored attachment, the guest's I/O completes and verifies); a snapshot taken while the
 * guest writes holds exactly the writes completed before it; a read-only attach refuses writes; an
 * attached snapshot is a read-only disk holding the snapshot's data.
 * The host checks what the guest wrote through an NBD export of a snapshot, and every layer with
 * `qemu-img check`.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir } from '../support/tmp.js';
import { requireTool, run } from '../support/tools.js';
import { bootGuest, startGuest } from '../vhost-user/guest.js';
import { assertBuilt, chainFiles, expectCleanCheck, startDaemon, type Daemon } from './harness.js';

assertBuilt();

const BLOCK = 65536;
/** One letter per block: block i is 64 KiB of LETTERS[i]. */
const LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmn'.split('');

/**
 * Guest shell: writes block i (64 KiB of its letter, O_DIRECT + fsync) for i in [from, to), echoing
 * "wrote i", pausing pauseMs after each write (so that host actions can land mid-stream). The block
 * is built in a file first: dd reading from a pipe gets short reads and would write one block as
 * several requests, and a snapshot could then fall between them. One file per block: writers run in
 * parallel in one test.
 */
function writeBlocks(from: number, to: number, pauseMs = 0): string {
  const pause = pauseMs > 0 ? `usleep ${pauseMs * 1000} 2>/dev/null || sleep 1` : ':';
  return `
i=0
for c in ${LETTERS.join(' ')}; do
  if [ $i -ge ${from} ] && [ $i -lt ${to} ]; then
    dd if=/dev/zero bs=65536 count=1 2>/dev/null | tr '\\0' "$c" > /block.$i
    dd if=/block.$i of=/dev/vda bs=65536 count=1 seek=$i oflag=direct conv=fsync 2>/dev/null || { echo "write $i failed"; exit 1; }
    rm -f /block.$i
    echo "wrote $i"
    ${pause}
  fi
  i=$((i+1))
done
`;
}

/** Guest shell: reads blocks [0, n) back and compares each with its letter. */
function verifyBlocks(n: number): string {
  return `
i=0
for c in ${LETTERS.join(' ')}; do
  if [ $i -lt ${n} ]; then
    want=$(dd if=/dev/zero bs=65536 count=1 2>/dev/null | tr '\\0' "$c" | md5sum | cut -d' ' -f1)
    got=$(dd if=/dev/vda bs=65536 skip=$i count=1 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
    [ "$want" = "$got" ] || { echo "block $i differs"; exit 1; }
  fi
  i=$((i+1))
done
echo verified ${n}
`;
}

describe.skipIf(!requireTool('qemu-system-x86_64', 'qemu-img', 'nbdcopy'))('vhost-user-blk through the daemon, with a real guest', () => {
  let d: Daemon;
  let tmp: { path: string; cleanup: () => void };
  const f = (name: string) => path.join(tmp.path, name);

  beforeAll(async () => {
    // Not /dev/shm: the unix socket path must stay short, and the images are small.
    tmp = makeTempDir();
    d = await startDaemon(f('data'));
  });
  afterAll(async () => {
    await d?.stop();
    tmp?.cleanup();
  });

  /** What the volume's snapshot `snap` holds, read through an NBD export. */
  function snapshotBytes(volume: string, snap: string): Buffer {
    d.cliOk(['volume', 'export-nbd', `${volume}@${snap}`]);
    const out = f(`${volume}-${snap}.raw`);
    const r = run('nbdcopy', [`nbd+unix:///default/${volume}@${snap}?socket=${path.join(f('data'), 'nbd.sock')}`, out]);
    expect(r.code, r.stderr).toBe(0);
    d.cliOk(['volume', 'unexport-nbd', `${volume}@${snap}`]);
    return readFileSync(out);
  }

  function blockIs(bytes: Buffer, i: number, letter: string | 0): boolean {
    const want = letter === 0 ? 0 : letter.charCodeAt(0);
    return bytes.subarray(i * BLOCK, (i + 1) * BLOCK).every((b) => b === want);
  }

  it('attach: the guest writes and reads back on 2 queues, sees the volume id as its serial; the host sees the data', async () => {
    d.cliOk(['volume', 'create', 'vm1', '16M']);
    const socket = f('vm1.sock');
    const attached = d.json<{ type: string; socketPath: string; queueCount: number; id: string }>(['volume', 'attach', 'vm1', '--vhost-user', socket, '--queues', '2']);
    expect(attached).toMatchObject({ type: 'vhost-user', socketPath: socket, queueCount: 2 });
    expect(d.cliOk(['volume', 'exports']).stdout).toMatch(/vhost-user\s+default\/vm1\s+rw/);
    d.cliFails(['volume', 'attach', 'vm1', '--vhost-user', f('other.sock')], 4, 'already attached');
    d.cliFails(['volume', 'delete', 'vm1'], 4, 'exported');
    const volumeId = d.json<{ id: string }>(['volume', 'info', 'vm1']).id;

    const r = await bootGuest({
      socketPath: socket,
      queues: 2,
      smp: 2,
      script: `set -e
echo "serial $(cat /sys/block/vda/serial)"
echo "queues $(ls /sys/block/vda/mq | wc -l)"
echo "size $(cat /sys/block/vda/size)"
${writeBlocks(0, 8)}
# two writers at once, one per CPU (and queue)
( ${writeBlocks(8, 16).replace(/\n/g, '\n  ')} ) > /tmp/a 2>&1 &
( ${writeBlocks(16, 24).replace(/\n/g, '\n  ')} ) > /tmp/b 2>&1 &
wait
sync
${verifyBlocks(24)}`,
    });
    expect(r.exitCode, r.consoleTail).toBe(0);
    expect(r.lines).toContain(`serial ${volumeId}`);
    expect(r.lines).toContain('queues 2');
    expect(r.lines).toContain(`size ${(16 * 1024 * 1024) / 512}`);
    expect(r.lines).toContain('verified 24');
    // The daemon polls drained rings by default (--vhost-poll-us): the guest's I/O started polls.
    const metrics = await (await d.api('GET', '/metrics')).text();
    const value = (name: string): number => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1] ?? NaN);
    expect(metrics).toMatch(/# TYPE strata_vhost_user_ring_polls_total counter/);
    expect(value('strata_vhost_user_ring_polls_total')).toBeGreaterThan(0);
    expect(value('strata_vhost_user_ring_poll_hits_total')).toBeLessThanOrEqual(value('strata_vhost_user_ring_polls_total'));

    d.cliOk(['snap', 'create', 'vm1@after']);
    const bytes = snapshotBytes('vm1', 'after');
    for (let i = 0; i < 24; i++) expect(blockIs(bytes, i, LETTERS[i]!), `block ${i}`).toBe(true);
    expect(blockIs(bytes, 24, 0)).toBe(true);
  });

  it('reconnect: SIGKILL the daemon while the guest writes; after a restart the guest finishes and verifies', async () => {
    d.cliOk(['volume', 'create', 'vm2', '16M']);
    const socket = f('vm2.sock');
    d.cliOk(['volume', 'attach', 'vm2', '--vhost-user', socket]);
    const guest = startGuest({
      socketPath: socket,
      reconnect: true,
      timeoutMs: 240_000,
      script: `set -e
${writeBlocks(0, 40)}
sync
${verifyBlocks(40)}`,
    });
    await guest.waitForMarker('wrote 6');
    await d.kill();
    d = await startDaemon(f('data'));
    expect(d.logs()).toMatch(/exports restored/);
    const r = await guest.result;
    expect(r.exitCode, r.consoleTail).toBe(0);
    expect(r.lines).toContain('verified 40');

    d.cliOk(['snap', 'create', 'vm2@done']);
    const bytes = snapshotBytes('vm2', 'done');
    for (let i = 0; i < 40; i++) expect(blockIs(bytes, i, LETTERS[i]!), `block ${i}`).toBe(true);
    const info = d.json<{ location: string }>(['volume', 'info', 'vm2']);
    d.cliOk(['volume', 'detach', 'vm2']);
    for (const file of chainFiles(info.location)) expectCleanCheck(file);
  });

  it('a snapshot taken while the guest writes holds exactly the writes completed before it', async () => {
    d.cliOk(['volume', 'create', 'vm3', '16M']);
    const socket = f('vm3.sock');
    d.cliOk(['volume', 'attach', 'vm3', '--vhost-user', socket]);
    // 200 ms between writes: the 30 writes after the marker take longer than the CLI's snapshot,
    // so it lands mid-stream even on an idle machine where the guest runs fast.
    const guest = startGuest({ socketPath: socket, script: `set -e\n${writeBlocks(0, 40, 200)}\nsync\necho done` });
    await guest.waitForMarker('wrote 10');
    // Blocks the guest reported written before the snapshot began are certainly in it.
    const reportedBefore = guest.lines.filter((l) => /^wrote \d+$/.test(l)).length;
    d.cliOk(['snap', 'create', 'vm3@mid']);
    const r = await guest.result;
    expect(r.exitCode, r.consoleTail).toBe(0);

    const snap = snapshotBytes('vm3', 'mid');
    // The guest writes in order, one at a time: the snapshot is a prefix of whole blocks.
    let prefix = 0;
    while (prefix < 40 && blockIs(snap, prefix, LETTERS[prefix]!)) prefix++;
    for (let i = prefix; i < 40; i++) expect(blockIs(snap, i, 0), `block ${i} after the prefix (${prefix}) is not empty`).toBe(true);
    expect(prefix).toBeGreaterThanOrEqual(reportedBefore);
    expect(prefix, 'writes after the snapshot must not be in it').toBeLessThan(40);
    // The volume itself has all 40.
    d.cliOk(['snap', 'create', 'vm3@end']);
    const end = snapshotBytes('vm3', 'end');
    for (let i = 0; i < 40; i++) expect(blockIs(end, i, LETTERS[i]!), `block ${i}`).toBe(true);
  });

  it('a read-only attach: the guest sees a read-only disk and its writes fail; the volume is unchanged', async () => {
    d.cliOk(['volume', 'create', 'vm4', '8M']);
    const socket = f('vm4.sock');
    d.cliOk(['volume', 'attach', 'vm4', '--vhost-user', socket, '--read-only']);
    const r = await bootGuest({
      socketPath: socket,
      script: `echo "ro $(cat /sys/block/vda/ro)"
if dd if=/dev/zero of=/dev/vda bs=4096 count=1 oflag=direct conv=fsync 2>/dev/null; then echo "write ok"; else echo "write refused"; fi`,
    });
    expect(r.lines, r.consoleTail).toContain('ro 1');
    expect(r.lines).toContain('write refused');
    d.cliOk(['volume', 'detach', 'vm4']);
    d.cliOk(['snap', 'create', 'vm4@s']);
    const bytes = snapshotBytes('vm4', 's');
    expect(bytes.every((b) => b === 0)).toBe(true);
  });

  it("an attached snapshot: the guest sees a read-only disk holding the snapshot's data, not the volume's newer writes", async () => {
    d.cliOk(['volume', 'create', 'vm5', '8M']);
    const nbd = (name: string) => `nbd+unix:///default/${name}?socket=${path.join(f('data'), 'nbd.sock')}`;
    const fill = (letter: string) => {
      const file = f(`vm5-${letter}.raw`);
      writeFileSync(file, Buffer.alloc(8 << 20, letter));
      d.cliOk(['volume', 'export-nbd', 'vm5']);
      const r = run('nbdcopy', [file, nbd('vm5')]);
      expect(r.code, r.stderr).toBe(0);
      d.cliOk(['volume', 'unexport-nbd', 'vm5']);
    };
    fill('G');
    d.cliOk(['snap', 'create', 'vm5@gold']);
    fill('N');
    const socket = f('vm5gold.sock');
    expect(d.json<{ readOnly: boolean; snapshot: string }>(['volume', 'attach', 'vm5@gold', '--vhost-user', socket])).toMatchObject({ readOnly: true, snapshot: 'gold' });
    const r = await bootGuest({
      socketPath: socket,
      script: `echo "ro $(cat /sys/block/vda/ro)"
echo "head $(dd if=/dev/vda bs=4096 count=1 iflag=direct 2>/dev/null | head -c 8)"
echo "tail $(dd if=/dev/vda bs=4096 skip=2047 count=1 iflag=direct 2>/dev/null | head -c 8)"
if dd if=/dev/zero of=/dev/vda bs=4096 count=1 oflag=direct conv=fsync 2>/dev/null; then echo "write ok"; else echo "write refused"; fi`,
    });
    expect(r.lines, r.consoleTail).toContain('ro 1');
    expect(r.lines).toContain('head GGGGGGGG');
    expect(r.lines).toContain('tail GGGGGGGG');
    expect(r.lines).toContain('write refused');
    d.cliFails(['snap', 'delete', 'vm5@gold'], 4, 'strata volume detach default/vm5@gold');
    d.cliOk(['volume', 'detach', 'vm5@gold']);
    expect(snapshotBytes('vm5', 'gold').every((b) => b === 'G'.charCodeAt(0))).toBe(true);
    d.cliOk(['snap', 'delete', 'vm5@gold']);
  });
});
