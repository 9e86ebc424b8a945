/**
 * What a guest may read back after a power cut: the contents as of the last completed flush, plus,
 * for every byte an operation touched after that flush started, the value that operation wrote.
 *
 * The workload runs one operation at a time, so "acknowledged before the last completed flush"
 * is simply "finished before that flush was called". Each operation's effect is recorded as a
 * layer before the operation is issued (a crash may happen while it is in flight), and a flush
 * that completes folds every layer into a new durable image.
 */

/** The effect of one guest operation on a guest range. */
export interface Layer {
  /** Index of the workload operation that produced it (for messages). */
  opIndex: number;
  guestOffset: number;
  lengthBytes: number;
  /** The bytes written, or 'zero' for zeroes. */
  content: Uint8Array | 'zero';
}

/** A frozen view of the model at one instant: what a crash at that instant may leave. */
export interface Expectation {
  /** Guest contents as of the last completed flush (never mutated after it is published). */
  durable: Uint8Array;
  /** Operations since, oldest first. */
  layers: readonly Layer[];
  /** Guest contents with every layer applied (what the guest read at that instant). */
  latest: Uint8Array;
}

export class GuestModel {
  /** What the guest reads now. */
  readonly live: Uint8Array;
  private durable: Uint8Array;
  private layers: Layer[] = [];

  /** `initial`: what the guest reads before the workload (backing file, prefilled data), durable. */
  constructor(initial: Uint8Array) {
    this.live = initial.slice();
    this.durable = initial.slice();
  }

  /** Records an operation's effect (call before issuing it). */
  apply(layer: Layer): void {
    this.layers.push(layer);
    const { guestOffset, lengthBytes, content } = layer;
    if (content === 'zero') this.live.fill(0, guestOffset, guestOffset + lengthBytes);
    else this.live.set(content, guestOffset);
  }

  /** A flush completed: everything recorded so far is durable. */
  flushed(): void {
    this.durable = this.live.slice();
    this.layers = [];
  }

  expectation(): Expectation {
    return {
      durable: this.durable,
      layers: this.layers.slice(),
      latest: this.layers.length === 0 ? this.durable : this.live.slice(),
    };
  }
}

function layerByte(layer: Layer, guestOffset: number): number {
  return layer.content === 'zero' ? 0 : layer.content[guestOffset - layer.guestOffset]!;
}

/**
 * Compares what was read at [guestOffset, guestOffset + actual.length) with the expectation.
 * Returns a description of the first few offending bytes (empty when everything is allowed).
 */
export function findViolations(exp: Expectation, guestOffset: number, actual: Uint8Array, limit = 4): string[] {
  const out: string[] = [];
  let badBytes = 0;
  let firstBad = -1;
  let lastBad = -1;
  // Whole blocks that equal the durable or the latest contents need no byte-by-byte look (the
  // usual case); the rest is judged byte by byte against every layer that covers it.
  const BLOCK = 4096;
  for (let start = 0; start < actual.length; start += BLOCK) {
    const stop = Math.min(actual.length, start + BLOCK);
    const got = Buffer.from(actual.buffer, actual.byteOffset + start, stop - start);
    const g0 = guestOffset + start;
    if (got.equals(exp.durable.subarray(g0, g0 + got.length)) || got.equals(exp.latest.subarray(g0, g0 + got.length))) continue;
    const blockEnd = guestOffset + stop;
    const overlapping = exp.layers.filter((l) => l.guestOffset < blockEnd && l.guestOffset + l.lengthBytes > g0);
    const bad = judgeBytes(exp, overlapping, guestOffset, actual, start, stop, out, limit);
    if (bad.count > 0) {
      badBytes += bad.count;
      if (firstBad < 0) firstBad = bad.first;
      lastBad = bad.last;
    }
  }
  if (badBytes > out.length) out.push(`... ${badBytes} bad bytes in all, guest ${firstBad}..${lastBad}`);
  return out;
}

function judgeBytes(
  exp: Expectation,
  overlapping: Layer[],
  guestOffset: number,
  actual: Uint8Array,
  start: number,
  stop: number,
  out: string[],
  limit: number,
): { count: number; first: number; last: number } {
  let count = 0;
  let first = -1;
  let last = -1;
  for (let i = start; i < stop; i++) {
    const g = guestOffset + i;
    const got = actual[i]!;
    if (got === exp.durable[g] || got === exp.latest[g]) continue;
    let ok = false;
    for (let k = overlapping.length - 1; k >= 0; k--) {
      const l = overlapping[k]!;
      if (g >= l.guestOffset && g < l.guestOffset + l.lengthBytes && layerByte(l, g) === got) {
        ok = true;
        break;
      }
    }
    if (ok) continue;
    count++;
    if (first < 0) first = g;
    last = g;
    if (out.length < limit) {
      const writers = overlapping
        .filter((l) => g >= l.guestOffset && g < l.guestOffset + l.lengthBytes)
        .map((l) => `op ${l.opIndex}=${layerByte(l, g)}`);
      out.push(
        `guest byte ${g}: read ${got}, durable value ${exp.durable[g]}` +
          (writers.length ? `, later writes: ${writers.join(', ')}` : ', no write since the last flush'),
      );
    }
  }
  return { count, first, last };
}
