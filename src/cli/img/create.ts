/** strata img create: a new qcow2 or raw image, like qemu-img create. */
import { StorageError } from '../../core/errors.js';
import type { HostFile } from '../../core/host-file.js';
import { LocalHostFile } from '../../store/local-file.js';
import { Qcow2Image, resolveCreateOptions } from '../../../formats/qcow2/index.js';
import type { Qcow2CreateOptions } from '../../../formats/qcow2/types.js';
import { RawImage } from '../../../formats/raw/index.js';
import { expectPositionals, parseArgs } from '../args.js';
import type { Subcommand } from '../command.js';
import { UsageError, withContext } from '../errors.js';
import type { Console } from '../output.js';
import {
  formattingLine,
  optionHelp,
  parseCreateOptions,
  parseSizeArg,
  toQcow2CreateOptions,
  type ParsedCreateOptions,
} from './create-options.js';
import { checkFormatName, combineBackingPath, openImage, type FormatName } from './open-image.js';

const COMMAND = 'img create';

const HELP = `Usage: strata img create [-q] [-f FMT] [-b BACKING [-F BACKING_FMT]] [-u] [-o OPTIONS] FILE [SIZE]

Creates a new image FILE of SIZE bytes (k, M, G, T and P suffixes are powers of 1024). With a
backing file, SIZE defaults to the backing file's size.

Options:
  -f FMT           image format: qcow2 or raw (default raw, as qemu-img)
  -o OPTIONS       comma-separated format options; '-o help' lists them. qcow2: cluster_size,
                   refcount_bits, compat (0.10|1.1), lazy_refcounts, extended_l2,
                   compression_type (zlib|zstd), backing_file, backing_fmt, size
  -b BACKING       backing file, relative to FILE's directory unless absolute
  -F BACKING_FMT   backing file format (probed when not given)
  -u               unsafe: do not open the backing file (SIZE is then required)
  -q               quiet: do not print the "Formatting" line
`;

export interface CreateRequest {
  path: string;
  format: FormatName;
  options: ParsedCreateOptions;
  sizeBytes: number;
  backingFile: string | undefined;
  backingFormat: string | undefined;
}

function qcow2Options(request: CreateRequest): Qcow2CreateOptions {
  return toQcow2CreateOptions(request.options, request.sizeBytes, {
    file: request.backingFile,
    format: request.backingFormat,
  });
}

/** Writes a new empty image of the requested format into path (truncating what was there). */
export async function createImageFile(request: CreateRequest): Promise<void> {
  if (request.format === 'qcow2') {
    // Check the options before touching the file, so a mistake leaves nothing behind.
    try {
      resolveCreateOptions(qcow2Options(request));
    } catch (err) {
      throw withContext(`could not create '${request.path}'`, err);
    }
  }
  let file: HostFile;
  try {
    file = await LocalHostFile.open(request.path, { create: true });
  } catch (err) {
    throw withContext(`could not create '${request.path}'`, err);
  }
  try {
    await file.truncate(0);
    if (request.format === 'qcow2') {
      await Qcow2Image.create(file, qcow2Options(request));
    } else {
      if (request.backingFile !== undefined) {
        throw new StorageError('UNSUPPORTED', 'raw images cannot have a backing file (use -f qcow2)');
      }
      await RawImage.create(file, request.sizeBytes);
    }
    await file.flush();
  } catch (err) {
    await file.close().catch(() => {});
    throw withContext(`could not create '${request.path}'`, err);
  }
  await file.close();
}

async function run(argv: string[], con: Console): Promise<number> {
  const args = parseArgs(
    argv,
    [
      { short: 'f', value: true },
      { short: 'o', value: true },
      { short: 'b', value: true },
      { short: 'F', value: true },
      { short: 'u' },
      { short: 'q' },
    ],
    COMMAND,
  );
  const format = checkFormatName(args.value('f') ?? 'raw');
  const parsed = parseCreateOptions(args.values('o'), format);
  if (parsed.helpRequested) {
    con.stdout(optionHelp(format));
    return 0;
  }
  expectPositionals(args, COMMAND, ['FILE', 'SIZE'], 1);
  const path = args.positionals[0] as string;
  const sizeText = args.positionals[1];

  const backingFile = args.value('b') ?? parsed.backingFile;
  let backingFormat = args.value('F') ?? parsed.backingFormat;
  if (backingFormat !== undefined && backingFile === undefined) {
    throw new UsageError(`${COMMAND}: -F needs a backing file`, 'give one with -b BACKING');
  }
  if (backingFile !== undefined && format === 'raw') {
    throw new UsageError(`${COMMAND}: raw images cannot have a backing file`, 'use -f qcow2');
  }
  if (backingFormat !== undefined) backingFormat = checkFormatName(backingFormat, 'backing format');

  let sizeBytes: number | undefined;
  if (sizeText !== undefined) {
    if (parsed.sizeBytes !== undefined) {
      throw new UsageError(`${COMMAND}: the image size is given twice`, 'give either SIZE or -o size=..., not both');
    }
    sizeBytes = parseSizeArg(sizeText, 'image size');
  } else {
    sizeBytes = parsed.sizeBytes;
  }

  if (backingFile !== undefined && !args.has('u')) {
    // Open the backing file as the new image will (relative to its directory) to check it and
    // learn its size and format.
    const backingPath = combineBackingPath(path, backingFile);
    const backing = await openImage(backingPath, {
      formatName: backingFormat,
      readOnly: true,
      ignoreBacking: true,
    }).catch((err: unknown) => {
      throw withContext(`could not open backing file '${backingFile}'`, err);
    });
    try {
      backingFormat ??= backing.layers[0]?.formatName;
      sizeBytes ??= backing.image.sizeBytes;
    } finally {
      await backing.close();
    }
  }
  if (sizeBytes === undefined) {
    throw new UsageError(
      `${COMMAND}: image creation needs a size`,
      backingFile === undefined ? 'give SIZE after FILE' : 'give SIZE after FILE when using -u',
    );
  }

  if (!args.has('q')) {
    con.stdout(formattingLine(path, format, parsed, sizeBytes, { file: backingFile, format: backingFormat }));
  }
  await createImageFile({ path, format, options: parsed, sizeBytes, backingFile, backingFormat });
  return 0;
}

export const createCommand: Subcommand = {
  name: 'create',
  summary: 'create a new qcow2 or raw image',
  help: HELP,
  run,
};
