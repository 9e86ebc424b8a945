/**
 * Strata's vhost-user-blk back-end (VhostUserBlkExport) serving a qcow2 image in this process, for
 * the hostile-guest and malformed-message tests. The image is created and filled by qemu-io before
 * the export opens it, and checked by qemu-img after the export and the image are closed.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import { VhostUserBlkExport } from '../../src/export/vhost-user/export.js';
import { LocalHostFile } from '../../src/store/local-file.js';
import { expectSuccess, qemuImg, qemuIo } from '../support/tools.js';

export interface StrataTarget {
  imagePath: string;
  socketPath: string;
  sizeBytes: number;
  queueCount: number;
  export: VhostUserBlkExport;
  image: Qcow2Image;
  /** Stops the export and closes the image (flushing it). Idempotent. */
  close: () => Promise<void>;
}

/** A qcow2 image of sizeBytes whose every byte is `fill` (so any stray write shows). */
export function createFilledImage(dir: string, name: string, sizeBytes: number, fill: number): string {
  const imagePath = path.join(dir, name);
  expectSuccess(qemuImg(['create', '-q', '-f', 'qcow2', imagePath, String(sizeBytes)]), 'qemu-img create');
  expectSuccess(qemuIo(['-f', 'qcow2', '-c', `write -P ${fill} 0 ${sizeBytes}`, imagePath]), 'qemu-io write');
  return imagePath;
}

export async function serveStrata(dir: string, name: string, opts: { sizeBytes: number; fill: number; queueCount: number; serial?: string }): Promise<StrataTarget> {
  const imagePath = createFilledImage(dir, `${name}.qcow2`, opts.sizeBytes, opts.fill);
  const socketPath = path.join(dir, `${name}.sock`);
  const image = await Qcow2Image.open(await LocalHostFile.open(imagePath));
  const exp = new VhostUserBlkExport({ socketPath, queueCount: opts.queueCount, readOnly: false, serial: opts.serial ?? `strata-${name}` });
  await exp.start(image);
  let closed = false;
  return {
    imagePath,
    socketPath,
    sizeBytes: opts.sizeBytes,
    queueCount: opts.queueCount,
    export: exp,
    image,
    close: async () => {
      if (closed) return;
      closed = true;
      exp.requestShutdown();
      await exp.closed;
      await image.close();
    },
  };
}

/** The image's guest contents as raw bytes (qemu-img convert; call after close()). */
export function imageContents(dir: string, imagePath: string): Buffer {
  const out = path.join(dir, `${path.basename(imagePath)}.raw`);
  expectSuccess(qemuImg(['convert', '-f', 'qcow2', '-O', 'raw', imagePath, out]), 'qemu-img convert');
  return readFileSync(out);
}

/** qemu-img check must report a clean image; returns its output. */
export function checkImage(imagePath: string): string {
  return expectSuccess(qemuImg(['check', imagePath]), 'qemu-img check').stdout;
}

/** Open descriptors of this process (the back-end runs in it): leaks show as a growing count. */
export function openFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

/**
 * Waits until the export has noticed that its last front-end went away (it serves one at a time
 * and refuses a connection that arrives before it processed the previous one's hang-up).
 */
export async function disconnected(t: StrataTarget, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (t.export.stats().connected) {
    if (Date.now() > end) throw new Error('the export still reports a connected front-end');
    await sleep(5);
  }
}
