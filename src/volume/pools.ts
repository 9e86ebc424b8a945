/** Pools: create, list, describe, set a quota, delete, and what their volumes occupy (du). */
import { StorageError } from '../core/errors.js';
import { countOf } from '../core/text.js';
import { nowIso, poolKey, POOLS_KEY, volumeNotFound, type ServiceContext } from './context.js';
import { LAYER_FILE_PATTERN, TEMP_PREFIX } from './layers.js';
import { checkName, checkQuota } from './names.js';
import { describePool, layerById, layersOfPool, requirePool, snapshotsOfVolume, volumesOfPool } from './queries.js';
import type { PoolRecord } from './records.js';
import { checkDedupPoolConfig, tiersOverlap, type DedupPoolRequest } from './pool-config.js';
import type { DuEntry, JobInfo, PoolDeleteReport, PoolDf, PoolGcReport, PoolInfo } from './types.js';

/** How long pool create waits for its tier's first answer before answering without it. */
const TIER_CHECK_WAIT_MS = 15_000;

export async function createPool(svc: ServiceContext, name: string, options: { quotaBytes?: number; dedup?: DedupPoolRequest } = {}): Promise<PoolInfo> {
  checkName('pool', name);
  const quotaBytes = checkQuota(options.quotaBytes);
  const dedup = options.dedup === undefined ? undefined : checkDedupPoolConfig(name, options.dedup);
  if (dedup !== undefined && svc.chunkedPools === undefined) {
    throw new StorageError('UNSUPPORTED', `this service cannot make dedup pools (it was built without chunked pools); create '${name}' without dedup`);
  }
  return svc.locks.run([POOLS_KEY, poolKey(name)], async () => {
    if (await svc.catalog.pools.get(name)) throw new StorageError('ALREADY_EXISTS', `pool '${name}' already exists`);
    if (dedup?.tier !== undefined) await refuseSharedTier(svc, name, dedup.tier.url);
    // Attached before the record exists: a record never names a dedup pool its store cannot open.
    if (dedup !== undefined) await svc.chunkedPools!.attachPool(name, dedup);
    await svc.layerStore.createPool(name);
    const record: PoolRecord = {
      name,
      createdAt: nowIso(),
      ...(quotaBytes === undefined ? {} : { quotaBytes }),
      ...(dedup === undefined ? {} : { dedup }),
    };
    await svc.catalog.change((txn) => svc.catalog.pools.create(txn, record));
    // A bucket that is missing, keys it refuses, a server not there: the answer's tierError says
    // so now, rather than at the first evict or cooling pass (the pool is kept either way: a
    // server not up yet may answer later).
    if (dedup?.tier !== undefined) await svc.chunkedPools?.awaitTierCheck?.(name, TIER_CHECK_WAIT_MS);
    return describePool(svc, record);
  });
}

/**
 * The first pool other than `name` whose tier is the same prefix or folder as `url`, or one inside
 * or around it. Each pool's GC deletes the packs under its tier that its own index does not know,
 * so two such pools would delete each other's data: pool create refuses the tier, and pools an
 * older release made that way never collect while the other exists.
 */
function poolWithTierOverlapping(pools: readonly PoolRecord[], url: string, name: string): PoolRecord | undefined {
  return pools.find((other) => {
    const otherUrl = other.dedup?.tier?.url;
    return other.name !== name && otherUrl !== undefined && tiersOverlap(url, otherUrl);
  });
}

/** INVALID_ARGUMENT when another pool's tier overlaps `url` (poolWithTierOverlapping). */
async function refuseSharedTier(svc: ServiceContext, name: string, url: string): Promise<void> {
  const other = poolWithTierOverlapping(await svc.catalog.pools.all(), url, name);
  if (other === undefined) return;
  const otherUrl = other.dedup?.tier?.url ?? '';
  throw new StorageError(
    'INVALID_ARGUMENT',
    `tier '${url}' of pool '${name}' would share objects with pool '${other.name}', whose tier is '${otherUrl}': each pool's garbage collection deletes the packs under its tier that it does not know, so give each pool a prefix or folder of its own, not inside another's (${suggestedTier(url, otherUrl, name)})`,
  );
}

/** The other pool of `pools` whose tier overlaps this existing pool's, if any (made before create refused it). */
function poolSharingTier(pools: readonly PoolRecord[], pool: PoolRecord): PoolRecord | undefined {
  const url = pool.dedup?.tier?.url;
  return url === undefined ? undefined : poolWithTierOverlapping(pools, url, pool.name);
}

/**
 * One line for each pool that shares its tier with another (sharedTierMessage and the way out):
 * start-up recovery reports them, so an operator learns of it before a GC is refused.
 */
export async function sharedTierProblems(svc: ServiceContext): Promise<string[]> {
  const problems: string[] = [];
  const pools = await svc.catalog.pools.all();
  for (const pool of pools) {
    const other = poolSharingTier(pools, pool);
    if (other !== undefined) problems.push(`${sharedTierMessage(pool, other)}; ${SHARED_TIER_WAY_OUT}`);
  }
  return problems;
}

const SHARED_TIER_WAY_OUT = "move one pool's volumes to a pool with a tier of its own ('strata volume copy'), then delete the emptied pool with 'strata pool delete --force'";

function sharedTierMessage(pool: PoolRecord, other: PoolRecord): string {
  return `pool '${pool.name}' shares its tier '${pool.dedup?.tier?.url ?? ''}' with pool '${other.name}' ('${other.dedup?.tier?.url ?? ''}'; made before pool create refused shared tiers): its garbage collection would delete the other pool's packs, so it does not run`;
}

function suggestedTier(url: string, otherUrl: string, name: string): string {
  if (/^s3:\/\/[^/]+$/.test(otherUrl)) return `that pool uses the whole bucket: use another bucket`;
  const bucket = /^s3:\/\/[^/]+/.exec(url)?.[0];
  return `e.g. ${bucket !== undefined ? `${bucket}/strata-${name}` : `${url}-${name}`}`;
}

export async function listPools(svc: ServiceContext): Promise<PoolInfo[]> {
  const pools = await svc.catalog.pools.all();
  return Promise.all(pools.map((p) => describePool(svc, p)));
}

export async function poolInfo(svc: ServiceContext, name: string): Promise<PoolInfo> {
  return describePool(svc, await requirePool(svc, name));
}

export async function setPoolQuota(svc: ServiceContext, name: string, quotaBytes: number | undefined): Promise<PoolInfo> {
  const quota = checkQuota(quotaBytes);
  return svc.locks.run([poolKey(name)], async () => {
    const pool = await requirePool(svc, name);
    const { quotaBytes: _old, ...rest } = pool;
    const record: PoolRecord = quota === undefined ? rest : { ...rest, quotaBytes: quota };
    await svc.catalog.change((txn) => svc.catalog.pools.update(txn, pool, record));
    return describePool(svc, record);
  });
}

/**
 * Deletes a pool with no volumes, trash or buckets left. A dedup pool's packs (local and in its
 * tier) are collected before the record goes: a failure (its tier unreachable) refuses the delete
 * with that error and keeps the pool, so no pack is left behind unnamed; `force` deletes the pool
 * anyway, leaving what could not be deleted where the returned report says.
 */
export async function deletePool(svc: ServiceContext, name: string, options: { force?: boolean } = {}): Promise<PoolDeleteReport> {
  return svc.locks.run([POOLS_KEY, poolKey(name)], async () => {
    const pool = await requirePool(svc, name);
    const volumes = await volumesOfPool(svc, name);
    if (volumes.length > 0) {
      throw new StorageError('BUSY', `pool '${name}' still has ${countOf(volumes.length, 'volume')}: delete them first`, {
        fix: { operation: 'listVolumes', pool: name, text: '{} lists them' },
      });
    }
    if ((await svc.catalog.reservations.byIndexPrefix('name', `${name}/`)).length > 0) {
      throw new StorageError('BUSY', `pool '${name}' has a volume being created (import or copy); try again when it is done`);
    }
    const trashed = await svc.catalog.volumes.byIndexPrefix('trash', `${name}/`);
    if (trashed.length > 0) {
      throw new StorageError('BUSY', `pool '${name}' has ${countOf(trashed.length, 'volume')} in its trash; purge them first (or restore them)`, {
        fix: { operation: 'listTrash', pool: name, text: '{} lists them' },
      });
    }
    if ((await layersOfPool(svc, name)).length > 0) {
      throw new StorageError('BUSY', `pool '${name}' still holds layers`);
    }
    await refuseWhileBucketsNamePool(svc, name);
    // With no layer left, a chunk still referenced is an S3 object's (or a leak a scrub repairs).
    if (svc.chunkedPools !== undefined && (await svc.chunkedPools.hasChunks(name))) {
      const referenced = (await svc.chunkedPools.usage(name)).uniqueChunkCount;
      if (referenced > 0) {
        throw new StorageError('BUSY', `pool '${name}' still holds ${countOf(referenced, 'chunk')} of S3 objects: delete the objects of its buckets ('strata bucket list') first, or run 'strata pool scrub ${name} --repair' if none remain`);
      }
    }
    const report: PoolDeleteReport = { pool: name };
    const chunked = pool.dedup !== undefined && svc.chunkedPools?.isChunkedPool(name) === true ? svc.chunkedPools : undefined;
    const sharing = poolSharingTier(await svc.catalog.pools.all(), pool);
    if (sharing !== undefined) {
      // Its packs cannot be told from the other pool's under the shared tier: none is deleted.
      if (options.force !== true) {
        throw new StorageError('BUSY', `pool '${name}' was not deleted: ${sharedTierMessage(pool, sharing)}`, {
          fix: { option: 'force', text: "pass {} to delete the pool and leave its packs in the tier (the other pool's stay intact)" },
        });
      }
      report.packsLeftIn = pool.dedup?.tier?.url ?? 'its tier';
      report.packsLeftReason = `the tier is shared with pool '${sharing.name}': its packs cannot be told apart there`;
    } else if (chunked !== undefined) {
      // No layer references a chunk any more: every pack goes now (local and in the tier), while
      // the pool still exists, so a failure leaves a pool to delete again, not packs nobody names.
      try {
        await chunked.gc(name, { graceMs: 0 });
      } catch (err) {
        const where = pool.dedup?.tier?.url ?? 'its chunk store';
        const reason = err instanceof Error ? err.message : String(err);
        if (options.force !== true) {
          const code = err instanceof StorageError && err.code === 'UNAVAILABLE' ? 'UNAVAILABLE' : err instanceof StorageError ? err.code : 'IO_ERROR';
          throw new StorageError(code, `pool '${name}' was not deleted: its packs in ${where} could not be deleted (${reason})`, {
            cause: err,
            fix: { option: 'force', text: 'fix what the message names and run it again, or pass {} to delete the pool anyway, leaving any packs there' },
          });
        }
        report.packsLeftIn = where;
        report.packsLeftReason = reason;
      }
    }
    await svc.catalog.change((txn) => svc.catalog.pools.remove(txn, pool));
    for (const buckets of svc.poolBuckets) buckets.poolDeleted(name);
    for (const entry of await svc.layerStore.list(name).catch(() => [] as string[])) {
      if (LAYER_FILE_PATTERN.test(entry) || entry.startsWith(TEMP_PREFIX)) await svc.layerStore.remove({ pool: name, fileName: entry });
    }
    await svc.layerStore.removePool(name).catch(() => {});
    if (chunked !== undefined) await chunked.detachPool(name);
    return report;
  });
}

/** Bucket names a refused pool delete lists (then "and N more"). */
const BUCKETS_NAMED_MAX = 5;

/**
 * BUSY while an S3 bucket names the pool: its objects' chunks live in the pool, and a bucket left
 * naming a deleted pool would keep taking writes into a chunk store no pool command sees.
 *
 * Checked under the pool's lock, as late as possible before the record goes. A CreateBucket does
 * not take that lock: one that found the pool before the record went and commits its bucket
 * after this check still names the deleted pool (closing that needs the bucket's commit to compare the pool record,
 * in src/objects). CreateBuckets that start after the record is gone find the pool missing
 * (poolDeleted drops what the object model opened for it).
 */
async function refuseWhileBucketsNamePool(svc: ServiceContext, name: string): Promise<void> {
  for (const source of svc.poolBuckets) {
    const { count, names } = await source.bucketsOf(name, BUCKETS_NAMED_MAX);
    if (count === 0) continue;
    const more = count > names.length ? ` and ${count - names.length} more` : '';
    throw new StorageError(
      'BUSY',
      `pool '${name}' holds ${countOf(count, 'S3 bucket')} (${names.join(', ')}${more}): delete them first, with S3 DeleteBucket once they are empty or with 'strata bucket delete BUCKET --purge' ('strata bucket list' shows each bucket's pool)`,
    );
  }
}

/** One hour: longer than any seal's gap between putting a pack and indexing it. */
export const GC_GRACE_MS_DEFAULT = 3_600_000;

export async function gcPool(svc: ServiceContext, name: string, options: { graceMs?: number } = {}): Promise<{ job: JobInfo; report: PoolGcReport }> {
  const graceMs = options.graceMs ?? GC_GRACE_MS_DEFAULT;
  if (!Number.isSafeInteger(graceMs) || graceMs < 0) {
    throw new StorageError('INVALID_ARGUMENT', `grace period ${String(graceMs)} ms: give a non-negative whole number of milliseconds`);
  }
  const pool = await requirePool(svc, name);
  const sharing = poolSharingTier(await svc.catalog.pools.all(), pool);
  if (sharing !== undefined) {
    throw new StorageError('BUSY', `${sharedTierMessage(pool, sharing)}: ${SHARED_TIER_WAY_OUT}`);
  }
  // A local pool has chunks only for its S3 objects (kept apart from its qcow2 files).
  if (svc.chunkedPools === undefined || !(await svc.chunkedPools.hasChunks(name))) {
    throw new StorageError('INVALID_ARGUMENT', `pool '${name}' is a local pool without S3 objects: it has no chunks to collect (dedup pools and buckets' pools do)`);
  }
  const pools = svc.chunkedPools;
  let jobId = '';
  const report = await svc.jobs.run('gc', name, async (ctx) => {
    jobId = ctx.id;
    ctx.throwIfCancelled();
    // doneBytes of a gc job counts the index records and packs looked at (it has no byte total).
    return pools.gc(name, { graceMs, signal: ctx.signal, onProgress: () => ctx.addDone(1) });
  });
  return { job: await svc.jobs.info(jobId), report: { pool: name, graceMs, ...report } };
}

export async function poolDf(svc: ServiceContext, name: string): Promise<PoolDf> {
  const pool = await requirePool(svc, name);
  const volumes = await volumesOfPool(svc, name);
  const chunked = pool.dedup !== undefined ? svc.chunkedPools : undefined;
  let logicalAllocatedBytes = 0;
  let layerFileBytes = 0;
  for (const layer of await layersOfPool(svc, name)) {
    const bytes = await svc.layerStore.allocatedBytes(layer);
    logicalAllocatedBytes += bytes;
    if (chunked === undefined || !(await chunked.isSealed(layer))) layerFileBytes += bytes;
  }
  // A local pool's S3 objects keep chunks apart from its qcow2 files: counted as packs too.
  const withChunks = chunked ?? (svc.chunkedPools !== undefined && (await svc.chunkedPools.hasChunks(name)) ? svc.chunkedPools : undefined);
  const usage = withChunks === undefined ? undefined : await withChunks.usage(name);
  const packBytes = usage?.packBytes ?? 0;
  const packRemoteBytes = usage?.remoteBytes ?? 0;
  return {
    pool: name,
    kind: chunked === undefined ? 'local' : 'dedup',
    volumeCount: volumes.length,
    logicalProvisionedBytes: volumes.reduce((sum, v) => sum + v.sizeBytes, 0),
    logicalAllocatedBytes,
    physicalBytes: layerFileBytes + packBytes,
    layerFileBytes,
    packBytes,
    packLocalBytes: packBytes - packRemoteBytes,
    packRemoteBytes,
    localBytes: layerFileBytes + packBytes - packRemoteBytes,
    remoteBytes: packRemoteBytes,
    uniqueChunkCount: usage?.uniqueChunkCount ?? 0,
    uniqueChunkBytes: usage?.uniqueChunkBytes ?? 0,
    referencedChunkBytes: usage?.referencedChunkBytes ?? 0,
    dedupRatio: usage === undefined || usage.uniqueChunkBytes === 0 ? undefined : usage.referencedChunkBytes / usage.uniqueChunkBytes,
    ...tierErrorOf(chunked?.tierStatus?.(name)),
  };
}

function tierErrorOf(status: { error?: string } | undefined): { tierError?: string } {
  return status?.error === undefined ? {} : { tierError: status.error };
}

export async function du(svc: ServiceContext, pool: string, volume?: string): Promise<DuEntry[]> {
  await requirePool(svc, pool);
  let volumes = await volumesOfPool(svc, pool);
  if (volume !== undefined) {
    const one = await svc.catalog.volumes.lookup('name', `${pool}/${volume}`);
    if (!one) throw volumeNotFound(pool, volume);
    volumes = [one];
  }
  volumes.sort((a, b) => a.name.localeCompare(b.name));
  const out: DuEntry[] = [];
  for (const vol of volumes) {
    for (const snap of await snapshotsOfVolume(svc, vol.id)) {
      const layer = await layerById(svc, snap.layerId);
      out.push({ name: `${pool}/${vol.name}@${snap.name}`, provisionedBytes: snap.sizeBytes, allocatedBytes: await svc.layerStore.allocatedBytes(layer) });
    }
    const active = await layerById(svc, vol.activeLayerId);
    out.push({ name: `${pool}/${vol.name}`, provisionedBytes: vol.sizeBytes, allocatedBytes: await svc.layerStore.allocatedBytes(active) });
  }
  return out;
}
