/**
 * Dedup ratio at scale, through `strata serve`: eight volumes imported from the same source image
 * with realistic content (file-like runs of text and binary, zero regions, 64 KiB blocks repeated
 * many times; built by a seeded generator), each then given 5% random 4 KiB overwrites over NBD
 * (qemu-io) and sealed by a snapshot. The pool's physical bytes must be within 10% of the unique
 * data, computed here on its own: the distinct non-zero 64 KiB chunks (the pool's chunk size, a
 * qcow2 cluster) of the source (every volume's sealed base) and of every final image. What the
 * pool keeps beyond that (the allowance the 10% covers): the qcow2 metadata clusters of each
 * sealed layer (L1/L2 tables, refcounts: chunks too), each pack's header and footer index, and
 * the eight small active layers. Then the volumes are deleted: a gc with the default grace keeps
 * the chunks (their grace has not passed), a gc with no grace gives all the space back.
 *
 * Size: a 64 MiB source by default. The 1 GiB source is opt-in: it took 227 s on
 * 2026-12-04 and writes 4.6 GB of packs, too much to add to every run (most of its time is the NBD
 * writes: each 4 KiB write to a sealed cluster copies the cluster up).
 * STRATA_FULL_DEDUP=1 runs it at 1 GiB (8 GiB logical); docs/dedup.md has the numbers.
 */
import { writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { PoolDfJson, PoolGcJson } from '../../src/api/rest/schemas.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { isAllZero } from '../../src/store/zero-bytes.js';
import { requireTool, runAsync } from '../support/tools.js';
import { assertBuilt, useDaemon, waitForSeals } from './harness.js';

assertBuilt();

const KiB = 1024;
const MiB = 1 << 20;
const SOURCE_BYTES = process.env.STRATA_FULL_DEDUP === '1' ? 1024 * MiB : 64 * MiB;
const VOLUMES = 8;
const CHUNK_BYTES = 64 * KiB;
const WRITE_BYTES = 4 * KiB;
/** 5% of each volume rewritten in 4 KiB writes. */
const WRITES_PER_VOLUME = Math.round((SOURCE_BYTES * 0.05) / WRITE_BYTES);
/** qemu-io commands per run (argv stays well under the kernel's limit). */
const WRITES_PER_RUN = 2048;
const WORDS = 'the of and to in is for on that by this with from block volume data file page table index record value system'.split(' ');

/**
 * A disk-like image: regions of text (words and newlines, odd lengths), random binary, zeros, and
 * 64 KiB blocks from a small library repeated at cluster-aligned places (the same file stored
 * many times). Deterministic for a seed.
 */
function buildSource(sizeBytes: number, seed: number): Buffer {
  const rng = new SeededRandom(seed);
  const image = Buffer.alloc(sizeBytes);
  const library = Array.from({ length: 32 }, () => randomBytes(rng, CHUNK_BYTES));
  let at = 0;
  while (at < sizeBytes) {
    const kind = rng.next();
    if (kind < 0.25) {
      at += rng.intBetween(1, 32) * CHUNK_BYTES; // zeros (left as they are)
    } else if (kind < 0.5) {
      const end = Math.min(sizeBytes, at + rng.intBetween(4 * KiB, 1 * MiB));
      while (at < end) at += image.write(`${WORDS[rng.intBetween(0, WORDS.length - 1)]}${rng.next() < 0.1 ? '\n' : ' '}`, at);
    } else if (kind < 0.75) {
      const length = Math.min(sizeBytes - at, rng.intBetween(4 * KiB, 2 * MiB));
      randomBytes(rng, length).copy(image, at);
      at += length;
    } else {
      at = Math.ceil(at / CHUNK_BYTES) * CHUNK_BYTES;
      for (let n = rng.intBetween(1, 16); n > 0 && at + CHUNK_BYTES <= sizeBytes; n--, at += CHUNK_BYTES) {
        library[rng.intBetween(0, library.length - 1)]!.copy(image, at);
      }
    }
  }
  return image;
}

function randomBytes(rng: SeededRandom, length: number): Buffer {
  const bytes = Buffer.alloc(length);
  for (let i = 0; i + 4 <= length; i += 4) bytes.writeUInt32LE(Math.floor(rng.next() * 0x1_0000_0000), i);
  return bytes;
}

const chunkName = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');

describe.skipIf(!requireTool('qemu-io'))(`dedup at scale: ${VOLUMES} volumes from one ${SOURCE_BYTES / MiB} MiB source`, () => {
  const suite = useDaemon();

  it('keeps physical bytes within 10% of the unique data; deleting the volumes gives the space back after the grace', async () => {
    const d = suite.d;
    const seed = Number(process.env.STRATA_DEDUP_SEED ?? 1212);
    const source = buildSource(SOURCE_BYTES, seed);
    const sourceFile = suite.file('source.raw');
    writeFileSync(sourceFile, source);
    // The unique data, counted here: distinct non-zero chunks of the source...
    const unique = new Set<string>();
    for (let at = 0; at < SOURCE_BYTES; at += CHUNK_BYTES) {
      const chunk = source.subarray(at, at + CHUNK_BYTES);
      if (!isAllZero(chunk)) unique.add(chunkName(chunk));
    }
    const sourceUniqueBytes = unique.size * CHUNK_BYTES;

    d.cliOk(['pool', 'create', 'ds', '--dedup']);
    const rng = new SeededRandom(seed + 1);
    for (let v = 0; v < VOLUMES; v++) {
      const vol = `ds/v${v}`;
      d.cliOk(['volume', 'import', sourceFile, vol]);
      d.cliOk(['volume', 'export-nbd', vol]);
      // ...and of each final image: the source with this volume's overwrites.
      const overwritten = new Map<number, Buffer>();
      const commands: string[] = [];
      // Distinct places: the writes are issued concurrently (aio_write), so two to one place
      // could land in either order.
      const offsets = new Set<number>();
      while (offsets.size < WRITES_PER_VOLUME) offsets.add(rng.intBetween(0, SOURCE_BYTES / WRITE_BYTES - 1) * WRITE_BYTES);
      for (const offset of offsets) {
        const pattern = rng.intBetween(1, 255);
        commands.push(`aio_write -q -P ${pattern} ${offset} ${WRITE_BYTES}`);
        const index = Math.floor(offset / CHUNK_BYTES);
        const chunk = overwritten.get(index) ?? Buffer.from(source.subarray(index * CHUNK_BYTES, (index + 1) * CHUNK_BYTES));
        chunk.fill(pattern, offset - index * CHUNK_BYTES, offset - index * CHUNK_BYTES + WRITE_BYTES);
        overwritten.set(index, chunk);
      }
      for (let i = 0; i < commands.length; i += WRITES_PER_RUN) {
        const batch = commands.slice(i, i + WRITES_PER_RUN).flatMap((c) => ['-c', c]);
        const r = await runAsync('qemu-io', ['-f', 'raw', ...batch, '-c', 'aio_flush', '-c', 'flush', `nbd://${d.nbdAddress}/${vol}`]);
        expect(r.code, r.stdout + r.stderr).toBe(0);
        expect(r.stdout + r.stderr).not.toMatch(/failed|error/i);
      }
      for (const chunk of overwritten.values()) unique.add(chunkName(chunk));
      if (v === VOLUMES - 1) {
        // The concurrent writes landed where they should: the last volume reads back as modelled.
        const image = Buffer.from(source);
        for (const [index, chunk] of overwritten) chunk.copy(image, index * CHUNK_BYTES);
        const finalFile = suite.file('final.raw');
        writeFileSync(finalFile, image);
        const r = await runAsync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', `nbd://${d.nbdAddress}/${vol}`, finalFile]);
        expect(r.code, r.stdout + r.stderr).toBe(0);
      }
      d.cliOk(['volume', 'unexport-nbd', vol]);
      d.cliOk(['snap', 'create', `${vol}@sealed`]);
    }
    expect(waitForSeals(d, 'ds').every((j) => j.state === 'succeeded')).toBe(true);
    const uniqueBytes = unique.size * CHUNK_BYTES;

    const df = d.json<PoolDfJson>(['pool', 'df', 'ds']);
    const logicalBytes = VOLUMES * sourceUniqueBytes;
    console.log(
      `dedup scale (${SOURCE_BYTES / MiB} MiB x ${VOLUMES}, seed ${seed}): unique data ${uniqueBytes} bytes (source ${sourceUniqueBytes}), ` +
        `physical ${df.physicalBytes} (packs ${df.packBytes}, layer files ${df.layerFileBytes}), ratio physical/unique ${(df.physicalBytes / uniqueBytes).toFixed(4)}, ` +
        `dedup ratio ${df.dedupRatio?.toFixed(2)}, logical non-zero ${logicalBytes}`,
    );
    expect(df.volumeCount).toBe(VOLUMES);
    expect(df.physicalBytes).toBeGreaterThanOrEqual(uniqueBytes * 0.9);
    expect(df.physicalBytes).toBeLessThanOrEqual(uniqueBytes * 1.1);
    expect(df.dedupRatio).toBeGreaterThan(1.5);

    for (let v = 0; v < VOLUMES; v++) d.cliOk(['volume', 'delete', `ds/v${v}`, '--now', '--force']);
    // Unreferenced now, but younger than the grace period: the default grace keeps them...
    const kept = d.json<PoolGcJson>(['pool', 'gc', 'ds']);
    expect(kept.bytesDeleted).toBe(0);
    expect(d.json<PoolDfJson>(['pool', 'df', 'ds']).packBytes).toBe(df.packBytes);
    // ...and once it has passed (no grace), every pack goes.
    const gc = d.json<PoolGcJson>(['pool', 'gc', 'ds', '--grace', '0']);
    expect(gc.bytesDeleted).toBeGreaterThanOrEqual(df.packBytes * 0.99);
    expect(d.json<PoolDfJson>(['pool', 'df', 'ds'])).toMatchObject({ volumeCount: 0, packBytes: 0, uniqueChunkCount: 0, physicalBytes: 0 });
  }, 1_800_000);
});
