/**
 * The plan of one interleaved guest run of bench/guest-bench.ts (which row runs on which disk, in
 * what order) and the check that the guest's disks are the sides the bench attached.
 */
import type { CpuSample } from './cpu.js';
import type { Side } from './report.js';
import { runOrder } from './side-by-side.js';

/** Seconds of the warm-up job on each disk (fills metadata caches, compiles Strata's paths). */
export const WARM_UP_SECONDS = 2;
/** The warm-up's server must have used at least this much CPU for the disk mapping check to count. */
const MAPPING_MIN_CPU_SECONDS = 0.02;

/** One fio job of a guest run: row `row` on disk `disk` (an index into the run's disks). */
export interface GuestStep {
  row: number;
  disk: number;
  /** The round it belongs to, counted across runs: a round's steps of a row ran back to back (pairedTable pairs them). */
  round: number;
}

/** One step's outcome. */
export interface GuestStepResult extends GuestStep {
  iops: number;
  sample: CpuSample;
  /** Shares of the step's wall time: the guest's vCPU ran, and waited for a CPU; the serving process waited for one (all its threads); the vCPU's write calls (its kicks). */
  shares?: { vcpuRan: number; vcpuWaited: number; serverWaited: number; vcpuWriteCalls: number };
}

/**
 * The steps of one guest run: `reps` rounds, each running every row on every disk, the disks'
 * order rotated per round and row (runOrder, continuing across runs through `firstRep`), so each
 * disk takes every place equally often and a cell's samples spread over the whole boot.
 */
export function guestPlan(rowCount: number, diskCount: number, reps: number, firstRep: number): GuestStep[] {
  const disks = Array.from({ length: diskCount }, (_, k) => k);
  const steps: GuestStep[] = [];
  for (let rep = 0; rep < reps; rep++) {
    for (let row = 0; row < rowCount; row++) {
      for (const disk of runOrder(disks, firstRep + rep, row)) steps.push({ row, disk, round: firstRep + rep });
    }
  }
  return steps;
}

/** The warm-up of disk `disk` must have been served by its own server: the busiest, and busy. */
export function mappingError(disks: readonly Side[], disk: number, cpuDeltaSeconds: readonly number[]): Error | undefined {
  const own = cpuDeltaSeconds[disk]!;
  const busiest = Math.max(...cpuDeltaSeconds);
  if (own >= MAPPING_MIN_CPU_SECONDS && own === busiest) return undefined;
  const spent = disks.map((b, k) => `${b.label} ${cpuDeltaSeconds[k]!.toFixed(2)} s`).join(', ');
  return new Error(
    `disk ${disk} of the guest was expected to be ${disks[disk]!.label}'s, but during its warm-up the servers used ${spent} of CPU: ` +
      'the guest saw its disks in another order than the bench attached them (see guestScript: disks sorted by PCI path)',
  );
}
