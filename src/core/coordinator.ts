/**
 * Coordinator: who may open a volume for writing. One writer per volume, whichever daemon it runs
 * in: in one process an in-memory table (src/volume/coordinator-local.ts); in a cluster an etcd
 * lease whose fencing token every write to shared storage carries, so a writer that lost its lease
 * (paused, partitioned) is refused by the storage even if it does not know yet.
 *
 * Every implementation runs test/conformance/coordinator.ts.
 */

export interface WriterLease {
  readonly volumeId: string;
  /** Who holds it (a daemon id, a job id): named in the BUSY error other callers get. */
  readonly holder: string;
  /** Strictly increases with each grant for the same volume: a newer writer has a larger token. */
  readonly fencingToken: number;
  /** Aborted when the lease is lost (expired, revoked); the holder must stop writing. */
  readonly lost: AbortSignal;
  /** Gives the lease back; idempotent. */
  release(): Promise<void>;
}

export interface Coordinator {
  /**
   * The lease to write `volumeId`, granted at once or refused with StorageError BUSY naming the
   * holder. Leases are not re-entrant: a second acquire by the same holder is refused too.
   */
  acquireWriter(volumeId: string, holder: string): Promise<WriterLease>;
  /** The current holder of a volume's lease, if any. */
  writerOf(volumeId: string): Promise<string | undefined>;
  /** Revokes every lease (shutdown): their `lost` signals abort. */
  close(): Promise<void>;
}
