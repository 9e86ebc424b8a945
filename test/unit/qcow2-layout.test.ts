/**
 * layoutQcow2 (formats/qcow2/layout.ts) checked by QEMU: an image laid out from a cluster map
 * whose runs cross L2 tables and need two refcount blocks (over 32,768 clusters: the data is a
 * sparse file), with a backing file, passes `qemu-img check`, and qemu-io reads each data
 * cluster's bytes where the layout put them, zero runs as zeroes and the rest from the backing file.
 */
import { closeSync, openSync, writeSync, ftruncateSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { layoutQcow2 } from '../../formats/qcow2/index.js';
import { tempDir } from '../support/tmp.js';
import { expectSuccess, qemuImg, qemuIo, requireTool } from '../support/tools.js';

const CLUSTER = 65536;
const L2_ENTRIES = CLUSTER / 8;

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('layoutQcow2', () => {
  it('lays out an image QEMU checks clean and reads as the map says', () => {
    const dir = tempDir();
    const base = path.join(dir, 'base.qcow2');
    const sizeBytes = 6 * L2_ENTRIES * CLUSTER; // 3 GiB: six L2 tables
    expectSuccess(qemuImg(['create', '-q', '-f', 'qcow2', base, String(sizeBytes)]));
    expectSuccess(qemuIo(['-f', 'qcow2', '-c', `write -P 0x77 ${(L2_ENTRIES - 4) * CLUSTER} ${8 * CLUSTER}`, '-c', `write -P 0x77 ${5 * L2_ENTRIES * CLUSTER} 1M`, base]));
    const runs: { guestCluster: number; clusterCount: number; kind: 'data' | 'zero' }[] = [
      { guestCluster: 0, clusterCount: 33_000, kind: 'data' }, // L2 tables 0..4
      { guestCluster: 5 * L2_ENTRIES, clusterCount: 8, kind: 'zero' },
      { guestCluster: 5 * L2_ENTRIES + 100, clusterCount: 2, kind: 'data' },
    ];
    const layout = layoutQcow2({ sizeBytes, clusterSizeBytes: CLUSTER, backingFile: 'base.qcow2', backingFormat: 'qcow2', runs });
    const file = path.join(dir, 'laid.qcow2');
    const fd = openSync(file, 'w');
    try {
      writeSync(fd, layout.metadata, 0, layout.metadata.length, 0);
      ftruncateSync(fd, layout.fileSizeBytes);
      // Data cluster j sits at host cluster firstDataCluster + j: mark two of them.
      const marked = (j: number, byte: number) => writeSync(fd, Buffer.alloc(CLUSTER, byte), 0, CLUSTER, (layout.firstDataCluster + j) * CLUSTER);
      marked(5, 0x11); // guest cluster 5
      marked(runs[0]!.clusterCount, 0x22); // the first cluster of the last run
    } finally {
      closeSync(fd);
    }
    expect(layout.dataClusterCount).toBe(runs[0]!.clusterCount + 2);
    expect(layout.firstDataCluster + layout.dataClusterCount).toBeGreaterThan(32_768); // two refcount blocks
    expectSuccess(qemuImg(['check', '-f', 'qcow2', file]), 'qemu-img check');
    const read = (pattern: number, offset: number, length: number) =>
      qemuIo(['-f', 'qcow2', '-c', `read -P ${pattern} ${offset} ${length}`, file]);
    expect(read(0x11, 5 * CLUSTER, CLUSTER).stdout).not.toMatch(/Pattern verification failed/);
    expect(read(0, 6 * CLUSTER, (L2_ENTRIES - 8) * CLUSTER).stdout).not.toMatch(/Pattern verification failed/); // data clusters of the sparse file: zeroes, not the base's 0x77
    expect(read(0, 5 * L2_ENTRIES * CLUSTER, 8 * CLUSTER).stdout).not.toMatch(/Pattern verification failed/); // zero run over the base's data
    expect(read(0x77, 5 * L2_ENTRIES * CLUSTER + 8 * CLUSTER, 8 * CLUSTER).stdout).not.toMatch(/Pattern verification failed/); // unallocated: the base
    expect(read(0x22, (5 * L2_ENTRIES + 100) * CLUSTER, CLUSTER).stdout).not.toMatch(/Pattern verification failed/);
  });
});
