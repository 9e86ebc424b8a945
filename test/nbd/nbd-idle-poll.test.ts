/**
 * Idle polling (src/export/nbd/idle-poll.ts): after its last reply a connection reads its next
 * request straight from the socket. Real clients in their own processes (the poll blocks this
 * process's event loop, so an in-process client could never be caught by it): the requests served
 * that way must be answered exactly like the others, several polling connections must not starve
 * each other, and a client that dies while it is being polled must be noticed.
 */
import path from 'node:path';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../support/tmp.js';
import { expectSuccess, requireTool, run, runAsync } from '../support/tools.js';
import { createImage, serveImage } from './helpers.js';

const MiB = 1024 * 1024;
const SIZE = 16 * MiB;
/** The longest window the daemon accepts: makes catching requests likely even on a loaded machine. */
const WINDOW_US = 1000;

/** qemu-io commands writing then reading back 4 KiB blocks one at a time (queue depth 1). */
function qd1Commands(count: number, seed: number): string[] {
  const args: string[] = [];
  for (let i = 0; i < count; i++) {
    const block = (i * 7919 + seed * 104729) % (SIZE / 4096);
    const pattern = (i + seed) % 250 + 1;
    args.push('-c', `write -P ${pattern} ${block * 4096} 4k`, '-c', `read -P ${pattern} ${block * 4096} 4k`);
  }
  return args;
}

describe.skipIf(!requireTool('qemu-io', 'qemu-img', 'fio'))('NBD idle polling', () => {
  it('requests caught by polling are served like any other: qemu-io writes and reads back over NBD match a local replay', async () => {
    const dir = tempDir();
    const imagePath = createImage(dir, SIZE);
    const reference = path.join(dir, 'reference.raw');
    expectSuccess(run('qemu-img', ['create', '-q', '-f', 'raw', reference, String(SIZE)]));
    const served = await serveImage(dir, imagePath, { idlePollMaxUs: WINDOW_US });
    try {
      expect(served.server.idlePoller).toBeDefined();
      const commands = qd1Commands(600, 1);
      // read -P fails the run when a block reads back wrong.
      const remote = await runAsync('qemu-io', ['-f', 'raw', served.uri(), ...commands]);
      expectSuccess(remote, 'qemu-io over NBD');
      expect(remote.stdout).not.toMatch(/Pattern verification failed|error/i);
      expectSuccess(run('qemu-io', ['-f', 'raw', reference, ...commands]), 'qemu-io locally');
      const poller = served.server.idlePoller!;
      // Most of 1200 back-to-back requests arrive within a millisecond of the previous reply.
      expect(poller.polls).toBeGreaterThan(0);
      expect(poller.hits).toBeGreaterThan(0);
      const compare = await runAsync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', served.uri(), reference]);
      expectSuccess(compare, 'qemu-img compare');
    } finally {
      await served.close();
    }
  }, 120_000);

  it('two connections polled at once both progress and verify (fio, two jobs at queue depth 1, crc32c)', async () => {
    const dir = tempDir();
    const imagePath = createImage(dir, SIZE);
    const served = await serveImage(dir, imagePath, { idlePollMaxUs: WINDOW_US });
    try {
      const fio = await runAsync('fio', [
        '--name=poll', '--ioengine=nbd', `--uri=${served.uri()}`, '--numjobs=2', '--iodepth=1',
        '--rw=randwrite', '--bs=4k', `--size=${SIZE / 2}`, '--offset_increment=' + String(SIZE / 2),
        '--verify=crc32c', '--verify_fatal=1', '--do_verify=1', '--verify_state_save=0', '--output-format=json',
      ]);
      expectSuccess(fio, 'fio');
      const jobs = (JSON.parse(fio.stdout.slice(fio.stdout.indexOf('{'))) as { jobs: { error: number; write: { io_bytes: number }; read: { io_bytes: number } }[] }).jobs;
      expect(jobs).toHaveLength(2);
      for (const job of jobs) {
        expect(job.error).toBe(0);
        expect(job.write.io_bytes).toBe(SIZE / 2);
        expect(job.read.io_bytes).toBe(SIZE / 2); // every block verified
      }
      expect(served.server.idlePoller!.polls).toBeGreaterThan(0);
    } finally {
      await served.close();
    }
  }, 120_000);

  it('a client killed while its connection is polled is noticed, and the next client is served', async () => {
    const dir = tempDir();
    const imagePath = createImage(dir, SIZE);
    const served = await serveImage(dir, imagePath, { idlePollMaxUs: WINDOW_US });
    try {
      for (let round = 0; round < 3; round++) {
        const child = spawn('qemu-io', ['-f', 'raw', served.uri(), ...qd1Commands(20_000, round)], { stdio: 'ignore' });
        // Let it run into its stream of requests, then kill it between two of them.
        for (let i = 0; i < 200 && served.server.connectionCount === 0; i++) await sleep(10);
        expect(served.server.connectionCount).toBe(1);
        await sleep(150 + round * 100);
        child.kill('SIGKILL');
        await new Promise((resolve) => child.once('exit', resolve));
        for (let i = 0; i < 500 && served.server.connectionCount > 0; i++) await sleep(10);
        expect(served.server.connectionCount).toBe(0);
      }
      const after = await runAsync('qemu-io', ['-f', 'raw', served.uri(), '-c', 'write -P 9 0 64k', '-c', 'read -P 9 0 64k']);
      expectSuccess(after, 'qemu-io after the kills');
      expect(after.stdout).not.toMatch(/Pattern verification failed/);
    } finally {
      await served.close();
    }
  }, 120_000);
});
