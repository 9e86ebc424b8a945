/**
 * The strata command line. bin/strata.js calls main(process.argv.slice(2)) and exits with the
 * status it resolves to. Errors are reported as one line on stderr:
 *   strata: <what was wrong> (<what to do>)
 * with the StorageError code in brackets when there is one, and with --json also as a JSON object
 * on stdout (errors.ts failureJson). For `img`, usage mistakes and failures exit 1 unless a
 * subcommand defines its own statuses (check, compare, io); strata itself and the daemon commands
 * (serve, status, pool, volume, snap, group, trash, job) use the statuses in remote/exits.ts.
 */
import { wantsHelp } from './args.js';
import type { Subcommand } from './command.js';
import { strataVersion } from '../core/version.js';
import { UsageError, describeFailure, failureJson, failureLine } from './errors.js';
import { GROUP_SUBCOMMANDS, groupCommandHelp } from './group.js';
import { IMG_SUBCOMMANDS, imgHelp } from './img/index.js';
import { JOB_SUBCOMMANDS, jobHelp } from './job.js';
import { processConsole, type Console } from './output.js';
import { POOL_SUBCOMMANDS, poolHelp } from './pool.js';
import { QOS_SUBCOMMANDS, qosHelp } from './qos.js';
import { EXIT } from './remote/exits.js';
import { SERVE_HELP, runServe } from './serve.js';
import { SNAP_SUBCOMMANDS, snapHelp } from './snap.js';
import { STATUS_HELP, runStatus } from './status.js';
import { TRASH_SUBCOMMANDS, trashHelp } from './trash.js';
import { USER_SUBCOMMANDS, userHelp } from './user.js';
import { BUCKET_SUBCOMMANDS, bucketHelp } from './bucket.js';
import { VOLUME_SUBCOMMANDS, volumeHelp } from './volume.js';

interface CommandGroup {
  name: string;
  summary: string;
  help: () => string;
  subcommands: readonly Subcommand[];
  /** A command without subcommands ("strata status") runs this instead. */
  run?: (argv: string[], con: Console) => Promise<number>;
  /** Exit status of usage errors (the daemon commands use 2; `img` keeps qemu-img's 1). */
  usageExitCode?: number;
  /** With --json, errors are also printed as a JSON object on stdout (not for img: qemu-img's JSON prints none). */
  jsonErrors?: boolean;
}

const GROUPS: readonly CommandGroup[] = [
  { name: 'serve', summary: 'run the storage daemon', help: () => SERVE_HELP, subcommands: [], run: runServe, usageExitCode: EXIT.USAGE },
  { name: 'status', summary: 'show whether the daemon is up and what it holds', help: () => STATUS_HELP, subcommands: [], run: runStatus, usageExitCode: EXIT.USAGE, jsonErrors: true },
  { name: 'pool', summary: 'create, list, inspect and delete pools', help: poolHelp, subcommands: POOL_SUBCOMMANDS, usageExitCode: EXIT.USAGE, jsonErrors: true },
  { name: 'volume', summary: 'volumes: create, resize, copy, import/export, flatten, diff', help: volumeHelp, subcommands: VOLUME_SUBCOMMANDS, usageExitCode: EXIT.USAGE, jsonErrors: true },
  { name: 'snap', summary: 'snapshots: create, rollback, protect, clone, delete', help: snapHelp, subcommands: SNAP_SUBCOMMANDS, usageExitCode: EXIT.USAGE, jsonErrors: true },
  { name: 'group', summary: 'consistency groups and their group snapshots', help: groupCommandHelp, subcommands: GROUP_SUBCOMMANDS, usageExitCode: EXIT.USAGE, jsonErrors: true },
  { name: 'trash', summary: 'deleted volumes: list, restore, purge', help: trashHelp, subcommands: TRASH_SUBCOMMANDS, usageExitCode: EXIT.USAGE, jsonErrors: true },
  { name: 'job', summary: "follow and cancel the daemon's jobs", help: jobHelp, subcommands: JOB_SUBCOMMANDS, usageExitCode: EXIT.USAGE, jsonErrors: true },
  { name: 'qos', summary: 'QoS policies (volume and pool limits: volume qos, pool qos)', help: qosHelp, subcommands: QOS_SUBCOMMANDS, usageExitCode: EXIT.USAGE, jsonErrors: true },
  { name: 'user', summary: 'S3 users and their access keys', help: userHelp, subcommands: USER_SUBCOMMANDS, usageExitCode: EXIT.USAGE, jsonErrors: true },
  { name: 'bucket', summary: 'S3 buckets: list, info, du', help: bucketHelp, subcommands: BUCKET_SUBCOMMANDS, usageExitCode: EXIT.USAGE, jsonErrors: true },
  { name: 'img', summary: 'offline image tools (qemu-img and qemu-io work-alikes)', help: imgHelp, subcommands: IMG_SUBCOMMANDS },
];

function mainHelp(): string {
  const width = Math.max(...GROUPS.map((g) => g.name.length));
  return [
    'Usage: strata <command> [<subcommand>] [options] ...',
    '       strata --version',
    '',
    'Strata: thin qcow2 volumes, copy-on-write snapshots and clones.',
    '',
    'Commands:',
    ...GROUPS.map((g) => `  ${g.name.padEnd(width)}  ${g.summary}`),
    '',
    "Run 'strata <command> --help' for a command's subcommands, and",
    "'strata <command> <subcommand> --help' for its options.",
    '',
  ].join('\n');
}

async function runGroup(group: CommandGroup, argv: string[], con: Console): Promise<number> {
  if (group.run !== undefined) {
    if (wantsHelp(argv)) {
      con.stdout(group.help());
      return 0;
    }
    return group.run(argv, con);
  }
  const [subName, ...rest] = argv;
  if (subName === undefined) {
    throw new UsageError(`${group.name}: missing subcommand`, `see 'strata ${group.name} --help'`);
  }
  if (subName === '--help' || subName === '-h' || subName === 'help') {
    const target = subName === 'help' ? rest[0] : undefined;
    const sub = target === undefined ? undefined : group.subcommands.find((s) => s.name === target);
    con.stdout(sub ? sub.help : group.help());
    return 0;
  }
  const sub = group.subcommands.find((s) => s.name === subName);
  if (sub === undefined) {
    const names = group.subcommands.map((s) => s.name).join(', ');
    throw new UsageError(`${group.name}: unknown subcommand '${subName}'`, `available: ${names}; see 'strata ${group.name} --help'`);
  }
  if (wantsHelp(rest) && sub.answersHelp !== true) {
    con.stdout(sub.help);
    return 0;
  }
  return sub.run(rest, con);
}

/** True when --json comes before any "--". */
function wantsJsonOutput(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  return (end < 0 ? argv : argv.slice(0, end)).includes('--json');
}

export async function main(argv: string[], con: Console = processConsole()): Promise<number> {
  let group: CommandGroup | undefined;
  try {
    const [command, ...rest] = argv;
    if (command === undefined) {
      con.stderr(mainHelp());
      throw new UsageError('missing command', "see 'strata --help'");
    }
    if (command === '--help' || command === '-h' || command === 'help') {
      con.stdout(mainHelp());
      return 0;
    }
    if (command === '--version' || command === '-V') {
      con.stdout(`strata ${strataVersion()}\n`);
      return 0;
    }
    group = GROUPS.find((g) => g.name === command);
    if (group === undefined) {
      const names = GROUPS.map((g) => g.name).join(', ');
      throw new UsageError(
        `unknown command '${command}'`,
        `usage: strata <command> ...; available commands: ${names}; see 'strata --help'`,
      );
    }
    return await runGroup(group, rest, con);
  } catch (err) {
    // Before a command is known, usage errors are strata's own (status 2).
    const failure = describeFailure(err, group === undefined ? EXIT.USAGE : (group.usageExitCode ?? 1));
    con.stderr(`${failureLine(failure)}\n`);
    if (process.env['STRATA_DEBUG'] && err instanceof Error && err.stack) con.stderr(`${err.stack}\n`);
    if ((group === undefined || group.jsonErrors === true) && wantsJsonOutput(argv)) con.stdout(`${JSON.stringify(failureJson(failure), null, 2)}\n`);
    return failure.exitCode;
  }
}
