/**
 * The tables the side-by-side benches print: medians of every side with Strata / peer ratios, and
 * the CPU each side's serving process spent per GiB moved and per 100k requests. Pure functions
 * of the runs (tested in test/unit/bench-pieces.test.ts).
 */
import { median } from './args.js';
import { cpuCost, sumSamples, type CpuSample } from './cpu.js';

export interface Side {
  /** Key in the row maps. */
  name: string;
  /** Column heading. */
  label: string;
}

export interface RowRuns {
  name: string;
  /** Each side's values in run order (higher is better: IOPS, MB/s, ops/s). */
  runs: ReadonlyMap<string, readonly number[]>;
  /** Each side's CPU samples, one per run (absent: no CPU column for that side). */
  cpu?: ReadonlyMap<string, readonly CpuSample[]>;
}

/** A value as the tables print it: whole numbers from 100 up, two decimals below. */
export function formatValue(value: number): string {
  if (!Number.isFinite(value)) return '-';
  return Math.abs(value) >= 100 ? value.toFixed(0) : value.toFixed(2);
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined || !(b > 0) ? '-' : (a / b).toFixed(2);
}

/**
 * `| title | side A (unit) | ... | A / B | ... |`: each side's median per row, then `subject` over
 * every other side. Runs are medians of the values (upper middle for an even count).
 */
export function medianTable(title: string, sides: readonly Side[], subject: string, rows: readonly RowRuns[], unit: string): string[] {
  const peers = sides.filter((s) => s.name !== subject);
  const subjectLabel = sides.find((s) => s.name === subject)?.label ?? subject;
  const head = [...sides.map((s) => `${s.label} (${unit})`), ...peers.map((p) => `${subjectLabel} / ${p.label}`)];
  const lines = [`| ${title} | ${head.join(' | ')} |`, `|---|${head.map(() => '---:').join('|')}|`];
  for (const row of rows) {
    const medians = new Map(sides.map((s) => [s.name, row.runs.get(s.name)?.length ? median([...row.runs.get(s.name)!]) : undefined]));
    const cells = sides.map((s) => (medians.get(s.name) === undefined ? '-' : formatValue(medians.get(s.name)!)));
    const ratios = peers.map((p) => ratio(medians.get(subject), medians.get(p.name)));
    lines.push(`| ${row.name} | ${[...cells, ...ratios].join(' | ')} |`);
  }
  return lines;
}

/**
 * `| title | A CPU s/GiB | ... | A CPU s/100k req | ... | A / B per GiB | ... |`: each side's
 * serving-process CPU over all its runs of the row (total CPU / total work), then the subject's
 * per-GiB cost over each peer's (below 1: the subject spends less CPU for the same work).
 */
export function cpuTable(title: string, sides: readonly Side[], subject: string, rows: readonly RowRuns[]): string[] {
  const peers = sides.filter((s) => s.name !== subject);
  const subjectLabel = sides.find((s) => s.name === subject)?.label ?? subject;
  const head = [
    ...sides.map((s) => `${s.label} CPU s/GiB`),
    ...sides.map((s) => `${s.label} CPU s/100k req`),
    ...peers.map((p) => `CPU ${subjectLabel} / ${p.label}`),
  ];
  const lines = [`| ${title} | ${head.join(' | ')} |`, `|---|${head.map(() => '---:').join('|')}|`];
  for (const row of rows) {
    const costs = new Map(
      sides.map((s) => {
        const samples = row.cpu?.get(s.name);
        return [s.name, samples?.length ? cpuCost(sumSamples(samples)) : undefined];
      }),
    );
    const perGiB = sides.map((s) => (costs.get(s.name) === undefined ? '-' : costs.get(s.name)!.perGiB.toFixed(3)));
    const perReq = sides.map((s) => (costs.get(s.name) === undefined ? '-' : costs.get(s.name)!.per100kRequests.toFixed(2)));
    const ratios = peers.map((p) => ratio(costs.get(subject)?.perGiB, costs.get(p.name)?.perGiB));
    lines.push(`| ${row.name} | ${[...perGiB, ...perReq, ...ratios].join(' | ')} |`);
  }
  return lines;
}
