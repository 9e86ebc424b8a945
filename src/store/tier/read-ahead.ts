/**
 * ColdReadAhead: reads cold objects ahead of a sequential reader. A dedup pool reads a pack one
 * chunk (64 KiB by default) at a time; from S3 each of those would be its own ranged GET, whose
 * cost is mostly the request. Once a reader streams through an object, the tier fetches the object
 * in parts (`partSizeBytes`, the cold tier's part size: 8 MiB by default, as `aws s3 cp` asks, so
 * a pack of a few MiB is one GET) on a grid from the object's start, several GETs in flight, and
 * keeps `aheadBytes` (32 MiB) of parts requested ahead of the reader; the reader's chunks are
 * served from the parts in memory.
 *
 * - Only the reader's reads steer it: the tier decides a read is part of a stream (its arrival
 *   continues the object's run, or it is the first read of the object a stream was awaiting) and
 *   this class never classifies its own fetches. Nothing served from here counts toward
 *   promotion (read-pattern.ts): a stream is what the cache must not admit.
 * - Parts are never asked past the object's end: the object's size comes from the tier's catalog
 *   (a cold object with no size known is not read ahead).
 * - A chunk inside one part is a view of the part's bytes; the tier copies it before it leaves
 *   getRange (a result is the caller's to change); a chunk across two parts is copied here. A part is let go once all its bytes were served.
 * - Across objects: when the parts ahead reach an object's end, the tier's next cold object in key
 *   order is looked up (pack ids start with their creation time, so a layer sealed in order has
 *   its packs in that order). Its first read then starts a stream at once, with no small GET; and
 *   once a stream has crossed into the object it expected, the next objects are fetched ahead too,
 *   the window sliding on through them as the reader goes. A guess that is wrong costs one
 *   window, dropped by the memory bound.
 * - Memory is bounded: all parts, fetched or on their way, fit `bytesMax`; past it, fetched parts
 *   of the least recently read streams are dropped, and when nothing can go, no part is started
 *   (the read goes to the cold tier on its own).
 * - Failures never reach a reader from here: a part that fails (or comes back short) is dropped
 *   and its readers get `undefined`, so the tier reads their ranges itself, within the reader's own
 *   time bound. A part nobody reads fails silently (counted in `failedParts`).
 */
import { setMaxListeners } from 'node:events';
import { PartBuffers } from './part-buffers.js';

export interface ReadAheadOptions {
  /** How far ahead of a sequential reader parts are requested (default 32 MiB: eight packs, GETs in flight at once). */
  readonly aheadBytes?: number;
  /** The most bytes all parts may hold, fetched or on their way (default 64 MiB); 0 turns read-ahead off. */
  readonly bytesMax?: number;
}

export const READ_AHEAD_DEFAULT_BYTES = 32 * 1024 * 1024;
export const READ_AHEAD_BYTES_MAX_DEFAULT = 64 * 1024 * 1024;
/** Streams remembered (their sizes and parts), least recently read forgotten first. */
const STREAMS_MAX = 256;
/** How often (in bytes served) parts left behind are looked for. */
const BEHIND_SWEEP_STEP_BYTES = 1024 * 1024;
/** Objects a stream is expected to enter next, remembered at once. */
const AWAITED_MAX = 64;

/** What the read-ahead needs from the tier. */
export interface ReadAheadSource {
  readonly partSizeBytes: number;
  /** The object's size when it is on the cold tier only; undefined otherwise (not read ahead). */
  coldSizeBytes(key: string): Promise<number | undefined>;
  /** The cold object after `key` in key order, if one is near. */
  nextColdKey(key: string): Promise<string | undefined>;
  /**
   * One part of a cold object, bounded in time by the tier; `signal` aborts it (the tier closing).
   * The bytes may be written into `into` (at least `lengthBytes` long) and answered as a view of it.
   */
  fetchPart(key: string, offsetBytes: number, lengthBytes: number, signal: AbortSignal, into: Uint8Array): Promise<Uint8Array | undefined>;
}

interface Part {
  readonly lengthBytes: number;
  /** Set once fetched. */
  data: Uint8Array | undefined;
  /** The array `data` was fetched into (PartBuffers'), reused once the part was served whole. */
  buffer: Uint8Array | undefined;
  /** The part's bytes; rejects when the fetch failed or came back short. */
  loaded: Promise<Uint8Array>;
  servedBytes: number;
  /** The read-ahead's servedTotalBytes after this part's last read (0: never read). */
  lastServedAtBytes: number;
}

interface Stream {
  readonly key: string;
  readonly sizeBytes: number;
  /** Parts by index on the grid from the object's start. */
  readonly parts: Map<number, Part>;
  /** The lowest and highest part index ever requested: reads near them belong to the stream. */
  lowIndex: number;
  highIndex: number;
  /** Entered as the object an earlier stream awaited: the stream runs across objects. */
  readonly crossed: boolean;
  /** The next object was looked up (or is being looked up). */
  nextLooked: boolean;
  /** The next object's key once looked up and streamed into (a stream that crossed only). */
  nextKey: string | undefined;
}

/**
 * A range served by the read-ahead: `ready` when its part is in memory already (no wait, no
 * bound needed), else `data`, its bytes once fetched or undefined when a part failed (read it
 * directly). An object, so an async caller can hand it on without awaiting the bytes. Bytes within
 * one part are a view of it, shared with every other read of the part.
 */
export type ReadAheadRange = { readonly ready: Uint8Array; readonly data?: undefined } | { readonly ready?: undefined; readonly data: Promise<Uint8Array | undefined> };

export class ColdReadAhead {
  /** Least recently read first. */
  private readonly streams = new Map<string, Stream>();
  private readonly sizeLookups = new Map<string, Promise<number | undefined>>();
  private readonly awaited = new Set<string>();
  private heldBytes = 0;
  private readonly partBytes: number;
  private readonly aheadBytes: number;
  private readonly bytesMax: number;
  private readonly closing = new AbortController();
  private readonly buffers: PartBuffers;
  /** Bytes served by all streams so far, and when releaseBehind runs next. */
  private servedTotalBytes = 0;
  private nextSweepAtBytes = 0;
  /** A part read before but not within this many bytes served since is behind the reader. */
  private readonly behindBytes: number;
  /** Parts whose fetch failed (nobody is failed by them; for tests and diagnostics). */
  failedParts = 0;
  /** Parts fetched for a stream's next object before its reader came. */
  prefetchedObjects = 0;

  constructor(
    private readonly source: ReadAheadSource,
    options: ReadAheadOptions = {},
  ) {
    this.partBytes = source.partSizeBytes;
    this.aheadBytes = options.aheadBytes ?? READ_AHEAD_DEFAULT_BYTES;
    this.bytesMax = options.bytesMax ?? READ_AHEAD_BYTES_MAX_DEFAULT;
    // Reads in flight together arrive out of order (a guest's queue of 1 MiB requests, each
    // split into chunk reads): half the window ahead is far more than they straggle.
    this.behindBytes = Math.max(this.partBytes, Math.floor(this.aheadBytes / 2));
    // The window's arrays kept between parts (a stream gives one back about when it needs the
    // next, but parts of a few MiB packs are many in flight), dropped once the stream idles: so a
    // stream allocates no part array after its first window.
    this.buffers = new PartBuffers(this.partBytes, Math.min(this.bytesMax, this.aheadBytes + 2 * this.partBytes));
    // Every part in flight listens for the closing: many at once is the normal case.
    setMaxListeners(0, this.closing.signal);
  }

  /** Parts fetched into an array an earlier part was fetched into. */
  get reusedBuffers(): number {
    return this.buffers.reused;
  }

  /** Bytes the parts hold or are fetching. */
  get bytes(): number {
    return this.heldBytes;
  }

  /** Whether a stream awaits `key`'s first read (its first bytes at `offsetBytes`). */
  awaits(key: string, offsetBytes: number): boolean {
    return this.awaited.has(key) && offsetBytes < this.aheadBytes;
  }

  /** The range from the object's stream when the read belongs to one (near its parts); else undefined. */
  serve(key: string, offsetBytes: number, lengthBytes: number): ReadAheadRange | undefined {
    const stream = this.streams.get(key);
    if (stream === undefined || this.bytesMax === 0) return undefined;
    const index = Math.floor(offsetBytes / this.partBytes);
    const nearParts = Math.ceil(this.aheadBytes / this.partBytes);
    if (index < stream.lowIndex - nearParts || index > stream.highIndex + nearParts) return undefined;
    return this.serveFrom(stream, offsetBytes, lengthBytes);
  }

  /**
   * Starts a stream at this read (the tier found it sequential, or awaited) and serves the read
   * from it; undefined when the object is not cold-only, the read is past its end, or no memory.
   */
  async start(key: string, offsetBytes: number, lengthBytes: number): Promise<ReadAheadRange | undefined> {
    if (this.bytesMax === 0) return undefined;
    const crossed = this.awaited.delete(key);
    const stream = await this.streamOf(key, crossed);
    return stream === undefined ? undefined : this.serveFrom(stream, offsetBytes, lengthBytes);
  }

  /** Drops an object's parts (it was written, deleted or promoted). */
  forget(key: string): void {
    const stream = this.streams.get(key);
    this.awaited.delete(key);
    if (stream === undefined) return;
    this.streams.delete(key);
    for (const part of stream.parts.values()) this.heldBytes -= part.lengthBytes;
    stream.parts.clear();
  }

  /** Aborts the parts on their way and drops everything (the tier is closing). */
  close(): void {
    this.closing.abort(new Error('the tier is closing'));
    this.buffers.close();
    for (const key of [...this.streams.keys()]) this.forget(key);
  }

  private async streamOf(key: string, crossed: boolean): Promise<Stream | undefined> {
    const existing = this.streams.get(key);
    if (existing !== undefined) return existing;
    let lookup = this.sizeLookups.get(key);
    if (lookup === undefined) {
      lookup = this.source.coldSizeBytes(key).catch(() => undefined);
      this.sizeLookups.set(key, lookup);
      void lookup.finally(() => this.sizeLookups.delete(key));
    }
    const sizeBytes = await lookup;
    if (sizeBytes === undefined || this.closing.signal.aborted) return undefined;
    const raced = this.streams.get(key); // another read of the object made it meanwhile
    if (raced !== undefined) return raced;
    const stream: Stream = { key, sizeBytes, parts: new Map(), lowIndex: Infinity, highIndex: -Infinity, crossed, nextLooked: false, nextKey: undefined };
    this.streams.set(key, stream);
    for (const oldest of this.streams.keys()) {
      if (this.streams.size <= STREAMS_MAX) break;
      this.forget(oldest);
    }
    return stream;
  }

  private serveFrom(stream: Stream, offsetBytes: number, lengthBytes: number): ReadAheadRange | undefined {
    const endBytes = Math.min(offsetBytes + lengthBytes, stream.sizeBytes);
    if (endBytes <= offsetBytes) return undefined; // at or past the end: the tier answers that itself
    this.streams.delete(stream.key);
    this.streams.set(stream.key, stream);
    const first = Math.floor(offsetBytes / this.partBytes);
    const last = Math.floor((endBytes - 1) / this.partBytes);
    if (!this.request(stream, first, last + 1)) return undefined;
    this.requestAhead(stream, endBytes, this.aheadBytes);
    return first === last ? this.servePart(stream, first, offsetBytes, endBytes) : { data: this.serveParts(stream, first, last, offsetBytes, endBytes) };
  }

  /**
   * Keeps `aheadBytes` requested past `fromBytes`, on into the next objects when this one ends: a
   * window that slides with the reader, so parts keep being started as it goes. Parts behind the
   * highest ever requested are not asked again here (they were served, or are on their way; the
   * reads themselves ask again for any that was dropped).
   */
  private requestAhead(stream: Stream, fromBytes: number, aheadBytes: number): void {
    const partCount = Math.ceil(stream.sizeBytes / this.partBytes);
    const first = Math.max(Math.floor(fromBytes / this.partBytes), stream.highIndex + 1);
    this.request(stream, first, Math.min(partCount, Math.ceil((fromBytes + aheadBytes) / this.partBytes)));
    const beyondBytes = fromBytes + aheadBytes - stream.sizeBytes;
    if (beyondBytes <= 0) return;
    const next = stream.nextKey === undefined ? undefined : this.streams.get(stream.nextKey);
    if (next !== undefined) this.requestAhead(next, 0, Math.min(beyondBytes, this.aheadBytes));
    else this.lookNext(stream, beyondBytes);
  }

  /** Requests parts [from, to) not requested yet; false when memory ran out before all were. */
  private request(stream: Stream, from: number, to: number): boolean {
    for (let index = from; index < to; index++) {
      if (stream.parts.has(index)) continue;
      const lengthBytes = Math.min(this.partBytes, stream.sizeBytes - index * this.partBytes);
      if (!this.reserve(lengthBytes, stream)) return false;
      this.startPart(stream, index, lengthBytes);
    }
    return true;
  }

  private startPart(stream: Stream, index: number, lengthBytes: number): void {
    const part: Part = { lengthBytes, data: undefined, buffer: undefined, loaded: Promise.resolve(new Uint8Array(0)), servedBytes: 0, lastServedAtBytes: 0 };
    const into = this.buffers.take(lengthBytes);
    part.loaded = this.source.fetchPart(stream.key, index * this.partBytes, lengthBytes, this.closing.signal, into).then((data) => {
      if (data === undefined || data.length !== lengthBytes) throw new Error(`part ${index} of ${stream.key} came back short`);
      part.data = data;
      // Reused later only when the store wrote into it (any other array may be the store's own).
      if (data.buffer === into.buffer) part.buffer = into;
      return data;
    });
    part.loaded.catch(() => {
      this.failedParts++;
      this.drop(stream, index, part);
    });
    stream.parts.set(index, part);
    stream.lowIndex = Math.min(stream.lowIndex, index);
    stream.highIndex = Math.max(stream.highIndex, index);
  }

  private servePart(stream: Stream, index: number, offsetBytes: number, endBytes: number): ReadAheadRange {
    const part = stream.parts.get(index)!;
    const from = offsetBytes - index * this.partBytes;
    const view = (data: Uint8Array) => {
      this.served(stream, index, part, endBytes - offsetBytes);
      return data.subarray(from, from + endBytes - offsetBytes);
    };
    if (part.data !== undefined) return { ready: view(part.data) };
    return { data: part.loaded.then(view, () => undefined) };
  }

  /** A range across parts: one copy, assembled once they are all in. */
  private async serveParts(stream: Stream, first: number, last: number, offsetBytes: number, endBytes: number): Promise<Uint8Array | undefined> {
    const parts: [number, Part][] = [];
    for (let index = first; index <= last; index++) parts.push([index, stream.parts.get(index)!]);
    let datas: Uint8Array[];
    try {
      datas = await Promise.all(parts.map(([, part]) => part.loaded));
    } catch {
      return undefined;
    }
    const out = new Uint8Array(endBytes - offsetBytes);
    for (const [i, [index, part]] of parts.entries()) {
      const partStart = index * this.partBytes;
      const from = Math.max(offsetBytes, partStart);
      const to = Math.min(endBytes, partStart + part.lengthBytes);
      out.set(datas[i]!.subarray(from - partStart, to - partStart), from - offsetBytes);
      this.served(stream, index, part, to - from);
    }
    return out;
  }

  /**
   * Counts bytes served from a part; one served whole is let go, and its array reused (see
   * part-buffers.ts for when that is safe).
   */
  private served(stream: Stream, index: number, part: Part, bytes: number): void {
    part.servedBytes += bytes;
    this.servedTotalBytes += bytes;
    part.lastServedAtBytes = this.servedTotalBytes;
    if (part.servedBytes >= part.lengthBytes) this.release(stream, index, part);
    if (this.servedTotalBytes >= this.nextSweepAtBytes) {
      this.nextSweepAtBytes = this.servedTotalBytes + BEHIND_SWEEP_STEP_BYTES;
      this.releaseBehind();
    }
  }

  /**
   * Lets go of parts the reader has left behind: read before, but not in the last `behindBytes`
   * served. A pack's header and index are never read by a chunk reader, so its part is seldom
   * served whole; without this its array would stay held until the memory bound forced it out,
   * and the bound, full of such parts, would stop the stream (each read then its own GET). A
   * late read of a released part reads its range itself: slower, never wrong.
   */
  private releaseBehind(): void {
    for (const stream of this.streams.values()) {
      for (const [index, part] of stream.parts) {
        if (part.lastServedAtBytes > 0 && this.servedTotalBytes - part.lastServedAtBytes > this.behindBytes) this.release(stream, index, part);
      }
    }
  }

  /** Drops a part and reuses its array (see part-buffers.ts for when that is safe). */
  private release(stream: Stream, index: number, part: Part): void {
    if (!this.drop(stream, index, part)) return;
    if (part.buffer !== undefined) this.buffers.giveBack(part.buffer);
    part.buffer = undefined;
  }

  /** Removes a part from its stream; false when it was gone already. */
  private drop(stream: Stream, index: number, part: Part): boolean {
    if (stream.parts.get(index) !== part) return false;
    stream.parts.delete(index);
    this.heldBytes -= part.lengthBytes;
    return true;
  }

  /** Room for `lengthBytes` more: drops fetched parts of other streams, least recently read first. */
  private reserve(lengthBytes: number, reader: Stream): boolean {
    if (this.heldBytes + lengthBytes > this.bytesMax) {
      for (const stream of this.streams.values()) {
        if (stream === reader) continue;
        for (const [index, part] of stream.parts) if (part.data !== undefined) this.release(stream, index, part);
        if (this.heldBytes + lengthBytes <= this.bytesMax) break;
      }
    }
    if (this.heldBytes + lengthBytes > this.bytesMax) return false;
    this.heldBytes += lengthBytes;
    return true;
  }

  /**
   * The stream's parts ahead reach its end: find the next object. A stream that crossed into the
   * object it expected fetches the next one's first `beyondBytes` now; any other awaits its first
   * read (which then starts a stream at once and counts as crossed).
   */
  private lookNext(stream: Stream, beyondBytes: number): void {
    if (stream.nextLooked) return;
    stream.nextLooked = true;
    void this.source
      .nextColdKey(stream.key)
      .then(async (next) => {
        if (next === undefined || this.streams.has(next)) return;
        if (!stream.crossed) {
          this.awaited.add(next);
          for (const oldest of this.awaited) {
            if (this.awaited.size <= AWAITED_MAX) break;
            this.awaited.delete(oldest);
          }
          return;
        }
        const nextStream = await this.streamOf(next, true);
        if (nextStream === undefined) return;
        stream.nextKey = next;
        if (nextStream.parts.size > 0) return; // its reader came first
        this.prefetchedObjects++;
        this.requestAhead(nextStream, 0, Math.min(beyondBytes, this.aheadBytes));
      })
      .catch(() => undefined);
  }
}
