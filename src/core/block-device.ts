/**
 * BlockDevice: what exports (NBD, vhost-user-blk) and tools consume. Offsets are guest offsets.
 * The caller guarantees that every range lies within [0, sizeBytes); implementations may assert it.
 */
export interface BlockDeviceCapabilities {
  readOnly: boolean;
  /** discard frees space (it is not merely accepted and ignored). */
  discard: boolean;
  /** writeZeroes is cheaper than writing a buffer of zeroes. */
  efficientZeroes: boolean;
  /** flush is needed for durability (a write-back cache sits below). */
  flush: boolean;
  /**
   * Every range blockStatus reports 'unallocated' reads as zeroes: nothing below this device
   * supplies data (an image without a backing file, or a device answering for its whole chain).
   * Absent or false: an 'unallocated' range may read data from below (a qcow2 layer over a
   * backing image), so a consumer must not report it as a hole.
   */
  unallocatedReadsZero?: boolean;
}

export interface WriteFlags {
  /** Force unit access: the write is durable when the promise resolves. */
  fua?: boolean;
}

export interface WriteZeroesFlags extends WriteFlags {
  /** The range may be deallocated instead of written (NBD's absence of NO_HOLE, virtio's unmap). */
  mayUnmap?: boolean;
}

/** Allocation status of a guest range, as the device that reports it stores it. */
export type ExtentKind =
  | 'data' // stored by this device: reads its stored bytes
  | 'zero' // reads as zeroes, decided by this device
  | 'unallocated'; // this device stores nothing here: zeroes when capabilities.unallocatedReadsZero, else whatever lies below

export interface Extent {
  guestOffset: number;
  lengthBytes: number;
  kind: ExtentKind;
}

export interface BlockDevice {
  readonly sizeBytes: number;
  readonly capabilities: BlockDeviceCapabilities;
  read(guestOffset: number, buf: Uint8Array): Promise<void>;
  write(guestOffset: number, data: Uint8Array, flags?: WriteFlags): Promise<void>;
  writeZeroes(guestOffset: number, lengthBytes: number, flags?: WriteZeroesFlags): Promise<void>;
  /** Advisory: the range's contents become unspecified (this implementation makes them read as zeroes or backing). */
  discard(guestOffset: number, lengthBytes: number): Promise<void>;
  flush(): Promise<void>;
  /**
   * Allocation status of what this device stores, covering [guestOffset, guestOffset + lengthBytes)
   * in order (it may answer for a prefix only; the caller asks again). 'zero' always reads as
   * zeroes; 'unallocated' does when capabilities.unallocatedReadsZero is true (an image layer
   * reports its own layer and leaves the rest to its backing, a live device answers for its chain).
   */
  blockStatus(guestOffset: number, lengthBytes: number): Promise<Extent[]>;
  /**
   * Optional: called by a caller that answers a guest's read without calling read() (an NBD
   * structured read of a range blockStatus reported as zeroes), so a device that paces reads
   * (QoS, docs/qos.md) still counts it; the reply waits until it resolves. Absent: nothing to do.
   */
  readSkipped?(guestOffset: number, lengthBytes: number): Promise<void>;
  /**
   * Optional: one request whose data lies in several buffers, back to back from guestOffset (a
   * vhost-user request over several guest descriptors, read without a bounce copy). A device that
   * counts requests (QoS, docs/qos.md) counts it once. Absent: the caller reads each buffer with
   * read() (`forEachSegment`). Like forEachSegment, it settles only after every buffer's read has.
   */
  readSegments?(guestOffset: number, segments: readonly Uint8Array[]): Promise<void>;
  /** Optional: writeSegments is to write() what readSegments is to read(). */
  writeSegments?(guestOffset: number, segments: readonly Uint8Array[], flags?: WriteFlags): Promise<void>;
  /**
   * Optional: calls listener (with the new sizeBytes) whenever the device's size changes while it is
   * open (a volume grown under its exports), after requests may use the new size. Returns the
   * unsubscribe. Absent: the size never changes while open.
   */
  onResize?(listener: (sizeBytes: number) => void): () => void;
  close(): Promise<void>;
}

/**
 * Runs call on each segment (segments lie back to back from guestOffset), all at once, and settles
 * only when every call has: then rethrows the first failure. Promise.all would settle at the first
 * failure while other reads still write into the buffers (guest memory: the guest would get its
 * status and reuse the pages, or the front-end unmap them, with our I/O still landing there).
 */
export async function forEachSegment(guestOffset: number, segments: readonly Uint8Array[], call: (guestOffset: number, segment: Uint8Array) => Promise<void>): Promise<void> {
  const calls: Promise<void>[] = [];
  let offset = guestOffset;
  for (const segment of segments) {
    calls.push(call(offset, segment));
    offset += segment.length;
  }
  const results = await Promise.allSettled(calls);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}
