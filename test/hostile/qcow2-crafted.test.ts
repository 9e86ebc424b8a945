/**
 * Hand-crafted hostile qcow2 images: each takes a real qemu-img made image and breaks one thing on
 * purpose (a header field, an extension, a table entry, the file's length). Every case runs in the
 * worker runner (deadline per case, memory measured) and must end in success or a StorageError;
 * where the right answer is specific (UNSUPPORTED naming the feature, CORRUPT at open) we say so.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeaderOffset } from '../../formats/qcow2/constants.js';
import { expectSuccess, qemuImg, qemuIo, requireTool } from '../support/tools.js';
import { makeTempDir } from '../support/tmp.js';
import { mapRegions, type Region } from './images.js';
import type { CaseOutcome, CasePlan } from './protocol.js';
import { HostileRunner, buildWorker, describeOutcome, isAllowed } from './runner.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const COPIED = 1n << 63n;

interface Base {
  bytes: Uint8Array;
  cs: number;
  sizeBytes: number;
  regions: Region[];
  l1Offset: number;
  refcountTableOffset: number;
  snapshotsOffset: number;
  /** The active L2 table of L1 index 0. */
  l2Offset: number;
  /** The refcount block covering cluster 0. */
  refcountBlockOffset: number;
}

const u32 = (b: Uint8Array, off: number) => new DataView(b.buffer, b.byteOffset).getUint32(off);
const u64 = (b: Uint8Array, off: number) => new DataView(b.buffer, b.byteOffset).getBigUint64(off);
const setU32 = (b: Uint8Array, off: number, v: number) => new DataView(b.buffer, b.byteOffset).setUint32(off, v >>> 0);
const setU64 = (b: Uint8Array, off: number, v: bigint) => new DataView(b.buffer, b.byteOffset).setBigUint64(off, BigInt.asUintN(64, v));
const setU16 = (b: Uint8Array, off: number, v: number) => new DataView(b.buffer, b.byteOffset).setUint16(off, v);

async function makeBase(dir: string, name: string, options: string, sizeBytes: number, commands: string[], snapshot: boolean): Promise<Base> {
  const file = path.join(dir, `${name}.qcow2`);
  expectSuccess(qemuImg(['create', '-q', '-f', 'qcow2', '-o', options, file, String(sizeBytes)]), 'qemu-img create');
  expectSuccess(qemuIo(['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), file]), 'qemu-io');
  if (snapshot) {
    expectSuccess(qemuImg(['snapshot', '-c', 'snap1', file]), 'qemu-img snapshot');
    expectSuccess(qemuIo(['-f', 'qcow2', '-c', 'write -P 0x6b 0 4k', file]), 'qemu-io');
  }
  const bytes = new Uint8Array(readFileSync(file));
  const { regions, clusterSizeBytes, sizeBytes: guest } = await mapRegions(bytes);
  const l1Offset = Number(u64(bytes, HeaderOffset.l1TableOffset));
  const refcountTableOffset = Number(u64(bytes, HeaderOffset.refcountTableOffset));
  return {
    bytes,
    cs: clusterSizeBytes,
    sizeBytes: guest,
    regions,
    l1Offset,
    refcountTableOffset,
    snapshotsOffset: Number(u64(bytes, HeaderOffset.snapshotsOffset)),
    l2Offset: Number(u64(bytes, l1Offset) & 0x00fffffffffffe00n),
    refcountBlockOffset: Number(u64(bytes, refcountTableOffset) & ~0x1ffn),
  };
}

const READ_ONLY: CasePlan = { readOnly: true, readLimitBytes: 16 * MiB, extraReads: [2 ** 40], blockStatus: true, check: true };
const WRITABLE = (base: Base): CasePlan => ({
  readOnly: false,
  readLimitBytes: 16 * MiB,
  check: false,
  writes: [
    { guestOffset: 0, lengthBytes: 4 * KiB },
    { guestOffset: 5 * base.cs, lengthBytes: 4 * KiB },
    { guestOffset: 20 * base.cs + 512, lengthBytes: 3 * base.cs },
  ],
  returnImage: true,
});

describe.skipIf(!requireTool('qemu-img', 'qemu-io'))('qcow2 hostile input: crafted images', () => {
  let base64k: Base;
  let base4k: Base;
  let runner: HostileRunner;
  let cleanup: () => void = () => {};
  const memoryLog: string[] = [];

  beforeAll(async () => {
    const dir = makeTempDir();
    try {
      base64k = await makeBase(
        dir.path,
        '64k',
        'cluster_size=64k',
        4 * MiB,
        ['write -P 0xa1 0 192k', 'write -c -P 0x11 1M 64k', 'write -P 0xa2 3M 64k'],
        true,
      );
      base4k = await makeBase(dir.path, '4k', 'cluster_size=4k', 4 * MiB, ['write -P 0xc1 0 40k', 'write -P 0xc2 2M 8k'], false);
    } finally {
      dir.cleanup();
    }
    const built = buildWorker();
    cleanup = built.cleanup;
    runner = new HostileRunner(built.workerPath, { timeoutMs: 10_000 });
  });

  afterAll(async () => {
    await runner?.close();
    cleanup();
    if (memoryLog.length) console.log(`memory growth per case (heap+buffers / rss):\n  ${memoryLog.join('\n  ')}`);
  });

  /** Runs a case and asserts an allowed outcome; returns it for further checks. */
  async function run(label: string, bytes: Uint8Array, plan: CasePlan = READ_ONLY): Promise<CaseOutcome> {
    const outcome = await runner.run(bytes, plan);
    expect(isAllowed(outcome), `${label}: ${describeOutcome(outcome)}`).toBe(true);
    return outcome;
  }

  function expectError(outcome: CaseOutcome, code: string, step: string, message?: RegExp): void {
    expect(outcome.result, describeOutcome(outcome)).toBe('storage-error');
    expect(outcome.code, describeOutcome(outcome)).toBe(code);
    expect(outcome.step).toBe(step);
    if (message) expect(outcome.message).toMatch(message);
  }

  /** Runs a case whose header field claims something huge; memory must not follow the field. */
  async function runBounded(label: string, bytes: Uint8Array, plan: CasePlan = READ_ONLY): Promise<CaseOutcome> {
    const outcome = await run(label, bytes, plan);
    const m = outcome.memory!;
    memoryLog.push(`${label}: ${(m.heapPlusBuffersGrowthBytes / MiB).toFixed(1)} MiB / ${(m.rssGrowthBytes / MiB).toFixed(1)} MiB (${outcome.result}${outcome.code ? ` ${outcome.code}` : ''})`);
    // The file is a few MiB; nothing may allocate in proportion to a field instead.
    expect(m.heapPlusBuffersGrowthBytes, `${label}: heap+buffers growth`).toBeLessThan(64 * MiB);
    expect(m.rssGrowthBytes, `${label}: rss growth`).toBeLessThan(128 * MiB);
    return outcome;
  }

  function patched(base: Base, patch: (b: Uint8Array) => void): Uint8Array {
    const bytes = base.bytes.slice();
    patch(bytes);
    return bytes;
  }

  it('pristine bases are clean', async () => {
    for (const base of [base64k, base4k]) {
      const outcome = await run('pristine', base.bytes);
      expect(outcome.result).toBe('ok');
      expect(outcome.check).toMatchObject({ corruptions: 0, leaks: 0 });
    }
  });

  describe('header fields', () => {
    it('huge l1_size: CORRUPT at open, memory bounded', async () => {
      for (const l1Size of [0xffffffff, 0x80000000, 0x00400001, 0x00400000, 0x00100000]) {
        const outcome = await runBounded(`l1_size ${l1Size}`, patched(base64k, (b) => setU32(b, HeaderOffset.l1Size, l1Size)));
        expectError(outcome, 'CORRUPT', 'open');
      }
    });

    it('huge refcount_table_clusters, nb_snapshots and size: CORRUPT at open, memory bounded', async () => {
      for (const clusters of [0xffffffff, 129, 128]) {
        const outcome = await runBounded(`refcount_table_clusters ${clusters}`, patched(base64k, (b) => setU32(b, HeaderOffset.refcountTableClusters, clusters)));
        expectError(outcome, 'CORRUPT', 'open');
      }
      for (const count of [0xffffffff, 65537, 65536, 40000]) {
        const outcome = await runBounded(`nb_snapshots ${count}`, patched(base64k, (b) => setU32(b, HeaderOffset.nbSnapshots, count)));
        expectError(outcome, 'CORRUPT', 'open');
      }
      for (const size of [2n ** 63n, 2n ** 62n, 2n ** 53n, 2n ** 50n]) {
        const outcome = await runBounded(`size ${size}`, patched(base64k, (b) => setU64(b, HeaderOffset.size, size)));
        expectError(outcome, 'CORRUPT', 'open');
      }
    });

    it('nb_snapshots far beyond the real table, in a file big enough to hold 65536 empty entries', async () => {
      // The table parses (entries of zeroes are well-formed) or fails; either way memory stays bounded.
      const bytes = new Uint8Array(base64k.bytes.length + 4 * MiB);
      bytes.set(base64k.bytes);
      setU32(bytes, HeaderOffset.nbSnapshots, 65536);
      await runBounded('nb_snapshots 65536 (4 MiB of zero entries)', bytes);
    });

    it('offsets past the end of the file: CORRUPT at open', async () => {
      const end = BigInt(Math.ceil(base64k.bytes.length / base64k.cs) * base64k.cs);
      for (const field of [HeaderOffset.l1TableOffset, HeaderOffset.refcountTableOffset, HeaderOffset.snapshotsOffset]) {
        for (const value of [end, end + 65536n, 2n ** 55n, 2n ** 63n + 65536n]) {
          const outcome = await runBounded(`field ${field} = ${value}`, patched(base64k, (b) => setU64(b, field, value)));
          expectError(outcome, 'CORRUPT', 'open');
        }
      }
    });

    it('unaligned offsets: CORRUPT at open', async () => {
      for (const [field, delta] of [
        [HeaderOffset.l1TableOffset, 8n],
        [HeaderOffset.refcountTableOffset, 512n],
        [HeaderOffset.snapshotsOffset, 8n],
      ] as const) {
        const outcome = await run(`field ${field} + ${delta}`, patched(base64k, (b) => setU64(b, field, u64(b, field) + delta)));
        expectError(outcome, 'CORRUPT', 'open', /offset/);
      }
    });

    it('unknown incompatible feature bits: UNSUPPORTED, naming the feature', async () => {
      const unnamed = await run('incompatible bit 7', patched(base64k, (b) => setU64(b, HeaderOffset.incompatibleFeatures, 1n << 7n)));
      expectError(unnamed, 'UNSUPPORTED', 'open', /bit 7\b/);
      const high = await run('incompatible bit 63', patched(base64k, (b) => setU64(b, HeaderOffset.incompatibleFeatures, 1n << 63n)));
      expectError(high, 'UNSUPPORTED', 'open', /bit 63\b/);
      // Give bit 9 a name in the feature-name table (rename its first entry): the error uses it.
      const named = patched(base64k, (b) => {
        setU64(b, HeaderOffset.incompatibleFeatures, 1n << 9n);
        let offset = u32(b, HeaderOffset.headerLength);
        while (u32(b, offset) !== 0 && u32(b, offset) !== 0x6803f857) offset += 8 + Math.ceil(u32(b, offset + 4) / 8) * 8;
        expect(u32(b, offset), 'feature-name table present').toBe(0x6803f857);
        const entry = offset + 8;
        b[entry] = 0; // incompatible
        b[entry + 1] = 9;
        b.fill(0, entry + 2, entry + 48);
        b.set(new TextEncoder().encode('frobnicated clusters'), entry + 2);
      });
      expectError(await run('named incompatible bit 9', named), 'UNSUPPORTED', 'open', /frobnicated clusters.*bit 9/);
      // Known bits with no support: external data file, encryption.
      expectError(
        await run('external data file', patched(base64k, (b) => setU64(b, HeaderOffset.incompatibleFeatures, 1n << 2n))),
        'UNSUPPORTED',
        'open',
      );
      expectError(await run('crypt_method 1', patched(base64k, (b) => setU32(b, HeaderOffset.cryptMethod, 1))), 'UNSUPPORTED', 'open');
      expectError(await run('version 4', patched(base64k, (b) => setU32(b, HeaderOffset.version, 4))), 'UNSUPPORTED', 'open');
    });

    it('compression type field and incompatible bit 3 disagree', async () => {
      expect(u32(base64k.bytes, HeaderOffset.headerLength)).toBeGreaterThan(HeaderOffset.compressionType);
      const bitOnly = patched(base64k, (b) => setU64(b, HeaderOffset.incompatibleFeatures, 1n << 3n));
      expectError(await run('bit 3, type zlib', bitOnly), 'CORRUPT', 'open', /compression type/);
      const typeOnly = patched(base64k, (b) => (b[HeaderOffset.compressionType] = 1));
      expectError(await run('type zstd, no bit 3', typeOnly), 'CORRUPT', 'open', /compression type/);
      const unknown = patched(base64k, (b) => {
        b[HeaderOffset.compressionType] = 7;
        setU64(b, HeaderOffset.incompatibleFeatures, 1n << 3n);
      });
      expectError(await run('type 7', unknown), 'UNSUPPORTED', 'open', /compression type 7/);
    });

    it('backing file name: longer than 1023 bytes, or outside the first cluster', async () => {
      for (const [offset, size] of [
        [512, 1024],
        [512, 0xffffffff],
        [base64k.cs - 8, 100],
        [2 ** 40, 10],
      ] as const) {
        const bytes = patched(base64k, (b) => {
          setU64(b, HeaderOffset.backingFileOffset, BigInt(offset));
          setU32(b, HeaderOffset.backingFileSize, size);
          if (offset + 1024 < b.length) b.fill(0x41, offset, offset + 1024);
        });
        expectError(await runBounded(`backing name ${size}@${offset}`, bytes), 'CORRUPT', 'open', /backing file name/);
      }
      // 1023 bytes is the limit and fine (the image is opened with ignoreBacking).
      const ok = patched(base64k, (b) => {
        setU64(b, HeaderOffset.backingFileOffset, 2048n);
        setU32(b, HeaderOffset.backingFileSize, 1023);
        b.fill(0x41, 2048, 2048 + 1023);
      });
      expect((await run('backing name 1023', ok)).result).toBe('ok');
    });

    it('header_length past the cluster, or too small', async () => {
      for (const length of [base64k.cs + 8, 0xffffffff, 0x80000000, 103, 0]) {
        const outcome = await run(`header_length ${length}`, patched(base64k, (b) => setU32(b, HeaderOffset.headerLength, length)));
        expectError(outcome, 'CORRUPT', 'open', /header_length/);
      }
    });

    it('header extension lengths past the cluster, and a cluster full of extensions', async () => {
      const first = u32(base64k.bytes, HeaderOffset.headerLength);
      for (const length of [base64k.cs, base64k.cs - first, 0xfffffff8, 0xffffffff]) {
        const outcome = await run(`extension length ${length}`, patched(base64k, (b) => setU32(b, first + 4, length)));
        expectError(outcome, 'CORRUPT', 'open', /extension/);
      }
      // No end marker: unknown zero-length extensions to the end of the cluster.
      const endless = patched(base64k, (b) => {
        for (let o = first; o + 8 <= base64k.cs; o += 8) {
          setU32(b, o, 0x12345678);
          setU32(b, o + 4, 0);
        }
      });
      expectError(await run('no end marker', endless), 'CORRUPT', 'open', /extension/);
    });

    it('cluster_bits and refcount_order out of range', async () => {
      for (const bits of [0, 8, 22, 63, 0xffffffff]) {
        expectError(await run(`cluster_bits ${bits}`, patched(base64k, (b) => setU32(b, HeaderOffset.clusterBits, bits))), 'CORRUPT', 'open');
      }
      for (const order of [7, 64, 0xffffffff]) {
        expectError(
          await run(`refcount_order ${order}`, patched(base64k, (b) => setU32(b, HeaderOffset.refcountOrder, order))),
          'CORRUPT',
          'open',
        );
      }
      // A different, valid cluster size makes every offset wrong: some StorageError or success.
      for (const bits of [9, 12, 16, 20, 21]) await run(`cluster_bits ${bits}`, patched(base64k, (b) => setU32(b, HeaderOffset.clusterBits, bits)));
    });
  });

  describe('snapshot table', () => {
    it('enormous extra_data_size, id and name sizes', async () => {
      const t = base64k.snapshotsOffset;
      for (const extra of [0xffffffff, 0x80000000, 1025]) {
        const outcome = await runBounded(`extra_data_size ${extra}`, patched(base64k, (b) => setU32(b, t + 36, extra)));
        expectError(outcome, 'CORRUPT', 'open', /extra data/);
      }
      for (const field of [12, 14]) {
        await runBounded(`snapshot ${field === 12 ? 'id' : 'name'} size 65535`, patched(base64k, (b) => setU16(b, t + field, 0xffff)));
      }
      for (const l1Size of [0xffffffff, 0x00400001]) {
        const outcome = await runBounded(`snapshot l1_size ${l1Size}`, patched(base64k, (b) => setU32(b, t + 8, l1Size)));
        expectError(outcome, 'CORRUPT', 'open');
      }
      const unaligned = patched(base64k, (b) => setU64(b, t, u64(b, t) + 512n));
      expectError(await run('snapshot L1 unaligned', unaligned), 'CORRUPT', 'open');
    });

    // Regression: check() threw CORRUPT when a snapshot's L1 table had a bad entry, so the image
    // could be neither diagnosed nor repaired; qemu-img check reports it and goes on.
    it('a snapshot L1 entry with reserved bits is reported by check, not thrown', async () => {
      const snapshotL1 = base64k.regions.find((r) => r.kind === 'snapshot-l1')!;
      const bytes = patched(base64k, (b) => setU64(b, snapshotL1.hostOffset, u64(b, snapshotL1.hostOffset) | 2n));
      const outcome = await run('snapshot L1 reserved bit', bytes);
      expect(outcome.result, describeOutcome(outcome)).toBe('ok');
      expect(outcome.check!.corruptions).toBeGreaterThan(0);
    });
  });

  describe('tables', () => {
    it('L1 entries: past the end, unaligned, reserved bits', async () => {
      const l1 = base64k.l1Offset;
      for (const value of [2n ** 40n, BigInt(base64k.bytes.length + base64k.cs), BigInt(base64k.l2Offset + 512), (1n << 62n) | BigInt(base64k.l2Offset)]) {
        const outcome = await run(`L1[0] = ${value}`, patched(base64k, (b) => setU64(b, l1, value | COPIED)));
        expectError(outcome, 'CORRUPT', 'open');
      }
    });

    it('L2 entries: past the end of the file, unaligned, reserved bits, bad compressed descriptors', async () => {
      const l2 = base64k.l2Offset;
      const cases: [string, bigint][] = [
        ['past EOF', COPIED | BigInt(base64k.bytes.length + 10 * base64k.cs)],
        ['far past EOF', COPIED | (2n ** 50n)],
        ['unaligned', COPIED | BigInt(base64k.l2Offset + 512)],
        ['reserved bits', COPIED | (1n << 57n) | BigInt(base64k.l2Offset)],
        ['compressed past EOF', (1n << 62n) | BigInt(base64k.bytes.length + 4096)],
        ['compressed, offset bits above 55', (1n << 62n) | (1n << 55n)],
        ['compressed garbage', (1n << 62n) | 512n],
      ];
      for (const [label, entry] of cases) {
        // Guest cluster 1: the read of cluster 0 before it is fine, the read of cluster 2 after it too.
        const outcome = await run(`L2[1] ${label}`, patched(base64k, (b) => setU64(b, l2 + 8, entry)));
        expect(outcome.result === 'ok' || outcome.code === 'CORRUPT', `${label}: ${describeOutcome(outcome)}`).toBe(true);
        if (outcome.result === 'ok') expect(outcome.readErrors ?? 0, label).toBeGreaterThan(0);
      }
    });

    // Regression: a read spanning a bad compressed cluster and then a bad L2 entry left the failed
    // compressed read as an unhandled promise rejection (which ends a Node process): readLayer
    // threw on the second without waiting for the first.
    it('a read over a bad compressed cluster and then a bad L2 entry fails cleanly', async () => {
      const l2 = base64k.l2Offset;
      const bytes = patched(base64k, (b) => {
        setU64(b, l2 + 8, (1n << 62n) | (1n << 55n)); // cluster 1: compressed, offset above bit 55
        setU64(b, l2 + 16, COPIED | (1n << 57n) | BigInt(base64k.l2Offset)); // cluster 2: reserved bits
      });
      const outcome = await run('bad compressed then bad entry', bytes, { readOnly: true, readLimitBytes: 4 * MiB, check: false });
      expect(outcome.result, describeOutcome(outcome)).toBe('ok');
      expect(outcome.readErrors).toBeGreaterThan(0);
    });

    it('overlapping metadata: an L2 entry pointing at the refcount table, the L1 table or an L2 table', async () => {
      const l2 = base64k.l2Offset;
      for (const [label, target] of [
        ['refcount table', base64k.refcountTableOffset],
        ['L1 table', base64k.l1Offset],
        ['L2 table itself', base64k.l2Offset],
        ['refcount block', base64k.refcountBlockOffset],
      ] as const) {
        const bytes = patched(base64k, (b) => setU64(b, l2 + 5 * 8, COPIED | BigInt(target)));
        const ro = await run(`L2[5] -> ${label} (read-only)`, bytes);
        expect(ro.result, describeOutcome(ro)).toBe('ok');
        expect(ro.check!.corruptions, label).toBeGreaterThan(0);
        // Writing guest cluster 5 would write into that metadata: the engine must refuse.
        const rw = await run(`L2[5] -> ${label} (write)`, bytes, WRITABLE(base64k));
        expect(rw.result, `${label}: ${describeOutcome(rw)}`).toBe('storage-error');
        expect(['CORRUPT', 'READ_ONLY']).toContain(rw.code);
      }
    });

    it('two L2 entries pointing at the same cluster', async () => {
      const l2 = base64k.l2Offset;
      const bytes = patched(base64k, (b) => setU64(b, l2 + 3 * 8, u64(b, l2 + 8)));
      const ro = await run('shared data cluster', bytes);
      expect(ro.check!.corruptions).toBeGreaterThan(0);
      await run('shared data cluster (write)', bytes, WRITABLE(base64k));
    });

    it('L1 entry pointing at the refcount table or a refcount block as if it were an L2 table', async () => {
      for (const [label, target] of [
        ['refcount table', base64k.refcountTableOffset],
        ['refcount block', base64k.refcountBlockOffset],
      ] as const) {
        const bytes = patched(base64k, (b) => setU64(b, base64k.l1Offset, COPIED | BigInt(target)));
        await run(`L1[0] -> ${label}`, bytes);
        const rw = await run(`L1[0] -> ${label} (write)`, bytes, WRITABLE(base64k));
        expect(rw.result, `${label}: ${describeOutcome(rw)}`).toBe('storage-error');
      }
    });

    // (A table entry of 0 means "no block", so the header cannot be named as one.)
    it('refcount loops: a refcount table entry pointing at the refcount table itself or at the L1 table', async () => {
      for (const [label, target] of [
        ['refcount table', base64k.refcountTableOffset],
        ['L1 table', base64k.l1Offset],
      ] as const) {
        const bytes = patched(base64k, (b) => setU64(b, base64k.refcountTableOffset, BigInt(target)));
        // Read-only: opens (the entry is reported as broken) and check counts it as a corruption.
        const ro = await run(`reftable[0] -> ${label}`, bytes);
        expect(ro.result, describeOutcome(ro)).toBe('ok');
        expect(ro.check!.corruptions, label).toBeGreaterThan(0);
        // An allocating write must not write refcounts into that structure.
        const rw = await run(`reftable[0] -> ${label} (write)`, bytes, WRITABLE(base64k));
        expect(rw.result, `${label}: ${describeOutcome(rw)}`).toBe('storage-error');
        expect(rw.code).toBe('CORRUPT');
      }
      // A refcount block at a high table index pointing at an existing cluster: check must finish.
      const high = patched(base64k, (b) => setU64(b, base64k.refcountTableOffset + 8000 * 8, BigInt(base64k.l1Offset)));
      const outcome = await run('reftable[8000] -> L1 table', high);
      // The runner's per-case deadline turns a check that never finishes into result 'hang'.
      expect(outcome.result, describeOutcome(outcome)).toBe('ok');
    });

    it('a refcount block that does not count itself, or counts nothing', async () => {
      const block = base64k.refcountBlockOffset;
      const selfIndex = block / base64k.cs;
      const bytes = patched(base64k, (b) => setU16(b, block + selfIndex * 2, 0));
      const ro = await run('refcount block without its own refcount', bytes);
      expect(ro.check!.corruptions).toBeGreaterThan(0);
      const rw = await run('refcount block without its own refcount (write)', bytes, WRITABLE(base64k));
      if (rw.result === 'ok') {
        // Whatever was allocated, the refcount block must not have been handed out as data.
        const after = rw.image!;
        const check = await run('after writes', after);
        expect(check.check!.corruptions, 'the image after allocating writes').toBeGreaterThan(0);
        expect(u64(after, base64k.refcountTableOffset)).toBe(BigInt(block));
        const reread = await run('reread', after, { readOnly: true, readLimitBytes: 4 * MiB, check: false });
        expect(reread.readErrors ?? 0).toBe(0);
      }
      const zeroed = patched(base64k, (b) => b.fill(0, block, block + base64k.cs));
      await run('refcount block of zeroes', zeroed);
      await run('refcount block of zeroes (write)', zeroed, WRITABLE(base64k));
    });
  });

  describe('truncation', () => {
    it('at many points, both bases', async () => {
      for (const base of [base64k, base4k]) {
        const n = base.bytes.length;
        const points = new Set<number>([0, 1, 4, 8, 24, 71, 72, 73, 103, 104, 111, 112, 200, 511, 512, 4095, 4096, 4097]);
        for (let c = base.cs; c < n; c += base.cs) for (const d of [-1, 0, 1, 512]) points.add(c + d);
        for (let i = 1; i < 16; i++) points.add(Math.floor((n * i) / 16));
        for (const region of base.regions) points.add(region.hostOffset + Math.floor(region.lengthBytes / 2));
        for (const point of [...points].filter((p) => p >= 0 && p < n).sort((a, b) => a - b)) {
          await run(`truncated to ${point} of ${n}`, base.bytes.slice(0, point));
        }
      }
    });
  });
});
