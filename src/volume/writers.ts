/**
 * Writer leases: this service takes a volume's writer lease from the Coordinator while anything
 * in it writes the volume's layers (an export's live head, a job that rewrites layers), and gives
 * it back when the last of them ends. Inside the service, the volume's lock and holds order those
 * writers; the lease is what keeps every other holder (another daemon sharing the catalog) out.
 */
import type { WriterLease } from '../core/coordinator.js';
import type { ServiceContext } from './context.js';

/** A lease shared by this service's writers of one volume. */
export interface SharedLease {
  readonly lease: Promise<WriterLease>;
  users: number;
}

/**
 * Joins (or takes) this service's writer lease of a volume: BUSY naming the holder if another
 * holds it. Resolves to the release, which gives the lease back once every user released it.
 */
export async function acquireVolumeWriter(svc: ServiceContext, volumeId: string): Promise<() => Promise<void>> {
  let shared = svc.writers.get(volumeId);
  if (shared === undefined) {
    shared = { lease: svc.coordinator.acquireWriter(volumeId, svc.writerName), users: 0 };
    svc.writers.set(volumeId, shared);
  }
  const mine = shared;
  mine.users++;
  let lease: WriterLease;
  try {
    lease = await mine.lease;
  } catch (err) {
    if (--mine.users === 0 && svc.writers.get(volumeId) === mine) svc.writers.delete(volumeId);
    throw err;
  }
  let released = false;
  return async () => {
    if (released) return;
    released = true;
    if (--mine.users > 0) return;
    if (svc.writers.get(volumeId) === mine) svc.writers.delete(volumeId);
    await lease.release();
  };
}

/** Runs fn while holding (a share of) the volume's writer lease. */
export async function withVolumeWriter<T>(svc: ServiceContext, volumeId: string, fn: () => Promise<T>): Promise<T> {
  const release = await acquireVolumeWriter(svc, volumeId);
  try {
    return await fn();
  } finally {
    await release();
  }
}
