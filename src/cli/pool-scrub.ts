/**
 * strata pool scrub: checks a dedup pool (docs/dedup.md) through POST /v1/pools/{pool}/scrub,
 * which answers when the scrub job has ended. Meanwhile the progress bar follows that job (found
 * in the job list: the request answers only at the end). Prints the report, and the volumes and
 * snapshots owning the layers it names; exits EXIT_SCRUB_PROBLEMS while problems remain.
 */
import { SCRUB_NOTICE_KINDS } from '../core/scrub-report.js';
import type { PoolScrubJson } from '../api/rest/scrub-schemas.js';
import { seg } from './remote/client.js';
import { checkName, clientOf, keyValues, parse, positionals, printJson, PROGRESS_OPTIONS, size, subcommand } from './remote/common.js';
import { EXIT } from './remote/exits.js';
import { JobFollower, whileFollowing } from './remote/job-follower.js';
import { ProgressBar } from './remote/progress-bar.js';

/** The exit status of a scrub that leaves problems (found and not repaired; notices aside). */
export const EXIT_SCRUB_PROBLEMS = EXIT.SCRUB_PROBLEMS;

export const scrub = subcommand(
  'scrub',
  "check a dedup pool's chunks, index and packs (and repair)",
  `Usage: strata pool scrub NAME [--repair] [-p|--no-progress]

Runs a scrub of a dedup pool as a job (see 'strata job list'): every pack is read and decoded,
every chunk hashed against its name, the index checked against the packs and the reference counts
against what holds the chunks (sealed layers, S3 object versions and parts). Prints what it found,
what it repaired, and what cannot be repaired with the volumes and snapshots that need it. A local
pool has chunks only for its S3 objects: those are scrubbed, and a local pool without objects is
refused. Without --repair nothing is changed.

Options:
  --repair         fix what can be fixed (an index entry pointed at a good copy, counts raised,
                   a damaged pack's good chunks moved out, ...; docs/dedup.md)
  -p, --progress   show the progress bar even when stderr is not a terminal
  --no-progress    never show it

Exit status: 0 clean (notices aside), ${EXIT_SCRUB_PROBLEMS} problems remain (found and not repaired), else as
other commands (1 error, 3 no such pool, 4 busy: a GC of the pool runs).
`,
  async (argv, con) => {
    const command = 'pool scrub';
    const args = parse(argv, command, [{ long: 'repair' }, ...PROGRESS_OPTIONS]);
    const [name] = positionals(args, command, ['NAME']) as [string];
    checkName(name, 'pool', command);
    const client = clientOf(args);
    const bar = new ProgressBar(con, ProgressBar.enabled(args), args.has('repair') ? 'scrubbing (repair)' : 'scrubbing', undefined);
    const r = await whileFollowing(client, bar, ProgressBar.enabled(args), new JobFollower('scrub', name), () =>
      client.json<PoolScrubJson>('POST', `/v1/pools/${seg(name)}/scrub`, `cannot scrub pool '${name}'`, { repair: args.has('repair') }),
    );
    bar.update(r.report.packBytes, r.report.packBytes);
    bar.finish();
    if (args.has('json')) printJson(con, r);
    else con.stdout(scrubSummary(r));
    return unresolvedProblems(r) > 0 ? EXIT_SCRUB_PROBLEMS : 0;
  },
);

/** Problems found and not repaired, notices aside. */
export function unresolvedProblems(r: PoolScrubJson): number {
  const byKind = r.report.problemsByKind as Record<string, number | undefined>;
  const notices = SCRUB_NOTICE_KINDS.reduce((sum, kind) => sum + (byKind[kind] ?? 0), 0);
  return r.report.problemCount - r.report.repaired - notices;
}

function scrubSummary(r: PoolScrubJson): string {
  const p = r.report;
  const unresolved = unresolvedProblems(r);
  const verdict = p.clean ? 'clean' : unresolved === 0 ? 'problems found and repaired' : `${unresolved} problems remain`;
  const rows: Array<readonly [string, string]> = [
    ['pool', `${r.pool} (job ${r.jobId}${p.repair ? ', repair' : ''})`],
    ['result', verdict],
    ['chunks', `${p.chunks} (${size(p.chunkBytes)})`],
    ['packs', `${p.packs} (${size(p.packBytes)})`],
    // Holders are sealed layers, S3 object versions and upload parts alike (a local pool's are all objects).
    ['chunk holders', `${p.holders} layers and objects (${p.references} chunk references)`],
    ['problems', `${p.problemCount}${kindsText(p.problemsByKind as Record<string, number>)}`],
    ['repaired', String(p.repaired)],
    ['unrecoverable', String(p.unrecoverable)],
  ];
  if (p.changedDuringScrub > 0) rows.push(['changed meanwhile', `${p.changedDuringScrub} (left for the next scrub)`]);
  let text = keyValues(rows);
  for (const problem of p.problems) {
    const state = problem.repaired ? 'repaired' : SCRUB_NOTICE_KINDS.includes(problem.kind) ? 'notice' : problem.kind === 'chunk-lost' ? 'unrecoverable' : 'not repaired';
    text += `${problem.kind} (${state}): ${problem.message}\n`;
  }
  if (p.problemsOmitted > 0) text += `... and ${p.problemsOmitted} more problems (counted above)\n`;
  for (const l of r.layers) {
    const owner = l.volume === null ? 'no volume (the layer is gone)' : l.snapshot !== null ? `snapshot ${r.pool}/${l.volume}@${l.snapshot}` : `volume ${r.pool}/${l.volume} (${l.role} layer)`;
    text += `affected: ${l.holder}: ${owner}\n`;
  }
  if (p.unrecoverable > 0) {
    text += 'Unrecoverable chunks: restore the affected volumes or snapshots from a backup, or delete them (docs/dedup.md).\n';
  } else if (unresolved > 0 && !p.repair) {
    text += `Run 'strata pool scrub ${r.pool} --repair' to fix what can be fixed.\n`;
  }
  return text;
}

function kindsText(byKind: Record<string, number>): string {
  const parts = Object.entries(byKind).map(([kind, n]) => `${kind} ${n}`);
  return parts.length === 0 ? '' : ` (${parts.join(', ')})`;
}
