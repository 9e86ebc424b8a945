/**
 * HostFile: the bytes a format stores its data and metadata in. A local file, a chunked file over a
 * ChunkStore, an in-memory buffer, or a fault-injecting wrapper used by crash tests.
 *
 * Offsets and lengths are host offsets (positions in this file), never guest offsets.
 */
/** What a HostFile can do beyond plain reads and writes; callers choose their path by it. */
export interface HostFileFeatures {
  /** punchHole gives the space back (false: it writes zeroes over the range). */
  readonly punchHole: boolean;
  /** seekData/seekHole find a sparse file's data (formats/raw reports holes as zeroes). */
  readonly seekData: boolean;
  /** copyRange shares the bytes with the source instead of copying them (reflink, chunk references). */
  readonly copyByReference: boolean;
}

export interface HostFile {
  /** A human-readable identity for errors and logs (a path, or "memory"). */
  readonly name: string;
  readonly readOnly: boolean;
  /** Reads into buf; bytes past the end of the file read as zeroes. Resolves to bytes that existed. */
  pread(buf: Uint8Array, hostOffset: number): Promise<number>;
  /** Writes all of buf at hostOffset, growing the file as needed. Not durable until flush(). */
  pwrite(buf: Uint8Array, hostOffset: number): Promise<void>;
  /**
   * Optional: pread into several buffers that lie back to back from hostOffset, in one call where
   * the file can (preadv); the same contract as pread over their concatenation. Absent: callers
   * pread each buffer (formats/qcow2/segments.ts).
   */
  preadv?(bufs: readonly Uint8Array[], hostOffset: number): Promise<number>;
  /** Optional: pwritev is to pwrite what preadv is to pread. */
  pwritev?(bufs: readonly Uint8Array[], hostOffset: number): Promise<void>;
  /** Makes every completed pwrite, truncate and punchHole durable. */
  flush(): Promise<void>;
  truncate(sizeBytes: number): Promise<void>;
  /** Deallocates the range so it reads as zeroes and the host gets the space back. */
  punchHole(hostOffset: number, lengthBytes: number): Promise<void>;
  sizeBytes(): Promise<number>;
  /** Host bytes actually allocated (st_blocks * 512 for a local file). */
  allocatedBytes(): Promise<number>;
  supports(): HostFileFeatures;
  /**
   * Makes `lengthBytes` at `targetOffset` of this file equal to the source's bytes at
   * `sourceOffset` (source bytes past its end read as zeroes), as cheaply as the pair allows: in
   * the kernel between two local files, by reference in a chunked store. Not durable until flush().
   * Overlapping ranges of one file are INVALID_ARGUMENT.
   */
  copyRange(source: HostFile, sourceOffset: number, targetOffset: number, lengthBytes: number): Promise<void>;
  close(): Promise<void>;
}
