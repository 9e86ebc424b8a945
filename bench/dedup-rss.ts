/**
 * The memory cell of the dedup bench: a dedup pool filled with `gib` GiB of unique chunks (imports
 * of 4 GiB of seeded incompressible data, each sealed before the next), then a read pass over every
 * volume (fio, 1 MiB sequential reads over NBD), then the daemon's RSS from /proc. Answers the
 * lines for RESULTS.md: chunks, RSS, peak RSS, bytes of RAM per chunk.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { GiB, MiB } from '../src/core/units.js';
import { writeUniqueSource } from './dedup-source.js';
import { exportNbd } from './dedup-pools.js';
import { fioNbd } from './fio-nbd.js';
import { daemonMemory, startStrata, strataCli, strataJson, waitForJobs } from './strata-daemon.js';

const PART_BYTES = 4 * GiB;
const RSS_TARGET_BYTES = 512 * MiB;

export async function runRssCell(base: string, gib: number): Promise<string> {
  const dir = mkdtempSync(join(base, 'strata-dedup-rss-'));
  const d = await startStrata(join(dir, 'data'));
  try {
    strataCli(d, ['pool', 'create', 'rss', '--dedup']);
    const empty = daemonMemory(d);
    const totalBytes = gib * GiB;
    const parts: { name: string; sizeBytes: number }[] = [];
    const fillStart = Date.now();
    for (let offset = 0, i = 0; offset < totalBytes; offset += PART_BYTES, i++) {
      const sizeBytes = Math.min(PART_BYTES, totalBytes - offset);
      const source = join(dir, 'part.raw');
      writeUniqueSource(source, sizeBytes, `rss-${i}`);
      strataCli(d, ['volume', 'import', source, `rss/part-${i}`, '--no-progress']);
      rmSync(source);
      await waitForJobs(d);
      parts.push({ name: `rss/part-${i}`, sizeBytes });
      process.stderr.write(`  rss: ${parts.length} parts sealed, ${((Date.now() - fillStart) / 1000).toFixed(0)} s, RSS ${(daemonMemory(d).rssBytes / MiB).toFixed(0)} MiB\n`);
    }
    const filled = daemonMemory(d);
    const readStart = Date.now();
    for (const part of parts) fioNbd(exportNbd(d, part.name), { rw: 'read', bs: '1M', iodepth: 8 }, undefined, `${part.sizeBytes / MiB}M`);
    const readSeconds = (Date.now() - readStart) / 1000;
    const warm = daemonMemory(d);
    const df = strataJson<{ uniqueChunkCount: number; uniqueChunkBytes: number; packLocalBytes: number }>(d, ['pool', 'df', 'rss']);
    const perChunk = (bytes: number) => (bytes / df.uniqueChunkCount).toFixed(0);
    const mib = (bytes: number) => (bytes / MiB).toFixed(0);
    const lines = [
      `RSS cell: ${gib} GiB of unique data imported (${parts.length} volumes) in ${((readStart - fillStart) / 1000).toFixed(0)} s, read back in ${readSeconds.toFixed(0)} s ` +
        `(${((totalBytes / MiB) / readSeconds).toFixed(0)} MiB/s); ${df.uniqueChunkCount} unique chunks, ${(df.uniqueChunkBytes / GiB).toFixed(2)} GiB, packs ${(df.packLocalBytes / GiB).toFixed(2)} GiB.`,
      `Daemon RSS: empty pool ${mib(empty.rssBytes)} MiB; after the imports ${mib(filled.rssBytes)} MiB; after the read pass ${mib(warm.rssBytes)} MiB ` +
        `(target < ${mib(RSS_TARGET_BYTES)} MiB: ${warm.rssBytes < RSS_TARGET_BYTES ? 'met' : '**not met**'}); peak ${mib(warm.peakRssBytes)} MiB.`,
      `RAM per chunk: ${perChunk(warm.rssBytes)} bytes (whole RSS / chunks); ${perChunk(warm.rssBytes - empty.rssBytes)} bytes (RSS above the empty pool's / chunks).`,
    ];
    process.stderr.write(lines.join('\n') + '\n');
    return lines.join('\n') + '\n';
  } finally {
    d.child.kill('SIGTERM');
    await new Promise((resolve) => d.child.once('exit', resolve));
    rmSync(dir, { recursive: true, force: true });
  }
}
