/**
 * A qcow2 layer served with its backing image: the layer's blockStatus calls the ranges it leaves
 * to the backing 'unallocated', and the device says they may hold data
 * (capabilities.unallocatedReadsZero false), so structured READ replies send them as data, never
 * as holes; a layer without backing sends its unallocated ranges as holes.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import * as P from '../../src/export/nbd/protocol.js';
import { LocalHostFile } from '../../src/store/local-file.js';
import { makeTempDir } from '../support/tmp.js';
import { expectSuccess, requireTool, run } from '../support/tools.js';
import { createImage, serveImage, type Served } from './helpers.js';
import { RawClient } from './raw-client.js';

const MiB = 1024 * 1024;
const SIZE = 8 * MiB;

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('NBD: a qcow2 layer over a backing image', () => {
  let tmp: { path: string; cleanup: () => void };
  let s: Served;
  let top: Qcow2Image;

  beforeAll(async () => {
    tmp = makeTempDir();
    const basePath = createImage(tmp.path, SIZE, 'base.qcow2');
    expectSuccess(run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', basePath]), 'qemu-io write');
    const topPath = path.join(tmp.path, 'top.qcow2');
    expectSuccess(run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', topPath]), 'qemu-img create');
    top = await Qcow2Image.open(await LocalHostFile.open(topPath, { readOnly: true }), {
      readOnly: true,
      openBacking: async (ref) =>
        Qcow2Image.open(await LocalHostFile.open(path.join(tmp.path, ref.fileName), { readOnly: true }), { readOnly: true, depth: 1 }),
    });
    s = await serveImage(tmp.path, createImage(tmp.path, SIZE), { extra: { top: { device: top, readOnly: true } } });
  });

  afterAll(async () => {
    await s?.close();
    await top?.close();
    tmp?.cleanup();
  });

  it("sends the backing's data (and the ranges nothing stores) as data chunks, a plain image's unallocated ranges as holes", async () => {
    expect(top.capabilities.unallocatedReadsZero).toBe(false);
    const c = await RawClient.connect(s.socketPath);
    await c.negotiate('top');
    c.request(P.NBD_CMD_READ, 1, 0, 4096);
    const fromBacking = await c.reply(4096);
    expect(fromBacking.chunks).toEqual([P.NBD_REPLY_TYPE_OFFSET_DATA]);
    expect(fromBacking.data?.every((b) => b === 0x5a)).toBe(true);
    c.request(P.NBD_CMD_READ, 2, 4 * MiB, 4096);
    const beyondBacking = await c.reply(4096, 4 * MiB);
    expect(beyondBacking.chunks).toEqual([P.NBD_REPLY_TYPE_OFFSET_DATA]);
    expect(beyondBacking.data?.every((b) => b === 0)).toBe(true);
    c.destroy();

    const plain = await RawClient.connect(s.socketPath);
    await plain.negotiate('vol');
    plain.request(P.NBD_CMD_READ, 3, 0, 4096);
    expect((await plain.reply(4096)).chunks).toEqual([P.NBD_REPLY_TYPE_OFFSET_HOLE]);
    plain.destroy();
  });
});
