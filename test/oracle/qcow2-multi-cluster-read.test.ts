/**
 * Oracle: one read that spans many clusters of different kinds in one request (the read path maps
 * a run of data clusters from one cached L2 table in a single scan and issues one preadv per
 * contiguous host run). The image is built by qemu-io over a qcow2 backing file: data clusters in
 * host order and out of it, plain zero clusters, zeroed allocated clusters, unallocated clusters
 * (the backing shows through), a compressed cluster and an L2 table boundary. Every read, whole or
 * from odd offsets, into one buffer or several, must equal qemu-img convert's raw output. An L2
 * entry damaged in the middle of a data run must still fail the read as corrupt.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { shmTempDir } from '../support/tmp.js';
import { requireTool } from '../support/tools.js';
import { KiB, MiB, createOpts, expectSameBytes, openChain, qemuImgOk, qemuIoOk, qemuRaw } from './support.js';

const CLUSTER = 64 * KiB;
/** Host offset bits 9-55 of an L1/L2 entry, and the COPIED flag (qcow2 spec). */
const HOST_OFFSET_BITS = 0x00fffffffffffe00n;
const COPIED = 1n << 63n;
/** Guest clusters per L2 table with 64 KiB clusters: 8192 (standard) or 4096 (extended L2). */
const cases = [
  { name: 'standard L2', extendedL2: false, l2Clusters: 8192 },
  { name: 'extended L2', extendedL2: true, l2Clusters: 4096 },
];

/** qemu-io commands that lay out every kind of cluster around the start and an L2 boundary. */
function layout(l2Clusters: number): string[] {
  const at = (cluster: number): number => cluster * CLUSTER;
  const boundary = l2Clusters - 4;
  return [
    // Clusters 0-5 in host order, then 9, 8, 7 allocated backwards (host runs break at each).
    `write -P 0x11 ${at(0)} ${6 * CLUSTER}`,
    `write -P 0x12 ${at(9)} ${CLUSTER}`,
    `write -P 0x13 ${at(8)} ${CLUSTER}`,
    `write -P 0x14 ${at(7)} ${CLUSTER}`,
    // A plain zero cluster (no host cluster) and a zeroed allocated one.
    `write -z ${at(10)} ${CLUSTER}`,
    `write -P 0x15 ${at(11)} ${CLUSTER}`,
    `write -z ${at(11)} ${CLUSTER}`,
    // Data, then clusters 13-14 unallocated (the backing's 0x77 shows), then data again.
    `write -P 0x16 ${at(12)} ${CLUSTER}`,
    `write -P 0x17 ${at(15)} ${2 * CLUSTER}`,
    // A compressed cluster inside a run of data.
    `write -P 0x18 ${at(17)} ${CLUSTER}`,
    `write -c -P 0x19 ${at(18)} ${CLUSTER}`,
    `write -P 0x1a ${at(19)} ${CLUSTER}`,
    // A data run across the end of the first L2 table, with a sub-cluster write in it.
    `write -P 0x1b ${at(boundary)} ${8 * CLUSTER}`,
    `write -P 0x1c ${at(boundary + 2) + 4 * KiB} ${12 * KiB}`,
  ];
}

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('multi-cluster reads against qemu-img', () => {
  for (const c of cases) {
    it(`${c.name}: whole, unaligned and segmented reads across every kind of cluster`, async () => {
      const dir = shmTempDir();
      const size = (c.l2Clusters + 64) * CLUSTER;
      const base = path.join(dir, 'base.qcow2');
      const top = path.join(dir, 'top.qcow2');
      qemuImgOk(['create', '-q', '-f', 'qcow2', base, String(size)]);
      qemuIoOk(base, [`write -P 0x77 0 ${size}`]);
      qemuImgOk(['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', '-o', createOpts({ cluster_size: CLUSTER, extended_l2: c.extendedL2 }), top]);
      qemuIoOk(top, layout(c.l2Clusters));
      const expected = qemuRaw(top, path.join(dir, 'top.raw'));

      const opened = await openChain(top);
      try {
        const image = opened.image;
        const check = async (guestOffset: number, lengthBytes: number, segmentBytes: number[] = []): Promise<void> => {
          const what = `${c.name}: ${lengthBytes} bytes at ${guestOffset}${segmentBytes.length ? ` in ${segmentBytes.length + 1} segments` : ''}`;
          const want = expected.subarray(guestOffset, guestOffset + lengthBytes);
          const got = Buffer.alloc(lengthBytes, 0xa5);
          if (segmentBytes.length === 0) {
            await image.read(guestOffset, got);
          } else {
            if (image.readSegments === undefined) throw new Error('the qcow2 image has no readSegments');
            const parts: Uint8Array[] = [];
            let at = 0;
            for (const n of segmentBytes) {
              parts.push(got.subarray(at, at + n));
              at += n;
            }
            parts.push(got.subarray(at));
            await image.readSegments(guestOffset, parts);
          }
          expectSameBytes(got, want, what);
        };
        // The first 24 clusters in one request, in 1 MiB requests, and from odd offsets.
        await check(0, 24 * CLUSTER);
        for (let at = 0; at < 24 * CLUSTER; at += MiB) await check(at, MiB);
        await check(512, 24 * CLUSTER - 1024);
        await check(3 * CLUSTER + 4 * KiB, 5 * CLUSTER);
        await check(CLUSTER - 512, 2 * CLUSTER + 1024);
        // Across the L2 table boundary (the scan stops at the table's end; the next table continues).
        const boundary = (c.l2Clusters - 6) * CLUSTER;
        await check(boundary, 12 * CLUSTER);
        await check(boundary + 100, 12 * CLUSTER - 300);
        // Segments that split clusters and runs: one preadv per host run over several buffers.
        await check(0, 24 * CLUSTER, [4 * KiB, CLUSTER, 3 * CLUSTER - 4 * KiB + 512, 7 * CLUSTER]);
        await check(boundary, 12 * CLUSTER, [CLUSTER + 512, 4 * CLUSTER]);
      } finally {
        await opened.close();
      }
    });
  }

  /** Rewrites entry `index` of the first L2 table of a standard-L2 image: `entry(previous)` gives its new value. */
  function patchL2Entry(image: string, index: number, entry: (previous: bigint) => bigint): void {
    const fd = fs.openSync(image, 'r+');
    try {
      const header = Buffer.alloc(48);
      fs.readSync(fd, header, 0, 48, 0);
      const l1 = Buffer.alloc(8);
      fs.readSync(fd, l1, 0, 8, Number(header.readBigUInt64BE(40)));
      const l2Offset = Number(l1.readBigUInt64BE(0) & HOST_OFFSET_BITS);
      const previous = Buffer.alloc(8);
      fs.readSync(fd, previous, 0, 8, l2Offset + (index - 1) * 8);
      const value = Buffer.alloc(8);
      value.writeBigUInt64BE(entry(previous.readBigUInt64BE(0)), 0);
      fs.writeSync(fd, value, 0, 8, l2Offset + index * 8);
    } finally {
      fs.closeSync(fd);
    }
  }

  const damages = [
    { name: 'a host cluster far past the end of the file', entry: (previous: bigint) => (previous & COPIED) | (1n << 40n) },
    // The next host cluster after the run's last: contiguous, but the file ends there.
    { name: 'the host cluster right after the end of the file', entry: (previous: bigint) => (previous & HOST_OFFSET_BITS) + BigInt(CLUSTER) },
  ];
  for (const damage of damages) {
    it(`an L2 entry in the middle of a data run naming ${damage.name} fails the read as corrupt`, async () => {
      const dir = shmTempDir();
      const image = path.join(dir, 'damaged.qcow2');
      qemuImgOk(['create', '-q', '-f', 'qcow2', '-o', createOpts({ cluster_size: CLUSTER }), image, String(64 * MiB)]);
      // Data clusters 0-4 are the last clusters of the file; 6-7 are written later, elsewhere.
      qemuIoOk(image, [`write -P 0x21 0 ${5 * CLUSTER}`]);
      patchL2Entry(image, 5, damage.entry);
      const opened = await openChain(image);
      try {
        const buf = Buffer.alloc(8 * CLUSTER);
        await expect(opened.image.read(0, buf)).rejects.toThrow(/points past the end of the file/);
        // The clusters before the damaged one still read (their run ends where the damage starts).
        const head = Buffer.alloc(5 * CLUSTER);
        await opened.image.read(0, head);
        expect(head.every((b) => b === 0x21)).toBe(true);
      } finally {
        await opened.close();
      }
    });
  }
});
