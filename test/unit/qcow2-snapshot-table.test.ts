import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isStorageError } from '../../src/core/errors.js';
import type { HostFile } from '../../src/core/host-file.js';
import {
  parseSnapshotTable,
  readSnapshotTable,
  serializeSnapshotTable,
  snapshotTableSizeBytes,
  type SnapshotEntry,
} from '../../formats/qcow2/snapshot-table.js';

const hasQemu = spawnSync('qemu-img', ['--version']).status === 0;
const CLUSTER = 65536;
const limits = { clusterSizeBytes: CLUSTER, fileSizeBytes: 2 ** 40 };

function expectStorageError(fn: () => unknown, code: string, message?: RegExp): void {
  try {
    fn();
  } catch (err) {
    expect(isStorageError(err), String(err)).toBe(true);
    expect((err as { code: string }).code).toBe(code);
    if (message) expect((err as Error).message).toMatch(message);
    return;
  }
  throw new Error(`expected a StorageError ${code}`);
}

function entry(overrides: Partial<SnapshotEntry> = {}): SnapshotEntry {
  return {
    l1TableOffset: 3 * CLUSTER,
    l1Size: 1,
    id: '1',
    name: 'first',
    dateSec: 1_700_000_000,
    dateNsec: 123_456_789,
    vmClockNsec: 42n,
    vmStateSizeBytes: 0,
    diskSizeBytes: 10 * 1024 * 1024,
    icount: undefined,
    knownExtraDataSize: 24,
    extraData: new Uint8Array(0),
    ...overrides,
  };
}

/** Hand-built entry bytes, for layouts serialize would refuse to make or we want to corrupt. */
function rawEntry(fields: {
  l1TableOffset?: bigint;
  l1Size?: number;
  id?: Uint8Array;
  name?: Uint8Array;
  vmStateSize32?: number;
  extra?: Uint8Array;
  extraDataSize?: number;
}): Uint8Array {
  const id = fields.id ?? new TextEncoder().encode('1');
  const name = fields.name ?? new TextEncoder().encode('snap');
  const extra = fields.extra ?? new Uint8Array(24);
  const length = 40 + extra.length + id.length + name.length;
  const bytes = new Uint8Array(Math.ceil(length / 8) * 8);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, fields.l1TableOffset ?? BigInt(CLUSTER));
  view.setUint32(8, fields.l1Size ?? 1);
  view.setUint16(12, id.length);
  view.setUint16(14, name.length);
  view.setUint32(16, 1);
  view.setUint32(20, 2);
  view.setBigUint64(24, 3n);
  view.setUint32(32, fields.vmStateSize32 ?? 0);
  view.setUint32(36, fields.extraDataSize ?? extra.length);
  bytes.set(extra, 40);
  bytes.set(id, 40 + extra.length);
  bytes.set(name, 40 + extra.length + id.length);
  return bytes.subarray(0, length);
}

function concatTable(...entries: Uint8Array[]): Uint8Array {
  let size = 0;
  for (const e of entries) size = Math.ceil(size / 8) * 8 + e.length;
  const out = new Uint8Array(size);
  let offset = 0;
  for (const e of entries) {
    offset = Math.ceil(offset / 8) * 8;
    out.set(e, offset);
    offset += e.length;
  }
  return out;
}

function memoryFile(bytes: Uint8Array, reads: number[] = []): HostFile {
  const unsupported = (): never => {
    throw new Error('not used');
  };
  return {
    name: 'memory',
    readOnly: true,
    pread: async (buf, hostOffset) => {
      reads.push(buf.length);
      const part = bytes.subarray(hostOffset, hostOffset + buf.length);
      buf.fill(0);
      buf.set(part);
      return part.length;
    },
    pwrite: unsupported,
    flush: unsupported,
    truncate: unsupported,
    punchHole: unsupported,
    sizeBytes: async () => bytes.length,
    allocatedBytes: async () => bytes.length,
    supports: () => ({ punchHole: false, seekData: false, copyByReference: false }),
    copyRange: unsupported,
    close: async () => {},
  };
}

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u64 = fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
const text = fc.string({ unit: 'grapheme', maxLength: 40 }).filter((s) => !s.includes('\0'));

const entryArbitrary: fc.Arbitrary<SnapshotEntry> = fc
  .record({
    l1Cluster: fc.integer({ min: 1, max: 2 ** 20 }),
    l1Size: fc.integer({ min: 0, max: 4 * 1024 * 1024 }),
    id: text,
    name: text,
    dateSec: u32,
    dateNsec: u32,
    vmClockNsec: u64,
    vmStateSizeBytes: fc.oneof(u32, fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER })),
    diskSizeBytes: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    icount: fc.option(fc.bigInt({ min: 0n, max: (1n << 64n) - 2n }), { nil: undefined }),
    knownExtraDataSize: fc.constantFrom(0 as const, 8 as const, 16 as const, 24 as const),
    extraData: fc.uint8Array({ maxLength: 100 }),
  })
  .map((r) => {
    const known = r.knownExtraDataSize;
    return {
      l1TableOffset: r.l1Cluster * CLUSTER,
      l1Size: r.l1Size,
      id: r.id,
      name: r.name,
      dateSec: r.dateSec,
      dateNsec: r.dateNsec,
      vmClockNsec: r.vmClockNsec,
      vmStateSizeBytes: known >= 8 ? r.vmStateSizeBytes : r.vmStateSizeBytes % 2 ** 32,
      diskSizeBytes: known >= 16 ? r.diskSizeBytes : undefined,
      icount: known >= 24 ? r.icount : undefined,
      knownExtraDataSize: known,
      extraData: known >= 24 ? r.extraData : r.extraData.subarray(0, r.extraData.length % 8),
    };
  });

describe('snapshot table round trip', () => {
  it('parse(serialize(x)) is x', () => {
    fc.assert(
      fc.property(fc.array(entryArbitrary, { maxLength: 12 }), (entries) => {
        const bytes = serializeSnapshotTable(entries);
        expect(bytes.length).toBe(snapshotTableSizeBytes(entries));
        const parsed = parseSnapshotTable(bytes, entries.length, limits);
        expect(parsed).toEqual(entries.map((e) => ({ ...e, extraData: new Uint8Array(e.extraData) })));
        // And serialize(parse(bytes)) is bytes.
        expect(Buffer.from(serializeSnapshotTable(parsed)).equals(Buffer.from(bytes))).toBe(true);
      }),
      { numRuns: 300 },
    );
  }, 30_000);

  it('keeps old and future extra data layouts byte for byte', () => {
    const extra = (size: number): Uint8Array => Uint8Array.from({ length: size }, (_, i) => (i * 37 + 1) & 0xff);
    const table = concatTable(
      // A version 2 entry with no extra data: VM state from the 32-bit field.
      rawEntry({ extra: new Uint8Array(0), vmStateSize32: 4096 }),
      // 12 bytes: vm_state_size_large and 4 stray bytes of a truncated disk_size.
      rawEntry({ extra: Uint8Array.of(0, 0, 0, 1, 0, 0, 0x20, 0, 9, 8, 7, 6), vmStateSize32: 0 }),
      // QEMU 1.x-5.1: 16 bytes, no icount.
      rawEntry({ extra: new Uint8Array([0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0xa0, 0, 0]), vmStateSize32: 0x1000 }),
      // A future QEMU: 24 known bytes (icount -1) and 16 more.
      rawEntry({ extra: Uint8Array.from([...new Uint8Array(16), ...new Uint8Array(8).fill(0xff), ...extra(16)]) }),
    );
    const parsed = parseSnapshotTable(table, 4, limits);
    expect(parsed.map((e) => [e.knownExtraDataSize, e.extraData.length, e.vmStateSizeBytes, e.diskSizeBytes, e.icount])).toEqual([
      [0, 0, 4096, undefined, undefined],
      [8, 4, 2 ** 32 + 0x2000, undefined, undefined],
      [16, 0, 0x1000, 0xa00000, undefined],
      [24, 16, 0, 0, undefined],
    ]);
    expect(parsed[1]!.extraData).toEqual(Uint8Array.of(9, 8, 7, 6));
    expect(parsed[3]!.extraData).toEqual(extra(16));
    expect(Buffer.from(serializeSnapshotTable(parsed)).equals(Buffer.from(table))).toBe(true);
  });

  it('writes the 32-bit VM state size as QEMU does', () => {
    const big = 5 * 2 ** 32;
    const bytes = serializeSnapshotTable([entry({ vmStateSizeBytes: big }), entry({ id: '2', vmStateSizeBytes: 12345 })]);
    const view = new DataView(bytes.buffer);
    expect(view.getUint32(32)).toBe(0);
    expect(view.getBigUint64(40)).toBe(BigInt(big));
    const second = Math.ceil((40 + 24 + 1 + 5) / 8) * 8;
    expect(view.getUint32(second + 32)).toBe(12345);
    expect(parseSnapshotTable(bytes, 2, limits).map((e) => e.vmStateSizeBytes)).toEqual([big, 12345]);
  });

  it('refuses entries it could not write back faithfully', () => {
    const bad: [Partial<SnapshotEntry>, RegExp][] = [
      [{ knownExtraDataSize: 8 }, /diskSizeBytes/],
      [{ knownExtraDataSize: 16, icount: 5n }, /icount/],
      [{ icount: (1n << 64n) - 1n }, /icount/],
      [{ knownExtraDataSize: 16, extraData: new Uint8Array(8) }, /under 8 bytes/],
      [{ knownExtraDataSize: 0, diskSizeBytes: undefined, vmStateSizeBytes: 2 ** 32 }, /VM state/],
      [{ extraData: new Uint8Array(1001) }, /exceeds 1024/],
      [{ name: 'a\0b' }, /NUL/],
      [{ name: 'bad \ud800 surrogate' }, /surrogate/],
      [{ id: 'x'.repeat(70000) }, /more than 65535/],
      [{ l1Size: 2 ** 32 }, /u32/],
      [{ dateNsec: -1 }, /u32/],
      [{ vmClockNsec: 1n << 64n }, /u64/],
      [{ l1TableOffset: 0.5 }, /offset/],
      [{ knownExtraDataSize: 12 as 8 }, /0, 8, 16 or 24/],
    ];
    for (const [overrides, message] of bad) {
      expectStorageError(() => serializeSnapshotTable([entry(), entry({ id: '2', ...overrides })]), 'INVALID_ARGUMENT', message);
    }
    const many = Array.from({ length: 65537 }, () => entry());
    expectStorageError(() => serializeSnapshotTable(many), 'LIMIT_EXCEEDED', /65536/);
    const huge = Array.from({ length: 1100 }, (_, i) => entry({ id: String(i), name: 'n'.repeat(65535) }));
    expectStorageError(() => serializeSnapshotTable(huge), 'LIMIT_EXCEEDED', /67108864/);
  }, 30_000);
});

describe('snapshot table validation', () => {
  const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);
  const cases: [string, Uint8Array, number, RegExp][] = [
    ['truncated header', rawEntry({}).subarray(0, 30), 1, /entry 0 is truncated/],
    ['truncated name', rawEntry({}).subarray(0, 66), 1, /entry 0 is truncated/],
    ['second entry missing', rawEntry({}), 2, /entry 1 is truncated/],
    ['too much extra data', rawEntry({ extra: new Uint8Array(1032) }), 1, /1032 bytes of extra data, more than 1024/],
    ['extra data size beyond the table', rawEntry({ extraDataSize: 0xffffffff }), 1, /more than 1024/],
    ['unaligned L1', rawEntry({ l1TableOffset: 0x10200n }), 1, /not aligned to a cluster/],
    ['L1 past end of file', rawEntry({ l1TableOffset: BigInt(2 ** 40), l1Size: 1 }), 1, /past the end of the file/],
    ['L1 past 2^64', rawEntry({ l1TableOffset: 0xffffffffffff0000n }), 1, /past the end of the file/],
    ['L1 over 32 MiB', rawEntry({ l1Size: 4 * 1024 * 1024 + 1 }), 1, /more than 33554432 bytes/],
    ['L1 over the header', rawEntry({ l1TableOffset: 0n }), 1, /offset 0/],
    ['bad UTF-8 name', rawEntry({ name: Uint8Array.of(0x61, 0xc3, 0x28) }), 1, /name is not valid UTF-8/],
    ['overlong UTF-8 ID', rawEntry({ id: Uint8Array.of(0xc0, 0xaf) }), 1, /ID is not valid UTF-8/],
    ['NUL in name', rawEntry({ name: Uint8Array.of(0x61, 0, 0x62) }), 1, /NUL/],
    ['VM state beyond 2^53', rawEntry({ extra: Uint8Array.of(0x00, 0x20, 0, 0, 0, 0, 0, 0) }), 1, /VM state size .* out of range/],
    ['too many snapshots', rawEntry({}), 65537, /65537 snapshots exceed the limit of 65536/],
    ['negative count', rawEntry({}), -1, /exceed/],
  ];
  for (const [what, bytes, count, message] of cases) {
    it(`rejects ${what}`, () => {
      expectStorageError(() => parseSnapshotTable(bytes, count, limits), 'CORRUPT', message);
    });
  }

  it('accepts an empty L1 table, a BOM and any name QEMU could store', () => {
    const table = concatTable(
      rawEntry({ l1TableOffset: 0n, l1Size: 0 }),
      rawEntry({ id: utf8('2'), name: utf8('\ufeffbom, 名前, emoji 🙂, tab\t') }),
    );
    const parsed = parseSnapshotTable(table, 2, limits);
    expect(parsed[1]!.name).toBe('\ufeffbom, 名前, emoji 🙂, tab\t');
    expect(Buffer.from(serializeSnapshotTable(parsed)).equals(Buffer.from(table))).toBe(true);
    expect(parseSnapshotTable(new Uint8Array(0), 0, limits)).toEqual([]);
  });

  it('stops a table at 64 MiB', () => {
    // Entries of 65576 bytes (a maximal name, padded): 1023 fit in 64 MiB, the 1024th crosses it.
    const one = rawEntry({ name: new Uint8Array(65535).fill(0x6e), extra: new Uint8Array(0) });
    const table = concatTable(...Array.from({ length: 1024 }, () => one));
    expectStorageError(() => parseSnapshotTable(table, 1024, limits), 'CORRUPT', /entry 1023 runs past the 67108864-byte table limit/);
    expect(parseSnapshotTable(table, 1023, limits)).toHaveLength(1023);
  }, 30_000);

  it('reads a large table from a file in growing pieces', async () => {
    const entries = Array.from({ length: 3000 }, (_, i) => entry({ id: String(i + 1), name: `snapshot number ${i} `.repeat(5) }));
    const table = serializeSnapshotTable(entries);
    expect(table.length).toBeGreaterThan(4 * 64 * 1024);
    const file = new Uint8Array(4 * CLUSTER + table.length + 100);
    file.set(table, 4 * CLUSTER);
    const reads: number[] = [];
    const fileLimits = { clusterSizeBytes: CLUSTER, fileSizeBytes: file.length };
    const parsed = await readSnapshotTable(memoryFile(file, reads), 4 * CLUSTER, entries.length, fileLimits);
    expect(parsed).toEqual(entries);
    expect(reads[0]).toBe(64 * 1024);
    expect(reads.length).toBeLessThanOrEqual(5);
    // The same table cut short by the end of the file.
    const cut = file.subarray(0, file.length - 200);
    await expect(
      readSnapshotTable(memoryFile(cut), 4 * CLUSTER, entries.length, { ...fileLimits, fileSizeBytes: cut.length }),
    ).rejects.toThrow(/entry 2999 runs past the end of the file/);
  });
});

// ---- Real images made by qemu-img ----------------------------------------------------------------

describe.skipIf(!hasQemu)('snapshot tables written by QEMU 7.2', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'strata-qcow2-snapshots-'));
  });
  afterAll(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const qemuImg = (...args: string[]): string => execFileSync('qemu-img', args, { encoding: 'utf8' });

  interface QemuSnapshot {
    id: string;
    name: string;
    'vm-state-size': number;
    'date-sec': number;
    'date-nsec': number;
    'vm-clock-sec': number;
    'vm-clock-nsec': number;
    icount?: number;
  }

  function readTable(image: string): { file: Uint8Array; offset: number; count: number; clusterBits: number } {
    const file = new Uint8Array(fs.readFileSync(image));
    const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
    return {
      file,
      clusterBits: view.getUint32(20),
      count: view.getUint32(60),
      offset: Number(view.getBigUint64(64)),
    };
  }

  function makeImage(name: string, options: string): string {
    const image = path.join(dir, name);
    qemuImg('create', '-q', '-f', 'qcow2', '-o', options, image, '10M');
    for (const snapshot of ['first', 'second snap', 'dritter-ü']) qemuImg('snapshot', '-c', snapshot, image);
    return image;
  }

  for (const [label, options] of [
    ['v3, 64 KiB clusters', 'compat=1.1'],
    ['v2, 4 KiB clusters', 'compat=0.10,cluster_size=4096'],
  ] as const) {
    it(`${label}: parses 3 snapshots and re-serializes them byte for byte`, () => {
      const image = makeImage(`three-${label.replace(/\W+/g, '-')}.qcow2`, options);
      const { file, offset, count, clusterBits } = readTable(image);
      expect(count).toBe(3);
      const entries = parseSnapshotTable(file.subarray(offset), count, {
        clusterSizeBytes: 2 ** clusterBits,
        fileSizeBytes: file.length,
      });
      const info = JSON.parse(qemuImg('info', '--output=json', image)) as { snapshots: QemuSnapshot[] };
      expect(entries.map((e) => [e.id, e.name])).toEqual([
        ['1', 'first'],
        ['2', 'second snap'],
        ['3', 'dritter-ü'],
      ]);
      entries.forEach((e, i) => {
        const q = info.snapshots[i]!;
        expect([e.id, e.name, e.vmStateSizeBytes, e.dateSec, e.dateNsec]).toEqual([
          q.id,
          q.name,
          q['vm-state-size'],
          q['date-sec'],
          q['date-nsec'],
        ]);
        expect(e.vmClockNsec).toBe(BigInt(q['vm-clock-sec']) * 1_000_000_000n + BigInt(q['vm-clock-nsec']));
        expect(e.icount).toBe(q.icount === undefined ? undefined : BigInt(q.icount));
        // QEMU 7.2 writes all 24 bytes of extra data, v2 images included.
        expect(e.knownExtraDataSize).toBe(24);
        expect(e.extraData).toHaveLength(0);
        expect(e.diskSizeBytes).toBe(10 * 1024 * 1024);
        expect(e.l1TableOffset % 2 ** clusterBits).toBe(0);
      });
      const bytes = serializeSnapshotTable(entries);
      expect(Buffer.from(bytes).equals(Buffer.from(file.subarray(offset, offset + bytes.length)))).toBe(true);
    });
  }

  it('QEMU reads a table we wrote, and keeps our unknown extra data when it rewrites the table', async () => {
    const image = makeImage('rewrite.qcow2', 'compat=1.1');
    const { file, offset, count, clusterBits } = readTable(image);
    const fileLimits = { clusterSizeBytes: 2 ** clusterBits, fileSizeBytes: file.length };
    const fd = fs.openSync(image, 'r+');
    let entries: SnapshotEntry[];
    try {
      entries = await readSnapshotTable(
        {
          ...memoryFile(file),
          pread: async (buf, at) => fs.readSync(fd, buf, 0, buf.length, at),
        },
        offset,
        count,
        fileLimits,
      );
      // Rename, and give the middle entry 16 bytes of extra data QEMU does not know. The table grows
      // but stays inside the cluster QEMU allocated for it.
      entries[0]!.name = 'erste';
      entries[1]!.extraData = Uint8Array.from({ length: 16 }, (_, i) => 0xa0 + i);
      const bytes = serializeSnapshotTable(entries);
      expect(offset % fileLimits.clusterSizeBytes).toBe(0);
      expect(bytes.length).toBeLessThan(fileLimits.clusterSizeBytes);
      fs.writeSync(fd, bytes, 0, bytes.length, offset);
    } finally {
      fs.closeSync(fd);
    }
    const info = JSON.parse(qemuImg('info', '--output=json', image)) as { snapshots: QemuSnapshot[] };
    expect(info.snapshots.map((s) => s.name)).toEqual(['erste', 'second snap', 'dritter-ü']);
    expect(() => qemuImg('check', '-q', image)).not.toThrow();

    // QEMU rewrites the whole table to add a snapshot; ours must come back intact.
    qemuImg('snapshot', '-c', 'fourth', image);
    const after = readTable(image);
    expect(after.count).toBe(4);
    const reparsed = parseSnapshotTable(after.file.subarray(after.offset), after.count, {
      clusterSizeBytes: 2 ** after.clusterBits,
      fileSizeBytes: after.file.length,
    });
    expect(reparsed.slice(0, 3)).toEqual(entries);
    expect(reparsed[3]!.name).toBe('fourth');
    const bytes = serializeSnapshotTable(reparsed);
    expect(Buffer.from(bytes).equals(Buffer.from(after.file.subarray(after.offset, after.offset + bytes.length)))).toBe(true);
  });
});
