/**
 * An NBD client writing into a full pool gets ENOSPC, and the daemon says so: a warning naming the
 * export, what the client was told and the StorageError (the first error of a connection at once,
 * then at most a line a minute with the count), and strata_export_device_errors_total in /metrics.
 * They used to be sent to the client only: the operator saw nothing. The pool is full for real: the
 * data folder is on a small tmpfs (root only; skipped where it cannot be mounted).
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { qemuIo, requireTool } from '../support/tools.js';
import { useFullDiskDaemon } from './full-disk-daemon.js';
import { assertBuilt } from './harness.js';

assertBuilt();

const TMPFS_BYTES = 24 * 1024 * 1024;

describe.skipIf(!requireTool('qemu-io', 'mount', 'umount'))('NBD device errors', () => {
  const disk = useFullDiskDaemon(TMPFS_BYTES);

  it('a write into a full pool is ENOSPC for qemu-io, a warning in the log and a count in /metrics', async (ctx) => {
    const d = await disk.start(ctx);
    d.cliOk(['volume', 'create', 'full', '64M']);
    const exp = d.json<{ id: string }>(['volume', 'export-nbd', 'full']);
    const uri = `nbd+unix:///default/full?socket=${path.join(d.dataDir, 'nbd.sock')}`;

    // Two commands on one connection: both fail; the connection's second error is counted, not logged.
    const r = qemuIo(['-f', 'raw', '-c', 'write -P 0x5a 0 40M', '-c', 'write -P 0x5b 0 40M', uri]);
    expect(r.stdout + r.stderr).toMatch(/No space left on device/);
    const lines = () => d.logs().split('\n').filter((l) => /device error/.test(l));
    await expect.poll(() => lines().length, { timeout: 15_000 }).toBeGreaterThan(0);
    expect(lines()).toHaveLength(1);
    expect(lines()[0]).toMatch(/WARN/);
    expect(lines()[0]).toMatch(/nbd export 'default\/full': device error \(reported to the client as ENOSPC; at most one line a minute\): NO_SPACE: /);

    const metrics = await (await d.api('GET', '/metrics')).text();
    expect(metrics).toMatch(/# TYPE strata_export_device_errors_total counter/);
    const m = new RegExp(`^strata_export_device_errors_total\\{export="${exp.id}",type="nbd",target="default/full"\\} (\\d+)$`, 'm').exec(metrics);
    expect(m, metrics).not.toBeNull();
    // Each failed command is at least one failed request.
    expect(Number(m![1])).toBeGreaterThanOrEqual(2);

    // A new connection reports its first error at once again.
    qemuIo(['-f', 'raw', '-c', 'write -P 0x5c 0 40M', uri]);
    await expect.poll(() => lines().length, { timeout: 15_000 }).toBe(2);
  });
});
