/**
 * Crash recovery at start-up (LocalVolumeService.recover): interrupted jobs marked failed,
 * stale volume name claims dropped, leftover intents rolled back or finished (intents.ts), orphan
 * files deleted. Recovery reads whole tables (page by page): it is the one place that must.
 */
import type { ServiceContext } from './context.js';
import { finishIntent, finishResize, repairLeaks, rollbackIntent } from './intents.js';
import { LAYER_FILE_PATTERN, layerLocation, poolLocation, TEMP_PREFIX } from './layers.js';
import type { IntentRecord } from './records.js';
import { recoverCompact } from './compact.js';
import { recoverSeal } from './sealing.js';
import { sharedTierProblems } from './pools.js';

export interface RecoveryReport {
  jobsMarkedFailed: number;
  /** "pool/name" of each claim an import or copy left when the daemon stopped (dropped). */
  claimsDropped: string[];
  /** "<kind> <target>" of each intent rolled back. */
  intentsRolledBack: string[];
  /** "<kind> <target>" of each intent finished. */
  intentsFinished: string[];
  /** Paths of orphan files (and empty unknown pool folders) deleted. */
  orphansDeleted: string[];
  /** Seal jobs started for frozen layers of dedup pools that were still local files. */
  sealsStarted: number;
  /** "<pool>: <n>" for each dedup pool whose leaked chunk references recovery dropped. */
  referencesRepaired: string[];
  /**
   * Things recovery could not fix and left alone (missing layer files, unknown files in a pool or
   * beside the pools, corruption).
   */
  problems: string[];
}

/**
 * Start-up: marks interrupted jobs failed, drops stale name claims, rolls back or finishes leftover intents, then deletes
 * orphan files (layer files no record references, temp files) and reports what it could not fix.
 * Call once, before serving anything.
 */
export async function recover(svc: ServiceContext): Promise<RecoveryReport> {
  const report: RecoveryReport = {
    jobsMarkedFailed: 0,
    claimsDropped: [],
    intentsRolledBack: [],
    intentsFinished: [],
    orphansDeleted: [],
    sealsStarted: 0,
    referencesRepaired: [],
    problems: [],
  };
  await svc.layerStore.prepare();
  report.jobsMarkedFailed = await svc.jobs.recover();
  // This daemon's imports and copies died with the last process (the data folder's lock keeps
  // other processes out), so every claim still recorded is stale.
  for (const claim of await svc.catalog.reservations.all()) {
    await svc.catalog.change((txn) => svc.catalog.reservations.remove(txn, claim));
    report.claimsDropped.push(`${claim.pool}/${claim.name}`);
  }
  const intents = (await svc.catalog.intents.all()).sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  for (const intent of intents) {
    const label = `${intent.kind} ${intent.target}`;
    try {
      await recoverIntent(svc, intent, label, report);
    } catch (err) {
      report.problems.push(`${label}: recovery failed, will retry at the next start: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  await scanFiles(svc, report);
  // An interrupted seal, unseal or layer removal may have left chunk references no manifest
  // holds (never the reverse): audit the dedup pools those operations worked in.
  const touched = new Set(intents.map((intent) => intent.seal?.file.pool ?? intent.target.split('/')[0]!));
  // And those where the S3 object model's releases were cut off (their holders count the rest).
  const others = new Set(await svc.chunkedPools?.poolsToAudit?.() ?? []);
  for (const pool of touched) await auditPool(svc, pool, report, others.has(pool));
  for (const pool of others) if (!touched.has(pool)) await auditPool(svc, pool, report, true);
  // Pools an older release let share a tier: nothing here can part them, and their GC stays off.
  report.problems.push(...(await sharedTierProblems(svc)));
  return report;
}

async function auditPool(svc: ServiceContext, pool: string, report: RecoveryReport, holdsObjects = false): Promise<void> {
  if (svc.chunkedPools === undefined || (!holdsObjects && !svc.chunkedPools.isChunkedPool(pool))) return;
  try {
    const audit = await svc.chunkedPools.audit(pool, { repair: true });
    if (audit.leakedReferences > 0) report.referencesRepaired.push(`${pool}: ${audit.leakedReferences}`);
    if (audit.unreadableManifests) {
      report.problems.push(`dedup pool '${pool}': a manifest does not decode, so leaked references were left alone; run a scrub`);
    }
    if (audit.missingReferences > 0) {
      report.problems.push(`dedup pool '${pool}': its manifests hold ${audit.missingReferences} chunk references its index lacks`);
    }
  } catch (err) {
    report.problems.push(`dedup pool '${pool}': the reference audit failed: ${err instanceof Error ? err.message : String(err)}`);
  }
}

async function recoverIntent(svc: ServiceContext, intent: IntentRecord, label: string, report: RecoveryReport): Promise<void> {
  if (intent.seal) {
    await recoverSeal(svc, intent, report.problems);
    report.intentsRolledBack.push(label);
  } else if (intent.compact && intent.phase === 'prepared') {
    const outcome = await recoverCompact(svc, intent, report.problems);
    (outcome === 'finished' ? report.intentsFinished : report.intentsRolledBack).push(label);
  } else if (intent.phase === 'committed') {
    await finishIntent(svc, intent, report.problems);
    report.intentsFinished.push(label);
  } else if (intent.resize) {
    await repairLeaks(svc, [intent.resize.layerId], report.problems);
    await finishResize(svc, intent);
    report.intentsFinished.push(label);
  } else {
    await rollbackIntent(svc, intent, report.problems);
    report.intentsRolledBack.push(label);
  }
}

/**
 * Deletes files in the layer store that no record references; notes missing layer files, and
 * entries beside the pools (a plain file in `<data>/pools`), which it leaves alone.
 */
async function scanFiles(svc: ServiceContext, report: RecoveryReport): Promise<void> {
  const store = svc.layerStore;
  const pools = new Set((await svc.catalog.pools.all()).map((p) => p.name));
  const layers = await svc.catalog.layers.all();
  const known = new Set(layers.map((l) => `${l.pool}/${l.fileName}`));
  /** "<pool>/<file>" of every referenced file found (and kept). */
  const present = new Set<string>();
  for (const stray of await store.listStrays()) report.problems.push(`unexpected file ${stray.location ?? stray.name} (left alone)`);
  for (const pool of await store.listPools()) {
    const isPool = pools.has(pool);
    let foreign = 0;
    for (const fileName of await store.list(pool)) {
      const ref = { pool, fileName };
      if (isPool && known.has(`${pool}/${fileName}`)) {
        present.add(`${pool}/${fileName}`);
        continue;
      }
      if (LAYER_FILE_PATTERN.test(fileName) || fileName.startsWith(TEMP_PREFIX)) {
        await store.remove(ref);
        report.orphansDeleted.push(layerLocation(store, ref));
      } else {
        foreign++;
        report.problems.push(`unknown file ${layerLocation(store, ref)} (left alone)`);
      }
    }
    if (!isPool && foreign === 0) {
      await store.removePool(pool);
      report.orphansDeleted.push(poolLocation(store, pool));
    }
    await store.syncPool(pool).catch(() => {});
  }
  for (const pool of pools) await store.createPool(pool);
  for (const layer of layers) {
    if (!present.has(`${layer.pool}/${layer.fileName}`)) {
      report.problems.push(`layer file ${layerLocation(store, layer)} of volume ${layer.ownerVolumeId} is missing`);
    }
  }
}
