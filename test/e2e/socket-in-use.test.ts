/**
 * A socket path some process still listens on is never taken over. `strata volume attach
 * --vhost-user PATH` used to remove whatever socket file was at PATH as "stale": attaching at the
 * path of another daemon's attachment (or qemu-storage-daemon's) silently stole it, so that
 * process's guest, on its next reconnect, got this volume instead of its own disk; attaching at the
 * daemon's own NBD socket cut off every NBD client of the unix socket (nbdinfo then hung on the
 * vhost-user listener). Now a live socket is refused (exit 4) and keeps serving; a stale one (its
 * listener gone, as after a SIGKILL) is still replaced, and a second daemon whose --nbd-socket is a
 * live socket fails to start instead of taking it.
 */
import net from 'node:net';
import path from 'node:path';
import { statSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { closeFd } from '../../src/sys/fd.js';
import { UnixListener } from '../../src/sys/unix-socket.js';
import { assertBuilt, serveFails, useDaemon } from './harness.js';

assertBuilt();

function listenUnix(socketPath: string): Promise<{ server: net.Server; accepted: () => number }> {
  let count = 0;
  const server = net.createServer((s) => {
    count++;
    s.destroy();
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve({ server, accepted: () => count }));
  });
}

function connectOnce(socketPath: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = net.connect(socketPath);
    s.on('data', (b: Buffer) => {
      chunks.push(b);
      if (Buffer.concat(chunks).length >= 8) s.destroy();
    });
    s.on('close', () => resolve(Buffer.concat(chunks)));
    s.on('error', reject);
  });
}

describe('socket paths in use', () => {
  const suite = useDaemon();

  it("attach refuses a socket another process listens on, and it keeps serving that process's clients", async () => {
    const { d } = suite;
    d.cliOk(['volume', 'create', 'vm1', '4M']);
    const socketPath = suite.file('foreign.sock');
    const foreign = await listenUnix(socketPath);
    try {
      const inode = statSync(socketPath).ino;
      const r = d.cliFails(['volume', 'attach', 'vm1', '--vhost-user', socketPath], 4, /another process listens on it/, /BUSY/);
      expect(r.stdout).toBe('');
      // What to do, and not to: the generic BUSY hint ("see the message") said nothing, and
      // "delete the existing one" would take a live VM's disk socket away.
      expect(r.stderr).toMatch(/\(choose another socket path, or stop the process that listens on this one \(do not delete a live socket/);
      expect(r.stderr).not.toMatch(/see the message|delete the existing/);
      expect(statSync(socketPath).ino).toBe(inode);
      // The daemon's probe is a connection too: let it be accepted before counting ours.
      await expect.poll(() => foreign.accepted()).toBeGreaterThan(0);
      const before = foreign.accepted();
      await connectOnce(socketPath);
      await expect.poll(() => foreign.accepted()).toBeGreaterThan(before);
      expect(d.json<unknown[]>(['volume', 'exports'])).toEqual([]);
    } finally {
      await new Promise((resolve) => foreign.server.close(resolve));
    }
  });

  it("attach refuses the daemon's own NBD socket, which keeps greeting NBD clients", async () => {
    const { d } = suite;
    const nbdSocket = path.join(d.dataDir, 'nbd.sock');
    const r = d.cliFails(['volume', 'attach', 'vm1', '--vhost-user', nbdSocket], 4, /NBD socket/, /\(choose another socket path\)/);
    expect(r.stderr).not.toMatch(/delete the existing/);
    const greeting = await connectOnce(nbdSocket);
    expect(greeting.subarray(0, 8).toString('latin1')).toBe('NBDMAGIC');
  });

  it('a stale socket file (nobody listens) is still replaced', async () => {
    const { d } = suite;
    const socketPath = suite.file('stale.sock');
    // A killed daemon's leftover: the file stays, nobody listens on it.
    const old = UnixListener.listen(socketPath);
    closeFd(old.fd);
    expect(statSync(socketPath).isSocket()).toBe(true);
    d.cliOk(['volume', 'attach', 'vm1', '--vhost-user', socketPath]);
    d.cliOk(['volume', 'detach', 'vm1']);
  });

  it("a second daemon whose --nbd-socket is the first daemon's live socket fails to start and leaves it alone", async () => {
    const { d } = suite;
    const nbdSocket = path.join(d.dataDir, 'nbd.sock');
    const r = await serveFails(['--data-dir', suite.file('data2'), '--listen', '127.0.0.1:0', '--s3-listen', 'off', '--nbd-socket', nbdSocket]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/the address is in use.*--nbd-socket/);
    const greeting = await connectOnce(nbdSocket);
    expect(greeting.subarray(0, 8).toString('latin1')).toBe('NBDMAGIC');
  });
});
