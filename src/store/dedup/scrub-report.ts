/**
 * Building a scrub's report (the types are in src/core/scrub-report.ts, which ChunkedPools.scrub
 * returns): an empty report, and recording a problem in it.
 */
import { SCRUB_NOTICE_KINDS, type ScrubProblem, type ScrubReport } from '../../core/scrub-report.js';

export {
  SCRUB_NOTICE_KINDS,
  SCRUB_PROBLEM_KINDS,
  type ScrubProblem,
  type ScrubProblemKind,
  type ScrubProgress,
  type ScrubReport,
} from '../../core/scrub-report.js';

export const SCRUB_PROBLEMS_MAX_DEFAULT = 100;

export function emptyScrubReport(repair: boolean): ScrubReport {
  return {
    repair,
    clean: true,
    chunks: 0,
    chunkBytes: 0,
    packs: 0,
    packBytes: 0,
    holders: 0,
    references: 0,
    problemCount: 0,
    repaired: 0,
    unrecoverable: 0,
    changedDuringScrub: 0,
    problemsByKind: {},
    problems: [],
    problemsOmitted: 0,
  };
}

/** Adds a problem to the report: counted always, listed while the list has room. */
export function recordProblem(report: ScrubReport, problemsMax: number, problem: ScrubProblem): void {
  if (!SCRUB_NOTICE_KINDS.includes(problem.kind)) report.clean = false;
  report.problemCount++;
  if (problem.repaired) report.repaired++;
  if (problem.kind === 'chunk-lost') report.unrecoverable++;
  report.problemsByKind[problem.kind] = (report.problemsByKind[problem.kind] ?? 0) + 1;
  if (report.problems.length < problemsMax) report.problems.push(problem);
  else report.problemsOmitted++;
}
