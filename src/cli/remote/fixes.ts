/**
 * How the CLI spells an error's fix (core/errors.ts ErrorFix, sent by the daemon in the error
 * body's "fix"): the flag or the strata command an operator types. The REST API spells the same
 * fixes with its fields and routes (src/api/rest/fixes.ts).
 */
import { FIX_OPTIONS, renderFix, type ErrorFix, type FixOption } from '../../core/errors.js';

const FLAGS: Record<FixOption, string> = {
  allowShrink: '--shrink',
  force: '--force',
  sizeBytes: '--size SIZE',
  name: '--name NEW',
};

function spelling(fix: ErrorFix): string {
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
  }
}

const isText = (value: unknown): value is string => typeof value === 'string' && value !== '';

/** The daemon's "fix" as an ErrorFix, or undefined when it is missing or not one this CLI knows. */
export function parseFix(value: unknown): ErrorFix | undefined {
  if (value === null || typeof value !== 'object') return undefined;
  const f = value as Record<string, unknown>;
  if (!isText(f['text'])) return undefined;
  const text = f['text'];
  const option = f['option'];
  if (option !== undefined) return (FIX_OPTIONS as readonly unknown[]).includes(option) ? { text, option: option as FixOption } : undefined;
  const { operation, pool, volume, snapshot, group } = f;
  if (operation === 'deleteGroupSnapshot') return isText(group) && isText(snapshot) ? { text, operation, group, snapshot } : undefined;
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
    default:
      return undefined;
  }
}

/** The fix in the CLI's words: "pass --shrink to shrink it anyway". */
export function cliHint(fix: ErrorFix): string {
  return renderFix(fix, spelling(fix));
}
