/**
 * strata img convert: copies an image's guest contents (through its backing chain) into a new image
 * of another format, like qemu-img convert. Ranges that read as zeroes are skipped, and data blocks
 * of -S bytes that are all zero are not written, so the output stays sparse.
 */
import type { Image } from '../../core/image.js';
import { alignDown, MiB } from '../../core/units.js';
import { expectPositionals, parseArgs } from '../args.js';
import type { Subcommand } from '../command.js';
import { CliError, UsageError, withContext } from '../errors.js';
import type { Console } from '../output.js';
import { Progress } from '../progress.js';
import { chainExtents, isZero } from './chain-map.js';
import { createImageFile } from './create.js';
import { parseCreateOptions, parseSizeArg } from './create-options.js';
import { checkFormatName, openImage, requireQcow2, type OpenedImage } from './open-image.js';
import { allocAligned } from '../../sys/aligned-buffer.js';

const COMMAND = 'img convert';

const HELP = `Usage: strata img convert [-f FMT] [-O OUTPUT_FMT] [-o OPTIONS] [-c] [-p] [-q] [-n] [-S SIZE] [-U] IN OUT

Copies the guest contents of IN (read through its backing chain) into a new image OUT.

Options:
  -f FMT          input format (probed when not given)
  -O OUTPUT_FMT   output format: raw (default, as qemu-img) or qcow2
  -o OPTIONS      output format options, as for 'strata img create' (e.g. cluster_size=64k)
  -c              compress every cluster of the output (qcow2 only)
  -p              show progress on stderr
  -q              quiet
  -n              do not create OUT: write into an existing image of at least IN's size
  -S SIZE         blocks of SIZE bytes that are all zero are not written (default 4k);
                  0 writes everything, so the output is fully allocated
  -U              open IN even if another process uses it (no locks are taken)
  -t CACHE, -T CACHE, -m N, -W   accepted for qemu-img compatibility; no effect
`;

const CHUNK_BYTES = 2 * MiB;

interface CopyContext {
  source: Image;
  target: Image;
  /** The target already reads as zeroes everywhere (freshly created). */
  targetZeroed: boolean;
  /** -S: the block size for zero detection; 0 = write everything. */
  sparseBytes: number;
  progress: Progress;
  total: number;
}

async function copyZeroRange(ctx: CopyContext, start: number, length: number): Promise<void> {
  if (ctx.sparseBytes === 0) {
    // Fully allocated output: write real zeroes.
    const zeroes = new Uint8Array(Math.min(CHUNK_BYTES, length));
    for (let off = start; off < start + length; off += zeroes.length) {
      const n = Math.min(zeroes.length, start + length - off);
      await ctx.target.write(off, zeroes.subarray(0, n));
    }
    return;
  }
  if (!ctx.targetZeroed) await ctx.target.writeZeroes(start, length, { mayUnmap: true });
}

/** Writes buf (guest bytes at offset) skipping, or zeroing, its all-zero blocks of -S bytes. */
async function writeSparse(ctx: CopyContext, offset: number, buf: Uint8Array): Promise<void> {
  if (ctx.sparseBytes === 0) {
    await ctx.target.write(offset, buf);
    return;
  }
  const block = ctx.sparseBytes;
  let runStart = -1;
  let zeroStart = -1;
  const flushData = async (end: number) => {
    if (runStart >= 0) await ctx.target.write(offset + runStart, buf.subarray(runStart, end));
    runStart = -1;
  };
  const flushZero = async (end: number) => {
    if (zeroStart >= 0 && !ctx.targetZeroed) {
      await ctx.target.writeZeroes(offset + zeroStart, end - zeroStart, { mayUnmap: true });
    }
    zeroStart = -1;
  };
  // Blocks are aligned to guest offsets, so the output's holes line up with its clusters.
  let pos = 0;
  while (pos < buf.length) {
    const end = Math.min(buf.length, alignDown(offset + pos, block) + block - offset);
    const zero = isZero(buf.subarray(pos, end));
    if (zero) {
      await flushData(pos);
      if (zeroStart < 0) zeroStart = pos;
    } else {
      await flushZero(pos);
      if (runStart < 0) runStart = pos;
    }
    pos = end;
  }
  await flushData(buf.length);
  await flushZero(buf.length);
}

async function copyPlain(ctx: CopyContext, layers: OpenedImage['layers']): Promise<void> {
  const chunk = allocAligned(CHUNK_BYTES);
  for await (const e of chainExtents(layers)) {
    const end = e.start + e.length;
    if (!e.data) {
      await copyZeroRange(ctx, e.start, e.length);
      ctx.progress.update(end, ctx.total);
      continue;
    }
    for (let off = e.start; off < end; off += CHUNK_BYTES) {
      const n = Math.min(CHUNK_BYTES, end - off);
      const buf = chunk.subarray(0, n);
      await ctx.source.read(off, buf);
      await writeSparse(ctx, off, buf);
      ctx.progress.update(off + n, ctx.total);
    }
  }
}

async function copyCompressed(ctx: CopyContext, layers: OpenedImage['layers']): Promise<void> {
  const target = requireQcow2(ctx.target, 'convert -c');
  const cluster = target.clusterSizeBytes;
  const size = ctx.source.sizeBytes;
  let nextUnwritten = 0;
  const buf = new Uint8Array(cluster);
  for await (const e of chainExtents(layers)) {
    const end = e.start + e.length;
    if (!e.data) {
      // An existing target (-n) may hold data here; a fresh one reads as zeroes already.
      if (!ctx.targetZeroed) {
        const from = Math.max(e.start, nextUnwritten);
        if (end > from) await target.writeZeroes(from, end - from, { mayUnmap: true });
      }
      ctx.progress.update(end, ctx.total);
      continue;
    }
    for (let c = Math.max(alignDown(e.start, cluster), nextUnwritten); c < end; c += cluster) {
      const n = Math.min(cluster, size - c);
      const data = buf.subarray(0, n);
      await ctx.source.read(c, data);
      if (!isZero(data)) await target.writeCompressed(c, data);
      nextUnwritten = c + cluster;
      ctx.progress.update(Math.min(c + n, end), ctx.total);
    }
  }
}

async function run(argv: string[], con: Console): Promise<number> {
  const args = parseArgs(
    argv,
    [
      { short: 'f', value: true },
      { short: 'O', value: true },
      { short: 'o', value: true },
      { short: 'c' },
      { short: 'p' },
      { short: 'q' },
      { short: 'n' },
      { short: 'S', value: true },
      { short: 'U', long: 'force-share', name: 'U' },
      { short: 't', value: true },
      { short: 'T', value: true },
      { short: 'm', value: true },
      { short: 'W' },
    ],
    COMMAND,
  );
  expectPositionals(args, COMMAND, ['IN', 'OUT']);
  const [inPath, outPath] = args.positionals as [string, string];
  const outFormat = checkFormatName(args.value('O') ?? 'raw', 'output format');
  const compress = args.has('c');
  if (compress && outFormat !== 'qcow2') {
    throw new UsageError(`${COMMAND}: -c needs a qcow2 output`, 'add -O qcow2');
  }
  const sparseText = args.value('S');
  const sparseBytes = sparseText === undefined ? 4096 : parseSizeArg(sparseText, 'sparse block size (-S)');
  if (sparseBytes % 512 !== 0) {
    throw new UsageError(`${COMMAND}: -S must be a multiple of 512, not ${sparseBytes}`, 'for example -S 4k');
  }
  const noCreate = args.has('n');
  const createOptions = parseCreateOptions(args.values('o'), outFormat);
  if (createOptions.backingFile !== undefined || createOptions.backingFormat !== undefined) {
    throw new UsageError(`${COMMAND}: backing_file is not supported by convert`, "convert, then use 'strata img rebase -u'");
  }
  if (noCreate && args.values('o').length > 0) {
    throw new UsageError(`${COMMAND}: -o cannot be used with -n`, 'the existing output keeps its options');
  }

  const source = await openImage(inPath, { formatName: args.value('f'), readOnly: true, forceShare: args.has('U') });
  try {
    const size = source.image.sizeBytes;
    if (!noCreate) {
      await createImageFile({
        path: outPath,
        format: outFormat,
        options: createOptions,
        sizeBytes: size,
        backingFile: undefined,
        backingFormat: undefined,
      });
    }
    const target = await openImage(outPath, { formatName: args.has('O') || !noCreate ? outFormat : undefined, readOnly: false });
    try {
      if (target.image.sizeBytes < size) {
        throw new CliError(`'${outPath}' is smaller (${target.image.sizeBytes} bytes) than '${inPath}' (${size} bytes)`, {
          hint: "grow it with 'strata img resize', or convert without -n",
        });
      }
      const progress = new Progress({ write: con.stderr }, args.has('p') && !args.has('q'));
      const ctx: CopyContext = {
        source: source.image,
        target: target.image,
        targetZeroed: !noCreate,
        sparseBytes,
        progress,
        total: size,
      };
      try {
        if (compress) await copyCompressed(ctx, source.layers);
        else await copyPlain(ctx, source.layers);
        await target.image.flush();
      } catch (err) {
        progress.abort();
        throw withContext(`could not convert '${inPath}' to '${outPath}'`, err);
      }
      progress.finish();
    } finally {
      await target.close();
    }
  } finally {
    await source.close();
  }
  return 0;
}

export const convertCommand: Subcommand = {
  name: 'convert',
  summary: 'copy an image into a new image, possibly of another format or compressed',
  help: HELP,
  run,
};
