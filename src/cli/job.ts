/** strata job: list, info, watch and cancel the daemon's jobs (copy, flatten, ...). */
import type { Subcommand } from './command.js';
import { CliError } from './errors.js';
import { EXIT } from './remote/exits.js';
import { seg } from './remote/client.js';
import {
  PROGRESS_OPTIONS,
  clientOf,
  groupHelp,
  keyValues,
  parse,
  positionals,
  printJson,
  size,
  subcommand,
  table,
  waitForJob,
  wantsJson,
  type JobJson,
} from './remote/common.js';
import { ProgressBar } from './remote/progress-bar.js';

function percent(j: JobJson): string {
  if (j.totalBytes <= 0) return j.state === 'succeeded' ? '100%' : '-';
  return `${Math.floor((Math.min(j.doneBytes, j.totalBytes) / j.totalBytes) * 100)}%`;
}

/** "45% (450 MiB of 1 GiB)"; a total of 0 is unknown (an import from a stream): "579 MiB". */
function progressText(j: JobJson): string {
  if (j.totalBytes <= 0) return j.state === 'succeeded' ? `100% (${size(j.doneBytes)})` : size(j.doneBytes);
  return `${percent(j)} (${size(j.doneBytes)} of ${size(j.totalBytes)})`;
}

function jobDetails(j: JobJson): string {
  return keyValues([
    ['job', j.id],
    ['kind', j.kind],
    ['target', j.target],
    ['state', j.state],
    ['progress', progressText(j)],
    ['error', j.error === null ? '-' : `${j.error.message} [${j.error.code}]`],
    ['created', j.createdAt],
    ['finished', j.finishedAt ?? '-'],
  ]);
}

function jobIdArg(argv: readonly string[], command: string, extra: Parameters<typeof parse>[2] = []) {
  const args = parse(argv, command, extra);
  const [id] = positionals(args, command, ['JOB']) as [string];
  return { args, id };
}

const list = subcommand(
  'list',
  'list jobs',
  `Usage: strata job list [--running]

Lists the daemon's jobs (running and recently finished).

Options:
  --running   only queued and running jobs
`,
  async (argv, con) => {
    const command = 'job list';
    const args = parse(argv, command, [{ long: 'running' }]);
    positionals(args, command, []);
    let jobs = await clientOf(args).json<JobJson[]>('GET', '/v1/jobs', 'cannot list jobs');
    if (args.has('running')) jobs = jobs.filter((j) => j.state === 'queued' || j.state === 'running');
    if (wantsJson(args)) printJson(con, jobs);
    else con.stdout(table(['ID', 'KIND', 'TARGET', 'STATE', 'PROGRESS', 'CREATED'], jobs.map((j) => [j.id, j.kind, j.target, j.state, percent(j), j.createdAt])));
    return 0;
  },
);

const info = subcommand(
  'info',
  "show a job's state",
  `Usage: strata job info JOB
`,
  async (argv, con) => {
    const { args, id } = jobIdArg(argv, 'job info');
    const job = await clientOf(args).json<JobJson>('GET', `/v1/jobs/${seg(id)}`, `cannot show job '${id}'`);
    if (wantsJson(args)) printJson(con, job);
    else con.stdout(jobDetails(job));
    return 0;
  },
);

const watch = subcommand(
  'watch',
  'follow a job until it ends',
  `Usage: strata job watch JOB [-p]

Follows the job with a progress bar until it ends. Exit status 0 when it succeeded, 4 when it
was cancelled, and the failure's status otherwise.

Options:
  -p, --progress   show the progress bar even when stderr is not a terminal
  --no-progress    never show it
`,
  async (argv, con) => {
    const { args, id } = jobIdArg(argv, 'job watch', PROGRESS_OPTIONS);
    const client = clientOf(args);
    const what = `job '${id}'`;
    const job = await client.json<JobJson>('GET', `/v1/jobs/${seg(id)}`, `cannot watch ${what}`);
    const bar = new ProgressBar(con, ProgressBar.enabled(args), `${job.kind}`, job.totalBytes || undefined);
    const final = await waitForJob(client, job, bar, `${job.kind} ${job.target}`);
    if (wantsJson(args)) printJson(con, final);
    else con.stdout(`Job ${final.id} (${final.kind} ${final.target}) ${final.state}.\n`);
    return 0;
  },
);

const cancel = subcommand(
  'cancel',
  'cancel a running job',
  `Usage: strata job cancel JOB

Asks the daemon to cancel the job; a cancelled flatten leaves a valid, partly flattened clone,
a cancelled copy leaves nothing. Exit status 4 when the job had already ended (or ended before
the cancellation reached it): there was nothing to cancel.
`,
  async (argv, con) => {
    const { args, id } = jobIdArg(argv, 'job cancel');
    const what = `cannot cancel job '${id}'`;
    const hint = `'strata job info ${id}' shows how it ended`;
    let job: JobJson;
    try {
      job = await clientOf(args).json<JobJson>('DELETE', `/v1/jobs/${seg(id)}`, what);
    } catch (err) {
      if (err instanceof CliError && err.exitCode === EXIT.CONFLICT) throw new CliError(err.message, { hint, exitCode: err.exitCode, cause: err.cause });
      throw err;
    }
    if (job.state !== 'cancelled') {
      throw new CliError(`${what}: job ${job.id} ${job.state} before the cancellation reached it; nothing to cancel`, { hint, exitCode: EXIT.CONFLICT });
    }
    if (wantsJson(args)) printJson(con, job);
    else con.stdout(`Job ${job.id} cancelled.\n`);
    return 0;
  },
);

export const JOB_SUBCOMMANDS: readonly Subcommand[] = [list, info, watch, cancel];

export function jobHelp(): string {
  return groupHelp('job', "The daemon's long operations (copy, flatten, ...): list, follow, cancel.", JOB_SUBCOMMANDS);
}
