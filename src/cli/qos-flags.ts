/**
 * The QoS limit flags the CLI shares (volume create, volume qos set, pool qos set, qos policy
 * create/set) and how limits print. One flag per field of the REST limits (docs/qos.md):
 * --read-iops, --write-iops, --iops (total), --read-bps, --write-bps, --bps (total), each with a
 * `-burst` twin, and --burst-seconds. IOPS are whole numbers; rates in bytes take sizes like the
 * rest of the CLI (8M, 8MiB, an optional "/s"). `none` removes a limit where a change is made.
 */
import { QOS_FIELDS, flagName, type QosLimits } from '../volume/qos/limits.js';
import type { OptionSpec, ParsedArgs } from './args.js';
import { UsageError } from './errors.js';
import { parseSize, size, usageHint } from './remote/common.js';

export const QOS_LIMIT_OPTIONS: readonly OptionSpec[] = QOS_FIELDS.map((field) => ({ long: flagName(field), value: true }));

export const QOS_LIMIT_HELP = `Limits (per second; IOPS whole numbers, bytes as sizes: 500, 8M, 8MiB/s):
  --read-iops N, --write-iops N, --iops N     reads, writes, both together
  --read-bps SIZE, --write-bps SIZE, --bps SIZE
  --read-iops-burst N, ..., --bps-burst SIZE  a burst rate above the limit of the same name
  --burst-seconds S                           how long an idle volume may burst (default 1)
`;

function isBytes(field: string): boolean {
  return field.includes('Bps');
}

/**
 * The limit flags given, as a change: numbers, and null for `none` when `allowNone`. Undefined
 * when no limit flag was given.
 */
export function limitChange(args: ParsedArgs, command: string, allowNone: boolean): Record<string, number | null> | undefined {
  const out: Record<string, number | null> = {};
  for (const field of QOS_FIELDS) {
    const flag = flagName(field);
    const text = args.value(flag);
    if (text === undefined) continue;
    if (text === 'none') {
      if (!allowNone) throw new UsageError(`${command}: --${flag} none removes a limit; here give a value`, usageHint(command));
      out[field] = null;
      continue;
    }
    const value = isBytes(field) ? parseSize(text.replace(/\/s$/i, ''), `--${flag}`, command) : Number(text);
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new UsageError(`${command}: --${flag} '${text}' must be a whole number of at least 1`, allowNone ? `or 'none' to remove the limit` : usageHint(command));
    }
    out[field] = value;
  }
  return Object.keys(out).length === 0 ? undefined : out;
}

/** "read-iops 500, write-bps 8 MiB/s" (or "none"). */
export function formatLimits(limits: QosLimits | null | undefined): string {
  if (limits === null || limits === undefined) return 'none';
  const parts: string[] = [];
  for (const field of QOS_FIELDS) {
    const value = limits[field];
    if (value === undefined) continue;
    parts.push(`${flagName(field)} ${isBytes(field) ? `${size(value)}/s` : field === 'burstSeconds' ? `${value}s` : value}`);
  }
  return parts.length === 0 ? 'none' : parts.join(', ');
}
