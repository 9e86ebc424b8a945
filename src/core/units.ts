export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;
export const PiB = 1024 * TiB;
export const SECTOR_SIZE_BYTES = 512;

const SUFFIX_MULTIPLIERS: Record<string, number> = {
  '': 1,
  b: 1,
  k: KiB,
  m: MiB,
  g: GiB,
  t: TiB,
  p: PiB,
};

/**
 * A size text read: its bytes, or why it is refused: not a size at all, too large to count
 * exactly, or not a whole number of bytes ("1.3G"; exactBytes is the decimal it comes to, e.g.
 * "1395864371.2", and unitBytes the multiplier of the suffix it was given with).
 */
export type SizeReading = { bytes: number } | { refused: 'not-a-size' | 'too-large' } | { refused: 'not-whole'; exactBytes: string; unitBytes: number };

/**
 * Reads a size the way qemu-img does: a plain number is bytes, and k/M/G/T/P (optionally followed
 * by "iB" or "B") are binary multiples. Sizes past Number.MAX_SAFE_INTEGER (8 PiB) are too large.
 * A fraction must come to whole bytes ("1.5G" does, "1.3G" does not); the check is exact (BigInt:
 * a decimal times a power of two), not at the mercy of floating point.
 */
export function readSizeBytes(text: string): SizeReading {
  const match = /^\s*(\d+)(?:\.(\d+))?\s*([bkmgtp]?)(?:i?b)?\s*$/i.exec(text);
  if (!match) return { refused: 'not-a-size' };
  const unitBytes = SUFFIX_MULTIPLIERS[(match[3] ?? '').toLowerCase()];
  if (unitBytes === undefined) return { refused: 'not-a-size' };
  const fraction = match[2] ?? '';
  const scale = 10n ** BigInt(fraction.length);
  const scaled = BigInt(`${match[1]}${fraction}`) * BigInt(unitBytes);
  const whole = scaled / scale;
  if (whole > BigInt(Number.MAX_SAFE_INTEGER)) return { refused: 'too-large' };
  const rest = scaled % scale;
  if (rest !== 0n) {
    const decimals = rest.toString().padStart(fraction.length, '0').replace(/0+$/, '');
    return { refused: 'not-whole', exactBytes: `${whole}.${decimals}`, unitBytes };
  }
  return { bytes: Number(whole) };
}

/** readSizeBytes for callers that only need the bytes: undefined when the text is refused. */
export function parseSizeBytes(text: string): number | undefined {
  const reading = readSizeBytes(text);
  return 'bytes' in reading ? reading.bytes : undefined;
}

/** Formats bytes the way qemu-img info prints them ("64 KiB", "1 GiB", "1.5 MiB"). */
export function formatSizeHuman(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  if (unit === 0) return `${bytes} B`;
  const text = Number.isInteger(value) ? String(value) : value.toFixed(3).replace(/\.?0+$/, '');
  return `${text} ${units[unit]}`;
}

export function alignDown(value: number, alignment: number): number {
  return value - (value % alignment);
}

export function alignUp(value: number, alignment: number): number {
  const rem = value % alignment;
  return rem === 0 ? value : value + (alignment - rem);
}

export function isPowerOfTwo(value: number): boolean {
  return Number.isSafeInteger(value) && value > 0 && 2 ** Math.round(Math.log2(value)) === value;
}

const DURATION_UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Reads a duration: a whole number with a unit, ms, s, m, h or d ("30s", "10m", "7d"; "0" alone is
 * zero). Undefined when the text is not one (or past Number.MAX_SAFE_INTEGER milliseconds).
 */
export function parseDurationMs(text: string): number | undefined {
  const match = /^\s*(\d+)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!match) return undefined;
  const value = Number(match[1]);
  if (match[2] === undefined) return value === 0 ? 0 : undefined;
  const ms = value * DURATION_UNITS_MS[match[2]]!;
  return Number.isSafeInteger(ms) ? ms : undefined;
}

/** A duration for people: the largest unit that divides it ("7d", "90m", "1500ms"). */
export function formatDurationHuman(ms: number): string {
  if (ms === 0) return '0';
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    const size = DURATION_UNITS_MS[unit]!;
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
