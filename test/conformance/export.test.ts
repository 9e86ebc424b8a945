/**
 * The Export suite run by both exports, each over its real protocol on a unix socket in a temp
 * folder: NBD (an NbdServer with one NbdExport, the pipelined NBD client of test/nbd) and
 * vhost-user-blk (a VhostUserBlkExport driven by the TypeScript front-end, which shares guest
 * memory with the back-end the way QEMU does).
 */
import path from 'node:path';
import type { BlockDevice } from '../../src/core/block-device.js';
import * as P from '../../src/export/nbd/protocol.js';
import { NbdExport } from '../../src/export/nbd/export.js';
import { NbdServer } from '../../src/export/nbd/server.js';
import { VhostUserBlkExport } from '../../src/export/vhost-user/export.js';
import { NbdConnectionClosedError, NbdPipelinedClient, NbdReplyError } from '../nbd/pipelined-client.js';
import { BlkStatus, BlkType, ConnectionClosedError, SECTOR_BYTES, VhostUserFrontend } from '../support/vhost-frontend/index.js';
import { tempDir } from '../support/tmp.js';
import { ExportConnectionClosedError, ExportRequestError, exportConformance, type ExportClient } from './export.js';

/** Runs a client call, translating the client's own errors into the suite's. */
async function translated<T>(call: Promise<T>): Promise<T> {
  try {
    return await call;
  } catch (err) {
    if (err instanceof NbdReplyError) throw new ExportRequestError(err.errno, err.message);
    if (err instanceof NbdConnectionClosedError || err instanceof ConnectionClosedError) throw new ExportConnectionClosedError(err.message);
    throw err;
  }
}

function nbdClient(client: NbdPipelinedClient): ExportClient {
  return {
    read: (guestOffset, lengthBytes) => translated(client.read(guestOffset, lengthBytes)),
    write: (guestOffset, data) => translated(client.write(guestOffset, data)),
    writeZeroes: (guestOffset, lengthBytes) => translated(client.writeZeroes(guestOffset, lengthBytes)),
    flush: () => translated(client.flush()),
    disconnect: () => client.disconnect(),
  };
}

const NBD_EXPORT_NAME = 'conformance';

exportConformance('NBD', {
  errors: { readOnly: P.NBD_EPERM, readOutOfRange: P.NBD_EINVAL, writeOutOfRange: P.NBD_ENOSPC, deviceIoError: P.NBD_EIO },
  start: async (device: BlockDevice) => {
    const socketPath = path.join(tempDir(), 'nbd.sock');
    const server = new NbdServer({});
    await server.listen({ unixPath: socketPath });
    const exp = new NbdExport(server, NBD_EXPORT_NAME);
    await exp.start(device);
    return {
      exp,
      connect: async () => nbdClient(await NbdPipelinedClient.connect(socketPath, NBD_EXPORT_NAME)),
      stop: async () => {
        exp.requestShutdown();
        await exp.closed;
        await server.close();
      },
    };
  },
});

/** Two queues (requests alternate between them), 32 requests in flight on each at most. */
const VHOST_QUEUES = 2;

function vhostClient(frontend: VhostUserFrontend): ExportClient {
  /** One request; a status other than OK rejects with it. */
  const request = async <T>(type: number, guestOffset: number, dataBytes: number, what: string, opts: { fill?: (b: Uint8Array) => void; take?: (b: Uint8Array) => T; dataWritable?: boolean } = {}): Promise<T | undefined> => {
    const r = await translated(frontend.io(type, guestOffset / SECTOR_BYTES, dataBytes, opts));
    if (r.status !== BlkStatus.OK) throw new ExportRequestError(r.status, `${what}: virtio-blk status ${r.status}`);
    return r.value;
  };
  return {
    read: async (guestOffset, lengthBytes) => (await request(BlkType.IN, guestOffset, lengthBytes, `read ${guestOffset}+${lengthBytes}`, { take: (b) => b.slice() }))!,
    write: async (guestOffset, data) => void (await request(BlkType.OUT, guestOffset, data.length, `write ${guestOffset}+${data.length}`, { fill: (b) => b.set(data) })),
    writeZeroes: async (guestOffset, lengthBytes) => {
      // One segment: sector (u64), sectors (u32), flags (u32; 0: no unmap).
      const fill = (b: Uint8Array): void => {
        const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
        dv.setBigUint64(0, BigInt(guestOffset / SECTOR_BYTES), true);
        dv.setUint32(8, lengthBytes / SECTOR_BYTES, true);
        dv.setUint32(12, 0, true);
      };
      await request(BlkType.WRITE_ZEROES, 0, 16, `write zeroes ${guestOffset}+${lengthBytes}`, { fill, dataWritable: false });
    },
    flush: async () => void (await request(BlkType.FLUSH, 0, 0, 'flush')),
    disconnect: async () => frontend.close(),
  };
}

exportConformance('vhost-user-blk', {
  errors: { readOnly: BlkStatus.IOERR, readOutOfRange: BlkStatus.IOERR, writeOutOfRange: BlkStatus.IOERR, deviceIoError: BlkStatus.IOERR },
  start: async (device: BlockDevice) => {
    const socketPath = path.join(tempDir(), 'vhost.sock');
    const exp = new VhostUserBlkExport({ socketPath, queueCount: VHOST_QUEUES, readOnly: device.capabilities.readOnly, serial: 'conformance' });
    await exp.start(device);
    return {
      exp,
      connect: async () => vhostClient(await VhostUserFrontend.connect(socketPath, { queueCount: VHOST_QUEUES, queueDepth: 32 })),
      stop: async () => {
        exp.requestShutdown();
        await exp.closed;
      },
    };
  },
});
