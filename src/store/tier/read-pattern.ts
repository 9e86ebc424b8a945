/**
 * ReadPatternTracker: tells random reads of cold objects from sequential ones, so the tier
 * promotes what a guest reads at random and not what a backup or a scan streams through once.
 *
 * Per object it remembers the current run (the bytes read in order so far). A read is sequential
 * when it continues the run: inside it or at most `sequentialGapBytes` past its end (or, for the
 * run's second read, just before it): reads a few chunks apart still count, because a ChunkedFile
 * keeps several chunk reads in flight and they may arrive out of order. Anything else starts a
 * new run and is random; so is reading a lone read's bytes again.
 *
 * Admission: an object is promoted on its second random read in a row, never on the first. The
 * first read of a scan looks random too (it starts a run); requiring a second random read keeps
 * one scan, and objects read once at all, out of the cache (the admission idea of 2Q and
 * TinyLFU). The objects tracked are bounded, least recently read forgotten first.
 */

export interface ReadPatternOptions {
  /** A read starting at most this far past the run's end continues it (default 256 KiB: four 64 KiB chunks read out of order). */
  readonly sequentialGapBytes?: number;
  /** Objects remembered (default 4,096). */
  readonly trackedObjectsMax?: number;
}

export const SEQUENTIAL_GAP_DEFAULT_BYTES = 256 * 1024;
export const TRACKED_OBJECTS_DEFAULT = 4096;

interface Run {
  startBytes: number;
  endBytes: number;
  /** Whether the last read of the object was random. */
  lastRandom: boolean;
}

export type ReadKind = 'sequential' | 'random' | 'promote';

export class ReadPatternTracker {
  private readonly runs = new Map<string, Run>();
  private readonly gapBytes: number;
  private readonly trackedMax: number;

  constructor(options: ReadPatternOptions = {}) {
    this.gapBytes = options.sequentialGapBytes ?? SEQUENTIAL_GAP_DEFAULT_BYTES;
    this.trackedMax = options.trackedObjectsMax ?? TRACKED_OBJECTS_DEFAULT;
  }

  /** Records a read of `lengthBytes` at `offsetBytes` of `key`: 'promote' when it should be cached. */
  note(key: string, offsetBytes: number, lengthBytes: number): ReadKind {
    const endBytes = offsetBytes + lengthBytes;
    const run = this.runs.get(key);
    if (run !== undefined) this.runs.delete(key);
    if (run !== undefined && !run.lastRandom && offsetBytes >= run.startBytes && offsetBytes <= run.endBytes + this.gapBytes) {
      run.endBytes = Math.max(run.endBytes, endBytes);
      this.runs.set(key, run);
      return 'sequential';
    }
    if (run !== undefined && run.lastRandom && this.besideRun(run, offsetBytes, endBytes)) {
      // The second read of a run (either side: reads in flight arrive out of order): the first
      // was not random after all.
      this.runs.set(key, { startBytes: Math.min(run.startBytes, offsetBytes), endBytes: Math.max(run.endBytes, endBytes), lastRandom: false });
      return 'sequential';
    }
    this.runs.set(key, { startBytes: offsetBytes, endBytes, lastRandom: true });
    this.trim();
    return run?.lastRandom === true ? 'promote' : 'random';
  }

  /**
   * Records a read served by a read-ahead stream: sequential whatever order it completes in, and
   * never a step toward promotion (the object's run is not random after it).
   */
  noteStreamed(key: string, offsetBytes: number, lengthBytes: number): void {
    const run = this.runs.get(key);
    this.runs.delete(key);
    const endBytes = offsetBytes + lengthBytes;
    this.runs.set(
      key,
      run === undefined
        ? { startBytes: offsetBytes, endBytes, lastRandom: false }
        : { startBytes: Math.min(run.startBytes, offsetBytes), endBytes: Math.max(run.endBytes, endBytes), lastRandom: false },
    );
    this.trim();
  }

  /** Near the run without overlapping it (reading the same bytes again is random). */
  private besideRun(run: Run, offsetBytes: number, endBytes: number): boolean {
    if (offsetBytes >= run.endBytes) return offsetBytes - run.endBytes <= this.gapBytes;
    return endBytes <= run.startBytes && run.startBytes - endBytes <= this.gapBytes;
  }

  private trim(): void {
    for (const oldest of this.runs.keys()) {
      if (this.runs.size <= this.trackedMax) break;
      this.runs.delete(oldest);
    }
  }

  /** Forgets an object (deleted, or just promoted). */
  forget(key: string): void {
    this.runs.delete(key);
  }
}
