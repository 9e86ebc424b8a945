/**
 * Diff, export-diff and import-diff: the changed extents between two points of one lineage, and the
 * diff stream (docs/daemon.md) replaying a volume's history onto another volume exactly.
 */
import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { requireTool } from '../support/tools.js';
import { chunksOf, collect, expectCode, KiB, makeEnv, MiB, Model } from './helpers.js';

const SIZE = 8 * MiB;

async function streamBytes(stream: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  return collect(stream);
}

describe.skipIf(!requireTool('qemu-img'))('diff', () => {
  it('reports the extents changed between two points, as data or zero by what the newer point reads', async () => {
    const env = await makeEnv();
    const m = new Model(env);
    await env.service.createPool('p');
    await m.createVolume('p', 'v', SIZE);
    await m.write('p', 'v', 0, 2 * MiB);
    await m.snapshot('p', 'v', 's1');
    await m.write('p', 'v', 1 * MiB, 64 * KiB);
    await m.zero('p', 'v', 4 * MiB, 128 * KiB);
    await m.snapshot('p', 'v', 's2');
    await m.write('p', 'v', 6 * MiB, 64 * KiB);

    expect(await env.service.diff('p', 'v', { fromSnapshot: undefined, toSnapshot: 's1' })).toEqual([{ offset: 0, length: 2 * MiB, kind: 'data' }]);
    expect(await env.service.diff('p', 'v', { fromSnapshot: 's1', toSnapshot: 's2' })).toEqual([
      { offset: 1 * MiB, length: 64 * KiB, kind: 'data' },
      { offset: 4 * MiB, length: 128 * KiB, kind: 'zero' },
    ]);
    expect(await env.service.diff('p', 'v', { fromSnapshot: 's2', toSnapshot: undefined })).toEqual([{ offset: 6 * MiB, length: 64 * KiB, kind: 'data' }]);
    expect(await env.service.diff('p', 'v', { fromSnapshot: 's1', toSnapshot: undefined })).toEqual([
      { offset: 1 * MiB, length: 64 * KiB, kind: 'data' },
      { offset: 4 * MiB, length: 128 * KiB, kind: 'zero' },
      { offset: 6 * MiB, length: 64 * KiB, kind: 'data' },
    ]);
    expect(await env.service.diff('p', 'v', { fromSnapshot: 's2', toSnapshot: 's2' })).toEqual([]);
    // From the beginning of time: everything that reads as data.
    expect(await env.service.diff('p', 'v', { fromSnapshot: undefined, toSnapshot: undefined })).toEqual([
      { offset: 0, length: 2 * MiB, kind: 'data' },
      { offset: 4 * MiB, length: 128 * KiB, kind: 'zero' },
      { offset: 6 * MiB, length: 64 * KiB, kind: 'data' },
    ]);

    // Points on different branches are refused.
    await m.rollback('p', 'v', 's1');
    await expectCode(env.service.diff('p', 'v', { fromSnapshot: 's2', toSnapshot: undefined }), 'INVALID_ARGUMENT', /ancestor/);
    await expectCode(env.service.diff('p', 'v', { fromSnapshot: 'nope', toSnapshot: undefined }), 'NOT_FOUND');
  });

  it('export-diff then import-diff replays a history onto another volume exactly', async () => {
    const env = await makeEnv();
    const m = new Model(env);
    await env.service.createPool('p');
    await env.service.createPool('backup');
    await m.createVolume('p', 'v', SIZE);
    await m.write('p', 'v', 0, 3 * MiB);
    await m.snapshot('p', 'v', 'a');
    await m.write('p', 'v', 2 * MiB + 512, 70 * KiB);
    await m.zero('p', 'v', 0, 1 * MiB);
    await m.resize('p', 'v', 5 * MiB);
    await m.snapshot('p', 'v', 'b');
    await m.resize('p', 'v', 12 * MiB);
    await m.write('p', 'v', 10 * MiB, 1 * MiB);

    await m.createVolume('backup', 'v', MiB);
    const steps: [string | undefined, string | undefined][] = [
      [undefined, 'a'],
      ['a', 'b'],
      ['b', undefined],
    ];
    for (const [from, to] of steps) {
      const stream = await env.service.exportDiff('p', 'v', { fromSnapshot: from, toSnapshot: to });
      const bytes = await streamBytes(stream);
      const info = await env.service.importDiff('backup', 'v', chunksOf(bytes, 123 * KiB));
      if (to !== undefined) m.contents.set(`backup/v@${to}`, m.expected('p', 'v', to).slice());
      m.contents.set('backup/v', (to === undefined ? m.expected('p', 'v') : m.expected('p', 'v', to)).slice());
      expect(info.provisionedBytes).toBe(m.expected('backup', 'v').length);
    }
    await m.verify();
    expect((await env.service.listSnapshots('backup', 'v')).map((s) => s.name)).toEqual(['a', 'b']);

    // The stream's header names its points and size.
    const stream = await env.service.exportDiff('p', 'v', { fromSnapshot: 'a', toSnapshot: 'b' });
    const bytes = await streamBytes(stream);
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(0, bytes.indexOf(10))));
    expect(header).toEqual({ format: 'strata-diff', version: 1, sizeBytes: 5 * MiB, from: 'a', to: 'b' });
    expect(String.fromCharCode(bytes[bytes.length - 17]!)).toBe('e');

    // Errors: to-snapshot exists, from-snapshot missing, bad streams.
    await expectCode(env.service.importDiff('backup', 'v', chunksOf(bytes)), 'ALREADY_EXISTS');
    await m.createVolume('backup', 'w', MiB);
    await expectCode(env.service.importDiff('backup', 'w', chunksOf(bytes)), 'NOT_FOUND', /@a'/);
    await expectCode(env.service.importDiff('backup', 'w', chunksOf(new TextEncoder().encode('hello\n'))), 'INVALID_ARGUMENT');
    const full = await streamBytes(await env.service.exportDiff('p', 'v', { fromSnapshot: undefined, toSnapshot: 'a' }));
    await expectCode(env.service.importDiff('backup', 'w', chunksOf(full.subarray(0, full.length - 100))), 'INVALID_ARGUMENT', /ends/);
    const trailing = new Uint8Array(full.length + 1);
    trailing.set(full);
    await expectCode(env.service.importDiff('backup', 'w', chunksOf(trailing)), 'INVALID_ARGUMENT', /follow/);
    const outOfRange = full.slice();
    const firstRecord = full.indexOf(10) + 1;
    new DataView(outOfRange.buffer).setBigUint64(firstRecord + 1, BigInt(SIZE * 4));
    await expectCode(env.service.importDiff('backup', 'w', chunksOf(outOfRange)), 'INVALID_ARGUMENT', /past the end/);
    // A failed import-diff never creates its snapshot.
    expect(await env.service.listSnapshots('backup', 'w')).toEqual([]);
  });

  it('random histories round-trip through export-diff and import-diff', async () => {
    const env = await makeEnv();
    const m = new Model(env);
    await env.service.createPool('p');
    for (const seed of [1, 2, 3]) {
      const rng = new SeededRandom(seed);
      const src = `src${seed}`;
      const dst = `dst${seed}`;
      await m.createVolume('p', src, 4 * MiB);
      await m.createVolume('p', dst, 512);
      let last: string | undefined;
      for (let step = 0; step < 6; step++) {
        const size = m.expected('p', src).length;
        for (let i = rng.intBetween(1, 4); i > 0; i--) {
          const offset = rng.int(size / 512) * 512;
          const length = Math.min(size - offset, rng.intBetween(1, 512) * 512);
          if (rng.bool(0.7)) await m.write('p', src, offset, length);
          else await m.zero('p', src, offset, length);
        }
        if (rng.bool(0.3)) await m.resize('p', src, rng.intBetween(1, 8) * 512 * KiB);
        const snap = `s${step}`;
        await m.snapshot('p', src, snap);
        const bytes = await streamBytes(await env.service.exportDiff('p', src, { fromSnapshot: last, toSnapshot: snap }));
        await env.service.importDiff('p', dst, chunksOf(bytes, 64 * KiB + 3));
        m.contents.set(`p/${dst}@${snap}`, m.expected('p', src, snap).slice());
        m.contents.set(`p/${dst}`, m.expected('p', src, snap).slice());
        // Older snapshots can go on the source: the diffs stay incremental.
        if (last !== undefined && rng.bool(0.5)) await m.deleteSnapshot('p', src, last);
        last = snap;
      }
    }
    await m.verify();
  });
});
