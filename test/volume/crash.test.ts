/**
 * Crash consistency of the volume layer: a child process runs random operations (writes, snapshot
 * create/delete, rollback, clone, flatten, import, copy, resize, delete, qcow2 export) through
 * LocalVolumeService and is SIGKILLed at a random moment; then recover() runs here and:
 *
 *   - recover() reports no problem, leaves no intent and no running job;
 *   - the pool folders hold exactly the layer files the catalog references (no orphan, none missing);
 *   - qemu-img check is clean on every layer file (leaks are allowed only in the layer a guest
 *     write was interrupted in: the engine's own crash contract; they are repaired before going on);
 *   - every volume and snapshot reads exactly what the journal says: the interrupted operation
 *     either happened entirely or not at all (an interrupted guest write: each sector old or new);
 *   - at the end of each seed, qemu-img compare agrees with the model for every volume and snapshot.
 *
 * Then the child is started again on the same data folder, for several rounds per seed.
 *
 * The child runs the current sources, transpiled with the repository's TypeScript into a scratch
 * folder under node_modules/.cache (as test/hostile does): no build needed.
 * More seeds: VOLUME_CRASH_SEEDS=50; other seeds: VOLUME_CRASH_SEED_BASE=5000; one seed:
 * VOLUME_CRASH_SEED=1003. Time budget: VOLUME_CRASH_BUDGET_MS (default 75 s; at least 3 seeds run).
 */
import { spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LevelCatalogStore } from '../../src/meta/level-catalog.js';
import { LocalVolumeService } from '../../src/volume/index.js';
import { SeededRandom } from '../../src/store/seeded-random.js';
import { qemuImg, REPO_ROOT, requireTool } from '../support/tools.js';
import { makeTempDir, shmBase } from '../support/tmp.js';
import { CRASH_MAX_CHAIN_DEPTH, type CrashOp, type JournalEntry } from './crash-ops.js';
import { collect, qemuCompare } from './helpers.js';
import { pattern, sparseImage } from './patterns.js';

const SEEDS = Number(process.env.VOLUME_CRASH_SEEDS ?? 10);
const SEED_BASE = Number(process.env.VOLUME_CRASH_SEED_BASE ?? 1000);
const ONLY_SEED = process.env.VOLUME_CRASH_SEED === undefined ? undefined : Number(process.env.VOLUME_CRASH_SEED);
const BUDGET_MS = Number(process.env.VOLUME_CRASH_BUDGET_MS ?? 75_000);
const ROUNDS = 3;
const MIN_SEEDS = 3;
/** Volumes and snapshots compared with qemu-img at the end of each seed. */
const ORACLE_SAMPLE = 8;

// ---------------------------------------------------------------------------------------------
// Building the child

const SOURCE_DIRS = ['src', 'formats'];
const CHILD_FILES = ['test/volume/crash-child.ts', 'test/volume/patterns.ts', 'test/volume/crash-ops.ts'];

function listTs(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listTs(full));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) out.push(full);
  }
  return out;
}

function buildChild(): { childPath: string; cleanup: () => void } {
  const outDir = path.join(REPO_ROOT, 'node_modules', '.cache', `strata-volume-crash-${process.pid}-${Date.now()}`);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(path.join(outDir, 'package.json'), '{"type":"module"}\n');
  const files = [...SOURCE_DIRS.flatMap((d) => listTs(path.join(REPO_ROOT, d))), ...CHILD_FILES.map((f) => path.join(REPO_ROOT, f))];
  for (const file of files) {
    const rel = path.relative(REPO_ROOT, file);
    const { outputText } = ts.transpileModule(readFileSync(file, 'utf8'), {
      fileName: rel,
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    });
    const target = path.join(outDir, rel.replace(/\.ts$/, '.js'));
    mkdirSync(path.dirname(target), { recursive: true });
    writeFileSync(target, outputText);
  }
  return { childPath: path.join(outDir, 'test', 'volume', 'crash-child.js'), cleanup: () => rmSync(outDir, { recursive: true, force: true }) };
}

// ---------------------------------------------------------------------------------------------
// The model: "pool/vol" and "pool/vol@snap" -> bytes

type State = Map<string, Uint8Array>;

function cloneState(state: State): State {
  return new Map([...state].map(([k, v]) => [k, v.slice()]));
}

function volKey(pool: string, vol: string): string {
  return `${pool}/${vol}`;
}

function need(state: State, key: string): Uint8Array {
  const value = state.get(key);
  if (!value) throw new Error(`model: ${key} does not exist`);
  return value;
}

/** What the operation does to the model when it completes. */
function applyOp(state: State, op: CrashOp): void {
  const key = volKey(op.pool, op.vol);
  switch (op.op) {
    case 'create':
      state.set(key, new Uint8Array(op.sizeBytes));
      return;
    case 'write':
      need(state, key).set(pattern(op.length, op.seed), op.offset);
      return;
    case 'snapshot':
      state.set(`${key}@${op.snap}`, need(state, key).slice());
      return;
    case 'deleteSnapshot':
      state.delete(`${key}@${op.snap}`);
      return;
    case 'rollback':
      state.set(key, need(state, `${key}@${op.snap}`).slice());
      return;
    case 'clone':
      state.set(volKey(op.destPool, op.dest), need(state, `${key}@${op.snap}`).slice());
      return;
    case 'import':
      state.set(key, sparseImage(op.sizeBytes, op.seed));
      return;
    case 'copy':
      state.set(volKey(op.destPool, op.dest), need(state, key).slice());
      return;
    case 'deleteVolume':
      for (const k of [...state.keys()]) if (k === key || k.startsWith(`${key}@`)) state.delete(k);
      return;
    case 'resize': {
      const next = new Uint8Array(op.sizeBytes);
      const old = need(state, key);
      next.set(old.subarray(0, Math.min(old.length, op.sizeBytes)));
      state.set(key, next);
      return;
    }
    case 'unprotect':
    case 'flatten':
    case 'exportQcow2':
      return;
  }
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));
}

/** Each 512-byte sector of actual equals the same sector of a or of b. */
function sectorMix(actual: Uint8Array, a: Uint8Array, b: Uint8Array): boolean {
  if (actual.length !== a.length || actual.length !== b.length) return false;
  for (let pos = 0; pos < actual.length; pos += 512) {
    const end = Math.min(actual.length, pos + 512);
    const s = actual.subarray(pos, end);
    if (!equalBytes(s, a.subarray(pos, end)) && !equalBytes(s, b.subarray(pos, end))) return false;
  }
  return true;
}

function describeMismatch(actual: State, expected: State): string {
  const keys = [...new Set([...actual.keys(), ...expected.keys()])].sort();
  const lines: string[] = [];
  for (const key of keys) {
    const a = actual.get(key);
    const e = expected.get(key);
    if (!a) lines.push(`${key}: missing`);
    else if (!e) lines.push(`${key}: unexpected`);
    else if (!equalBytes(a, e)) {
      let at = 0;
      while (at < Math.min(a.length, e.length) && a[at] === e[at]) at++;
      lines.push(`${key}: differs at ${at} (length ${a.length}, expected ${e.length})`);
    }
  }
  return lines.join('\n') || '(no difference)';
}

/** Whether actual is what `expected` says, allowing an interrupted write's sectors to be old or new. */
function matches(actual: State, expected: State, before: State, pending: CrashOp | undefined): boolean {
  if (actual.size !== expected.size) return false;
  for (const [key, value] of expected) {
    const got = actual.get(key);
    if (!got) return false;
    if (equalBytes(got, value)) continue;
    if (pending?.op === 'write' && key === volKey(pending.pool, pending.vol) && sectorMix(got, need(before, key), value)) continue;
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// One seed

interface Stats {
  kills: number;
  pendingByOp: Map<string, number>;
  opsCompleted: number;
}

async function readAll(service: LocalVolumeService): Promise<State> {
  const out: State = new Map();
  for (const pool of await service.listPools()) {
    for (const vol of await service.listVolumes(pool.name)) {
      out.set(volKey(pool.name, vol.name), await collect((await service.exportVolume(pool.name, vol.name, { format: 'raw' })).stream));
      for (const snap of await service.listSnapshots(pool.name, vol.name)) {
        const { stream } = await service.exportVolume(pool.name, vol.name, { format: 'raw', snapshot: snap.name });
        out.set(`${volKey(pool.name, vol.name)}@${snap.name}`, await collect(stream));
      }
    }
  }
  return out;
}

async function runChild(childPath: string, args: string[], killAfterMs: number): Promise<{ killed: boolean; stderr: string }> {
  const child = spawn(process.execPath, [childPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  const ready = new Promise<void>((resolve) => {
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (stdout.includes('ready\n')) resolve();
    });
  });
  const first = await Promise.race([ready.then(() => 'ready' as const), exited.then(() => 'exited' as const)]);
  if (first === 'exited') return { killed: false, stderr };
  await new Promise((resolve) => setTimeout(resolve, killAfterMs));
  const killed = child.kill('SIGKILL');
  const result = await exited;
  return { killed: killed && result.signal === 'SIGKILL', stderr };
}

async function runSeed(seed: number, childPath: string, stats: Stats): Promise<void> {
  const tmp = makeTempDir(shmBase());
  const dataDir = path.join(tmp.path, 'data');
  const journalPath = path.join(tmp.path, 'journal.jsonl');
  mkdirSync(dataDir);
  const rng = new SeededRandom(seed);
  let model: State = new Map();
  let consumed = 0;
  let failed = true;
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const killAfterMs = rng.intBetween(30, 900);
      const where = `seed ${seed} round ${round} (kill after ${killAfterMs} ms; data ${tmp.path})`;
      const t0 = Date.now();
      const child = await runChild(childPath, [dataDir, String(seed * 100 + round), journalPath, String(round * 100_000)], killAfterMs);
      if (!child.killed) throw new Error(`${where}: the child exited by itself:\n${child.stderr}`);
      stats.kills++;

      // Replay the journal.
      let text = existsSync(journalPath) ? readFileSync(journalPath, 'utf8') : '';
      if (text !== '' && !text.endsWith('\n')) {
        // A torn last line (its operation had not started): end it, so the next child starts a new line.
        appendFileSync(journalPath, '\n');
        text += '\n';
      }
      const lines = text.split('\n');
      const fresh = lines.slice(consumed);
      consumed = lines.length - 1; // the last element is the '' after the final newline
      let pending: CrashOp | undefined;
      for (const line of fresh) {
        if (line === '') continue;
        let entry: JournalEntry;
        try {
          entry = JSON.parse(line) as JournalEntry;
        } catch {
          continue; // a torn last line: the operation had not started
        }
        if (entry.phase === 'begin') pending = entry.op;
        else if (entry.phase === 'end') {
          applyOp(model, pending!);
          stats.opsCompleted++;
          pending = undefined;
        } else pending = undefined;
      }
      const pendingKey = pending?.op ?? '(between operations)';
      stats.pendingByOp.set(pendingKey, (stats.pendingByOp.get(pendingKey) ?? 0) + 1);

      // Recover here, then judge.
      const catalog = await LevelCatalogStore.open(path.join(dataDir, 'catalog'));
      const service = new LocalVolumeService(catalog, dataDir, { maxChainDepth: CRASH_MAX_CHAIN_DEPTH });
      try {
        const report = await service.recover();
        expect(report.problems, where).toEqual([]);
        expect(await service.catalog.intents.all(), where).toEqual([]);
        expect(await service.catalog.reservations.all(), where).toEqual([]);
        expect((await service.listJobs()).filter((j) => j.state === 'running' || j.state === 'queued'), where).toEqual([]);

        const layers = await service.catalog.layers.all();
        const files = readdirSync(path.join(dataDir, 'pools')).flatMap((pool) =>
          readdirSync(path.join(dataDir, 'pools', pool)).map((f) => `${pool}/${f}`),
        );
        expect(files.sort(), `${where}: files vs catalog`).toEqual(layers.map((l) => `${l.pool}/${l.fileName}`).sort());

        const writtenLayer =
          pending?.op === 'write'
            ? (await service.volumeInfo(pending.pool, pending.vol).catch(() => undefined))?.location
            : undefined;
        for (const layer of layers) {
          const file = path.join(dataDir, 'pools', layer.pool, layer.fileName);
          const check = qemuImg(['check', '-U', file]);
          if (check.code === 3 && file === writtenLayer) {
            // Leaks from the interrupted guest write (allowed by the engine's contract): repair them.
            expect(qemuImg(['check', '-r', 'leaks', file]).code, `${where}: repair ${file}`).toBe(0);
            continue;
          }
          expect(check.code, `${where}: qemu-img check ${file} (${pending?.op ?? 'no op'} pending)\n${check.stdout}${check.stderr}`).toBe(0);
        }

        const t1 = Date.now();
        const actual = await readAll(service);
        if (process.env.VOLUME_CRASH_VERBOSE) process.stderr.write(`${where}: child ${t1 - t0} ms incl. checks, read ${Date.now() - t1} ms, ${layers.length} layers, ${actual.size} objects\n`);
        const before = model;
        const after = cloneState(model);
        if (pending) applyOp(after, pending);
        if (matches(actual, after, before, pending)) model = cloneState(actual);
        else if (matches(actual, before, before, pending)) model = cloneState(actual);
        else {
          throw new Error(
            `${where}: after recovery the volumes read neither the state before nor after ${JSON.stringify(pending)}\n` +
              `vs before:\n${describeMismatch(actual, before)}\nvs after:\n${describeMismatch(actual, after)}`,
          );
        }

        if (round === ROUNDS - 1) {
          // The oracle: qemu-img reads the layer chains as the model says (a sample: each costs two processes).
          const scratch = path.join(tmp.path, 'scratch');
          mkdirSync(scratch, { recursive: true });
          const keys = [...model.keys()].sort();
          const sample = keys.length <= ORACLE_SAMPLE ? keys : Array.from({ length: ORACLE_SAMPLE }, () => keys.splice(rng.int(keys.length), 1)[0]!);
          for (const key of sample) {
            const expected = need(model, key);
            const [poolVol, snap] = key.split('@') as [string, string | undefined];
            const [pool, vol] = poolVol.split('/') as [string, string];
            const layerPath =
              snap === undefined
                ? (await service.volumeInfo(pool, vol)).location!
                : (await service.snapshotInfo(pool, vol, snap)).location!;
            qemuCompare(layerPath, expected, scratch, `${where}: ${key}`);
          }
        }
      } finally {
        await service.close();
        await catalog.close();
      }
    }
    failed = false;
  } finally {
    if (!failed) tmp.cleanup();
    else process.stderr.write(`volume crash test: keeping ${tmp.path} for inspection\n`);
  }
}

// ---------------------------------------------------------------------------------------------

const seeds = ONLY_SEED !== undefined ? [ONLY_SEED] : Array.from({ length: SEEDS }, (_, i) => SEED_BASE + i);

describe.skipIf(!requireTool('qemu-img'))('volume layer: SIGKILL at random points, then recover()', () => {
  let build: { childPath: string; cleanup: () => void } | undefined;
  const stats: Stats = { kills: 0, pendingByOp: new Map(), opsCompleted: 0 };
  const started = Date.now();
  let seedsRun = 0;

  beforeAll(() => {
    build = buildChild();
  });
  afterAll(() => {
    build?.cleanup();
    const pending = [...stats.pendingByOp].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`);
    process.stderr.write(
      `volume crash test: ${seedsRun} seeds, ${stats.kills} kills, ${stats.opsCompleted} operations completed; ` +
        `interrupted: ${pending.join(', ')}\n`,
    );
  });

  it.each(seeds)('seed %i', async (seed) => {
    if (seedsRun >= MIN_SEEDS && Date.now() - started > BUDGET_MS) return; // time budget spent
    seedsRun++;
    await runSeed(seed, build!.childPath, stats);
  });

  it('kills landed inside operations', () => {
    const inside = stats.kills - (stats.pendingByOp.get('(between operations)') ?? 0);
    expect(stats.kills).toBeGreaterThan(0);
    expect(inside).toBeGreaterThan(0);
  });
});
