/**
 * Crash recovery at start-up (LocalVolumeService.recover): interrupted jobs marked failed,
 * leftover intents rolled back or finished (intents.ts), orphan files deleted.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { IntentRecord } from '../catalog/records.js';
import type { ServiceContext } from './context.js';
import { finishIntent, finishResize, repairLeaks, rollbackIntent } from './intents.js';
import { fsyncDir, LAYER_FILE_PATTERN, TEMP_PREFIX, unlinkQuiet } from './layers.js';

export interface RecoveryReport {
  jobsMarkedFailed: number;
  /** "<kind> <target>" of each intent rolled back. */
  intentsRolledBack: string[];
  /** "<kind> <target>" of each intent finished. */
  intentsFinished: string[];
  /** Paths of orphan files (and empty unknown pool folders) deleted. */
  orphansDeleted: string[];
  /** Things recovery could not fix and left alone (missing layer files, unknown files, corruption). */
  problems: string[];
}

/**
 * Start-up: marks interrupted jobs failed, rolls back or finishes leftover intents, then deletes
 * orphan files (layer files no record references, temp files) and reports what it could not fix.
 * Call once, before serving anything.
 */
export async function recover(svc: ServiceContext): Promise<RecoveryReport> {
  const report: RecoveryReport = { jobsMarkedFailed: 0, intentsRolledBack: [], intentsFinished: [], orphansDeleted: [], problems: [] };
  await fs.mkdir(svc.paths.poolsDir, { recursive: true });
  report.jobsMarkedFailed = await svc.jobs.recover();
  const intents = (await svc.catalog.list('intent')).sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  for (const intent of intents) {
    const label = `${intent.kind} ${intent.target}`;
    try {
      await recoverIntent(svc, intent, label, report);
    } catch (err) {
      report.problems.push(`${label}: recovery failed, will retry at the next start: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  await scanFiles(svc, report);
  return report;
}

async function recoverIntent(svc: ServiceContext, intent: IntentRecord, label: string, report: RecoveryReport): Promise<void> {
  if (intent.phase === 'committed') {
    await finishIntent(svc, intent, report.problems);
    report.intentsFinished.push(label);
  } else if (intent.resize) {
    const layer = await svc.catalog.get('layer', intent.resize.layerId);
    if (layer) await repairLeaks(svc, [layer.id], new Map([[layer.id, layer]]), report.problems);
    await finishResize(svc, intent);
    report.intentsFinished.push(label);
  } else {
    await rollbackIntent(svc, intent, report.problems);
    report.intentsRolledBack.push(label);
  }
}

/** Deletes files in the pools folder that no record references; notes missing layer files. */
async function scanFiles(svc: ServiceContext, report: RecoveryReport): Promise<void> {
  const pools = new Set((await svc.catalog.list('pool')).map((p) => p.name));
  const layers = await svc.catalog.list('layer');
  const known = new Set(layers.map((l) => `${l.pool}/${l.fileName}`));
  for (const entry of await fs.readdir(svc.paths.poolsDir, { withFileTypes: true })) {
    const dir = path.join(svc.paths.poolsDir, entry.name);
    if (!entry.isDirectory()) {
      report.problems.push(`unexpected file ${dir} (left alone)`);
      continue;
    }
    const isPool = pools.has(entry.name);
    let foreign = 0;
    for (const file of await fs.readdir(dir)) {
      if (isPool && known.has(`${entry.name}/${file}`)) continue;
      if (LAYER_FILE_PATTERN.test(file) || file.startsWith(TEMP_PREFIX)) {
        await unlinkQuiet(path.join(dir, file));
        report.orphansDeleted.push(path.join(dir, file));
      } else {
        foreign++;
        report.problems.push(`unknown file ${path.join(dir, file)} (left alone)`);
      }
    }
    if (!isPool && foreign === 0) {
      await fs.rmdir(dir);
      report.orphansDeleted.push(dir);
    }
    await fsyncDir(dir).catch(() => {});
  }
  for (const pool of pools) await fs.mkdir(svc.paths.poolDir(pool), { recursive: true });
  for (const layer of layers) {
    try {
      await fs.access(svc.paths.layer(layer));
    } catch {
      report.problems.push(`layer file ${svc.paths.layer(layer)} of volume ${layer.ownerVolumeId} is missing`);
    }
  }
}
