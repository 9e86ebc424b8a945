/**
 * What may change a volume now: the volume's lock (withVolume), holds that long jobs and exports
 * put on it (changes fail with BUSY at once while one lasts), names claimed in the catalog while an
 * import or copy creates a volume, and the checks that refuse changes to an exported volume.
 *
 * Locks and holds order this daemon's own operations, so they live in this process; the name
 * claims are catalog state (a reservation record and its name index), so no other creator, in this
 * daemon or another, can take the name meanwhile.
 */
import { StorageError, type ErrorFix, type ExportRef } from '../core/errors.js';
import { CatalogTxn } from './catalog.js';
import { newId, nowIso, volKey, volumeNotFound, type ServiceContext } from './context.js';
import { liveKey, type LiveVolume } from './live.js';
import { volumeByName } from './queries.js';
import type { ReservationRecord, VolumeRecord } from './records.js';

/** A volume name claimed in the catalog; the import's final transaction turns it into the volume. */
export interface NameClaim {
  readonly reservation: ReservationRecord;
  /** Drops the claim if the volume was not created from it; idempotent. */
  release(): Promise<void>;
}

/**
 * Claims a volume name (and its size, for quotas) while an import or copy creates it: ALREADY_EXISTS
 * if a volume has the name or another creator claimed it first.
 */
export async function claimVolumeName(svc: ServiceContext, pool: string, name: string, sizeBytes: number): Promise<NameClaim> {
  const reservation: ReservationRecord = { id: newId(), pool, name, sizeBytes, createdAt: nowIso() };
  const txn = new CatalogTxn();
  svc.catalog.claimVolumeName(txn, reservation);
  await svc.catalog.commit(txn);
  let released = false;
  return {
    reservation,
    release: async () => {
      if (released) return;
      released = true;
      const current = await svc.catalog.reservations.get(reservation.id);
      if (current) await svc.catalog.change((t) => svc.catalog.reservations.remove(t, current));
    },
  };
}

/** The fix of a refusal while these chains are exported: the exports to stop, named by their ids, kinds and targets. */
export function stopExportsFix(lives: readonly LiveVolume[]): ErrorFix {
  // In name order: the refusal reads the same however the exports were opened (and tests can say so).
  const exports = lives.flatMap((l) => l.exports).sort((a, b) => exportOrderKey(a).localeCompare(exportOrderKey(b)));
  return { operation: 'stopExports', exports, text: 'stop them with {}' };
}

function exportOrderKey(ref: ExportRef): string {
  return `${ref.pool}/${ref.volume}@${ref.snapshot ?? ''}\u0000${ref.type}\u0000${ref.id}`;
}

export function checkHeadNotLive(svc: ServiceContext, vol: VolumeRecord, what: string): void {
  const live = svc.live.get(liveKey({ volumeId: vol.id, snapshotId: undefined }));
  if (live !== undefined) {
    throw new StorageError('BUSY', `volume '${vol.pool}/${vol.name}' is exported; stop its exports to ${what}`, { fix: stopExportsFix([live]) });
  }
}

export function checkNotLive(svc: ServiceContext, vol: VolumeRecord, what: string): void {
  const lives = [...svc.live.values()].filter((live) => live.target.volumeId === vol.id);
  if (lives.length > 0) {
    const message = `volume '${vol.pool}/${vol.name}' (or a snapshot of it) is exported; stop its exports to ${what}`;
    throw new StorageError('BUSY', message, { fix: stopExportsFix(lives) });
  }
}

/**
 * Holds a volume against changes while something reads it outside its lock: a job (job: true; a
 * refusal meanwhile points at 'job list') or a stream to a client (it ends with the request).
 */
export function hold(svc: ServiceContext, volumeId: string, reason: string, by: { job: boolean }): void {
  const current = svc.holds.get(volumeId);
  if (current) current.count++;
  else svc.holds.set(volumeId, { reason, count: 1, byJob: by.job });
}

export function unhold(svc: ServiceContext, volumeId: string): void {
  const current = svc.holds.get(volumeId);
  if (!current) return;
  if (--current.count === 0) svc.holds.delete(volumeId);
}

export function checkNotHeld(svc: ServiceContext, vol: VolumeRecord): void {
  const current = svc.holds.get(vol.id);
  if (current) {
    const fix: ErrorFix | undefined = current.byJob ? { operation: 'listJobs', text: '{} shows it and its progress' } : undefined;
    throw new StorageError('BUSY', `volume '${vol.pool}/${vol.name}' is busy: ${current.reason}; try again when it is done`, fix === undefined ? undefined : { fix });
  }
}

/**
 * Runs fn with the volume's lock (and any extra keys). Unless allowHeld, fails with BUSY at once
 * while a job or export holds the volume.
 */
export async function withVolume<T>(
  svc: ServiceContext,
  pool: string,
  name: string,
  fn: (vol: VolumeRecord) => Promise<T>,
  options: { keys?: string[]; allowHeld?: boolean } = {},
): Promise<T> {
  const found = await volumeByName(svc, pool, name);
  if (!options.allowHeld) checkNotHeld(svc, found);
  return svc.locks.run([volKey(found.id), ...(options.keys ?? [])], async () => {
    const vol = await svc.catalog.volumes.get(found.id);
    if (!vol) throw volumeNotFound(pool, name);
    if (!options.allowHeld) checkNotHeld(svc, vol);
    return fn(vol);
  });
}
