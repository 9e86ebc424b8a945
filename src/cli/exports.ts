/**
 * strata volume export-nbd / unexport-nbd / attach / detach / exports: serving volumes and
 * snapshots over NBD and vhost-user-blk, through the daemon's /v1/exports API.
 */
import path from 'node:path';
import type { Subcommand } from './command.js';
import { CliError, UsageError } from './errors.js';
import type { Console } from './output.js';
import type { ApiClient } from './remote/client.js';
import { seg } from './remote/client.js';
import {
  clientOf,
  parse,
  parseVolumeOrSnapRef,
  positionals,
  printJson,
  snapPath,
  subcommand,
  table,
  usageHint,
  volumePath,
  wantsJson,
  type VolumeRef,
} from './remote/common.js';
import { EXIT } from './remote/exits.js';
import type { ExportJson } from '../api/rest/schemas.js';
export type { ExportJson };

export function exportTarget(e: Pick<ExportJson, 'pool' | 'volume' | 'snapshot'>): string {
  return `${e.pool}/${e.volume}${e.snapshot === null ? '' : `@${e.snapshot}`}`;
}

export function exportsTable(exports: readonly ExportJson[]): string {
  return table(
    ['ID', 'TYPE', 'TARGET', 'MODE', 'CLIENTS', 'WAITING', 'WHERE'],
    exports.map((e) => [
      e.id,
      e.type,
      exportTarget(e),
      e.readOnly ? 'ro' : 'rw',
      String(e.clients),
      // Guest requests held because the pool is full (vhost-user, --on-no-space wait).
      e.type === 'nbd' ? '-' : String(e.waitingForSpace),
      e.type === 'nbd' ? (e.uris[0] ?? e.name ?? '') + (e.uris.length > 1 ? ` (also ${e.uris.slice(1).join(' ')})` : '') : `${e.socketPath ?? ''} (${e.queueCount ?? 1} queue${(e.queueCount ?? 1) === 1 ? '' : 's'})`,
    ]),
  );
}

async function findExports(client: ApiClient, match: (e: ExportJson) => boolean, what: string): Promise<ExportJson[]> {
  const all = await client.json<ExportJson[]>('GET', '/v1/exports', what);
  return all.filter(match);
}

/**
 * A read-write export of a volume's head that another read-write export of it already serves:
 * said on stderr. The daemon keeps the two coherent block by block, but two writers that do not
 * coordinate (a guest's file system and an NBD client) corrupt what the guest has mounted; a
 * backup reads a snapshot or a read-only export. Not refused: NBD clients of one export
 * (multi-conn) and deliberate shared-disk setups are legitimate.
 */
async function noteOtherWriters(con: Console, client: ApiClient, created: ExportJson): Promise<void> {
  if (created.readOnly || created.snapshot !== null) return;
  const others = await findExports(client, (e) => e.id !== created.id && !e.readOnly && e.snapshot === null && e.pool === created.pool && e.volume === created.volume, 'cannot list the exports');
  for (const other of others) {
    const how = other.type === 'vhost-user' ? `attached read-write over vhost-user at ${other.socketPath}` : `exported read-write over NBD as '${other.name}'`;
    con.stderr(
      `strata: note: '${exportTarget(created)}' is also ${how} (export ${other.id}): two writers that do not coordinate corrupt the file system a guest has mounted; for a backup, export a snapshot or use --read-only\n`,
    );
  }
}

/**
 * Nothing of `ref` is exported: a volume or snapshot that does not exist is NOT_FOUND with the
 * daemon's own fix (the list that has the right name), not "is not exported", which sends a
 * typo'd name to 'strata volume exports' where it cannot be found either.
 */
async function notExported(client: ApiClient, ref: VolumeRef & { snapshot?: string | undefined }, message: string, what: string): Promise<CliError> {
  await client.json('GET', ref.snapshot === undefined ? volumePath(ref) : snapPath({ ...ref, snapshot: ref.snapshot }), what);
  return new CliError(message, { hint: "see 'strata volume exports'", exitCode: EXIT.NOT_FOUND });
}

async function removeExports(con: Console, client: ApiClient, found: readonly ExportJson[], what: string, json: boolean): Promise<void> {
  for (const e of found) await client.json('DELETE', `/v1/exports/${seg(e.id)}`, what);
  if (json) printJson(con, found);
  else for (const e of found) con.stdout(`Stopped ${e.type} export ${e.id} of '${exportTarget(e)}'.\n`);
}

const exportNbd = subcommand(
  'export-nbd',
  'serve a volume or snapshot over NBD',
  `Usage: strata volume export-nbd [POOL/]VOLUME[@SNAPSHOT] [--read-only] [--name NAME]

Serves the volume (read-write) or a snapshot (read-only) over NBD, on the daemon's TCP address
(default 127.0.0.1:10809) and unix socket (default <data>/nbd.sock), under the export name
POOL/VOLUME[@SNAPSHOT] (or NAME). Prints the URIs clients use:
  qemu-img info nbd://127.0.0.1:10809/default/vm1
  nbdcopy nbd+unix:///default/vm1?socket=strata-data/nbd.sock backup.raw
With --name '' it is the default export, what clients get when they name no export
(nbd://127.0.0.1:10809, qemu-nbd's and nbdkit's default); one export at a time can be it.
The export lasts until 'strata volume unexport-nbd', also across daemon restarts. While a
volume is exported, snapshots can be taken (the export pauses for a moment); rollback, delete,
rename and shrink are refused.

Options:
  --read-only    refuse writes (snapshots are always read-only)
  --name NAME    the export name clients select (default POOL/VOLUME[@SNAPSHOT]; '' for the
                 default export)
`,
  async (argv, con) => {
    const command = 'volume export-nbd';
    const args = parse(argv, command, [{ long: 'read-only' }, { long: 'name', value: true }]);
    const [target] = positionals(args, command, ['VOLUME']) as [string];
    const ref = parseVolumeOrSnapRef(target, command);
    const name = args.value('name');
    const client = clientOf(args);
    const created = await client.json<ExportJson>('POST', '/v1/exports', `cannot export '${target}' over NBD`, {
      type: 'nbd',
      pool: ref.pool,
      volume: ref.volume,
      ...(ref.snapshot !== undefined ? { snapshot: ref.snapshot } : {}),
      ...(args.has('read-only') ? { readOnly: true } : {}),
      ...(name !== undefined ? { name } : {}),
    });
    await noteOtherWriters(con, client, created);
    if (wantsJson(args)) printJson(con, created);
    else {
      const as = created.name === '' ? 'the default export, for clients that name none,' : `'${created.name}'`;
      con.stdout(`Exported '${exportTarget(created)}' over NBD as ${as} (${created.readOnly ? 'read-only' : 'read-write'}, export ${created.id}):\n`);
      for (const uri of created.uris) con.stdout(`  ${uri}\n`);
    }
    return 0;
  },
);

const unexportNbd = subcommand(
  'unexport-nbd',
  'stop serving a volume or snapshot over NBD',
  `Usage: strata volume unexport-nbd [POOL/]VOLUME[@SNAPSHOT] | --id ID

Stops the NBD exports of the volume or snapshot (or the one with this id). Connected clients
are disconnected once their requests in flight have finished ('strata volume exports' shows how
many there are). Exit status 3 when it is not exported, and when the volume or snapshot does not
exist (NOT_FOUND, naming the list of what does).
`,
  async (argv, con) => {
    const command = 'volume unexport-nbd';
    const args = parse(argv, command, [{ long: 'id', value: true }]);
    const id = args.value('id');
    const client = clientOf(args);
    let found: ExportJson[];
    let target: string;
    if (id !== undefined) {
      positionals(args, command, []);
      target = `export ${id}`;
      found = await findExports(client, (e) => e.id === id && e.type === 'nbd', `cannot stop ${target}`);
      if (found.length === 0) throw new CliError(`${target} is not an NBD export`, { hint: "see 'strata volume exports'", exitCode: EXIT.NOT_FOUND });
    } else {
      [target] = positionals(args, command, ['VOLUME']) as [string];
      const ref = parseVolumeOrSnapRef(target, command);
      const what = `cannot stop the NBD exports of '${target}'`;
      found = await findExports(client, (e) => e.type === 'nbd' && e.pool === ref.pool && e.volume === ref.volume && (e.snapshot ?? undefined) === ref.snapshot, what);
      if (found.length === 0) throw await notExported(client, ref, `'${target}' is not exported over NBD`, what);
    }
    await removeExports(con, client, found, `cannot stop the NBD export of '${target}'`, wantsJson(args));
    return 0;
  },
);

const attach = subcommand(
  'attach',
  'attach a volume or snapshot to a VM over vhost-user-blk',
  `Usage: strata volume attach [POOL/]VOLUME[@SNAPSHOT] --vhost-user SOCKET [--queues N] [--read-only]
                             [--on-no-space wait|error]

Serves the volume (or a snapshot of it, always read-only: the guest sees a read-only disk, as
/sys/block/vda/ro = 1, and its writes fail) as a vhost-user-blk device on the unix socket
SOCKET: QEMU connects to it with
  -object memory-backend-memfd,id=mem,size=4G,share=on -numa node,memdev=mem
  -chardev socket,id=disk0,path=SOCKET,reconnect=1
  -device vhost-user-blk-pci,chardev=disk0,num-queues=N
One front-end at a time; after a disconnect (or a daemon restart) QEMU can reconnect. The
attachment lasts until 'strata volume detach', also across daemon restarts. A volume's head and
each of its snapshots can be attached once each (to different sockets); an attached snapshot
cannot be deleted or renamed until it is detached.

Options:
  --vhost-user SOCKET   the unix socket to listen on (created, and its folder (0700) if missing;
                        a leftover socket file nobody listens on is replaced, one a process
                        listens on is refused)
  --queues N            virtqueues (1 to 16, default 1; QEMU's num-queues must match)
  --read-only           the guest sees a read-only disk (snapshots always are)
  --on-no-space wait|error
                        what a guest's write does when the pool is full: 'wait' holds it
                        (retried every second) until space is freed, so the guest sees a
                        stalled disk rather than an I/O error; 'error' fails it (IOERR) at once.
                        Default: the daemon's (strata serve --vhost-on-no-space; 'wait').
                        'strata volume exports' shows the requests waiting (WAITING)
`,
  async (argv, con) => {
    const command = 'volume attach';
    const args = parse(argv, command, [{ long: 'vhost-user', value: true }, { long: 'queues', value: true }, { long: 'read-only' }, { long: 'on-no-space', value: true }]);
    const [target] = positionals(args, command, ['VOLUME']) as [string];
    const ref = parseVolumeOrSnapRef(target, command);
    const socket = args.value('vhost-user');
    if (socket === undefined || socket.length === 0) throw new UsageError(`${command}: --vhost-user SOCKET is required`, usageHint(command));
    const queuesText = args.value('queues');
    let queueCount: number | undefined;
    if (queuesText !== undefined) {
      queueCount = /^\d+$/.test(queuesText) ? Number(queuesText) : NaN;
      if (!Number.isInteger(queueCount) || queueCount < 1 || queueCount > 16) {
        throw new UsageError(`${command}: --queues must be a whole number from 1 to 16, not '${queuesText}'`, usageHint(command));
      }
    }
    const onNoSpace = args.value('on-no-space');
    if (onNoSpace !== undefined && onNoSpace !== 'wait' && onNoSpace !== 'error') {
      throw new UsageError(`${command}: --on-no-space must be 'wait' or 'error', not '${onNoSpace}'`, usageHint(command));
    }
    const client = clientOf(args);
    const created = await client.json<ExportJson>('POST', '/v1/exports', `cannot attach '${target}'`, {
      type: 'vhost-user',
      pool: ref.pool,
      volume: ref.volume,
      ...(ref.snapshot !== undefined ? { snapshot: ref.snapshot } : {}),
      // The daemon may run in another folder: send an absolute path.
      socketPath: path.resolve(socket),
      ...(queueCount !== undefined ? { queueCount } : {}),
      ...(args.has('read-only') ? { readOnly: true } : {}),
      ...(onNoSpace !== undefined ? { onNoSpace } : {}),
    });
    await noteOtherWriters(con, client, created);
    if (wantsJson(args)) printJson(con, created);
    else {
      con.stdout(
        `Attached '${exportTarget(created)}' over vhost-user-blk at ${created.socketPath} (${created.queueCount ?? 1} queue${(created.queueCount ?? 1) === 1 ? '' : 's'}, ${created.readOnly ? 'read-only' : 'read-write'}, on no space: ${created.onNoSpace ?? 'wait'}, export ${created.id}).\n`,
      );
    }
    return 0;
  },
);

const detach = subcommand(
  'detach',
  'detach a volume or snapshot from its vhost-user-blk socket',
  `Usage: strata volume detach [POOL/]VOLUME[@SNAPSHOT]

Stops the vhost-user-blk device of the volume (or of that snapshot of it): the connected
front-end is disconnected once the requests in flight have finished, and the socket is removed.
Detach a running VM's disk only after the guest stopped using it ('strata volume exports' shows
CLIENTS 1 while QEMU is connected). Exit status 3 when it is not attached, and when the volume
or snapshot does not exist.
`,
  async (argv, con) => {
    const command = 'volume detach';
    const args = parse(argv, command);
    const [target] = positionals(args, command, ['VOLUME']) as [string];
    const ref = parseVolumeOrSnapRef(target, command);
    const client = clientOf(args);
    const what = `cannot detach '${target}'`;
    const found = await findExports(
      client,
      (e) => e.type === 'vhost-user' && e.pool === ref.pool && e.volume === ref.volume && (e.snapshot ?? undefined) === ref.snapshot,
      what,
    );
    if (found.length === 0) throw await notExported(client, ref, `'${exportTarget({ ...ref, snapshot: ref.snapshot ?? null })}' is not attached over vhost-user`, what);
    await removeExports(con, client, found, `cannot detach '${target}'`, wantsJson(args));
    return 0;
  },
);

const exportsList = subcommand(
  'exports',
  'list NBD exports and vhost-user attachments',
  `Usage: strata volume exports

Lists what the daemon serves: NBD exports (with their URIs) and vhost-user-blk attachments
(with their sockets), each with CLIENTS, who uses it now: an NBD export's client connections,
a vhost-user attachment's front-end (1 while QEMU is connected, else 0; --json also gives
connectedSince), and WAITING, a vhost-user guest's requests held because the pool is full
(--on-no-space wait: free space in the pool and they complete). 'strata volume info VOLUME'
shows one volume's.
`,
  async (argv, con) => {
    const command = 'volume exports';
    const args = parse(argv, command);
    positionals(args, command, []);
    const all = await clientOf(args).json<ExportJson[]>('GET', '/v1/exports', 'cannot list exports');
    if (wantsJson(args)) printJson(con, all);
    else if (all.length === 0) con.stdout('No exports.\n');
    else con.stdout(exportsTable(all));
    return 0;
  },
);

export const EXPORT_SUBCOMMANDS: readonly Subcommand[] = [exportNbd, unexportNbd, attach, detach, exportsList];
