/**
 * How the CLI spells an error's fix (core/errors.ts ErrorFix, sent by the daemon in the error
 * body's "fix"): the flag or the strata command an operator types. The REST API spells the same
 * fixes with its fields and routes (src/api/rest/fixes.ts).
 */
import { FIX_OPTIONS, LIST_OPERATIONS, renderFix, type ErrorFix, type ExportRef, type FixOption } from '../../core/errors.js';

const FLAGS: Record<FixOption, string> = {
  allowShrink: '--shrink',
  force: '--force',
  sizeBytes: '--size SIZE',
  name: '--name NEW',
  purge: '--purge',
};

function spelling(fix: ErrorFix): string {
  if ('literal' in fix) return '';
  if ('option' in fix) return FLAGS[fix.option];
  switch (fix.operation) {
    case 'protectSnapshot':
      return `'strata snap protect ${fix.pool}/${fix.volume}@${fix.snapshot}'`;
    case 'unprotectSnapshot':
      return `'strata snap unprotect ${fix.pool}/${fix.volume}@${fix.snapshot}'`;
    case 'setPoolQuota':
      return `'strata pool quota ${fix.pool} SIZE'`;
    case 'setSnapshotLimit':
      return `'strata snap limit ${fix.pool}/${fix.volume} N'`;
    case 'removeFromGroup':
      return `'strata group remove ${fix.group} ${fix.pool}/${fix.volume}'`;
    case 'deleteGroupSnapshot':
      return `'strata group snap delete ${fix.group}@${fix.snapshot}'`;
    case 'stopExports':
      return stopExportsSpelling(fix.exports);
    case 'listPools':
      return "'strata pool list'";
    case 'listVolumes':
      return `'strata volume list ${fix.pool}'`;
    case 'listSnapshots':
      return `'strata snap list ${fix.pool}/${fix.volume}'`;
    case 'listTrash':
      return `'strata trash list ${fix.pool}'`;
    case 'listJobs':
      return "'strata job list'";
    case 'listExports':
      return "'strata volume exports'";
    case 'listGroups':
      return "'strata group list'";
    case 'listGroupSnapshots':
      return `'strata group snap list ${fix.group}'`;
    case 'listUsers':
      return "'strata user list'";
    case 'listBuckets':
      return "'strata bucket list'";
    case 'removeBuckets': {
      const bucket = fix.buckets.length === 1 ? (fix.buckets[0] as string) : 'BUCKET';
      return `'strata bucket chown ${bucket} USER' or 'strata bucket delete ${bucket} --purge'`;
    }
  }
}

/** The commands that stop these exports: unexport-nbd of the volume or snapshot, detach for vhost-user (one per target). */
function stopExportsSpelling(exports: readonly ExportRef[]): string {
  if (exports.length === 0) return "'strata volume unexport-nbd' or 'strata volume detach' ('strata volume exports' lists them)";
  const commands = exports.map((e) =>
    `'strata volume ${e.type === 'vhost-user' ? 'detach' : 'unexport-nbd'} ${e.pool}/${e.volume}${e.snapshot === undefined ? '' : `@${e.snapshot}`}'`,
  );
  return [...new Set(commands)].join(' and ');
}

const isText = (value: unknown): value is string => typeof value === 'string' && value !== '';

/** The exports of a stopExports fix, or undefined when any of them is not one. */
function parseExports(value: unknown): ExportRef[] | undefined {
  if (!Array.isArray(value)) return undefined;
  const exports: ExportRef[] = [];
  for (const item of value as unknown[]) {
    if (item === null || typeof item !== 'object') return undefined;
    const { id, type, pool, volume, snapshot } = item as Record<string, unknown>;
    if (!isText(id) || (type !== 'nbd' && type !== 'vhost-user') || !isText(pool) || !isText(volume)) return undefined;
    if (snapshot !== undefined && !isText(snapshot)) return undefined;
    exports.push({ id, type, pool, volume, ...(snapshot !== undefined ? { snapshot } : {}) });
  }
  return exports;
}

/** The daemon's "fix" as an ErrorFix, or undefined when it is missing or not one this CLI knows. */
export function parseFix(value: unknown): ErrorFix | undefined {
  if (value === null || typeof value !== 'object') return undefined;
  const f = value as Record<string, unknown>;
  if (!isText(f['text'])) return undefined;
  const text = f['text'];
  if (f['literal'] === true) return { text, literal: true };
  const option = f['option'];
  if (option !== undefined) return (FIX_OPTIONS as readonly unknown[]).includes(option) ? { text, option: option as FixOption } : undefined;
  const { operation, pool, volume, snapshot, group } = f;
  if (operation === 'deleteGroupSnapshot') return isText(group) && isText(snapshot) ? { text, operation, group, snapshot } : undefined;
  if (operation === 'listGroupSnapshots') return isText(group) ? { text, operation, group } : undefined;
  if (operation === 'removeBuckets') {
    const buckets = f['buckets'];
    return Array.isArray(buckets) && buckets.length > 0 && buckets.every(isText) ? { text, operation, buckets } : undefined;
  }
  const unscoped = LIST_OPERATIONS.find((o) => o === operation);
  if (unscoped !== undefined) return { text, operation: unscoped };
  if (operation === 'stopExports') {
    const exports = parseExports(f['exports']);
    return exports === undefined ? undefined : { text, operation, exports };
  }
  if (!isText(pool)) return undefined;
  switch (operation) {
    case 'protectSnapshot':
    case 'unprotectSnapshot':
      return isText(volume) && isText(snapshot) ? { text, operation, pool, volume, snapshot } : undefined;
    case 'setPoolQuota':
      return { text, operation, pool };
    case 'setSnapshotLimit':
      return isText(volume) ? { text, operation, pool, volume } : undefined;
    case 'removeFromGroup':
      return isText(group) && isText(volume) ? { text, operation, group, pool, volume } : undefined;
    case 'listVolumes':
    case 'listTrash':
      return { text, operation, pool };
    case 'listSnapshots':
      return isText(volume) ? { text, operation, pool, volume } : undefined;
    default:
      return undefined;
  }
}

/** The fix in the CLI's words: "pass --shrink to shrink it anyway". */
export function cliHint(fix: ErrorFix): string {
  return renderFix(fix, spelling(fix));
}
