/**
 * strata img commit: writes what FILE (and any layers between it and the base) store into the base
 * image, like qemu-img commit. By default the base is FILE's direct backing file and FILE is
 * emptied afterwards (so it reads through to the base again, see emptyTop); -d keeps FILE's
 * contents. With -b naming a deeper base, FILE is not emptied (as with qemu-img).
 */
import { realpath } from 'node:fs/promises';
import { StorageError } from '../../core/errors.js';
import type { Image } from '../../core/image.js';
import { MiB } from '../../core/units.js';
import { expectPositionals, parseArgs } from '../args.js';
import type { Subcommand } from '../command.js';
import { CliError, withContext } from '../errors.js';
import type { Console } from '../output.js';
import { Progress } from '../progress.js';
import { layerExtents, type LayerExtent } from './chain-map.js';
import { asQcow2, openImage, type ChainLayer } from './open-image.js';

const COMMAND = 'img commit';

const HELP = `Usage: strata img commit [-f FMT] [-b BASE] [-d] [-p] [-q] FILE

Writes the data FILE stores into its backing file. With -b, BASE (an image anywhere below FILE in
its backing chain) receives the data of every layer above it.

Options:
  -f FMT    FILE's format (probed when not given)
  -b BASE   the image to commit into (default: FILE's backing file)
  -d        do not empty FILE afterwards
  -p        show progress on stderr
  -q        quiet: do not print "Image committed."
  -t CACHE, -r RATE   accepted for qemu-img compatibility; no effect
`;

const CHUNK_BYTES = 2 * MiB;

async function samePath(a: string, b: string): Promise<boolean> {
  const [ra, rb] = await Promise.all([realpath(a).catch(() => a), realpath(b).catch(() => b)]);
  return ra === rb;
}

/** Ranges that some layer above the base decides: merged, in order, with whether they read as zero. */
async function rangesAbove(
  layers: readonly ChainLayer[],
  baseDepth: number,
  offset: number,
  length: number,
  out: Array<{ start: number; length: number; zero: boolean }>,
  depth = 0,
): Promise<void> {
  if (depth >= baseDepth || length <= 0) return;
  const layer = layers[depth];
  if (layer === undefined) return;
  const extents: LayerExtent[] = await layerExtents(layer.image, offset, length);
  for (const e of extents) {
    if (e.kind === 'unallocated') {
      await rangesAbove(layers, baseDepth, e.guestOffset, e.lengthBytes, out, depth + 1);
    } else {
      out.push({ start: e.guestOffset, length: e.lengthBytes, zero: e.kind === 'zero' });
    }
  }
}

/**
 * Empties the top after a commit so that it reads through to its backing again (qemu-img's
 * bdrv_make_empty). A discard cannot do it: on an image with a backing file, discarded clusters
 * read as zeroes (as in QEMU). Raw tops cannot be emptied and are left as they are.
 */
async function emptyTop(top: Image, path: string): Promise<void> {
  const q = asQcow2(top);
  if (q === undefined) return;
  if (q.info().snapshots.length > 0) {
    throw new StorageError('UNSUPPORTED', `'${path}' has internal snapshots, so it cannot be emptied; use -d to keep its data`);
  }
  await q.makeEmpty();
  await q.flush();
}

async function run(argv: string[], con: Console): Promise<number> {
  const args = parseArgs(
    argv,
    [
      { short: 'f', value: true },
      { short: 'b', value: true },
      { short: 'd' },
      { short: 'p' },
      { short: 'q' },
      { short: 't', value: true },
      { short: 'r', value: true },
    ],
    COMMAND,
  );
  expectPositionals(args, COMMAND, ['FILE']);
  const path = args.positionals[0] as string;
  const basePath = args.value('b');

  // Find the base first (read-only), so that only it is opened writable afterwards.
  let baseDepth = 1;
  {
    const probe = await openImage(path, { formatName: args.value('f'), readOnly: true });
    try {
      if (probe.layers.length < 2) {
        throw new CliError(`'${path}' has no backing file to commit into`, { hint: 'commit needs an image with a backing file' });
      }
      if (basePath !== undefined) {
        let found = -1;
        for (const layer of probe.layers.slice(1)) {
          if (await samePath(layer.path, basePath)) {
            found = layer.depth;
            break;
          }
        }
        if (found < 0) {
          throw new CliError(`'${basePath}' is not in the backing chain of '${path}'`, {
            hint: "list the chain with 'strata img info --backing-chain FILE'",
          });
        }
        baseDepth = found;
      }
    } finally {
      await probe.close();
    }
  }

  const opened = await openImage(path, {
    formatName: args.value('f'),
    readOnly: false,
    writableBacking: ({ depth }) => depth === baseDepth,
  });
  const progress = new Progress({ write: con.stderr }, args.has('p') && !args.has('q'));
  try {
    const top: Image = opened.image;
    const base = opened.layers[baseDepth]?.image;
    if (base === undefined) throw new StorageError('NOT_FOUND', `the backing chain of '${path}' changed while opening it`);
    const size = top.sizeBytes;
    try {
      if (base.sizeBytes < size) {
        const q = asQcow2(base);
        if (q === undefined) {
          throw new StorageError('UNSUPPORTED', `the base is smaller (${base.sizeBytes} bytes) than '${path}' (${size} bytes) and cannot be grown`);
        }
        await q.resize(size);
      }
      const ranges: Array<{ start: number; length: number; zero: boolean }> = [];
      await rangesAbove(opened.layers, baseDepth, 0, size, ranges);
      const buf = new Uint8Array(CHUNK_BYTES);
      for (const r of ranges) {
        const end = r.start + r.length;
        if (r.zero) {
          await base.writeZeroes(r.start, r.length, { mayUnmap: true });
        } else {
          for (let off = r.start; off < end; off += CHUNK_BYTES) {
            const data = buf.subarray(0, Math.min(CHUNK_BYTES, end - off));
            await top.read(off, data);
            await base.write(off, data);
            progress.update(off + data.length, size);
          }
        }
        progress.update(end, size);
      }
      await base.flush();
      if (!args.has('d') && baseDepth === 1) await emptyTop(top, path);
    } catch (err) {
      progress.abort();
      throw withContext(`could not commit '${path}'`, err);
    }
    progress.finish();
  } finally {
    await opened.close();
  }
  if (!args.has('q')) con.stdout('Image committed.\n');
  return 0;
}

export const commitCommand: Subcommand = {
  name: 'commit',
  summary: 'write an image\'s data into its backing file',
  help: HELP,
  run,
};
