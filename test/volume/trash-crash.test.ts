/**
 * SIGKILL during a trash purge: a child process (trash-crash-child.ts) deletes volumes to the
 * trash and purges them; the test kills it with SIGKILL inside a purge, at points the child
 * pauses at (its intent written but not its transaction; the transaction landed and some of the
 * volume's layer files deleted) and wherever timing lands, then reopens the data folder:
 * recovery must roll back or finish the purge and find nothing to complain about, the catalog
 * and the files must agree (no orphan file, no missing one, no intent left, every layer clean
 * under qemu-img check), every volume left must have all its records, and the volume being
 * purged is either whole in the trash (rolled back) or gone (finished).
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { LocalVolumeService } from '../../src/volume/index.js';
import { shmTempDir } from '../support/tmp.js';
import { requireTool } from '../support/tools.js';
import { killOnLine } from '../support/kill-points.js';
import { expectConsistent } from './helpers.js';

const CHILD = path.join(import.meta.dirname, 'trash-crash-child.ts');
/** Where each round's child is killed: its pause points (a volume has 7 layers), then by timing. */
const ROUNDS: { pauseAt: string; expect: 'rolled back' | 'finished' | 'either' }[] = [
  { pauseAt: 'intent', expect: 'rolled back' },
  { pauseAt: 'remove-1', expect: 'finished' },
  { pauseAt: 'intent', expect: 'rolled back' },
  { pauseAt: 'remove-4', expect: 'finished' },
  { pauseAt: 'remove-7', expect: 'finished' },
  { pauseAt: 'none', expect: 'either' },
  { pauseAt: 'none', expect: 'either' },
  { pauseAt: 'none', expect: 'either' },
];

/** Every volume's records are whole: its layers and its snapshots' layers have records. */
async function expectVolumesWhole(service: LocalVolumeService): Promise<void> {
  const { volumes, layers, snapshots } = service.catalog;
  for (const vol of await volumes.all()) {
    expect(await layers.get(vol.activeLayerId), `active layer of ${vol.name}`).toBeDefined();
    const snaps = await snapshots.byIndexPrefix('name', `${vol.id}/`);
    expect(snaps.length, `snapshots of ${vol.name}`).toBe(6);
    for (const snap of snaps) expect(await layers.get(snap.layerId), `layer of ${vol.name}@${snap.name}`).toBeDefined();
  }
  for (const layer of await layers.all()) expect(await volumes.get(layer.ownerVolumeId), `owner of layer ${layer.id}`).toBeDefined();
}

describe.skipIf(!requireTool('qemu-img'))('SIGKILL during a trash purge', () => {
  it('recovery rolls back or finishes the purge; catalog and files agree', async () => {
    const dir = shmTempDir();
    for (const [round, { pauseAt, expect: outcome }] of ROUNDS.entries()) {
      const where = `round ${round} (${pauseAt})`;
      // An even first index purges by id (the volume announced); an odd one through an expiry
      // pass, which also purges what earlier rounds left expired in the trash.
      const first = round * 1000 + (pauseAt === 'none' ? 1 : 0);
      let victim = '';
      const child = await killOnLine(CHILD, [dir, String(first), pauseAt], (line) => {
        if (line.startsWith('purging ')) victim = line.slice('purging '.length);
        return pauseAt === 'none' ? line.startsWith('purging ') : line.startsWith('paused ');
      });
      expect(child.signalCode, where).toBe('SIGKILL');

      const catalog = await LevelCatalogStore.open(path.join(dir, 'catalog'));
      const service = new LocalVolumeService(catalog, dir);
      try {
        const report = await service.recover();
        expect(report.problems, where).toEqual([]);
        const label = `trash-purge p/v${first}`;
        if (outcome === 'rolled back') expect(report.intentsRolledBack, where).toEqual([label]);
        if (outcome === 'finished') expect(report.intentsFinished, where).toEqual([label]);
        const inTrash = (await service.listTrash('p')).map((e) => e.id);
        if (outcome === 'rolled back') expect(inTrash, where).toContain(victim);
        if (outcome === 'finished') expect(inTrash, where).not.toContain(victim);
        await expectConsistent({ dir, service });
        await expectVolumesWhole(service);
      } finally {
        await service.close();
        await catalog.close();
      }
    }
  });
});
