/**
 * The strata command line. bin/strata.js calls main(process.argv.slice(2)) and exits with the
 * status it resolves to. Errors are reported as one line on stderr:
 *   strata: <what was wrong> (<what to do>)
 * with the StorageError code in brackets when there is one, and with --json also as a JSON object
 * on stdout (errors.ts failureJson). For `img`, usage mistakes and failures exit 1 unless a
 * subcommand defines its own statuses (check, compare, io); strata itself and the daemon commands
 * (serve, status, pool, volume, snap, group, trash, job) use the statuses in remote/exits.ts.
 * When the reader of stdout goes away (`strata ... | head`), the command stops at its next write
 * and exits quietly with status 0 (output.ts StdoutClosedError).
 */
import { wantsHelp } from './args.js';
import type { Subcommand } from './command.js';
import { strataVersion } from '../core/version.js';
import { UsageError, describeFailure, failureJson, failureLine } from './errors.js';
import { StdoutClosedError, causedByClosedStdout, processConsole, type Console } from './output.js';
import { EXIT } from './remote/exits.js';

/** What a command group's module gives: loaded only when that group runs. */
interface CommandGroupParts {
  help: () => string;
  subcommands: readonly Subcommand[];
  /** A command without subcommands ("strata status") runs this instead. */
  run?: (argv: string[], con: Console) => Promise<number>;
}

/**
 * A command group: its name and summary (for the main help) and how to load the rest. Each group's
 * module is imported only when that group runs, so a command loads its own code and not the
 * daemon's, the REST client's and every other group's (`strata img bench` spent ~120 ms of CPU
 * loading all of them, ~60 ms more than the img tools need: at 3 GiB moved, 0.02 s of CPU per GiB).
 */
interface CommandGroup {
  name: string;
  summary: string;
  load: () => Promise<CommandGroupParts>;
  /** Exit status of usage errors (the daemon commands use 2; `img` keeps qemu-img's 1). */
  usageExitCode?: number;
  /** With --json, errors are also printed as a JSON object on stdout (not for img: qemu-img's JSON prints none). */
  jsonErrors?: boolean;
}

/** A group made of subcommands. */
function parts(help: () => string, subcommands: readonly Subcommand[]): CommandGroupParts {
  return { help, subcommands };
}

/** A daemon command group: usage errors exit 2 and --json also prints errors as JSON. */
function daemonGroup(name: string, summary: string, load: () => Promise<CommandGroupParts>): CommandGroup {
  return { name, summary, load, usageExitCode: EXIT.USAGE, jsonErrors: true };
}

const GROUPS: readonly CommandGroup[] = [
  {
    name: 'serve',
    summary: 'run the storage daemon',
    load: () => import('./serve.js').then((m) => ({ help: () => m.SERVE_HELP, subcommands: [], run: m.runServe })),
    usageExitCode: EXIT.USAGE,
  },
  daemonGroup('status', 'show whether the daemon is up and what it holds', () =>
    import('./status.js').then((m) => ({ help: () => m.STATUS_HELP, subcommands: [], run: m.runStatus })),
  ),
  daemonGroup('pool', 'create, list, inspect and delete pools', () => import('./pool.js').then((m) => parts(m.poolHelp, m.POOL_SUBCOMMANDS))),
  daemonGroup('volume', 'volumes: create, resize, copy, import/export, flatten, diff', () => import('./volume.js').then((m) => parts(m.volumeHelp, m.VOLUME_SUBCOMMANDS))),
  daemonGroup('snap', 'snapshots: create, rollback, protect, clone, delete', () => import('./snap.js').then((m) => parts(m.snapHelp, m.SNAP_SUBCOMMANDS))),
  daemonGroup('group', 'consistency groups and their group snapshots', () => import('./group.js').then((m) => parts(m.groupCommandHelp, m.GROUP_SUBCOMMANDS))),
  daemonGroup('trash', 'deleted volumes: list, restore, purge', () => import('./trash.js').then((m) => parts(m.trashHelp, m.TRASH_SUBCOMMANDS))),
  daemonGroup('job', "follow and cancel the daemon's jobs", () => import('./job.js').then((m) => parts(m.jobHelp, m.JOB_SUBCOMMANDS))),
  daemonGroup('qos', 'QoS policies (volume and pool limits: volume qos, pool qos)', () => import('./qos.js').then((m) => parts(m.qosHelp, m.QOS_SUBCOMMANDS))),
  daemonGroup('user', 'S3 users and their access keys', () => import('./user.js').then((m) => parts(m.userHelp, m.USER_SUBCOMMANDS))),
  daemonGroup('bucket', 'S3 buckets: list, info, du, chown, delete', () => import('./bucket.js').then((m) => parts(m.bucketHelp, m.BUCKET_SUBCOMMANDS))),
  {
    name: 'img',
    summary: 'offline image tools (qemu-img and qemu-io work-alikes)',
    load: () => import('./img/index.js').then((m) => parts(m.imgHelp, m.IMG_SUBCOMMANDS)),
  },
];

/**
 * Commands an operator types from habit (other tools, or guessing) that are subcommands here:
 * the unknown-command error names the right one instead of only listing the groups.
 */
const WHERE_IT_IS: Readonly<Record<string, string>> = {
  export: "exports are volume subcommands: 'strata volume exports' lists them, 'strata volume export-nbd' and 'strata volume attach' create them",
  exports: "'strata volume exports' lists the NBD exports and vhost-user attachments",
  attach: "'strata volume attach' attaches a volume over vhost-user-blk",
  detach: "'strata volume detach' detaches it",
  snapshot: "snapshots are 'strata snap ...' ('strata snap --help')",
};

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

async function runGroup(named: CommandGroup, argv: string[], con: Console): Promise<number> {
  const group = { name: named.name, ...(await named.load()) };
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
    const reordered = withOptionsLast(argv);
    if (reordered !== undefined) {
      throw new UsageError(`${group.name}: unknown subcommand '${subName}'`, `options go after the subcommand: 'strata ${group.name} ${reordered.join(' ')}'`);
    }
    const names = group.subcommands.map((s) => s.name).join(', ');
    throw new UsageError(`${group.name}: unknown subcommand '${subName}'`, `available: ${names}; see 'strata ${group.name} --help'`);
  }
  if (wantsHelp(rest) && sub.answersHelp !== true) {
    con.stdout(sub.help);
    return 0;
  }
  return sub.run(rest, con);
}

/** The global options that take a value (--json takes none). */
const GLOBAL_VALUE_OPTIONS: ReadonlySet<string> = new Set(['--url', '--token', '--data-dir']);

/**
 * argv with its leading global options moved to the end (`--json pool list` -> `pool list
 * --json`), or undefined when it does not start with one: what to suggest when a word meant as a
 * command or subcommand is an option given too early (docs/cli.md: options go after the command).
 */
function withOptionsLast(argv: readonly string[]): string[] | undefined {
  const moved: string[] = [];
  let i = 0;
  while (i < argv.length) {
    const word = argv[i] as string;
    const name = word.split('=')[0] as string;
    if (name === '--json') {
      moved.push(word);
      i++;
    } else if (GLOBAL_VALUE_OPTIONS.has(name)) {
      const takesNext = !word.includes('=');
      moved.push(word, ...(takesNext ? [argv[i + 1] ?? 'VALUE'] : []));
      i += takesNext ? 2 : 1;
    } else {
      break;
    }
  }
  if (moved.length === 0 || i >= argv.length) return undefined;
  return [...argv.slice(i), ...moved];
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
      const reordered = withOptionsLast(argv);
      if (reordered !== undefined) throw new UsageError(`unknown command '${command}'`, `options go after the command: 'strata ${reordered.join(' ')}'`);
      const names = GROUPS.map((g) => g.name).join(', ');
      const where = Object.hasOwn(WHERE_IT_IS, command) ? `${WHERE_IT_IS[command]}; ` : '';
      throw new UsageError(`unknown command '${command}'`, `${where}usage: strata <command> ...; available commands: ${names}; see 'strata --help'`);
    }
    return await runGroup(group, rest, con);
  } catch (err) {
    // The reader of stdout stopped early (`strata ... | head`): nothing is wrong, nothing to say.
    if (causedByClosedStdout(err)) return EXIT.OK;
    // Before a command is known, usage errors are strata's own (status 2).
    const failure = describeFailure(err, group === undefined ? EXIT.USAGE : (group.usageExitCode ?? 1));
    con.stderr(`${failureLine(failure)}\n`);
    if (process.env['STRATA_DEBUG'] && err instanceof Error && err.stack) con.stderr(`${err.stack}\n`);
    if ((group === undefined || group.jsonErrors === true) && wantsJsonOutput(argv)) {
      try {
        con.stdout(`${JSON.stringify(failureJson(failure), null, 2)}\n`);
      } catch (printing) {
        // stdout is closed: the line on stderr has said it all.
        if (!(printing instanceof StdoutClosedError)) throw printing;
      }
    }
    return failure.exitCode;
  }
}
