/**
 * A CPU load generator for "busy machine" bench runs: N processes that hash 1 MiB buffers in a
 * loop (SHA-256: steady, cache-friendly CPU work with no I/O), started before a cell and stopped
 * after it, so both sides of the cell run under the same load.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { loadavg } from 'node:os';

const HASH_LOOP = "const {createHash}=require('node:crypto');const b=Buffer.alloc(1<<20,7);for(;;)createHash('sha256').update(b).digest();";

export interface LoadGenerator {
  readonly processes: number;
  stop(): Promise<void>;
}

/** Starts `processes` busy hashing processes (0: none). */
export function startLoad(processes: number): LoadGenerator {
  const children: ChildProcess[] = [];
  for (let i = 0; i < processes; i++) children.push(spawn(process.execPath, ['-e', HASH_LOOP], { stdio: 'ignore' }));
  return {
    processes,
    stop: async () => {
      await Promise.all(
        children.map(
          (child) =>
            new Promise<void>((resolve) => {
              if (child.exitCode !== null || child.signalCode !== null) return resolve();
              child.once('exit', () => resolve());
              child.kill('SIGKILL');
            }),
        ),
      );
    },
  };
}

/** The 1-minute load average, for the tables ("measured at load N"). */
export function loadAverage(): number {
  return loadavg()[0]!;
}

/** The footer phrase every bench prints: the load it started and the load average it saw. */
export function loadNote(processes: number, loadAtStart: number): string {
  return `load generator ${processes} process(es); 1-min load average ${loadAtStart.toFixed(2)} at the start, ${loadAverage().toFixed(2)} at the end`;
}

/**
 * The end of a peer bench: the load generator stopped, the servers asked to exit (a moment
 * given to them to let go of their files), their scratch folder removed.
 */
export async function endBench(load: LoadGenerator, children: readonly ChildProcess[], scratchDir: string): Promise<void> {
  await load.stop();
  for (const child of children) child.kill('SIGTERM');
  await new Promise((resolve) => setTimeout(resolve, 300));
  rmSync(scratchDir, { recursive: true, force: true });
}
