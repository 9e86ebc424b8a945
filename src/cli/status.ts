/** strata status: is the daemon up, and what does it hold. */
import { exportsTable } from './exports.js';
import type { Console } from './output.js';
import { clientOf, EXIT_HELP, GLOBAL_HELP, keyValues, parse, positionals, printJson, wantsJson } from './remote/common.js';
import type { StatusJson } from '../api/rest/schemas.js';

export const STATUS_HELP = `Usage: strata status

Asks the daemon whether it is up and prints its version, pid, data folder, uptime, pools,
volume count, running jobs, where NBD listens and the exports (NBD and vhost-user-blk), each with
CLIENTS: who uses it now (NBD connections; 1 while a vhost-user front-end is connected). Exit
status 1 when it cannot be reached.

${GLOBAL_HELP}
${EXIT_HELP}`;

function uptime(seconds: number): string {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  return d > 0 ? `${d}d ${h}h ${m}m` : h > 0 ? `${h}h ${m}m` : m > 0 ? `${m}m ${s % 60}s` : `${s}s`;
}

export async function runStatus(argv: string[], con: Console): Promise<number> {
  const command = 'status';
  const args = parse(argv, command);
  positionals(args, command, []);
  const client = clientOf(args);
  const status = await client.json<StatusJson>('GET', '/v1/status', 'cannot get the daemon status');
  if (wantsJson(args)) printJson(con, { url: client.where, ...status });
  else {
    con.stdout(
      keyValues([
        ['daemon', `${client.where} (${status.status})`],
        ['version', status.version],
        ['pid', String(status.pid)],
        ['data dir', status.dataDir],
        ['uptime', uptime(status.uptimeSeconds)],
        ['pools', status.pools.length === 0 ? '-' : status.pools.join(', ')],
        ['volumes', String(status.volumes)],
        ['jobs running', String(status.jobsRunning)],
        ['nbd', [status.nbd.listen, status.nbd.socket].filter((x) => x !== null).join(', ') || 'off'],
        ['exports', String(status.exports.length)],
      ]),
    );
    if (status.exports.length > 0) con.stdout(`\n${exportsTable(status.exports)}`);
  }
  return 0;
}
