/**
 * A guest writing into a full pool over vhost-user-blk: with the policy 'wait' (the default) its
 * writes wait, not answered, while its reads go on; the export counts them; once space is freed
 * they complete with the guest's data. With 'error' the guest gets IOERR at once. A front-end that
 * disconnects (or an export that stops) while writes wait gets them back from the inflight region
 * when it reconnects, and they complete then.
 *
 * The pool is full for real: the image lives on a small tmpfs (mounting needs root; skipped where
 * it cannot be mounted) filled up with a file, and space is freed by deleting that file.
 */
import { rmSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import type { ExportLogLevel } from '../../src/export/log.js';
import { VhostUserBlkExport } from '../../src/export/vhost-user/export.js';
import type { NoSpacePolicy } from '../../src/export/vhost-user/space-wait.js';
import { LocalHostFile } from '../../src/store/local-file.js';
import { makeTempDir } from '../support/tmp.js';
import { expectSuccess, qemuImg, requireTool } from '../support/tools.js';
import { BlkStatus, BlkStatusError, VhostUserFrontend, type FrontendOptions } from './frontend.js';
import { fillUp, mountSmallTmpfs, unmountSmallTmpfs } from '../support/fill-filesystem.js';

const TMPFS_BYTES = 8 * 1024 * 1024;
const IMAGE_BYTES = 64 * 1024 * 1024;
const CHUNK_BYTES = 128 * 1024;
const SECTOR = 512;

function pattern(seed: number, lengthBytes = CHUNK_BYTES): Uint8Array {
  const b = new Uint8Array(lengthBytes);
  for (let i = 0; i < b.length; i++) b[i] = (seed * 31 + i * 7 + (i >> 9)) & 0xff;
  return b;
}

/** Whether a promise has settled yet (looked at after the event loop had a turn). */
function tracked<T>(p: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  p.then(
    () => (done = true),
    () => (done = true),
  );
  return { promise: p, settled: () => done };
}

describe.skipIf(!requireTool('qemu-img', 'mount', 'umount'))('vhost-user-blk: writes into a full pool', () => {
  let tmp: { path: string; cleanup: () => void };
  let mnt: string;
  let mounted = false;
  let image: Qcow2Image | undefined;
  let exp: VhostUserBlkExport | undefined;
  let fe: VhostUserFrontend | undefined;
  let logs: string[];

  beforeEach((ctx) => {
    tmp = makeTempDir();
    mnt = path.join(tmp.path, 'mnt');
    if (!mountSmallTmpfs(mnt, TMPFS_BYTES)) {
      tmp.cleanup();
      ctx.skip();
    }
    mounted = true;
    logs = [];
  });

  afterEach(async () => {
    fe?.close();
    fe = undefined;
    if (exp !== undefined) {
      exp.requestShutdown();
      await exp.closed;
    }
    exp = undefined;
    await image?.close().catch(() => {});
    image = undefined;
    if (mounted) unmountSmallTmpfs(mnt);
    mounted = false;
    tmp.cleanup();
  });

  const socketPath = (): string => path.join(tmp.path, 'vhost.sock');

  async function serve(noSpace?: NoSpacePolicy): Promise<VhostUserBlkExport> {
    const e = new VhostUserBlkExport({
      socketPath: socketPath(),
      queueCount: 1,
      readOnly: false,
      serial: 'no-space',
      target: 'default/full',
      ...(noSpace === undefined ? {} : { noSpace }),
      logger: (line: string, level: ExportLogLevel) => logs.push(`${level} ${line}`),
    });
    await e.start(image!);
    return e;
  }

  /** An image on the tmpfs, served, a front-end connected, one cluster written; then the tmpfs is full. */
  async function setUp(noSpace?: NoSpacePolicy, frontend: FrontendOptions = {}): Promise<{ first: Uint8Array }> {
    const imagePath = path.join(mnt, 'vol.qcow2');
    expectSuccess(qemuImg(['create', '-q', '-f', 'qcow2', imagePath, String(IMAGE_BYTES)]), 'qemu-img create');
    image = await Qcow2Image.open(await LocalHostFile.open(imagePath));
    exp = await serve(noSpace);
    fe = await VhostUserFrontend.connect(socketPath(), { inflight: true, maxRequestBytes: CHUNK_BYTES, ...frontend });
    const first = pattern(1);
    await fe.write(0, first);
    await fe.flush();
    fillUp(path.join(mnt, 'filler'));
    return { first };
  }

  const waiting = (): number => exp!.stats().waitingForSpace;

  it("'wait': writes wait while reads go on, and complete with the guest's data once space is freed", async () => {
    const { first } = await setUp();
    const sectors = [(16 << 20) / SECTOR, (32 << 20) / SECTOR, (48 << 20) / SECTOR];
    const writes = sectors.map((s, i) => tracked(fe!.write(s, pattern(10 + i))));
    await expect.poll(waiting, { timeout: 30_000 }).toBe(sectors.length);
    // Reads are served meanwhile, and so is a write into space the image already has.
    expect(await fe!.read(0, CHUNK_BYTES)).toEqual(first);
    const again = pattern(2);
    await fe!.write(0, again);
    expect(await fe!.read(0, CHUNK_BYTES)).toEqual(again);
    expect(writes.some((w) => w.settled())).toBe(false);
    expect(waiting()).toBe(sectors.length);
    const warnings = logs.filter((l) => /no space for the guest's writes/.test(l));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/^warn vhost-user-blk \S+: volume 'default\/full': no space for the guest's writes \(NO_SPACE: .*ENOSPC/);
    expect(warnings[0]).toMatch(/delete snapshots or volumes of pool 'default', 'strata pool gc default'/);

    rmSync(path.join(mnt, 'filler'));
    await Promise.all(writes.map((w) => w.promise));
    expect(waiting()).toBe(0);
    for (const [i, s] of sectors.entries()) expect(await fe!.read(s, CHUNK_BYTES)).toEqual(pattern(10 + i));
    expect(logs.filter((l) => /the guest's writes resumed after waiting/.test(l))).toHaveLength(1);
    expect(exp!.stats().deviceErrors).toBe(0);
  });

  it("'error': a write into a full pool gets IOERR at once", async () => {
    await setUp('error');
    const err = await fe!.write((16 << 20) / SECTOR, pattern(3)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BlkStatusError);
    expect((err as BlkStatusError).status).toBe(BlkStatus.IOERR);
    expect(waiting()).toBe(0);
    expect(exp!.stats().deviceErrors).toBeGreaterThan(0);
  });

  it('a new memory table while writes wait: they run again over the new mappings and complete', async () => {
    // SET_MEM_TABLE (not ADD_MEM_REG): the back-end must unmap the old table, so it waits for quiet.
    await setUp(undefined, { addMemReg: false });
    const sector = (20 << 20) / SECTOR;
    const write = tracked(fe!.write(sector, pattern(40)));
    await expect.poll(waiting, { timeout: 30_000 }).toBe(1);
    await fe!.sendMemTable();
    // The write is back, waiting: walked again from its head over the new mappings.
    await expect.poll(waiting, { timeout: 30_000 }).toBe(1);
    expect(write.settled()).toBe(false);
    rmSync(path.join(mnt, 'filler'));
    await write.promise;
    expect(await fe!.read(sector, CHUNK_BYTES)).toEqual(pattern(40));
  });

  it('a ring stopped while writes wait (GET_VRING_BASE): its restart resubmits them from the inflight region', async () => {
    await setUp();
    const sector = (28 << 20) / SECTOR;
    const write = tracked(fe!.write(sector, pattern(50)));
    await expect.poll(waiting, { timeout: 30_000 }).toBe(1);
    await fe!.stop();
    expect(waiting()).toBe(0);
    expect(write.settled()).toBe(false);
    await fe!.start();
    await expect.poll(waiting, { timeout: 30_000 }).toBe(1);
    rmSync(path.join(mnt, 'filler'));
    await write.promise;
    expect(await fe!.read(sector, CHUNK_BYTES)).toEqual(pattern(50));
  });

  it('without an inflight region a stopped ring cannot get waiting writes back: they get IOERR then, not lost', async () => {
    await setUp(undefined, { inflight: false });
    const write = tracked(fe!.write((36 << 20) / SECTOR, pattern(60)));
    await expect.poll(waiting, { timeout: 30_000 }).toBe(1);
    await fe!.stop();
    const err = await write.promise.catch((e: unknown) => e);
    expect((err as BlkStatusError).status).toBe(BlkStatus.IOERR);
    expect(logs.some((l) => /completed with IOERR: the front-end keeps no inflight region/.test(l))).toBe(true);
  });

  it('a front-end that disconnects while writes wait gets them back from the inflight region when it reconnects', async () => {
    await setUp();
    const sector = (16 << 20) / SECTOR;
    const write = tracked(fe!.write(sector, pattern(20)));
    await expect.poll(waiting, { timeout: 30_000 }).toBe(1);

    fe!.disconnect();
    await expect.poll(() => exp!.stats().connected, { timeout: 10_000 }).toBe(false);
    expect(waiting()).toBe(0);
    expect(write.settled()).toBe(false);
    // Reconnected while the pool is still full: the resubmitted write waits again.
    await fe!.redial();
    await expect.poll(waiting, { timeout: 30_000 }).toBe(1);
    expect(logs.some((l) => /resubmitting 1 request/.test(l))).toBe(true);

    rmSync(path.join(mnt, 'filler'));
    await write.promise;
    expect(await fe!.read(sector, CHUNK_BYTES)).toEqual(pattern(20));
  });

  it('an export stopped while writes wait (detach, daemon shutdown) leaves them for the front-end to resubmit', async () => {
    await setUp();
    const sector = (24 << 20) / SECTOR;
    const write = tracked(fe!.write(sector, pattern(30)));
    await expect.poll(waiting, { timeout: 30_000 }).toBe(1);

    exp!.requestShutdown();
    await exp!.closed;
    expect(write.settled()).toBe(false);
    rmSync(path.join(mnt, 'filler'));
    // The daemon again (the same image, a new export on the same socket); QEMU redials.
    exp = await serve();
    await fe!.redial();
    await write.promise;
    expect(await fe!.read(sector, CHUNK_BYTES)).toEqual(pattern(30));
    expect(exp.stats().deviceErrors).toBe(0);
  });
});
