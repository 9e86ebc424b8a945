/**
 * A getopt-like argument parser in the style qemu-img uses: short flags that take a value either
 * attached ("-fqcow2") or as the next argument ("-f qcow2"), combined short flags ("-qp"), long
 * options ("--output=json" or "--output json"), "--" to end options, and options mixed freely with
 * positional arguments (GNU getopt's permutation) unless `stopAtPositional` is set.
 */
import { UsageError } from './errors.js';

export interface OptionSpec {
  /** Key under which the option is recorded; defaults to the long name, else the short one. */
  name?: string;
  short?: string;
  long?: string;
  /** The option takes a value. */
  value?: boolean;
}

export interface ParseSettings {
  /** Stop at the first positional argument; the rest are positionals (qemu-io command lines). */
  stopAtPositional?: boolean;
  /**
   * A '-' followed by a digit ("-5G") is a positional, a negative number, not short options (for
   * commands that have no digit options), so its command can say what is wrong with it.
   */
  negativeNumbers?: boolean;
}

export class ParsedArgs {
  readonly positionals: string[] = [];
  private readonly seen = new Map<string, string[]>();
  /** The options in the order they were given, for commands where order matters. */
  readonly sequence: Array<{ name: string; value: string | undefined }> = [];

  record(name: string, value: string | undefined): void {
    const list = this.seen.get(name) ?? [];
    if (value !== undefined) list.push(value);
    this.seen.set(name, list);
    this.sequence.push({ name, value });
  }

  /** True when the option was given at least once. */
  has(name: string): boolean {
    return this.seen.has(name);
  }

  /** The value of the last occurrence of the option. */
  value(name: string): string | undefined {
    const list = this.seen.get(name);
    return list === undefined ? undefined : list[list.length - 1];
  }

  /** Every value given for a repeatable option, in order. */
  values(name: string): string[] {
    return [...(this.seen.get(name) ?? [])];
  }
}

function keyOf(spec: OptionSpec): string {
  const key = spec.name ?? spec.long ?? spec.short;
  if (key === undefined) throw new Error('assertion failed: option spec without a name');
  return key;
}

/**
 * Parses argv against specs. `command` names the command for error messages ("img create"), and
 * the hint tells the user where to look.
 */
export function parseArgs(
  argv: readonly string[],
  specs: readonly OptionSpec[],
  command: string,
  settings: ParseSettings = {},
): ParsedArgs {
  const result = new ParsedArgs();
  const shorts = new Map<string, OptionSpec>();
  const longs = new Map<string, OptionSpec>();
  for (const spec of specs) {
    if (spec.short !== undefined) shorts.set(spec.short, spec);
    if (spec.long !== undefined) longs.set(spec.long, spec);
  }
  const hint = `see 'strata ${command} --help'`;

  let i = 0;
  while (i < argv.length) {
    const arg = argv[i] as string;
    i++;
    if (arg === '--') {
      result.positionals.push(...argv.slice(i));
      break;
    }
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
      const spec = longs.get(name);
      if (spec === undefined) throw new UsageError(`${command}: unknown option '--${name}'`, hint);
      if (spec.value) {
        let value: string | undefined;
        if (eq >= 0) value = arg.slice(eq + 1);
        else if (i < argv.length) value = argv[i++];
        if (value === undefined) throw new UsageError(`${command}: option '--${name}' needs a value`, hint);
        result.record(keyOf(spec), value);
      } else {
        if (eq >= 0) throw new UsageError(`${command}: option '--${name}' does not take a value`, hint);
        result.record(keyOf(spec), undefined);
      }
      continue;
    }
    if (arg.startsWith('-') && arg.length > 1 && !(settings.negativeNumbers && /^-\d/.test(arg))) {
      // A cluster of short options: "-qp", "-fqcow2", "-pf", "qcow2".
      for (let j = 1; j < arg.length; j++) {
        const ch = arg[j] as string;
        const spec = shorts.get(ch);
        if (spec === undefined) throw new UsageError(`${command}: unknown option '-${ch}'`, hint);
        if (spec.value) {
          let value: string | undefined;
          if (j + 1 < arg.length) value = arg.slice(j + 1);
          else if (i < argv.length) value = argv[i++];
          if (value === undefined) throw new UsageError(`${command}: option '-${ch}' needs a value`, hint);
          result.record(keyOf(spec), value);
          break;
        }
        result.record(keyOf(spec), undefined);
      }
      continue;
    }
    result.positionals.push(arg);
    if (settings.stopAtPositional) {
      result.positionals.push(...argv.slice(i));
      break;
    }
  }
  return result;
}

/** True when argv asks for help ("-h" or "--help") before any "--". */
export function wantsHelp(argv: readonly string[]): boolean {
  for (const arg of argv) {
    if (arg === '--') return false;
    if (arg === '--help' || arg === '-h') return true;
  }
  return false;
}

/** Checks the number of positional arguments, with a message naming what is missing or extra. */
export function expectPositionals(
  args: ParsedArgs,
  command: string,
  names: readonly string[],
  optionalCount = 0,
): void {
  const hint = `see 'strata ${command} --help'`;
  const required = names.length - optionalCount;
  const got = args.positionals.length;
  if (got < required) {
    const missing = names.slice(got, required).join(' and ');
    throw new UsageError(`${command}: missing ${missing}`, hint);
  }
  if (got > names.length) {
    const extra = args.positionals.slice(names.length).map((p) => `'${p}'`).join(' ');
    throw new UsageError(`${command}: unexpected argument ${extra}`, hint);
  }
}
