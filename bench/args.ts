/** Command-line and statistics helpers shared by the benchmarks. */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * `--help` or `-h`: prints the bench's header comment (its usage, options and rows) and exits. Without
 * it an operator typing `--help` got the default bench: the S3 one's 256 MiB rows need GiBs.
 * `moduleUrl` is the bench's import.meta.url (its compiled file keeps the comment).
 */
export function exitOnHelp(moduleUrl: string, argv: readonly string[] = process.argv): void {
  if (!argv.includes('--help') && !argv.includes('-h')) return;
  process.stdout.write(`${benchUsage(readFileSync(fileURLToPath(moduleUrl), 'utf8'))}\n`);
  process.exit(0);
}

/** The leading doc comment of a bench's source, without its comment marks. */
export function benchUsage(source: string): string {
  const header = /^\s*\/\*\*([\s\S]*?)\*\//.exec(source);
  if (header === null) return 'no usage written for this bench: read its source';
  return header[1]!.split('\n').map((line) => line.replace(/^\s*\* ?/, '')).join('\n').trim();
}

/** The value after `--name` on the command line (`argv`: process.argv by default), or fallback. */
export function argValue(name: string, fallback: string, argv: readonly string[] = process.argv): string {
  const i = argv.indexOf(name);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : fallback;
}

/**
 * A non-negative number after `--name`, or fallback; anything else stops the bench with a message
 * naming the flag (a typo must not silently run the default).
 */
export function argNumber(name: string, fallback: number, argv: readonly string[] = process.argv): number {
  const text = argValue(name, String(fallback), argv);
  const value = Number(text);
  if (text.trim() === '' || !Number.isFinite(value) || value < 0) throw new Error(`${name} wants a number >= 0, not '${text}'`);
  return value;
}

/** `--load N`: how many CPU-bound processes (load.ts) run beside the bench; 0 (default) none. */
export function loadArg(argv: readonly string[] = process.argv): number {
  const n = argNumber('--load', 0, argv);
  if (!Number.isInteger(n)) throw new Error(`--load wants a whole number of processes, not ${n}`);
  return n;
}

/** The middle value (the upper of the two middle ones for an even count). */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}
