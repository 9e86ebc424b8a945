/**
 * The trash (RBD's `rbd trash`): a deleted volume stays in its pool, with its snapshots and
 * layers, until it expires (the daemon's timer purges it) or is purged or restored by hand.
 *
 * A volume in the trash is its volume record with `trash` set (records.ts): the record's name
 * index entry gives way to entries in the `trash` index (a pool's trash) and the `expiry` index
 * (expired first), so its name is free at once and it is in no listing, export or attach, which
 * all find volumes by name. Moving it there and back is one transaction on that record; a purge
 * deletes it as `volume delete` does, under an intent (volumes.ts dropVolume), so a crash
 * mid-purge is finished or rolled back at start-up. Its layers stay layer records, so a clone of
 * one of its snapshots keeps reading, and recovery keeps their files.
 */
import { StorageError, isStorageError } from '../core/errors.js';
import { CatalogTxn } from './catalog.js';
import { poolKey, volKey, type ServiceContext } from './context.js';
import { checkNotLive, withVolume } from './guards.js';
import { checkNotInGroup } from './groups.js';
import { checkName } from './names.js';
import { checkNameFree, checkQuota, describeVolume, requirePool } from './queries.js';
import type { VolumeRecord } from './records.js';
import type { ExpiredTrashPass, TrashEntry, VolumeInfo } from './types.js';
import { checkNoClones, dropVolume } from './volumes.js';

/** Volumes one expiry pass looks at, at most (the daemon's timer runs passes until it is done). */
export const MAX_EXPIRY_PASS = 1000;

function isoAt(ms: number): string {
  return new Date(ms).toISOString();
}

function checkExpiresIn(expiresInMs: number): number {
  if (!Number.isFinite(expiresInMs) || expiresInMs < 0 || expiresInMs > 100 * 365 * 24 * 3600 * 1000) {
    throw new StorageError('INVALID_ARGUMENT', `invalid trash expiry ${String(expiresInMs)} ms: give a duration from 0 to 100 years`);
  }
  return Math.round(expiresInMs);
}

function describeTrash(vol: VolumeRecord, snapshotCount: number): TrashEntry {
  const trash = vol.trash!;
  return { id: vol.id, pool: vol.pool, name: vol.name, sizeBytes: vol.sizeBytes, snapshotCount, deletedAt: trash.deletedAt, expiresAt: trash.expiresAt };
}

async function trashEntry(svc: ServiceContext, vol: VolumeRecord): Promise<TrashEntry> {
  return describeTrash(vol, (await svc.catalog.snapshots.byIndexPrefix('name', `${vol.id}/`)).length);
}

const trashLabel = (vol: VolumeRecord) => `volume '${vol.pool}/${vol.name}' (in the trash as ${vol.id})`;

/** The volume `id` in pool's trash, or NOT_FOUND. */
async function trashedVolume(svc: ServiceContext, pool: string, id: string): Promise<VolumeRecord> {
  const vol = await svc.catalog.volumes.get(id);
  if (vol?.trash !== undefined && vol.pool === pool) return vol;
  await requirePool(svc, pool);
  throw new StorageError('NOT_FOUND', `the trash of pool '${pool}' holds no volume ${JSON.stringify(id)}`, {
    fix: { operation: 'listTrash', pool, text: 'check the id; {} lists what it holds' },
  });
}

/** Runs fn under the trashed volume's lock and its pool's, with the record read again under them. */
async function withTrashed<T>(svc: ServiceContext, pool: string, id: string, fn: (vol: VolumeRecord) => Promise<T>): Promise<T> {
  await trashedVolume(svc, pool, id);
  return svc.locks.run([volKey(id), poolKey(pool)], async () => fn(await trashedVolume(svc, pool, id)));
}

export async function trashVolume(svc: ServiceContext, pool: string, name: string, options: { expiresInMs?: number } = {}): Promise<TrashEntry> {
  const expiresInMs = checkExpiresIn(options.expiresInMs ?? svc.trashExpiryMs);
  return withVolume(
    svc,
    pool,
    name,
    async (vol) => {
      checkNotLive(svc, vol, 'delete it');
      await checkNotInGroup(svc, vol, 'delete it');
      const nowMs = svc.clock();
      const trashed: VolumeRecord = { ...vol, trash: { deletedAt: isoAt(nowMs), expiresAt: isoAt(nowMs + expiresInMs) } };
      await svc.catalog.change((txn) => svc.catalog.volumes.update(txn, vol, trashed));
      return trashEntry(svc, trashed);
    },
    { keys: [poolKey(pool)] },
  );
}

export async function listTrash(svc: ServiceContext, pool?: string): Promise<TrashEntry[]> {
  const pools = pool === undefined ? (await svc.catalog.pools.all()).map((p) => p.name) : [(await requirePool(svc, pool)).name];
  const out: TrashEntry[] = [];
  for (const name of pools) {
    for (const vol of await svc.catalog.volumes.byIndexPrefix('trash', `${name}/`)) out.push(await trashEntry(svc, vol));
  }
  return out.sort((a, b) => a.deletedAt.localeCompare(b.deletedAt) || a.id.localeCompare(b.id));
}

export async function restoreVolume(svc: ServiceContext, pool: string, id: string, options: { name?: string } = {}): Promise<VolumeInfo> {
  if (options.name !== undefined) checkName('volume', options.name);
  return withTrashed(svc, pool, id, async (vol) => {
    const name = options.name ?? vol.name;
    const taken = () =>
      new StorageError('ALREADY_EXISTS', `volume '${pool}/${name}' already exists, so ${vol.id} cannot be restored under that name`, {
        fix: { option: 'name', text: 'use {} to restore it under another name' },
      });
    await checkNameFree(svc, pool, name).catch((err: unknown) => {
      throw isStorageError(err, 'ALREADY_EXISTS') ? taken() : err;
    });
    const poolRecord = await requirePool(svc, pool);
    await checkQuota(svc, poolRecord, vol.sizeBytes, `restoring '${pool}/${name}'`);
    const txn = new CatalogTxn();
    svc.catalog.pools.requireUnchanged(txn, poolRecord);
    const restored = svc.catalog.restoreVolume(txn, vol, name);
    await svc.catalog.commit(txn).catch((err: unknown) => {
      throw isStorageError(err, 'ALREADY_EXISTS') ? taken() : err;
    });
    return describeVolume(svc, restored);
  });
}

export async function purgeTrash(svc: ServiceContext, pool: string, id: string): Promise<TrashEntry> {
  return withTrashed(svc, pool, id, async (vol) => {
    await checkNoClones(svc, vol, trashLabel(vol));
    const entry = await trashEntry(svc, vol);
    await dropVolume(svc, vol, 'trash-purge');
    return entry;
  });
}

export async function purgePoolTrash(svc: ServiceContext, pool: string, options: { expiredOnly?: boolean } = {}): Promise<TrashEntry[]> {
  const now = isoAt(svc.clock());
  const entries = (await listTrash(svc, pool)).filter((e) => !options.expiredOnly || e.expiresAt <= now);
  // Refuse before deleting any: a purge that stops half way is harder to reason about.
  for (const entry of entries) {
    const vol = await trashedVolume(svc, pool, entry.id);
    await checkNoClones(svc, vol, trashLabel(vol));
  }
  const purged: TrashEntry[] = [];
  for (const entry of entries) purged.push(await purgeTrash(svc, pool, entry.id));
  return purged;
}

/**
 * One pass of the expiry timer: looks at up to `limit` trash entries in expiry order from after
 * `after`, purges those that have expired, and reports those it could not purge (their clones
 * remain, a job holds them: a later pass tries again). Stops at the first entry not yet expired.
 */
export async function purgeExpiredTrash(svc: ServiceContext, options: { limit: number; after?: string }): Promise<ExpiredTrashPass> {
  const limit = Math.max(1, Math.min(MAX_EXPIRY_PASS, Math.floor(options.limit)));
  const now = isoAt(svc.clock());
  const page = await svc.catalog.volumes.indexPage('expiry', { ...(options.after === undefined ? {} : { after: options.after }), limit });
  const pass: ExpiredTrashPass = { purged: [], refused: [], nextAfter: undefined };
  for (const vol of page.records) {
    const trash = vol.trash;
    if (trash === undefined) continue; // restored between the index read and the record's
    if (trash.expiresAt > now) return pass;
    try {
      pass.purged.push(await purgeTrash(svc, vol.pool, vol.id));
    } catch (err) {
      if (isStorageError(err, 'NOT_FOUND')) continue; // restored or purged meanwhile
      pass.refused.push({ entry: await trashEntry(svc, vol), reason: err instanceof Error ? err.message : String(err) });
    }
  }
  // Every entry of the page had expired: the next pass goes on after it (refused ones stay behind).
  pass.nextAfter = page.nextAfter;
  return pass;
}
