/**
 * check()'s allocation statistics must be qemu-img check's: `strata img check` prints them in
 * qemu-img's format, and the oracle matrix compares them on every image. These are the minimal
 * cases for the two rules qemu applies to fragmented-clusters:
 *   - a compressed cluster always counts as fragmented;
 *   - contiguity is judged only between entries of the same L2 table (it restarts per table).
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import { LocalHostFile } from '../../src/store/local-file.js';
import { shmTempDir } from '../support/tmp.js';
import { requireTool } from '../support/tools.js';
import { checkSummary, qemuCheck, qemuImgOk, qemuIoOk } from './support.js';

async function strataCheck(image: string) {
  const file = await LocalHostFile.open(image, { readOnly: true });
  const q = await Qcow2Image.open(file, { readOnly: true });
  try {
    return checkSummary(await q.check());
  } finally {
    await q.close();
  }
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('oracle: check statistics', () => {
  it('counts a compressed cluster as fragmented, as qemu-img check does', async () => {
    const image = path.join(shmTempDir(), 'c.qcow2');
    qemuImgOk(['create', '-q', '-f', 'qcow2', image, '1M']);
    qemuIoOk(image, ['write -q -c -P 7 0 64k']);
    const qemu = checkSummary(qemuCheck(image));
    expect(qemu['fragmented-clusters']).toBe(1);
    expect(await strataCheck(image)).toEqual(qemu);
  });

  it('judges contiguity within one L2 table only, as qemu-img check does', async () => {
    // 512-byte clusters: an L2 table maps 64 clusters. Guest cluster 64 (second table) is
    // allocated first, guest cluster 63 (first table) right after it, so the two data clusters
    // are out of order across tables but each table holds a single entry.
    const image = path.join(shmTempDir(), 'f.qcow2');
    qemuImgOk(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', image, '1M']);
    qemuIoOk(image, ['write -q -P 1 32768 512', 'write -q -P 2 32256 512']);
    const qemu = checkSummary(qemuCheck(image));
    expect(qemu['fragmented-clusters']).toBe(0);
    expect(await strataCheck(image)).toEqual(qemu);
  });
});
