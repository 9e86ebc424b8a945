/**
 * The TypeScript vhost-user-blk front-end for tests, plus helpers to run the reference back-end
 * (qemu-storage-daemon). The front-end itself lives in test/support/vhost-frontend/, which
 * tsconfig.json also compiles so that bench/vhost-bench.ts runs the same code.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export * from '../support/vhost-frontend/index.js';

export interface QsdOptions {
  imagePath: string;
  socketPath: string;
  queueCount?: number;
  writable?: boolean;
  /** qemu-storage-daemon's export option; its default (off) is not durable, see the test-rig notes. */
  writethrough?: boolean;
  format?: 'qcow2' | 'raw';
}

export interface Qsd {
  child: ChildProcess;
  stderr: () => string;
  stop: () => Promise<void>;
}

/** The qemu-storage-daemon arguments for a vhost-user-blk export of one image. */
export function qsdArgs(o: QsdOptions): string[] {
  const format = o.format ?? 'qcow2';
  return [
    '--blockdev',
    `driver=file,node-name=f0,filename=${o.imagePath}`,
    '--blockdev',
    `driver=${format},node-name=d0,file=f0`,
    '--export',
    `type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path=${o.socketPath},writable=${o.writable === false ? 'off' : 'on'},num-queues=${o.queueCount ?? 1}` +
      (o.writethrough === undefined ? '' : `,writethrough=${o.writethrough ? 'on' : 'off'}`),
  ];
}

/** Starts qemu-storage-daemon and waits for its socket. */
export async function startQsd(o: QsdOptions): Promise<Qsd> {
  const child = spawn('qemu-storage-daemon', qsdArgs(o), { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  let exited = false;
  child.on('exit', () => (exited = true));
  for (let i = 0; i < 200 && !existsSync(o.socketPath) && !exited; i++) await sleep(25);
  if (!existsSync(o.socketPath)) {
    child.kill('SIGKILL');
    throw new Error(`qemu-storage-daemon did not create ${o.socketPath}: ${err}`);
  }
  return {
    child,
    stderr: () => err,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      await Promise.race([gone, sleep(5000).then(() => child.kill('SIGKILL'))]);
      await gone;
    },
  };
}
