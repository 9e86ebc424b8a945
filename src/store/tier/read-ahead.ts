/**
 * ColdReadAhead: read-ahead windows over cold objects, for sequential reads. A dedup pool reads a
 * pack one chunk (64 KiB by default) at a time; from S3 each of those is a ranged GET whose cost is
 * mostly the request (measured: an evicted volume read at the rate of small GETs, 5 MiB/s on moto).
 * Once the ReadPatternTracker calls a read sequential, the tier fetches one window of the object
 * (`windowBytes` from that read, in parallel parts: getColdRange) and serves this read and the
 * following ones of the window from memory; a read past the middle of a window starts the next one,
 * so a stream through a large object keeps a GET ahead of its reader.
 *
 * Windows are in memory only and bounded (`bytesMax`, oldest dropped first); an object keeps at
 * most two (the one being read and the one ahead). A window whose fetch fails is dropped and its
 * readers get the failure; the next read of that range starts afresh.
 */

export interface ReadAheadOptions {
  /** Bytes one window fetches (default 4 MiB: a whole pack of the default size). */
  readonly windowBytes?: number;
  /** The most bytes all windows may hold (default 64 MiB); 0 turns read-ahead off. */
  readonly bytesMax?: number;
}

export const READ_AHEAD_WINDOW_DEFAULT_BYTES = 4 * 1024 * 1024;
export const READ_AHEAD_DEFAULT_BYTES_MAX = 64 * 1024 * 1024;
/** Windows an object keeps: the one being read and the one ahead of it. */
const WINDOWS_PER_OBJECT_MAX = 2;

/** Fetches `lengthBytes` at `offsetBytes` of a cold object (shorter at its end; undefined: no object). */
export type ColdRangeFetch = (key: string, offsetBytes: number, lengthBytes: number) => Promise<Uint8Array | undefined>;

interface Window {
  readonly startBytes: number;
  readonly lengthBytes: number;
  /** The fetched bytes (shorter than lengthBytes when the object ends inside the window). */
  readonly data: Promise<Uint8Array | undefined>;
  nextStarted: boolean;
}

export class ColdReadAhead {
  /** Per object its windows; objects in least recently read order. */
  private readonly windows = new Map<string, Window[]>();
  private heldBytes = 0;
  private readonly windowBytes: number;
  private readonly bytesMax: number;

  constructor(
    private readonly fetch: ColdRangeFetch,
    options: ReadAheadOptions = {},
  ) {
    this.windowBytes = options.windowBytes ?? READ_AHEAD_WINDOW_DEFAULT_BYTES;
    this.bytesMax = options.bytesMax ?? READ_AHEAD_DEFAULT_BYTES_MAX;
  }

  /** Bytes the windows hold or are fetching (for tests and stats). */
  get bytes(): number {
    return this.heldBytes;
  }

  /**
   * The range from a window that covers it (fetched or on its way), or undefined when none does.
   * A read past a window's middle starts the next window.
   */
  read(key: string, offsetBytes: number, lengthBytes: number): Promise<Uint8Array | undefined> | undefined {
    const list = this.windows.get(key);
    const window = list?.find((w) => offsetBytes >= w.startBytes && offsetBytes + lengthBytes <= w.startBytes + w.lengthBytes);
    if (list === undefined || window === undefined) return undefined;
    this.windows.delete(key);
    this.windows.set(key, list); // most recently read last
    if (!window.nextStarted && offsetBytes + lengthBytes > window.startBytes + window.lengthBytes / 2) {
      window.nextStarted = true;
      const nextStart = window.startBytes + window.lengthBytes;
      // Only when the object goes on past this window (a short window is its end).
      void window.data.then(
        (data) => {
          if (data !== undefined && data.length === window.lengthBytes && this.windows.get(key)?.includes(window)) this.startWindow(key, nextStart);
        },
        () => undefined,
      );
    }
    return window.data.then((data) => {
      if (data === undefined) return undefined;
      const from = offsetBytes - window.startBytes;
      // A copy: the caller owns what it gets, and the window serves other readers.
      return data.slice(Math.min(from, data.length), Math.min(from + lengthBytes, data.length));
    });
  }

  /** Starts a window at `offsetBytes` (a read there was found sequential) and serves the read from it. */
  start(key: string, offsetBytes: number, lengthBytes: number): Promise<Uint8Array | undefined> | undefined {
    if (this.bytesMax === 0 || lengthBytes > this.windowBytes) return undefined;
    this.startWindow(key, offsetBytes);
    return this.read(key, offsetBytes, lengthBytes);
  }

  /** Drops an object's windows (it was written, deleted or moved). */
  forget(key: string): void {
    for (const window of this.windows.get(key) ?? []) this.heldBytes -= window.lengthBytes;
    this.windows.delete(key);
  }

  private startWindow(key: string, startBytes: number): void {
    const list = this.windows.get(key) ?? [];
    if (list.some((w) => w.startBytes === startBytes)) return;
    const window: Window = { startBytes, lengthBytes: this.windowBytes, data: this.fetch(key, startBytes, this.windowBytes), nextStarted: false };
    window.data.catch(() => this.drop(key, window));
    list.push(window);
    this.heldBytes += window.lengthBytes;
    while (list.length > WINDOWS_PER_OBJECT_MAX) this.heldBytes -= list.shift()!.lengthBytes;
    this.windows.delete(key);
    this.windows.set(key, list);
    this.trim();
  }

  private drop(key: string, window: Window): void {
    const list = this.windows.get(key);
    const at = list?.indexOf(window) ?? -1;
    if (list === undefined || at < 0) return;
    list.splice(at, 1);
    this.heldBytes -= window.lengthBytes;
    if (list.length === 0) this.windows.delete(key);
  }

  /** Drops the least recently read objects' windows until the total fits the bound. */
  private trim(): void {
    for (const [key] of this.windows) {
      if (this.heldBytes <= this.bytesMax) return;
      this.forget(key);
    }
  }
}
