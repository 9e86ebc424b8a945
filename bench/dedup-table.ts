/** The dedup bench's result table: one row per cell, its medians, ratio, target, every run and the load. */
import { format, type CellResult } from './side-by-side.js';

export interface TableRow {
  cell: string;
  unit: string;
  strataSide: string;
  peerSide: string;
  target: number;
  result: CellResult;
}

export const TABLE_HEADER = [
  '| cell | unit | Strata (median) | peer (median) | Strata / peer | target | runs (Strata; peer) | load avg |',
  '|---|---|---:|---:|---:|---:|---|---:|',
];

export function tableLine(row: TableRow): string {
  const strata = row.result.medians.get(row.strataSide)!;
  const peer = row.result.medians.get(row.peerSide)!;
  const ratio = strata / peer;
  const runs = `${row.result.runs.get(row.strataSide)!.map(format).join(', ')}; ${row.result.runs.get(row.peerSide)!.map(format).join(', ')}`;
  const [loadStart, loadEnd] = row.result.loadRange;
  const verdict = ratio >= row.target ? '' : ' **below**';
  return `| ${row.cell} | ${row.unit} | ${format(strata)} | ${format(peer)} | ${ratio.toFixed(2)}${verdict} | ${row.target.toFixed(2)} | ${runs} | ${loadStart.toFixed(1)}-${loadEnd.toFixed(1)} |`;
}
