/**
 * SIGKILL during a flatten of an exported clone being written (the windowed copy of
 * src/volume/live-copy.ts): a child process (live-flatten-crash-child.ts) flattens a clone while
 * it writes and flushes through the live device, and is killed mid-copy (after some writes went
 * through between windows) or after the flatten. Recovery must find nothing to complain about; the
 * clone is still a clone (rolled back) or standalone (committed); it reads the parent's data with
 * every acknowledged write on top (a write in flight at the kill may or may not be there); a
 * rolled-back clone flattens to the same bytes. qemu-img check may find leaked clusters (a write
 * cut off between its refcount and its L2 entry), never corruption.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { LocalVolumeService } from '../../src/volume/index.js';
import { killOnLine } from '../support/kill-points.js';
import { shmTempDir } from '../support/tmp.js';
import { requireTool } from '../support/tools.js';
import { expectBytes, expectConsistent, readVolume } from './helpers.js';
import { liveFlattenParent, liveFlattenWrite } from './live-flatten-data.js';

const CHILD = path.join(import.meta.dirname, 'live-flatten-crash-child.ts');

/** Kill once this many writes were acknowledged while the job had copied part of its data, or after it succeeded. */
const ROUNDS: { killAfter: number | 'flattened' }[] = [{ killAfter: 1 }, { killAfter: 6 }, { killAfter: 'flattened' }];

describe.skipIf(!requireTool('qemu-img'))('SIGKILL during a flatten of an exported clone being written', () => {
  it.each(ROUNDS)('killed after $killAfter: recovery leaves a clone or a standalone volume that reads every acknowledged write', async ({ killAfter }) => {
    const dir = shmTempDir();
    const journalPath = path.join(dir, 'journal.ndjson');
    let during = 0;
    let midCopy = false;
    const child = await killOnLine(CHILD, [dir, journalPath], (line) => {
      const m = /^progress (\d+) (\d+) (\w+)$/.exec(line);
      if (!m) return false;
      const [done, total, state] = [Number(m[1]), Number(m[2]), m[3]];
      if (killAfter === 'flattened') return state === 'succeeded';
      if (state === 'running' && done > 0 && done < total) during++;
      midCopy = state === 'running' && done < total;
      return during >= killAfter;
    });
    expect(child.signalCode).toBe('SIGKILL');
    if (killAfter !== 'flattened') expect(midCopy, 'killed while the flatten was copying').toBe(true);

    // What the clone must read: the parent, then every acknowledged write in order; the bytes of a
    // write begun and not acknowledged are not checked.
    const expected = liveFlattenParent();
    const mask = new Uint8Array(expected.length);
    const entries = fs.readFileSync(journalPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { i: number; phase: string });
    const ended = new Set(entries.filter((e) => e.phase === 'end').map((e) => e.i));
    for (const { i, phase } of entries) {
      if (phase !== 'begin') continue;
      const { offset, data } = liveFlattenWrite(i);
      if (ended.has(i)) expected.set(data, offset);
      else mask.fill(1, offset, offset + data.length);
    }
    expect(ended.size).toBeGreaterThan(0);

    const catalog = await LevelCatalogStore.open(path.join(dir, 'catalog'));
    const service = new LocalVolumeService(catalog, dir);
    try {
      const report = await service.recover();
      expect(report.problems).toEqual([]);
      const parent = (await service.volumeInfo('p', 'c')).parent;
      if (killAfter === 'flattened') expect(parent).toBeUndefined();
      else expect(parent?.snapshot).toBe('gold');
      const masked = (bytes: Uint8Array) => bytes.map((b, k) => (mask[k] ? 0 : b));
      expectBytes(masked(await readVolume({ dir, catalog, service, restart: async () => {} }, 'p', 'c')), masked(expected), 'clone after recovery');
      // The kill can land inside a guest's allocating write (a leaked cluster, see expectConsistent).
      await expectConsistent({ dir, service }, { leaksAllowed: true });
      if (parent !== undefined) {
        const again = await service.flattenVolume('p', 'c');
        expect((await service.waitForJob(again.id)).state).toBe('succeeded');
        expectBytes(masked(await readVolume({ dir, catalog, service, restart: async () => {} }, 'p', 'c')), masked(expected), 'clone flattened after recovery');
        await expectConsistent({ dir, service }, { leaksAllowed: true });
      }
    } finally {
      await service.close();
      await catalog.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
