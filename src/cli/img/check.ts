/**
 * strata img check: qemu-img check. Exit status 0 clean (or repaired), 1 the check could not run,
 * 2 corruptions, 3 leaked clusters only, 63 the format has no checks (raw).
 */
import type { Qcow2CheckResult } from '../../../formats/qcow2/types.js';
import { expectPositionals, parseArgs } from '../args.js';
import type { Subcommand } from '../command.js';
import { isStorageError } from '../../core/errors.js';
import { CliError, UsageError, withContext } from '../errors.js';
import { OUTPUT_OPTIONS, formatJson, outputFormatOf, toFixedC, type Console } from '../output.js';
import { asQcow2, openImage } from './open-image.js';

const COMMAND = 'img check';

const HELP = `Usage: strata img check [-f FMT] [--output=human|json] [-r leaks|all] [-q] [-U] FILE

Checks a qcow2 image's metadata for consistency, as qemu-img check does, and optionally repairs it.

Options:
  -f FMT            image format (probed when not given)
  --output=FORMAT   human (default) or json (qemu-img check's fields); --json is a synonym
  -r leaks          repair leaked clusters only
  -r all            repair all errors (take a copy of the image first)
  -q                quiet: print nothing, only set the exit status
  -U                open even if another process uses the image (no locks are taken)

Exit status: 0 no errors (or all repaired), 1 the check could not complete, 2 corruptions found,
3 only leaked clusters found, 63 the image format does not support checks.
`;

export function checkExitCode(result: Qcow2CheckResult): number {
  if (result.checkErrors > 0) return 1;
  if (result.corruptions > 0) return 2;
  if (result.leaks > 0) return 3;
  return 0;
}

/** qemu-img check --output=json's ImageCheck object: zero counters are left out, as qemu-img does. */
export function checkJson(filename: string, format: string, r: Qcow2CheckResult): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const optional = (key: string, value: number) => {
    if (value !== 0) out[key] = value;
  };
  optional('image-end-offset', r.imageEndOffset);
  optional('compressed-clusters', r.compressedClusters);
  optional('total-clusters', r.totalClusters);
  optional('corruptions', r.corruptions);
  optional('corruptions-fixed', r.corruptionsFixed);
  out['check-errors'] = r.checkErrors;
  optional('leaks', r.leaks);
  optional('leaks-fixed', r.leaksFixed);
  optional('allocated-clusters', r.allocatedClusters);
  out['filename'] = filename;
  out['format'] = format;
  optional('fragmented-clusters', r.fragmentedClusters);
  return out;
}

function percent(part: number, whole: number): string {
  return toFixedC(whole === 0 ? 0 : (part * 100) / whole, 2);
}

/** qemu-img check's human report. */
export function checkHuman(r: Qcow2CheckResult): string {
  let text = '';
  if (r.corruptions === 0 && r.leaks === 0 && r.checkErrors === 0) {
    text += 'No errors were found on the image.\n';
  } else {
    if (r.corruptions > 0) {
      text += `\n${r.corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n`;
    }
    if (r.leaks > 0) {
      text += `\n${r.leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n`;
    }
    if (r.checkErrors > 0) {
      text += `\n${r.checkErrors} internal errors have occurred during the check.\n`;
    }
  }
  if (r.totalClusters !== 0 && r.allocatedClusters !== 0) {
    text +=
      `${r.allocatedClusters}/${r.totalClusters} = ${percent(r.allocatedClusters, r.totalClusters)}% allocated, ` +
      `${percent(r.fragmentedClusters, r.allocatedClusters)}% fragmented, ` +
      `${percent(r.compressedClusters, r.allocatedClusters)}% compressed clusters\n`;
  }
  if (r.imageEndOffset > 0) text += `Image end offset: ${r.imageEndOffset}\n`;
  return text;
}

async function run(argv: string[], con: Console): Promise<number> {
  const args = parseArgs(
    argv,
    [
      { short: 'f', value: true },
      { short: 'r', value: true },
      { short: 'q' },
      { short: 'U', long: 'force-share', name: 'U' },
      ...OUTPUT_OPTIONS,
    ],
    COMMAND,
  );
  const output = outputFormatOf(args, COMMAND);
  const repairText = args.value('r');
  if (repairText !== undefined && repairText !== 'leaks' && repairText !== 'all') {
    throw new UsageError(`${COMMAND}: -r must be 'leaks' or 'all', not '${repairText}'`, `see 'strata ${COMMAND} --help'`);
  }
  const repair = repairText as 'leaks' | 'all' | undefined;
  expectPositionals(args, COMMAND, ['FILE']);
  const path = args.positionals[0] as string;
  const quiet = args.has('q');

  const opened = await openImage(path, {
    formatName: args.value('f'),
    readOnly: repair === undefined,
    forceShare: args.has('U'),
    ignoreBacking: true,
    dirtyPolicy: 'ignore',
    // Tables past the end of the file (a truncated file) are findings to report, not a failed open.
    forCheck: true,
  }).catch((err: unknown) => {
    // The generic hint for damage would suggest this very command.
    if (!(err instanceof CliError) || !isStorageError(err.cause, 'CORRUPT')) throw err;
    throw new CliError(err.message, { cause: err.cause, hint: 'its header or tables are too damaged to check; restore the image from a copy' });
  });
  try {
    const image = asQcow2(opened.image);
    if (image === undefined) {
      throw new CliError(`'${path}' is a ${opened.image.formatName} image, which has no metadata to check`, {
        hint: 'check applies to qcow2 images',
        exitCode: 63,
      });
    }
    let result: Qcow2CheckResult;
    try {
      result = await image.check(repair);
      if (repair !== undefined && (result.corruptionsFixed > 0 || result.leaksFixed > 0)) {
        if (!quiet && output === 'human') {
          con.stdout(
            'The following inconsistencies were found and repaired:\n\n' +
              `    ${result.leaksFixed} leaked clusters\n` +
              `    ${result.corruptionsFixed} corruptions\n\n` +
              'Double checking the fixed image now...\n',
          );
        }
        const fixed = result;
        const again = await image.check();
        // As qemu-img check: what the repair did, then what the second check still finds.
        result = { ...again, leaksFixed: fixed.leaksFixed, corruptionsFixed: fixed.corruptionsFixed, messages: [...fixed.messages, ...again.messages] };
      }
    } catch (err) {
      throw withContext(`could not check '${path}'`, err);
    }
    if (!quiet) for (const message of result.messages) con.stderr(`${message}\n`);
    if (result.checkErrors > 0) {
      // As qemu-img check: no report when the check itself failed.
      throw new CliError(`the check of '${path}' failed: ${result.messages[result.messages.length - 1] ?? 'internal errors'}`, {
        hint: repair === 'leaks' ? "'-r all' rebuilds the refcount structure (take a copy of the image first)" : undefined,
      });
    }
    if (!quiet) {
      if (output === 'json') con.stdout(formatJson(checkJson(path, opened.layers[0]?.formatName ?? 'qcow2', result)));
      else con.stdout(checkHuman(result));
    }
    return checkExitCode(result);
  } finally {
    await opened.close();
  }
}

export const checkCommand: Subcommand = {
  name: 'check',
  summary: 'check (and optionally repair) an image\'s metadata',
  help: HELP,
  run,
};
