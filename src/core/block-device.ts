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
}

export interface WriteFlags {
  /** Force unit access: the write is durable when the promise resolves. */
  fua?: boolean;
}

export interface WriteZeroesFlags extends WriteFlags {
  /** The range may be deallocated instead of written (NBD's absence of NO_HOLE, virtio's unmap). */
  mayUnmap?: boolean;
}

/** Allocation status of a guest range in one layer. */
export type ExtentKind =
  | 'data' // allocated in this layer, reads its stored bytes
  | 'zero' // reads as zeroes, decided by this layer
  | 'unallocated'; // this layer says nothing: read from the backing layer (or zeroes if none)

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
  /** Allocation status of this layer only, covering [guestOffset, guestOffset + lengthBytes) in order. */
  blockStatus(guestOffset: number, lengthBytes: number): Promise<Extent[]>;
  close(): Promise<void>;
}
