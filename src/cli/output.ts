/**
 * Output formatting for the CLI: where text goes (stdout/stderr through a Console, so tests can
 * capture it), JSON in qemu-img's layout, and the number formats qemu-img and qemu-io print.
 */
import type { ParsedArgs } from './args.js';
import { UsageError } from './errors.js';

export interface Console {
  stdout(text: string): void;
  stderr(text: string): void;
  /** Lines typed on stdin (qemu-io's interactive mode); undefined when there is no stdin. */
  stdinLines?: () => AsyncIterable<string>;
  /** True when stdin is a terminal (the prompt is printed only then). */
  stdinIsTTY?: boolean;
}

/**
 * Thrown when stdout's reader has gone (EPIPE: `strata status | head -3`, `... | true`): the command
 * stops at its next write and main() ends it quietly with status 0, as Unix tools stop writing
 * when their reader does (no error line, no stack trace). Every write to stdout goes through
 * checkStdoutOpen, the Console's and the image data's alike (remote/streams.ts).
 */
export class StdoutClosedError extends Error {
  constructor() {
    super('stdout was closed by the command reading it');
    this.name = 'StdoutClosedError';
  }
}

let stdoutWatched = false;
let stdoutClosed = false;

/**
 * Takes stdout's EPIPE, once per process. Without a listener Node throws it as an unhandled
 * 'error' event (a stack trace, exit 1) a tick after the write that met the closed pipe.
 */
function watchStdout(): void {
  if (stdoutWatched) return;
  stdoutWatched = true;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') stdoutClosed = true;
    // Anything else (EIO, ENOSPC on a redirected file) is a real failure: reported as before.
    else throw err;
  });
}

/** True when err, or an error it wraps (withContext), is stdout's reader having gone. */
export function causedByClosedStdout(err: unknown): boolean {
  for (let e = err; e instanceof Error; e = e.cause) if (e instanceof StdoutClosedError) return true;
  return false;
}

/** True for the error of a write to a pipe nobody reads any more. */
export function isClosedPipe(err: unknown): boolean {
  return err instanceof StdoutClosedError || (err instanceof Error && (err as NodeJS.ErrnoException).code === 'EPIPE');
}

/**
 * Throws StdoutClosedError once stdout's reader has gone. A write that meets the closed pipe
 * marks the stream errored at once; its 'error' event comes a tick later, so both are looked at.
 */
export function checkStdoutOpen(): void {
  watchStdout();
  if (stdoutClosed || isClosedPipe(process.stdout.errored)) throw new StdoutClosedError();
}

export function processConsole(): Console {
  watchStdout();
  return {
    stdout: (text) => {
      checkStdoutOpen();
      process.stdout.write(text);
    },
    stderr: (text) => {
      process.stderr.write(text);
    },
    stdinLines: () => readLines(process.stdin),
    stdinIsTTY: process.stdin.isTTY === true,
  };
}

async function* readLines(stream: NodeJS.ReadableStream): AsyncIterable<string> {
  const { createInterface } = await import('node:readline');
  const rl = createInterface({ input: stream, crlfDelay: Infinity, terminal: false });
  try {
    for await (const line of rl) yield line;
  } finally {
    rl.close();
  }
}

export type OutputFormat = 'human' | 'json';

/** JSON exactly as qemu-img prints it: four-space indentation, keys in insertion order. */
export function formatJson(value: unknown): string {
  return `${JSON.stringify(value, null, 4)}\n`;
}

/**
 * printf("%.Nf") as glibc does it: like toFixed, except exact ties round to even (glibc prints
 * 1.0625 with %.3f as "1.062"; toFixed gives "1.063").
 */
export function toFixedC(value: number, digits: number): string {
  const plain = value.toFixed(digits);
  if (!Number.isFinite(value) || Math.abs(value) >= 1e21) return plain;
  const precise = Math.abs(value).toFixed(Math.min(100, digits + 60));
  const dot = precise.indexOf('.');
  const tail = precise.slice(dot + 1 + digits);
  if (!/^50*$/.test(tail)) return plain;
  // An exact tie: truncate, then round up only if the last kept digit is odd.
  const truncated = precise.slice(0, digits === 0 ? dot : dot + 1 + digits);
  const lastDigit = Number(truncated[truncated.length - 1]);
  const sign = value < 0 ? '-' : '';
  if (lastDigit % 2 === 0) return sign + truncated;
  return plain;
}

/**
 * printf("%0.3g") for the values size_to_str formats (always below 1024 after scaling): three
 * significant digits, trailing zeros removed.
 */
function formatG3(value: number): string {
  if (value === 0) return '0';
  const exponent = Math.floor(Math.log10(Math.abs(value)));
  const decimals = Math.max(0, 2 - exponent);
  let text = toFixedC(value, decimals);
  if (text.includes('.')) text = text.replace(/0+$/, '').replace(/\.$/, '');
  if (exponent >= 3) {
    // %g switches to exponent notation for 1000..1023.
    const mantissa = value / 10 ** exponent;
    let m = toFixedC(mantissa, 2);
    m = m.replace(/0+$/, '').replace(/\.$/, '');
    return `${m}e+${String(exponent).padStart(2, '0')}`;
  }
  return text;
}

/** qemu's size_to_str: "0 B", "84 KiB", "1.27 MiB" (switches unit once the number reaches 1000). */
export function qemuSizeString(bytes: number): string {
  const suffixes = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];
  let unit = 0;
  if (bytes > 0) {
    // frexp(bytes / (1000/1024)) exponent - 1, then divided by ten.
    const scaled = bytes / (1000 / 1024);
    const exponent = Math.floor(Math.log2(scaled)) + 1;
    unit = Math.max(0, Math.min(suffixes.length - 1, Math.floor((exponent - 1) / 10)));
  }
  const value = bytes / 2 ** (unit * 10);
  return `${formatG3(value)} ${suffixes[unit]}B`;
}

/** qemu-io's cvtstr: "4 KiB", "1.500 KiB", "40 bytes". */
export function qemuIoSizeString(value: number): string {
  const units: Array<[number, string]> = [
    [2 ** 60, ' EiB'],
    [2 ** 50, ' PiB'],
    [2 ** 40, ' TiB'],
    [2 ** 30, ' GiB'],
    [2 ** 20, ' MiB'],
    [2 ** 10, ' KiB'],
  ];
  let suffix = ' bytes';
  let scaled = value;
  for (const [size, name] of units) {
    if (value >= size) {
      suffix = name;
      scaled = value / size;
      break;
    }
  }
  let text = toFixedC(scaled, 3);
  const trim = text.indexOf('.000');
  if (trim >= 0) text = text.slice(0, trim);
  return text + suffix;
}

/** qemu-io's timestr: "00.12 sec" below one second, "H:MM:SS.ss" above. */
export function qemuIoTimeString(seconds: number): string {
  const whole = Math.floor(seconds);
  const frac = seconds - whole;
  if (whole === 0) return `${toFixedC(frac, 2).padStart(5, '0')} sec`;
  const hours = Math.floor(whole / 3600);
  const minutes = Math.floor(whole / 60) % 60;
  const secs = (whole % 60) + frac;
  return `${hours}:${String(minutes).padStart(2, '0')}:${toFixedC(secs, 2).padStart(5, '0')}`;
}

/** printf("%#x"): "0" for zero, "0x1f" otherwise. */
export function hexAlt(value: number): string {
  return value === 0 ? '0' : `0x${value.toString(16)}`;
}

function isAlnum(byte: number): boolean {
  return (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a);
}

/** qemu-io's dump_buffer: "%08x:  " then "%02x " per byte, a space, then alphanumerics. */
export function hexDump(buf: Uint8Array, offset: number): string {
  const lines: string[] = [];
  for (let i = 0; i < buf.length; i += 16) {
    const row = buf.subarray(i, Math.min(i + 16, buf.length));
    let line = `${(offset + i).toString(16).padStart(8, '0')}:  `;
    for (const byte of row) line += `${byte.toString(16).padStart(2, '0')} `;
    line += ' ';
    for (const byte of row) line += isAlnum(byte) ? String.fromCharCode(byte) : '.';
    lines.push(line);
  }
  return lines.length > 0 ? `${lines.join('\n')}\n` : '';
}

/** Local time as "YYYY-MM-DD HH:MM:SS" (qemu's snapshot table). */
export function formatLocalDate(epochSeconds: number): string {
  const d = new Date(epochSeconds * 1000);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** A VM clock in nanoseconds as "HH:MM:SS.mmm". */
export function formatVmClock(nsec: number): string {
  const secs = Math.floor(nsec / 1e9);
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(Math.floor(secs / 3600))}:${p(Math.floor(secs / 60) % 60)}:${p(secs % 60)}.${p(Math.floor(nsec / 1e6) % 1000, 3)}`;
}

/** Reads --output=human|json and its synonym --json from parsed options. */
export function outputFormatOf(args: ParsedArgs, command: string): OutputFormat {
  if (args.has('json')) return 'json';
  const value = args.value('output');
  if (value === undefined || value === 'human') return 'human';
  if (value === 'json') return 'json';
  throw new UsageError(`${command}: --output must be 'human' or 'json', not '${value}'`, `see 'strata ${command} --help'`);
}

/** The option specs for --output and --json, shared by the commands that print reports. */
export const OUTPUT_OPTIONS = [
  { long: 'output', value: true },
  { long: 'json' },
] as const;
