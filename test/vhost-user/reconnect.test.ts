/**
 * Back-end crash and restart under a real Linux guest (QEMU 7.2, TCG, `-chardev ...,reconnect=1`):
 * the back-end runs in its own process serving a qcow2 image through a deliberately slow device
 * (30 ms per read/write, so requests are in flight), is SIGKILLed while the guest writes with
 * O_DIRECT, and a new process is started on the same socket 1.5 s later. QEMU redials, hands the
 * inflight region back (SET_INFLIGHT_FD), the new back-end resubmits what the old one left in flight,
 * and the guest finishes: the data it reads back equals what it wrote.
 *
 * The image has its metadata preallocated: a killed process loses acknowledged but unflushed qcow2
 * metadata (the write-back contract; the device offers FLUSH), which this test is not about.
 *
 * The child process imports the compiled back-end from dist/ (`npm test` builds it first); without
 * dist the test is skipped.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { tempDir } from '../support/tmp.js';
import { requireTool } from '../support/tools.js';
import { startGuest } from './guest.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const DIST_EXPORT = path.join(ROOT, 'dist/src/export/vhost-user/export.js');

const SERVE_SCRIPT = (root: string): string => `
import { Qcow2Image } from ${JSON.stringify(pathToFileURL(path.join(root, 'dist/formats/qcow2/index.js')).href)};
import { VhostUserBlkExport } from ${JSON.stringify(pathToFileURL(path.join(root, 'dist/src/export/vhost-user/export.js')).href)};
import { LocalHostFile } from ${JSON.stringify(pathToFileURL(path.join(root, 'dist/src/store/local-file.js')).href)};
const [imagePath, socketPath, delayMs] = process.argv.slice(2);
const image = await Qcow2Image.open(await LocalHostFile.open(imagePath));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const device = new Proxy(image, {
  get(t, k) {
    const v = Reflect.get(t, k, t);
    if (k === 'read' || k === 'write') return async (...a) => { await sleep(Number(delayMs)); return v.apply(t, a); };
    return typeof v === 'function' ? v.bind(t) : v;
  },
});
const exp = new VhostUserBlkExport({ socketPath, queueCount: 1, readOnly: false, serial: 'reconnect', logger: (l) => console.log(l) });
await exp.start(device);
console.log('ready');
`;

function serve(script: string, img: string, sock: string, out: string[]): Promise<ChildProcess> {
  const p = spawn(process.execPath, [script, img, sock, '30'], { cwd: ROOT });
  const onData = (d: Buffer): void => void out.push(...d.toString().trim().split('\n'));
  p.stdout!.on('data', onData);
  p.stderr!.on('data', onData);
  return new Promise((resolve, reject) => {
    p.once('exit', (code) => reject(new Error(`back-end exited (${code}):\n${out.join('\n')}`)));
    const check = (): void => {
      if (out.includes('ready')) {
        p.removeAllListeners('exit');
        resolve(p);
      } else setTimeout(check, 20);
    };
    check();
  });
}

describe.skipIf(!requireTool('qemu-system-x86_64', 'qemu-img') || !existsSync(DIST_EXPORT))('vhost-user-blk back-end restart', () => {
  it('SIGKILL mid-I/O and restart: QEMU reconnects, in-flight requests are resubmitted, data intact', async () => {
    const dir = tempDir();
    const img = path.join(dir, 'vol.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', img, String(64 << 20)]);
    const script = path.join(dir, 'serve.mjs');
    writeFileSync(script, SERVE_SCRIPT(ROOT));
    const sock = path.join(dir, 'vhost.sock');
    const out: string[] = [];
    let p = await serve(script, img, sock, out);
    const guest = startGuest({
      socketPath: sock,
      reconnect: true,
      timeoutMs: 120_000,
      script: [
        'dd if=/dev/urandom of=/tmp/a bs=64k count=48 2>/dev/null',
        'echo start',
        'dd if=/tmp/a of=/dev/vda bs=64k oflag=direct 2>/dev/null',
        'dd if=/dev/vda of=/tmp/b bs=64k count=48 iflag=direct 2>/dev/null',
        'md5sum /tmp/a /tmp/b',
      ].join('\n'),
    });
    try {
      await guest.waitForMarker('start');
      await new Promise((r) => setTimeout(r, 700));
      p.kill('SIGKILL');
      await new Promise((r) => setTimeout(r, 1500));
      p = await serve(script, img, sock, out);
      const r = await guest.result;
      expect(r.exitCode, r.consoleTail).toBe(0);
      const sums = r.lines.filter((l) => l.includes('/tmp/')).map((l) => l.split(/\s+/)[0]);
      expect(sums).toHaveLength(2);
      expect(sums[1], out.join('\n')).toBe(sums[0]);
      console.info(out.filter((l) => l.includes('resubmitting')).join('\n') || 'no request was in flight at the kill');
    } finally {
      guest.result.catch(() => {}); // killed below if still running
      guest.kill();
      p.kill('SIGKILL');
    }
  }, 180_000);
});
