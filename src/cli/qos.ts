/**
 * strata QoS commands (issue 15; docs/qos.md), through the daemon's REST API:
 *   strata volume qos set|show|clear [POOL/]VOLUME   a volume's own limits and policy
 *   strata pool qos set|show|clear POOL              a pool's default
 *   strata qos policy create|list|show|set|delete    named policies
 * Each takes its action as the word after `qos` / `policy`.
 */
import type { QosInfoJson, QosPolicyJson } from '../api/rest/qos-schemas.js';
import type { Subcommand } from './command.js';
import { UsageError } from './errors.js';
import type { Console } from './output.js';
import { QOS_LIMIT_HELP, QOS_LIMIT_OPTIONS, formatLimits, limitChange } from './qos-flags.js';
import { seg } from './remote/client.js';
import { checkName, clientOf, groupHelp, keyValues, parse, parseVolumeRef, positionals, printJson, subcommand, table, volumePath, wantsJson } from './remote/common.js';
import type { ParsedArgs } from './args.js';

type Action = (argv: string[], con: Console) => Promise<number>;

/** A subcommand whose first argument picks an action ("strata volume qos set ..."). */
function withActions(group: string, name: string, summary: string, help: string, actions: Record<string, Action>): Subcommand {
  return subcommand(name, summary, help, async (argv, con) => {
    const [action, ...rest] = argv;
    const run = action === undefined ? undefined : actions[action];
    if (run === undefined) {
      const what = action === undefined ? 'missing action' : `unknown action '${action}'`;
      throw new UsageError(`${group} ${name}: ${what}`, `use ${Object.keys(actions).join(', ')}; see 'strata ${group} ${name} --help'`);
    }
    return run(rest, con);
  });
}

const SETTING_OPTIONS = [...QOS_LIMIT_OPTIONS, { long: 'policy', value: true }, { long: 'no-policy' }];

/** The body of a PATCH .../qos from set's flags: limits changed (none removes), --policy / --no-policy. */
function settingChange(args: ParsedArgs, command: string): { limits?: Record<string, number | null>; policy?: string | null } {
  const limits = limitChange(args, command, true);
  const policy = args.value('policy');
  if (policy !== undefined && args.has('no-policy')) throw new UsageError(`${command}: give --policy NAME or --no-policy, not both`, `see 'strata ${command} --help'`);
  if (policy !== undefined) checkName(policy, 'QoS policy', command);
  const change = { ...(limits === undefined ? {} : { limits }), ...(policy !== undefined ? { policy } : args.has('no-policy') ? { policy: null } : {}) };
  if (Object.keys(change).length === 0) throw new UsageError(`${command}: nothing to set`, `give a limit (e.g. --read-iops 500), --policy NAME or --no-policy; see 'strata ${command} --help'`);
  return change;
}

const SOURCES: Record<QosInfoJson['source'], string> = {
  volume: "the volume's own limits",
  'volume-policy': "the volume's policy",
  pool: "the pool's default limits",
  'pool-policy': "the pool's default policy",
  none: 'nothing: unlimited',
};

function printInfo(con: Console, args: ParsedArgs, what: readonly [string, string], q: QosInfoJson): void {
  if (wantsJson(args)) return printJson(con, q);
  con.stdout(
    keyValues([
      what,
      ['limits', formatLimits(q.limits)],
      ['policy', q.policy ?? 'none'],
      ['applies', q.source === 'none' ? 'no limit' : formatLimits(q.effective)],
      ['from', q.sourcePolicy === null ? SOURCES[q.source] : `${SOURCES[q.source]} '${q.sourcePolicy}'`],
    ]),
  );
}

/** set/show/clear for a volume or a pool: `target` turns the positional into a path and a label. */
function settingActions(group: string, target: (text: string, command: string) => { path: string; label: readonly [string, string] }): Record<string, Action> {
  const run = (action: string, method: string, specs: typeof SETTING_OPTIONS | [], body: (args: ParsedArgs, command: string) => unknown): Action => async (argv, con) => {
    const command = `${group} qos ${action}`;
    const args = parse(argv, command, specs);
    const [name] = positionals(args, command, [group === 'volume' ? 'VOLUME' : 'POOL']) as [string];
    const t = target(name, command);
    const q = await clientOf(args).json<QosInfoJson>(method, `${t.path}/qos`, `cannot ${action === 'show' ? 'read' : action} the QoS of ${t.label[0]} '${t.label[1]}'`, body(args, command));
    printInfo(con, args, t.label, q);
    return 0;
  };
  return {
    set: run('set', 'PATCH', SETTING_OPTIONS, settingChange),
    show: run('show', 'GET', [], () => undefined),
    clear: run('clear', 'DELETE', [], () => undefined),
  };
}

const SETTING_HELP = `${QOS_LIMIT_HELP}  --policy NAME                               attach a QoS policy (strata qos policy create)
  --no-policy                                 detach it

set changes only what it names; a limit given as 'none' is removed (its burst with it).
Precedence, whole sets only: the volume's own limits, else its policy, else the pool's own
limits, else the pool's policy. Changes reach exported volumes at once (no reattach).
`;

const volumeQos = withActions(
  'volume',
  'qos',
  "show or change a volume's QoS limits (IOPS, bytes/s, bursts, policy)",
  `Usage: strata volume qos set [POOL/]VOLUME [limits] [--policy NAME | --no-policy]
       strata volume qos show [POOL/]VOLUME
       strata volume qos clear [POOL/]VOLUME

Limits on what a volume's exports (NBD and vhost-user alike) may do per second. Throttling
delays requests, it never fails them; docs/qos.md has the model.

${SETTING_HELP}`,
  settingActions('volume', (text, command) => {
    const ref = parseVolumeRef(text, command);
    return { path: volumePath(ref), label: ['volume', `${ref.pool}/${ref.volume}`] };
  }),
);

const poolQos = withActions(
  'pool',
  'qos',
  "show or change a pool's default QoS limits (for volumes without their own)",
  `Usage: strata pool qos set POOL [limits] [--policy NAME | --no-policy]
       strata pool qos show POOL
       strata pool qos clear POOL

The QoS of the pool's volumes that have neither limits nor a policy of their own.

${SETTING_HELP}`,
  settingActions('pool', (text, command) => ({ path: `/v1/pools/${seg(checkName(text, 'pool', command))}`, label: ['pool', text] })),
);

/** The `qos` part of a volume-create body from --qos-policy and the limit flags (none given: {}). */
export function newVolumeQos(args: ParsedArgs, command: string): { qos?: { limits?: Record<string, number | null>; policy?: string } } {
  const limits = limitChange(args, command, false);
  const policy = args.value('qos-policy');
  if (policy !== undefined) checkName(policy, 'QoS policy', command);
  if (limits === undefined && policy === undefined) return {};
  return { qos: { ...(limits === undefined ? {} : { limits }), ...(policy === undefined ? {} : { policy }) } };
}

export const VOLUME_QOS_SUBCOMMANDS: readonly Subcommand[] = [volumeQos];
export const POOL_QOS_SUBCOMMANDS: readonly Subcommand[] = [poolQos];

// strata qos policy ...

function policyRows(p: QosPolicyJson): string {
  return keyValues([
    ['policy', p.name],
    ['limits', formatLimits(p.limits)],
    ['attached', `${p.volumeCount} volumes, ${p.poolCount} pools`],
    ['created', p.createdAt],
  ]);
}

const policyPath = (name: string) => `/v1/qos-policies/${seg(name)}`;

const policyActions: Record<string, Action> = {
  create: async (argv, con) => {
    const command = 'qos policy create';
    const args = parse(argv, command, QOS_LIMIT_OPTIONS);
    const [name] = positionals(args, command, ['NAME']) as [string];
    checkName(name, 'QoS policy', command);
    const limits = limitChange(args, command, false);
    if (limits === undefined) throw new UsageError(`${command}: a policy needs at least one limit`, `e.g. --read-iops 500 --write-bps 8M; see 'strata ${command} --help'`);
    const p = await clientOf(args).json<QosPolicyJson>('POST', '/v1/qos-policies', `cannot create QoS policy '${name}'`, { name, limits });
    if (wantsJson(args)) printJson(con, p);
    else con.stdout(`QoS policy '${p.name}' created: ${formatLimits(p.limits)}.\n`);
    return 0;
  },
  list: async (argv, con) => {
    const command = 'qos policy list';
    const args = parse(argv, command);
    positionals(args, command, []);
    const policies = await clientOf(args).json<QosPolicyJson[]>('GET', '/v1/qos-policies', 'cannot list QoS policies');
    if (wantsJson(args)) printJson(con, policies);
    else if (policies.length === 0) con.stdout('No QoS policies.\n');
    else con.stdout(table(['NAME', 'VOLUMES', 'POOLS', 'LIMITS'], policies.map((p) => [p.name, String(p.volumeCount), String(p.poolCount), formatLimits(p.limits)])));
    return 0;
  },
  show: async (argv, con) => {
    const command = 'qos policy show';
    const args = parse(argv, command);
    const [name] = positionals(args, command, ['NAME']) as [string];
    const p = await clientOf(args).json<QosPolicyJson>('GET', policyPath(checkName(name, 'QoS policy', command)), `cannot read QoS policy '${name}'`);
    if (wantsJson(args)) printJson(con, p);
    else con.stdout(policyRows(p));
    return 0;
  },
  set: async (argv, con) => {
    const command = 'qos policy set';
    const args = parse(argv, command, QOS_LIMIT_OPTIONS);
    const [name] = positionals(args, command, ['NAME']) as [string];
    const limits = limitChange(args, command, true);
    if (limits === undefined) throw new UsageError(`${command}: nothing to set`, `give a limit (e.g. --read-iops 500, or --read-iops none to remove it)`);
    const p = await clientOf(args).json<QosPolicyJson>('PATCH', policyPath(checkName(name, 'QoS policy', command)), `cannot change QoS policy '${name}'`, { limits });
    if (wantsJson(args)) printJson(con, p);
    else con.stdout(policyRows(p));
    return 0;
  },
  delete: async (argv, con) => {
    const command = 'qos policy delete';
    const args = parse(argv, command);
    const [name] = positionals(args, command, ['NAME']) as [string];
    await clientOf(args).json<unknown>('DELETE', policyPath(checkName(name, 'QoS policy', command)), `cannot delete QoS policy '${name}'`);
    if (wantsJson(args)) printJson(con, { deleted: name });
    else con.stdout(`QoS policy '${name}' deleted.\n`);
    return 0;
  },
};

const policy = withActions(
  'qos',
  'policy',
  'named QoS limits that volumes and pools attach: create, list, show, set, delete',
  `Usage: strata qos policy create NAME limits...
       strata qos policy list
       strata qos policy show NAME
       strata qos policy set NAME limits...     (a limit given as 'none' is removed)
       strata qos policy delete NAME

A policy is a named set of limits (Cinder's qos-specs). Attach it to volumes
(strata volume qos set POOL/VOLUME --policy NAME, or volume create --qos-policy NAME) or make
it a pool's default (strata pool qos set POOL --policy NAME). Changing a policy changes every
exported volume it applies to at once. A policy still attached is not deleted: detach it first.

${QOS_LIMIT_HELP}`,
  policyActions,
);

export const QOS_SUBCOMMANDS: readonly Subcommand[] = [policy];

export function qosHelp(): string {
  return groupHelp('qos', 'QoS: named limit policies (volume and pool limits: strata volume qos, strata pool qos).', QOS_SUBCOMMANDS);
}
