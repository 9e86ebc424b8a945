/**
 * strata img rebase: changes the backing file of a qcow2 image, like qemu-img rebase.
 *
 * Safe mode (default): wherever FILE leaves a range to its backing and the old and new backing
 * read differently, the old contents are written into FILE first, so the guest sees the same data
 * afterwards; then the header is updated. "-b ''" removes the backing (everything the old backing
 * supplied that is not zero is copied in). -u (unsafe) only rewrites the header.
 */
import { StorageError } from '../../core/errors.js';
import type { Image } from '../../core/image.js';
import { alignDown } from '../../core/units.js';
import { parseArgs, expectPositionals } from '../args.js';
import type { Subcommand } from '../command.js';
import { UsageError, withContext } from '../errors.js';
import type { Console } from '../output.js';
import { Progress } from '../progress.js';
import { ExtentCursor, isZero, layerExtents } from './chain-map.js';
import {
  checkFormatName,
  combineBackingPath,
  openImage,
  probeFormatOfPath,
  requireQcow2,
  type ChainLayer,
  type OpenedImage,
} from './open-image.js';

const COMMAND = 'img rebase';

const HELP = `Usage: strata img rebase [-f FMT] [-F BACKING_FMT] [-u] [-p] [-q] [-U] -b BACKING FILE

Makes BACKING the backing file of FILE (a qcow2 image). BACKING is stored as given and resolved
relative to FILE's directory unless absolute; -b '' removes the backing file.

Options:
  -b BACKING       the new backing file ('' for none)
  -F BACKING_FMT   the new backing file's format (probed when not given)
  -f FMT           FILE's format (probed when not given)
  -u               unsafe: only change the name in the header; the new backing must already
                   hold the same data where FILE relies on it
  -p               show progress on stderr
  -q               quiet
  -U               accepted for qemu-img compatibility (no locks are taken)
`;

/** Reads [offset, offset + buf.length) of a chain, zeroes past its end or where there is none. */
async function readLayerOrZero(image: Image | undefined, offset: number, buf: Uint8Array): Promise<void> {
  buf.fill(0);
  if (image === undefined) return;
  const end = Math.min(image.sizeBytes, offset + buf.length);
  if (end > offset) await image.read(offset, buf.subarray(0, end - offset));
}

async function zeroAt(cursor: ExtentCursor | undefined, offset: number, end: number): Promise<boolean> {
  if (cursor === undefined) return true;
  const e = await cursor.at(offset);
  if (e === undefined) return true; // past the end of that chain: zeroes
  return !e.data && e.start + e.length >= end;
}

async function copyDifferences(
  top: OpenedImage,
  newBacking: OpenedImage | undefined,
  progress: Progress,
): Promise<void> {
  const image = requireQcow2(top.image, 'rebase');
  const oldLayers: ChainLayer[] = top.layers.slice(1);
  const oldImage = oldLayers[0]?.image;
  const newImage = newBacking?.image;
  const oldCursor = oldLayers.length > 0 ? new ExtentCursor(oldLayers, 0) : undefined;
  const newCursor = newBacking !== undefined ? new ExtentCursor(newBacking.layers, 0) : undefined;
  const chunk = image.clusterSizeBytes;
  const size = image.sizeBytes;
  const oldBuf = new Uint8Array(chunk);
  const newBuf = new Uint8Array(chunk);
  for (const run of await layerExtents(image, 0, size)) {
    const runEnd = run.guestOffset + run.lengthBytes;
    if (run.kind !== 'unallocated') {
      progress.update(runEnd, size);
      continue;
    }
    for (let off = run.guestOffset; off < runEnd; ) {
      const end = Math.min(runEnd, alignDown(off, chunk) + chunk);
      const n = end - off;
      // Both backings read as zeroes here: nothing can differ.
      const oldZero = off >= (oldImage?.sizeBytes ?? 0) || (await zeroAt(oldCursor, off, end));
      const newZero = off >= (newImage?.sizeBytes ?? 0) || (await zeroAt(newCursor, off, end));
      if (!(oldZero && newZero)) {
        const a = oldBuf.subarray(0, n);
        const b = newBuf.subarray(0, n);
        await readLayerOrZero(oldZero ? undefined : oldImage, off, a);
        await readLayerOrZero(newZero ? undefined : newImage, off, b);
        let same = a.length === b.length;
        for (let i = 0; same && i < n; i++) if (a[i] !== b[i]) same = false;
        if (!same) {
          if (isZero(a)) await image.writeZeroes(off, n);
          else await image.write(off, a);
        }
      }
      off = end;
      progress.update(off, size);
    }
  }
}

async function run(argv: string[], con: Console): Promise<number> {
  const args = parseArgs(
    argv,
    [
      { short: 'b', value: true },
      { short: 'F', value: true },
      { short: 'f', value: true },
      { short: 'u' },
      { short: 'p' },
      { short: 'q' },
      { short: 'U', long: 'force-share', name: 'U' },
      { short: 't', value: true },
      { short: 'T', value: true },
      { short: 'c' },
    ],
    COMMAND,
  );
  expectPositionals(args, COMMAND, ['FILE']);
  const path = args.positionals[0] as string;
  const newName = args.value('b');
  if (newName === undefined) {
    throw new UsageError(`${COMMAND}: no new backing file given`, "give one with -b BACKING, or -b '' to remove it");
  }
  if (args.has('c')) {
    throw new UsageError(`${COMMAND}: -c (compressed rebase) is not supported`, 'run without -c');
  }
  let newFormat = args.value('F');
  if (newFormat !== undefined) newFormat = checkFormatName(newFormat, 'backing format');
  if (newName === '' && newFormat !== undefined) {
    throw new UsageError(`${COMMAND}: -F makes no sense without a backing file`, "drop -F when using -b ''");
  }
  const unsafe = args.has('u');
  const newPath = newName === '' ? undefined : combineBackingPath(path, newName);

  const top = await openImage(path, { formatName: args.value('f'), readOnly: false, ignoreBacking: unsafe });
  try {
    const image = requireQcow2(top.image, 'rebase');
    if (unsafe) {
      if (newPath !== undefined && newFormat === undefined) {
        // Record the format when the new backing can be probed; leave it out otherwise.
        newFormat = await probeFormatOfPath(newPath).catch(() => undefined);
      }
    } else {
      let newBacking: OpenedImage | undefined;
      if (newPath !== undefined) {
        newBacking = await openImage(newPath, { formatName: newFormat, readOnly: true }).catch((err: unknown) => {
          throw withContext(`could not open new backing file '${newName}'`, err);
        });
        newFormat ??= newBacking.layers[0]?.formatName;
      }
      const progress = new Progress({ write: con.stderr }, args.has('p') && !args.has('q'));
      try {
        await copyDifferences(top, newBacking, progress);
        await image.flush();
      } catch (err) {
        progress.abort();
        throw withContext(`could not rebase '${path}'`, err);
      } finally {
        await newBacking?.close();
      }
      progress.finish();
    }
    try {
      await image.setBackingFile(newName === '' ? undefined : newName, newName === '' ? undefined : newFormat);
      await image.flush();
    } catch (err) {
      if (err instanceof StorageError) throw withContext(`could not change the backing file of '${path}'`, err);
      throw err;
    }
  } finally {
    await top.close();
  }
  return 0;
}

export const rebaseCommand: Subcommand = {
  name: 'rebase',
  summary: 'change the backing file of an image, keeping its contents (or not, with -u)',
  help: HELP,
  run,
};
