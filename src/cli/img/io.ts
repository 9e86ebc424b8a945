/**
 * strata img io: a qemu-io work-alike. Runs the -c commands in order (or lines read from stdin
 * when there is no -c) against one image and prints what qemu-io prints. The exit status is 1 when
 * any command failed (a read -P pattern mismatch included), 0 otherwise.
 */
import type { Image } from '../../core/image.js';
import { parseSizeBytes } from '../../core/units.js';
import { ParsedArgs, expectPositionals, parseArgs } from '../args.js';
import type { Subcommand } from '../command.js';
import { UsageError, describeError } from '../errors.js';
import { hexDump, qemuIoSizeString, qemuIoTimeString, toFixedC, type Console } from '../output.js';
import { layerExtents } from './chain-map.js';
import { openImage, requireQcow2 } from './open-image.js';

const COMMAND = 'img io';

const HELP = `Usage: strata img io [-f FMT] [-r] [-U] [-c COMMAND]... FILE

Runs qemu-io style commands against FILE: each -c COMMAND in order, or one command per line
from stdin when no -c is given. Offsets and lengths take k, M, G suffixes.

Commands:
  read [-P PATTERN] [-v] [-q] OFF LEN    read; -P checks every byte equals PATTERN,
                                         -v dumps the data in hex
  write [-P PATTERN] [-z [-u]] [-c] [-f] [-q] OFF LEN
                                         write PATTERN bytes (default 0xcd); -z writes
                                         zeroes (-u: may unmap), -c compressed (qcow2,
                                         cluster-aligned), -f force unit access
  discard [-q] OFF LEN                   discard a range
  flush                                  flush to stable storage
  map                                    show which ranges this image (not its backing)
                                         allocates
  length                                 print the image's size
  help [COMMAND]                         list the commands
  quit                                   stop reading commands

Options:
  -c COMMAND   a command to run (repeatable)
  -f FMT       image format (probed when not given)
  -r           open read-only
  -U           open even if another process uses the image (no locks are taken)
  -n, -t CACHE, -d DISCARD, -i AIO, -k   accepted for qemu-io compatibility; no effect
`;

/** A command failed; its message has been printed already (or is in message). */
class IoCommandError extends Error {}

interface IoContext {
  image: Image;
  con: Console;
}

interface IoCommand {
  name: string;
  args: string;
  oneline: string;
  min: number;
  max: number;
  options: Array<{ short: string; value?: boolean }>;
  run(ctx: IoContext, args: ParsedArgs): Promise<void>;
}

function parseNumber(text: string, what: string): number {
  let value: number | undefined;
  if (/^0x[0-9a-f]+$/i.test(text)) value = Number.parseInt(text, 16);
  else value = parseSizeBytes(text);
  if (value === undefined || !Number.isSafeInteger(value) || value < 0) {
    throw new IoCommandError(`non-numeric ${what} argument -- ${text}`);
  }
  return value;
}

function parsePattern(text: string): number {
  let value: number;
  if (/^0x[0-9a-f]+$/i.test(text)) value = Number.parseInt(text, 16);
  else if (/^0[0-7]+$/.test(text)) value = Number.parseInt(text, 8);
  else if (/^\d+$/.test(text)) value = Number(text);
  else value = Number.NaN;
  if (!Number.isInteger(value) || value < 0 || value > 255) {
    throw new IoCommandError(`${text} is not a valid pattern byte`);
  }
  return value;
}

function checkRange(image: Image, offset: number, length: number, verb: string): void {
  if (offset + length > image.sizeBytes) {
    throw new IoCommandError(
      `${verb} failed: offset ${offset} + length ${length} is beyond the end of the image (${image.sizeBytes} bytes)`,
    );
  }
}

function report(con: Console, bytes: number, seconds: number): void {
  const t = Math.max(seconds, 1e-9);
  con.stdout(
    `${qemuIoSizeString(bytes)}, 1 ops; ${qemuIoTimeString(seconds)} ` +
      `(${qemuIoSizeString(bytes / t)}/sec and ${toFixedC(1 / t, 4)} ops/sec)\n`,
  );
}

async function timed(action: () => Promise<void>, verb: string): Promise<number> {
  const start = process.hrtime.bigint();
  try {
    await action();
  } catch (err) {
    throw new IoCommandError(`${verb} failed: ${describeError(err)}`);
  }
  return Number(process.hrtime.bigint() - start) / 1e9;
}

function offsetAndLength(args: ParsedArgs): [number, number] {
  return [parseNumber(args.positionals[0] as string, 'offset'), parseNumber(args.positionals[1] as string, 'length')];
}

const COMMANDS: IoCommand[] = [
  {
    name: 'read',
    args: '[-qv] [-P pattern] off len',
    oneline: 'reads a number of bytes at a specified offset',
    min: 2,
    max: 2,
    options: [{ short: 'P', value: true }, { short: 'q' }, { short: 'v' }, { short: 'C' }],
    async run({ image, con }, args) {
      const [offset, length] = offsetAndLength(args);
      const pattern = args.has('P') ? parsePattern(args.value('P') as string) : undefined;
      checkRange(image, offset, length, 'read');
      const buf = new Uint8Array(length);
      const seconds = await timed(() => image.read(offset, buf), 'read');
      let failed = false;
      if (pattern !== undefined && buf.some((b) => b !== pattern)) {
        con.stdout(`Pattern verification failed at offset ${offset}, ${length} bytes\n`);
        failed = true;
      }
      if (!args.has('q')) {
        if (args.has('v')) con.stdout(hexDump(buf, offset));
        con.stdout(`read ${length}/${length} bytes at offset ${offset}\n`);
        report(con, length, seconds);
      }
      if (failed) throw new IoCommandError('');
    },
  },
  {
    name: 'write',
    args: '[-cfquz] [-P pattern] off len',
    oneline: 'writes a number of bytes at a specified offset',
    min: 2,
    max: 2,
    options: [{ short: 'P', value: true }, { short: 'z' }, { short: 'u' }, { short: 'c' }, { short: 'q' }, { short: 'f' }, { short: 'C' }],
    async run({ image, con }, args) {
      const zero = args.has('z');
      const compressed = args.has('c');
      if (zero && args.has('P')) throw new IoCommandError('-z and -P cannot be specified at the same time');
      if (args.has('u') && !zero) throw new IoCommandError('-u requires -z to be specified');
      if (zero && compressed) throw new IoCommandError('-z and -c cannot be specified at the same time');
      const [offset, length] = offsetAndLength(args);
      const pattern = args.has('P') ? parsePattern(args.value('P') as string) : 0xcd;
      checkRange(image, offset, length, 'write');
      const fua = args.has('f');
      let action: () => Promise<void>;
      if (zero) {
        action = () => image.writeZeroes(offset, length, { mayUnmap: args.has('u'), fua });
      } else {
        const data = new Uint8Array(length).fill(pattern);
        if (compressed) {
          const q = requireQcow2(image, 'write -c');
          const cluster = q.clusterSizeBytes;
          action = async () => {
            for (let off = 0; off < length; off += cluster) {
              await q.writeCompressed(offset + off, data.subarray(off, Math.min(length, off + cluster)));
            }
          };
        } else {
          action = () => image.write(offset, data, { fua });
        }
      }
      const seconds = await timed(action, 'write');
      if (!args.has('q')) {
        con.stdout(`wrote ${length}/${length} bytes at offset ${offset}\n`);
        report(con, length, seconds);
      }
    },
  },
  {
    name: 'discard',
    args: '[-q] off len',
    oneline: 'discards a number of bytes at a specified offset',
    min: 2,
    max: 2,
    options: [{ short: 'q' }, { short: 'C' }],
    async run({ image, con }, args) {
      const [offset, length] = offsetAndLength(args);
      checkRange(image, offset, length, 'discard');
      const seconds = await timed(() => image.discard(offset, length), 'discard');
      if (!args.has('q')) {
        con.stdout(`discard ${length}/${length} bytes at offset ${offset}\n`);
        report(con, length, seconds);
      }
    },
  },
  {
    name: 'flush',
    args: '',
    oneline: 'flush all in-core file state to disk',
    min: 0,
    max: 0,
    options: [],
    async run({ image }) {
      await timed(() => image.flush(), 'flush');
    },
  },
  {
    name: 'map',
    args: '',
    oneline: 'prints the allocated areas of a file',
    min: 0,
    max: 0,
    options: [],
    async run({ image, con }) {
      let extents;
      try {
        extents = await layerExtents(image, 0, image.sizeBytes);
      } catch (err) {
        throw new IoCommandError(`map failed: ${describeError(err)}`);
      }
      // qemu-io merges data and zero runs: both are "allocated" in this layer.
      const runs: Array<{ offset: number; length: number; allocated: boolean }> = [];
      for (const e of extents) {
        const allocated = e.kind !== 'unallocated';
        const last = runs[runs.length - 1];
        if (last !== undefined && last.allocated === allocated && last.offset + last.length === e.guestOffset) {
          last.length += e.lengthBytes;
        } else {
          runs.push({ offset: e.guestOffset, length: e.lengthBytes, allocated });
        }
      }
      for (const r of runs) {
        con.stdout(
          `${qemuIoSizeString(r.length)} (0x${r.length.toString(16)}) bytes ${r.allocated ? '   ' : 'not'} allocated ` +
            `at offset ${qemuIoSizeString(r.offset)} (0x${r.offset.toString(16)})\n`,
        );
      }
    },
  },
  {
    name: 'length',
    args: '',
    oneline: 'gets the length of the current file',
    min: 0,
    max: 0,
    options: [],
    async run({ image, con }) {
      con.stdout(`${qemuIoSizeString(image.sizeBytes)}\n`);
    },
  },
];

const ALIASES: Record<string, string> = { r: 'read', w: 'write', l: 'length', f: 'flush' };

function helpText(name?: string): string {
  if (name !== undefined) {
    const cmd = COMMANDS.find((c) => c.name === (ALIASES[name] ?? name));
    if (cmd === undefined) return `command ${name} not found\n`;
    return `\n ${cmd.name} ${cmd.args} -- ${cmd.oneline}\n\n`;
  }
  const lines = COMMANDS.map((c) => `${c.name} ${c.args} -- ${c.oneline}`);
  lines.push('help [command] -- help for one or all commands', 'quit -- exit the program', '', "Use 'help commandname' for extended help.");
  return `${lines.join('\n')}\n`;
}

type LineResult = 'ok' | 'failed' | 'quit';

/** Runs one command line; prints its output and errors. */
export async function runIoLine(ctx: IoContext, line: string): Promise<LineResult> {
  const words = line.trim().split(/\s+/).filter((w) => w.length > 0);
  const first = words[0];
  if (first === undefined || first.startsWith('#')) return 'ok';
  const name = ALIASES[first] ?? first;
  if (name === 'quit' || name === 'q') return 'quit';
  if (name === 'help' || name === '?') {
    ctx.con.stdout(helpText(words[1]));
    return 'ok';
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  if (cmd === undefined) {
    ctx.con.stderr(`command "${first}" not found\n`);
    return 'failed';
  }
  let args: ParsedArgs;
  try {
    args = parseArgs(
      words.slice(1),
      cmd.options.map((o) => ({ short: o.short, value: o.value === true })),
      `${COMMAND} ${cmd.name}`,
    );
  } catch (err) {
    ctx.con.stderr(`${cmd.name}: ${err instanceof UsageError ? err.message.replace(/^.*?: /, '') : describeError(err)}\n`);
    ctx.con.stdout(helpText(cmd.name));
    return 'failed';
  }
  const count = args.positionals.length;
  if (count < cmd.min || count > cmd.max) {
    const expected = cmd.min === cmd.max ? `${cmd.min}` : `between ${cmd.min} and ${cmd.max}`;
    ctx.con.stderr(`bad argument count ${count} to ${cmd.name}, expected ${expected} arguments\n`);
    return 'failed';
  }
  try {
    await cmd.run(ctx, args);
    return 'ok';
  } catch (err) {
    if (err instanceof IoCommandError) {
      if (err.message !== '') ctx.con.stdout(`${err.message}\n`);
      return 'failed';
    }
    ctx.con.stdout(`${cmd.name} failed: ${describeError(err)}\n`);
    return 'failed';
  }
}

async function run(argv: string[], con: Console): Promise<number> {
  const args = parseArgs(
    argv,
    [
      { short: 'c', value: true },
      { short: 'f', value: true },
      { short: 'r' },
      { short: 'U', long: 'force-share', name: 'U' },
      { short: 'n' },
      { short: 't', value: true },
      { short: 'd', value: true },
      { short: 'i', value: true },
      { short: 'k' },
    ],
    COMMAND,
  );
  expectPositionals(args, COMMAND, ['FILE']);
  const path = args.positionals[0] as string;
  const commands = args.values('c');
  if (commands.length === 0 && con.stdinLines === undefined) {
    throw new UsageError(`${COMMAND}: no commands given`, 'give them with -c COMMAND or on stdin');
  }
  const opened = await openImage(path, { formatName: args.value('f'), readOnly: args.has('r'), forceShare: args.has('U') });
  const ctx: IoContext = { image: opened.image, con };
  let failed = false;
  try {
    if (commands.length > 0) {
      for (const line of commands) {
        const result = await runIoLine(ctx, line);
        if (result === 'quit') break;
        if (result === 'failed') failed = true;
      }
    } else if (con.stdinLines !== undefined) {
      const prompt = con.stdinIsTTY === true;
      if (prompt) con.stdout('strata-io> ');
      for await (const line of con.stdinLines()) {
        const result = await runIoLine(ctx, line);
        if (result === 'quit') break;
        if (result === 'failed') failed = true;
        if (prompt) con.stdout('strata-io> ');
      }
    }
  } finally {
    await opened.close();
  }
  return failed ? 1 : 0;
}

export const ioCommand: Subcommand = {
  name: 'io',
  summary: 'run qemu-io style read/write/discard/map commands against an image',
  help: HELP,
  run,
};
