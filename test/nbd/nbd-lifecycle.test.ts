/** Exports added and withdrawn while serving (the Export interface), handshake timeout, connection cap. */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import { NbdExport } from '../../src/export/nbd/export.js';
import * as P from '../../src/export/nbd/protocol.js';
import { NbdServer } from '../../src/export/nbd/server.js';
import { LocalHostFile } from '../../src/store/local-file.js';
import { tempDir } from '../support/tmp.js';
import { expectSuccess, requireTool, runAsync } from '../support/tools.js';
import { createImage } from './helpers.js';
import { RawClient } from './raw-client.js';

const MiB = 1024 * 1024;

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('NBD server lifecycle', () => {
  it('an NbdExport publishes a device and requestShutdown withdraws it, closing its connections', async () => {
    const dir = tempDir();
    const imagePath = createImage(dir, 16 * MiB);
    const image = await Qcow2Image.open(await LocalHostFile.open(imagePath));
    const server = new NbdServer({});
    const socketPath = path.join(dir, 'nbd.sock');
    await server.listen({ unixPath: socketPath });
    try {
      const exp = new NbdExport(server, 'disk1', { description: 'first disk' });
      await exp.start(image);
      expect(server.exportNames()).toEqual(['disk1']);
      const uri = `nbd+unix:///disk1?socket=${socketPath}`;
      expectSuccess(await runAsync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 0 64k', '-c', 'read -P 0x42 0 64k', uri]));

      const c = await RawClient.connect(socketPath);
      await c.negotiate('disk1');
      c.request(P.NBD_CMD_READ, 1, 0, 4096);
      expect((await c.reply(4096)).error).toBe(0);

      exp.requestShutdown();
      expect(await c.waitClosed()).toBe(true);
      c.destroy();
      await exp.closed;
      expect(server.exportNames()).toEqual([]);

      const d = await RawClient.connect(socketPath);
      await d.greeting();
      d.sendClientFlags();
      d.sendOption(P.NBD_OPT_GO, RawClient.goData('disk1'));
      expect((await d.optionReply()).type).toBe(P.NBD_REP_ERR_UNKNOWN);
      d.destroy();
    } finally {
      await server.close();
      await image.close();
    }
    expect(expectSuccess(await runAsync('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x42 0 64k', imagePath])).code).toBe(0);
  });

  it('a stopping server closes a client that keeps its side open after our FIN (as an idle qemu does) without waiting out the unread-replies backstop', async () => {
    const dir = tempDir();
    const imagePath = createImage(dir, 16 * MiB);
    const image = await Qcow2Image.open(await LocalHostFile.open(imagePath));
    const server = new NbdServer({});
    const socketPath = path.join(dir, 'nbd.sock');
    await server.listen({ unixPath: socketPath });
    const exp = new NbdExport(server, 'disk1', {});
    await exp.start(image);
    const c = await RawClient.connect(socketPath, { allowHalfOpen: true });
    try {
      await c.negotiate('disk1');
      c.request(P.NBD_CMD_READ, 1, 0, 4096);
      expect((await c.reply(4096)).error).toBe(0);
      const closing = server.close().then(() => 'closed' as const);
      // The backstop for a client that stops reading replies is 5 s; this one has read them all.
      const backstop = new Promise<'waited'>((resolve) => setTimeout(() => resolve('waited'), 3000).unref());
      expect(await Promise.race([closing, backstop])).toBe('closed');
      expect(await c.waitClosed(2000)).toBe(true);
    } finally {
      c.destroy();
      await server.close();
      await image.close();
    }
  });

  it('closes connections that do not finish negotiating in time, and refuses beyond maxConnections', async () => {
    const dir = tempDir();
    const server = new NbdServer({ handshakeTimeoutMs: 200, maxConnections: 2 });
    const socketPath = path.join(dir, 'nbd.sock');
    await server.listen({ unixPath: socketPath });
    try {
      const idle = await RawClient.connect(socketPath);
      await idle.greeting();
      const second = await RawClient.connect(socketPath);
      await second.greeting();
      const third = await RawClient.connect(socketPath);
      expect(await third.waitClosed(2000)).toBe(true);
      expect(await idle.waitClosed(2000)).toBe(true);
      expect(await second.waitClosed(2000)).toBe(true);
      for (const c of [idle, second, third]) c.destroy();
    } finally {
      await server.close();
    }
  });
});
