/**
 * Shared set-up for the NBD tests: a qcow2 image in a temp dir served by an in-process NbdServer
 * on a unix socket. Tools must run through runAsync (spawnSync would block the server's event loop).
 */
import path from 'node:path';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import { NbdServer, type NbdExportEntry, type NbdTlsOptions } from '../../src/export/nbd/server.js';
import { LocalHostFile } from '../../src/store/local-file.js';
import { expectSuccess, run } from '../support/tools.js';

export interface Served {
  server: NbdServer;
  image: Qcow2Image;
  socketPath: string;
  imagePath: string;
  /** nbd+unix:///NAME?socket=PATH */
  uri: (name?: string) => string;
  /** Stops the server, then closes the image (flushing it). */
  close: () => Promise<void>;
  logs: string[];
}

export const EXPORT_NAME = 'vol';

/** Creates a qcow2 image with qemu-img (before any server runs, so the sync call is fine). */
export function createImage(dir: string, sizeBytes: number, name = 'vol.qcow2'): string {
  const imagePath = path.join(dir, name);
  expectSuccess(run('qemu-img', ['create', '-q', '-f', 'qcow2', imagePath, String(sizeBytes)]), 'qemu-img create');
  return imagePath;
}

export async function serveImage(
  dir: string,
  imagePath: string,
  options: {
    readOnly?: boolean;
    extra?: Record<string, NbdExportEntry>;
    maxInFlightBytes?: number;
    tcp?: boolean;
    tcpTls?: NbdTlsOptions;
    idlePollMaxUs?: number;
  } = {},
): Promise<Served> {
  const file = await LocalHostFile.open(imagePath, { readOnly: options.readOnly === true });
  const image = await Qcow2Image.open(file, { readOnly: options.readOnly === true });
  const exports = new Map<string, NbdExportEntry>([
    [EXPORT_NAME, { device: image, readOnly: options.readOnly === true, description: 'test volume' }],
    ...Object.entries(options.extra ?? {}),
  ]);
  const logs: string[] = [];
  const server = new NbdServer({
    exports,
    log: (m) => logs.push(m),
    ...(options.maxInFlightBytes !== undefined ? { maxInFlightBytes: options.maxInFlightBytes } : {}),
    ...(options.idlePollMaxUs !== undefined ? { idlePollMaxUs: options.idlePollMaxUs } : {}),
  });
  const socketPath = path.join(dir, 'nbd.sock');
  await server.listen({
    unixPath: socketPath,
    ...(options.tcp === true ? { tcp: { host: '127.0.0.1', port: 0 } } : {}),
    ...(options.tcpTls !== undefined ? { tcpTls: options.tcpTls } : {}),
  });
  return {
    server,
    image,
    socketPath,
    imagePath,
    logs,
    uri: (name = EXPORT_NAME) => `nbd+unix:///${name}?socket=${socketPath}`,
    close: async () => {
      await server.close();
      await image.close();
    },
  };
}
