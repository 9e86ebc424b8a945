/**
 * LocalChunkStore.put killed with SIGKILL: a child process (from the build in dist/) replaces one
 * object over and over, each generation a different fill byte, and is killed at a moment the
 * parent picks from events: the n-th write under the store's root (mid-write), or a put just
 * acknowledged. Afterwards the object must be one whole generation, no older than the last one
 * acknowledged: the old object or the new one, never a torn one. removeInterruptedPuts then
 * deletes the temporary files the kills left.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LOCAL_CHUNK_TEMP_FOLDER, LocalChunkStore } from '../../src/store/local-chunk-store.js';
import { tempDir } from '../support/tmp.js';
import { REPO_ROOT } from '../support/tools.js';

const MiB = 1024 * 1024;
const OBJECT_BYTES = 32 * MiB;
const DIST = path.join(REPO_ROOT, 'dist');
const built = fs.existsSync(path.join(DIST, 'src', 'store', 'local-chunk-store.js'));

/** argv: root, first generation. Prints "done <gen>" after each acknowledged put. */
const CHILD = `
import { LocalChunkStore } from ${JSON.stringify(path.join(DIST, 'src/store/local-chunk-store.js'))};
const [root, firstText] = process.argv.slice(1);
const store = new LocalChunkStore(root);
for (let gen = Number(firstText); ; gen++) {
  await store.put('obj', new Uint8Array(${OBJECT_BYTES}).fill(gen % 256));
  process.stdout.write('done ' + gen + '\\n');
}
`;

/** When to kill: at the n-th write event under the root, or at the n-th "done". */
type KillAt = { writes: number } | { acks: number };

/** Runs the child from generation `first` until killAt; returns the last generation acknowledged. */
function runUntilKilled(root: string, first: number, killAt: KillAt): Promise<number> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD, root, String(first)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let lastAck = first - 1;
  let acks = 0;
  let writes = 0;
  let stderr = '';
  let stdout = '';
  // The whole root: wherever the store writes, the n-th write is seen.
  const watcher = fs.watch(root, { recursive: true });
  const kill = () => child.kill('SIGKILL');
  watcher.on('change', (type) => {
    // Writes count once the first generation is in place, so there is an old object to keep.
    if (type === 'change' && acks > 0 && 'writes' in killAt && ++writes === killAt.writes) kill();
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    const lines = stdout.split('\n');
    stdout = lines.pop() ?? '';
    for (const line of lines) {
      lastAck = Number(line.slice('done '.length));
      acks++;
      if ('acks' in killAt && acks === killAt.acks) kill();
    }
  });
  return new Promise((resolve, reject) => {
    child.on('exit', (code, signal) => {
      watcher.close();
      if (signal === 'SIGKILL') resolve(lastAck);
      else reject(new Error(`the child exited (${code}) before it was killed: ${stderr}`));
    });
  });
}

/** The fill byte of a whole object; undefined when it is torn (bytes of two generations, or short). */
function wholeGeneration(data: Uint8Array): number | undefined {
  if (data.length !== OBJECT_BYTES) return undefined;
  const fill = data[0]!;
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).equals(Buffer.alloc(OBJECT_BYTES, fill)) ? fill : undefined;
}

describe.skipIf(!built)('LocalChunkStore: a put killed with SIGKILL', () => {
  it('leaves the old object or the new one, never a torn one, and only temporary files to remove', async () => {
    const root = tempDir();
    fs.mkdirSync(path.join(root, LOCAL_CHUNK_TEMP_FOLDER));
    const kills: KillAt[] = [{ writes: 1 }, { writes: 3 }, { writes: 9 }, { writes: 20 }, { acks: 1 }, { acks: 2 }, { writes: 5 }];
    let first = 1;
    let partialTemps = 0;
    for (const killAt of kills) {
      const lastAck = await runUntilKilled(root, first, killAt);
      const store = new LocalChunkStore(root);
      const data = await store.get('obj');
      expect(data, `after a kill at ${JSON.stringify(killAt)}`).toBeDefined();
      const gen = wholeGeneration(data!);
      expect(gen, `the object is torn after a kill at ${JSON.stringify(killAt)}`).toBeDefined();
      // The acknowledged generation, or the one being put when the kill came (fill bytes wrap at 256).
      expect([lastAck % 256, (lastAck + 1) % 256], `kill at ${JSON.stringify(killAt)}, last acknowledged ${lastAck}`).toContain(gen);
      const tempFolder = path.join(root, LOCAL_CHUNK_TEMP_FOLDER);
      for (const name of fs.readdirSync(tempFolder)) {
        if (fs.statSync(path.join(tempFolder, name)).size < OBJECT_BYTES) partialTemps++;
      }
      const removed = await store.removeInterruptedPuts();
      expect(fs.readdirSync(tempFolder)).toEqual([]);
      expect(removed.length).toBeLessThanOrEqual(1);
      expect((await store.list('')).keys).toEqual(['obj']);
      first = lastAck + 2; // the next child's generations differ from any left behind
    }
    // The kills did land mid-write: some left a temporary file shorter than the object.
    expect(partialTemps).toBeGreaterThan(0);
  });
});
