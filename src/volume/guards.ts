/**
 * What may change a volume now: the volume's lock (withVolume), holds that long jobs and exports
 * put on it (changes fail with BUSY at once while one lasts), names reserved while an import or
 * copy creates a volume, and the checks that refuse changes to an exported volume.
 */
import { StorageError } from '../core/errors.js';
import type { VolumeRecord } from '../catalog/records.js';
import { notFound, volKey, type ServiceContext } from './context.js';
import { liveKey } from './live.js';
import { volumeByName } from './queries.js';

/** Reserves a volume name (and its size, for quotas) while an import or copy creates it. */
export function reserve(svc: ServiceContext, pool: string, name: string, sizeBytes: number): () => void {
  const key = `${pool}/${name}`;
  svc.reservations.set(key, { pool, name, sizeBytes });
  let released = false;
  return () => {
    if (!released) svc.reservations.delete(key);
    released = true;
  };
}

export function checkHeadNotLive(svc: ServiceContext, vol: VolumeRecord, what: string): void {
  const live = svc.live.get(liveKey({ volumeId: vol.id, snapshotId: undefined }));
  if (live !== undefined) {
    throw new StorageError('BUSY', `volume '${vol.pool}/${vol.name}' is exported; stop its exports to ${what}`);
  }
}

export function checkNotLive(svc: ServiceContext, vol: VolumeRecord, what: string): void {
  for (const live of svc.live.values()) {
    if (live.target.volumeId === vol.id) {
      throw new StorageError('BUSY', `volume '${vol.pool}/${vol.name}' (or a snapshot of it) is exported; stop its exports to ${what}`);
    }
  }
}

export function hold(svc: ServiceContext, volumeId: string, reason: string): void {
  const current = svc.holds.get(volumeId);
  if (current) current.count++;
  else svc.holds.set(volumeId, { reason, count: 1 });
}

export function unhold(svc: ServiceContext, volumeId: string): void {
  const current = svc.holds.get(volumeId);
  if (!current) return;
  if (--current.count === 0) svc.holds.delete(volumeId);
}

function checkNotHeld(svc: ServiceContext, vol: VolumeRecord): void {
  const current = svc.holds.get(vol.id);
  if (current) throw new StorageError('BUSY', `volume '${vol.pool}/${vol.name}' is busy: ${current.reason}; try again when it is done`);
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
    const vol = await svc.catalog.get('volume', found.id);
    if (!vol) throw notFound(`volume '${pool}/${name}' does not exist`);
    if (!options.allowHeld) checkNotHeld(svc, vol);
    return fn(vol);
  });
}
