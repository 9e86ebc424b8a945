/** The dedup bench's result table: one row per cell, its medians, ratio, target, every run and the load. */
import { median } from './args.js';
import { format, type CellResult } from './side-by-side.js';

export interface TableRow {
  cell: string;
  unit: string;
  strataSide: string;
  peerSide: string;
  /** The ratio the issue asks for; 0 for a control row, which has none. */
  target: number;
  result: CellResult;
}

export const TABLE_HEADER = [
  '| cell | unit | Strata (median) | peer (median) | Strata / peer | run by run (median) | target | runs (Strata; peer) | load avg |',
  '|---|---|---:|---:|---:|---:|---:|---|---:|',
];

export function tableLine(row: TableRow): string {
  const strata = row.result.medians.get(row.strataSide)!;
  const peer = row.result.medians.get(row.peerSide)!;
  const ratio = strata / peer;
  const strataRuns = row.result.runs.get(row.strataSide)!;
  const peerRuns = row.result.runs.get(row.peerSide)!;
  // Each run's two sides ran back to back, so their ratio cancels load that drifts over the cell.
  const pairedRatio = median(strataRuns.map((value, run) => value / peerRuns[run]!));
  const runs = `${strataRuns.map(format).join(', ')}; ${peerRuns.map(format).join(', ')}`;
  const [loadStart, loadEnd] = row.result.loadRange;
  const verdict = row.target === 0 || ratio >= row.target ? '' : ' **below**';
  const target = row.target === 0 ? '-' : row.target.toFixed(2);
  return `| ${row.cell} | ${row.unit} | ${format(strata)} | ${format(peer)} | ${ratio.toFixed(2)}${verdict} | ${pairedRatio.toFixed(2)} | ${target} | ${runs} | ${loadStart.toFixed(1)}-${loadEnd.toFixed(1)} |`;
}
