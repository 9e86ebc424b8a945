/**
 * strata img bench: qemu-img bench. Sends COUNT reads (or writes with -w) of BUFFER_SIZE bytes,
 * DEPTH of them in flight at a time, stepping through the image, and prints the wall time.
 */
import { expectPositionals, parseArgs } from '../args.js';
import type { Subcommand } from '../command.js';
import { UsageError, withContext } from '../errors.js';
import { toFixedC, type Console } from '../output.js';
import { parseSizeArg } from './create-options.js';
import { openImage } from './open-image.js';
import { allocAligned } from '../../sys/aligned-buffer.js';

const COMMAND = 'img bench';

const HELP = `Usage: strata img bench [-c COUNT] [-d DEPTH] [-f FMT] [--flush-interval=N] [--no-drain]
                         [-i AIO] [-n] [-o OFFSET] [--pattern=N] [-q] [-s BUFFER_SIZE]
                         [-S STEP_SIZE] [-t CACHE] [-w] [-U] FILE

Runs a simple I/O benchmark on FILE, as qemu-img bench does.

Options:
  -c COUNT            number of requests (default 75000)
  -d DEPTH            requests in flight at a time (default 64)
  -f FMT              image format (probed when not given)
  -o OFFSET           first offset (default 0)
  -s BUFFER_SIZE      bytes per request (default 4096)
  -S STEP_SIZE        offset step between requests (default BUFFER_SIZE); requests wrap at the end
  -w                  write instead of read
  --pattern=N         byte written by -w (default 0)
  --flush-interval=N  flush after every N requests (N >= DEPTH; with -w)
  --no-drain          do not wait for requests in flight before flushing
  -q                  quiet
  -n, -t CACHE, -i AIO, -U   accepted for qemu-img compatibility; no effect
`;

function parseCount(text: string, what: string, min: number): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min) {
    throw new UsageError(`${COMMAND}: invalid ${what} '${text}'`, `give a whole number of at least ${min}`);
  }
  return value;
}

async function run(argv: string[], con: Console): Promise<number> {
  const args = parseArgs(
    argv,
    [
      { short: 'c', value: true },
      { short: 'd', value: true },
      { short: 'f', value: true },
      { short: 'n' },
      { short: 'o', value: true },
      { short: 'q' },
      { short: 's', value: true },
      { short: 'S', value: true },
      { short: 't', value: true },
      { short: 'w' },
      { short: 'i', value: true },
      { short: 'U', long: 'force-share', name: 'U' },
      { long: 'pattern', value: true },
      { long: 'flush-interval', value: true },
      { long: 'no-drain' },
    ],
    COMMAND,
  );
  expectPositionals(args, COMMAND, ['FILE']);
  const path = args.positionals[0] as string;
  const count = args.has('c') ? parseCount(args.value('c') as string, 'request count', 1) : 75000;
  const depth = args.has('d') ? parseCount(args.value('d') as string, 'queue depth', 1) : 64;
  const offset = args.has('o') ? parseSizeArg(args.value('o') as string, 'offset') : 0;
  const bufSize = args.has('s') ? parseSizeArg(args.value('s') as string, 'buffer size') : 4096;
  if (bufSize <= 0) throw new UsageError(`${COMMAND}: the buffer size must be positive`, 'for example -s 4k');
  const step = args.has('S') ? parseSizeArg(args.value('S') as string, 'step size') : bufSize;
  const write = args.has('w');
  const pattern = args.has('pattern') ? parseCount(args.value('pattern') as string, 'pattern', 0) : 0;
  if (pattern > 255) throw new UsageError(`${COMMAND}: invalid pattern ${pattern}`, 'give a byte value 0..255');
  const flushInterval = args.has('flush-interval') ? parseCount(args.value('flush-interval') as string, 'flush interval', 0) : 0;
  const drain = !args.has('no-drain');
  if (flushInterval > 0 && flushInterval < depth) {
    throw new UsageError(`${COMMAND}: the flush interval can't be smaller than the depth`, `use --flush-interval of at least ${depth}`);
  }
  if (!drain && flushInterval === 0) {
    throw new UsageError(`${COMMAND}: --no-drain needs --flush-interval`, 'add --flush-interval=N');
  }
  if (flushInterval > 0 && !write) {
    throw new UsageError(`${COMMAND}: --flush-interval is only for write tests`, 'add -w');
  }
  const cache = args.value('t');
  if (cache !== undefined && !['none', 'writeback', 'writethrough', 'directsync', 'unsafe'].includes(cache)) {
    throw new UsageError(`${COMMAND}: invalid cache mode '${cache}'`, 'use none, writeback, writethrough, directsync or unsafe');
  }
  const aio = args.value('i');
  if (aio !== undefined && !['threads', 'native', 'io_uring'].includes(aio)) {
    throw new UsageError(`${COMMAND}: invalid aio mode '${aio}'`, 'use threads, native or io_uring');
  }
  const quiet = args.has('q');

  const opened = await openImage(path, { formatName: args.value('f'), readOnly: !write, forceShare: args.has('U') });
  try {
    const image = opened.image;
    const size = image.sizeBytes;
    if (bufSize > size) {
      throw new UsageError(`${COMMAND}: the buffer size (${bufSize}) is larger than the image (${size} bytes)`, 'use a smaller -s');
    }
    if (!quiet) {
      con.stdout(
        `Sending ${count} ${write ? 'write' : 'read'} requests, ${bufSize} bytes each, ${depth} in parallel ` +
          `(starting at offset ${offset}, step size ${step})\n`,
      );
      if (flushInterval > 0) con.stdout(`Sending flush every ${flushInterval} requests\n`);
    }

    // DEPTH workers, each with one request in flight; a shared counter hands out request numbers in order.
    if (offset > size - bufSize) {
      throw new UsageError(`${COMMAND}: offset ${offset} leaves no room for a request in the image (${size} bytes)`, 'use a smaller -o');
    }
    let nextOffset = offset;
    let issued = 0;
    let sinceFlush = 0;
    let flushing: Promise<void> | undefined;
    const inFlight = new Set<Promise<void>>();
    const takeOffset = () => {
      const at = nextOffset;
      nextOffset += step;
      // Wrap like qemu-img bench: stay within the image.
      if (size <= bufSize) nextOffset = 0;
      else nextOffset %= size - bufSize;
      return at;
    };
    // One buffer for every request in flight, as qemu-img bench has (its requests share one I/O
    // vector: strace shows every pread at the same address). 32 buffers of 1 MiB would make each
    // request copy to or from memory that is not in the CPU cache, and cost 1.3x the CPU per
    // request of qemu-img doing the same I/O. Page-aligned, as qemu-img's buffer is: the kernel
    // copies to it several times faster.
    const buf = allocAligned(bufSize);
    if (write) buf.fill(pattern);
    const workers = Math.min(depth, count);

    const started = process.hrtime.bigint();
    try {
      const worker = async (): Promise<void> => {
        while (issued < count) {
          if (flushing !== undefined) await flushing;
          if (issued >= count) break;
          issued++;
          const at = takeOffset();
          const request = write ? image.write(at, buf) : image.read(at, buf);
          inFlight.add(request);
          try {
            await request;
          } finally {
            inFlight.delete(request);
          }
          if (flushInterval > 0 && ++sinceFlush >= flushInterval) {
            sinceFlush = 0;
            if (drain) {
              flushing = (async () => {
                await Promise.allSettled([...inFlight]);
                await image.flush();
              })();
              await flushing;
              flushing = undefined;
            } else {
              await image.flush();
            }
          }
        }
      };
      await Promise.all(Array.from({ length: workers }, () => worker()));
      if (write) await image.flush();
    } catch (err) {
      throw withContext(`benchmark on '${path}' failed`, err);
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (!quiet) con.stdout(`Run completed in ${toFixedC(seconds, 3)} seconds.\n`);
  } finally {
    await opened.close();
  }
  return 0;
}

export const benchCommand: Subcommand = {
  name: 'bench',
  summary: 'measure read or write throughput of an image',
  help: HELP,
  run,
};
