/**
 * Minimal, deterministic reproductions of the ordering and allocation bugs the randomized crash
 * tests (qcow2-crash.test.ts) found. Each builds the exact crash image by hand: the durable state
 * plus a chosen subset of the unflushed host writes.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MemoryHostFile } from '../../src/store/memory-file.js';
import { Qcow2Image, type Qcow2CreateOptions } from '../../formats/qcow2/index.js';
import { isStorageError } from '../../src/core/errors.js';
import { findTool, qemuImg } from '../support/tools.js';
import { shmTempDir } from '../support/tmp.js';
import { CrashPointFile, readAll } from './harness.js';

const KiB = 1024;
const hasQemuImg = findTool('qemu-img') !== undefined;

/** A compressible cluster whose bytes are all `value` but for a marker. */
function cluster(value: number, size = 4 * KiB): Uint8Array {
  const out = new Uint8Array(size).fill(value);
  out[0] = 0x55;
  return out;
}

async function freshImage(options: Qcow2CreateOptions): Promise<CrashPointFile> {
  const base = new MemoryHostFile();
  await Qcow2Image.create(base, options);
  return new CrashPointFile(base, { name: 'regression.qcow2' });
}

/** The durable state of `file` plus only those unflushed writes that `keep` selects, in order. */
function crashKeeping(file: CrashPointFile, keep: (op: { hostOffset: number; length: number }) => boolean): MemoryHostFile {
  const out = file.crashLosingAll();
  for (const op of file.pendingOperations) {
    if (op.kind === 'write' && keep({ hostOffset: op.hostOffset, length: op.data.length })) out.writeSync(op.data, op.hostOffset);
  }
  return out;
}

async function readGuest(image: MemoryHostFile, offset: number, length: number): Promise<Uint8Array> {
  const ro = await Qcow2Image.open(image.readOnlyView(), { readOnly: true, dirtyPolicy: 'ignore' });
  try {
    const buf = new Uint8Array(length);
    await ro.read(offset, buf);
    return buf;
  } finally {
    await ro.close();
  }
}

describe('lazy_refcounts: metadata ordering that must hold even with lazy refcounts', () => {
  // Bug: writebackMetadata() dropped every barrier in lazy mode, including data -> L2 and L2 -> L1,
  // which have nothing to do with refcounts. An L2 entry could reach the disk before the data of
  // the cluster it newly points at, and guest data made durable by an earlier flush read back as
  // zeroes after a power cut.
  it('an L2 entry never reaches the disk before the data it points at (every crash point of the flush)', async () => {
    // writeCompressed() then a whole-cluster write: the rewrite goes to a new host cluster. At every
    // host operation of the next flush, crash keeping every unflushed write except that data.
    const file = await freshImage({ sizeBytes: 1024 * KiB, clusterSizeBytes: 4 * KiB, lazyRefcounts: true });
    const image = await Qcow2Image.open(file);
    const old = cluster(0xa1);
    await image.writeCompressed(0, old);
    await image.flush();
    await image.write(0, cluster(0xb2));
    const dataHost = (await image.mapLayer(0, 4 * KiB))[0]!.hostOffset!;
    const images: MemoryHostFile[] = [];
    file.beforeMutation = () => images.push(crashKeeping(file, (op) => op.hostOffset !== dataHost));
    await image.flush();
    file.beforeMutation = undefined;
    for (const crashed of images) {
      const got = Buffer.from(await readGuest(crashed, 0, 4 * KiB));
      expect(got.equals(old) || got.equals(cluster(0xb2)), `reads ${got.subarray(0, 8).toString('hex')}`).toBe(true);
    }
  });

  // Same cause, one level up: after a snapshot, the first write copies the shared L2 table to a new
  // cluster and points the L1 entry at it. Without a barrier, the L1 write could land alone and
  // the whole L2 range (all durable data under it) read as unallocated.
  it('an L1 entry never reaches the disk before the new copy of the L2 table it points at', async () => {
    const file = await freshImage({ sizeBytes: 1024 * KiB, clusterSizeBytes: 4 * KiB, lazyRefcounts: true });
    const image = await Qcow2Image.open(file);
    const old = new Uint8Array(8 * KiB).fill(0x3c);
    await image.write(0, old);
    await image.createSnapshot('s1');
    await image.flush();
    await image.write(4 * KiB, new Uint8Array(512).fill(0x77)); // COW of the L2 table and of cluster 1
    const l1Offset = image.header.l1TableOffset;
    const images: MemoryHostFile[] = [];
    file.beforeMutation = () => images.push(crashKeeping(file, (op) => op.hostOffset === l1Offset));
    await image.flush();
    file.beforeMutation = undefined;
    expect(images.length).toBeGreaterThan(0);
    for (const crashed of images) {
      const got = await readGuest(crashed, 0, 4 * KiB);
      expect(Buffer.from(got).equals(old.subarray(0, 4 * KiB)), `cluster 0 reads ${Buffer.from(got.subarray(0, 8)).toString('hex')}`).toBe(true);
    }
  });
});

describe('compressed clusters packed into a shared host cluster', () => {
  // Bug: allocateCompressedBytes() added a reference to the host cluster holding the previous
  // compressed cluster without checking refcount_bits: with refcount_bits=1 the second compressed
  // write failed with LIMIT_EXCEEDED (QEMU starts a new host cluster instead).
  for (const refcountBits of [1, 2]) {
    it(`refcount_bits=${refcountBits}: many compressed writes succeed and read back`, async () => {
      const file = new MemoryHostFile();
      await Qcow2Image.create(file, { sizeBytes: 256 * KiB, clusterSizeBytes: 4 * KiB, refcountBits });
      const image = await Qcow2Image.open(file);
      for (let i = 0; i < 8; i++) await image.writeCompressed(i * 4 * KiB, cluster(0x10 + i));
      for (let i = 0; i < 8; i++) {
        const got = new Uint8Array(4 * KiB);
        await image.read(i * 4 * KiB, got);
        expect(Buffer.from(got).equals(cluster(0x10 + i))).toBe(true);
      }
      const check = await image.check();
      expect(check.corruptions).toBe(0);
      expect(check.leaks).toBe(0);
      await image.close();
    });
  }

  // Bug: the "next free byte" of the last compressed host cluster survived that cluster being freed
  // and handed out again (as a data cluster): the next compressed write was packed into it, over
  // live guest data, and the cluster's refcount went to 2 under a COPIED data entry.
  it('compressed data never lands in a host cluster that was freed and reallocated', async () => {
    const file = new MemoryHostFile();
    await Qcow2Image.create(file, { sizeBytes: 1024 * KiB, clusterSizeBytes: 4 * KiB });
    const image = await Qcow2Image.open(file);
    await image.writeCompressed(0, cluster(0x01)); // host cluster H, packing tail inside H
    await image.discard(0, 4 * KiB); // drops the only reference to H
    await image.flush(); // H is free again
    const data = new Uint8Array(4 * KiB).fill(0xab);
    await image.write(8 * KiB, data); // H is reused for plain data
    await image.writeCompressed(16 * KiB, cluster(0x07)); // must not be packed into H
    const got = new Uint8Array(4 * KiB);
    await image.read(8 * KiB, got);
    expect(got.findIndex((b) => b !== 0xab), 'first overwritten byte of guest cluster 2').toBe(-1);
    await image.read(16 * KiB, got);
    expect(Buffer.from(got).equals(cluster(0x07))).toBe(true);
    const check = await image.check();
    expect(check.messages).toEqual([]);
    await image.close();
  });
});

describe('check and repair after a crash', () => {
  // Bug: check() wrote the caches back but left queued frees pending. A cluster whose last
  // reference was just dropped counted as a leak, check('leaks') lowered its refcount, and the
  // queued free then failed the next flush with "refcount would drop below zero".
  it("check('leaks') on an open image with a queued free, then flush", async () => {
    const file = new MemoryHostFile();
    await Qcow2Image.create(file, { sizeBytes: 1024 * KiB, clusterSizeBytes: 4 * KiB });
    const image = await Qcow2Image.open(file);
    await image.write(0, new Uint8Array(4 * KiB).fill(1));
    await image.flush();
    await image.discard(0, 4 * KiB); // queues the free of the data cluster
    await image.check('leaks');
    await image.flush();
    const check = await image.check();
    expect(check.messages).toEqual([]);
    await image.close();
  });

  // Bug: the full repair a writable open runs on a dirty image rebuilt the refcounts from a tally
  // that still counted the old refcount table and blocks as referenced, though the rebuilt
  // structure replaces them: every repaired image had leaks (qemu-img check exit 3).
  it('repairing a dirty image leaves check() and qemu-img check clean', async () => {
    const file = new MemoryHostFile();
    await Qcow2Image.create(file, { sizeBytes: 1024 * KiB, clusterSizeBytes: 4 * KiB });
    let image = await Qcow2Image.open(file);
    await image.write(0, new Uint8Array(8 * KiB).fill(1));
    await image.refcounts.add(40, 1); // a leaked cluster: the repair must rebuild the refcounts
    await image.close();
    const incompatible = new Uint8Array(1);
    await file.pread(incompatible, 79);
    await file.pwrite(new Uint8Array([incompatible[0]! | 1]), 79); // dirty bit
    image = await Qcow2Image.open(file); // repairs
    const check = await image.check();
    expect(check.messages).toEqual([]);
    expect(Buffer.from(await readAll(image)).subarray(0, 8 * KiB).every((b) => b === 1)).toBe(true);
    await image.close();
    if (hasQemuImg) {
      const target = path.join(shmTempDir(), 'repaired.qcow2');
      writeFileSync(target, file.snapshotBytes());
      const result = qemuImg(['check', target]);
      expect(result.code, result.stdout + result.stderr).toBe(0);
    }
  });

  // Bug: a kill between a new cluster's refcount (written first, as the format's ordering wants)
  // and its first write leaves a refcount past the end of the file. check() compares only the
  // file's clusters (as qemu-img check does), so check('leaks') found nothing, the allocator
  // skipped the cluster, and the next allocation grew the file past it: a leak qemu-img check then
  // reported. The volume layer's crash test hit it finishing an interrupted resize (repair leaks,
  // then zero the grown range over a backing file, which allocates an L2 table). Crash recovery
  // now checks with pastEndOfFile; a plain check still reports what qemu-img check reports.
  it('a refcount past the end of the file is a leak that check finds and repairs', async () => {
    const file = new MemoryHostFile();
    await Qcow2Image.create(file, { sizeBytes: 8 * 1024 * KiB });
    const fileBytes = await file.sizeBytes();
    const pastEnd = fileBytes / (64 * KiB);
    let image = await Qcow2Image.open(file);
    await image.refcounts.add(pastEnd, 1);
    await image.close();
    expect(await file.sizeBytes()).toBe(fileBytes);

    image = await Qcow2Image.open(file);
    const asQemu = await image.check();
    expect([asQemu.leaks, asQemu.messages]).toEqual([0, []]);
    const found = await image.check(undefined, { pastEndOfFile: true });
    expect(found.leaks).toBe(1);
    expect(found.messages).toEqual([`Leaked cluster ${pastEnd} refcount=1 reference=0 (past the end of the file)`]);
    expect(found.imageEndOffset, 'the image end offset ends with the file, as qemu-img says').toBe(fileBytes);
    const repaired = await image.check('leaks', { pastEndOfFile: true });
    expect([repaired.leaks, repaired.leaksFixed]).toEqual([0, 1]);
    await image.write(0, new Uint8Array(64 * KiB).fill(5)); // allocates an L2 table and a data cluster
    await image.close();
    if (hasQemuImg) {
      const target = path.join(shmTempDir(), 'past-end.qcow2');
      writeFileSync(target, file.snapshotBytes());
      const result = qemuImg(['check', target]);
      expect(result.code, result.stdout + result.stderr).toBe(0);
    }
  });

  it.runIf(hasQemuImg)('every crash point of a grow over a backing file: repair leaks, finish the grow, qemu-img check clean', async () => {
    const dir = shmTempDir();
    const backingFile = new MemoryHostFile();
    await Qcow2Image.create(backingFile, { sizeBytes: 8 * 1024 * KiB });
    const backing = await Qcow2Image.open(backingFile);
    await backing.write(0, new Uint8Array(8 * 1024 * KiB).fill(3));
    await backing.close();
    writeFileSync(path.join(dir, 'backing.qcow2'), backingFile.snapshotBytes());
    const openBacking = { openBacking: async () => Qcow2Image.open(backingFile.readOnlyView(), { readOnly: true }) };
    const fromBytes = 4608 * KiB;
    const toBytes = 7680 * KiB;
    // The volume layer's grow: the new size, then zeroes where the backing file would show through.
    const grow = async (image: Qcow2Image): Promise<void> => {
      if (image.sizeBytes !== toBytes) await image.resize(toBytes);
      await image.writeZeroes(fromBytes, toBytes - fromBytes);
    };
    const base = new MemoryHostFile();
    await Qcow2Image.create(base, { sizeBytes: fromBytes, backingFile: 'backing.qcow2', backingFormat: 'qcow2' });
    const file = new CrashPointFile(base, { name: 'overlay.qcow2' });
    const crashImages: Uint8Array[] = [];
    file.beforeMutation = () => crashImages.push(file.liveBytes());
    const image = await Qcow2Image.open(file, openBacking);
    await grow(image);
    await image.close();
    expect(crashImages.length).toBeGreaterThan(3);
    for (const [index, bytes] of crashImages.entries()) {
      const crashed = MemoryHostFile.fromBytes(bytes);
      const alone = await Qcow2Image.open(crashed, { ignoreBacking: true });
      await alone.check('leaks', { pastEndOfFile: true }); // as the volume layer's recovery does
      await alone.close();
      const finishing = await Qcow2Image.open(crashed, openBacking);
      await grow(finishing);
      await finishing.close();
      const target = path.join(dir, 'overlay.qcow2');
      writeFileSync(target, crashed.snapshotBytes());
      const result = qemuImg(['check', target]);
      expect(result.code, `crash point ${index}: ${result.stdout}${result.stderr}`).toBe(0);
    }
  });

  // Bug: check() compared COPIED flags with the number of references it counted instead of the
  // stored refcount, as qemu-img check does. A power cut in a v2 image's snapshot creation (v2 has
  // no dirty bit) leaves raised refcounts (leaks) with COPIED already cleared: harmless, and
  // qemu-img check says leaks only (exit 3), but Strata reported corruptions.
  it('a power cut inside snapshot creation on a v2 image leaves leaks only, as qemu-img check agrees', async () => {
    const file = await freshImage({ sizeBytes: 2048 * KiB, clusterSizeBytes: 4 * KiB, compat: '0.10' });
    const image = await Qcow2Image.open(file);
    await image.write(2046354, new Uint8Array(2560).fill(9));
    await image.flush();
    let crashed: MemoryHostFile | undefined;
    file.beforeMutation = (what) => {
      // The header write that publishes the snapshot: cut the power just before it.
      if (!crashed && what.endsWith('@0')) crashed = file.crashLosingAll();
    };
    await image.createSnapshot('s1');
    file.beforeMutation = undefined;
    expect(crashed).toBeDefined();
    const ro = await Qcow2Image.open(crashed!.readOnlyView(), { readOnly: true });
    const check = await ro.check();
    expect(ro.info().dirty).toBe(false);
    expect(ro.info().snapshots).toEqual([]);
    expect(check.corruptions, check.messages.join('\n')).toBe(0);
    expect(check.leaks).toBeGreaterThan(0);
    await ro.close();
    if (hasQemuImg) {
      const target = path.join(shmTempDir(), 'v2-snapshot-crash.qcow2');
      writeFileSync(target, crashed!.snapshotBytes());
      const result = qemuImg(['check', '--output=json', target]);
      expect(result.code, result.stdout + result.stderr).toBe(3);
      const report = JSON.parse(result.stdout) as { leaks?: number; corruptions?: number };
      expect(report.corruptions ?? 0).toBe(0);
      expect(report.leaks).toBe(check.leaks);
    }
  });
});

/** A memory file that refuses to grow past a bound: a runaway allocator fails fast instead of hanging. */
class BoundedFile extends MemoryHostFile {
  /** pwrite calls so far: a runaway allocation shows as thousands of metadata writes. */
  writeCount = 0;

  constructor(private readonly limitBytes: number) {
    super();
  }

  override pwrite(buf: Uint8Array, hostOffset: number): Promise<void> {
    this.writeCount++;
    if (hostOffset + buf.length > this.limitBytes) {
      return Promise.reject(new Error(`runaway: write at ${hostOffset}, past the ${this.limitBytes}-byte bound`));
    }
    return super.pwrite(buf, hostOffset);
  }
}

describe('contiguous allocations and refcount blocks', () => {
  // Bug: a new refcount block takes the first cluster of the range it describes, so past the last
  // existing block no free run is longer than entriesPerBlock - 1 clusters. Refcounts.allocate()
  // looked for longer runs anyway and never found one: it created block after block and moved the
  // refcount table again and again until LIMIT_EXCEEDED, the file grown to ~17 GB (sparse). The
  // batched whole-cluster write path asks for up to an L2 table's worth of clusters at once, so
  // any large write hit it with refcount_bits=64 and 512 B or 4 KiB clusters.
  for (const clusterSizeBytes of [512, 4096]) {
    it(`large writes with refcount_bits=64 and ${clusterSizeBytes} B clusters`, async () => {
      const file = new BoundedFile(64 * 1024 * KiB);
      await Qcow2Image.create(file, { sizeBytes: 64 * 1024 * KiB, clusterSizeBytes, refcountBits: 64 });
      const image = await Qcow2Image.open(file);
      const data = new Uint8Array(4 * 1024 * KiB);
      for (let i = 0; i < data.length; i += 512) data[i] = (i / 512) & 0xff;
      await image.write(1024 * KiB, data);
      await image.flush();
      expect(await file.sizeBytes()).toBeLessThan(8 * 1024 * KiB);
      const back = new Uint8Array(data.length);
      await image.read(1024 * KiB, back);
      expect(Buffer.from(back).equals(data)).toBe(true);
      const check = await image.check();
      expect(check.corruptions, check.messages.join('\n')).toBe(0);
      await image.close();
    });
  }

  it('a contiguous allocation no fresh refcount block range can hold fails fast, not by running away', async () => {
    // A snapshot's copy of a 128-cluster L1 table, with refcount blocks of 64 entries.
    const file = new BoundedFile(64 * 1024 * KiB);
    await Qcow2Image.create(file, { sizeBytes: 256 * 1024 * KiB, clusterSizeBytes: 512, refcountBits: 64 });
    const image = await Qcow2Image.open(file);
    await image.write(0, new Uint8Array(64 * KiB).fill(3));
    const writesBefore = file.writeCount;
    let error: unknown;
    try {
      await image.createSnapshot('s1');
    } catch (err) {
      error = err;
    }
    // Either it found room (fine) or it said so at once.
    if (error !== undefined) expect(isStorageError(error, 'LIMIT_EXCEEDED'), String(error)).toBe(true);
    // Counted, not timed: the runaway created refcount block after block (one write or more each).
    expect(file.writeCount - writesBefore).toBeLessThan(1000);
    expect(await file.sizeBytes()).toBeLessThan(16 * 1024 * KiB);
    await image.close();
  });
});
