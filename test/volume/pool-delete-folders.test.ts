/**
 * Deleting a dedup pool removes the folders the daemon made for it once they hold nothing: its
 * folder under <data>/chunks and a file:// tier's temporary folder (the tier's own folder is the
 * operator's and stays). A folder that still holds a file is kept, and the file with it.
 */
import { createReadStream, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { openVolumeBackend } from '../../src/daemon/backend.js';
import { loadConfig } from '../../src/daemon/config.js';
import { createLogger } from '../../src/daemon/logger.js';
import { removeEmptyTree } from '../../src/store/local-folder.js';
import { tempDir } from '../support/tmp.js';
import { qemuImg, qemuIo, requireTool } from '../support/tools.js';

describe('removeEmptyTree', () => {
  it('removes a tree of empty folders, keeps every folder above a file, and takes a missing one as gone', async () => {
    const root = tempDir();
    mkdirSync(path.join(root, 'a', 'b', 'c'), { recursive: true });
    mkdirSync(path.join(root, 'a', 'kept'), { recursive: true });
    writeFileSync(path.join(root, 'a', 'kept', 'file'), 'x');
    expect(await removeEmptyTree(path.join(root, 'a'))).toBe(false);
    expect(readdirSync(path.join(root, 'a'))).toEqual(['kept']);
    expect(existsSync(path.join(root, 'a', 'kept', 'file'))).toBe(true);
    mkdirSync(path.join(root, 'e', 'f'), { recursive: true });
    expect(await removeEmptyTree(path.join(root, 'e'))).toBe(true);
    expect(existsSync(path.join(root, 'e'))).toBe(false);
    expect(await removeEmptyTree(path.join(root, 'missing'))).toBe(true);
  });
});

describe.skipIf(!requireTool('qemu-img') || !requireTool('qemu-io'))('deleting a dedup pool with a file:// tier', () => {
  it('leaves no empty folder of its own behind, in the data folder or the tier', async () => {
    const dir = tempDir();
    const tier = path.join(dir, 'tier');
    mkdirSync(tier);
    const source = path.join(dir, 'src.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', source, '16M']);
    qemuIo(['-c', 'write -P 7 0 8M', source]);
    const backend = await openVolumeBackend({
      dataDir: dir,
      catalogDir: path.join(dir, 'catalog'),
      poolsDir: path.join(dir, 'pools'),
      config: loadConfig({ dataDir: dir }, {}, dir),
      logger: createLogger({ format: 'json', level: 'error', write: () => {} }),
    });
    try {
      await backend.recover();
      const service = backend.service;
      await service.createPool('d', { dedup: { hash: 'blake3', tier: { url: `file://${tier}` } } });
      await service.importVolume('d', 'v', createReadStream(source), { format: 'qcow2' });
      const seal = await service.sealVolume('d', 'v');
      if (seal.sealJobId !== null) {
        let job = await service.jobInfo(seal.sealJobId);
        while (job.state === 'queued' || job.state === 'running') {
          await new Promise((resolve) => setTimeout(resolve, 20));
          job = await service.jobInfo(seal.sealJobId);
        }
        expect(job.state).toBe('succeeded');
      }
      const { report } = await service.evictVolume('d', 'v');
      expect(report.movedPacks).toBeGreaterThan(0);
      expect(existsSync(path.join(dir, 'chunks', 'd'))).toBe(true);
      expect(readdirSync(tier).length).toBeGreaterThan(0);
      await service.deleteVolume('d', 'v');
      await service.purgePoolTrash('d');
      await service.deletePool('d');
      expect(readdirSync(path.join(dir, 'chunks'))).toEqual([]);
      expect(readdirSync(tier)).toEqual([]);
    } finally {
      await backend.close();
    }
  });
});
