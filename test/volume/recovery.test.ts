/**
 * Recovery of interrupted operations, deterministically: each multi-file operation is stopped right
 * before its commit transaction (all file work done) or right after it (files still to delete), with
 * every later catalog write failing, as if the process had died there. After a restart, recover() must
 * roll the operation back (before the commit) or finish it (after), leaving every volume and
 * snapshot reading what it should, qemu-img check clean, and no orphan file.
 * (crash.test.ts does the same with SIGKILL at random moments.)
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { CatalogCompare, CatalogOp, CatalogTxnResult } from '../../src/core/catalog-store.js';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { LocalVolumeService } from '../../src/volume/index.js';
import { requireTool } from '../support/tools.js';
import { chunksOf, type Env, KiB, makeEnv, MiB, Model, pattern } from './helpers.js';

type CrashPoint = 'before-commit' | 'after-commit';

/**
 * From now on the service dies at its next commit (the transaction that ends an intent: record
 * changes plus the intent): the commit lands or not, then every later catalog write fails, so the
 * in-process cleanup cannot finish either, as if the process had died there.
 */
function dieAtNextCommit(env: Env, point: CrashPoint): void {
  const store = env.catalog;
  const original = store.txn.bind(store);
  let dead = false;
  store.txn = async (compares: readonly CatalogCompare[], ops: readonly CatalogOp[]): Promise<CatalogTxnResult> => {
    if (dead) throw new Error('simulated crash: the process is gone');
    const isCommit = ops.some((op) => op.key.startsWith('intent/')) && ops.some((op) => !op.key.startsWith('intent'));
    if (!isCommit) return original(compares, ops);
    dead = true;
    if (point === 'after-commit') await original(compares, ops);
    throw new Error(`simulated crash ${point}`);
  };
}

interface Scenario {
  name: string;
  /** Prepares the volume(s); returns the model. */
  setup(m: Model): Promise<void>;
  /** The interrupted operation, and what it does to the model when it completes. */
  run(m: Model): Promise<unknown>;
  complete(m: Model): void;
  /** Operations recovery finishes rather than rolls back (resize). */
  finishes?: boolean;
}

const SIZE = 4 * MiB;

async function expectJobSucceeds(m: Model, job: { id: string }): Promise<void> {
  const done = await m.service.waitForJob(job.id);
  if (done.state !== 'succeeded') throw new Error(`job ${done.state}: ${done.error?.message ?? ''}`);
}

async function base(m: Model): Promise<void> {
  await m.service.createPool('p');
  await m.createVolume('p', 'v', SIZE);
  await m.write('p', 'v', 0, MiB);
  await m.snapshot('p', 'v', 's1');
  await m.write('p', 'v', 512 * KiB, MiB);
  await m.snapshot('p', 'v', 's2');
  await m.write('p', 'v', 3 * MiB, 64 * KiB);
}

async function withClone(m: Model): Promise<void> {
  await base(m);
  await m.service.protectSnapshot('p', 'v', 's1');
  await m.clone('p', 'v', 's1', 'p', 'c');
  await m.write('p', 'c', 2 * MiB, 64 * KiB);
  await m.snapshot('p', 'c', 'cs');
  await m.write('p', 'c', 0, 64 * KiB);
}

const scenarios: Scenario[] = [
  {
    name: 'create volume',
    setup: base,
    run: (m) => m.service.createVolume('p', 'new', MiB),
    complete: (m) => m.contents.set('p/new', new Uint8Array(MiB)),
  },
  {
    name: 'snapshot create',
    setup: base,
    run: (m) => m.service.createSnapshot('p', 'v', 's3'),
    complete: (m) => m.contents.set('p/v@s3', m.expected('p', 'v').slice()),
  },
  {
    name: 'snapshot delete (middle, with two children after a rollback)',
    setup: async (m) => {
      await base(m);
      await m.rollback('p', 'v', 's1');
      await m.write('p', 'v', 2 * MiB, 64 * KiB);
    },
    run: (m) => m.service.deleteSnapshot('p', 'v', 's1'),
    complete: (m) => m.contents.delete('p/v@s1'),
  },
  {
    name: 'rollback',
    setup: base,
    run: (m) => m.service.rollbackSnapshot('p', 'v', 's1'),
    complete: (m) => m.contents.set('p/v', m.expected('p', 'v', 's1').slice()),
  },
  {
    name: 'clone',
    setup: async (m) => {
      await base(m);
      await m.service.protectSnapshot('p', 'v', 's2');
    },
    run: (m) => m.service.cloneSnapshot('p', 'v', 's2', 'p', 'c2'),
    complete: (m) => m.contents.set('p/c2', m.expected('p', 'v', 's2').slice()),
  },
  {
    name: 'flatten',
    setup: withClone,
    run: async (m) => {
      await expectJobSucceeds(m, await m.service.flattenVolume('p', 'c'));
    },
    complete: () => {},
  },
  {
    name: 'copy',
    setup: base,
    run: async (m) => {
      await expectJobSucceeds(m, await m.service.copyVolume('p', 'v', 'p', 'copy'));
    },
    complete: (m) => m.contents.set('p/copy', m.expected('p', 'v').slice()),
  },
  {
    name: 'import',
    setup: base,
    run: (m) => m.service.importVolume('p', 'imp', chunksOf(pattern(MiB, 5)), { format: 'raw' }),
    complete: (m) => m.contents.set('p/imp', pattern(MiB, 5)),
  },
  {
    name: 'resize (shrink)',
    setup: base,
    run: (m) => m.service.resizeVolume('p', 'v', MiB + 512, { allowShrink: true }),
    complete: (m) => m.contents.set('p/v', m.expected('p', 'v').slice(0, MiB + 512)),
    finishes: true,
  },
  {
    name: 'resize (grow over a larger backing file)',
    setup: async (m) => {
      await base(m);
      await m.resize('p', 'v', MiB);
    },
    run: (m) => m.service.resizeVolume('p', 'v', SIZE),
    complete: (m) => {
      const next = new Uint8Array(SIZE);
      next.set(m.expected('p', 'v'));
      m.contents.set('p/v', next);
    },
    finishes: true,
  },
  {
    name: 'delete volume (force, with snapshots)',
    setup: withClone,
    run: (m) => m.service.deleteVolume('p', 'c', { force: true }),
    complete: (m) => {
      m.contents.delete('p/c');
      m.contents.delete('p/c@cs');
    },
  },
];

describe.skipIf(!requireTool('qemu-img'))('recovery of operations interrupted at their commit', () => {
  for (const scenario of scenarios) {
    for (const point of ['before-commit', 'after-commit'] as const) {
      it(`${scenario.name}: ${point}`, async () => {
        const env = await makeEnv();
        const m = new Model(env);
        await scenario.setup(m);
        dieAtNextCommit(env, point);
        await expect(scenario.run(m)).rejects.toThrow();
        // Anything the job runner reports for a background job has settled by now.
        await env.restart();
        if (point === 'after-commit' || scenario.finishes) scenario.complete(m);
        await m.verify();
        // And the service works on afterwards.
        await m.snapshot('p', 'v', 'after');
        await m.verify({ qemu: false });
      });
    }
  }
});

describe('recovery of what it does not own', () => {
  it('reports a plain file beside the pool folders (in <data>/pools) and leaves it alone', async () => {
    const env = await makeEnv();
    await env.service.createPool('p');
    const stray = path.join(env.dir, 'pools', 'notes.txt');
    fs.writeFileSync(stray, 'an operator left this here\n');
    await env.service.close();
    await env.catalog.close();
    env.catalog = await LevelCatalogStore.open(path.join(env.dir, 'catalog'));
    env.service = new LocalVolumeService(env.catalog, env.dir);
    const report = await env.service.recover();
    expect(report.problems).toEqual([`unexpected file ${stray} (left alone)`]);
    expect(report.orphansDeleted).toEqual([]);
    expect(fs.readFileSync(stray, 'utf8')).toBe('an operator left this here\n');
    expect((await env.service.listPools()).map((p) => p.name)).toEqual(['p']);
  });
});
