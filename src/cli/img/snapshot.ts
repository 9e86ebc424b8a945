/** strata img snapshot: list, create, apply and delete internal qcow2 snapshots, like qemu-img snapshot. */
import type { Qcow2SnapshotInfo } from '../../../formats/qcow2/types.js';
import { expectPositionals, parseArgs } from '../args.js';
import type { Subcommand } from '../command.js';
import { UsageError, withContext } from '../errors.js';
import { formatLocalDate, formatVmClock, qemuSizeString, type Console } from '../output.js';
import { asQcow2, openImage, requireQcow2 } from './open-image.js';

const COMMAND = 'img snapshot';

const HELP = `Usage: strata img snapshot [-f FMT] [-q] [-U] (-l | -c NAME | -a NAME | -d NAME) FILE

Lists, creates, applies (reverts to) or deletes internal snapshots of a qcow2 image.

Options:
  -l         list the snapshots (the table qemu-img snapshot -l prints)
  -c NAME    create a snapshot named NAME of the current state
  -a NAME    apply: revert the image to snapshot NAME (an ID or a name)
  -d NAME    delete snapshot NAME (an ID or a name)
  -f FMT     image format (probed when not given)
  -q         quiet
  -U         open even if another process uses the image (with -l; no locks are taken)
`;

/** The "ID TAG VM SIZE DATE VM CLOCK ICOUNT" table, header included. */
export function formatSnapshotTable(snapshots: readonly Qcow2SnapshotInfo[]): string {
  const lines = [
    'ID'.padEnd(10) +
      'TAG'.padEnd(17) +
      'VM SIZE'.padStart(8) +
      'DATE'.padStart(20) +
      'VM CLOCK'.padStart(13) +
      'ICOUNT'.padStart(11),
  ];
  for (const s of snapshots) {
    lines.push(
      `${s.id.padEnd(9)} ${s.name.padEnd(16)} ` +
        qemuSizeString(s.vmStateSizeBytes).padStart(8) +
        formatLocalDate(s.dateSec).padStart(20) +
        formatVmClock(s.vmClockNsec).padStart(13) +
        (s.icount === undefined ? '' : String(s.icount)).padStart(11),
    );
  }
  return `${lines.join('\n')}\n`;
}

type Action = { kind: 'list' } | { kind: 'create' | 'apply' | 'delete'; name: string };

async function run(argv: string[], con: Console): Promise<number> {
  const args = parseArgs(
    argv,
    [
      { short: 'l' },
      { short: 'c', value: true },
      { short: 'a', value: true },
      { short: 'd', value: true },
      { short: 'f', value: true },
      { short: 'q' },
      { short: 'U', long: 'force-share', name: 'U' },
    ],
    COMMAND,
  );
  const actions: Action[] = [];
  for (const { name, value } of args.sequence) {
    if (name === 'l') actions.push({ kind: 'list' });
    else if (name === 'c') actions.push({ kind: 'create', name: value ?? '' });
    else if (name === 'a') actions.push({ kind: 'apply', name: value ?? '' });
    else if (name === 'd') actions.push({ kind: 'delete', name: value ?? '' });
  }
  const action = actions[0];
  if (action === undefined) {
    throw new UsageError(`${COMMAND}: no action given`, 'give one of -l, -c NAME, -a NAME or -d NAME');
  }
  if (actions.length > 1) {
    throw new UsageError(`${COMMAND}: only one of -l, -c, -a and -d may be given`, 'run the command once per action');
  }
  expectPositionals(args, COMMAND, ['FILE']);
  const path = args.positionals[0] as string;
  if (action.kind !== 'list' && action.name === '') {
    throw new UsageError(`${COMMAND}: the snapshot name is empty`, 'give a name after the option');
  }

  const opened = await openImage(path, {
    formatName: args.value('f'),
    readOnly: action.kind === 'list',
    forceShare: args.has('U'),
    ignoreBacking: true,
  });
  try {
    if (action.kind === 'list') {
      const snapshots = asQcow2(opened.image)?.listSnapshots() ?? [];
      if (snapshots.length > 0) con.stdout(`Snapshot list:\n${formatSnapshotTable(snapshots)}`);
      return 0;
    }
    const verb = { create: 'create', apply: 'apply', delete: 'delete' }[action.kind];
    try {
      const image = requireQcow2(opened.image, `snapshot -${action.kind[0]}`);
      if (action.kind === 'create') await image.createSnapshot(action.name);
      else if (action.kind === 'apply') await image.applySnapshot(action.name);
      else await image.deleteSnapshot(action.name);
      await image.flush();
    } catch (err) {
      throw withContext(`could not ${verb} snapshot '${action.name}'`, err);
    }
  } finally {
    await opened.close();
  }
  return 0;
}

export const snapshotCommand: Subcommand = {
  name: 'snapshot',
  summary: 'list, create, apply or delete internal snapshots',
  help: HELP,
  run,
};
