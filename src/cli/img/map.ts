/** strata img map: the whole chain's allocation, printed exactly as qemu-img map prints it. */
import { expectPositionals, parseArgs } from '../args.js';
import type { Subcommand } from '../command.js';
import { CliError } from '../errors.js';
import { OUTPUT_OPTIONS, hexAlt, outputFormatOf, type Console } from '../output.js';
import { chainExtents, type ChainExtent } from './chain-map.js';
import { parseSizeArg } from './create-options.js';
import { openImage } from './open-image.js';

const COMMAND = 'img map';

const HELP = `Usage: strata img map [-f FMT] [--output=human|json] [--start-offset=OFF] [--max-length=LEN] [-U] FILE

Shows where each guest range of FILE's backing chain comes from, as qemu-img map does.

JSON (one object per run): start, length, depth (0 = FILE, 1 = its backing, ...), present
(some layer stores it), zero (reads as zeroes), data (stored data), offset (host offset in that
layer's file, when the data is stored uncompressed). Human output lists the data runs with their
host offsets, and fails on compressed data, as qemu-img does.

Options:
  -f FMT              image format (probed when not given)
  --output=FORMAT     human (default) or json; --json is a synonym
  --start-offset=OFF  first guest offset to map (default 0)
  --max-length=LEN    map at most LEN bytes
  -U                  open even if another process uses the image (no locks are taken)
`;

export function mapEntryJson(e: ChainExtent): string {
  let text =
    `{ "start": ${e.start}, "length": ${e.length}, "depth": ${e.depth}, "present": ${e.present}, ` +
    `"zero": ${e.zero}, "data": ${e.data}`;
  if (e.offset !== undefined) text += `, "offset": ${e.offset}`;
  return `${text}}`;
}

async function run(argv: string[], con: Console): Promise<number> {
  const args = parseArgs(
    argv,
    [
      { short: 'f', value: true },
      ...OUTPUT_OPTIONS,
      { short: 's', long: 'start-offset', name: 'start-offset', value: true },
      { short: 'l', long: 'max-length', name: 'max-length', value: true },
      { short: 'U', long: 'force-share', name: 'U' },
    ],
    COMMAND,
  );
  const output = outputFormatOf(args, COMMAND);
  expectPositionals(args, COMMAND, ['FILE']);
  const path = args.positionals[0] as string;
  const startText = args.value('start-offset');
  const lengthText = args.value('max-length');
  const start = startText === undefined ? 0 : parseSizeArg(startText, 'start offset');
  const maxLength = lengthText === undefined ? undefined : parseSizeArg(lengthText, 'maximum length');

  const opened = await openImage(path, { formatName: args.value('f'), readOnly: true, forceShare: args.has('U') });
  try {
    if (output === 'json') {
      con.stdout('[');
      let first = true;
      for await (const e of chainExtents(opened.layers, start, maxLength)) {
        con.stdout(`${first ? '' : ',\n'}${mapEntryJson(e)}`);
        first = false;
      }
      con.stdout(']\n');
      return 0;
    }
    con.stdout(`${'Offset'.padEnd(16)}${'Length'.padEnd(16)}${'Mapped to'.padEnd(16)}File\n`);
    for await (const e of chainExtents(opened.layers, start, maxLength)) {
      if (!e.data) continue;
      if (e.offset === undefined) {
        throw new CliError('File contains external, encrypted or compressed clusters.', {
          hint: 'use --output=json, which shows such ranges without a host offset',
        });
      }
      con.stdout(`${hexAlt(e.start).padEnd(16)}${hexAlt(e.length).padEnd(16)}${hexAlt(e.offset).padEnd(16)}${e.filename}\n`);
    }
    return 0;
  } finally {
    await opened.close();
  }
}

export const mapCommand: Subcommand = {
  name: 'map',
  summary: 'show where the data of an image and its backing chain is stored',
  help: HELP,
  run,
};
