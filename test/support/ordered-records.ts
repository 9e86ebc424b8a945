/**
 * Numbered records for the group snapshot tests (docs/groups.md): record n (from 1) is one 4 KiB
 * block of "REC<n in 13 digits>" repeated, written to slot (n - 1) mod slots of a
 * disk, so a writer can go on as long as a test runs. A writer writes record n to disk A, waits
 * for it to complete, then writes it to disk B; a snapshot of both taken at one instant must
 * never show B ahead of A.
 */
export const RECORD_BYTES = 4096;
/** "REC" and n in 13 digits: 16 bytes, repeated to fill the block (a guest's busybox sh builds it with printf). */
const RECORD_UNIT_BYTES = 16;

export function recordOffset(n: number, diskBytes: number): number {
  return ((n - 1) % Math.floor(diskBytes / RECORD_BYTES)) * RECORD_BYTES;
}

export function recordBlock(n: number): Uint8Array {
  return Buffer.from(`REC${String(n).padStart(RECORD_UNIT_BYTES - 3, '0')}`.repeat(RECORD_BYTES / RECORD_UNIT_BYTES), 'latin1');
}

/**
 * Busybox sh that writes record $n to `device` at its slot (O_DIRECT, then a flush): the guest
 * side of recordBlock/recordOffset, for a disk of diskBytes.
 */
export function guestRecordWrite(device: string, diskBytes: number): string {
  const doublings = Math.log2(RECORD_BYTES / RECORD_UNIT_BYTES);
  return `s=$(printf 'REC%0${RECORD_UNIT_BYTES - 3}d' $n); i=0; while [ $i -lt ${doublings} ]; do s="$s$s"; i=$((i+1)); done; printf '%s' "$s" > /rec
dd if=/rec of=${device} bs=${RECORD_BYTES} count=1 seek=$(( (n - 1) % ${Math.floor(diskBytes / RECORD_BYTES)} )) oflag=direct conv=fsync 2>/dev/null`;
}

/**
 * The highest record number on a disk (its whole contents), 0 for none. A block holding a record
 * that does not belong in its slot, or a damaged one, throws: the disk is not what was written.
 */
export function lastRecord(disk: Uint8Array): number {
  let last = 0;
  const text = Buffer.from(disk.buffer, disk.byteOffset, disk.byteLength);
  for (let offset = 0; offset + RECORD_BYTES <= disk.length; offset += RECORD_BYTES) {
    if (text.toString('latin1', offset, offset + 3) !== 'REC') continue;
    const n = Number(text.toString('latin1', offset + 3, offset + RECORD_UNIT_BYTES));
    const block = text.subarray(offset, offset + RECORD_BYTES);
    if (!Number.isSafeInteger(n) || n < 1 || recordOffset(n, disk.length) !== offset || !block.equals(recordBlock(n))) {
      throw new Error(`the record block at offset ${offset} is damaged or misplaced (it says record ${text.toString('latin1', offset + 3, offset + RECORD_UNIT_BYTES)})`);
    }
    last = Math.max(last, n);
  }
  return last;
}

/**
 * Writes records 1, 2, ... to A then B (each to B only after A completed) until stop(); `written`
 * is the last record completed on both; advanced(k) resolves once k more records completed.
 */
export class OrderedWriter {
  written = 0;
  private stopped = false;
  private waiters: { target: number; resolve: () => void }[] = [];
  readonly done: Promise<void>;

  constructor(
    writeA: (offset: number, block: Uint8Array) => Promise<void>,
    writeB: (offset: number, block: Uint8Array) => Promise<void>,
    diskBytes: number,
  ) {
    this.done = (async () => {
      for (let n = 1; !this.stopped; n++) {
        const block = recordBlock(n);
        await writeA(recordOffset(n, diskBytes), block);
        await writeB(recordOffset(n, diskBytes), block);
        this.written = n;
        // An in-process device may complete without ever giving the event loop a turn (pwrite
        // through koffi): yield one, as a guest in another process would leave the daemon its own.
        await new Promise<void>((resolve) => setImmediate(resolve));
        this.waiters = this.waiters.filter((w) => (w.target <= n ? (w.resolve(), false) : true));
      }
    })();
    // A writer that fails wakes whoever waits for it (they see the failure through `done`).
    this.done.catch(() => this.waiters.forEach((w) => w.resolve()));
  }

  advanced(records: number): Promise<void> {
    const target = this.written + records;
    return new Promise((resolve) => this.waiters.push({ target, resolve }));
  }

  async stop(): Promise<number> {
    this.stopped = true;
    await this.done;
    return this.written;
  }
}

/**
 * Checks group snapshots 1..count, read by `read(i)` as [disk A, disk B]: in each, B's last
 * record is not ahead of A's, and A's is past the one before (the writer went on between them).
 * Throws naming the first that is not so; resolves to A's last record in each.
 */
export async function checkGroupSnapshots(count: number, read: (i: number) => Promise<[Uint8Array, Uint8Array]>): Promise<number[]> {
  const lastA: number[] = [];
  for (let i = 1; i <= count; i++) {
    const [a, b] = await read(i);
    const recA = lastRecord(a);
    const recB = lastRecord(b);
    if (recB > recA) throw new Error(`group snapshot ${i}: B's last record ${recB} is ahead of A's ${recA}`);
    if (recA <= (lastA.at(-1) ?? 0)) throw new Error(`group snapshot ${i}: A's last record ${recA} is not past the previous snapshot's ${lastA.at(-1)}`);
    lastA.push(recA);
  }
  return lastA;
}
