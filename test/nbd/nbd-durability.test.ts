/**
 * Durability across connections (NBD_FLAG_CAN_MULTI_CONN): a FLUSH on one connection covers writes
 * completed on another, and a FUA write is durable on its own. The server runs as a child process
 * (from the build in dist/, which `npm test` makes first) and is killed with SIGKILL right after.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as P from '../../src/export/nbd/protocol.js';
import { tempDir } from '../support/tmp.js';
import { REPO_ROOT, requireTool, run } from '../support/tools.js';
import { createImage } from './helpers.js';
import { RawClient } from './raw-client.js';

const MiB = 1024 * 1024;
const DIST = path.join(REPO_ROOT, 'dist');
const built = existsSync(path.join(DIST, 'src', 'export', 'nbd', 'server.js'));

const CHILD = `
import { Qcow2Image } from ${JSON.stringify(path.join(DIST, 'formats/qcow2/index.js'))};
import { NbdServer } from ${JSON.stringify(path.join(DIST, 'src/export/nbd/server.js'))};
import { LocalHostFile } from ${JSON.stringify(path.join(DIST, 'src/store/local-file.js'))};
const [imagePath, socketPath] = process.argv.slice(1);
const image = await Qcow2Image.open(await LocalHostFile.open(imagePath));
const server = new NbdServer({ exports: new Map([['vol', { device: image, readOnly: false }]]) });
await server.listen({ unixPath: socketPath });
process.stdout.write('ready\\n');
`;

function startChild(imagePath: string, socketPath: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD, imagePath, socketPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout?.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) resolve(child);
    });
    child.on('exit', (code) => reject(new Error(`server exited (${code}): ${err}`)));
  });
}

function kill(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.removeAllListeners('exit');
    child.on('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io') || !built)('NBD durability (server killed with SIGKILL)', () => {
  /** Serves a fresh image in a child, runs `io` against two connections, kills the child; returns the image. */
  async function crashAfter(io: (a: RawClient, b: RawClient) => Promise<void>): Promise<string> {
    const dir = tempDir();
    const imagePath = createImage(dir, 64 * MiB);
    const socketPath = path.join(dir, 'nbd.sock');
    const child = await startChild(imagePath, socketPath);
    const a = await RawClient.connect(socketPath);
    const b = await RawClient.connect(socketPath);
    try {
      const { flags } = await a.negotiate('vol');
      expect(flags & P.NBD_FLAG_CAN_MULTI_CONN).not.toBe(0);
      await b.negotiate('vol');
      await io(a, b);
    } finally {
      await kill(child);
      a.destroy();
      b.destroy();
    }
    return imagePath;
  }

  function expectReads(imagePath: string, reads: [pattern: number, offset: number, length: number][]): void {
    const cmds = reads.flatMap(([p, off, len]) => ['-c', `read -P 0x${p.toString(16)} ${off} ${len}`]);
    const r = run('qemu-io', ['-f', 'qcow2', ...cmds, imagePath]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).not.toContain('Pattern verification failed');
    const check = run('qemu-img', ['check', imagePath]);
    expect([0, 3], check.stdout + check.stderr).toContain(check.code); // leaks at most, no corruption
  }

  it('FLUSH on one connection makes the writes completed on another durable', async () => {
    const imagePath = await crashAfter(async (a, b) => {
      // Writes on A that allocate clusters (qcow2 metadata changes), then a FLUSH on B.
      for (let i = 0; i < 8; i++) {
        a.request(P.NBD_CMD_WRITE, i, i * 3 * MiB, MiB, 0, Buffer.alloc(MiB, 0x10 + i));
        expect(await a.reply()).toMatchObject({ cookie: i, error: 0 });
      }
      b.request(P.NBD_CMD_FLUSH, 100, 0, 0);
      expect(await b.reply()).toMatchObject({ cookie: 100, error: 0 });
    });
    expectReads(imagePath, Array.from({ length: 8 }, (_, i): [number, number, number] => [0x10 + i, i * 3 * MiB, MiB]));
  });

  it('a FUA write is durable without a flush', async () => {
    const imagePath = await crashAfter(async (a) => {
      a.request(P.NBD_CMD_WRITE, 1, 40 * MiB, 256 * 1024, P.NBD_CMD_FLAG_FUA, Buffer.alloc(256 * 1024, 0x77));
      expect(await a.reply()).toMatchObject({ cookie: 1, error: 0 });
    });
    expectReads(imagePath, [[0x77, 40 * MiB, 256 * 1024]]);
  });
});
