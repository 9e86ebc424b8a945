/**
 * SIGKILL during a group snapshot: a child process (group-crash-child.ts) takes group snapshots
 * of three volumes in two pools, and the test kills it with SIGKILL inside one, at the points the
 * child pauses at (the intent written; after the 1st, 2nd and 3rd member's new layer file: between
 * members; the one transaction landed) and wherever timing lands, then reopens the data folder:
 * recovery rolls the interrupted group snapshot back (the intent's files deleted) or finds it
 * complete, and then every member has the snapshot or none has; the group snapshot record exists
 * exactly when they all have it; catalog and files agree and every layer is clean (qemu-img check).
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { LocalVolumeService } from '../../src/volume/index.js';
import { shmTempDir } from '../support/tmp.js';
import { requireTool } from '../support/tools.js';
import { killOnLine } from '../support/kill-points.js';
import { expectConsistent } from './helpers.js';

const CHILD = path.join(import.meta.dirname, 'group-crash-child.ts');
const MEMBERS = [
  ['p', 'v1'],
  ['q', 'v2'],
  ['p', 'v3'],
] as const;
const ROUNDS: { pauseAt: string; expect: 'none' | 'all' | 'either' }[] = [
  { pauseAt: 'intent', expect: 'none' },
  { pauseAt: 'create-1', expect: 'none' },
  { pauseAt: 'create-2', expect: 'none' },
  { pauseAt: 'create-3', expect: 'none' },
  { pauseAt: 'committed', expect: 'all' },
  { pauseAt: 'none', expect: 'either' },
  { pauseAt: 'none', expect: 'either' },
];

describe.skipIf(!requireTool('qemu-img'))('SIGKILL during a group snapshot', () => {
  it('after recovery every member has the snapshot or none has; catalog and files agree', async () => {
    const dir = shmTempDir();
    for (const [round, { pauseAt, expect: outcome }] of ROUNDS.entries()) {
      const where = `round ${round} (${pauseAt})`;
      const first = round * 1000;
      let victim = '';
      let snapped = 0;
      const child = await killOnLine(CHILD, [dir, String(first), pauseAt], (line) => {
        if (line.startsWith('snapping ')) victim = line.slice('snapping '.length);
        if (line.startsWith('snapped ')) snapped++;
        // Timing: the kill goes out as the second group snapshot starts, and lands wherever it does.
        return pauseAt === 'none' ? line.startsWith('snapping ') && snapped >= 1 : line.startsWith('paused ');
      });
      expect(child.signalCode, where).toBe('SIGKILL');

      const catalog = await LevelCatalogStore.open(path.join(dir, 'catalog'));
      const service = new LocalVolumeService(catalog, dir);
      try {
        const report = await service.recover();
        expect(report.problems, where).toEqual([]);
        const label = `group-snapshot-create group g@${victim}`;
        if (outcome === 'none') expect(report.intentsRolledBack, where).toEqual([label]);
        if (outcome === 'all') expect(report.intentsRolledBack, where).toEqual([]);
        const memberHas = await Promise.all(
          MEMBERS.map(async ([pool, vol]) => (await service.listSnapshots(pool, vol)).some((s) => s.name === `group.g.${victim}`)),
        );
        const recorded = (await service.listGroupSnapshots('g')).find((s) => s.name === victim);
        if (outcome === 'none') expect(memberHas, where).toEqual([false, false, false]);
        if (outcome === 'all') expect(memberHas, where).toEqual([true, true, true]);
        expect(new Set(memberHas).size, `${where}: all or none (${memberHas.join(', ')})`).toBe(1);
        expect(recorded !== undefined, where).toBe(memberHas[0]);
        // Every group snapshot taken before is whole.
        for (const groupSnap of await service.listGroupSnapshots('g')) expect(groupSnap.members, `${where}: ${groupSnap.name}`).toHaveLength(3);
        await expectConsistent({ dir, service });
      } finally {
        await service.close();
        await catalog.close();
      }
    }
  });
});
