/** strata img resize: grow or (with --shrink) shrink an image's virtual size, like qemu-img resize. */
import { StorageError } from '../../core/errors.js';
import type { Image } from '../../core/image.js';
import { parseArgs } from '../args.js';
import type { Subcommand } from '../command.js';
import { UsageError, withContext } from '../errors.js';
import type { Console } from '../output.js';
import { parseSizeArg } from './create-options.js';
import { asQcow2, openImage } from './open-image.js';

const COMMAND = 'img resize';

const HELP = `Usage: strata img resize [-f FMT] [-q] [--shrink] FILE [+|-]SIZE

Changes FILE's virtual size to SIZE, or by +SIZE / -SIZE (k, M, G, T, P suffixes).

Options:
  -f FMT      image format (probed when not given)
  --shrink    allow making the image smaller (data beyond the new end is lost)
  -q          quiet: do not print "Image resized."
`;

interface Resizable {
  resize(newSizeBytes: number, options?: { allowShrink?: boolean }): Promise<void>;
}

function isResizable(image: Image): image is Image & Resizable {
  return typeof (image as Partial<Resizable>).resize === 'function';
}

/** The new size for "SIZE", "+SIZE" or "-SIZE" against the current size. */
export function resolveNewSize(text: string, current: number): number {
  const sign = text[0] === '+' || text[0] === '-' ? text[0] : undefined;
  const amount = parseSizeArg(sign === undefined ? text : text.slice(1), 'size');
  if (sign === '+') return current + amount;
  if (sign === '-') {
    if (amount > current) {
      throw new UsageError(`${COMMAND}: cannot shrink by ${amount} bytes below zero`, `the image has ${current} bytes`);
    }
    return current - amount;
  }
  return amount;
}

async function run(argv: string[], con: Console): Promise<number> {
  // The size comes last and may start with '-': take it out before parsing options, as qemu-img
  // does, so "-1G" is not read as options.
  if (argv.length === 0) {
    throw new UsageError(`${COMMAND}: missing FILE and SIZE`, `see 'strata ${COMMAND} --help'`);
  }
  const sizeText = argv[argv.length - 1] as string;
  const args = parseArgs(
    argv.slice(0, -1),
    [
      { short: 'f', value: true },
      { short: 'q' },
      { long: 'shrink' },
      { long: 'preallocation', value: true },
      { short: 'U', long: 'force-share', name: 'U' },
    ],
    COMMAND,
  );
  if (args.positionals.length !== 1) {
    throw new UsageError(
      args.positionals.length === 0 ? `${COMMAND}: missing FILE or SIZE` : `${COMMAND}: too many arguments`,
      `usage: strata ${COMMAND} [--shrink] FILE [+|-]SIZE`,
    );
  }
  const prealloc = args.value('preallocation');
  if (prealloc !== undefined && prealloc !== 'off') {
    throw new UsageError(`${COMMAND}: --preallocation=${prealloc} is not supported`, 'only --preallocation=off');
  }
  const path = args.positionals[0] as string;
  const opened = await openImage(path, { formatName: args.value('f'), readOnly: false, ignoreBacking: true });
  try {
    const image = opened.image;
    const current = image.sizeBytes;
    const target = resolveNewSize(sizeText, current);
    if (target < current && !args.has('shrink')) {
      throw new UsageError(
        `${COMMAND}: '${path}' would shrink from ${current} to ${target} bytes`,
        'use the --shrink option to perform a shrink operation; data beyond the new end is lost',
      );
    }
    try {
      if (isResizable(image)) {
        await image.resize(target, { allowShrink: args.has('shrink') });
      } else if (image.formatName === 'raw' && asQcow2(image) === undefined) {
        // Raw is the file itself: its size is the virtual size.
        await image.file.truncate(target);
      } else {
        throw new StorageError('UNSUPPORTED', `${image.formatName} images cannot be resized`);
      }
      await image.flush();
    } catch (err) {
      throw withContext(`could not resize '${path}'`, err);
    }
  } finally {
    await opened.close();
  }
  if (!args.has('q')) con.stdout('Image resized.\n');
  return 0;
}

export const resizeCommand: Subcommand = {
  name: 'resize',
  summary: 'change an image\'s virtual size',
  help: HELP,
  run,
};
