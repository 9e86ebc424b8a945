/**
 * QoS limits (issue 15): what a volume may do per second, per dimension, with an optional burst.
 * The model is QEMU's throttle groups and librbd's rbd_qos_*: six rates (read, write and total
 * IOPS and bytes per second), each with an optional burst rate, and one burst length that every
 * burst shares. docs/qos.md has the semantics; throttle.ts applies them.
 *
 * A limit set is whole: the first of the volume's own limits, its policy's, the pool's own and the
 * pool's policy's that exists applies entirely (settings.ts), nothing is merged field by field.
 */
import { StorageError } from '../../core/errors.js';

/** The six dimensions, in the order tables and help list them. */
export const QOS_RATES = ['readIops', 'writeIops', 'totalIops', 'readBps', 'writeBps', 'totalBps'] as const;
export type QosRate = (typeof QOS_RATES)[number];
export type QosBurst = `${QosRate}Burst`;

export const QOS_BURSTS: readonly QosBurst[] = QOS_RATES.map((rate): QosBurst => `${rate}Burst`);

/**
 * Limits in operations or bytes per second. A burst rate (`readIopsBurst`, ...) lets an idle volume
 * run at that rate for `burstSeconds` before falling back to the sustained rate; it needs its
 * sustained rate and must be above it.
 */
export type QosLimits = { [K in QosRate | QosBurst]?: number } & { burstSeconds?: number };

/** How long a burst lasts when a burst rate is given without a length (librbd's default too). */
export const DEFAULT_BURST_SECONDS = 1;
/** A burst longer than an hour is a higher sustained limit, not a burst. */
export const MAX_BURST_SECONDS = 3600;
/** Rates past this are no limit a volume could reach (and stay exact in JSON). */
const MAX_RATE = Number.MAX_SAFE_INTEGER;

export const QOS_FIELDS: readonly (keyof QosLimits)[] = [...QOS_RATES, ...QOS_BURSTS, 'burstSeconds'];

function invalid(message: string): StorageError {
  return new StorageError('INVALID_ARGUMENT', message);
}

/** True when no field is set (no limit at all). */
export function isUnlimited(limits: QosLimits | undefined): boolean {
  return limits === undefined || QOS_FIELDS.every((field) => limits[field] === undefined);
}

/** The CLI's spelling of a field ("readIopsBurst" -> "read-iops-burst"), for messages. */
export function flagName(field: keyof QosLimits): string {
  return field.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`).replace(/^total-/, '');
}

/**
 * Checks limits given by a caller (REST body, catalog record): whole positive numbers, bursts above
 * their rate, burstSeconds only with a burst. Returns a fresh object of the known fields only.
 */
export function checkQosLimits(input: Readonly<Record<string, unknown>>): QosLimits {
  const out: QosLimits = {};
  for (const key of Object.keys(input)) {
    if (!(QOS_FIELDS as readonly string[]).includes(key)) {
      throw invalid(`unknown QoS limit '${key}': use ${QOS_FIELDS.join(', ')}`);
    }
  }
  for (const field of QOS_FIELDS) {
    const value = input[field];
    if (value === undefined || value === null) continue;
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > MAX_RATE) {
      throw invalid(`QoS ${field} must be a whole number of at least 1, not ${JSON.stringify(value)} (to remove a limit, leave it out or clear it)`);
    }
    out[field] = value;
  }
  for (const rate of QOS_RATES) {
    const burst = out[`${rate}Burst`];
    if (burst === undefined) continue;
    const sustained = out[rate];
    if (sustained === undefined) throw invalid(`QoS ${rate}Burst needs ${rate}: a burst is a rate above a sustained limit; give both`);
    if (burst <= sustained) throw invalid(`QoS ${rate}Burst (${burst}) must be above ${rate} (${sustained}); drop the burst or raise it`);
  }
  const seconds = out.burstSeconds;
  if (seconds !== undefined) {
    if (!QOS_BURSTS.some((burst) => out[burst] !== undefined)) throw invalid('QoS burstSeconds needs a burst rate (e.g. readIopsBurst); give one or drop burstSeconds');
    if (seconds > MAX_BURST_SECONDS) throw invalid(`QoS burstSeconds ${seconds} is longer than ${MAX_BURST_SECONDS} (an hour): raise the sustained limit instead`);
  }
  return out;
}

/**
 * Applies a change to limits: a number sets a field, null removes it, absent keeps it. A removed
 * rate takes its burst with it; burstSeconds goes when no burst is left. The result is checked.
 */
export function changeQosLimits(current: QosLimits | undefined, change: Readonly<Record<string, number | null | undefined>>): QosLimits {
  const next: Record<string, unknown> = { ...current };
  for (const [key, value] of Object.entries(change)) {
    if (value === undefined) continue;
    if (value === null) delete next[key];
    else next[key] = value;
  }
  for (const rate of QOS_RATES) if (next[rate] === undefined && change[rate] === null) delete next[`${rate}Burst`];
  if (!QOS_BURSTS.some((burst) => next[burst] !== undefined)) delete next['burstSeconds'];
  return checkQosLimits(next);
}
