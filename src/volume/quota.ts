/**
 * The pool quota check: the sum of the provisioned sizes of a pool's volumes (and of the volumes
 * being created, reserved by imports and copies) may not pass the pool's quota.
 */
import { StorageError } from '../core/errors.js';
import { formatSizeHuman } from '../core/units.js';

export interface QuotaChange {
  /** The changing volume's provisioned size afterwards. */
  sizeBytes: number;
  /** The change, for the message: "growing 'p/v' to 3 GiB", "the new volume 'p/w'". */
  what: string;
  /** Already counted for it: the volume being resized, or the import's own reservation ("pool/name"). */
  replaces?: { volumeId?: string; reservation?: string };
}

/**
 * Refuses (LIMIT_EXCEEDED) a change that would take the pool's provisioned total past its quota.
 * The message gives the whole provisioned total and the bytes the change adds (a resize adds the
 * difference, not its new size).
 */
export function checkPoolQuota(
  pool: { name: string; quotaBytes?: number | undefined },
  volumes: Iterable<{ id: string; pool: string; sizeBytes: number }>,
  reservations: Iterable<{ pool: string; name: string; sizeBytes: number }>,
  change: QuotaChange,
): void {
  if (pool.quotaBytes === undefined) return;
  let provisionedBytes = 0;
  let currentBytes = 0;
  for (const v of volumes) {
    if (v.pool !== pool.name) continue;
    provisionedBytes += v.sizeBytes;
    if (v.id === change.replaces?.volumeId) currentBytes = v.sizeBytes;
  }
  for (const r of reservations) {
    if (r.pool !== pool.name) continue;
    provisionedBytes += r.sizeBytes;
    if (`${r.pool}/${r.name}` === change.replaces?.reservation) currentBytes = r.sizeBytes;
  }
  const moreBytes = change.sizeBytes - currentBytes;
  if (provisionedBytes + moreBytes <= pool.quotaBytes) return;
  throw new StorageError(
    'LIMIT_EXCEEDED',
    `pool '${pool.name}' has a quota of ${formatSizeHuman(pool.quotaBytes)} and ${formatSizeHuman(provisionedBytes)} is provisioned; ` +
      `${formatSizeHuman(moreBytes)} more (${change.what}) does not fit`,
    { fix: { operation: 'setPoolQuota', pool: pool.name, text: 'raise the quota with {}, or shrink or delete volumes' } },
  );
}
