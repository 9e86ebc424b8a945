/**
 * strata img compare: qemu-img compare. Exit status 0 identical, 1 different, 2 an error occurred
 * (argument mistakes exit 1, as qemu-img's do). Images of different sizes are equal when the
 * larger one's extra part reads as zeroes, unless -s (strict) is given.
 */
import type { Image } from '../../core/image.js';
import { alignDown, MiB } from '../../core/units.js';
import { expectPositionals, parseArgs } from '../args.js';
import type { Subcommand } from '../command.js';
import { CliError, UsageError, describeError } from '../errors.js';
import type { Console } from '../output.js';
import { Progress } from '../progress.js';
import { ExtentCursor, chainExtents, type ChainExtent } from './chain-map.js';
import { openImage, type OpenedImage } from './open-image.js';

const COMMAND = 'img compare';

const HELP = `Usage: strata img compare [-f FMT] [-F FMT] [-s] [-p] [-q] [-U] IMG1 IMG2

Compares the guest contents of two images (each read through its backing chain).

Options:
  -f FMT   format of IMG1 (probed when not given)
  -F FMT   format of IMG2 (probed when not given)
  -s       strict: images of different sizes, or with different allocation, differ
  -p       show progress on stderr
  -q       quiet: print nothing, only set the exit status
  -U       open even if another process uses the images (no locks are taken)

Exit status: 0 the images are identical, 1 they differ, 2 an error occurred.
`;

const CHUNK_BYTES = MiB;
const SECTOR = 512;

/** Index of the first differing byte, or -1. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  const words = a.byteOffset % 4 === 0 && b.byteOffset % 4 === 0 ? n >>> 2 : 0;
  let i = 0;
  if (words > 0) {
    const wa = new Uint32Array(a.buffer, a.byteOffset, words);
    const wb = new Uint32Array(b.buffer, b.byteOffset, words);
    let w = 0;
    while (w < words && wa[w] === wb[w]) w++;
    i = w * 4;
  }
  while (i < n && a[i] === b[i]) i++;
  return i < n ? i : -1;
}

function firstNonZero(a: Uint8Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== 0) return i;
  return -1;
}

function readsAsZero(e: ChainExtent): boolean {
  return !e.data;
}

/** Reads [offset, offset + length) of image and returns the sector-aligned offset of the first non-zero byte. */
async function findNonZero(image: Image, offset: number, length: number): Promise<number | undefined> {
  for (let off = offset; off < offset + length; off += CHUNK_BYTES) {
    const buf = new Uint8Array(Math.min(CHUNK_BYTES, offset + length - off));
    await image.read(off, buf);
    const at = firstNonZero(buf);
    if (at >= 0) return alignDown(off + at, SECTOR);
  }
  return undefined;
}

type Outcome = { kind: 'identical' } | { kind: 'differ'; message: string };

async function compareImages(
  a: OpenedImage,
  b: OpenedImage,
  strict: boolean,
  progress: Progress,
  warn: (text: string) => void,
): Promise<Outcome> {
  const sizeA = a.image.sizeBytes;
  const sizeB = b.image.sizeBytes;
  if (sizeA !== sizeB) {
    if (strict) return { kind: 'differ', message: 'Strict mode: Image size mismatch!' };
    warn('Warning: Image size mismatch!\n');
  }
  const common = Math.min(sizeA, sizeB);
  const total = Math.max(sizeA, sizeB);
  const cursorA = new ExtentCursor(a.layers, 0);
  const cursorB = new ExtentCursor(b.layers, 0);
  let offset = 0;
  while (offset < common) {
    const ea = await cursorA.at(offset);
    const eb = await cursorB.at(offset);
    if (ea === undefined || eb === undefined) break;
    const end = Math.min(ea.start + ea.length, eb.start + eb.length, common);
    if (strict && (ea.present !== eb.present || ea.zero !== eb.zero || ea.data !== eb.data)) {
      return { kind: 'differ', message: `Strict mode: Offset ${offset} block status mismatch!` };
    }
    const zeroA = readsAsZero(ea);
    const zeroB = readsAsZero(eb);
    if (zeroA && zeroB) {
      // Both read as zeroes: nothing to read.
    } else if (zeroA || zeroB) {
      const at = await findNonZero(zeroA ? b.image : a.image, offset, end - offset);
      if (at !== undefined) return { kind: 'differ', message: `Content mismatch at offset ${at}!` };
    } else {
      for (let off = offset; off < end; off += CHUNK_BYTES) {
        const n = Math.min(CHUNK_BYTES, end - off);
        const bufA = new Uint8Array(n);
        const bufB = new Uint8Array(n);
        await Promise.all([a.image.read(off, bufA), b.image.read(off, bufB)]);
        const at = firstDifference(bufA, bufB);
        if (at >= 0) return { kind: 'differ', message: `Content mismatch at offset ${alignDown(off + at, SECTOR)}!` };
        progress.update(off + n, total);
      }
    }
    offset = end;
    progress.update(offset, total);
  }
  if (sizeA !== sizeB) {
    // The larger image's extra part must read as zeroes.
    const larger = sizeA > sizeB ? a : b;
    for await (const e of chainExtents(larger.layers, common)) {
      if (e.data) {
        const at = await findNonZero(larger.image, e.start, e.length);
        if (at !== undefined) return { kind: 'differ', message: `Content mismatch at offset ${at}!` };
      }
      progress.update(e.start + e.length, total);
    }
  }
  return { kind: 'identical' };
}

async function run(argv: string[], con: Console): Promise<number> {
  const args = parseArgs(
    argv,
    [
      { short: 'f', value: true },
      { short: 'F', value: true },
      { short: 's' },
      { short: 'p' },
      { short: 'q' },
      { short: 'U', long: 'force-share', name: 'U' },
      { short: 'T', value: true },
    ],
    COMMAND,
  );
  expectPositionals(args, COMMAND, ['IMG1', 'IMG2']);
  const [pathA, pathB] = args.positionals as [string, string];
  const quiet = args.has('q');
  const say = (text: string) => {
    if (!quiet) con.stdout(text);
  };
  try {
    const a = await openImage(pathA, { formatName: args.value('f'), readOnly: true, forceShare: args.has('U') });
    try {
      const b = await openImage(pathB, { formatName: args.value('F'), readOnly: true, forceShare: args.has('U') });
      try {
        const progress = new Progress({ write: con.stderr }, args.has('p') && !quiet);
        let outcome: Outcome;
        try {
          outcome = await compareImages(a, b, args.has('s'), progress, say);
        } catch (err) {
          progress.abort();
          throw err;
        }
        progress.finish();
        if (outcome.kind === 'differ') {
          say(`${outcome.message}\n`);
          return 1;
        }
        say('Images are identical.\n');
        return 0;
      } finally {
        await b.close();
      }
    } finally {
      await a.close();
    }
  } catch (err) {
    if (err instanceof UsageError) throw err;
    if (err instanceof CliError) throw new CliError(err.message, { hint: err.hint, cause: err.cause, exitCode: 2 });
    throw new CliError(describeError(err), { cause: err, exitCode: 2 });
  }
}

export const compareCommand: Subcommand = {
  name: 'compare',
  summary: 'check whether two images have the same contents',
  help: HELP,
  run,
};
