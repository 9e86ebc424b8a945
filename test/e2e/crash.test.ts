/**
 * Crash test: SIGKILL the daemon at random points during snapshot delete, flatten, import and
 * clone (12 kills), restart it, and check that no data was lost (every volume and snapshot still
 * reads what it read before; the interrupted operation either happened or did not), that the
 * catalog and the files agree (every file in the pool is in some volume's or snapshot's chain,
 * every file a chain names exists and passes `qemu-img check`), and that no orphan is left.
 *
 * STRATA_CRASH_SEED=<n> replays a run (the seed is printed with every failure).
 */
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STRATA_BIN, requireTool, runAsync } from '../support/tools.js';
import { makeTempDir, shmBase } from '../support/tmp.js';
import {
  applyToModel,
  assertBuilt,
  chainFiles,
  diffStream,
  expectCleanCheck,
  patternBytes,
  poolFiles,
  qemuCompare,
  startDaemon,
  writeRawImage,
  type Daemon,
  type DiffRecord,
} from './harness.js';

assertBuilt();

const MiB = 1 << 20;
const SIZE = 32 * MiB;
const KILLS = 12;
const OPS = ['snapshot-delete', 'flatten', 'import', 'clone'] as const;
/**
 * The window of the random delay before the kill, per operation (ms): about when it runs here
 * (the import goes through a CLI process, which takes ~200 ms to start sending).
 */
const DELAY_MS: Record<(typeof OPS)[number], [number, number]> = { 'snapshot-delete': [0, 200], flatten: [0, 80], import: [150, 550], clone: [0, 30] };

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

describe.skipIf(!requireTool('qemu-img'))('SIGKILL during snapshot delete, flatten, import and clone', () => {
  let tmp: { path: string; cleanup: () => void };
  const f = (name: string) => path.join(tmp.path, name);
  beforeAll(() => {
    tmp = makeTempDir(shmBase());
  });
  afterAll(() => tmp?.cleanup());

  it(`${KILLS} kills at random points: no data lost, catalog and files agree, no orphans`, async () => {
    const seed = Number(process.env['STRATA_CRASH_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
    const random = rng(seed);
    const where = (what: string) => `${what} (STRATA_CRASH_SEED=${seed})`;
    const dataDir = f('data');
    let d: Daemon = await startDaemon(dataDir);

    /** What each volume and snapshot must read; `maybe` ones may be absent after a crash. */
    const models = new Map<string, { data: Buffer; maybe: boolean }>();
    const base = writeRawImage(f('base.raw'), SIZE, [
      { offset: 0, data: patternBytes(8 * MiB, 1) },
      { offset: 12 * MiB, data: patternBytes(12 * MiB, 2) },
    ]);
    d.cliOk(['volume', 'import', f('base.raw'), 'base']);
    d.cliOk(['snap', 'create', 'base@gold']);
    d.cliOk(['snap', 'protect', 'base@gold']);
    models.set('base', { data: base, maybe: false });
    models.set('base@gold', { data: base, maybe: false });

    const importDiff = (volume: string, from: string | null, to: string | null, records: DiffRecord[]) =>
      d.cliOk(['volume', 'import-diff', '-', volume], { input: diffStream(SIZE, from, to, records) });

    const summary: string[] = [];
    for (let round = 0; round < KILLS; round++) {
      const op = OPS[round % OPS.length] as (typeof OPS)[number];
      const [minMs, maxMs] = DELAY_MS[op];
      const delayMs = minMs + Math.floor(random() * (maxMs - minMs));
      let pending: Promise<unknown> = Promise.resolve();
      const created: string[] = [];
      if (op === 'snapshot-delete') {
        // A volume with snapshots a <- b <- active, each layer holding data; delete 'a' (merged into 'b').
        const vol = `sd${round}`;
        d.cliOk(['volume', 'create', vol, String(SIZE)]);
        const ra: DiffRecord[] = [{ kind: 'd', offset: 0, data: patternBytes(20 * MiB, 100 + round) }];
        const rb: DiffRecord[] = [{ kind: 'd', offset: 4 * MiB, data: patternBytes(6 * MiB, 200 + round) }, { kind: 'z', offset: 11 * MiB, length: MiB }];
        const rc: DiffRecord[] = [{ kind: 'd', offset: 20 * MiB, data: patternBytes(2 * MiB, 300 + round) }];
        const ma = Buffer.alloc(SIZE);
        applyToModel(ma, ra);
        const mb = Buffer.from(ma);
        applyToModel(mb, rb);
        const mc = Buffer.from(mb);
        applyToModel(mc, rc);
        importDiff(vol, null, 'a', ra);
        importDiff(vol, 'a', 'b', rb);
        importDiff(vol, null, null, rc);
        models.set(vol, { data: mc, maybe: false });
        models.set(`${vol}@a`, { data: ma, maybe: true });
        models.set(`${vol}@b`, { data: mb, maybe: false });
        created.push(vol);
        pending = d.api('DELETE', `/v1/pools/default/volumes/${vol}/snapshots/a`).catch(() => undefined);
      } else if (op === 'flatten') {
        const vol = `fl${round}`;
        d.cliOk(['snap', 'clone', 'base@gold', vol]);
        const rw: DiffRecord[] = [{ kind: 'd', offset: 6 * MiB, data: patternBytes(4 * MiB, 400 + round) }, { kind: 'z', offset: 14 * MiB, length: 2 * MiB }];
        const m = Buffer.from(base);
        applyToModel(m, rw);
        importDiff(vol, null, null, rw);
        models.set(vol, { data: m, maybe: false });
        created.push(vol);
        pending = d.api('POST', `/v1/pools/default/volumes/${vol}/flatten`).catch(() => undefined);
      } else if (op === 'import') {
        const vol = `im${round}`;
        models.set(vol, { data: base, maybe: true });
        created.push(vol);
        pending = runAsync(process.execPath, [STRATA_BIN, 'volume', 'import', f('base.raw'), vol], { env: d.env() }).catch(() => undefined);
      } else {
        const vol = `cl${round}`;
        models.set(vol, { data: base, maybe: true });
        created.push(vol);
        pending = d.api('POST', '/v1/pools/default/volumes/base/snapshots/gold/clones', { body: { name: vol } }).catch(() => undefined);
      }
      await sleep(delayMs);
      await d.kill();
      await pending;

      d = await startDaemon(dataDir);
      // The volume layer's recovery line (the S3 object model logs a 'recovered' line of its own).
      const recoveryLine = /recovered .*intentsRolledBack=(\d+) intentsFinished=(\d+) orphansDeleted=(\d+) problems=(\d+)/;
      const recovered = d.logs().split('\n').map((line) => recoveryLine.exec(line)).filter((match) => match !== null).pop() ?? null;
      expect(recovered, where('recovery line')).not.toBeNull();
      expect(recovered?.[4], where(`recovery problems in round ${round}:\n${d.logs()}`)).toBe('0');
      summary.push(`${op} after ${delayMs} ms: rolled back ${recovered?.[1]}, finished ${recovered?.[2]}, orphans ${recovered?.[3]}`);

      // Every volume and snapshot reads what it must (the interrupted one: all or nothing). The
      // API is used here rather than the CLI, to keep the 12 rounds quick.
      type Vol = { name: string; location: string };
      type Snap = { name: string; location: string };
      const volumes = new Map<string, Vol>((await d.apiJson<Vol[]>('GET', '/v1/pools/default/volumes')).map((v) => [v.name, v]));
      const snapshots = new Map<string, Snap[]>();
      for (const name of volumes.keys()) snapshots.set(name, await d.apiJson<Snap[]>('GET', `/v1/pools/default/volumes/${name}/snapshots`));
      for (const [name, model] of [...models]) {
        const [vol, snap] = name.split('@') as [string, string | undefined];
        const exists = volumes.has(vol) && (snap === undefined || (snapshots.get(vol) ?? []).some((s) => s.name === snap));
        if (!exists) {
          expect(model.maybe, where(`${name} is gone after ${op} was killed at ${delayMs} ms`)).toBe(true);
          models.delete(name);
          continue;
        }
        const res = await d.api('GET', `/v1/pools/default/volumes/${vol}/content${snap === undefined ? '' : `?snapshot=${snap}`}`);
        expect(res.status, where(`export ${name}`)).toBe(200);
        const got = Buffer.from(await res.arrayBuffer());
        if (!got.equals(model.data)) {
          writeFileSync(f('model.raw'), model.data);
          writeFileSync(f('out.raw'), got);
          const cmp = qemuCompare(f('model.raw'), f('out.raw'));
          expect.fail(where(`${name} after ${op} was killed at ${delayMs} ms: ${cmp.stdout}${cmp.stderr}`));
        }
        model.maybe = false;
      }

      const target = created[0] as string;
      const landed =
        op === 'snapshot-delete'
          ? !(snapshots.get(target) ?? []).some((x) => x.name === 'a')
          : op === 'flatten'
            ? (await d.apiJson<{ parent: unknown }>('GET', `/v1/pools/default/volumes/${target}`)).parent === null
            : volumes.has(target);
      summary[summary.length - 1] += landed ? '; the operation had completed' : '; the operation had not completed';

      // Catalog and files agree; no orphans; every layer checks clean.
      const referenced = new Set<string>();
      for (const [name, v] of volumes) {
        for (const file of chainFiles(v.location)) referenced.add(file);
        for (const s of snapshots.get(name) ?? []) for (const file of chainFiles(s.location)) referenced.add(file);
      }
      expect(new Set(poolFiles(dataDir, 'default')), where(`pool files after ${op} killed at ${delayMs} ms`)).toEqual(referenced);
      for (const file of referenced) expectCleanCheck(file);

      // Keep the pool small: remove what this round made (deleting is exercised too).
      for (const vol of created) {
        if (!volumes.has(vol)) continue;
        await d.apiJson('DELETE', `/v1/pools/default/volumes/${vol}?force=true`, undefined, 204);
        for (const key of [...models.keys()]) if (key === vol || key.startsWith(`${vol}@`)) models.delete(key);
      }
    }
    expect((await d.stop()).code).toBe(0);
    console.log(`crash test (STRATA_CRASH_SEED=${seed}):\n  ${summary.join('\n  ')}`);
  });
});
