/**
 * The tables the side-by-side benches print: medians of every side with Strata / peer ratios, and
 * the CPU each side's serving process spent per GiB moved and per 100k requests, and the ratios of
 * runs paired by round. Pure functions of the runs (tested in test/unit/bench-pieces.test.ts).
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
  /**
   * The round of each of a side's runs (same index as `runs`): the sides' runs of one round ran
   * back to back, so their ratio is free of the machine's drift between rounds (pairedTable).
   */
  rounds?: ReadonlyMap<string, readonly number[]>;
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

/**
 * `| title | A / B | ... |`: for each peer, the median (upper middle, as medianTable's) of the
 * subject's ratio to that peer over the rounds both ran (RowRuns.rounds), and in how many of
 * those rounds the subject was ahead. On a
 * machine whose speed drifts (other work, a busy neighbour) two sides' medians can differ by the
 * drift alone; a round's runs ran within seconds of each other, so their ratio does not carry it.
 */
export function pairedTable(title: string, sides: readonly Side[], subject: string, rows: readonly RowRuns[]): string[] {
  const peers = sides.filter((s) => s.name !== subject);
  const subjectLabel = sides.find((s) => s.name === subject)?.label ?? subject;
  const head = peers.map((p) => `${subjectLabel} / ${p.label}: median, ahead in`);
  const lines = [`| ${title} | ${head.join(' | ')} |`, `|---|${head.map(() => '---:').join('|')}|`];
  for (const row of rows) {
    const cells = peers.map((peer) => {
      const ratios = pairedRatios(row, subject, peer.name);
      if (ratios.length === 0) return '-';
      const ahead = ratios.filter((r) => r > 1).length;
      return `${median(ratios).toFixed(2)}, ${ahead} of ${ratios.length}`;
    });
    lines.push(`| ${row.name} | ${cells.join(' | ')} |`);
  }
  return lines;
}

/** RowRuns.rounds of a bench in which every round runs every side once, in order: run i of each side is round i. */
export function roundsInOrder(runs: ReadonlyMap<string, readonly number[]>): Map<string, number[]> {
  return new Map([...runs].map(([side, values]) => [side, values.map((_, i) => i)]));
}

/** subject / peer for every round in which both ran once (a round with a side's run missing or repeated is left out). */
function pairedRatios(row: RowRuns, subject: string, peer: string): number[] {
  const byRound = (side: string): Map<number, number> | undefined => {
    const values = row.runs.get(side);
    const rounds = row.rounds?.get(side);
    if (values === undefined || rounds === undefined || rounds.length !== values.length) return undefined;
    const counts = new Map<number, number>();
    for (const round of rounds) counts.set(round, (counts.get(round) ?? 0) + 1);
    return new Map(rounds.flatMap((round, i) => (counts.get(round) === 1 ? [[round, values[i]!] as [number, number]] : [])));
  };
  const mine = byRound(subject);
  const theirs = byRound(peer);
  if (mine === undefined || theirs === undefined) return [];
  const ratios: number[] = [];
  for (const [round, value] of mine) {
    const other = theirs.get(round);
    if (other !== undefined && other > 0) ratios.push(value / other);
  }
  return ratios;
}
