/**
 * HostFile: the bytes a format stores its data and metadata in. A local file, a chunked file over a
 * ChunkStore, an in-memory buffer, or a fault-injecting wrapper used by crash tests.
 *
 * Offsets and lengths are host offsets (positions in this file), never guest offsets.
 */
export interface HostFile {
  /** A human-readable identity for errors and logs (a path, or "memory"). */
  readonly name: string;
  readonly readOnly: boolean;
  /** Reads into buf; bytes past the end of the file read as zeroes. Resolves to bytes that existed. */
  pread(buf: Uint8Array, hostOffset: number): Promise<number>;
  /** Writes all of buf at hostOffset, growing the file as needed. Not durable until flush(). */
  pwrite(buf: Uint8Array, hostOffset: number): Promise<void>;
  /** Makes every completed pwrite, truncate and punchHole durable. */
  flush(): Promise<void>;
  truncate(sizeBytes: number): Promise<void>;
  /** Deallocates the range so it reads as zeroes and the host gets the space back. */
  punchHole(hostOffset: number, lengthBytes: number): Promise<void>;
  sizeBytes(): Promise<number>;
  /** Host bytes actually allocated (st_blocks * 512 for a local file). */
  allocatedBytes(): Promise<number>;
  close(): Promise<void>;
}
