/**
 * Issue 3's benchmarks, through the volume service (the daemon's core, without HTTP):
 *  1. snapshot create and clone time on an empty 1 TiB volume vs a 1 TiB volume with 2 GiB
 *     written (spread over the whole volume): both must be O(1) in size and data;
 *  2. flatten throughput vs `qemu-img convert` of the same chain into a standalone qcow2.
 *
 *   npm run build && node dist/bench/volume-bench.js [--dir /dev/shm]
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Qcow2Image } from '../formats/qcow2/index.js';
import { allocAligned } from '../src/sys/aligned-buffer.js';
import { GiB, MiB, TiB } from '../src/core/units.js';
import { LevelCatalogStore } from '../src/meta/level-catalog.js';
import { LocalHostFile } from '../src/store/local-file.js';
import { LocalVolumeService, type VolumeInfo } from '../src/volume/index.js';
import { argValue, exitOnHelp, median } from './args.js';

const REPEATS = 5;

async function timeMs(fn: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - start) / 1e6;
}

/** Writes `totalBytes` of data into a volume's active layer, in 1 MiB pieces spread evenly. */
/** The active layer's file: this bench's service keeps its pools in local folders, so it has one. */
function layerFileOf(info: VolumeInfo): string {
  if (info.location === undefined) throw new Error(`volume ${info.pool}/${info.name} has no local layer file`);
  return info.location;
}

async function fill(layerPath: string, sizeBytes: number, totalBytes: number): Promise<void> {
  const image = await Qcow2Image.open(await LocalHostFile.open(layerPath));
  const piece = allocAligned(MiB);
  const pieces = totalBytes / MiB;
  const stride = Math.floor(sizeBytes / pieces / MiB) * MiB;
  for (let i = 0; i < pieces; i++) {
    piece.fill((i % 251) + 1);
    await image.write(i * stride, piece);
  }
  await image.close();
}

async function main(): Promise<void> {
  exitOnHelp(import.meta.url);
  const baseDir = argValue('--dir', existsSync('/dev/shm') ? '/dev/shm' : '/tmp');
  const dir = mkdtempSync(join(baseDir, 'strata-volume-bench-'));
  const catalog = await LevelCatalogStore.open(join(dir, 'catalog'));
  const service = new LocalVolumeService(catalog, dir, { maxChainDepth: 64 });
  const lines: string[] = [];
  try {
    await service.recover();
    await service.createPool('bench');
    const rows: { name: string; snapshotMs: number; cloneMs: number }[] = [];
    for (const [name, dataBytes] of [
      ['empty', 0],
      ['2 GiB written', 2 * GiB],
    ] as const) {
      const volume = name === 'empty' ? 'empty' : 'full';
      const info = await service.createVolume('bench', volume, TiB);
      if (dataBytes > 0) await fill(layerFileOf(info), TiB, dataBytes);
      const snapshotMs: number[] = [];
      for (let i = 0; i < REPEATS; i++) {
        snapshotMs.push(await timeMs(() => service.createSnapshot('bench', volume, `s${i}`)));
      }
      await service.protectSnapshot('bench', volume, 's0');
      const cloneMs: number[] = [];
      for (let i = 0; i < REPEATS; i++) {
        cloneMs.push(await timeMs(() => service.cloneSnapshot('bench', volume, 's0', 'bench', `${volume}-clone${i}`)));
      }
      rows.push({ name, snapshotMs: median(snapshotMs), cloneMs: median(cloneMs) });
      process.stderr.write(`${name}: snapshot ${median(snapshotMs).toFixed(1)} ms, clone ${median(cloneMs).toFixed(1)} ms\n`);
    }
    lines.push(
      `| 1 TiB volume | snapshot create (ms) | clone (ms) |`,
      '|---|---:|---:|',
      ...rows.map((r) => `| ${r.name} | ${r.snapshotMs.toFixed(1)} | ${r.cloneMs.toFixed(1)} |`),
      '',
    );

    // Flatten a clone of the 2 GiB volume vs qemu-img convert of the same chain.
    const clone = await service.volumeInfo('bench', 'full-clone0');
    const convertOut = join(dir, 'converted.qcow2');
    const qemuMs = await timeMs(async () => {
      execFileSync('qemu-img', ['convert', '-O', 'qcow2', layerFileOf(clone), convertOut]);
    });
    rmSync(convertOut);
    const flattenMs = await timeMs(async () => {
      const job = await service.flattenVolume('bench', 'full-clone1');
      const done = await service.waitForJob(job.id);
      if (done.state !== 'succeeded') throw new Error(`flatten ${done.state}: ${done.error?.message}`);
    });
    const mbps = (ms: number) => (2 * GiB) / MiB / (ms / 1000);
    lines.push(
      '| 2 GiB of data in a 1 TiB chain | time (s) | MiB/s |',
      '|---|---:|---:|',
      `| qemu-img convert -O qcow2 (the clone's chain) | ${(qemuMs / 1000).toFixed(2)} | ${mbps(qemuMs).toFixed(0)} |`,
      `| strata volume flatten | ${(flattenMs / 1000).toFixed(2)} | ${mbps(flattenMs).toFixed(0)} |`,
      `| ratio strata / qemu-img (throughput) | | ${(qemuMs / flattenMs).toFixed(2)} |`,
      '',
      `${execFileSync('qemu-img', ['--version'], { encoding: 'utf8' }).split('\n')[0]}; node ${process.version}; in ${baseDir}; ${new Date().toISOString().slice(0, 10)}.`,
    );
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    await service.close();
    await catalog.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
