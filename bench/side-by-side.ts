/**
 * Runs the sides of one bench cell in an order rotated per run (runOrder), several runs each, prints
 * every run (so the spread is visible) and answers the medians and the load average seen.
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { loadAverage } from './load.js';
import { median } from './args.js';

export interface CellResult {
  /** Each side's values, in run order. */
  runs: Map<string, number[]>;
  medians: Map<string, number>;
  /** The 1-minute load average at the start and end of the cell. */
  loadRange: [number, number];
}

/**
 * `measure(side, run)` gives one value (higher is better, e.g. MB/s or IOPS) for one side in one
 * run; the sides' order rotates so none always meets the warmer or quieter machine, or runs first.
 */
export async function sideBySide(
  cell: string,
  sides: readonly string[],
  runs: number,
  measure: (side: string, run: number) => Promise<number> | number,
  unit: string,
): Promise<CellResult> {
  const values = new Map<string, number[]>(sides.map((s) => [s, []]));
  const loadStart = loadAverage();
  for (let run = 0; run < runs; run++) {
    const order = runOrder(sides, run, 0);
    for (const side of order) {
      const value = await measure(side, run);
      values.get(side)!.push(value);
      process.stderr.write(`  ${cell}, run ${run + 1}, ${side}: ${format(value)} ${unit} (load ${loadAverage().toFixed(1)})\n`);
    }
  }
  const medians = new Map([...values].map(([side, v]) => [side, median(v)]));
  process.stderr.write(`${cell}: ${[...values].map(([side, v]) => `${side} ${v.map(format).join('/')}`).join(', ')} ${unit}\n`);
  return { runs: values, medians, loadRange: [loadStart, loadAverage()] };
}

export function format(value: number): string {
  return value >= 100 ? value.toFixed(0) : value.toFixed(2);
}

/**
 * The order in which rep `rep` creates its sides: rotated by one per rep, so each side is created
 * first in turn (with the same build on two sides, the one created first has measured slower).
 */
export function creationOrder<T>(sides: readonly T[], rep: number): T[] {
  const shift = rep % sides.length;
  return [...sides.slice(shift), ...sides.slice(0, shift)];
}

/**
 * The order in which rep `rep`'s cell `cell` (a row, or 0) runs its sides: rotated by one per rep
 * and per cell, and once more every full rotation of the creation order (creationOrder), so that
 * over a multiple of the side count reps each side takes every place in the run equally often
 * (the side that runs first has measured slower, whichever build it was) and a side's place in
 * creation and its place in the run vary apart. (Reversing every other rep, as before, left the
 * middle one of three sides in the middle every time: never first.)
 */
export function runOrder<T>(sides: readonly T[], rep: number, cell: number): T[] {
  const shift = (rep + cell + Math.floor(rep / Math.max(1, sides.length))) % Math.max(1, sides.length);
  return [...sides.slice(shift), ...sides.slice(0, shift)];
}

/** Stops a side's server: `signal` to it, resolved once it has exited (at once if it already has). */
export async function stopServer(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill(signal);
  await exited;
}

/** A side's server and the files it was given (image copy, data folder, socket). */
export interface ServerFiles {
  child: ChildProcess;
  files: readonly string[];
}

/** Stops a side's server (waits for it to exit) and removes its files: the end of a side's rep. */
export async function removeServer(server: ServerFiles): Promise<void> {
  await stopServer(server.child);
  for (const file of server.files) rmSync(file, { recursive: true, force: true });
}
