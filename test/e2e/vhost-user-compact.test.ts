/**
 * Issue 12's "done": a guest over vhost-user keeps running and verifying its data while its volume
 * is sealed, compacted and evicted underneath it. A real Linux guest (QEMU TCG,
 * test/vhost-user/guest.ts) on a volume of a tiered dedup pool (a file:// tier) writes seeded
 * 64 KiB blocks round after round, O_DIRECT + fsync, and reads every block back after each round;
 * meanwhile the host runs `volume seal` (the active layer frozen under the running guest, sealed
 * in the background), `volume compact` (internal layers merged by reference) and `volume evict`
 * (the sealed data's packs moved to the tier, so the guest's next reads of them go there), three
 * times, each time waiting for the guest to finish another round. The guest stops when the host
 * writes a stop block through an NBD export of the same volume. Then the host reads the volume
 * back over NBD and checks every block.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { JobJson, VolumeJson } from '../../src/api/rest/schemas.js';
import type { VolumeCompactJson, VolumeSealJson } from '../../src/api/rest/compact-schemas.js';
import { qemuImg, qemuIo, requireTool } from '../support/tools.js';
import { startGuest } from '../vhost-user/guest.js';
import { assertBuilt, useDaemon, type Daemon } from './harness.js';

assertBuilt();

const BLOCK = 65536;
/** Data blocks the guest keeps; each round rewrites a quarter of them. */
const BLOCKS = 16;
const STRIDE = 4;
/** The host writes this block ('S' bytes) to tell the guest to stop. */
const STOP_OFFSET = 4 * 1024 * 1024;
const CYCLES = 3;
/** A bound on the guest's loop (it stops on the host's signal long before). */
const ROUNDS_MAX = 2000;

/** What the guest writes to block i in round r: the line "strata r<r> i<i>" repeated (busybox yes | head). */
function blockContent(round: number, block: number): Buffer {
  const line = Buffer.from(`strata r${round} i${block}\n`);
  const out = Buffer.alloc(BLOCK);
  for (let at = 0; at < BLOCK; at += line.length) line.copy(out, at, 0, Math.min(line.length, BLOCK - at));
  return out;
}

/**
 * Guest shell: each round writes blocks i with i % STRIDE == round % STRIDE (their md5 kept in
 * /tmp/want.i), then reads every block written so far back (O_DIRECT) and compares; echoes
 * "round r"; stops when the stop block reads 'SSSS'.
 */
const GUEST_SCRIPT = `set -e
r=0
while [ $r -lt ${ROUNDS_MAX} ]; do
  i=$((r % ${STRIDE}))
  while [ $i -lt ${BLOCKS} ]; do
    yes "strata r$r i$i" | head -c ${BLOCK} > /tmp/block
    md5sum < /tmp/block | cut -d' ' -f1 > /tmp/want.$i
    dd if=/tmp/block of=/dev/vda bs=${BLOCK} count=1 seek=$i oflag=direct conv=fsync 2>/dev/null || { echo "write $i failed in round $r"; exit 1; }
    i=$((i + ${STRIDE}))
  done
  i=0
  while [ $i -lt ${BLOCKS} ]; do
    if [ -f /tmp/want.$i ]; then
      got=$(dd if=/dev/vda bs=${BLOCK} skip=$i count=1 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
      [ "$got" = "$(cat /tmp/want.$i)" ] || { echo "block $i differs in round $r"; exit 1; }
    fi
    i=$((i + 1))
  done
  echo "round $r"
  stop=$(dd if=/dev/vda bs=4096 skip=${STOP_OFFSET / 4096} count=1 iflag=direct 2>/dev/null | head -c 4)
  [ "$stop" = "SSSS" ] && break
  r=$((r + 1))
done
echo "finished $r"
`;

describe.skipIf(!requireTool('qemu-system-x86_64', 'qemu-img', 'qemu-io'))('a guest over vhost-user while its volume is sealed, compacted and evicted', () => {
  // Its temp folder is not /dev/shm: the unix socket path must stay short.
  const suite = useDaemon();
  const f = (name: string) => suite.file(name);
  const nbd = (name: string) => `nbd+unix:///${name}?socket=${path.join(f('data'), 'nbd.sock')}`;

  it('the guest keeps verifying its data; the volume reads back whole over NBD afterwards', async () => {
    const d: Daemon = suite.d;
    d.cliOk(['pool', 'create', 'gp', '--dedup', '--tier', `file://${f('cold')}`]);
    d.cliOk(['volume', 'create', 'gp/vm', '8M']);
    const socket = f('vm.sock');
    d.cliOk(['volume', 'attach', 'gp/vm', '--vhost-user', socket]);
    // The same live volume, for the stop signal and the read-back.
    d.cliOk(['volume', 'export-nbd', 'gp/vm']);
    const guest = startGuest({ socketPath: socket, timeoutMs: 400_000, script: GUEST_SCRIPT });
    const roundsSeen = () => guest.lines.filter((l) => /^round \d+$/.test(l)).length;
    await guest.waitForMarker('round 1');
    let evictedPacks = 0;
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      const sealed = d.json<VolumeSealJson>(['volume', 'seal', 'gp/vm']);
      d.cliOk(['job', 'watch', sealed.sealJobId!]);
      for (const job of d.json<JobJson[]>(['job', 'list'])) {
        if (job.kind === 'compact' && job.target === 'gp/vm' && (job.state === 'queued' || job.state === 'running')) d.cliOk(['job', 'watch', job.id]);
      }
      const compacted = d.json<VolumeCompactJson>(['volume', 'compact', 'gp/vm']);
      expect(compacted.chainDepthAfter).toBeLessThanOrEqual(2);
      const evicted = d.json<{ movedPacks: number; failed: unknown[] }>(['volume', 'evict', 'gp/vm']);
      expect(evicted.failed).toEqual([]);
      evictedPacks += evicted.movedPacks;
      // The guest finishes a whole round (writes, then reads of every block) after the changes.
      await guest.waitForMarker(`round ${roundsSeen() + 1}`);
      expect(guest.lines.some((l) => l.startsWith('finished'))).toBe(false);
    }
    expect(evictedPacks).toBeGreaterThan(0);
    // A compact job's doneBytes counts the pairs it merged: every seal after the first merged one.
    const compactions = d.json<JobJson[]>(['job', 'list']).filter((j) => j.kind === 'compact' && j.target === 'gp/vm');
    expect(compactions.reduce((sum, j) => sum + j.doneBytes, 0)).toBe(CYCLES - 1);
    const stop = qemuIo(['-f', 'raw', '-c', `write -P 0x53 ${STOP_OFFSET} 4k`, '-c', 'flush', nbd('gp/vm')]);
    expect(stop.code, stop.stderr).toBe(0);
    const r = await guest.result;
    expect(r.exitCode, r.consoleTail).toBe(0);
    const finished = r.lines.find((l) => l.startsWith('finished'));
    expect(finished, r.consoleTail).toBeDefined();
    const lastRound = Number(finished!.split(' ')[1]);
    expect(lastRound).toBeGreaterThan(CYCLES);

    d.cliOk(['volume', 'detach', 'gp/vm']);
    expect(d.json<VolumeJson>(['volume', 'info', 'gp/vm']).chainDepth).toBeLessThanOrEqual(3);
    const out = f('vm.raw');
    const converted = qemuImg(['convert', '-f', 'raw', '-O', 'raw', nbd('gp/vm'), out]);
    expect(converted.code, converted.stderr).toBe(0);
    const bytes = readFileSync(out);
    for (let i = 0; i < BLOCKS; i++) {
      // The last round that wrote block i.
      let round = lastRound;
      while (round % STRIDE !== i % STRIDE) round--;
      expect(bytes.subarray(i * BLOCK, (i + 1) * BLOCK).equals(blockContent(round, i)), `block ${i} (round ${round})`).toBe(true);
    }
    expect(bytes.subarray(STOP_OFFSET, STOP_OFFSET + 4096).every((b) => b === 0x53)).toBe(true);
    d.cliOk(['volume', 'unexport-nbd', 'gp/vm']);
  });
});
