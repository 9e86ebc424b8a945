/**
 * PartBuffers: the arrays the read-ahead's parts are fetched into (read-ahead.ts), kept once a
 * part was served whole and reused for the next parts, so a stream through an evicted volume does
 * not allocate a new array of several MiB per pack. Why it matters: V8 starts a full collection
 * each time some 64 MiB of external memory (ArrayBuffers) was allocated since the last, so every
 * MiB allocated per MiB read costs a share of full collections. The cold store writes a part into
 * the array it is given (ChunkStoreCallOptions.into) when it can.
 *
 * When an array may be reused: its part was fetched (a failed or abandoned fetch may still be
 * writing into it: never reused) and all its bytes were handed out. Non-borrowing readers got
 * copies; borrowing readers (ChunkStoreCallOptions.borrowResult) read their views in the promise
 * continuations of the turn of the event loop that handed them out, so an array given back is
 * kept only from the next turn on, and a new fetch writes into it later still (its body arrives
 * in I/O callbacks). The dedup repository's borrowed reads are checked against the chunk's hash
 * after they copy, so a reader that broke that rule would see CORRUPT, never other bytes.
 */

/** Arrays are sized in steps of this (or of the part size, when smaller), so parts of similar sizes (packs) share them. */
const PART_BUFFER_STEP_BYTES = 1024 * 1024;
/** Spare arrays are let go after this long without a part taken or given back (a stream that ended). */
const SPARE_IDLE_MS = 5000;

export class PartBuffers {
  private readonly spare: Uint8Array[] = [];
  private spareBytes = 0;
  private closed = false;
  private readonly stepBytes: number;
  /** Drops the spares once idle; re-armed by every take and giveBack. */
  private readonly idleTimer: NodeJS.Timeout;
  /** Arrays handed out again (for tests and diagnostics). */
  reused = 0;

  /**
   * `partBytes`: the largest part; `spareBytesMax`: the most bytes kept between parts (let go
   * once idle for SPARE_IDLE_MS).
   */
  constructor(
    partBytes: number,
    private readonly spareBytesMax: number,
  ) {
    this.stepBytes = Math.min(PART_BUFFER_STEP_BYTES, partBytes);
    this.idleTimer = setTimeout(() => this.dropSpares(), SPARE_IDLE_MS);
    this.idleTimer.unref();
  }

  /** An array of at least `lengthBytes`: a spare one that fits within a step, else a new one. */
  take(lengthBytes: number): Uint8Array {
    this.idleTimer.refresh();
    for (let i = 0; i < this.spare.length; i++) {
      const buffer = this.spare[i]!;
      if (buffer.length >= lengthBytes && buffer.length - lengthBytes < this.stepBytes) {
        this.spare.splice(i, 1);
        this.spareBytes -= buffer.length;
        this.reused++;
        return buffer;
      }
    }
    const sizeBytes = Math.max(1, Math.ceil(lengthBytes / this.stepBytes)) * this.stepBytes;
    // Not zeroed: a fetch writes every byte of its part or fails (and its array is not reused).
    // A plain Uint8Array over its own memory (a Buffer's slice() would be a view).
    return new Uint8Array(Buffer.allocUnsafeSlow(sizeBytes).buffer, 0, sizeBytes);
  }

  /** Takes back the array of a part served whole: reusable from the next turn of the event loop. */
  giveBack(buffer: Uint8Array): void {
    this.idleTimer.refresh();
    setImmediate(() => {
      if (this.closed || this.spareBytes + buffer.length > this.spareBytesMax) return;
      this.spare.push(buffer);
      this.spareBytes += buffer.length;
    });
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.idleTimer);
    this.dropSpares();
  }

  private dropSpares(): void {
    this.spare.length = 0;
    this.spareBytes = 0;
  }
}
